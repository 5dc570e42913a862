//! Attacks: erasure (see attacks.rs).
//!
//! The attacker here reads — or writes — the database directly, and may even hold the
//! server key (a stolen backup with its key file, an operator): what miniauth keeps
//! after an erasure, and what a sealed value does when it is moved to another row.

use std::net::{IpAddr, Ipv4Addr};

use miniauth_application::ports::{PersonalDataVault, UserDirectory};
use miniauth_domain::{AccountId, OpenId, PersonalField, SealedDatum, SealedSecret, UserId};
use miniauth_e2e::{on_both_engines, random_phone, spawn_app, Engine, TestApp, APP, SECOND_APP};
use serde_json::{json, Value};

on_both_engines!(
    erased_persons_phone_unionid_nickname_and_ip_readable_with_server_key,
    sealed_phone_moved_to_another_user_opens,
    sealed_session_key_moved_to_another_account_opens,
);

/// The person this module erases: everything they gave, each value unique to them.
struct Person {
    openid: String,
    phone: String,
    unionid: String,
    nickname: String,
    avatar: String,
    ip: String,
    user: i64,
}

/// A client whose requests come from `ip` (any 127.0.0.0/8 address is the loopback).
fn client_from(ip: Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(ip))
        .build()
        .expect("a client bound to a loopback address")
}

/// Registers a person in APP through the real flow (login, profile, phone), from an
/// address of their own.
async fn register(app: &mut TestApp) -> Person {
    let ip = Ipv4Addr::new(127, rand::random::<u8>() | 1, rand::random(), 7);
    app.client = client_from(ip);
    let phone = random_phone();
    let wechat = app.wechat_user(Some(&phone)).await;
    let nickname = format!("Nick{}", rand::random::<u32>());
    let avatar = format!("https://example.com/{}.png", rand::random::<u64>());
    let session = app.session(APP, wechat).await;
    let ticket = session["ticket"].as_str().expect("ticket").to_owned();
    app.profile(
        APP,
        &json!({ "ticket": ticket, "nickname": nickname, "avatar_url": avatar }),
    )
    .await
    .ok(200);
    let code = app.phone_code(APP, wechat).await;
    let body = app
        .phone(APP, &json!({ "ticket": ticket, "code": code }))
        .await
        .ok(200)
        .clone();
    assert_eq!(body["registered"], json!(true), "{body}");
    let openid = app
        .simulator
        .as_ref()
        .expect("the simulator runs")
        .simulator()
        .openid(&app.appid, wechat)
        .expect("logged in")
        .to_string();
    Person {
        openid,
        unionid: unionid_of(app, wechat).await,
        phone,
        nickname,
        avatar,
        ip: ip.to_string(),
        user: body["user_id"].as_i64().expect("user_id"),
    }
}

/// The person's unionid, as WeChat tells it to another app of the Open Platform
/// account (a code exchanged at the simulator, not through miniauth).
async fn unionid_of(app: &TestApp, wechat: u64) -> String {
    let code = app.wx_login(SECOND_APP, wechat).await;
    let sim = app
        .simulator
        .as_ref()
        .expect("the simulator runs")
        .base_url();
    let answer: Value = reqwest::Client::new()
        .get(format!("{sim}/sns/jscode2session"))
        .query(&[
            ("appid", SECOND_APP),
            ("secret", &format!("secret-of-{SECOND_APP}")),
            ("js_code", &code),
            ("grant_type", "authorization_code"),
        ])
        .send()
        .await
        .expect("jscode2session")
        .json()
        .await
        .expect("a JSON answer");
    answer["unionid"]
        .as_str()
        .unwrap_or_else(|| panic!("a unionid-bound app answers a unionid: {answer}"))
        .to_owned()
}

/// Every token of the database's text that looks like sealed text (`v1.…`, `v2.…`).
fn sealed_tokens(lines: &[String]) -> Vec<String> {
    let mut tokens: Vec<String> = lines
        .iter()
        .flat_map(|line| {
            line.split(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)))
                .filter(|t| (t.starts_with("v1.") || t.starts_with("v2.")) && t.len() > 20)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    tokens.sort();
    tokens.dedup();
    tokens
}

async fn erased_persons_phone_unionid_nickname_and_ip_readable_with_server_key(engine: Engine) {
    let mut app = spawn_app(engine).await;
    let person = register(&mut app).await;
    let account = AccountId::new(&app.appid, &OpenId::parse(&person.openid).unwrap());
    let sealed_data_key = app
        .query_texts(&format!(
            "SELECT sealed_key FROM data_keys WHERE account_id = '{account}'"
        ))
        .await;
    assert_eq!(sealed_data_key.len(), 1, "the account has a data key");

    // The administrator erases the person (from the person's own address, even).
    let erase = format!("/v1/admin/apps/{APP}/accounts/{}/erase", person.openid);
    let answer = app
        .post_json(&erase, &json!({}), Some(&app.admin_token.clone()))
        .await;
    assert!(
        answer.status.is_success(),
        "erase answered {}",
        answer.status
    );
    app.store.catch_up().await.expect("catch up");

    // 1. Nothing of the person in clear, in any table.
    let rows = app.every_row_text().await;
    for (what, datum) in [
        ("phone", person.phone.as_str()),
        ("unionid", person.unionid.as_str()),
        ("nickname", person.nickname.as_str()),
        ("avatar", person.avatar.as_str()),
        ("client IP", person.ip.as_str()),
    ] {
        let found: Vec<&String> = rows.iter().filter(|r| r.contains(datum)).collect();
        assert!(
            found.is_empty(),
            "the erased person's {what} is readable in the database: {found:#?}"
        );
    }

    // 2. Nothing opens with the server key either: every sealed text of the database,
    //    tried as every personal field of every account and as a session key, through
    //    miniauth's own vault (which holds the server key).
    let vault = app.store.vault();
    let accounts: Vec<AccountId> = app
        .query_texts("SELECT DISTINCT aggregate_id FROM events")
        .await
        .into_iter()
        .flatten()
        .map(|id| AccountId::parse(&id).unwrap())
        .collect();
    let personal = [
        person.phone.as_str(),
        person.unionid.as_str(),
        person.nickname.as_str(),
        person.avatar.as_str(),
        person.ip.as_str(),
    ];
    let tokens = sealed_tokens(&rows);
    assert!(
        tokens.len() >= 5,
        "the sealed values of the log are found: {tokens:?}"
    );
    for token in tokens {
        for owner in &accounts {
            for field in [
                PersonalField::Phone,
                PersonalField::Nickname,
                PersonalField::AvatarUrl,
                PersonalField::UnionId,
                PersonalField::ClientIp,
            ] {
                let datum = SealedDatum::from_sealed_text(token.clone());
                if let Ok(Some(plain)) = vault.unseal_personal(owner, field, &datum).await {
                    assert!(
                        !personal.contains(&plain.as_str()),
                        "{plain} opens with the server key after erasure"
                    );
                }
            }
        }
    }
    // The user it registered keeps no copy: users-table columns under the server key.
    let user = app
        .store
        .users()
        .get(UserId::new(person.user).unwrap())
        .await
        .expect("read the user");
    if let Some(user) = user {
        assert_eq!(user.mobile, None, "the registered user's mobile survives");
        assert_eq!(
            user.nickname, None,
            "the registered user's nickname survives"
        );
    }
    // The read model no longer links the unionid to anything.
    let view = app
        .store
        .account(&app.appid, &OpenId::parse(&person.openid).unwrap())
        .await
        .unwrap()
        .expect("the account stays");
    assert!(view.erased);
    assert_eq!(
        view.unionid_hash, None,
        "the unionid's lookup hash survives"
    );

    // 3. SQLite's file keeps no deleted page with the sealed data key (a stolen file
    //    plus the server key would open it).
    if let Some(file) = app.sqlite_file() {
        let sealed = sealed_data_key[0].clone().unwrap();
        for path in [file.clone(), file.with_extension("db-wal")] {
            let bytes = std::fs::read(&path).unwrap_or_default();
            assert!(
                !bytes.windows(sealed.len()).any(|w| w == sealed.as_bytes()),
                "{} still holds the erased data key",
                path.display()
            );
        }
    }

    // 4. The history still replays and verifies; auditors see "erased".
    let history = app
        .get(
            &format!("/v1/admin/apps/{APP}/accounts/{}/history", person.openid),
            Some(&app.admin_token.clone()),
        )
        .await;
    let history = history.ok(200).clone();
    let events = history["events"].as_array().expect("events");
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "SessionObtained",
            "ProfileDecrypted",
            "PhoneVerified",
            "UserBound",
            "Unbound",
            "PersonalDataErased"
        ]
    );
    for event in events {
        for key in ["unionid", "phone", "nickname", "client_ip"] {
            if let Some(shown) = event[key].as_str() {
                assert_eq!(shown, "erased", "{key} of {event}");
            }
        }
    }
    assert_eq!(events[0]["unionid"], json!("erased"));
    let report = app.store.verify().await.expect("verify");
    assert!(report.is_clean(), "{report:#?}");
}

async fn sealed_phone_moved_to_another_user_opens(engine: Engine) {
    let mut app = spawn_app(engine).await;
    let alice = register(&mut app).await;
    let bob = register(&mut app).await;

    // Write access to the database, no server key: Bob's row gets Alice's sealed phone
    // and her lookup hash (unique per tenant: taken from her row), so that Alice's
    // number finds — and shows — Bob.
    let hash = app
        .query_texts(&format!(
            "SELECT mobile_hash FROM users WHERE id = {}",
            alice.user
        ))
        .await
        .remove(0)
        .expect("Alice's lookup hash");
    app.execute_sql(&format!(
        "UPDATE users SET mobile_hash = NULL WHERE id = {}",
        alice.user
    ))
    .await;
    let moved = app
        .execute_sql(&format!(
            "UPDATE users SET mobile_sealed = (SELECT mobile_sealed FROM users WHERE id = {a}), \
             mobile_hash = '{hash}' WHERE id = {b}",
            a = alice.user,
            b = bob.user,
        ))
        .await;
    assert_eq!(moved, 1, "the attacker's UPDATE ran");

    // Bob's row does not open as Alice's phone.
    let read = app.store.users().get(UserId::new(bob.user).unwrap()).await;
    if let Ok(Some(user)) = &read {
        let shown = user.mobile.as_ref().map(|m| m.pure().to_owned());
        assert_ne!(
            shown.as_deref(),
            Some(alice.phone.as_str()),
            "Alice's sealed phone opens in Bob's row"
        );
    }
    // And Alice's number no longer reaches Bob's user: a new WeChat identity verifying
    // Alice's phone is not bound to Bob.
    let newcomer = app.wechat_user(Some(&alice.phone)).await;
    let ticket = app.ticket(APP, newcomer).await;
    let code = app.phone_code(APP, newcomer).await;
    let answer = app
        .phone(APP, &json!({ "ticket": ticket, "code": code }))
        .await;
    if answer.status.is_success() {
        let body = answer.ok(200);
        assert_ne!(
            body["user_id"],
            json!(bob.user),
            "Alice's phone, moved by SQL, logs into Bob's user: {body}"
        );
    }
    let bound_to_bob = app.bindings_of(bob.user).await;
    assert_eq!(bound_to_bob.len(), 1, "{bound_to_bob:?}");
}

async fn sealed_session_key_moved_to_another_account_opens(engine: Engine) {
    let app = spawn_app(engine).await;
    // The victim: a user of the business system with a phone, not on WeChat yet.
    let victim_phone = random_phone();
    let (victim, _, _) = app.password_user(Some(&victim_phone)).await;
    // Two WeChat identities of the attacker, each logged in once.
    let (a, b) = (app.wechat_user(None).await, app.wechat_user(None).await);
    app.session(APP, a).await;
    let ticket_b = app.ticket(APP, b).await;
    let sim = app.simulator.as_ref().unwrap().simulator();
    let (open_a, open_b) = (
        sim.openid(&app.appid, a).unwrap(),
        sim.openid(&app.appid, b).unwrap(),
    );
    let (id_a, id_b) = (
        AccountId::new(&app.appid, &open_a),
        AccountId::new(&app.appid, &open_b),
    );

    // The attacker copies A's sealed session key over B's, in B's state row.
    let state_of = |id: &AccountId| {
        format!("SELECT CAST(payload AS TEXT) FROM snapshots WHERE aggregate_id = '{id}'")
    };
    let key_of = |state: &str| -> String {
        let state: Value = serde_json::from_str(state).unwrap();
        state["sessions"][0]["session_key"]
            .as_str()
            .expect("a sealed session key")
            .to_owned()
    };
    let sealed_a = key_of(app.query_texts(&state_of(&id_a)).await[0].as_ref().unwrap());
    let sealed_b = key_of(app.query_texts(&state_of(&id_b)).await[0].as_ref().unwrap());
    let replace = if engine == Engine::Postgres {
        format!(
            "UPDATE snapshots SET payload = REPLACE(payload::text, '{sealed_b}', '{sealed_a}')::json \
             WHERE aggregate_id = '{id_b}'"
        )
    } else {
        format!(
            "UPDATE snapshots SET payload = REPLACE(payload, '{sealed_b}', '{sealed_a}') \
             WHERE aggregate_id = '{id_b}'"
        )
    };
    assert_eq!(app.execute_sql(&replace).await, 1);

    // Moved, it does not open as B's key.
    let vault = app.store.vault();
    assert!(
        vault
            .unseal_secret(&id_b, &SealedSecret::from_sealed_text(sealed_a.clone()))
            .await
            .is_err(),
        "A's sealed session key opens as B's"
    );

    // Over HTTP: a legacy phone payload for the victim's number, encrypted under A's key
    // (which the attacker's tooling may know), sent with B's ticket. Opening it under
    // B's state would bind B's WeChat identity to the victim.
    let now = chrono::Utc::now().timestamp();
    let payload = json!({ "phoneNumber": victim_phone, "purePhoneNumber": victim_phone,
        "countryCode": "86", "watermark": { "appid": APP, "timestamp": now } });
    let (encrypted_data, iv) = app.encrypt_for(APP, a, payload.to_string().as_bytes());
    let answer = app
        .phone(
            APP,
            &json!({ "ticket": ticket_b, "encrypted_data": encrypted_data, "iv": iv }),
        )
        .await;
    assert!(
        !answer.status.is_success(),
        "a payload under A's key, moved into B's row, bound B: {}",
        answer.text
    );
    let bound = app
        .store
        .account(&app.appid, &open_b)
        .await
        .unwrap()
        .and_then(|v| v.bound_user);
    assert_eq!(bound, None, "B got bound to the victim");
    assert!(
        app.bindings_of(victim).await.is_empty(),
        "the victim got taken over"
    );
}
