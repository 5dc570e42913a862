//! Ticket parsing on arbitrary strings: `HmacTicketCodec::verify` never panics, never
//! accepts a forgery, and a genuine ticket still verifies to the claims it was issued
//! with whatever else the input does.

#![no_main]

use chrono::{DateTime, Duration, Utc};
use libfuzzer_sys::fuzz_target;
use miniauth_application::ports::{TicketClaims, TicketCodec};
use miniauth_domain::{AppId, OpenId};
use miniauth_security::HmacTicketCodec;

const KEY: [u8; 32] = [7; 32];

fuzz_target!(|data: &[u8]| {
    let codec = HmacTicketCodec::new(KEY);
    let now = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).expect("a valid time");
    let text = String::from_utf8_lossy(data);
    // Anything the fuzzer writes is a forgery: it does not know the key.
    assert!(
        codec.verify(&text, now).is_err(),
        "accepted a ticket not signed with the key"
    );
    let prefixed = format!("v1.{text}");
    assert!(codec.verify(&prefixed, now).is_err());

    // A genuine ticket with fuzzer-chosen openid and session: it round-trips exactly,
    // and changing any one character of it makes it fail.
    let openid = text
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(64)
        .collect::<String>();
    let Ok(openid) = OpenId::parse(&openid) else {
        return;
    };
    let claims = TicketClaims {
        appid: AppId::parse("wx4f4bc4dec97d474b").expect("a valid appid"),
        openid,
        session_seq: data.len() as u64,
        issued_at: now,
        expires_at: now + Duration::hours(1),
    };
    let ticket = codec.issue(&claims);
    assert_eq!(codec.verify(&ticket, now).as_ref(), Ok(&claims));
    if let Some(&byte) = data.first() {
        let position = usize::from(byte) % ticket.len();
        let mut tampered = ticket.clone().into_bytes();
        tampered[position] = if tampered[position] == b'A' {
            b'B'
        } else {
            b'A'
        };
        let tampered = String::from_utf8(tampered).expect("ASCII stays ASCII");
        if tampered != ticket {
            assert!(
                codec.verify(&tampered, now).is_err(),
                "accepted a tampered ticket"
            );
        }
    }
});
