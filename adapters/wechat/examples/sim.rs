//! Runs the WeChat simulator with the two demo apps of `SimConfig::demo()`:
//! `cargo run -p miniauth-wechat --example sim -- 127.0.0.1:9100`.

use std::net::SocketAddr;

use miniauth_wechat::sim::{serve, SimConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let listen: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9100".to_owned())
        .parse()?;
    serve(listen, SimConfig::demo()).await?;
    Ok(())
}
