//! `serve` on a real socket (127.0.0.1): it answers, then shuts down gracefully.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

#[tokio::test]
async fn serve_answers_and_stops_on_shutdown() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(miniauth_http::serve(
        listener,
        harness().await.router,
        async move {
            let _ = stopped.await;
        },
    ));

    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(answer.contains("x-request-id: "), "{answer}");
    assert!(answer.ends_with("{\"status\":\"ok\"}"), "{answer}");

    stop.send(()).unwrap();
    let served = tokio::time::timeout(std::time::Duration::from_secs(5), server)
        .await
        .expect("serve stops after the shutdown signal")
        .unwrap();
    assert!(served.is_ok());
}
