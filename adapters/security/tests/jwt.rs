//! Access tokens as miniauth issues them and as another service verifies them.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Duration, TimeZone, Utc};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use miniauth_application::ports::{AccessTokenError, SessionId, TokenIssuer, TokenSubject};
use miniauth_domain::{AppId, TenantId, UserId};
use miniauth_security::{
    generate_ed25519_pkcs8, JwtAlgorithm, JwtIssuer, JwtKeyError, JwtSettings,
};
use serde_json::{json, Value};

const RSA_PKCS8: &[u8] = include_bytes!("../testdata/rs256-pkcs8.pem");
const RSA_PKCS1: &[u8] = include_bytes!("../testdata/rs256-pkcs1.pem");
const RSA_1024: &[u8] = include_bytes!("../testdata/rsa1024-pkcs8.pem");
const ED25519_OPENSSL: &[u8] = include_bytes!("../testdata/ed25519-openssl.pem");

fn settings() -> JwtSettings {
    JwtSettings {
        issuer: "https://auth.example.com".into(),
        audience: "shop-api".into(),
        access_ttl: Duration::minutes(15),
    }
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

fn subject() -> TokenSubject {
    TokenSubject {
        user_id: UserId::new(42).unwrap(),
        tenant: TenantId::parse("default").unwrap(),
        appid: Some(AppId::parse("wx4f4bc4dec97d474b").unwrap()),
        session: SessionId::parse("0f1e2d3c4b5a69788796a5b4c3d2e1f0").unwrap(),
    }
}

fn ed25519() -> (Vec<u8>, JwtIssuer) {
    let der = generate_ed25519_pkcs8();
    let issuer = JwtIssuer::ed25519(&der, settings()).unwrap();
    (der, issuer)
}

fn payload_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// What a resource server does with nothing but the published JWKS: pick the key by
/// `kid`, check signature, issuer, audience and expiry with the library's own clock.
fn verify_with_jwks(
    jwks: &Value,
    token: &str,
    audience: &str,
) -> jsonwebtoken::errors::Result<Value> {
    let set: JwkSet = serde_json::from_value(jwks.clone()).unwrap();
    let header = jsonwebtoken::decode_header(token)?;
    let jwk = set
        .find(header.kid.as_deref().unwrap())
        .ok_or(jsonwebtoken::errors::ErrorKind::InvalidKeyFormat)?;
    let key = DecodingKey::from_jwk(jwk)?;
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&["https://auth.example.com"]);
    validation.set_audience(&[audience]);
    Ok(jsonwebtoken::decode::<Value>(token, &key, &validation)?.claims)
}

#[test]
fn an_eddsa_token_carries_the_claims_and_verifies() {
    let (_, issuer) = ed25519();
    let token = issuer.issue(&subject(), t0()).unwrap();
    assert_eq!(token.expires_in, 900);
    assert_eq!(issuer.verify(&token.token, t0()), Ok(subject()));

    let header = jsonwebtoken::decode_header(&token.token).unwrap();
    assert_eq!(header.alg, Algorithm::EdDSA);
    assert_eq!(header.kid.as_deref(), Some(issuer.kid()));

    let claims = payload_of(&token.token);
    assert_eq!(claims["iss"], "https://auth.example.com");
    assert_eq!(claims["sub"], "42");
    assert_eq!(claims["aud"], "shop-api");
    assert_eq!(claims["tenant"], "default");
    assert_eq!(claims["appid"], "wx4f4bc4dec97d474b");
    assert_eq!(claims["sid"], "0f1e2d3c4b5a69788796a5b4c3d2e1f0");
    assert_eq!(claims["iat"], t0().timestamp());
    assert_eq!(claims["exp"], t0().timestamp() + 900);
    assert!(uuid::Uuid::parse_str(claims["jti"].as_str().unwrap()).is_ok());
}

#[test]
fn every_token_has_its_own_jti() {
    let (_, issuer) = ed25519();
    let a = issuer.issue(&subject(), t0()).unwrap();
    let b = issuer.issue(&subject(), t0()).unwrap();
    assert_ne!(payload_of(&a.token)["jti"], payload_of(&b.token)["jti"]);
}

#[test]
fn a_token_without_app_round_trips() {
    let (_, issuer) = ed25519();
    let subject = TokenSubject {
        appid: None,
        ..subject()
    };
    let token = issuer.issue(&subject, t0()).unwrap();
    assert!(payload_of(&token.token).get("appid").is_none());
    assert_eq!(issuer.verify(&token.token, t0()), Ok(subject));
}

#[test]
fn the_jwks_publishes_the_ed25519_public_key() {
    let (_, issuer) = ed25519();
    let jwks = issuer.jwks();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let key = &keys[0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["alg"], "EdDSA");
    assert_eq!(key["use"], "sig");
    assert_eq!(key["kid"], issuer.kid());
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(key["x"].as_str().unwrap())
            .unwrap()
            .len(),
        32
    );
    // Public only: no private member `d`.
    assert!(key.get("d").is_none());
}

#[test]
fn another_service_verifies_an_eddsa_token_with_the_jwks_alone() {
    let (_, issuer) = ed25519();
    // The JWKS checker uses the real clock: issue now.
    let token = issuer.issue(&subject(), Utc::now()).unwrap();
    let claims = verify_with_jwks(&issuer.jwks(), &token.token, "shop-api").unwrap();
    assert_eq!(claims["sub"], "42");

    // Through the JWKS, too, another key's token and another audience are refused.
    let (_, other) = ed25519();
    let foreign = other.issue(&subject(), Utc::now()).unwrap();
    assert!(verify_with_jwks(&issuer.jwks(), &foreign.token, "shop-api").is_err());
    assert!(verify_with_jwks(&issuer.jwks(), &token.token, "other-api").is_err());
    let old = issuer
        .issue(&subject(), Utc::now() - Duration::hours(2))
        .unwrap();
    assert!(verify_with_jwks(&issuer.jwks(), &old.token, "shop-api").is_err());
}

#[test]
fn another_service_verifies_an_rs256_token_with_the_jwks_alone() {
    let issuer = JwtIssuer::rs256_pem(RSA_PKCS8, settings()).unwrap();
    assert_eq!(issuer.algorithm(), JwtAlgorithm::Rs256);
    let jwks = issuer.jwks();
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "RSA");
    assert_eq!(key["alg"], "RS256");
    assert_eq!(key["use"], "sig");
    assert_eq!(key["e"], "AQAB");
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(key["n"].as_str().unwrap())
            .unwrap()
            .len(),
        256
    );
    assert!(key.get("d").is_none());

    let token = issuer.issue(&subject(), Utc::now()).unwrap();
    assert_eq!(
        jsonwebtoken::decode_header(&token.token).unwrap().alg,
        Algorithm::RS256
    );
    let claims = verify_with_jwks(&jwks, &token.token, "shop-api").unwrap();
    assert_eq!(claims["tenant"], "default");
    assert_eq!(issuer.verify(&token.token, Utc::now()), Ok(subject()));

    // An EdDSA token is not accepted by the RSA issuer, nor the other way round.
    let (_, ed) = ed25519();
    let ed_token = ed.issue(&subject(), Utc::now()).unwrap();
    assert_eq!(
        issuer.verify(&ed_token.token, Utc::now()),
        Err(AccessTokenError::Invalid)
    );
    assert_eq!(
        ed.verify(&token.token, Utc::now()),
        Err(AccessTokenError::Invalid)
    );
}

#[test]
fn pkcs1_and_pkcs8_pem_of_one_key_are_the_same_issuer() {
    let pkcs8 = JwtIssuer::rs256_pem(RSA_PKCS8, settings()).unwrap();
    let pkcs1 = JwtIssuer::rs256_pem(RSA_PKCS1, settings()).unwrap();
    assert_eq!(pkcs8.kid(), pkcs1.kid());
    assert_eq!(pkcs8.jwks(), pkcs1.jwks());
    let token = pkcs1.issue(&subject(), t0()).unwrap();
    assert_eq!(pkcs8.verify(&token.token, t0()), Ok(subject()));
}

#[test]
fn the_kid_follows_the_key() {
    let der = generate_ed25519_pkcs8();
    let a = JwtIssuer::ed25519(&der, settings()).unwrap();
    let again = JwtIssuer::ed25519(&der, settings()).unwrap();
    let (_, other) = ed25519();
    assert_eq!(a.kid(), again.kid());
    assert_ne!(a.kid(), other.kid());
    assert_ne!(der, generate_ed25519_pkcs8());
}

#[test]
fn the_kid_is_the_rfc_7638_thumbprint() {
    // RFC 8037 appendix A.1's private key, as PKCS#8 v1 DER (fixed prefix + seed);
    // A.2 gives its public x and A.3 its thumbprint.
    let seed =
        hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60").unwrap();
    let mut der = hex::decode("302e020100300506032b657004220420").unwrap();
    der.extend_from_slice(&seed);
    let issuer = JwtIssuer::ed25519(&der, settings()).unwrap();
    assert_eq!(issuer.kid(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    assert_eq!(
        issuer.jwks()["keys"][0]["x"],
        "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
    );
}

#[test]
fn a_token_signed_by_another_key_is_invalid() {
    let (_, issuer) = ed25519();
    let (_, other) = ed25519();
    let token = other.issue(&subject(), t0()).unwrap();
    assert_eq!(
        issuer.verify(&token.token, t0()),
        Err(AccessTokenError::Invalid)
    );
}

#[test]
fn an_expired_token_is_expired_after_a_few_seconds_of_leeway() {
    let (_, issuer) = ed25519();
    let token = issuer.issue(&subject(), t0()).unwrap();
    let exp = t0() + Duration::minutes(15);
    assert_eq!(
        issuer.verify(&token.token, exp - Duration::seconds(1)),
        Ok(subject())
    );
    assert_eq!(
        issuer.verify(&token.token, exp + Duration::seconds(4)),
        Ok(subject())
    );
    assert_eq!(
        issuer.verify(&token.token, exp + Duration::seconds(5)),
        Err(AccessTokenError::Expired)
    );
    assert_eq!(
        issuer.verify(&token.token, exp + Duration::days(1)),
        Err(AccessTokenError::Expired)
    );
}

#[test]
fn a_token_from_the_future_is_invalid() {
    let (_, issuer) = ed25519();
    let token = issuer.issue(&subject(), t0()).unwrap();
    assert_eq!(
        issuer.verify(&token.token, t0() - Duration::minutes(1)),
        Err(AccessTokenError::Invalid)
    );
    assert_eq!(
        issuer.verify(&token.token, t0() - Duration::seconds(5)),
        Ok(subject())
    );
}

#[test]
fn a_wrong_audience_or_issuer_is_invalid() {
    let der = generate_ed25519_pkcs8();
    let issuer = JwtIssuer::ed25519(&der, settings()).unwrap();
    let other_audience = JwtIssuer::ed25519(
        &der,
        JwtSettings {
            audience: "admin-api".into(),
            ..settings()
        },
    )
    .unwrap();
    let other_issuer = JwtIssuer::ed25519(
        &der,
        JwtSettings {
            issuer: "https://evil.example.com".into(),
            ..settings()
        },
    )
    .unwrap();
    for token in [
        other_audience.issue(&subject(), t0()).unwrap(),
        other_issuer.issue(&subject(), t0()).unwrap(),
    ] {
        assert_eq!(
            issuer.verify(&token.token, t0()),
            Err(AccessTokenError::Invalid)
        );
    }
}

/// Signs arbitrary claims with the issuer's own key, as a bug or a leaked key would.
fn sign_raw(der: &[u8], kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(der)).unwrap()
}

fn raw_claims() -> Value {
    json!({
        "iss": "https://auth.example.com", "sub": "42", "aud": "shop-api",
        "tenant": "default", "appid": "wx4f4bc4dec97d474b", "jti": "x",
        "sid": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        "iat": t0().timestamp(), "exp": t0().timestamp() + 900,
    })
}

#[test]
fn validly_signed_but_bad_claims_are_invalid() {
    let (der, issuer) = ed25519();
    // The crafted baseline verifies: only the mutation below makes each case fail.
    assert_eq!(
        issuer.verify(&sign_raw(&der, issuer.kid(), &raw_claims()), t0()),
        Ok(subject())
    );
    let mutations: Vec<(&str, Value)> = vec![
        ("sub", json!("alice")),
        ("sub", json!("0")),
        ("sub", json!(42)),
        ("tenant", json!("no spaces allowed")),
        ("appid", json!("not-an-appid")),
        ("sid", json!("not a session")),
        ("sid", json!("")),
        ("sid", json!(7)),
        ("exp", json!("tomorrow")),
        ("aud", json!(["admin-api"])),
    ];
    for (field, value) in mutations {
        let mut claims = raw_claims();
        claims[field] = value.clone();
        let token = sign_raw(&der, issuer.kid(), &claims);
        assert_eq!(
            issuer.verify(&token, t0()),
            Err(AccessTokenError::Invalid),
            "{field} = {value}"
        );
    }
    // A token from before sessions were named (no `sid`) is refused: its session
    // cannot be checked for revocation.
    for field in ["sub", "exp", "iss", "aud", "tenant", "sid"] {
        let mut claims = raw_claims();
        claims.as_object_mut().unwrap().remove(field);
        let token = sign_raw(&der, issuer.kid(), &claims);
        assert_eq!(
            issuer.verify(&token, t0()),
            Err(AccessTokenError::Invalid),
            "without {field}"
        );
    }
}

#[test]
fn garbage_and_tampering_are_invalid() {
    let (_, issuer) = ed25519();
    let token = issuer.issue(&subject(), t0()).unwrap().token;
    let parts: Vec<&str> = token.split('.').collect();

    let mut claims = payload_of(&token);
    claims["sub"] = json!("1");
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    );
    let unsigned_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let alg_none = format!("{unsigned_header}.{}.", parts[1]);
    // Algorithm confusion: HS256 keyed with the public key.
    let x = issuer.jwks()["keys"][0]["x"].as_str().unwrap().to_owned();
    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &payload_of(&token),
        &EncodingKey::from_secret(&URL_SAFE_NO_PAD.decode(x).unwrap()),
    )
    .unwrap();

    for bad in [
        String::new(),
        "not a token".into(),
        "a.b.c".into(),
        format!("{}.{}", parts[0], parts[1]),
        tampered,
        alg_none,
        hs256,
    ] {
        assert_eq!(
            issuer.verify(&bad, t0()),
            Err(AccessTokenError::Invalid),
            "{bad}"
        );
    }
}

#[test]
fn bad_keys_and_settings_are_refused_with_a_reason() {
    assert_eq!(
        JwtIssuer::ed25519(b"not a key", settings()).unwrap_err(),
        JwtKeyError::InvalidEd25519Key
    );
    assert_eq!(
        JwtIssuer::ed25519(&[], settings()).unwrap_err(),
        JwtKeyError::InvalidEd25519Key
    );
    assert_eq!(
        JwtIssuer::rs256_pem(b"not pem", settings()).unwrap_err(),
        JwtKeyError::NotPem
    );
    let cert_label = String::from_utf8(RSA_PKCS8.to_vec())
        .unwrap()
        .replace("PRIVATE KEY", "CERTIFICATE");
    assert!(matches!(
        JwtIssuer::rs256_pem(cert_label.as_bytes(), settings()),
        Err(JwtKeyError::InvalidRsaKey(reason)) if reason.contains("CERTIFICATE")
    ));
    assert!(matches!(
        JwtIssuer::rs256_pem(RSA_1024, settings()),
        Err(JwtKeyError::InvalidRsaKey(_))
    ));
    // An Ed25519 key in PKCS#8 PEM is not an RSA key.
    let ed_pem = pem::encode(&pem::Pem::new("PRIVATE KEY", generate_ed25519_pkcs8()));
    assert!(matches!(
        JwtIssuer::rs256_pem(ed_pem.as_bytes(), settings()),
        Err(JwtKeyError::InvalidRsaKey(_))
    ));
    // An RSA key is not an Ed25519 key.
    let rsa_der = pem::parse(RSA_PKCS8).unwrap().into_contents();
    assert_eq!(
        JwtIssuer::ed25519(&rsa_der, settings()).unwrap_err(),
        JwtKeyError::InvalidEd25519Key
    );

    let der = generate_ed25519_pkcs8();
    let cases = [
        (
            JwtSettings {
                issuer: " ".into(),
                ..settings()
            },
            JwtKeyError::EmptySetting("issuer"),
        ),
        (
            JwtSettings {
                audience: String::new(),
                ..settings()
            },
            JwtKeyError::EmptySetting("audience"),
        ),
        (
            JwtSettings {
                access_ttl: Duration::zero(),
                ..settings()
            },
            JwtKeyError::NonPositiveTtl,
        ),
        (
            JwtSettings {
                access_ttl: Duration::seconds(-60),
                ..settings()
            },
            JwtKeyError::NonPositiveTtl,
        ),
    ];
    for (bad, expected) in cases {
        assert_eq!(JwtIssuer::ed25519(&der, bad.clone()).unwrap_err(), expected);
        assert_eq!(JwtIssuer::rs256_pem(RSA_PKCS8, bad).unwrap_err(), expected);
    }
}

#[test]
fn debug_shows_neither_key_nor_token() {
    let (der, issuer) = ed25519();
    let rsa = JwtIssuer::rs256_pem(RSA_PKCS8, settings()).unwrap();
    let token = issuer.issue(&subject(), t0()).unwrap();
    let rsa_der = pem::parse(RSA_PKCS8).unwrap().into_contents();
    for debug in [
        format!("{issuer:?}"),
        format!("{rsa:?}"),
        format!("{token:?}"),
        format!("{:?}", issuer.settings()),
    ] {
        assert!(!debug.contains(&token.token), "{debug}");
        for secret in [&der[..], &rsa_der[..]] {
            assert!(!debug.contains(&hex::encode(secret)), "{debug}");
            assert!(!debug.contains(&URL_SAFE_NO_PAD.encode(secret)), "{debug}");
            // Debug of a byte slice, e.g. `[48, 46, ...`: the first 8 bytes of the key.
            let bytes = format!("{:?}", &secret[..8]);
            assert!(!debug.contains(bytes.trim_end_matches(']')), "{debug}");
        }
        assert!(!debug.contains("BEGIN"), "{debug}");
    }
    assert!(format!("{issuer:?}").contains(issuer.kid()));
}

#[test]
fn an_ed25519_pem_from_openssl_works_and_other_pems_do_not() {
    let issuer = JwtIssuer::ed25519_pem(ED25519_OPENSSL, settings()).unwrap();
    assert_eq!(issuer.algorithm(), JwtAlgorithm::EdDsa);
    let token = issuer.issue(&subject(), Utc::now()).unwrap();
    assert!(verify_with_jwks(&issuer.jwks(), &token.token, "shop-api").is_ok());
    // The same key as DER gives the same issuer.
    let der = pem::parse(ED25519_OPENSSL).unwrap().into_contents();
    let from_der = JwtIssuer::ed25519(&der, settings()).unwrap();
    assert_eq!(from_der.kid(), issuer.kid());

    assert_eq!(
        JwtIssuer::ed25519_pem(b"not pem", settings()).unwrap_err(),
        JwtKeyError::NotPem
    );
    assert_eq!(
        JwtIssuer::ed25519_pem(RSA_PKCS8, settings()).unwrap_err(),
        JwtKeyError::InvalidEd25519Key
    );
    assert_eq!(
        JwtIssuer::ed25519_pem(RSA_PKCS1, settings()).unwrap_err(),
        JwtKeyError::InvalidEd25519Key
    );
}
