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
    ImportSummary, Planned, SkipReason, Skipped, WechatSource,
};
use miniauth_application::ports::PortError;
use miniauth_e2e::gitegg_db::{importer, GiteggDb, LinkRow, MemorySource, SocialRow, UserRow};
use miniauth_e2e::{app, on_both_engines, spawn_app, Engine, TestApp, Tokens, APP, SECOND_APP};
use miniauth_gitegg::GiteggDatabase;
use miniauth_wechat::sim::{OAuthConsent, DEMO_OFFICIAL_ACCOUNT_APPID, DEMO_WEBSITE_APPID};
use serde_json::{json, Value};

on_both_engines!(
    an_import_carries_bindings_users_and_history_over_once,
    an_interrupted_import_is_completed_by_running_it_again,
    a_dry_run_reports_and_writes_nothing,
    a_gitegg_bind_key_buys_tokens_for_an_imported_account_during_the_transition,
    one_person_through_three_sources_becomes_one_user_bound_in_three_apps,
    sources_that_cannot_be_mapped_are_refused_before_anything_is_read_or_written,
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
    mapped(&[(WechatSource::MiniApp, APP)], dry_run, batch_size)
}

/// Options mapping these sources to these apps.
fn mapped(sources: &[(WechatSource, &str)], dry_run: bool, batch_size: u32) -> ImportOptions {
    ImportOptions {
        sources: sources.iter().map(|(s, appid)| (*s, app(appid))).collect(),
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
    history_in(app, APP, openid).await
}

async fn history_in(app: &TestApp, appid: &str, openid: &str) -> Value {
    app.get(
        &format!("/v1/admin/apps/{appid}/accounts/{openid}/history"),
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

/// The person's openid in an Official Account or website app of the simulator, and a
/// login code of theirs there (as GitEgg's JustAuth login learned the openid).
async fn oauth_identity(app: &TestApp, appid: &str, person: u64) -> (String, String) {
    let code = app
        .device
        .oauth_code(
            person,
            &OAuthConsent {
                appid: appid.to_owned(),
                scope: None,
                snapshot: false,
            },
        )
        .await
        .expect("an OAuth code from the simulator");
    let openid = app
        .simulator
        .as_ref()
        .expect("the simulator runs")
        .simulator()
        .openid(&miniauth_e2e::app(appid), person)
        .expect("an openid once the person consented")
        .to_string();
    (openid, code)
}

async fn one_person_through_three_sources_becomes_one_user_bound_in_three_apps(engine: Engine) {
    let app = miniauth_e2e::spawn_app_with(engine, |config| {
        config.compat.legacy_des_key = Some(miniauth::config::Secret::new(DES_KEY));
        config.compat.legacy_des_iv = Some(miniauth::config::Secret::new(DES_IV));
    })
    .await;
    let db = GiteggDb::create().await;
    // One person of the Open Platform account, as GitEgg met them in three apps.
    let person = app.wechat_user(None).await;
    let code = app.wx_login(APP, person).await;
    let mini = app.code_to_session_elsewhere(APP, &code).await;
    let mini_openid = mini["openid"].as_str().expect("openid").to_owned();
    let unionid = mini["unionid"].as_str().expect("unionid").to_owned();
    let (oa_openid, oa_code) = oauth_identity(&app, DEMO_OFFICIAL_ACCOUNT_APPID, person).await;
    let (web_openid, web_code) = oauth_identity(&app, DEMO_WEBSITE_APPID, person).await;

    let social = |id: i64, source: &str, openid: &str| SocialRow {
        id,
        tenant_id: 0,
        source: source.into(),
        openid: openid.into(),
        unionid: Some(unionid.clone()),
        nickname: "Wang".into(),
        avatar: "https://thirdwx.qlogo.cn/wang.png".into(),
        session_key: String::new(),
        created: gitegg_time(id),
        deleted: false,
    };
    let link = |id: i64, user_id: i64, social_id: i64| LinkRow {
        id,
        user_id,
        social_id,
        created: gitegg_time(social_id + 1),
        deleted: false,
    };
    let user = |id: i64| UserRow {
        id,
        tenant_id: 0,
        account: format!("gitegg{id}"),
        nickname: format!("User {id}"),
        mobile: Some(format!("138{id:08}")),
        password: None,
        status: 1,
        created: gitegg_time(-10),
        deleted: false,
    };
    db.socials(&[
        social(1, "WECHAT_MINI_APP", &mini_openid),
        social(2, "WECHAT_MP", &oa_openid),
        social(3, "WECHAT_OPEN", &web_openid),
        // Work WeChat's user id is no openid; a source of another platform.
        social(4, "WECHAT_ENTERPRISE", "wework-user-4"),
        social(5, "QQ", "oQQuser00000000000000000005"),
    ])
    .await;
    db.links(&[
        link(11, 501, 1),
        link(12, 501, 2),
        link(13, 501, 3),
        link(14, 502, 4),
        link(15, 502, 5),
    ])
    .await;
    db.users(&[user(501), user(502)]).await;
    let import = importer(&app, source(&db).await);
    let s = "t_just_auth_social";
    let all = [
        (WechatSource::MiniApp, APP),
        (WechatSource::OfficialAccount, DEMO_OFFICIAL_ACCOUNT_APPID),
        (WechatSource::OpenPlatform, DEMO_WEBSITE_APPID),
    ];

    // A dry run, two rows a batch: the user is planned once, bound in three apps
    // (rows 1 and 2 in one batch, row 3 in the next), and nothing is written.
    let before = app.snapshot().await;
    let dry = Recorder::default();
    let summary = import
        .run(&mapped(&all, true, 2), &dry)
        .await
        .expect("dry run");
    assert_eq!(app.snapshot().await, before, "a dry run writes nothing");
    assert_eq!(
        (summary.accounts, summary.bindings, summary.users),
        (3, 3, 1),
        "{summary:?}"
    );
    assert_eq!(
        dry.skips(),
        vec![(s, 4, "work_wechat"), (s, 5, "unknown_appid")]
    );
    let planned: Vec<(String, bool)> = dry
        .planned
        .lock()
        .unwrap()
        .iter()
        .map(|p| (p.account.to_string(), p.creates_user))
        .collect();
    assert_eq!(
        planned,
        vec![
            (format!("{APP}:{mini_openid}"), true),
            (format!("{DEMO_OFFICIAL_ACCOUNT_APPID}:{oa_openid}"), false),
            (format!("{DEMO_WEBSITE_APPID}:{web_openid}"), false),
        ]
    );

    // Only the Official Account mapped: the others are skipped, each saying which
    // option would map it.
    let first = Recorder::default();
    let summary = import
        .run(
            &mapped(
                &[(WechatSource::OfficialAccount, DEMO_OFFICIAL_ACCOUNT_APPID)],
                false,
                2,
            ),
            &first,
        )
        .await
        .expect("import the Official Account");
    assert_eq!(
        (summary.accounts, summary.bindings, summary.users),
        (1, 1, 1),
        "{summary:?}"
    );
    assert_eq!(
        first.skips(),
        vec![
            (s, 1, "unknown_appid"),
            (s, 3, "unknown_appid"),
            (s, 4, "work_wechat"),
            (s, 5, "unknown_appid"),
        ]
    );
    let reasons: BTreeMap<i64, String> = first
        .skipped
        .lock()
        .unwrap()
        .iter()
        .map(|s| (s.row_id, s.reason.to_string()))
        .collect();
    assert!(
        reasons[&1].contains("(--appid APPID maps it)"),
        "{reasons:?}"
    );
    assert!(
        reasons[&3].contains("(--source WECHAT_OPEN=APPID maps it)"),
        "{reasons:?}"
    );
    assert!(reasons[&4].contains("not WeChat openids"), "{reasons:?}");
    assert!(
        reasons[&5].contains("not a WeChat source miniauth imports"),
        "{reasons:?}"
    );
    // GitEgg's bind keys were minted by its mini program: an imported Official Account
    // identity with the same unionid is not what one names.
    let key = legacy_codec().encode(&unionid);
    let answer = app
        .oauth_token(&[("grant_type", "social"), ("social_key", &key)])
        .await;
    answer.envelope_err(401);
    assert_eq!(
        answer.body["msg"],
        json!(miniauth_application::LegacyKeyRefusal::NotImported.to_string())
    );

    // All three: the user the earlier run created is bound in the other apps, not
    // created again and no clash with itself.
    let summary = import
        .run(&mapped(&all, false, 2), &Recorder::default())
        .await
        .expect("import all three");
    assert_eq!(
        (
            summary.accounts,
            summary.bindings,
            summary.users,
            summary.already_imported
        ),
        (2, 2, 0, 1),
        "{summary:?}"
    );
    // Again: nothing twice.
    let again = import
        .run(&mapped(&all, false, 2), &Recorder::default())
        .await
        .expect("again");
    assert_eq!(
        (again.accounts, again.already_imported),
        (0, 3),
        "{again:?}"
    );
    app.store.catch_up().await.expect("catch up");
    let mut bindings = app.bindings_of(501).await;
    bindings.sort();
    assert_eq!(
        bindings,
        vec![
            (APP.to_owned(), mini_openid.clone()),
            (DEMO_OFFICIAL_ACCOUNT_APPID.to_owned(), oa_openid.clone()),
            (DEMO_WEBSITE_APPID.to_owned(), web_openid.clone()),
        ]
    );
    assert!(app.bindings_of(502).await.is_empty());
    let users = app
        .query_texts("SELECT CAST(COUNT(*) AS TEXT) FROM users WHERE origin = 'gitegg_import'")
        .await;
    assert_eq!(users[0].as_deref(), Some("1"));

    // The person's logins through the Official Account and the website find the
    // imported bindings: tokens for user 501, no new binding (not even by unionid).
    for (appid, openid, code, channel) in [
        (
            DEMO_OFFICIAL_ACCOUNT_APPID,
            &oa_openid,
            &oa_code,
            "official_account",
        ),
        (DEMO_WEBSITE_APPID, &web_openid, &web_code, "website"),
    ] {
        let body = app.login(appid, code).await.ok(200).clone();
        assert_eq!(body["bound"], json!(true), "{appid}: {body}");
        let tokens = Tokens::from_v1(&body["tokens"]);
        assert_eq!(app.me(&tokens.access).await.ok(200)["user_id"], json!(501));
        let history = history_in(&app, appid, openid).await;
        let events: Vec<(&str, &str)> = history["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| {
                (
                    e["event_type"].as_str().unwrap(),
                    e["via"].as_str().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            events[..3],
            [
                ("AccountImported", "gitegg"),
                ("UserBound", "imported"),
                ("SessionObtained", channel),
            ],
            "{appid}: {history}"
        );
        assert_eq!(
            events.iter().filter(|(t, _)| *t == "UserBound").count(),
            1,
            "{appid}: {history}"
        );
    }
    // The bind key names the mini program's imported account now.
    let answer = app
        .oauth_token(&[("grant_type", "social"), ("social_key", &key)])
        .await;
    let tokens = Tokens::from_gitegg(answer.envelope_ok());
    assert_eq!(app.me(&tokens.access).await.ok(200)["user_id"], json!(501));
    let report = app.store.verify().await.expect("verify");
    assert!(report.is_clean(), "{:?}", report.findings);
    db.drop_database().await;
}

async fn sources_that_cannot_be_mapped_are_refused_before_anything_is_read_or_written(
    engine: Engine,
) {
    let app = spawn_app(engine).await;
    // A source that fails at its first read: a refusal must come before it.
    let unread = Interrupted {
        inner: Arc::new(MemorySource::default()),
        pages: Mutex::new(0),
        fail_at: 1,
    };
    let import = importer(&app, Arc::new(unread));
    let before = app.snapshot().await;
    use WechatSource::{MiniApp, OfficialAccount, OpenPlatform};
    for (sources, refusal) in [
        (
            vec![(MiniApp, APP), (OfficialAccount, DEMO_WEBSITE_APPID)],
            format!(
                "{DEMO_WEBSITE_APPID} is a website app: WECHAT_MP rows belong to an app of kind official_account"
            ),
        ),
        (
            vec![(OpenPlatform, APP)],
            format!(
                "{APP} is a mini_program app: WECHAT_OPEN rows belong to an app of kind website or mobile_app"
            ),
        ),
        (
            vec![(MiniApp, DEMO_OFFICIAL_ACCOUNT_APPID)],
            format!("{DEMO_OFFICIAL_ACCOUNT_APPID} is a official_account app"),
        ),
        (
            vec![(OfficialAccount, "wxnotconfigured001")],
            "unknown appid wxnotconfigured001 for WECHAT_MP: it is not a configured app".to_owned(),
        ),
        (
            vec![(MiniApp, APP), (MiniApp, SECOND_APP)],
            "source WECHAT_MINI_APP is given twice".to_owned(),
        ),
        (vec![], "no source to import".to_owned()),
    ] {
        let options = mapped(&sources, false, 10);
        let refused = import
            .run(&options, &Recorder::default())
            .await
            .expect_err("refused");
        assert!(refused.to_string().contains(&refusal), "{refused}");
        let checked = options
            .check(&miniauth_application::AppCatalog::new([]))
            .expect_err("no app is configured there");
        assert!(!checked.to_string().is_empty());
    }
    // Names the option parser refuses: Work WeChat's (saying why) and unknown ones.
    for work in ["WECHAT_ENTERPRISE", "WECHAT_ENTERPRISE_WEB"] {
        let refused = WechatSource::parse(work).expect_err("Work WeChat");
        assert!(
            refused.to_string().contains("not WeChat openids"),
            "{refused}"
        );
    }
    let refused = WechatSource::parse("WECHAT_APP").expect_err("unknown");
    assert!(
        refused.to_string().contains("unknown source WECHAT_APP"),
        "{refused}"
    );
    assert_eq!(
        WechatSource::parse(" WECHAT_MP ").ok(),
        Some(OfficialAccount)
    );
    assert_eq!(app.snapshot().await, before, "a refusal writes nothing");
}

/// The measurement of docs/benchmarks.md: 100,000 bound social rows imported on each
/// engine, with the time it took. Not part of the suite (it takes a while to generate);
/// run it with `cargo test --release -p miniauth-e2e --test gitegg_import -- --ignored
/// --nocapture`.
mod measurement {
    use super::*;

    const ROWS: i64 = 100_000;

    async fn import_100k(engine: Engine) {
        let app = spawn_app(engine).await;
        let db = GiteggDb::create().await;
        let hash = bcrypt::hash(PASSWORD, 4).expect("bcrypt");
        let (mut socials, mut links, mut users) = (Vec::new(), Vec::new(), Vec::new());
        for id in 1..=ROWS {
            socials.push(SocialRow {
                id,
                tenant_id: 0,
                source: "WECHAT_MINI_APP".into(),
                openid: format!("oBench{id:022}"),
                unionid: (id % 2 == 0).then(|| format!("uBench{id:022}")),
                nickname: format!("Nick{id}"),
                avatar: format!("https://thirdwx.qlogo.cn/{id}.png"),
                session_key: String::new(),
                created: gitegg_time(id),
                deleted: false,
            });
            links.push(LinkRow {
                id,
                user_id: 1_000_000 + id,
                social_id: id,
                created: gitegg_time(id + 1),
                deleted: false,
            });
            users.push(UserRow {
                id: 1_000_000 + id,
                tenant_id: 0,
                account: format!("bench{id}"),
                nickname: format!("User {id}"),
                mobile: Some(format!("13{id:09}")),
                password: Some(hash.clone()),
                status: 1,
                created: gitegg_time(id),
                deleted: false,
            });
        }
        db.socials(&socials).await;
        db.links(&links).await;
        db.users(&users).await;
        let started = std::time::Instant::now();
        let summary = importer(&app, source(&db).await)
            .run(&options(false, 2000), &Recorder::default())
            .await
            .expect("import");
        let took = started.elapsed();
        app.store.catch_up().await.expect("catch up");
        let caught_up = started.elapsed();
        println!(
            "{engine}: {} bindings imported in {:.1} s ({:.1} s with the read models caught up)",
            summary.bindings,
            took.as_secs_f64(),
            caught_up.as_secs_f64()
        );
        assert_eq!(summary.bindings, ROWS as u64);
        assert!(took < std::time::Duration::from_secs(60), "{took:?}");
        db.drop_database().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement: run by hand for docs/benchmarks.md"]
    async fn a_hundred_thousand_bindings_sqlite() {
        import_100k(Engine::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement: run by hand for docs/benchmarks.md"]
    async fn a_hundred_thousand_bindings_postgres() {
        import_100k(Engine::Postgres).await;
    }
}
