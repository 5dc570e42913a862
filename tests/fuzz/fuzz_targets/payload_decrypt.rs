//! WeChat payload decryption on arbitrary input: `decrypt_payload`, `open_user_info`,
//! `open_phone` and the rawData signature check never panic, and whatever decrypts
//! under a key re-encrypts to the same ciphertext.
//!
//! Input: newline-separated `key`, `encryptedData`, `iv`, then the rest (rawData and
//! signature). Seeds in tests/fuzz/seeds/payload_decrypt are WeChat's documented sample.

#![no_main]

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::Utc;
use libfuzzer_sys::fuzz_target;
use miniauth_domain::crypto::{
    decode_base64, decrypt_payload, encrypt_payload, open_phone, open_user_info,
    verify_raw_data_signature, EncryptedPayload, WatermarkPolicy,
};
use miniauth_domain::{AppId, SessionKey};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '\n');
    let key_text = parts.next().unwrap_or_default();
    let encrypted = parts.next().unwrap_or_default();
    let iv = parts.next().unwrap_or_default();
    let rest = parts.next().unwrap_or_default();

    // Arbitrary key text, and a key made of the input's first 16 bytes (so that the
    // AES and padding paths are reached even when the key text is junk).
    let mut raw = [0u8; 16];
    for (slot, byte) in raw.iter_mut().zip(data) {
        *slot = *byte;
    }
    let keys = [
        SessionKey::parse(key_text).ok(),
        SessionKey::parse(&STANDARD.encode(raw)).ok(),
    ];
    let appid = AppId::parse("wx4f4bc4dec97d474b").expect("a valid appid");
    let now = Utc::now();
    for key in keys.iter().flatten() {
        if let Ok(plain) = decrypt_payload(key, encrypted, iv) {
            // Decryption accepted it: encrypting the plaintext again under the same key
            // and iv must give back the very same bytes.
            let iv_bytes: [u8; 16] = decode_base64("iv", iv)
                .expect("decrypt accepted the iv")
                .try_into()
                .expect("decrypt checked its length");
            let again = encrypt_payload(key, &iv_bytes, &plain);
            assert_eq!(
                decode_base64("encrypted_data", &again).expect("our own base64"),
                decode_base64("encrypted_data", encrypted).expect("decrypt accepted it"),
                "decrypt and encrypt disagree"
            );
        }
        let Ok(payload) = EncryptedPayload::parse(encrypted, iv) else {
            continue;
        };
        let _ = open_user_info(key, &payload, &appid, WatermarkPolicy::default(), now);
        let _ = open_phone(
            key,
            &payload,
            &appid,
            WatermarkPolicy {
                max_age: Some(chrono::Duration::minutes(5)),
            },
            now,
        );
        let (raw_data, signature) = rest.split_once('\n').unwrap_or((rest, ""));
        let _ = verify_raw_data_signature(raw_data, signature, key);
    }
});
