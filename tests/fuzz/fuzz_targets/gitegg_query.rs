//! The GitEgg-compatible routes on arbitrary query strings (and `/oauth/token` on
//! arbitrary form bodies), through the real router of the binary's wiring (SQLite in
//! memory, the WeChat simulator on loopback): never a panic, never a 5xx, and always
//! GitEgg's envelope with a code that is not 500.
//!
//! The query parser itself is private to the HTTP adapter; driving the router is how
//! the front end reaches it.

#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

struct Service {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    // Kept alive for the fuzzer's whole run.
    _built: miniauth::wiring::Built,
    _dir: tempfile::TempDir,
}

fn service() -> &'static Service {
    static SERVICE: OnceLock<Service> = OnceLock::new();
    SERVICE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut config = miniauth::config::Config::load_with_env(None, &[])
            .expect("the embedded default configuration");
        config.store.data_dir = dir.path().to_owned();
        config.store.url = "sqlite::memory:".into();
        let built = runtime
            .block_on(miniauth::wiring::build(
                &config,
                Some(([127, 0, 0, 1], 0).into()),
            ))
            .expect("the service builds");
        Service {
            runtime,
            router: built.router.clone(),
            _built: built,
            _dir: dir,
        }
    })
}

const ROUTES: [&str; 5] = ["login", "info", "phone", "bind", "unbind"];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let service = service();
    let text = String::from_utf8_lossy(rest);
    let appid = miniauth::config::DEMO_APPID;
    let request = if usize::from(selector) % 6 == 5 {
        Request::post("/oauth/token")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(rest.to_vec()))
    } else {
        let route = ROUTES[usize::from(selector) % 6];
        let prefix = if selector & 0x80 != 0 {
            "/extension"
        } else {
            ""
        };
        Request::get(format!("{prefix}/wx/user/{appid}/{route}?{text}")).body(Body::empty())
    };
    // Not a URI a client could send: nothing to test.
    let Ok(request) = request else {
        return;
    };
    let (status, body) = service.runtime.block_on(async {
        let response = service
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("a body");
        (status, body)
    });
    assert!(
        !status.is_server_error(),
        "{status}: {}",
        String::from_utf8_lossy(&body)
    );
    if status == StatusCode::OK {
        let envelope: serde_json::Value =
            serde_json::from_slice(&body).expect("GitEgg's envelope is JSON");
        assert!(envelope["code"].is_u64(), "no code: {envelope}");
        assert_ne!(envelope["code"], 500, "internal error: {envelope}");
    }
});
