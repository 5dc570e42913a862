//! WeChat payload crypto: decrypting `encryptedData` (AES-128-CBC, strict PKCS#7) and
//! checking the rawData signature (sha1(rawData + session_key)), on WeChat's own sample.
//!
//! `cargo bench -p miniauth-domain --bench crypto -- --warm-up-time 1 --measurement-time 2`
//! (`cargo test` runs each benchmark once, in criterion's test mode).

use std::hint::black_box;

use chrono::Utc;
use criterion::{criterion_group, criterion_main, Criterion};
use miniauth_domain::crypto::{
    decrypt_payload, open_user_info, raw_data_signature, verify_raw_data_signature,
    EncryptedPayload, WatermarkPolicy,
};
use miniauth_domain::{AppId, SessionKey};

/// WeChat's documented sample (the user-info example of the payload decryption guide).
const SAMPLE_APPID: &str = "wx4f4bc4dec97d474b";
const SAMPLE_KEY: &str = "tiihtNczf5v6AKRyjwEUhQ==";
const SAMPLE_IV: &str = "r7BXXKkLb8qrSNn05n0qiA==";
const SAMPLE_DATA: &str = "CiyLU1Aw2KjvrjMdj8YKliAjtP4gsMZMQmRzooG2xrDcvSnxIMXFufNstNGTyaGS9uT5geRa0W4oTOb1WT7fJlAC+oNPdbB+3hVbJSRgv+4lGOETKUQz6OYStslQ142dNCuabNPGBzlooOmB231qMM85d2/fV6ChevvXvQP8Hkue1poOFtnEtpyxVLW1zAo6/1Xx1COxFvrc2d7UL/lmHInNlxuacJXwu0fjpXfz/YqYzBIBzD6WUfTIF9GRHpOn/Hz7saL8xz+W//FRAUid1OksQaQx4CMs8LOddcQhULW4ucetDf96JcR3g0gfRK4PC7E/r7Z6xNrXd2UIeorGj5Ef7b1pJAYB6Y5anaHqZ9J6nKEBvB4DnNLIVWSgARns/8wR2SiRS7MNACwTyrGvt9ts8p12PKFdlqYTopNHR1Vf7XjfhQlVsAJdNiKdYmYVoKlaRv85IfVunYzO0IKXsyl7JCUjCpoG20f0a04COwfneQAGGwd5oa+T8yO5hzuyDb/XcxxmK01EpqOyuxINew==";
const RAW_DATA: &str = r#"{"nickName":"Band","gender":1,"language":"zh_CN","city":"Guangzhou","province":"Guangdong","country":"CN","avatarUrl":"http://wx.qlogo.cn/mmopen/vi_32/aSKcBBPpibyKNicHNTMM0qJVh8Kjgiak2AHWr8MHM4WgMEm7GFhsf8OYrySdbvAMvTsw3mo8ibKicsnfN5pRjl1p8HQ/0"}"#;

fn payload(c: &mut Criterion) {
    let key = SessionKey::parse(SAMPLE_KEY).expect("the sample key");
    let appid = AppId::parse(SAMPLE_APPID).expect("the sample appid");
    // A bench of a failing call measures nothing: check the sample first.
    assert!(decrypt_payload(&key, SAMPLE_DATA, SAMPLE_IV).is_ok());
    let now = Utc::now();
    c.bench_function("payload decrypt (AES-128-CBC, 400 bytes)", |b| {
        b.iter(|| {
            decrypt_payload(
                black_box(&key),
                black_box(SAMPLE_DATA),
                black_box(SAMPLE_IV),
            )
        })
    });
    let sample = EncryptedPayload::parse(SAMPLE_DATA, SAMPLE_IV).expect("the sample's shape");
    c.bench_function("open_user_info (decrypt + JSON + watermark)", |b| {
        b.iter(|| {
            open_user_info(
                black_box(&key),
                black_box(&sample),
                &appid,
                WatermarkPolicy::default(),
                now,
            )
            .expect("the sample opens")
        })
    });
}

fn signature(c: &mut Criterion) {
    let key = SessionKey::parse(SAMPLE_KEY).expect("the sample key");
    let signature = raw_data_signature(RAW_DATA, &key);
    assert!(verify_raw_data_signature(RAW_DATA, &signature, &key).is_ok());
    c.bench_function(
        "rawData signature check (sha1, constant-time compare)",
        |b| b.iter(|| verify_raw_data_signature(black_box(RAW_DATA), black_box(&signature), &key)),
    );
}

criterion_group!(benches, payload, signature);
criterion_main!(benches);
