//! Access tokens: JWTs signed with Ed25519 (EdDSA) by default, or RS256 for gateways
//! that only speak RSA, with the public key published as a JWK set so that other
//! services verify tokens without calling miniauth.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use miniauth_application::ports::{
    AccessToken, AccessTokenError, PortError, SessionId, TokenIssuer, TokenSubject,
    VerifiedAccessToken,
};
use miniauth_domain::{AppId, TenantId, UserId};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair, RsaKeyPair, RsaPublicKeyComponents};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use thiserror::Error;
use uuid::Uuid;

/// Clock skew tolerated between miniauth and the services verifying its tokens.
const LEEWAY_SECS: i64 = 5;

/// Who issues tokens, for whom, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSettings {
    /// The `iss` claim, e.g. `https://auth.example.com`.
    pub issuer: String,
    /// The `aud` claim: the services the tokens are meant for.
    pub audience: String,
    /// How long an access token lives (`exp - iat`).
    pub access_ttl: Duration,
}

/// The signature algorithm of a [`JwtIssuer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlgorithm {
    /// Ed25519 (`alg: EdDSA`), the default.
    EdDsa,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (`alg: RS256`).
    Rs256,
}

/// Why a signing key or the settings were refused (at start-up).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum JwtKeyError {
    /// Not a PKCS#8 DER Ed25519 private key.
    #[error("the Ed25519 key is not a valid PKCS#8 DER private key")]
    InvalidEd25519Key,
    /// Not a PEM document at all.
    #[error("the key is not PEM")]
    NotPem,
    /// A PEM document, but not an RSA private key ring accepts.
    #[error("the RSA key is not a usable RSA private key (PKCS#1 or PKCS#8 PEM, 2048 to 4096 bits): {0}")]
    InvalidRsaKey(String),
    /// The issuer or audience is empty.
    #[error("the JWT {0} must not be empty")]
    EmptySetting(&'static str),
    /// The access token lifetime is zero or negative.
    #[error("the access token lifetime must be positive")]
    NonPositiveTtl,
}

/// The claims of an access token.
#[derive(Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: String,
    tenant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    appid: Option<String>,
    /// The login session (refresh-token family). Tokens from before sessions were
    /// named lack it and are refused: they expired within `access_ttl` of the upgrade.
    #[serde(default)]
    sid: Option<String>,
    jti: String,
    iat: i64,
    exp: i64,
}

/// Signs and verifies access tokens, and publishes the public key as a JWKS.
pub struct JwtIssuer {
    algorithm: JwtAlgorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    /// The public key as a JWK (without `kid`, `alg`, `use`).
    public_jwk: Value,
    settings: JwtSettings,
}

impl JwtIssuer {
    /// An EdDSA issuer from an Ed25519 private key in PKCS#8 DER (v1 or v2), such as
    /// [`generate_ed25519_pkcs8`] makes or `openssl genpkey -algorithm ed25519
    /// -outform DER` writes.
    pub fn ed25519(pkcs8_der: &[u8], settings: JwtSettings) -> Result<Self, JwtKeyError> {
        check_settings(&settings)?;
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8_der)
            .map_err(|_| JwtKeyError::InvalidEd25519Key)?;
        let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        // RFC 7638 thumbprint input: required members only, sorted, no whitespace.
        let thumbprint_input = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
        Ok(Self {
            algorithm: JwtAlgorithm::EdDsa,
            encoding: EncodingKey::from_ed_der(pkcs8_der),
            decoding: DecodingKey::from_ed_der(pair.public_key().as_ref()),
            kid: thumbprint(&thumbprint_input),
            public_jwk: json!({ "kty": "OKP", "crv": "Ed25519", "x": x }),
            settings,
        })
    }

    /// An EdDSA issuer from an Ed25519 private key in PKCS#8 PEM (`BEGIN PRIVATE KEY`),
    /// as `openssl genpkey -algorithm ed25519` writes it.
    pub fn ed25519_pem(pem: &[u8], settings: JwtSettings) -> Result<Self, JwtKeyError> {
        let document = pem::parse(pem).map_err(|_| JwtKeyError::NotPem)?;
        if document.tag() != "PRIVATE KEY" {
            return Err(JwtKeyError::InvalidEd25519Key);
        }
        Self::ed25519(document.contents(), settings)
    }

    /// An RS256 issuer from an RSA private key in PEM, either PKCS#1
    /// (`BEGIN RSA PRIVATE KEY`) or PKCS#8 (`BEGIN PRIVATE KEY`), 2048 to 4096 bits.
    pub fn rs256_pem(pem: &[u8], settings: JwtSettings) -> Result<Self, JwtKeyError> {
        check_settings(&settings)?;
        let document = pem::parse(pem).map_err(|_| JwtKeyError::NotPem)?;
        let pair = match document.tag() {
            "RSA PRIVATE KEY" => RsaKeyPair::from_der(document.contents()),
            "PRIVATE KEY" => RsaKeyPair::from_pkcs8(document.contents()),
            other => {
                return Err(JwtKeyError::InvalidRsaKey(format!(
                    "unexpected PEM label `{other}`"
                )))
            }
        }
        .map_err(|rejected| JwtKeyError::InvalidRsaKey(rejected.to_string()))?;
        let public = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
        let n = URL_SAFE_NO_PAD.encode(&public.n);
        let e = URL_SAFE_NO_PAD.encode(&public.e);
        let encoding = EncodingKey::from_rsa_pem(pem)
            .map_err(|error| JwtKeyError::InvalidRsaKey(error.to_string()))?;
        let thumbprint_input = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
        Ok(Self {
            algorithm: JwtAlgorithm::Rs256,
            encoding,
            decoding: DecodingKey::from_rsa_raw_components(&public.n, &public.e),
            kid: thumbprint(&thumbprint_input),
            public_jwk: json!({ "kty": "RSA", "n": n, "e": e }),
            settings,
        })
    }

    /// The key id in every token's header and in the JWKS: the RFC 7638 thumbprint
    /// (base64url SHA-256) of the public key, so it changes exactly when the key does.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The signature algorithm.
    pub fn algorithm(&self) -> JwtAlgorithm {
        self.algorithm
    }

    /// The issuer, audience and lifetime.
    pub fn settings(&self) -> &JwtSettings {
        &self.settings
    }

    /// The public JWK set to serve at `/.well-known/jwks.json`.
    pub fn jwks(&self) -> Value {
        let mut key = self.public_jwk.clone();
        if let Value::Object(members) = &mut key {
            members.insert("kid".into(), Value::String(self.kid.clone()));
            members.insert(
                "alg".into(),
                Value::String(self.jwt_algorithm_name().into()),
            );
            members.insert("use".into(), Value::String("sig".into()));
        }
        json!({ "keys": [key] })
    }

    fn jwt_algorithm(&self) -> Algorithm {
        match self.algorithm {
            JwtAlgorithm::EdDsa => Algorithm::EdDSA,
            JwtAlgorithm::Rs256 => Algorithm::RS256,
        }
    }

    fn jwt_algorithm_name(&self) -> &'static str {
        match self.algorithm {
            JwtAlgorithm::EdDsa => "EdDSA",
            JwtAlgorithm::Rs256 => "RS256",
        }
    }
}

impl fmt::Debug for JwtIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtIssuer")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl TokenIssuer for JwtIssuer {
    fn issue(&self, subject: &TokenSubject, now: DateTime<Utc>) -> Result<AccessToken, PortError> {
        let iat = now.timestamp();
        let ttl = self.settings.access_ttl.num_seconds();
        let claims = Claims {
            iss: self.settings.issuer.clone(),
            sub: subject.user_id.to_string(),
            aud: self.settings.audience.clone(),
            tenant: subject.tenant.as_str().to_owned(),
            appid: subject
                .appid
                .as_ref()
                .map(|appid| appid.as_str().to_owned()),
            sid: Some(subject.session.as_str().to_owned()),
            jti: Uuid::new_v4().to_string(),
            iat,
            exp: iat + ttl,
        };
        let mut header = Header::new(self.jwt_algorithm());
        header.kid = Some(self.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|error| PortError::internal("signing an access token", error))?;
        Ok(AccessToken {
            token,
            expires_in: u64::try_from(ttl).unwrap_or(0),
        })
    }

    fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<TokenSubject, AccessTokenError> {
        self.inspect(token, now).map(|verified| verified.subject)
    }

    fn inspect(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<VerifiedAccessToken, AccessTokenError> {
        let mut validation = Validation::new(self.jwt_algorithm());
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        // Time is checked below against the injected `now`, not the library's clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|_| AccessTokenError::Invalid)?
            .claims;
        let now = now.timestamp();
        if claims.iat > now + LEEWAY_SECS {
            return Err(AccessTokenError::Invalid);
        }
        if now >= claims.exp + LEEWAY_SECS {
            return Err(AccessTokenError::Expired);
        }
        let at = |secs: i64| DateTime::from_timestamp(secs, 0).ok_or(AccessTokenError::Invalid);
        Ok(VerifiedAccessToken {
            subject: TokenSubject {
                user_id: UserId::parse(&claims.sub).map_err(|_| AccessTokenError::Invalid)?,
                tenant: TenantId::parse(&claims.tenant).map_err(|_| AccessTokenError::Invalid)?,
                appid: claims
                    .appid
                    .as_deref()
                    .map(AppId::parse)
                    .transpose()
                    .map_err(|_| AccessTokenError::Invalid)?,
                session: claims
                    .sid
                    .as_deref()
                    .map(SessionId::parse)
                    .ok_or(AccessTokenError::Invalid)?
                    .map_err(|_| AccessTokenError::Invalid)?,
            },
            issued_at: at(claims.iat)?,
            expires_at: at(claims.exp)?,
            issuer: claims.iss,
            audience: claims.aud,
            token_id: claims.jti,
        })
    }
}

/// A fresh random Ed25519 private key in PKCS#8 v2 DER, for [`JwtIssuer::ed25519`]
/// when no key is configured (the binary stores it in its data directory).
pub fn generate_ed25519_pkcs8() -> Vec<u8> {
    // Only fails when the OS has no randomness, in which case nothing can run safely.
    Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .expect("the operating system's random generator is available")
        .as_ref()
        .to_vec()
}

fn check_settings(settings: &JwtSettings) -> Result<(), JwtKeyError> {
    if settings.issuer.trim().is_empty() {
        return Err(JwtKeyError::EmptySetting("issuer"));
    }
    if settings.audience.trim().is_empty() {
        return Err(JwtKeyError::EmptySetting("audience"));
    }
    if settings.access_ttl.num_seconds() <= 0 {
        return Err(JwtKeyError::NonPositiveTtl);
    }
    Ok(())
}

fn thumbprint(canonical_jwk: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical_jwk.as_bytes()))
}
