//! Tickets (HMAC-SHA256) and access tokens (JWT EdDSA), signed and verified through the
//! application's ports, as the use cases call them.
//!
//! `cargo bench -p miniauth-security --bench tokens -- --warm-up-time 1 --measurement-time 2`
//! (`cargo test` runs each benchmark once, in criterion's test mode).

use std::hint::black_box;

use chrono::{Duration, Utc};
use criterion::{criterion_group, criterion_main, Criterion};
use miniauth_application::ports::{
    SessionId, TicketClaims, TicketCodec, TokenIssuer, TokenSubject,
};
use miniauth_domain::{AppId, OpenId, TenantId, UserId};
use miniauth_security::{
    generate_ed25519_pkcs8, random_key_32, HmacTicketCodec, JwtIssuer, JwtSettings,
};

fn tickets(c: &mut Criterion) {
    let codec = HmacTicketCodec::new(random_key_32());
    let now = Utc::now();
    let claims = TicketClaims {
        appid: AppId::parse("wx4f4bc4dec97d474b").expect("appid"),
        openid: OpenId::parse("oGZUI0egBJY1zhBYw2KhdUfwVJJE").expect("openid"),
        session_seq: 42,
        issued_at: now,
        expires_at: now + Duration::hours(1),
        spent: false,
    };
    let ticket = codec.issue(&claims);
    assert_eq!(codec.verify(&ticket, now).expect("verifies"), claims);
    c.bench_function("ticket sign (HMAC-SHA256)", |b| {
        b.iter(|| codec.issue(black_box(&claims)))
    });
    c.bench_function("ticket verify (HMAC-SHA256)", |b| {
        b.iter(|| codec.verify(black_box(&ticket), now).expect("verifies"))
    });
}

fn jwt(c: &mut Criterion) {
    let issuer = JwtIssuer::ed25519(
        &generate_ed25519_pkcs8(),
        JwtSettings {
            issuer: "miniauth".into(),
            audience: "miniauth".into(),
            access_ttl: Duration::minutes(15),
        },
    )
    .expect("an Ed25519 issuer");
    let subject = TokenSubject {
        user_id: UserId::new(42).expect("user id"),
        tenant: TenantId::parse("default").expect("tenant"),
        appid: Some(AppId::parse("wx4f4bc4dec97d474b").expect("appid")),
        session: SessionId::parse("0f1e2d3c4b5a69788796a5b4c3d2e1f0").expect("session id"),
    };
    let now = Utc::now();
    let token = issuer.issue(&subject, now).expect("signs").token;
    assert_eq!(issuer.verify(&token, now).expect("verifies"), subject);
    c.bench_function("JWT sign (EdDSA)", |b| {
        b.iter(|| issuer.issue(black_box(&subject), now).expect("signs"))
    });
    c.bench_function("JWT verify (EdDSA)", |b| {
        b.iter(|| issuer.verify(black_box(&token), now).expect("verifies"))
    });
}

criterion_group!(benches, tickets, jwt);
criterion_main!(benches);
