//! What the reliability tests share: a time bound, a tally of answers, and the storage
//! invariants checked against the event log, the read models and the registry.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use miniauth_application::ports::BindingRegistry;
use miniauth_domain::{AccountId, AppId, OpenId, SocialAccountEvent, UserId};
use miniauth_e2e::Answer;
use miniauth_store::Store;
use serde_json::Value;

/// Runs `test`, failing it when it takes longer than `limit` (a hung dependency must
/// fail the suite, not stall it).
pub async fn bounded<T>(what: &str, limit: Duration, test: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, test).await {
        Ok(out) => out,
        Err(_) => panic!("{what} took longer than {limit:?}"),
    }
}

/// The user id in an access token (`sub`), read without verifying it: the caller checks
/// the token elsewhere; here it only says whom a login answered for.
pub fn token_subject(access: &str) -> i64 {
    use base64::Engine as _;
    let payload = access.split('.').nth(1).expect("a JWT has three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("the JWT payload is base64url");
    let claims: Value = serde_json::from_slice(&bytes).expect("the JWT payload is JSON");
    claims["sub"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no numeric sub in {claims}"))
}

/// Answers counted by (route, status, code), to report and to assert on.
#[derive(Debug, Default, Clone)]
pub struct Tally(pub BTreeMap<(String, u16, String), u32>);

impl Tally {
    /// Counts one answer of `route`.
    pub fn add(&mut self, route: &str, answer: &Answer) {
        let code = answer.body["code"].as_str().unwrap_or_default().to_owned();
        *self
            .0
            .entry((route.to_owned(), answer.status.as_u16(), code))
            .or_default() += 1;
    }

    /// Counts a request that got no HTTP answer at all.
    pub fn add_transport_error(&mut self, route: &str) {
        *self
            .0
            .entry((route.to_owned(), 0, "no answer".to_owned()))
            .or_default() += 1;
    }

    /// Answers with this status.
    pub fn with_status(&self, status: u16) -> u32 {
        self.0
            .iter()
            .filter(|((_, s, _), _)| *s == status)
            .map(|(_, n)| n)
            .sum()
    }

    /// Every (route, status, code) outside `allowed` statuses, with its count.
    pub fn outside(&self, allowed: &[u16]) -> Vec<String> {
        self.0
            .iter()
            .filter(|((_, s, _), _)| !allowed.contains(s))
            .map(|((route, s, code), n)| format!("{n} × {route} → {s} {code}"))
            .collect()
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for ((route, status, code), n) in &self.0 {
            writeln!(f, "  {n:>4} × {route} → {status} {code}")?;
        }
        Ok(())
    }
}

/// What the storage invariants found, for the caller's own assertions.
#[derive(Debug)]
pub struct Bound {
    /// Each bound WeChat identity and its user, as the event log says.
    pub by_identity: BTreeMap<(AppId, OpenId), UserId>,
}

/// Checks every invariant of the storage issue on the whole store:
///
/// * the event log binds each identity to at most one user at a time, and never binds
///   an identity that is bound already (one user per WeChat identity);
/// * no user holds two identities in one app (one identity per user per app);
/// * the read models (account by identity, a user's bindings) and the registry agree
///   with the log, both ways;
/// * every `expected` (identity, user) — answered 200 to a client — is bound so;
/// * the log's chain and state rows verify (no tampering, no torn write).
pub async fn check_invariants(store: &Store, expected: &[(AppId, OpenId, i64)]) -> Bound {
    store.catch_up().await.expect("catch the read models up");
    let events = store
        .events_after(0, u32::MAX)
        .await
        .expect("read the event log");
    let mut by_identity: BTreeMap<(AppId, OpenId), UserId> = BTreeMap::new();
    let mut accounts: BTreeSet<(AppId, OpenId)> = BTreeSet::new();
    for event in &events {
        let account = AccountId::parse(&event.aggregate_id).expect("a valid aggregate id");
        let key = (account.appid(), account.openid());
        accounts.insert(key.clone());
        match &event.event {
            SocialAccountEvent::UserBound(bound) => {
                if let Some(before) = by_identity.insert(key.clone(), bound.user_id) {
                    panic!(
                        "{} bound to user {} while bound to user {} (position {})",
                        event.aggregate_id,
                        bound.user_id.get(),
                        before.get(),
                        event.position
                    );
                }
            }
            SocialAccountEvent::Unbound(_) => {
                by_identity.remove(&key);
            }
            _ => {}
        }
    }

    let mut by_user: BTreeMap<UserId, Vec<(AppId, OpenId)>> = BTreeMap::new();
    for ((appid, openid), user) in &by_identity {
        by_user
            .entry(*user)
            .or_default()
            .push((appid.clone(), openid.clone()));
    }
    for (user, identities) in &by_user {
        let apps: BTreeSet<&AppId> = identities.iter().map(|(appid, _)| appid).collect();
        assert_eq!(
            apps.len(),
            identities.len(),
            "user {} holds two identities in one app: {identities:?}",
            user.get()
        );
    }

    for (appid, openid) in &accounts {
        let view = store
            .account(appid, openid)
            .await
            .expect("read the account view")
            .unwrap_or_else(|| panic!("{appid:?}/{openid:?} has events but no account view"));
        assert_eq!(
            view.bound_user,
            by_identity.get(&(appid.clone(), openid.clone())).copied(),
            "the account view of {appid:?}/{openid:?} disagrees with the log"
        );
    }
    let registry = store.registry();
    for (user, identities) in &by_user {
        let mut from_log: Vec<(String, String)> = identities
            .iter()
            .map(|(a, o)| (a.as_str().to_owned(), o.as_str().to_owned()))
            .collect();
        from_log.sort();
        let pairs = |bindings: Vec<miniauth_application::ports::Binding>| {
            let mut pairs: Vec<(String, String)> = bindings
                .into_iter()
                .inspect(|b| assert_eq!(b.user_id, *user, "a binding of another user"))
                .map(|b| (b.appid.as_str().to_owned(), b.openid.as_str().to_owned()))
                .collect();
            pairs.sort();
            pairs
        };
        let read_model = pairs(store.bindings_of(*user).await.expect("read model bindings"));
        assert_eq!(
            read_model,
            from_log,
            "read model bindings of user {}",
            user.get()
        );
        let claimed = pairs(
            registry
                .bindings_of(*user)
                .await
                .expect("registry bindings"),
        );
        assert_eq!(
            claimed,
            from_log,
            "registry bindings of user {}",
            user.get()
        );
    }

    for (appid, openid, user) in expected {
        assert_eq!(
            by_identity
                .get(&(appid.clone(), openid.clone()))
                .map(|u| u.get()),
            Some(*user),
            "a client was told {appid:?}/{openid:?} is bound to user {user}; the log disagrees"
        );
    }

    let report = store.verify().await.expect("verify the event log");
    assert!(
        report.is_clean(),
        "the event log does not verify: {:?}",
        report.findings
    );
    Bound { by_identity }
}
