//! `miniauth audit …` and `miniauth projections rebuild`: the auditor's questions
//! answered directly from the store, no server needed. The application's [`Audit`]
//! answers, as it does for the admin API; this file parses the command line and
//! renders the answers, so `--json` prints what the API answers.

use std::io::Write;
use std::sync::Arc;

use anyhow::{bail, Context};
use chrono::{DateTime, SecondsFormat, Utc};
use miniauth_application::audit::{parse_instant, AccountHistory, BindingAt, HistoryEntry};
use miniauth_application::Audit;
use miniauth_domain::audit::{json_lines, VerifyReport};
use miniauth_domain::{AppId, OpenId, UserId};
use miniauth_security::SystemClock;
use miniauth_store::Store;

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
        appid: AppId,
        /// The WeChat identity.
        #[arg(long)]
        openid: OpenId,
        /// Print JSON (the API's answer) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// A user's bindings as they stood at an instant, replayed from the log.
    Bindings {
        /// The business user id.
        #[arg(long)]
        user: UserId,
        /// The instant, RFC 3339 (default: now).
        #[arg(long, value_parser = instant_arg)]
        as_of: Option<DateTime<Utc>>,
        /// Print JSON (the API's answer) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Every binding of an app as it stood at an instant.
    AppBindings {
        /// The app.
        #[arg(long)]
        appid: AppId,
        /// The instant, RFC 3339 (default: now).
        #[arg(long, value_parser = instant_arg)]
        as_of: Option<DateTime<Utc>>,
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

/// `--as-of`, parsed as the admin API parses `as_of`.
fn instant_arg(text: &str) -> Result<DateTime<Utc>, miniauth_domain::InvalidValue> {
    parse_instant("as_of", text)
}

/// `miniauth projections …`.
#[derive(Debug, Clone, Copy, clap::Subcommand)]
pub enum ProjectionsCommand {
    /// Rebuilds every read model from the event log.
    Rebuild,
}

/// The application's audit over `store`, with the store's vault and the system clock.
pub fn over(store: &Store) -> Audit {
    Audit::new(
        Arc::new(store.clone()),
        Arc::new(store.vault()),
        Arc::new(SystemClock),
    )
}

/// Runs one audit command on the store the configuration names.
pub async fn run(config: &Config, command: AuditCommand) -> anyhow::Result<()> {
    let store = wiring::open_store(config).await?;
    let configured = config.apps.iter().filter_map(|app| app.appid.parse().ok());
    let audit = over(&store).with_apps(configured);
    let result = answer(&audit, command, &mut std::io::stdout().lock()).await;
    store.close().await;
    result
}

/// Answers `command` from `audit` on `out` (split from [`run`] so tests read it).
pub async fn answer(
    audit: &Audit,
    command: AuditCommand,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match command {
        AuditCommand::History {
            appid,
            openid,
            json,
        } => {
            // No event: `account_not_found`, a non-zero exit, as the API's 404.
            let answer = audit.history(&appid, &openid).await?;
            if json {
                print_json(out, &answer)?;
            } else {
                history_table(out, &answer)?;
            }
        }
        AuditCommand::Bindings { user, as_of, json } => {
            let answer = audit.user_bindings(user, as_of).await?;
            if json {
                print_json(out, &answer)?;
            } else {
                writeln!(
                    out,
                    "bindings of user {user} as of {}",
                    instant(answer.as_of)
                )?;
                bindings_table(out, &answer.bindings)?;
            }
        }
        AuditCommand::AppBindings { appid, as_of, json } => {
            let answer = audit.app_bindings(&appid, as_of).await?;
            if json {
                print_json(out, &answer)?;
            } else {
                writeln!(
                    out,
                    "bindings of app {appid} as of {}",
                    instant(answer.as_of)
                )?;
                bindings_table(out, &answer.bindings)?;
            }
        }
        AuditCommand::Export { after } => export(audit, after, out).await?,
        AuditCommand::Verify { json } => {
            let report = audit.verify().await?;
            verdict(out, &report, json)?;
        }
        AuditCommand::Checkpoint { json } => {
            let answer = audit.checkpoint().await?;
            if json {
                print_json(out, &answer)?;
            } else {
                match (answer.recorded, answer.checkpoint) {
                    (true, Some(cp)) => writeln!(
                        out,
                        "checkpoint at position {} over {} events: {}\nship this line off the box \
                         (see docs/audit.md)",
                        cp.position, cp.events, cp.cumulative
                    )?,
                    (_, Some(cp)) => writeln!(
                        out,
                        "nothing committed since the last checkpoint, at position {} over {} \
                         events: {}",
                        cp.position, cp.events, cp.cumulative
                    )?,
                    (_, None) => {
                        writeln!(out, "no event was ever committed: nothing to checkpoint")?
                    }
                }
            }
        }
    }
    Ok(())
}

/// The log after `after` as JSON lines, page by page.
async fn export(audit: &Audit, after: i64, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut position = after;
    loop {
        let page = audit.export(position, EXPORT_PAGE).await?;
        out.write_all(json_lines(&page).as_bytes())?;
        match page.last() {
            Some(last) if page.len() == EXPORT_PAGE as usize => position = last.position,
            _ => break,
        }
    }
    out.flush()?;
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
    if !report.is_complete() {
        bail!(
            "{} checkpoint(s) not yet verifiable: a transaction still in flight holds the \
             log's safe horizon below them; run verify again",
            report.not_yet_verifiable.len()
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

/// What an event says, in one cell: `user 42, via phone_match`.
fn details(e: &HistoryEntry) -> String {
    let labelled = [
        ("user", e.user_id.map(|user| user.to_string())),
        ("via", e.via.clone()),
        ("linked from", e.linked_from.clone()),
        (
            "users",
            e.users.as_ref().map(|users| {
                users
                    .iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            }),
        ),
        ("reason", e.reason.clone()),
        ("session", e.session_seq.map(|seq| seq.to_string())),
        ("unionid", e.unionid.clone()),
        ("phone", e.phone.clone()),
        ("nickname", e.nickname.clone()),
    ];
    labelled
        .into_iter()
        .filter_map(|(label, value)| value.map(|value| format!("{label} {value}")))
        .collect::<Vec<_>>()
        .join(", ")
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

fn history_table(out: &mut dyn Write, answer: &AccountHistory) -> std::io::Result<()> {
    writeln!(out, "history of {}:{}", answer.appid, answer.openid)?;
    let rows: Vec<Vec<String>> = answer
        .events
        .iter()
        .map(|e| {
            vec![
                e.sequence.to_string(),
                instant(e.occurred_at),
                e.event_type.clone(),
                details(e),
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

fn bindings_table(out: &mut dyn Write, bindings: &[BindingAt]) -> std::io::Result<()> {
    if bindings.is_empty() {
        return writeln!(out, "(none)");
    }
    let rows: Vec<Vec<String>> = bindings
        .iter()
        .map(|b| {
            vec![
                b.appid.to_string(),
                b.openid.to_string(),
                b.span.user_id.to_string(),
                instant(b.span.bound_at),
                b.span.via.as_str().to_owned(),
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
    if report.is_clean() && !report.is_complete() {
        let positions: Vec<String> = report
            .not_yet_verifiable
            .iter()
            .map(i64::to_string)
            .collect();
        return writeln!(
            out,
            "NOT YET VERIFIABLE: nothing was found in the log read, but the checkpoint(s) at \
             position {} lie past what was final (a transaction in flight holds the safe \
             horizon back)",
            positions.join(", ")
        );
    }
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
                f.kind.as_str().to_owned(),
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
    use std::sync::Arc;

    use chrono::TimeZone;
    use cqrs_es::{AggregateContext, EventStore};
    use miniauth_application::EventMetadata;
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
        let metadata = EventMetadata {
            actor: Some("cli".to_owned()),
            ..EventMetadata::default()
        };
        es.commit(events, context, metadata.to_map()).await.unwrap();
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
        // As `run` does: the embedded default's app is configured.
        let demo = AppId::parse(crate::config::DEMO_APPID).unwrap();
        let audit = over(store).with_apps([demo]);
        answer(&audit, command, &mut out).await.unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    /// The admin API over `built`'s service and store, on a random port: its base URL
    /// and the server task.
    async fn admin_api(
        built: &wiring::Built,
    ) -> (String, tokio::task::JoinHandle<std::io::Result<()>>) {
        let mut http = HttpConfig::new(miniauth_domain::TenantId::parse("default").unwrap());
        http.admin_token = Some(AdminToken::new(ADMIN).unwrap());
        let state = ApiState::new(
            built.service.clone(),
            Arc::new(serde_json::json!({"keys": []})),
            Arc::new(AlwaysReady),
            http,
        )
        .with_audit(Arc::new(built.store.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(miniauth_http::serve(
            listener,
            miniauth_http::router(state),
            std::future::pending(),
        ));
        (base, server)
    }

    #[tokio::test]
    async fn the_cli_and_the_api_answer_alike() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::load(None).unwrap();
        config.store.url = format!("sqlite://{}/miniauth.db", dir.path().display());
        config.store.data_dir = dir.path().to_path_buf();
        let built = wiring::build(
            &config,
            wiring::SimulatorStart::At(([127, 0, 0, 1], 0).into()),
        )
        .await
        .unwrap();
        let store = built.store.clone();
        let appid = AppId::parse(crate::config::DEMO_APPID).unwrap();
        let openid = OpenId::parse("o-audited").unwrap();
        history(&store, &appid, &openid).await;

        let (base, server) = admin_api(&built).await;
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
                    user: UserId::new(42).unwrap(),
                    as_of: Some(t(minute)),
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
                    appid: appid.clone(),
                    as_of: Some(t(minute)),
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
                appid: appid.clone(),
                openid: openid.clone(),
                json: true,
            },
        )
        .await;
        assert_eq!(history_api, history_cli);
        assert_eq!(history_cli["events"][2]["reason"], "administrator");

        let export_api = get("/v1/admin/events?after=1".to_owned()).await;
        let mut export_cli = Vec::new();
        answer(
            &over(&store),
            AuditCommand::Export { after: 1 },
            &mut export_cli,
        )
        .await
        .unwrap();
        assert_eq!(export_api, String::from_utf8(export_cli).unwrap());
        assert_eq!(export_api.lines().count(), 3);

        let mut out = Vec::new();
        answer(
            &over(&store),
            AuditCommand::Verify { json: false },
            &mut out,
        )
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
                user,
                as_of: Some(as_of),
                json: true
            }) if user.get() == 42 && instant(as_of) == "2026-03-01T00:00:00Z"
        ));
        assert!(matches!(
            parse(&[
                "app-bindings",
                "--appid",
                "wx4f4bc4dec97d474b",
                "--as-of",
                "2026-03-01T00:00:00Z"
            ]),
            Ok(AuditCommand::AppBindings { json: false, .. })
        ));
        assert!(matches!(
            parse(&["history", "--appid", "wx4f4bc4dec97d474b", "--openid", "o1"]),
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
        // Each argument is validated as the API validates it, and the error names it.
        for (bad, flag) in [
            (&["bindings", "--user", "0"][..], "--user"),
            (
                &["bindings", "--user", "7", "--as-of", "1 March"],
                "--as-of",
            ),
            (&["history", "--appid", "nope", "--openid", "o"], "--appid"),
        ] {
            let error = parse(bad).expect_err("refused").to_string();
            assert!(error.contains(flag), "{error}");
        }
    }

    #[test]
    fn verify_fails_and_names_the_event_when_tampering_is_found() {
        let report = VerifyReport {
            events: 4,
            streams: 1,
            chained: 4,
            legacy: 0,
            checkpoints_checked: 1,
            not_yet_verifiable: Vec::new(),
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
        // A checkpoint past the horizon is neither a pass nor tampering.
        let pending = VerifyReport {
            not_yet_verifiable: vec![4_294_967_296],
            ..clean
        };
        let mut out = Vec::new();
        let error = verdict(&mut out, &pending, false).unwrap_err();
        assert!(error.to_string().contains("not yet verifiable"), "{error}");
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("NOT YET VERIFIABLE"), "{text}");
        assert!(text.contains("4294967296"), "{text}");
        assert!(
            !text.contains("OK:") && !text.contains("TAMPERING"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn tables_are_readable() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::load(None).unwrap();
        config.store.url = format!("sqlite://{}/miniauth.db", dir.path().display());
        config.store.data_dir = dir.path().to_path_buf();
        let store = wiring::open_store(&config).await.unwrap();
        let appid = AppId::parse(crate::config::DEMO_APPID).unwrap();
        let openid = OpenId::parse("o-table").unwrap();
        history(&store, &appid, &openid).await;
        let audit = over(&store).with_apps([appid.clone()]);
        let mut out = Vec::new();
        answer(
            &audit,
            AuditCommand::History {
                appid: appid.clone(),
                openid: openid.clone(),
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
            &audit,
            AuditCommand::Bindings {
                user: UserId::new(7).unwrap(),
                as_of: Some(t(40)),
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
        let mut out = Vec::new();
        answer(&audit, AuditCommand::Checkpoint { json: true }, &mut out)
            .await
            .unwrap();
        let checkpoint: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(checkpoint["events"], 4);
        assert_eq!(checkpoint["recorded"], true);
        // Nothing new: still an object, the newest checkpoint, to ship off the box.
        let mut out = Vec::new();
        answer(&audit, AuditCommand::Checkpoint { json: true }, &mut out)
            .await
            .unwrap();
        let again: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(again["recorded"], false);
        assert_eq!(
            (&again["position"], &again["cumulative"]),
            (&checkpoint["position"], &checkpoint["cumulative"])
        );
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
