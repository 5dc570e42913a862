//! `miniauth audit …` and `miniauth projections rebuild`: the auditor's questions
//! answered directly from the store, no server needed, and the [`StoreAuditLog`] the
//! admin API answers the same questions through. Both render the same views
//! (`miniauth_http::{HistoryResponse, UserBindingsResponse, AppBindingsResponse,
//! ExportedEvent}`), so `--json` prints what the API answers.

use std::io::Write;

use anyhow::{bail, Context};
use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use miniauth_application::ports::PortError;
use miniauth_domain::{AppId, OpenId, UserId};
use miniauth_http::{
    AppBindingsResponse, AuditLog, BindingAtView, ExportedEvent, HistoryEntryView, HistoryResponse,
    UserBindingsResponse,
};
use miniauth_store::{BindingAt, HistoryEntry, LoggedEvent, Store, StoreError, VerifyReport};

use crate::config::Config;
use crate::wiring;

/// Events per page of `audit export`.
const EXPORT_PAGE: u32 = 1000;

/// `miniauth audit …`: questions auditors ask of the event log.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AuditCommand {
    /// Every event of one WeChat identity, in order (personal data masked).
    History {
        /// The app.
        #[arg(long)]
        appid: String,
        /// The WeChat identity.
        #[arg(long)]
        openid: String,
        /// Print JSON (the API's answer) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// A user's bindings as they stood at an instant, replayed from the log.
    Bindings {
        /// The business user id.
        #[arg(long)]
        user: i64,
        /// The instant, RFC 3339 (default: now).
        #[arg(long)]
        as_of: Option<String>,
        /// Print JSON (the API's answer) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Every binding of an app as it stood at an instant.
    AppBindings {
        /// The app.
        #[arg(long)]
        appid: String,
        /// The instant, RFC 3339 (default: now).
        #[arg(long)]
        as_of: Option<String>,
        /// Print JSON (the API's answer) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The log in commit order as JSON lines on stdout (`> events.jsonl`).
    Export {
        /// Only events after this position.
        #[arg(long, default_value_t = 0)]
        after: i64,
    },
    /// Proves the log untampered (chains, state rows, checkpoints); fails when not.
    Verify {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Records a checkpoint over the events committed since the last one.
    Checkpoint {
        /// Print the checkpoint as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `miniauth projections …`.
#[derive(Debug, Clone, Copy, clap::Subcommand)]
pub enum ProjectionsCommand {
    /// Rebuilds every read model from the event log.
    Rebuild,
}

/// The admin API's [`AuditLog`] over the store.
#[derive(Clone)]
pub struct StoreAuditLog {
    store: Store,
}

impl StoreAuditLog {
    /// Serves the audit routes from `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// The history of (appid, openid), as the API answers it.
    pub async fn history_response(
        &self,
        appid: &AppId,
        openid: &OpenId,
    ) -> Result<HistoryResponse, StoreError> {
        let events = self.store.history(appid, openid).await?;
        Ok(HistoryResponse {
            appid: appid.to_string(),
            openid: openid.to_string(),
            events: events.into_iter().map(history_view).collect(),
        })
    }

    /// A user's bindings at `as_of`, as the API answers it.
    pub async fn user_bindings_response(
        &self,
        user: UserId,
        as_of: DateTime<Utc>,
    ) -> Result<UserBindingsResponse, StoreError> {
        let bindings = self.store.bindings_as_of(user, as_of).await?;
        Ok(UserBindingsResponse {
            user_id: user.get(),
            as_of,
            bindings: bindings.into_iter().map(binding_view).collect(),
        })
    }

    /// An app's bindings at `as_of`, as the API answers it.
    pub async fn app_bindings_response(
        &self,
        appid: &AppId,
        as_of: DateTime<Utc>,
    ) -> Result<AppBindingsResponse, StoreError> {
        let bindings = self.store.app_bindings_as_of(appid, as_of).await?;
        Ok(AppBindingsResponse {
            appid: appid.to_string(),
            as_of,
            bindings: bindings.into_iter().map(binding_view).collect(),
        })
    }

    /// A page of the export.
    pub async fn export_page(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<ExportedEvent>, StoreError> {
        Ok(self
            .store
            .export(after, limit)
            .await?
            .into_iter()
            .map(exported)
            .collect())
    }
}

fn port_error(error: StoreError) -> PortError {
    match error {
        StoreError::Port(e) => e,
        other => PortError::Internal(other.to_string().into()),
    }
}

#[async_trait]
impl AuditLog for StoreAuditLog {
    async fn history(
        &self,
        appid: &AppId,
        openid: &OpenId,
    ) -> Result<Vec<HistoryEntryView>, PortError> {
        Ok(self
            .history_response(appid, openid)
            .await
            .map_err(port_error)?
            .events)
    }

    async fn bindings_as_of(
        &self,
        user: UserId,
        instant: DateTime<Utc>,
    ) -> Result<Vec<BindingAtView>, PortError> {
        Ok(self
            .user_bindings_response(user, instant)
            .await
            .map_err(port_error)?
            .bindings)
    }

    async fn app_bindings_as_of(
        &self,
        appid: &AppId,
        instant: DateTime<Utc>,
    ) -> Result<Vec<BindingAtView>, PortError> {
        Ok(self
            .app_bindings_response(appid, instant)
            .await
            .map_err(port_error)?
            .bindings)
    }

    async fn events_after(
        &self,
        position: i64,
        limit: u32,
    ) -> Result<Vec<ExportedEvent>, PortError> {
        self.export_page(position, limit).await.map_err(port_error)
    }
}

fn history_view(entry: HistoryEntry) -> HistoryEntryView {
    HistoryEntryView {
        position: entry.position,
        sequence: entry.sequence,
        event_type: entry.event_type,
        event_version: entry.event_version,
        occurred_at: entry.occurred_at,
        via: entry.via,
        reason: entry.reason,
        user_id: entry.user_id,
        session_seq: entry.session_seq,
        unionid: entry.unionid,
        phone: entry.phone,
        nickname: entry.nickname,
        actor: entry.actor,
        request_id: entry.request_id,
        client_ip: entry.client_ip,
        recorded_at: entry.recorded_at,
        hash: entry.hash,
    }
}

fn binding_view(binding: BindingAt) -> BindingAtView {
    BindingAtView {
        appid: binding.appid.to_string(),
        openid: binding.openid.to_string(),
        user_id: binding.span.user_id.get(),
        bound_at: binding.span.bound_at,
        via: serde_json::to_value(binding.span.via)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
    }
}

fn exported(event: LoggedEvent) -> ExportedEvent {
    ExportedEvent {
        position: event.position,
        aggregate_id: event.aggregate_id,
        sequence: event.sequence,
        event_type: event.event_type,
        event_version: event.event_version,
        payload: event.payload,
        metadata: event.metadata,
    }
}

fn parse_as_of(as_of: Option<&str>) -> anyhow::Result<DateTime<Utc>> {
    match as_of {
        None => Ok(Utc::now()),
        Some(text) => miniauth_http::admin::parse_instant("as_of", text)
            .map_err(|e| anyhow::anyhow!("--as-of: {}", e.reason)),
    }
}

fn parse_appid(appid: &str) -> anyhow::Result<AppId> {
    AppId::parse(appid).map_err(|e| anyhow::anyhow!("--appid: {}", e.reason))
}

/// Runs one audit command on the store the configuration names.
pub async fn run(config: &Config, command: AuditCommand) -> anyhow::Result<()> {
    let store = wiring::open_store(config).await?;
    let result = answer(&store, command, &mut std::io::stdout().lock()).await;
    store.close().await;
    result
}

/// Answers `command` from `store` on `out` (split from [`run`] so tests read it).
pub async fn answer(
    store: &Store,
    command: AuditCommand,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let audit = StoreAuditLog::new(store.clone());
    match command {
        AuditCommand::History {
            appid,
            openid,
            json,
        } => {
            let appid = parse_appid(&appid)?;
            let openid =
                OpenId::parse(&openid).map_err(|e| anyhow::anyhow!("--openid: {}", e.reason))?;
            let answer = audit.history_response(&appid, &openid).await?;
            if json {
                print_json(out, &answer)?;
            } else if answer.events.is_empty() {
                writeln!(out, "no event was ever recorded for {appid}:{openid}")?;
            } else {
                history_table(out, &answer)?;
            }
        }
        AuditCommand::Bindings { user, as_of, json } => {
            let user = UserId::new(user).map_err(|e| anyhow::anyhow!("--user: {}", e.reason))?;
            let as_of = parse_as_of(as_of.as_deref())?;
            let answer = audit.user_bindings_response(user, as_of).await?;
            if json {
                print_json(out, &answer)?;
            } else {
                writeln!(out, "bindings of user {user} as of {}", instant(as_of))?;
                bindings_table(out, &answer.bindings)?;
            }
        }
        AuditCommand::AppBindings { appid, as_of, json } => {
            let appid = parse_appid(&appid)?;
            let as_of = parse_as_of(as_of.as_deref())?;
            let answer = audit.app_bindings_response(&appid, as_of).await?;
            if json {
                print_json(out, &answer)?;
            } else {
                writeln!(out, "bindings of app {appid} as of {}", instant(as_of))?;
                bindings_table(out, &answer.bindings)?;
            }
        }
        AuditCommand::Export { after } => {
            let mut position = after;
            loop {
                let page = audit.export_page(position, EXPORT_PAGE).await?;
                out.write_all(miniauth_http::admin::json_lines(&page).as_bytes())?;
                match page.last() {
                    Some(last) if page.len() == EXPORT_PAGE as usize => position = last.position,
                    _ => break,
                }
            }
            out.flush()?;
        }
        AuditCommand::Verify { json } => {
            let report = store.verify().await?;
            verdict(out, &report, json)?;
        }
        AuditCommand::Checkpoint { json } => {
            let checkpoint = store.checkpoint().await?;
            if json {
                print_json(out, &checkpoint)?;
            } else {
                match checkpoint {
                    Some(cp) => writeln!(
                        out,
                        "checkpoint at position {} over {} events: {}\nship this line off the box \
                         (see docs/audit.md)",
                        cp.position, cp.events, cp.cumulative
                    )?,
                    None => writeln!(out, "nothing committed since the last checkpoint")?,
                }
            }
        }
    }
    Ok(())
}

/// Prints the report; an error (a non-zero exit) when it shows tampering.
fn verdict(out: &mut dyn Write, report: &VerifyReport, json: bool) -> anyhow::Result<()> {
    if json {
        print_json(out, report)?;
    } else {
        verify_summary(out, report)?;
    }
    if !report.is_clean() {
        bail!(
            "the event log shows tampering: {} finding(s)",
            report.findings.len()
        );
    }
    Ok(())
}

fn print_json(out: &mut dyn Write, value: &impl serde::Serialize) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value).context("writing JSON")?;
    writeln!(out)?;
    Ok(())
}

fn instant(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Writes rows as columns padded to their widest cell.
fn table(out: &mut dyn Write, header: &[&str], rows: &[Vec<String>]) -> std::io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

fn history_table(out: &mut dyn Write, answer: &HistoryResponse) -> std::io::Result<()> {
    writeln!(out, "history of {}:{}", answer.appid, answer.openid)?;
    let rows: Vec<Vec<String>> = answer
        .events
        .iter()
        .map(|e| {
            let mut details = Vec::new();
            if let Some(user) = e.user_id {
                details.push(format!("user {user}"));
            }
            if let Some(via) = &e.via {
                details.push(format!("via {via}"));
            }
            if let Some(reason) = &e.reason {
                details.push(format!("reason {reason}"));
            }
            if let Some(seq) = e.session_seq {
                details.push(format!("session {seq}"));
            }
            if let Some(unionid) = &e.unionid {
                details.push(format!("unionid {unionid}"));
            }
            if let Some(phone) = &e.phone {
                details.push(format!("phone {phone}"));
            }
            if let Some(nickname) = &e.nickname {
                details.push(format!("nickname {nickname}"));
            }
            vec![
                e.sequence.to_string(),
                instant(e.occurred_at),
                e.event_type.clone(),
                details.join(", "),
                e.actor.clone().unwrap_or_default(),
                e.request_id.clone().unwrap_or_default(),
                e.client_ip.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        out,
        &[
            "SEQ",
            "OCCURRED_AT",
            "EVENT",
            "DETAILS",
            "ACTOR",
            "REQUEST",
            "CLIENT_IP",
        ],
        &rows,
    )
}

fn bindings_table(out: &mut dyn Write, bindings: &[BindingAtView]) -> std::io::Result<()> {
    if bindings.is_empty() {
        return writeln!(out, "(none)");
    }
    let rows: Vec<Vec<String>> = bindings
        .iter()
        .map(|b| {
            vec![
                b.appid.clone(),
                b.openid.clone(),
                b.user_id.to_string(),
                instant(b.bound_at),
                b.via.clone(),
            ]
        })
        .collect();
    table(
        out,
        &["APPID", "OPENID", "USER", "BOUND_SINCE", "VIA"],
        &rows,
    )
}

fn verify_summary(out: &mut dyn Write, report: &VerifyReport) -> std::io::Result<()> {
    writeln!(
        out,
        "{} events in {} streams: {} chained, {} legacy (written before the chain, not \
         protected by it); {} checkpoint(s) compared",
        report.events, report.streams, report.chained, report.legacy, report.checkpoints_checked
    )?;
    if report.is_clean() {
        writeln!(
            out,
            "OK: no event was edited, deleted, inserted or reordered"
        )?;
        if let Some(cp) = &report.checkpoint {
            writeln!(
                out,
                "new checkpoint at position {}: {}",
                cp.position, cp.cumulative
            )?;
        }
        return Ok(());
    }
    let rows: Vec<Vec<String>> = report
        .findings
        .iter()
        .map(|f| {
            vec![
                serde_json::to_value(f.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                f.aggregate_id.clone().unwrap_or_else(|| "-".into()),
                f.sequence.map_or("-".into(), |s| s.to_string()),
                f.position.map_or("-".into(), |p| p.to_string()),
                f.detail.clone(),
            ]
        })
        .collect();
    writeln!(out, "TAMPERING FOUND:")?;
    table(
        out,
        &["WHAT", "ACCOUNT", "SEQUENCE", "POSITION", "DETAIL"],
        &rows,
    )
}

/// Runs `miniauth projections …`.
pub async fn projections(config: &Config, command: ProjectionsCommand) -> anyhow::Result<()> {
    let store = wiring::open_store(config).await?;
    let result = match command {
        ProjectionsCommand::Rebuild => rebuild(&store).await,
    };
    store.close().await;
    result
}

async fn rebuild(store: &Store) -> anyhow::Result<()> {
    let mut stderr = std::io::stderr();
    let rebuilt = store
        .rebuild_read_models(|done, total| {
            let percent = (done * 100).checked_div(total).unwrap_or(100);
            let filled = usize::try_from(percent / 5).unwrap_or(20);
            let _ = write!(
                stderr,
                "\rrebuilding read models [{:<20}] {done}/{total} events ({percent}%)",
                "#".repeat(filled)
            );
            let _ = stderr.flush();
        })
        .await
        .context("rebuilding the read models")?;
    let _ = writeln!(stderr);
    println!(
        "rebuilt the read models from {} events in {:.2} s ({:.0} events/s)",
        rebuilt.events,
        rebuilt.elapsed.as_secs_f64(),
        rebuilt.events_per_second()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use chrono::TimeZone;
    use cqrs_es::{AggregateContext, EventStore};
    use miniauth_domain::{
        AccountId, BindMethod, SealedSecret, SessionProof, SocialAccountCommand, UnbindReason,
    };
    use miniauth_http::{AdminToken, AlwaysReady, ApiState, HttpConfig};

    use super::*;

    const ADMIN: &str = "admin-token-for-the-audit-test";

    fn t(minutes: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0).unwrap() + chrono::Duration::minutes(minutes)
    }

    async fn decide(store: &Store, account: &AccountId, command: SocialAccountCommand) {
        let es = store.event_store();
        let mut context = es.load_aggregate(account.as_str()).await.unwrap();
        let events = context.aggregate().decide(command).unwrap();
        let mut metadata = HashMap::new();
        metadata.insert("actor".to_owned(), "cli".to_owned());
        es.commit(events, context, metadata).await.unwrap();
    }

    /// Bound to user 42 at 10, unbound at 20, bound to 7 at 30.
    async fn history(store: &Store, appid: &AppId, openid: &OpenId) {
        let account = AccountId::new(appid, openid);
        decide(
            store,
            &account,
            SocialAccountCommand::ObtainSession {
                appid: appid.clone(),
                openid: openid.clone(),
                unionid: None,
                session_key: SealedSecret::from_sealed_text("v1.x.y".into()),
                at: t(0),
            },
        )
        .await;
        let bind = |user: i64, at| SocialAccountCommand::Bind {
            proof: SessionProof::ticket(1),
            user_id: UserId::new(user).unwrap(),
            via: BindMethod::PasswordLogin,
            at,
        };
        decide(store, &account, bind(42, t(10))).await;
        decide(
            store,
            &account,
            SocialAccountCommand::Unbind {
                user_id: UserId::new(42).unwrap(),
                reason: UnbindReason::Administrator,
                at: t(20),
            },
        )
        .await;
        decide(store, &account, bind(7, t(30))).await;
    }

    async fn cli_json(store: &Store, command: AuditCommand) -> serde_json::Value {
        let mut out = Vec::new();
        answer(store, command, &mut out).await.unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    #[tokio::test]
    async fn the_cli_and_the_api_answer_alike() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::load(None).unwrap();
        config.store.url = format!("sqlite://{}/miniauth.db", dir.path().display());
        config.store.data_dir = dir.path().to_path_buf();
        let built = wiring::build(&config, Some(([127, 0, 0, 1], 0).into()))
            .await
            .unwrap();
        let store = built.store.clone();
        let appid = AppId::parse(crate::config::DEMO_APPID).unwrap();
        let openid = OpenId::parse("o-audited").unwrap();
        history(&store, &appid, &openid).await;

        let mut http = HttpConfig::new(miniauth_domain::TenantId::parse("default").unwrap());
        http.admin_token = Some(AdminToken::new(ADMIN).unwrap());
        let state = ApiState::new(
            built.service.clone(),
            Arc::new(serde_json::json!({"keys": []})),
            Arc::new(AlwaysReady),
            http,
        )
        .with_audit(Arc::new(StoreAuditLog::new(store.clone())));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(miniauth_http::serve(
            listener,
            miniauth_http::router(state),
            std::future::pending(),
        ));
        let client = reqwest::Client::new();
        let get = |path: String| {
            let request = client.get(format!("{base}{path}")).bearer_auth(ADMIN);
            async move {
                let response = request.send().await.unwrap();
                assert_eq!(response.status(), 200);
                response.text().await.unwrap()
            }
        };
        let api = move |path: String| async move {
            serde_json::from_str::<serde_json::Value>(&get(path).await).unwrap()
        };

        for minute in [5, 15, 25, 35] {
            let as_of = instant(t(minute));
            let from_api = api(format!("/v1/admin/users/42/bindings?as_of={as_of}")).await;
            let from_cli = cli_json(
                &store,
                AuditCommand::Bindings {
                    user: 42,
                    as_of: Some(as_of.clone()),
                    json: true,
                },
            )
            .await;
            assert_eq!(from_api, from_cli, "as of {as_of}");
            let expected = usize::from(minute == 15);
            assert_eq!(from_cli["bindings"].as_array().unwrap().len(), expected);
            let app_api = api(format!("/v1/admin/bindings?appid={appid}&as_of={as_of}")).await;
            let app_cli = cli_json(
                &store,
                AuditCommand::AppBindings {
                    appid: appid.to_string(),
                    as_of: Some(as_of),
                    json: true,
                },
            )
            .await;
            assert_eq!(app_api, app_cli);
        }
        let history_api = api(format!("/v1/admin/apps/{appid}/accounts/{openid}/history")).await;
        let history_cli = cli_json(
            &store,
            AuditCommand::History {
                appid: appid.to_string(),
                openid: openid.to_string(),
                json: true,
            },
        )
        .await;
        assert_eq!(history_api, history_cli);
        assert_eq!(history_cli["events"][2]["reason"], "administrator");

        let export_api = get("/v1/admin/events?after=1".to_owned()).await;
        let mut export_cli = Vec::new();
        answer(&store, AuditCommand::Export { after: 1 }, &mut export_cli)
            .await
            .unwrap();
        assert_eq!(export_api, String::from_utf8(export_cli).unwrap());
        assert_eq!(export_api.lines().count(), 3);

        let mut out = Vec::new();
        answer(&store, AuditCommand::Verify { json: false }, &mut out)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out).into_owned();
        assert!(text.contains("OK:") && text.contains("4 chained"), "{text}");
        server.abort();
    }

    #[test]
    fn the_subcommands_parse_as_documented() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            audit: AuditCommand,
        }
        use clap::Parser;
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("audit").chain(args.iter().copied()))
                .map(|cli| cli.audit)
        };
        assert!(matches!(
            parse(&[
                "bindings",
                "--user",
                "42",
                "--as-of",
                "2026-03-01T00:00:00Z",
                "--json"
            ]),
            Ok(AuditCommand::Bindings {
                user: 42,
                as_of: Some(_),
                json: true
            })
        ));
        assert!(matches!(
            parse(&[
                "app-bindings",
                "--appid",
                "wx1",
                "--as-of",
                "2026-03-01T00:00:00Z"
            ]),
            Ok(AuditCommand::AppBindings { json: false, .. })
        ));
        assert!(matches!(
            parse(&["history", "--appid", "wx1", "--openid", "o1"]),
            Ok(AuditCommand::History { .. })
        ));
        assert!(matches!(
            parse(&["export"]),
            Ok(AuditCommand::Export { after: 0 })
        ));
        assert!(matches!(
            parse(&["export", "--after", "7"]),
            Ok(AuditCommand::Export { after: 7 })
        ));
        assert!(matches!(
            parse(&["verify", "--json"]),
            Ok(AuditCommand::Verify { json: true })
        ));
        assert!(matches!(
            parse(&["checkpoint"]),
            Ok(AuditCommand::Checkpoint { json: false })
        ));
        assert!(parse(&["bindings"]).is_err(), "--user is required");
    }

    #[test]
    fn verify_fails_and_names_the_event_when_tampering_is_found() {
        let report = VerifyReport {
            events: 4,
            streams: 1,
            chained: 4,
            legacy: 0,
            checkpoints_checked: 1,
            findings: vec![miniauth_store::Finding {
                kind: miniauth_store::FindingKind::TailDeleted,
                aggregate_id: Some("wxdemo000000000001:o-x".into()),
                sequence: Some(5),
                position: None,
                detail: "the state row records 5 events, the log ends at 4".into(),
            }],
            checkpoint: None,
        };
        let mut out = Vec::new();
        let error = verdict(&mut out, &report, false).unwrap_err();
        assert!(error.to_string().contains("1 finding"));
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("TAMPERING FOUND"), "{text}");
        assert!(
            text.contains("tail_deleted  wxdemo000000000001:o-x  5"),
            "{text}"
        );
        let mut out = Vec::new();
        assert!(verdict(&mut out, &report, true).is_err());
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(json["findings"][0]["kind"], "tail_deleted");
        let clean = VerifyReport {
            findings: Vec::new(),
            ..report
        };
        assert!(verdict(&mut Vec::new(), &clean, false).is_ok());
    }

    #[tokio::test]
    async fn tables_are_readable_and_bad_arguments_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::load(None).unwrap();
        config.store.url = format!("sqlite://{}/miniauth.db", dir.path().display());
        config.store.data_dir = dir.path().to_path_buf();
        let store = wiring::open_store(&config).await.unwrap();
        let appid = AppId::parse(crate::config::DEMO_APPID).unwrap();
        let openid = OpenId::parse("o-table").unwrap();
        history(&store, &appid, &openid).await;
        let mut out = Vec::new();
        answer(
            &store,
            AuditCommand::History {
                appid: appid.to_string(),
                openid: openid.to_string(),
                json: false,
            },
            &mut out,
        )
        .await
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("SEQ  OCCURRED_AT"), "{text}");
        assert!(text.contains("user 42, via password_login"), "{text}");
        assert!(text.contains("reason administrator"), "{text}");
        let mut out = Vec::new();
        answer(
            &store,
            AuditCommand::Bindings {
                user: 7,
                as_of: Some(instant(t(40))),
                json: false,
            },
            &mut out,
        )
        .await
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("o-table") && text.contains("2026-03-01T08:30:00Z"),
            "{text}"
        );
        for bad in [
            AuditCommand::Bindings {
                user: 0,
                as_of: None,
                json: false,
            },
            AuditCommand::Bindings {
                user: 7,
                as_of: Some("1 March".into()),
                json: false,
            },
            AuditCommand::History {
                appid: "nope".into(),
                openid: "o".into(),
                json: false,
            },
        ] {
            let error = answer(&store, bad, &mut Vec::new()).await.unwrap_err();
            assert!(error.to_string().starts_with("--"), "{error}");
        }
        let mut out = Vec::new();
        answer(&store, AuditCommand::Checkpoint { json: true }, &mut out)
            .await
            .unwrap();
        let checkpoint: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(checkpoint["events"], 4);
        rebuild(&store).await.unwrap();
        assert_eq!(
            store
                .account(&appid, &openid)
                .await
                .unwrap()
                .unwrap()
                .bound_user,
            Some(UserId::new(7).unwrap())
        );
        store.close().await;
    }
}
