//! GitEgg's bind keys are DES-CBC with PKCS#7 padding and no MAC. During a migration
//! (`[compat] legacy_des_key`), miniauth decrypts the ones front ends still hold. An
//! answer that told bad padding from a bad prefix or a bad identity would be a padding
//! oracle: an attacker holding one key could decrypt it byte by byte, or forge one for
//! another identity. This attack runs the classic last-byte probe and the other
//! decoding failures against `POST /oauth/token`, and asserts one answer for all.

use std::collections::BTreeSet;
use std::sync::Arc;

use miniauth_application::import::{
    GiteggLink, GiteggSocial, GiteggUser, ImportObserver, ImportOptions, Planned, Skipped,
    WechatSource,
};
use miniauth_e2e::gitegg_db::{importer, MemorySource};
use miniauth_e2e::{on_both_engines, spawn_app_with, Engine, TestApp, APP};

on_both_engines!(gitegg_bind_key_answers_are_no_padding_oracle);

const DES_KEY: [u8; 8] = *b"k3y-DES!";
const DES_IV: [u8; 8] = *b"iv-DES-8";
const OPENID: &str = "oAttackerOwnIdentity0000001";

struct Quiet;

impl ImportObserver for Quiet {
    fn advanced(&self, _: u64) {}
    fn skipped(&self, _: &Skipped) {}
    fn planned(&self, _: &Planned) {}
}

/// One imported, bound account: the attacker's own, whose GitEgg key they hold.
async fn imported_attacker(app: &TestApp) {
    let source = MemorySource {
        socials: vec![GiteggSocial {
            id: 1,
            tenant_id: 0,
            source: Some("WECHAT_MINI_APP".into()),
            openid: Some(OPENID.into()),
            unionid: None,
            nickname: None,
            avatar: None,
            recorded_at: None,
            deleted: false,
        }],
        links: vec![GiteggLink {
            id: 1,
            user_id: 900_001,
            social_id: 1,
            recorded_at: None,
            deleted: false,
        }],
        users: vec![GiteggUser {
            id: 900_001,
            tenant_id: 0,
            account: Some("attacker".into()),
            nickname: None,
            mobile: None,
            password: None,
            status: Some(1),
            recorded_at: None,
            deleted: false,
        }],
    };
    let options = ImportOptions {
        sources: vec![(WechatSource::MiniApp, miniauth_e2e::app(APP))],
        tenant_map: Default::default(),
        dry_run: false,
        batch_size: 10,
    };
    importer(app, Arc::new(source))
        .run(&options, &Quiet)
        .await
        .expect("import");
}

async fn answer(app: &TestApp, key: &str) -> (u16, String, String) {
    let answer = app
        .oauth_token(&[("grant_type", "social"), ("social_key", key)])
        .await;
    (
        answer.status.as_u16(),
        answer.body["code"].to_string(),
        answer.body["msg"].as_str().unwrap_or_default().to_owned(),
    )
}

async fn gitegg_bind_key_answers_are_no_padding_oracle(engine: Engine) {
    let app = spawn_app_with(engine, |config| {
        config.compat.legacy_des_key = Some(miniauth::config::Secret::new("k3y-DES!"));
        config.compat.legacy_des_iv = Some(miniauth::config::Secret::new("iv-DES-8"));
    })
    .await;
    imported_attacker(&app).await;
    let codec = miniauth_security::LegacyBindKeyCodec::new(DES_KEY, DES_IV);
    let own = codec.encode(OPENID);
    let valid = answer(&app, &own).await;
    assert_eq!(valid.1, "200", "the attacker's own key works: {valid:?}");
    let bytes = hex_bytes(&own);
    let blocks = bytes.len() / 8;
    assert!(blocks >= 2);

    // The probe: every value of the last byte of the second-to-last block changes the
    // last plaintext byte, which is the padding. One of them pads validly (0x01).
    let mut answers = BTreeSet::new();
    let target = (blocks - 2) * 8 + 7;
    for value in 0..=255u8 {
        if value == bytes[target] {
            continue;
        }
        let mut probe = bytes.clone();
        probe[target] = value;
        answers.insert(answer(&app, &hex(&probe)).await);
    }
    // And the other ways to fail: a wrong prefix, an identity that is not one, random
    // blocks, the key of another DES key.
    let other = miniauth_security::LegacyBindKeyCodec::new(*b"another!", DES_IV);
    for key in [
        wrong_prefix(&own),
        codec.encode("not an openid!"),
        hex(&rand::random::<[u8; 24]>()),
        other.encode(OPENID),
    ] {
        answers.insert(answer(&app, &key).await);
    }
    assert_eq!(
        answers.len(),
        1,
        "every decoding failure must answer the same: {answers:#?}"
    );
    let (status, code, msg) = answers.into_iter().next().unwrap();
    assert_eq!((status, code.as_str()), (200, "401"));
    assert_eq!(
        msg,
        miniauth_application::LegacyKeyRefusal::Invalid.to_string()
    );
}

fn hex_bytes(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A key that pads validly but decrypts without GitEgg's prefix: a bit flipped in the
/// first ciphertext block garbles the first plaintext block and flips a bit of the
/// second — both within `WECHAT_MINI_APP_` — and leaves the padding alone.
fn wrong_prefix(key: &str) -> String {
    let mut bytes = hex_bytes(key);
    bytes[0] ^= 0x01;
    hex(&bytes)
}
