//! WeChat's payload crypto, as pure functions: AES-128-CBC with strict PKCS#7, the
//! rawData signature, the checksession HMAC and the watermark check.

use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Deserializer};
use sha1::{Digest, Sha1};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::error::PayloadError;
use crate::ids::AppId;
use crate::session_key::SessionKey;

type Aes128CbcDec = cbc::Decryptor<aes::Aes128>;
type Aes128CbcEnc = cbc::Encryptor<aes::Aes128>;

/// Decodes standard base64, first repairing `+` that URL decoding turned into spaces
/// (the most common front-end bug) and trimming surrounding whitespace.
pub fn decode_base64(field: &'static str, text: &str) -> Result<Vec<u8>, PayloadError> {
    // Every space is a `+` that URL decoding damaged, even a leading or trailing one:
    // repair before trimming, or the trim would eat it.
    let repaired = text.replace(' ', "+").trim().to_owned();
    STANDARD
        .decode(repaired.as_bytes())
        .map_err(|_| PayloadError::NotBase64 { field })
}

fn decode_iv(iv: &str) -> Result<[u8; 16], PayloadError> {
    let bytes = decode_base64("iv", iv)?;
    bytes.try_into().map_err(|_| PayloadError::WrongLength {
        field: "iv",
        reason: "expected 24 base64 characters (16 bytes)",
    })
}

/// A legacy encrypted payload (`encryptedData` + `iv`) whose shape was checked: base64
/// (spaces repaired), a 16-byte iv, a non-empty multiple of 16 bytes of ciphertext.
/// Nothing about it depends on a key, so shape errors may be told to the client
/// precisely; everything after decryption may not (see [`decrypt`](Self::decrypt)).
#[derive(Clone, PartialEq, Eq)]
pub struct EncryptedPayload {
    iv: [u8; 16],
    data: Vec<u8>,
}

impl EncryptedPayload {
    /// Checks the shape of `encryptedData` and `iv`.
    pub fn parse(encrypted_data: &str, iv: &str) -> Result<Self, PayloadError> {
        let iv = decode_iv(iv)?;
        let data = decode_base64("encrypted_data", encrypted_data)?;
        if data.is_empty() || data.len() % 16 != 0 {
            return Err(PayloadError::WrongLength {
                field: "encrypted_data",
                reason: "expected a non-empty multiple of 16 bytes",
            });
        }
        Ok(Self { iv, data })
    }

    /// Decrypts under the session key, checking the PKCS#7 padding strictly: bad padding
    /// means the payload was not encrypted under this key (or was tampered with).
    ///
    /// The scheme has no MAC: whoever can tell a padding failure from any later failure
    /// (JSON, watermark, openid) holds a CBC padding oracle and can forge any plaintext.
    /// The detailed error is for the server log only; callers answer one code for all.
    pub fn decrypt(&self, key: &SessionKey) -> Result<Vec<u8>, PayloadError> {
        let mut data = self.data.clone();
        let plain_len = Aes128CbcDec::new(key.expose_bytes().into(), &self.iv.into())
            .decrypt_padded_mut::<Pkcs7>(&mut data)
            .map_err(|_| PayloadError::SessionKeyMismatch)?
            .len();
        data.truncate(plain_len);
        Ok(data)
    }
}

impl std::fmt::Debug for EncryptedPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EncryptedPayload({} bytes)", self.data.len())
    }
}

/// Decrypts `encryptedData` under the session key and `iv`: [`EncryptedPayload::parse`]
/// then [`EncryptedPayload::decrypt`].
pub fn decrypt_payload(
    key: &SessionKey,
    encrypted_data: &str,
    iv: &str,
) -> Result<Vec<u8>, PayloadError> {
    EncryptedPayload::parse(encrypted_data, iv)?.decrypt(key)
}

/// Encrypts `plaintext` as WeChat does; the simulator and the tests use it.
/// Returns `encryptedData` in base64.
pub fn encrypt_payload(key: &SessionKey, iv: &[u8; 16], plaintext: &[u8]) -> String {
    let ciphertext = Aes128CbcEnc::new(key.expose_bytes().into(), iv.into())
        .encrypt_padded_vec_mut::<Pkcs7>(plaintext);
    STANDARD.encode(ciphertext)
}

/// Encodes bytes as standard base64 (for ivs made by the simulator and the tests).
pub fn encode_base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// hex(sha1(rawData + session_key)), the `signature` WeChat sends with user info.
pub fn raw_data_signature(raw_data: &str, key: &SessionKey) -> String {
    let mut hasher = Sha1::new();
    hasher.update(raw_data.as_bytes());
    hasher.update(key.expose_text().as_bytes());
    hex::encode(hasher.finalize())
}

/// Checks `signature` against rawData and the session key, in constant time.
pub fn verify_raw_data_signature(
    raw_data: &str,
    signature: &str,
    key: &SessionKey,
) -> Result<(), PayloadError> {
    let expected = raw_data_signature(raw_data, key);
    let given = signature.trim().to_ascii_lowercase();
    if expected.as_bytes().ct_eq(given.as_bytes()).into() {
        Ok(())
    } else {
        Err(PayloadError::SignatureMismatch)
    }
}

/// hex(sha256) over a purpose label and parts, each followed by a NUL: a name for a
/// credential (a session key, a ticket) that reveals nothing of it, for counting its
/// uses. The label keeps the names of different purposes apart.
pub fn fingerprint(label: &str, parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(label.as_bytes());
    hasher.update(b"\0");
    for part in parts {
        hasher.update(part);
        hasher.update(b"\0");
    }
    hex::encode(hasher.finalize())
}

/// hex(HMAC-SHA256(key = the session key's base64 text, message)): the signature of
/// checksession and resetusersessionkey (message = "").
pub fn session_hmac(key: &SessionKey, message: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.expose_text().as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The `watermark` object of a decrypted payload.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Watermark {
    /// The mini program the payload was made for.
    pub appid: String,
    /// When WeChat made it, in Unix seconds.
    pub timestamp: i64,
}

/// How strictly watermarks are checked. The appid is always checked; the age only
/// when `max_age` is set (off by default: client clocks and WeChat's caching vary).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatermarkPolicy {
    /// The oldest watermark accepted, if any.
    pub max_age: Option<Duration>,
}

impl Watermark {
    /// Checks that the payload was made for `appid` and, if the policy says so, recently.
    pub fn check(
        &self,
        appid: &AppId,
        policy: WatermarkPolicy,
        now: DateTime<Utc>,
    ) -> Result<(), PayloadError> {
        if self.appid != appid.as_str() {
            return Err(PayloadError::WatermarkAppMismatch);
        }
        if let Some(max_age) = policy.max_age {
            let made = DateTime::<Utc>::from_timestamp(self.timestamp, 0)
                .ok_or(PayloadError::WatermarkExpired)?;
            if now - made > max_age {
                return Err(PayloadError::WatermarkExpired);
            }
        }
        Ok(())
    }
}

/// The decrypted legacy user-info payload (`getUserInfo` / `getUserProfile`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserInfoPayload {
    /// The user's openid, when WeChat includes it.
    #[serde(default)]
    pub open_id: Option<String>,
    /// The unionid, when the app is bound to an Open Platform account.
    #[serde(default)]
    pub union_id: Option<String>,
    /// The nickname ("微信用户" since WeChat anonymised the API).
    #[serde(default)]
    pub nick_name: String,
    /// The avatar URL.
    #[serde(default)]
    pub avatar_url: String,
    /// Which app and when.
    pub watermark: Watermark,
}

/// The decrypted legacy phone payload (`getPhoneNumber` before base library 2.21.2).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhonePayload {
    /// The number with country code, as WeChat formats it.
    #[serde(default)]
    pub phone_number: String,
    /// The number without country code.
    pub pure_phone_number: String,
    /// The country calling code: WeChat sends a number or a string.
    #[serde(deserialize_with = "string_or_number")]
    pub country_code: String,
    /// Which app and when.
    pub watermark: Watermark,
}

/// Accepts a JSON string or number and yields its text (`"86"` or `86`).
pub fn string_or_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Text(String),
        Number(i64),
    }
    Ok(match Either::deserialize(deserializer)? {
        Either::Text(text) => text,
        Either::Number(number) => number.to_string(),
    })
}

fn parse_json<T: for<'de> Deserialize<'de>>(plaintext: &[u8]) -> Result<T, PayloadError> {
    serde_json::from_slice(plaintext).map_err(|e| {
        // serde's message may quote the content ("invalid type: integer `13800138000`"):
        // keep only the kind of failure and where, for the operator's log.
        PayloadError::NotJson(format!(
            "{:?} error at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        ))
    })
}

/// Decrypts a user-info payload, parses it and checks its watermark.
pub fn open_user_info(
    key: &SessionKey,
    encrypted: &EncryptedPayload,
    appid: &AppId,
    policy: WatermarkPolicy,
    now: DateTime<Utc>,
) -> Result<UserInfoPayload, PayloadError> {
    let payload: UserInfoPayload = parse_json(&encrypted.decrypt(key)?)?;
    payload.watermark.check(appid, policy, now)?;
    Ok(payload)
}

/// Decrypts a phone payload, parses it and checks its watermark.
pub fn open_phone(
    key: &SessionKey,
    encrypted: &EncryptedPayload,
    appid: &AppId,
    policy: WatermarkPolicy,
    now: DateTime<Utc>,
) -> Result<PhonePayload, PayloadError> {
    let payload: PhonePayload = parse_json(&encrypted.decrypt(key)?)?;
    payload.watermark.check(appid, policy, now)?;
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE_APPID: &str = "wx4f4bc4dec97d474b";
    const SAMPLE_KEY: &str = "tiihtNczf5v6AKRyjwEUhQ==";
    const SAMPLE_IV: &str = "r7BXXKkLb8qrSNn05n0qiA==";
    const SAMPLE_DATA: &str = "CiyLU1Aw2KjvrjMdj8YKliAjtP4gsMZMQmRzooG2xrDcvSnxIMXFufNstNGTyaGS9uT5geRa0W4oTOb1WT7fJlAC+oNPdbB+3hVbJSRgv+4lGOETKUQz6OYStslQ142dNCuabNPGBzlooOmB231qMM85d2/fV6ChevvXvQP8Hkue1poOFtnEtpyxVLW1zAo6/1Xx1COxFvrc2d7UL/lmHInNlxuacJXwu0fjpXfz/YqYzBIBzD6WUfTIF9GRHpOn/Hz7saL8xz+W//FRAUid1OksQaQx4CMs8LOddcQhULW4ucetDf96JcR3g0gfRK4PC7E/r7Z6xNrXd2UIeorGj5Ef7b1pJAYB6Y5anaHqZ9J6nKEBvB4DnNLIVWSgARns/8wR2SiRS7MNACwTyrGvt9ts8p12PKFdlqYTopNHR1Vf7XjfhQlVsAJdNiKdYmYVoKlaRv85IfVunYzO0IKXsyl7JCUjCpoG20f0a04COwfneQAGGwd5oa+T8yO5hzuyDb/XcxxmK01EpqOyuxINew==";
    const SAMPLE_PLAIN: &str = r#"{"openId":"oGZUI0egBJY1zhBYw2KhdUfwVJJE","nickName":"Band","gender":1,"language":"zh_CN","city":"Guangzhou","province":"Guangdong","country":"CN","avatarUrl":"http://wx.qlogo.cn/mmopen/vi_32/aSKcBBPpibyKNicHNTMM0qJVh8Kjgiak2AHWr8MHM4WgMEm7GFhsf8OYrySdbvAMvTsw3mo8ibKicsnfN5pRjl1p8HQ/0","unionId":"ocMvos6NjeKLIBqg5Mr9QjxrP1FA","watermark":{"timestamp":1477314187,"appid":"wx4f4bc4dec97d474b"}}"#;

    fn key() -> SessionKey {
        SessionKey::parse(SAMPLE_KEY).unwrap()
    }

    fn appid() -> AppId {
        AppId::parse(SAMPLE_APPID).unwrap()
    }

    fn now() -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_477_314_187 + 60, 0).unwrap()
    }

    #[test]
    fn official_sample_decrypts_byte_exact() {
        let plain = decrypt_payload(&key(), SAMPLE_DATA, SAMPLE_IV).unwrap();
        assert_eq!(plain, SAMPLE_PLAIN.as_bytes());
        assert_eq!(STANDARD.decode(SAMPLE_DATA).unwrap().len(), 400);
    }

    #[test]
    fn official_sample_opens_with_its_watermark() {
        let info = open_user_info(
            &key(),
            &EncryptedPayload::parse(SAMPLE_DATA, SAMPLE_IV).unwrap(),
            &appid(),
            WatermarkPolicy::default(),
            now(),
        )
        .unwrap();
        assert_eq!(
            info.open_id.as_deref(),
            Some("oGZUI0egBJY1zhBYw2KhdUfwVJJE")
        );
        assert_eq!(
            info.union_id.as_deref(),
            Some("ocMvos6NjeKLIBqg5Mr9QjxrP1FA")
        );
        assert_eq!(info.nick_name, "Band");
    }

    #[test]
    fn encrypt_reproduces_the_official_sample() {
        let iv: [u8; 16] = STANDARD.decode(SAMPLE_IV).unwrap().try_into().unwrap();
        assert_eq!(
            encrypt_payload(&key(), &iv, SAMPLE_PLAIN.as_bytes()),
            SAMPLE_DATA
        );
    }

    #[test]
    fn repairs_spaces_from_url_decoding() {
        let damaged = SAMPLE_DATA.replace('+', " ");
        assert_ne!(damaged, SAMPLE_DATA);
        let plain = decrypt_payload(&key(), &damaged, SAMPLE_IV).unwrap();
        assert_eq!(plain, SAMPLE_PLAIN.as_bytes());
    }

    #[test]
    fn repairs_a_leading_or_trailing_plus_turned_into_a_space() {
        // An iv whose base64 starts with `+`: 0xfb 0xef 0xbe … encodes as "++++…".
        let iv = [0xfbu8; 16];
        let iv_text = encode_base64(&iv);
        assert!(iv_text.starts_with('+'));
        let data = encrypt_payload(&key(), &iv, b"{\"a\":1}");
        let damaged = iv_text.replace('+', " ");
        assert_eq!(
            decrypt_payload(&key(), &data, &damaged).unwrap(),
            b"{\"a\":1}"
        );
        assert_eq!(
            decode_base64("iv", &format!("{damaged}\n")).unwrap(),
            iv.to_vec()
        );
    }

    #[test]
    fn a_wrong_key_is_reported_as_a_key_mismatch_not_garbage() {
        let other = SessionKey::parse("o0q0otL8aEzpcZL/FT9WsQ==").unwrap();
        assert_eq!(
            decrypt_payload(&other, SAMPLE_DATA, SAMPLE_IV),
            Err(PayloadError::SessionKeyMismatch)
        );
    }

    #[test]
    fn padding_is_checked_strictly() {
        // Ends in ...0x02 0x03: a lenient unpad would strip 3 bytes.
        let mut plain = b"{\"a\":1}".to_vec();
        plain.extend_from_slice(&[b' '; 7]);
        plain.extend_from_slice(&[0x02, 0x03]);
        assert_eq!(plain.len(), 16);
        let iv = [7u8; 16];
        let enc = cbc::Encryptor::<aes::Aes128>::new(key().expose_bytes().into(), &iv.into())
            .encrypt_padded_vec_mut::<aes::cipher::block_padding::NoPadding>(&plain);
        assert_eq!(
            decrypt_payload(&key(), &STANDARD.encode(enc), &STANDARD.encode(iv)),
            Err(PayloadError::SessionKeyMismatch)
        );
    }

    #[test]
    fn bad_shapes_get_precise_errors() {
        assert_eq!(
            decrypt_payload(&key(), "not base64!", SAMPLE_IV),
            Err(PayloadError::NotBase64 {
                field: "encrypted_data"
            })
        );
        assert_eq!(
            decrypt_payload(&key(), SAMPLE_DATA, "%%%"),
            Err(PayloadError::NotBase64 { field: "iv" })
        );
        assert!(matches!(
            decrypt_payload(&key(), SAMPLE_DATA, "AAAA"),
            Err(PayloadError::WrongLength { field: "iv", .. })
        ));
        assert!(matches!(
            decrypt_payload(&key(), &STANDARD.encode([1u8; 17]), SAMPLE_IV),
            Err(PayloadError::WrongLength {
                field: "encrypted_data",
                ..
            })
        ));
        assert!(matches!(
            decrypt_payload(&key(), "", SAMPLE_IV),
            Err(PayloadError::WrongLength {
                field: "encrypted_data",
                ..
            })
        ));
    }

    #[test]
    fn plaintext_that_is_not_json_is_refused() {
        let iv = [1u8; 16];
        let data = encrypt_payload(&key(), &iv, b"hello, not json");
        assert!(matches!(
            open_user_info(
                &key(),
                &EncryptedPayload::parse(&data, &encode_base64(&iv)).unwrap(),
                &appid(),
                WatermarkPolicy::default(),
                now()
            ),
            Err(PayloadError::NotJson(_))
        ));
    }

    #[test]
    fn watermark_for_another_app_is_refused() {
        let other = AppId::parse("wx0000000000000000").unwrap();
        assert_eq!(
            open_user_info(
                &key(),
                &EncryptedPayload::parse(SAMPLE_DATA, SAMPLE_IV).unwrap(),
                &other,
                WatermarkPolicy::default(),
                now()
            ),
            Err(PayloadError::WatermarkAppMismatch)
        );
    }

    #[test]
    fn watermark_age_is_checked_only_when_configured() {
        let wm = Watermark {
            appid: SAMPLE_APPID.into(),
            timestamp: 1_477_314_187,
        };
        let later = now() + Duration::days(1);
        assert!(wm
            .check(&appid(), WatermarkPolicy::default(), later)
            .is_ok());
        let strict = WatermarkPolicy {
            max_age: Some(Duration::minutes(10)),
        };
        assert_eq!(
            wm.check(&appid(), strict, later),
            Err(PayloadError::WatermarkExpired)
        );
        assert!(wm.check(&appid(), strict, now()).is_ok());
    }

    #[test]
    fn phone_payload_accepts_country_code_as_number_or_string() {
        let iv = [3u8; 16];
        for body in [
            r#"{"phoneNumber":"13800138000","purePhoneNumber":"13800138000","countryCode":"86","watermark":{"appid":"wx4f4bc4dec97d474b","timestamp":1}}"#,
            r#"{"phoneNumber":"13800138000","purePhoneNumber":"13800138000","countryCode":86,"watermark":{"appid":"wx4f4bc4dec97d474b","timestamp":1}}"#,
        ] {
            let data = encrypt_payload(&key(), &iv, body.as_bytes());
            let phone = open_phone(
                &key(),
                &EncryptedPayload::parse(&data, &encode_base64(&iv)).unwrap(),
                &appid(),
                WatermarkPolicy::default(),
                now(),
            )
            .unwrap();
            assert_eq!(phone.country_code, "86");
            assert_eq!(phone.pure_phone_number, "13800138000");
        }
    }

    #[test]
    fn raw_data_signature_is_sha1_of_raw_data_then_key() {
        let raw = r#"{"nickName":"Band"}"#;
        let mut hasher = Sha1::new();
        hasher.update(format!("{raw}{SAMPLE_KEY}").as_bytes());
        let expected = hex::encode(hasher.finalize());
        assert_eq!(raw_data_signature(raw, &key()), expected);
        assert!(verify_raw_data_signature(raw, &expected, &key()).is_ok());
        assert!(verify_raw_data_signature(raw, &expected.to_uppercase(), &key()).is_ok());
        assert_eq!(
            verify_raw_data_signature("{\"nickName\":\"Eve\"}", &expected, &key()),
            Err(PayloadError::SignatureMismatch)
        );
    }

    #[test]
    fn session_hmac_matches_the_wechat_check_value() {
        let key = SessionKey::parse("o0q0otL8aEzpcZL/FT9WsQ==").unwrap();
        assert_eq!(
            session_hmac(&key, r#"{"foo":"bar"}"#),
            "654571f79995b2ce1e149e53c0a33dc39c0a74090db514261454e8dbe432aa0b"
        );
    }
}
