//! `miniauth import gitegg` against a real MariaDB (issue 16): a GitEgg-shaped database
//! with a few hundred generated rows, every skip case among them, imported twice and
//! once interrupted; then the bindings, users and history, a password login of an
//! imported BCrypt user, an imported user's returning WeChat login, and the audit.
//! On both engines; the GitEgg server is `MINIAUTH_TEST_MYSQL_URL`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{NaiveDate, NaiveDateTime, TimeZone, Utc};
use miniauth_application::import::{
    GiteggLink, GiteggSocial, GiteggSource, GiteggUser, ImportObserver, ImportOptions,
    ImportSummary, Planned, SkipReason, Skipped,
};
use miniauth_application::ports::PortError;
use miniauth_e2e::gitegg_db::{importer, GiteggDb, LinkRow, SocialRow, UserRow};
use miniauth_e2e::{app, on_both_engines, spawn_app, Engine, TestApp, Tokens, APP};
use miniauth_gitegg::GiteggDatabase;
use serde_json::{json, Value};

on_both_engines!(
    an_import_carries_bindings_users_and_history_over_once,
    an_interrupted_import_is_completed_by_running_it_again,
    a_dry_run_reports_and_writes_nothing,
    a_gitegg_bind_key_buys_tokens_for_an_imported_account_during_the_transition,
);

/// Ordinary bound rows of the generated database.
const BOUND: i64 = 240;
/// The password of every generated user.
const PASSWORD: &str = "gitegg-pw-1";

/// GitEgg's local time (China Standard Time): 2021-03-01 08:00 plus `minutes`.
fn gitegg_time(minutes: i64) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2021, 3, 1)
        .and_then(|d| d.and_hms_opt(8, 0, 0))
        .expect("a date")
        + chrono::Duration::minutes(minutes)
}

/// What the generated database holds, and what the import must make of it.
struct Generated {
    /// (social id, openid, user id) of the rows that import with a binding.
    bound: Vec<(i64, String, i64)>,
    /// Social ids that import without a binding.
    unbound: Vec<i64>,
    /// The skips expected: (table, row id, reason kind).
    skips: Vec<(&'static str, i64, &'static str)>,
}

/// A few hundred rows: ordinary bindings (the first `with_sim` for simulator users, so
/// that they can log in), unbound socials, and each skip case.
async fn generate(db: &GiteggDb, sim_openids: &[(String, Option<String>)]) -> Generated {
    // One BCrypt hash for all (cost 4: the import keeps it as it is whatever the cost).
    let hash = bcrypt::hash(PASSWORD, 4).expect("bcrypt");
    let (mut socials, mut links, mut users) = (Vec::new(), Vec::new(), Vec::new());
    let mut generated = Generated {
        bound: Vec::new(),
        unbound: Vec::new(),
        skips: Vec::new(),
    };
    let social = |id: i64, openid: String, unionid: Option<String>| SocialRow {
        id,
        tenant_id: 0,
        source: "WECHAT_MINI_APP".into(),
        openid,
        unionid,
        nickname: format!("Nick{id}"),
        avatar: format!("https://thirdwx.qlogo.cn/{id}.png"),
        session_key: "c2Vzc2lvbmtleXNlc3Npb24=".into(),
        created: gitegg_time(id),
        deleted: false,
    };
    let user = |id: i64| UserRow {
        id,
        tenant_id: 0,
        account: format!("gitegg{id}"),
        nickname: format!("User {id}"),
        mobile: Some(format!("138{id:08}")),
        password: Some(format!("{{bcrypt}}{hash}")),
        status: 1,
        created: gitegg_time(id - 5000),
        deleted: false,
    };
    let link = |id: i64, user_id: i64, social_id: i64| LinkRow {
        id,
        user_id,
        social_id,
        created: gitegg_time(social_id + 1),
        deleted: false,
    };
    for i in 0..BOUND {
        let id = 1 + i;
        let (openid, unionid) = match sim_openids.get(i as usize) {
            Some((openid, unionid)) => (openid.clone(), unionid.clone()),
            None => (
                format!("oGitEgg{id:021}"),
                (i % 2 == 0).then(|| format!("uGitEgg{id:021}")),
            ),
        };
        socials.push(social(id, openid.clone(), unionid));
        users.push(user(5000 + id));
        links.push(link(9000 + id, 5000 + id, id));
        generated.bound.push((id, openid, 5000 + id));
    }
    // Unbound identities: imported without a binding.
    for id in 300..320 {
        socials.push(social(id, format!("oGitEggFree{id:017}"), None));
        generated.unbound.push(id);
    }
    let s = "t_just_auth_social";
    let l = "t_just_auth_social_user";
    // A deleted social row.
    socials.push(SocialRow {
        deleted: true,
        ..social(400, "oGitEggDeleted0000000000400".into(), None)
    });
    generated.skips.push((s, 400, "deleted"));
    // Another source: no configured app takes it.
    socials.push(SocialRow {
        source: "WECHAT_MP".into(),
        ..social(401, "oGitEggOfficialAccount00401".into(), None)
    });
    generated.skips.push((s, 401, "unknown_appid"));
    // A malformed openid.
    socials.push(social(402, "not an openid!".into(), None));
    generated.skips.push((s, 402, "malformed_openid"));
    // Bound to two users.
    socials.push(social(403, "oGitEggTwoUsers000000000403".into(), None));
    users.extend([user(6403), user(6404)]);
    links.extend([link(9403, 6403, 403), link(9404, 6404, 403)]);
    generated.skips.push((s, 403, "several_users"));
    // Bound to a user that does not exist.
    socials.push(social(405, "oGitEggNoSuchUser0000000405".into(), None));
    links.push(link(9405, 7777, 405));
    generated.skips.push((l, 9405, "user_missing"));
    // Bound to a deleted user.
    socials.push(social(406, "oGitEggDeletedUser000000406".into(), None));
    users.push(UserRow {
        deleted: true,
        ..user(6406)
    });
    links.push(link(9406, 6406, 406));
    generated.skips.push((l, 9406, "user_missing"));
    // A deleted binding: the identity imports, unbound.
    socials.push(social(407, "oGitEggDeletedLink000000407".into(), None));
    users.push(user(6407));
    links.push(LinkRow {
        deleted: true,
        ..link(9407, 6407, 407)
    });
    generated.skips.push((l, 9407, "deleted"));
    generated.unbound.push(407);
    // A tenant nobody mapped.
    socials.push(SocialRow {
        tenant_id: 42,
        ..social(408, "oGitEggOtherTenant000000408".into(), None)
    });
    generated.skips.push((s, 408, "tenant_unmapped"));
    // A second identity of one user in the same app (one per user per app).
    socials.push(social(409, "oGitEggSecondOfUser00000409".into(), None));
    links.push(link(9409, 5001, 409));
    generated.skips.push((l, 9409, "user_has_identity"));
    db.socials(&socials).await;
    db.links(&links).await;
    db.users(&users).await;
    generated
}

/// Records what the import reports.
#[derive(Default)]
struct Recorder {
    skipped: Mutex<Vec<Skipped>>,
    planned: Mutex<Vec<Planned>>,
    rows: Mutex<u64>,
}

impl ImportObserver for Recorder {
    fn advanced(&self, rows: u64) {
        *self.rows.lock().unwrap() += rows;
    }
    fn skipped(&self, skipped: &Skipped) {
        self.skipped.lock().unwrap().push(skipped.clone());
    }
    fn planned(&self, planned: &Planned) {
        self.planned.lock().unwrap().push(planned.clone());
    }
}

impl Recorder {
    fn skips(&self) -> Vec<(&'static str, i64, &'static str)> {
        let mut skips: Vec<_> = self
            .skipped
            .lock()
            .unwrap()
            .iter()
            .map(|s| (s.table, s.row_id, s.reason.kind()))
            .collect();
        skips.sort();
        skips
    }
}

fn options(dry_run: bool, batch_size: u32) -> ImportOptions {
    ImportOptions {
        appid: app(APP),
        tenant_map: BTreeMap::new(),
        dry_run,
        batch_size,
    }
}

async fn source(db: &GiteggDb) -> Arc<dyn GiteggSource> {
    Arc::new(
        GiteggDatabase::connect(&db.url, "+08:00".parse().expect("offset"))
            .await
            .expect("the GitEgg database"),
    )
}

/// Simulator users, and their openid/unionid in the demo app as GitEgg learned them
/// (GitEgg's own code2session, not miniauth's).
async fn wechat_users(app: &TestApp, n: usize) -> (Vec<u64>, Vec<(String, Option<String>)>) {
    let mut ids = Vec::new();
    let mut identities = Vec::new();
    for _ in 0..n {
        let user = app.wechat_user(None).await;
        let code = app.wx_login(APP, user).await;
        let answer = app.code_to_session_elsewhere(APP, &code).await;
        ids.push(user);
        identities.push((
            answer["openid"].as_str().expect("openid").to_owned(),
            answer["unionid"].as_str().map(str::to_owned),
        ));
    }
    (ids, identities)
}

async fn history(app: &TestApp, openid: &str) -> Value {
    app.get(
        &format!("/v1/admin/apps/{APP}/accounts/{openid}/history"),
        Some(&app.admin_token),
    )
    .await
    .ok(200)
    .clone()
}

fn expected_skips(generated: &Generated) -> Vec<(&'static str, i64, &'static str)> {
    let mut skips = generated.skips.clone();
    skips.sort();
    skips
}

async fn an_import_carries_bindings_users_and_history_over_once(engine: Engine) {
    let app = spawn_app(engine).await;
    let db = GiteggDb::create().await;
    let (sim_users, identities) = wechat_users(&app, 3).await;
    let generated = generate(&db, &identities).await;
    let import = importer(&app, source(&db).await);

    let first = Recorder::default();
    let summary = import
        .run(&options(false, 64), &first)
        .await
        .expect("import");
    assert_eq!(first.skips(), expected_skips(&generated));
    let accounts = generated.bound.len() + generated.unbound.len();
    assert_eq!(summary.accounts, accounts as u64, "{summary:?}");
    assert_eq!(summary.bindings, generated.bound.len() as u64);
    assert_eq!(summary.users, generated.bound.len() as u64);
    assert_eq!(summary.already_imported, 0);
    assert_eq!(*first.rows.lock().unwrap(), summary.rows_read);

    // Again: nothing twice.
    let second = Recorder::default();
    let again = import
        .run(&options(false, 100), &second)
        .await
        .expect("again");
    assert_eq!(
        (
            again.accounts,
            again.bindings,
            again.users,
            again.already_imported
        ),
        (0, 0, 0, accounts as u64),
        "{again:?}"
    );
    let events = app
        .query_texts("SELECT CAST(COUNT(*) AS TEXT) FROM events")
        .await;
    assert_eq!(
        events[0].as_deref(),
        Some((accounts + generated.bound.len()).to_string().as_str())
    );

    // The bindings, as the registry and the log have them.
    app.store.catch_up().await.expect("catch up");
    for (_, openid, user) in generated.bound.iter().step_by(37) {
        assert_eq!(
            app.bindings_of(*user).await,
            vec![(APP.to_owned(), openid.clone())]
        );
    }
    let claims = app
        .query_texts("SELECT CAST(COUNT(*) AS TEXT) FROM bindings")
        .await;
    assert_eq!(
        claims[0].as_deref(),
        Some(generated.bound.len().to_string().as_str())
    );
    // Skipped rows left nothing behind: no user of a skipped binding, no account of a
    // skipped social row.
    for user in [6403, 6404, 6406, 6407, 7777] {
        assert!(app.bindings_of(user).await.is_empty());
    }
    let users = app
        .query_texts("SELECT CAST(COUNT(*) AS TEXT) FROM users WHERE origin = 'gitegg_import'")
        .await;
    assert_eq!(
        users[0].as_deref(),
        Some(generated.bound.len().to_string().as_str())
    );

    // The history: dated by GitEgg's rows, marked imported, naming the rows.
    let (social_id, openid, user) = generated.bound[10].clone();
    let history = history(&app, &openid).await;
    let entries = history["events"].as_array().expect("events");
    assert_eq!(entries.len(), 2, "{history}");
    assert_eq!(entries[0]["event_type"], "AccountImported");
    assert_eq!(
        entries[0]["imported_from"],
        json!(format!("gitegg:t_just_auth_social#{social_id}"))
    );
    assert_eq!(entries[0]["actor"], "import");
    let created = chrono::FixedOffset::east_opt(8 * 3600)
        .unwrap()
        .from_local_datetime(&gitegg_time(social_id))
        .unwrap()
        .with_timezone(&Utc);
    assert_eq!(entries[0]["occurred_at"], json!(created), "{history}");
    assert_eq!(entries[1]["event_type"], "UserBound");
    assert_eq!(entries[1]["via"], "imported");
    assert_eq!(entries[1]["user_id"], json!(user));
    assert_eq!(
        entries[1]["imported_from"],
        json!(format!(
            "gitegg:t_just_auth_social_user#{}",
            9000 + social_id
        ))
    );
    // Point in time: before GitEgg bound it, unbound; after, bound.
    let bindings_at = |at: chrono::DateTime<Utc>| {
        let app = &app;
        async move {
            app.get(
                &format!(
                    "/v1/admin/users/{user}/bindings?as_of={}",
                    miniauth_e2e::enc(&at.to_rfc3339())
                ),
                Some(&app.admin_token),
            )
            .await
            .ok(200)["bindings"]
                .as_array()
                .map(Vec::len)
        }
    };
    assert_eq!(
        bindings_at(created - chrono::Duration::minutes(1)).await,
        Some(0)
    );
    assert_eq!(
        bindings_at(created + chrono::Duration::minutes(2)).await,
        Some(1)
    );

    // The log verifies, chains included.
    let report = app.store.verify().await.expect("verify");
    assert!(report.is_clean(), "{:?}", report.findings);
    assert_eq!(report.events, (accounts + generated.bound.len()) as u64);

    // A password login of an imported user verifies GitEgg's BCrypt hash once, then
    // the hash is argon2id.
    let (_, _, user) = generated.bound[20];
    let account = format!("gitegg{user}");
    assert_eq!(
        app.password_grant(&account, "wrong password").await.status,
        401
    );
    let tokens = app.password_tokens(&account, PASSWORD).await;
    assert_eq!(app.me(&tokens.access).await.ok(200)["user_id"], json!(user));
    let hash = app
        .query_texts(&format!(
            "SELECT password_hash FROM users WHERE id = {user}"
        ))
        .await;
    let hash = hash[0].clone().expect("a hash");
    assert!(hash.starts_with("$argon2id$"), "rehashed: {}", &hash[..8]);
    app.password_tokens(&account, PASSWORD).await;

    // A returning WeChat user of GitEgg: one round trip, tokens for their user.
    for (i, wechat) in sim_users.iter().enumerate() {
        let body = app.session(APP, *wechat).await;
        assert_eq!(body["bound"], json!(true), "{body}");
        let tokens = Tokens::from_v1(&body["tokens"]);
        assert_eq!(
            app.me(&tokens.access).await.ok(200)["user_id"],
            json!(generated.bound[i].2)
        );
    }
    let report = app.store.verify().await.expect("verify");
    assert!(report.is_clean(), "{:?}", report.findings);
    db.drop_database().await;
}

/// A source that fails on its `fail_at`-th page, as a connection lost mid-run.
struct Interrupted {
    inner: Arc<dyn GiteggSource>,
    pages: Mutex<u32>,
    fail_at: u32,
}

#[async_trait]
impl GiteggSource for Interrupted {
    async fn count_socials(&self) -> Result<u64, PortError> {
        self.inner.count_socials().await
    }
    async fn socials_after(&self, after: i64, limit: u32) -> Result<Vec<GiteggSocial>, PortError> {
        let page = {
            let mut pages = self.pages.lock().unwrap();
            *pages += 1;
            *pages
        };
        if page == self.fail_at {
            return Err(PortError::Unavailable("the GitEgg database".into()));
        }
        self.inner.socials_after(after, limit).await
    }
    async fn links_of(&self, social_ids: &[i64]) -> Result<Vec<GiteggLink>, PortError> {
        self.inner.links_of(social_ids).await
    }
    async fn users(&self, ids: &[i64]) -> Result<Vec<GiteggUser>, PortError> {
        self.inner.users(ids).await
    }
}

async fn an_interrupted_import_is_completed_by_running_it_again(engine: Engine) {
    let app = spawn_app(engine).await;
    let db = GiteggDb::create().await;
    let generated = generate(&db, &[]).await;
    let interrupted = Interrupted {
        inner: source(&db).await,
        pages: Mutex::new(0),
        fail_at: 3,
    };
    let import = importer(&app, Arc::new(interrupted));
    let stopped = import.run(&options(false, 50), &Recorder::default()).await;
    assert!(stopped.is_err(), "the third page fails");
    let written = app
        .query_texts("SELECT CAST(COUNT(*) AS TEXT) FROM snapshots")
        .await;
    assert_eq!(
        written[0].as_deref(),
        Some("100"),
        "two batches of 50 were written"
    );

    let rerun = importer(&app, source(&db).await);
    let summary: ImportSummary = rerun
        .run(&options(false, 50), &Recorder::default())
        .await
        .expect("the re-run");
    let accounts = (generated.bound.len() + generated.unbound.len()) as u64;
    assert_eq!(summary.already_imported, 100);
    assert_eq!(summary.accounts + summary.already_imported, accounts);
    let streams = app
        .query_texts("SELECT CAST(COUNT(*) AS TEXT) FROM snapshots")
        .await;
    assert_eq!(streams[0].as_deref(), Some(accounts.to_string().as_str()));
    let users = app
        .query_texts(
            "SELECT CAST(COUNT(DISTINCT id) AS TEXT) FROM users WHERE origin = 'gitegg_import'",
        )
        .await;
    assert_eq!(
        users[0].as_deref(),
        Some(generated.bound.len().to_string().as_str())
    );
    let report = app.store.verify().await.expect("verify");
    assert!(report.is_clean(), "{:?}", report.findings);
    db.drop_database().await;
}

async fn a_dry_run_reports_and_writes_nothing(engine: Engine) {
    let app = spawn_app(engine).await;
    let db = GiteggDb::create().await;
    let generated = generate(&db, &[]).await;
    let before = app.snapshot().await;
    let recorder = Recorder::default();
    let summary = importer(&app, source(&db).await)
        .run(&options(true, 77), &recorder)
        .await
        .expect("dry run");
    assert_eq!(app.snapshot().await, before, "a dry run writes nothing");
    assert_eq!(recorder.skips(), expected_skips(&generated));
    let planned = recorder.planned.lock().unwrap().clone();
    assert_eq!(
        planned.len(),
        generated.bound.len() + generated.unbound.len()
    );
    assert_eq!(summary.bindings, generated.bound.len() as u64);
    let first = planned.iter().find(|p| p.social_id == 1).expect("row 1");
    assert_eq!(
        first.binding.map(|(row, user)| (row, user.get())),
        Some((9001, 5001))
    );
    assert!(first.creates_user);
    // A reason says what is wrong in words.
    let reason = SkipReason::SeveralUsers {
        users: vec![6403, 6404],
    };
    assert_eq!(
        reason.to_string(),
        "social row bound to several users [6403, 6404]"
    );
    db.drop_database().await;
}

/// GitEgg's DES key and IV in the tests (as `[compat]` configures them).
const DES_KEY: &str = "GitEgg!!";
const DES_IV: &str = "12345678";

fn legacy_codec() -> miniauth_security::LegacyBindKeyCodec {
    let eight = |s: &str| -> [u8; 8] { s.as_bytes().try_into().expect("8 bytes") };
    miniauth_security::LegacyBindKeyCodec::new(eight(DES_KEY), eight(DES_IV))
}

async fn a_gitegg_bind_key_buys_tokens_for_an_imported_account_during_the_transition(
    engine: Engine,
) {
    let app = miniauth_e2e::spawn_app_with(engine, |config| {
        config.compat.legacy_des_key = Some(miniauth::config::Secret::new(DES_KEY));
        config.compat.legacy_des_iv = Some(miniauth::config::Secret::new(DES_IV));
        config.compat.legacy_bind_key_days = Some(10);
    })
    .await;
    let db = GiteggDb::create().await;
    let generated = generate(&db, &[]).await;
    importer(&app, source(&db).await)
        .run(&options(false, 500), &Recorder::default())
        .await
        .expect("import");
    let codec = legacy_codec();

    // GitEgg's key holds the unionid when its app had one (even rows), else the openid.
    let (_, openid, user) = generated.bound[1].clone();
    let by_openid = codec.encode(&openid);
    let answer = app
        .oauth_token(&[("grant_type", "social"), ("social_key", &by_openid)])
        .await;
    let tokens = Tokens::from_gitegg(answer.envelope_ok());
    assert_eq!(app.me(&tokens.access).await.ok(200)["user_id"], json!(user));
    let (id, _, user) = generated.bound[0].clone();
    let by_unionid = codec.encode(&format!("uGitEgg{id:021}"));
    let answer = app
        .oauth_token(&[("grant_type", "social"), ("social_key", &by_unionid)])
        .await;
    let tokens = Tokens::from_gitegg(answer.envelope_ok());
    assert_eq!(app.me(&tokens.access).await.ok(200)["user_id"], json!(user));

    // A key of the old deployment for someone never imported, and one that does not
    // decode: refused, each with its reason.
    let stranger = codec.encode("oNeverImported000000000000000");
    let answer = app
        .oauth_token(&[("grant_type", "social"), ("social_key", &stranger)])
        .await;
    answer.envelope_err(401);
    assert_eq!(
        answer.body["msg"],
        json!(miniauth_application::LegacyKeyRefusal::NotImported.to_string())
    );
    let garbage = "00112233445566778899aabbccddeeff";
    let answer = app
        .oauth_token(&[("grant_type", "social"), ("social_key", garbage)])
        .await;
    answer.envelope_err(401);
    assert_eq!(
        answer.body["msg"],
        json!(miniauth_application::LegacyKeyRefusal::Invalid.to_string())
    );
    // An imported identity never bound: no tokens.
    let unbound = generated.unbound[0];
    let key = codec.encode(&format!("oGitEggFree{unbound:017}"));
    app.oauth_token(&[("grant_type", "social"), ("social_key", &key)])
        .await
        .envelope_err(601);

    // After the transition period: refused, with the reason.
    app.clock.advance(chrono::Duration::days(10));
    let answer = app
        .oauth_token(&[("grant_type", "social"), ("social_key", &by_openid)])
        .await;
    answer.envelope_err(401);
    assert_eq!(
        answer.body["msg"],
        json!(miniauth_application::LegacyKeyRefusal::Expired.to_string())
    );
    db.drop_database().await;
}
