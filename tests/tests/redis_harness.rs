//! The harness starts a real redis-server; fred talks to it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fred::prelude::*;
use vmcp_e2e::redis::RedisServer;

#[tokio::test]
async fn harness_starts_real_redis_and_fred_reads_back() {
    let redis = RedisServer::start().await.expect("start redis-server");
    let config = Config::from_url(&redis.url()).unwrap();
    let client = Builder::from_config(config).build().unwrap();
    client.init().await.unwrap();
    let _: () =
        client.set("vmcp:test", "hello", Some(Expiration::EX(60)), None, false).await.unwrap();
    let got: String = client.get("vmcp:test").await.unwrap();
    assert_eq!(got, "hello");
    let info: String = client.info(Some(fred::types::InfoKind::Server)).await.unwrap();
    assert!(info.contains("redis_version"), "a real redis-server answers INFO: {info}");
    client.quit().await.unwrap();
}

#[tokio::test]
async fn redis_leaves_nothing_behind_and_stops_on_drop() {
    let redis = RedisServer::start().await.unwrap();
    let port = redis.port();
    drop(redis);
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err());
}
