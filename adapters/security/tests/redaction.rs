//! No `Debug` output or error message of this crate carries key bytes, tickets or
//! tokens, whatever goes in.

use chrono::{Duration, TimeZone, Utc};
use miniauth_application::ports::{
    AttemptLimiter, ThrottleKey, ThrottleLimits, TicketClaims, TicketCodec, TokenIssuer,
    TokenSubject,
};
use miniauth_domain::{AppId, OpenId, TenantId, UserId};
use miniauth_security::{
    generate_ed25519_pkcs8, HmacTicketCodec, JwtIssuer, JwtSettings, LegacyBindKeyCodec,
    MemoryAttemptLimiter, SystemClock,
};

/// Forms a secret's bytes could take in a careless `Debug`.
fn renderings(secret: &[u8]) -> Vec<String> {
    use base64::Engine;
    vec![
        hex::encode(secret),
        hex::encode_upper(secret),
        base64::engine::general_purpose::STANDARD.encode(secret),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret),
        format!("{:?}", secret).trim_end_matches(']').to_owned(),
        String::from_utf8_lossy(secret).into_owned(),
    ]
}

fn assert_hides(text: &str, secrets: &[Vec<u8>]) {
    for secret in secrets {
        for rendering in renderings(secret) {
            assert!(!text.contains(&rendering), "{text} shows {rendering}");
        }
    }
}

#[tokio::test]
async fn nothing_secret_reaches_debug_or_errors() {
    let now = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
    let ticket_key: [u8; 32] = *b"ticket-key-0123456789abcdefghijk";
    let des_key: [u8; 8] = *b"DESkey!!";
    let des_iv: [u8; 8] = *b"DESiv!!!";
    let jwt_key = generate_ed25519_pkcs8();

    let tickets = HmacTicketCodec::new(ticket_key);
    let ticket = tickets.issue(&TicketClaims {
        appid: AppId::parse("wx4f4bc4dec97d474b").unwrap(),
        openid: OpenId::parse("o1").unwrap(),
        session_seq: 1,
        issued_at: now,
        expires_at: now + Duration::hours(1),
        spent: false,
    });
    let jwt = JwtIssuer::ed25519(
        &jwt_key,
        JwtSettings {
            issuer: "https://auth.example.com".into(),
            audience: "shop-api".into(),
            access_ttl: Duration::minutes(15),
        },
    )
    .unwrap();
    let token = jwt
        .issue(
            &TokenSubject {
                user_id: UserId::new(7).unwrap(),
                tenant: TenantId::parse("default").unwrap(),
                appid: None,
                session: miniauth_application::ports::SessionId::parse("s1").unwrap(),
            },
            now,
        )
        .unwrap();
    let legacy = LegacyBindKeyCodec::new(des_key, des_iv);
    let bind_key = legacy.encode("o1");
    let limiter = MemoryAttemptLimiter::new(ThrottleLimits::default()).unwrap();
    limiter
        .record_failure(
            &ThrottleKey::Account {
                tenant: TenantId::parse("default").unwrap(),
                account: token.token.clone(),
            },
            now,
        )
        .await
        .unwrap();

    // Errors from inputs that are themselves secrets must not echo them.
    let tampered_ticket = format!("{ticket}x");
    let tampered_token = format!("{}x", token.token);
    let outputs = vec![
        format!("{tickets:?}"),
        format!("{jwt:?}"),
        format!("{:?}", jwt.settings()),
        format!("{legacy:?}"),
        format!("{limiter:?}"),
        format!("{:?}", SystemClock),
        format!("{token:?}"),
        format!("{:?}", tickets.verify(&tampered_ticket, now)),
        tickets
            .verify(&tampered_ticket, now)
            .unwrap_err()
            .to_string(),
        format!("{:?}", jwt.verify(&tampered_token, now)),
        jwt.verify(&tampered_token, now).unwrap_err().to_string(),
        format!("{:?}", legacy.decode(&format!("{bind_key}00"))),
        legacy
            .decode(&format!("{bind_key}zz"))
            .unwrap_err()
            .to_string(),
        JwtIssuer::ed25519(&jwt_key[..20], jwt.settings().clone())
            .unwrap_err()
            .to_string(),
    ];
    let secrets = vec![
        ticket_key.to_vec(),
        des_key.to_vec(),
        des_iv.to_vec(),
        jwt_key.clone(),
        // The seed inside the PKCS#8 v2 document.
        jwt_key[16..48].to_vec(),
        ticket.into_bytes(),
        token.token.clone().into_bytes(),
        bind_key.into_bytes(),
    ];
    for output in outputs {
        assert_hides(&output, &secrets);
    }
}
