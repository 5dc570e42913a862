//! Tickets: the short-lived, signed stand-in for a WeChat session that the mini
//! program keeps between login, profile, phone and binding (GitEgg's "bind key").
//!
//! Format: `v1.` + base64url(JSON claims) + `.` + base64url(HMAC-SHA256 over everything
//! before the second dot). The claims carry a random nonce, so two logins of the same
//! user never produce the same ticket (GitEgg's bind key was the same on every login).
//!
//! A browser login's state is signed the same way under `s1.`. Its result handle, which
//! travels in a URL, is sealed instead: `r1.` + base64url(12-byte nonce + AES-256-GCM
//! ciphertext and tag) under a key derived from the ticket key, the prefix bound in as
//! associated data. Nobody reads its openid, and no prefix makes one kind pass for
//! another.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload as AeadPayload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use miniauth_application::ports::{
    BrowserState, IssuedState, ResultClaims, TicketClaims, TicketCodec, TicketError,
};
use miniauth_domain::{AppId, OpenId};
use rand::rngs::OsRng;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// The version prefix, part of the signed input so it cannot be swapped.
const PREFIX: &str = "v1.";
/// HMAC-SHA256 output length.
const MAC_LEN: usize = 32;
/// Far above any ticket we issue (about 300 bytes); bounds the work spent on junk.
const MAX_TICKET_LEN: usize = 2048;

/// What the ticket's payload holds on the wire.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    /// The app.
    a: AppId,
    /// The openid.
    o: OpenId,
    /// The session sequence number.
    s: u64,
    /// Issued at (RFC 3339, full precision so claims round-trip exactly).
    iat: DateTime<Utc>,
    /// Expires at.
    exp: DateTime<Utc>,
    /// 128 random bits, base64url: makes every ticket unique.
    n: String,
    /// Issued spent (an answer with tokens); absent when not.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    x: bool,
}

/// Issues and verifies HMAC-SHA256-signed tickets with a 32-byte server key.
///
/// Every instance sharing a key accepts the others' tickets; a restart with a fresh
/// random key invalidates the outstanding tickets (they live minutes, so users just
/// log in again).
#[derive(Clone)]
pub struct HmacTicketCodec {
    key: [u8; 32],
}

impl HmacTicketCodec {
    /// A codec signing with `key` (e.g. from [`crate::random_key_32`] or configuration).
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    fn mac(&self, signed_part: &str) -> [u8; MAC_LEN] {
        // HMAC accepts keys of any length: new_from_slice cannot fail here.
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(signed_part.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Signs an arbitrary payload: `issue` for real claims, tests for crafted ones.
    fn seal(&self, payload_json: &[u8]) -> String {
        self.seal_as(PREFIX, payload_json)
    }

    /// Signs a payload under `prefix` (part of the signed input: a ticket is never a
    /// state, nor the reverse).
    fn seal_as(&self, prefix: &str, payload_json: &[u8]) -> String {
        let signed_part = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(payload_json));
        let mac = self.mac(&signed_part);
        format!("{signed_part}.{}", URL_SAFE_NO_PAD.encode(mac))
    }

    /// The payload of a value sealed under `prefix`, once its signature verifies.
    fn open_as(&self, prefix: &str, sealed: &str) -> Result<Vec<u8>, TicketError> {
        let sealed = sealed.trim();
        if sealed.is_empty() {
            return Err(TicketError::Missing);
        }
        if sealed.len() > MAX_TICKET_LEN {
            return Err(TicketError::Malformed);
        }
        let body = sealed.strip_prefix(prefix).ok_or(TicketError::Malformed)?;
        let (payload_b64, mac_b64) = body.split_once('.').ok_or(TicketError::Malformed)?;
        if payload_b64.is_empty() || mac_b64.contains('.') {
            return Err(TicketError::Malformed);
        }
        let signed_part = &sealed[..prefix.len() + payload_b64.len()];
        let payload = URL_SAFE_NO_PAD
            .decode(payload_b64)
            .map_err(|_| TicketError::Malformed)?;
        let presented = URL_SAFE_NO_PAD
            .decode(mac_b64)
            .map_err(|_| TicketError::Malformed)?;
        if presented.len() != MAC_LEN {
            return Err(TicketError::Malformed);
        }
        // Authenticity first: nothing an attacker wrote gets parsed.
        let expected = self.mac(signed_part);
        if !bool::from(expected.ct_eq(presented.as_slice())) {
            return Err(TicketError::Forged);
        }
        Ok(payload)
    }

    /// The cipher of result handles: its key is derived from the ticket key (one secret
    /// to share between instances), for this purpose only.
    fn result_cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&self.mac("result-handle-key/v1").into())
    }

    /// What a state stores of its browser key: a keyed hash (the state travels through
    /// WeChat and the browser's history; the key stays in the cookie).
    fn browser_binding(&self, browser_key: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(&format!("browser-key:{browser_key}")))
    }
}

/// The prefix of a browser login's state.
const STATE_PREFIX: &str = "s1.";

/// What a browser login's state holds on the wire.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatePayload {
    /// The app.
    a: AppId,
    /// The redirect URI.
    r: String,
    /// The keyed hash of the browser key.
    b: String,
    /// Issued at.
    iat: DateTime<Utc>,
    /// Expires at.
    exp: DateTime<Utc>,
    /// The front end's PKCE challenge.
    c: String,
}

/// The prefix of a browser login's result handle.
const RESULT_PREFIX: &str = "r1.";
/// AES-GCM's nonce length.
const NONCE_LEN: usize = 12;

/// What a result handle seals.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResultPayload {
    /// The app.
    a: AppId,
    /// The openid.
    o: OpenId,
    /// Issued at.
    iat: DateTime<Utc>,
    /// Expires at.
    exp: DateTime<Utc>,
    /// The PKCE challenge.
    c: String,
}

impl fmt::Debug for HmacTicketCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HmacTicketCodec { key: <redacted> }")
    }
}

impl TicketCodec for HmacTicketCodec {
    fn issue(&self, claims: &TicketClaims) -> String {
        let mut nonce = [0u8; 16];
        OsRng.fill_bytes(&mut nonce);
        let payload = Payload {
            a: claims.appid.clone(),
            o: claims.openid.clone(),
            s: claims.session_seq,
            iat: claims.issued_at,
            exp: claims.expires_at,
            n: URL_SAFE_NO_PAD.encode(nonce),
            x: claims.spent,
        };
        // Plain strings, integers and timestamps always serialize.
        let json = serde_json::to_vec(&payload).expect("ticket payload serializes");
        self.seal(&json)
    }

    fn verify(&self, ticket: &str, now: DateTime<Utc>) -> Result<TicketClaims, TicketError> {
        let payload = self.open_as(PREFIX, ticket)?;
        let payload: Payload =
            serde_json::from_slice(&payload).map_err(|_| TicketError::Malformed)?;
        if now >= payload.exp {
            return Err(TicketError::Expired);
        }
        Ok(TicketClaims {
            appid: payload.a,
            openid: payload.o,
            session_seq: payload.s,
            issued_at: payload.iat,
            expires_at: payload.exp,
            spent: payload.x,
        })
    }

    fn issue_state(&self, state: &BrowserState) -> IssuedState {
        let mut key = [0u8; 16];
        OsRng.fill_bytes(&mut key);
        let browser_key = URL_SAFE_NO_PAD.encode(key);
        let payload = StatePayload {
            a: state.appid.clone(),
            r: state.redirect_uri.clone(),
            b: self.browser_binding(&browser_key),
            iat: state.issued_at,
            exp: state.expires_at,
            c: state.code_challenge.clone(),
        };
        let json = serde_json::to_vec(&payload).expect("state payload serializes");
        IssuedState {
            state: self.seal_as(STATE_PREFIX, &json),
            browser_key,
        }
    }

    fn verify_state(
        &self,
        state: &str,
        browser_key: &str,
        now: DateTime<Utc>,
    ) -> Result<BrowserState, TicketError> {
        let payload = self.open_as(STATE_PREFIX, state)?;
        let payload: StatePayload =
            serde_json::from_slice(&payload).map_err(|_| TicketError::Malformed)?;
        if now >= payload.exp {
            return Err(TicketError::Expired);
        }
        // Another browser's state (login CSRF): its key hashes to another binding.
        let binding = self.browser_binding(browser_key.trim());
        if browser_key.trim().is_empty()
            || !bool::from(binding.as_bytes().ct_eq(payload.b.as_bytes()))
        {
            return Err(TicketError::Forged);
        }
        Ok(BrowserState {
            appid: payload.a,
            redirect_uri: payload.r,
            issued_at: payload.iat,
            expires_at: payload.exp,
            code_challenge: payload.c,
        })
    }

    fn issue_result(&self, claims: &ResultClaims) -> String {
        let payload = ResultPayload {
            a: claims.appid.clone(),
            o: claims.openid.clone(),
            iat: claims.issued_at,
            exp: claims.expires_at,
            c: claims.code_challenge.clone(),
        };
        let json = serde_json::to_vec(&payload).expect("result payload serializes");
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .result_cipher()
            .encrypt(
                Nonce::from_slice(&nonce),
                AeadPayload {
                    msg: &json,
                    aad: RESULT_PREFIX.as_bytes(),
                },
            )
            .expect("AES-GCM seals a short payload");
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        format!("{RESULT_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    fn verify_result(&self, handle: &str, now: DateTime<Utc>) -> Result<ResultClaims, TicketError> {
        let handle = handle.trim();
        if handle.is_empty() {
            return Err(TicketError::Missing);
        }
        if handle.len() > MAX_TICKET_LEN {
            return Err(TicketError::Malformed);
        }
        let body = handle
            .strip_prefix(RESULT_PREFIX)
            .ok_or(TicketError::Malformed)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| TicketError::Malformed)?;
        // A nonce and at least a tag.
        if bytes.len() <= NONCE_LEN + 16 {
            return Err(TicketError::Malformed);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let json = self
            .result_cipher()
            .decrypt(
                Nonce::from_slice(nonce),
                AeadPayload {
                    msg: sealed,
                    aad: RESULT_PREFIX.as_bytes(),
                },
            )
            .map_err(|_| TicketError::Forged)?;
        let payload: ResultPayload =
            serde_json::from_slice(&json).map_err(|_| TicketError::Malformed)?;
        if now >= payload.exp {
            return Err(TicketError::Expired);
        }
        Ok(ResultClaims {
            appid: payload.a,
            openid: payload.o,
            issued_at: payload.iat,
            expires_at: payload.exp,
            code_challenge: payload.c,
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};

    use super::*;

    fn codec() -> HmacTicketCodec {
        HmacTicketCodec::new([7u8; 32])
    }

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap() + Duration::microseconds(123_456)
    }

    fn claims() -> TicketClaims {
        TicketClaims {
            appid: AppId::parse("wx4f4bc4dec97d474b").unwrap(),
            openid: OpenId::parse("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o").unwrap(),
            session_seq: 3,
            issued_at: t0(),
            expires_at: t0() + Duration::hours(1),
            spent: false,
        }
    }

    fn payload_json(appid: &str, openid: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "a": appid, "o": openid, "s": 1,
            "iat": "2026-03-01T12:00:00Z", "exp": "2026-03-01T13:00:00Z", "n": "AAAA",
        }))
        .unwrap()
    }

    #[test]
    fn an_issued_ticket_verifies_to_its_claims() {
        let ticket = codec().issue(&claims());
        assert!(ticket.starts_with("v1."));
        assert_eq!(codec().verify(&ticket, t0()), Ok(claims()));
        assert_eq!(
            codec().verify(&ticket, t0() + Duration::minutes(59)),
            Ok(claims())
        );
    }

    #[test]
    fn a_spent_ticket_stays_spent_and_an_unspent_one_reads_as_before() {
        let spent = TicketClaims {
            spent: true,
            ..claims()
        };
        let ticket = codec().issue(&spent);
        assert_eq!(codec().verify(&ticket, t0()), Ok(spent));
        // A ticket issued before the flag existed (no `x`) is an unspent one.
        let old = codec().seal(&payload_json("wx4f4bc4dec97d474b", "o1"));
        let at = Utc.with_ymd_and_hms(2026, 3, 1, 12, 30, 0).unwrap();
        assert!(!codec().verify(&old, at).unwrap().spent);
        // The flag is signed: dropping it from a spent ticket breaks the signature.
        let (_, mac) = ticket.rsplit_once('.').unwrap();
        let unspent = codec().issue(&claims());
        let (body, _) = unspent.rsplit_once('.').unwrap();
        assert_eq!(
            codec().verify(&format!("{body}.{mac}"), t0()),
            Err(TicketError::Forged)
        );
    }

    #[test]
    fn the_same_claims_give_a_different_ticket_every_time() {
        let a = codec().issue(&claims());
        let b = codec().issue(&claims());
        assert_ne!(a, b);
        assert_eq!(codec().verify(&a, t0()), codec().verify(&b, t0()));
    }

    fn browser_state() -> BrowserState {
        BrowserState {
            appid: AppId::parse("wx4f4bc4dec97d474b").unwrap(),
            redirect_uri: "https://shop.example/done".into(),
            issued_at: t0(),
            expires_at: t0() + Duration::minutes(10),
            code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
        }
    }

    fn result_claims() -> ResultClaims {
        ResultClaims {
            appid: AppId::parse("wx4f4bc4dec97d474b").unwrap(),
            openid: OpenId::parse("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o").unwrap(),
            issued_at: t0(),
            expires_at: t0() + Duration::minutes(2),
            code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
        }
    }

    #[test]
    fn a_result_handle_is_sealed_and_of_its_own_kind() {
        let handle = codec().issue_result(&result_claims());
        assert!(handle.starts_with("r1."), "{handle}");
        assert_eq!(codec().verify_result(&handle, t0()), Ok(result_claims()));
        assert_ne!(handle, codec().issue_result(&result_claims()));
        // Nothing of the payload reads in the URL: no openid, appid or challenge, even
        // decoded.
        let decoded = URL_SAFE_NO_PAD.decode(&handle[3..]).unwrap();
        let text = String::from_utf8_lossy(&decoded);
        for secret in [
            "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
            "wx4f4bc4dec97d474b",
            "E9Melhoa",
        ] {
            assert!(
                !handle.contains(secret) && !text.contains(secret),
                "{secret}"
            );
        }
        // A handle is no ticket and no state; a ticket or a state is no handle.
        assert_eq!(codec().verify(&handle, t0()), Err(TicketError::Malformed));
        assert_eq!(
            codec().verify_state(&handle, "key", t0()),
            Err(TicketError::Malformed)
        );
        let ticket = codec().issue(&claims());
        let state = codec().issue_state(&browser_state()).state;
        for other in [&ticket, &state] {
            assert_eq!(
                codec().verify_result(other, t0()),
                Err(TicketError::Malformed)
            );
        }
        // The same bytes under another prefix, another server key, a flipped bit, too
        // late, nothing.
        assert_eq!(
            codec().verify(&format!("v1.{}", &handle[3..]), t0()),
            Err(TicketError::Malformed)
        );
        assert_eq!(
            HmacTicketCodec::new([8u8; 32]).verify_result(&handle, t0()),
            Err(TicketError::Forged)
        );
        let mut bytes = decoded.clone();
        bytes[20] ^= 1;
        let flipped = format!("r1.{}", URL_SAFE_NO_PAD.encode(&bytes));
        assert_eq!(
            codec().verify_result(&flipped, t0()),
            Err(TicketError::Forged)
        );
        assert_eq!(
            codec().verify_result(&handle, t0() + Duration::minutes(2)),
            Err(TicketError::Expired)
        );
        assert_eq!(codec().verify_result(" ", t0()), Err(TicketError::Missing));
        for junk in [
            "r1.".to_owned(),
            "r1.AAAA".to_owned(),
            format!("{handle}!"),
            format!("r1.{}", "A".repeat(5000)),
        ] {
            assert_eq!(
                codec().verify_result(&junk, t0()),
                Err(TicketError::Malformed),
                "{junk}"
            );
        }
        // One handle has one spelling (its single use is counted by its text): a
        // non-canonical base64 tail is refused, not read as the same handle.
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let last = alphabet.find(handle.chars().last().unwrap()).unwrap();
        let sibling = alphabet.chars().nth(last ^ 1).unwrap();
        let twin = format!("{}{sibling}", &handle[..handle.len() - 1]);
        assert_ne!(codec().verify_result(&twin, t0()), Ok(result_claims()));
    }

    #[test]
    fn a_state_verifies_only_with_its_browser_key_while_it_lives() {
        let issued = codec().issue_state(&browser_state());
        assert!(issued.state.starts_with("s1."));
        assert!(!issued.state.contains(&issued.browser_key));
        assert_eq!(
            codec().verify_state(&issued.state, &issued.browser_key, t0()),
            Ok(browser_state())
        );
        let other = codec().issue_state(&browser_state());
        assert_ne!(other.browser_key, issued.browser_key);
        // Another browser's key, no key, another server key, too late, a ticket.
        assert_eq!(
            codec().verify_state(&issued.state, &other.browser_key, t0()),
            Err(TicketError::Forged)
        );
        assert_eq!(
            codec().verify_state(&issued.state, "", t0()),
            Err(TicketError::Forged)
        );
        assert_eq!(
            HmacTicketCodec::new([8u8; 32]).verify_state(&issued.state, &issued.browser_key, t0()),
            Err(TicketError::Forged)
        );
        assert_eq!(
            codec().verify_state(
                &issued.state,
                &issued.browser_key,
                t0() + Duration::minutes(10)
            ),
            Err(TicketError::Expired)
        );
        let ticket = codec().issue(&claims());
        assert_eq!(
            codec().verify_state(&ticket, &issued.browser_key, t0()),
            Err(TicketError::Malformed)
        );
        assert_eq!(
            codec().verify(&issued.state, t0()),
            Err(TicketError::Malformed)
        );
    }

    #[test]
    fn another_key_does_not_accept_it() {
        let ticket = codec().issue(&claims());
        let other = HmacTicketCodec::new([8u8; 32]);
        assert_eq!(other.verify(&ticket, t0()), Err(TicketError::Forged));
    }

    #[test]
    fn a_tampered_payload_is_forged() {
        let ticket = codec().issue(&claims());
        let (_, mac) = ticket.rsplit_once('.').unwrap();
        let evil = URL_SAFE_NO_PAD.encode(payload_json("wx4f4bc4dec97d474b", "someone_else"));
        let forged = format!("v1.{evil}.{mac}");
        assert_eq!(codec().verify(&forged, t0()), Err(TicketError::Forged));
    }

    #[test]
    fn a_tampered_mac_is_forged() {
        let ticket = codec().issue(&claims());
        let (signed, _) = ticket.rsplit_once('.').unwrap();
        let forged = format!("{signed}.{}", URL_SAFE_NO_PAD.encode([0u8; 32]));
        assert_eq!(codec().verify(&forged, t0()), Err(TicketError::Forged));
    }

    #[test]
    fn it_expires_at_expires_at() {
        let ticket = codec().issue(&claims());
        let exp = claims().expires_at;
        assert_eq!(
            codec().verify(&ticket, exp - Duration::microseconds(1)),
            Ok(claims())
        );
        assert_eq!(codec().verify(&ticket, exp), Err(TicketError::Expired));
        assert_eq!(
            codec().verify(&ticket, exp + Duration::days(1)),
            Err(TicketError::Expired)
        );
    }

    #[test]
    fn nothing_is_missing() {
        assert_eq!(codec().verify("", t0()), Err(TicketError::Missing));
        assert_eq!(codec().verify("  \n", t0()), Err(TicketError::Missing));
    }

    #[test]
    fn foreign_formats_are_malformed() {
        let ticket = codec().issue(&claims());
        let (signed, mac) = ticket.rsplit_once('.').unwrap();
        let payload_b64 = &signed[3..];
        let cases = [
            // A GitEgg bind key (hex), a JWT, random words.
            "3f2a9c0b4d5e6f708192a3b4c5d6e7f8".to_owned(),
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln".to_owned(),
            "not a ticket".to_owned(),
            // Unknown version, same body.
            format!("v2.{payload_b64}.{mac}"),
            // Missing parts.
            "v1.".to_owned(),
            format!("v1.{payload_b64}"),
            format!("v1.{payload_b64}."),
            format!("v1..{mac}"),
            // Extra part.
            format!("v1.{payload_b64}.{payload_b64}.{mac}"),
            // Bad base64 in the payload or the MAC.
            format!("v1.{payload_b64}!.{mac}"),
            format!("v1.{payload_b64}.{mac}*"),
            // A MAC of the wrong length.
            format!("v1.{payload_b64}.{}", URL_SAFE_NO_PAD.encode([1u8; 16])),
            // Absurdly long.
            format!("v1.{}.{mac}", "A".repeat(5000)),
        ];
        for case in cases {
            assert_eq!(
                codec().verify(&case, t0()),
                Err(TicketError::Malformed),
                "{case}"
            );
        }
    }

    #[test]
    fn signed_but_unparseable_payloads_are_malformed() {
        let cases: Vec<Vec<u8>> = vec![
            b"not json".to_vec(),
            b"{}".to_vec(),
            payload_json("not-an-appid", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"),
            payload_json("wx4f4bc4dec97d474b", "bad openid!"),
            payload_json("wx4f4bc4dec97d474b", ""),
        ];
        for payload in cases {
            let ticket = codec().seal(&payload);
            assert_eq!(
                codec().verify(&ticket, t0()),
                Err(TicketError::Malformed),
                "{}",
                String::from_utf8_lossy(&payload)
            );
        }
        // The crafted payload itself is well-formed: only the bad fields above fail.
        let good = codec().seal(&payload_json(
            "wx4f4bc4dec97d474b",
            "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
        ));
        assert!(codec().verify(&good, t0()).is_ok());
    }

    #[test]
    fn debug_shows_no_key() {
        let debug = format!("{:?}", HmacTicketCodec::new([0xAB; 32]));
        assert_eq!(debug, "HmacTicketCodec { key: <redacted> }");
        assert!(!debug.contains("171"), "{debug}");
    }
}
