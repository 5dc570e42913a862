//! The simulator's own rules, spoken to over HTTP as WeChat's clients and the mini
//! program would.

mod common;

use common::*;
use miniauth_wechat::sim::{
    AppRegistration, DeviceError, Endpoint, Fault, Faults, NewSimUser, RunningSimulator,
};
use serde_json::{json, Value};

async fn get(sim: &RunningSimulator, path_and_query: &str) -> Value {
    reqwest::get(format!("{}{path_and_query}", sim.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn post(sim: &RunningSimulator, path_and_query: &str, body: Value) -> Value {
    reqwest::Client::new()
        .post(format!("{}{path_and_query}", sim.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn stable(sim: &RunningSimulator, force: bool) -> Value {
    post(
        sim,
        "/cgi-bin/stable_token",
        json!({"grant_type": "client_credential", "appid": BOUND, "secret": secret_of(BOUND), "force_refresh": force}),
    )
    .await
}

/// The errcode a token gets on a protected endpoint: 40003 (unknown openid) means the
/// token itself was accepted.
async fn token_errcode(sim: &RunningSimulator, token: &Value) -> i64 {
    let token = token.as_str().unwrap();
    let answer = get(
        sim,
        &format!("/wxa/checksession?access_token={token}&openid=onobody&signature=00&sig_method=hmac_sha256"),
    )
    .await;
    answer["errcode"].as_i64().unwrap()
}

#[tokio::test]
async fn code2session_checks_its_parameters_like_wechat() {
    let sim = start_sim().await;
    let secret = secret_of(BOUND);
    let cases = [
        (
            format!("secret={secret}&js_code=x&grant_type=authorization_code"),
            41002,
        ),
        (
            format!("appid={BOUND}&js_code=x&grant_type=authorization_code"),
            41004,
        ),
        (
            format!(
                "appid=wxffffffffffffffff&secret={secret}&js_code=x&grant_type=authorization_code"
            ),
            40013,
        ),
        (
            format!("appid={BOUND}&secret=nope&js_code=x&grant_type=authorization_code"),
            40125,
        ),
        (
            format!("appid={BOUND}&secret={secret}&js_code=x&grant_type=password"),
            40002,
        ),
        (
            format!("appid={BOUND}&secret={secret}&grant_type=authorization_code"),
            41008,
        ),
        (
            format!("appid={BOUND}&secret={secret}&js_code=x&grant_type=authorization_code"),
            40029,
        ),
    ];
    for (query, errcode) in cases {
        let answer = get(&sim, &format!("/sns/jscode2session?{query}")).await;
        assert_eq!(answer["errcode"], errcode, "{query}");
        assert!(!answer["errmsg"].as_str().unwrap().contains(&secret));
    }
}

#[tokio::test]
async fn the_token_endpoint_keeps_the_previous_token_for_five_minutes() {
    let sim = start_sim().await;
    let query = format!(
        "/cgi-bin/token?grant_type=client_credential&appid={BOUND}&secret={}",
        secret_of(BOUND)
    );
    let first = get(&sim, &query).await;
    assert_eq!(first["expires_in"], 7200);
    let second = get(&sim, &query).await;
    assert_ne!(first["access_token"], second["access_token"]);

    assert_eq!(token_errcode(&sim, &first["access_token"]).await, 40003);
    sim.device().advance_clock(301).await.unwrap();
    assert_eq!(token_errcode(&sim, &second["access_token"]).await, 40003);
    assert_eq!(token_errcode(&sim, &first["access_token"]).await, 42001);
}

#[tokio::test]
async fn the_stable_token_is_the_same_until_five_minutes_before_expiry() {
    let sim = start_sim().await;
    let first = stable(&sim, false).await;
    let again = stable(&sim, false).await;
    assert_eq!(first["access_token"], again["access_token"]);

    // Margins of 10 s on either side of the 300 s boundary: the simulator's clock is
    // the wall clock plus the advance, and the test itself takes time.
    sim.device().advance_clock(7200 - 310).await.unwrap();
    let late = stable(&sim, false).await;
    assert_eq!(late["access_token"], first["access_token"]);
    assert!(late["expires_in"].as_i64().unwrap() > 300);

    sim.device().advance_clock(20).await.unwrap();
    let rotated = stable(&sim, false).await;
    assert_ne!(rotated["access_token"], first["access_token"]);
    assert_eq!(rotated["expires_in"], 7200);
    // The old one lives out its last minutes.
    assert_eq!(token_errcode(&sim, &first["access_token"]).await, 40003);
}

#[tokio::test]
async fn force_refresh_kills_the_old_token_and_is_limited() {
    let sim = start_sim().await;
    let device = sim.device();
    let first = stable(&sim, false).await;

    let forced = stable(&sim, true).await;
    assert_ne!(forced["access_token"], first["access_token"]);
    assert_eq!(token_errcode(&sim, &first["access_token"]).await, 40001);
    assert_eq!(token_errcode(&sim, &forced["access_token"]).await, 40003);

    // 30 s apart...
    assert_eq!(stable(&sim, true).await["errcode"], 45011);
    // ...and 20 a day.
    for _ in 1..20 {
        device.advance_clock(31).await.unwrap();
        assert!(stable(&sim, true).await["access_token"].is_string());
    }
    device.advance_clock(31).await.unwrap();
    assert_eq!(stable(&sim, true).await["errcode"], 45009);
    device.advance_clock(86_400).await.unwrap();
    assert!(stable(&sim, true).await["access_token"].is_string());
}

#[tokio::test]
async fn protected_endpoints_want_a_token() {
    let sim = start_sim().await;
    let missing = post(
        &sim,
        "/wxa/business/getuserphonenumber",
        json!({"code": "x"}),
    )
    .await;
    assert_eq!(missing["errcode"], 41001);
    let forged = get(
        &sim,
        "/wxa/checksession?access_token=forged&openid=o&signature=00&sig_method=hmac_sha256",
    )
    .await;
    assert_eq!(forged["errcode"], 40001);
}

#[tokio::test]
async fn faults_are_injected_and_changed_at_run_time() {
    let sim = start_sim().await;
    let device = sim.device();
    let busy = Faults::none().with(
        Endpoint::Token,
        Fault {
            busy: 1.0,
            ..Fault::default()
        },
    );
    device.set_faults(&busy).await.unwrap();
    assert_eq!(device.faults().await.unwrap(), busy);
    let query = format!(
        "/cgi-bin/token?grant_type=client_credential&appid={BOUND}&secret={}",
        secret_of(BOUND)
    );
    assert_eq!(get(&sim, &query).await["errcode"], -1);

    let failing = Faults::none().with(
        Endpoint::Token,
        Fault {
            server_error: 1.0,
            ..Fault::default()
        },
    );
    device.set_faults(&failing).await.unwrap();
    let status = reqwest::get(format!("{}{query}", sim.base_url()))
        .await
        .unwrap()
        .status();
    assert_eq!(status, 502);

    device.set_faults(&Faults::none()).await.unwrap();
    assert!(get(&sim, &query).await["access_token"].is_string());
    assert_eq!(device.calls().await.unwrap()[&Endpoint::Token], 3);
    device.reset_calls().await.unwrap();
    assert_eq!(device.calls().await.unwrap()[&Endpoint::Token], 0);
}

#[tokio::test]
async fn bad_faults_are_refused() {
    let sim = start_sim().await;
    let bad = Faults::none().with(
        Endpoint::Token,
        Fault {
            rate_limited: 2.0,
            ..Fault::default()
        },
    );
    assert!(matches!(
        sim.device().set_faults(&bad).await,
        Err(DeviceError::Refused { status: 400, .. })
    ));
}

#[tokio::test]
async fn the_device_api_refuses_clearly() {
    let sim = start_sim().await;
    let device = sim.device();
    assert!(matches!(
        device.login(&appid(BOUND), 42).await,
        Err(DeviceError::Refused { status: 404, .. })
    ));
    let user = device.create_user(&alice()).await.unwrap();
    assert!(matches!(
        device.login(&appid("wxffffffffffffffff"), user).await,
        Err(DeviceError::Refused { status: 404, .. })
    ));
    assert!(matches!(
        device.user_info(&appid(BOUND), user).await,
        Err(DeviceError::Refused { status: 409, .. })
    ));
    let no_phone = device
        .create_user(&NewSimUser {
            phone: None,
            ..alice()
        })
        .await
        .unwrap();
    device.login(&appid(BOUND), no_phone).await.unwrap();
    assert!(matches!(
        device.phone(&appid(BOUND), no_phone).await,
        Err(DeviceError::Refused { status: 409, .. })
    ));
    assert!(matches!(
        device
            .create_user(&NewSimUser {
                phone: Some("12ab".into()),
                ..alice()
            })
            .await,
        Err(DeviceError::Refused { status: 400, .. })
    ));
}

#[tokio::test]
async fn apps_can_be_registered_at_run_time() {
    let sim = start_sim().await;
    let device = sim.device();
    let newcomer = "wxe000000000000001";
    device
        .register_app(&AppRegistration {
            appid: newcomer.into(),
            secret: "fresh".into(),
            unionid: false,
            kind: Default::default(),
        })
        .await
        .unwrap();
    let user = device.create_user(&alice()).await.unwrap();
    let login = device.login(&appid(newcomer), user).await.unwrap();

    let answer = get(
        &sim,
        &format!("/sns/jscode2session?appid={newcomer}&secret=fresh&js_code={login}&grant_type=authorization_code"),
    )
    .await;
    assert!(answer["openid"].is_string());
    assert!(answer.get("unionid").is_none());
}

#[tokio::test]
async fn serve_answers_code2session_for_a_device_code() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}").parse().unwrap();
    let server = tokio::spawn(miniauth_wechat::sim::serve(listen, sim_config()));
    let device = miniauth_wechat::sim::DeviceClient::new(format!("http://{listen}"));
    let mut user = None;
    for _ in 0..50 {
        match device.create_user(&alice()).await {
            Ok(id) => {
                user = Some(id);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
    let user = user.expect("the simulator came up");
    let login = device.login(&appid(BOUND), user).await.unwrap();
    let client =
        miniauth_wechat::WeChatClient::new(fast_config(format!("http://{listen}"))).unwrap();

    let session = miniauth_application::ports::WeChatApi::code_to_session(
        &client,
        &appid(BOUND),
        &code(&login),
    )
    .await
    .unwrap();
    assert!(session.unionid.is_some());
    server.abort();
}
