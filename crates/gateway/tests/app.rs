//! The composition root run in-process: [`App::build`] from a configuration, [`App::serve`] on
//! an ephemeral port, a session created and ended over HTTP, and a clean stop on shutdown.

use std::time::Duration;

use serde_json::{Value, json};
use vmcp_gateway::app::App;
use vmcp_types::config::from_yaml_str;

#[tokio::test]
async fn an_app_serves_sessions_and_stops_on_shutdown() {
    let cfg =
        from_yaml_str("listen: 127.0.0.1:0\nincomingAuth:\n  type: anonymous\nbackends: []\n")
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = App::build(dir.path().join("unused.yaml"), cfg).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.serve(listener, async {
        let _ = stopped.await;
    }));

    let http = reqwest::Client::new();
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "app-test", "version": "1"}}});
    let r = http
        .post(&url)
        .header("accept", "application/json, text/event-stream")
        .json(&init)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let sid = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["result"]["protocolVersion"], "2025-11-25", "{body}");
    let ping = json!({"jsonrpc": "2.0", "id": 2, "method": "ping"});
    let r = http
        .post(&url)
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", "2025-11-25")
        .header("accept", "application/json, text/event-stream")
        .json(&ping)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["result"], json!({}));
    let r = http.delete(&url).header("mcp-session-id", &sid).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = http.delete(&url).header("mcp-session-id", &sid).send().await.unwrap();
    assert_eq!(r.status(), 404, "a terminated session is gone");

    stop.send(()).unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(10), server).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "{stopped:?}");
}

/// `telemetry.metrics: false` turns `/metrics` off (it used to be served anyway); by default
/// it is on.
#[tokio::test]
async fn metrics_can_be_turned_off() {
    for (metrics, status) in [("true", 200), ("false", 404)] {
        let cfg = from_yaml_str(&format!(
            "listen: 127.0.0.1:0\nincomingAuth:\n  type: anonymous\nbackends: []\ntelemetry:\n  metrics: {metrics}\n"
        ))
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let app = App::build(dir.path().join("unused.yaml"), cfg).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/metrics", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(app.serve(listener, async {
            let _ = stopped.await;
        }));
        let r = reqwest::get(&url).await.unwrap();
        assert_eq!(r.status().as_u16(), status, "telemetry.metrics: {metrics}");
        stop.send(()).unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    }
}

/// A configuration file that changes between the gateway reading it and its reloader starting
/// (on a node: the kubelet updating the ConfigMap volume while a new pod waits for Redis) is
/// applied: the new member is served without another change to the file. Before, the reloader
/// took the changed file as its starting point and kept the old backend list until the file
/// changed once more.
#[tokio::test]
async fn a_config_changed_while_the_gateway_starts_is_applied() {
    let head = "listen: 127.0.0.1:0\nincomingAuth:\n  type: anonymous\nbackends:\n";
    let member = |name: &str| {
        format!("- name: {name}\n  url: http://127.0.0.1:9/{name}\n  transport: streamable-http\n")
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    let first = format!("{head}{}", member("alpha"));
    std::fs::write(&path, &first).unwrap();
    let cfg = vmcp_types::config::load_file(&path).unwrap();
    std::fs::write(&path, format!("{first}{}", member("beta"))).unwrap();
    let app = App::build(path, cfg).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/readyz", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.serve(listener, async {
        let _ = stopped.await;
    }));
    let names = || async {
        let body: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
        let names: Vec<String> = body["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["name"].as_str().unwrap().to_owned())
            .collect();
        names
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let listed = names().await;
        if listed == ["alpha", "beta"] {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still serving {listed:?} after 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.send(()).unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
}
