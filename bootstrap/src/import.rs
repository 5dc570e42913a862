//! `miniauth import gitegg`: carries a GitEgg deployment's WeChat bindings and their
//! users over (docs/migrating-from-gitegg.md). The rules are the application's
//! ([`GiteggImport`]); this wires the GitEgg database, the store, a progress bar and
//! the report.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use chrono::FixedOffset;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use miniauth_application::import::{
    GiteggImport, ImportObserver, ImportOptions, ImportSummary, Planned, Skipped, WechatSource,
};
use miniauth_domain::{AppId, TenantId};
use miniauth_gitegg::GiteggDatabase;

use crate::config::Config;
use crate::wiring::{self, SimulatorStart};

/// `miniauth import …`.
#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Import a GitEgg database's WeChat bindings (mini program, Official Account,
    /// website, mobile App) and their users.
    Gitegg(GiteggArgs),
}

/// `miniauth import gitegg`.
#[derive(Debug, Args)]
pub struct GiteggArgs {
    /// The GitEgg database: mysql://user:password@host:port/database.
    #[arg(long = "from", env = "MINIAUTH_IMPORT_FROM")]
    pub from: String,
    /// The configured mini program app that GitEgg's WECHAT_MINI_APP rows belong to
    /// (the same as --source WECHAT_MINI_APP=APPID).
    #[arg(long)]
    pub appid: Option<AppId>,
    /// SOURCE=APPID: the configured app a GitEgg source's rows belong to (repeat):
    /// WECHAT_MINI_APP → a mini_program app, WECHAT_MP → an official_account app,
    /// WECHAT_OPEN → a website or mobile_app app. Rows of a source not given are skipped.
    #[arg(long = "source", value_parser = parse_source)]
    pub sources: Vec<(WechatSource, AppId)>,
    /// GITEGG_TENANT_ID=TENANT: which miniauth tenant a GitEgg tenant id is (repeat;
    /// 0 maps to the app's tenant unless given).
    #[arg(long = "tenant-map", value_parser = parse_tenant_map)]
    pub tenant_map: Vec<(i64, TenantId)>,
    /// Print what would be imported and every row skipped, and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Social rows per batch (one transaction each).
    #[arg(long, default_value_t = 2000)]
    pub batch_size: u32,
    /// The UTC offset GitEgg's DATETIME columns are in (its server's time zone).
    #[arg(long, default_value = "+08:00", value_parser = parse_offset)]
    pub utc_offset: FixedOffset,
    /// No progress bar (logs, CI).
    #[arg(long)]
    pub quiet: bool,
}

fn parse_tenant_map(raw: &str) -> Result<(i64, TenantId), String> {
    let (id, tenant) = raw
        .split_once('=')
        .ok_or_else(|| format!("{raw:?}: expected GITEGG_TENANT_ID=TENANT"))?;
    let id = id
        .trim()
        .parse::<i64>()
        .map_err(|_| format!("{raw:?}: the GitEgg tenant id is a number"))?;
    let tenant = TenantId::parse(tenant.trim()).map_err(|e| format!("{raw:?}: {}", e.reason))?;
    Ok((id, tenant))
}

fn parse_source(raw: &str) -> Result<(WechatSource, AppId), String> {
    let (source, appid) = raw
        .split_once('=')
        .ok_or_else(|| format!("{raw:?}: expected SOURCE=APPID"))?;
    let source = WechatSource::parse(source).map_err(|e| e.to_string())?;
    let appid = AppId::parse(appid.trim()).map_err(|e| format!("{raw:?}: {}", e.reason))?;
    Ok((source, appid))
}

fn parse_offset(raw: &str) -> Result<FixedOffset, String> {
    raw.parse::<FixedOffset>()
        .map_err(|_| format!("{raw:?}: expected an offset like +08:00"))
}

/// Runs `miniauth import …`.
pub async fn run(config: &Config, command: ImportCommand) -> anyhow::Result<()> {
    let ImportCommand::Gitegg(args) = command;
    let options = ImportOptions {
        sources: args
            .appid
            .iter()
            .map(|appid| (WechatSource::MiniApp, appid.clone()))
            .chain(args.sources.iter().cloned())
            .collect(),
        tenant_map: args.tenant_map.iter().cloned().collect::<BTreeMap<_, _>>(),
        dry_run: args.dry_run,
        batch_size: args.batch_size,
    };
    let built = wiring::build(config, SimulatorStart::NotStarted).await?;
    // Refused before GitEgg is even connected to: nothing read, nothing written.
    if let Err(refused) = options.check(built.service.apps()) {
        built.store.close().await;
        return Err(refused.into());
    }
    let source = GiteggDatabase::connect(&args.from, args.utc_offset)
        .await
        .with_context(|| format!("--from {}", wiring::redact_url(&args.from)))?;
    let import = GiteggImport::new(
        built.service.apps().clone(),
        Arc::new(source),
        Arc::new(built.store.import_target()),
        built.clock.clone(),
    );
    let rows = import.rows().await?;
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(rows)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} social rows ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let report = Report {
        bar: bar.clone(),
        dry_run: args.dry_run,
    };
    let started = Instant::now();
    let summary = import.run(&options, &report).await?;
    bar.finish_and_clear();
    if !args.dry_run {
        built.store.catch_up().await?;
    }
    print!(
        "{}",
        summary_text(&summary, args.dry_run, started.elapsed())
    );
    built.store.close().await;
    Ok(())
}

/// Prints each planned import (dry run) and each skipped row, above the progress bar.
struct Report {
    bar: ProgressBar,
    dry_run: bool,
}

impl ImportObserver for Report {
    fn advanced(&self, rows: u64) {
        self.bar.inc(rows);
    }

    fn skipped(&self, skipped: &Skipped) {
        self.bar.suspend(|| {
            println!(
                "skip {}#{}: {}",
                skipped.table, skipped.row_id, skipped.reason
            )
        });
    }

    fn planned(&self, planned: &Planned) {
        if !self.dry_run {
            return;
        }
        self.bar.suspend(|| {
            let binding = match planned.binding {
                Some((row, user)) => format!(
                    ", bound to user {user} (t_just_auth_social_user#{row}{})",
                    if planned.creates_user {
                        ", user created"
                    } else {
                        ""
                    }
                ),
                None => String::new(),
            };
            println!(
                "import t_just_auth_social#{} as {}{binding}",
                planned.social_id, planned.account
            )
        });
    }
}

/// The summary printed at the end.
pub fn summary_text(summary: &ImportSummary, dry_run: bool, took: std::time::Duration) -> String {
    let verb = if dry_run { "would import" } else { "imported" };
    let mut text = format!(
        "{verb} {} accounts, {} bindings, {} users from {} social rows in {:.1} s\n",
        summary.accounts,
        summary.bindings,
        summary.users,
        summary.rows_read,
        took.as_secs_f64()
    );
    text.push_str(&format!("already imported: {}\n", summary.already_imported));
    let skipped: u64 = summary.skipped.values().sum();
    text.push_str(&format!("skipped: {skipped}"));
    if !summary.skipped.is_empty() {
        let kinds: Vec<String> = summary
            .skipped
            .iter()
            .map(|(kind, n)| format!("{kind} {n}"))
            .collect();
        text.push_str(&format!(" ({})", kinds.join(", ")));
    }
    text.push('\n');
    if summary.users_without_password + summary.users_without_mobile > 0 {
        text.push_str(&format!(
            "users without a password (not BCrypt): {}, without a mobile (not a valid number): {}\n",
            summary.users_without_password, summary.users_without_mobile
        ));
    }
    if dry_run {
        text.push_str("dry run: nothing was written\n");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_option_names_a_wechat_source_and_an_appid() {
        assert_eq!(
            parse_source("WECHAT_MP=wxdemo000000000003"),
            Ok((
                WechatSource::OfficialAccount,
                AppId::parse("wxdemo000000000003").unwrap()
            ))
        );
        assert!(parse_source("WECHAT_MP")
            .unwrap_err()
            .contains("SOURCE=APPID"));
        let work = parse_source("WECHAT_ENTERPRISE=wxdemo000000000003").unwrap_err();
        assert!(work.contains("Work WeChat"), "{work}");
        let unknown = parse_source("GITHUB=wxdemo000000000003").unwrap_err();
        assert!(unknown.contains("unknown source GITHUB"), "{unknown}");
        assert!(parse_source("WECHAT_OPEN=not an appid").is_err());
    }
}
