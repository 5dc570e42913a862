//! Writes an event log to rebuild the read models from, through the store's public API:
//! `accounts` accounts, each with logins, a binding, and for some an unbind and a rebind,
//! an erasure or an import (about 10.5 events per account). It then prints the
//! configuration `miniauth projections rebuild --config` needs to open that store.
//!
//! ```text
//! cargo run --release -p miniauth-store --example rebuild_log -- \
//!     postgres://postgres@127.0.0.1:5432/rebuild_bench 4500 /tmp/rebuild_bench > rebuild.toml
//! ```
//!
//! The database must exist and be empty: each run makes a server key of its own. Used
//! by docs/benchmarks.md to time the rebuild. With `--rebuild` first it times
//! `Store::rebuild_read_models` on such a store instead (what `miniauth projections
//! rebuild` runs, without building the binary):
//!
//! ```text
//! cargo run --release -p miniauth-store --example rebuild_log -- --rebuild \
//!     postgres://postgres@127.0.0.1:5432/rebuild_bench <server key> /tmp/rebuild_bench
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::{AggregateContext, EventStore};
use miniauth_application::ports::Clock;
use miniauth_domain::{
    AccountId, AppId, BindMethod, ImportedBinding, OpenId, Provenance, SealedDatum, SealedSecret,
    SealedUnionId, SessionProof, SocialAccountCommand, UnbindReason, UserId,
};
use miniauth_store::{AccountEventStore, ServerKey, Store, StoreConfig};

const APPID: &str = "wxbench00000000001";
/// Accounts written at once.
const WRITERS: usize = 8;

struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).peekable();
    if args.next_if_eq("--rebuild").is_some() {
        let (Some(url), Some(key), Some(data_dir)) = (args.next(), args.next(), args.next()) else {
            return Err("usage: rebuild_log --rebuild <store url> <server key> <data dir>".into());
        };
        let config = StoreConfig {
            url,
            data_dir: data_dir.into(),
            server_key: Some(ServerKey::parse(&key)?),
            ..StoreConfig::default()
        };
        let store = Store::connect(&config, Arc::new(SystemClock)).await?;
        let rebuilt = store.rebuild_read_models(|_, _| {}).await?;
        store.close().await;
        println!(
            "rebuilt the read models from {} events in {:.2} s ({:.0} events/s)",
            rebuilt.events,
            rebuilt.elapsed.as_secs_f64(),
            rebuilt.events_per_second()
        );
        return Ok(());
    }
    let (Some(url), Some(accounts), Some(data_dir)) = (args.next(), args.next(), args.next())
    else {
        return Err("usage: rebuild_log <store url> <accounts> <data dir>".into());
    };
    let accounts: u64 = accounts.parse()?;
    let key = ServerKey::generate();
    let config = StoreConfig {
        url: url.clone(),
        max_connections: WRITERS as u32 + 2,
        data_dir: data_dir.clone().into(),
        server_key: Some(ServerKey::parse(&key.to_base64())?),
        ..StoreConfig::default()
    };
    let store = Store::connect(&config, Arc::new(SystemClock)).await?;
    let es = store.event_store();
    let mut tasks = Vec::new();
    for writer in 0..WRITERS as u64 {
        let es = es.clone();
        tasks.push(tokio::spawn(async move {
            for n in (writer..accounts).step_by(WRITERS) {
                account(&es, n).await?;
            }
            Ok::<_, String>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    store.catch_up().await?;
    store.close().await;
    println!(
        "[store]\nurl = {url:?}\ndata_dir = {data_dir:?}\nserver_key = {:?}\n",
        key.to_base64()
    );
    Ok(())
}

fn provenance(n: u64) -> Provenance {
    Provenance {
        system: "bench".into(),
        table: "accounts".into(),
        row_id: i64::try_from(n).unwrap_or_default(),
    }
}

/// The events of account `n`.
async fn account(es: &AccountEventStore, n: u64) -> Result<(), String> {
    let at = |minutes: i64| {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + Duration::minutes(minutes)
    };
    let appid = AppId::parse(APPID).map_err(|e| e.to_string())?;
    let openid = OpenId::parse(&format!("o-{n}")).map_err(|e| e.to_string())?;
    let user = |u: u64| UserId::new(i64::try_from(u).unwrap_or(1) + 1).map_err(|e| e.to_string());
    let unionid = || SealedUnionId {
        hash: format!("{n:064x}"),
        sealed: Some(SealedDatum::from_sealed_text(format!("v1.u.{n}"))),
    };
    let login = |minutes| SocialAccountCommand::ObtainSession {
        appid: appid.clone(),
        openid: openid.clone(),
        unionid: n.is_multiple_of(2).then(unionid),
        session_key: SealedSecret::from_sealed_text("v1.x.y".into()),
        at: at(minutes),
    };
    let bind = |u, minutes| -> Result<_, String> {
        Ok(SocialAccountCommand::Bind {
            proof: SessionProof::ticket(1),
            user_id: user(u)?,
            via: BindMethod::PhoneMatch,
            at: at(minutes),
        })
    };
    let mut commands = Vec::new();
    if n % 10 == 9 {
        commands.push(SocialAccountCommand::Import {
            appid: appid.clone(),
            channel: miniauth_domain::Channel::MiniProgram,
            openid: openid.clone(),
            unionid: Some(unionid()),
            nickname: Some(SealedDatum::from_sealed_text(format!("v1.n.{n}"))),
            avatar_url: None,
            source: provenance(n),
            recorded_there: at(0),
            binding: Some(ImportedBinding {
                user_id: user(n)?,
                source: provenance(n),
                bound_there: at(0),
            }),
            at: at(1),
        });
        commands.push(login(2));
    } else {
        commands.push(login(0));
        commands.push(bind(n, 1)?);
    }
    for minutes in 2..9 {
        commands.push(login(minutes));
    }
    if n.is_multiple_of(3) {
        commands.push(SocialAccountCommand::Unbind {
            user_id: user(n)?,
            reason: UnbindReason::UserRequest,
            at: at(8),
        });
        // Rebound to another user: the registry moves.
        commands.push(bind(n + 1_000_000, 9)?);
    }
    if n.is_multiple_of(7) {
        commands.push(SocialAccountCommand::ErasePersonalData { at: at(10) });
    }
    let id = AccountId::new(&appid, &openid);
    for command in commands {
        let mut context = es
            .load_aggregate(id.as_str())
            .await
            .map_err(|e| e.to_string())?;
        let events = context
            .aggregate()
            .decide(command)
            .map_err(|e| format!("account {n}: {e}"))?;
        let metadata = HashMap::from([("actor".to_owned(), "cli".to_owned())]);
        es.commit(events, context, metadata)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
