//! The MCP client of these tests.

use std::time::Duration;

use serde_json::{Value, json};

/// A minimal Streamable HTTP client (one JSON-RPC request per POST) on a fresh connection
/// per call, so that every call goes through the Service's load balancing.
pub(crate) struct McpClient {
    url: String,
    /// One keep-alive connection (so one replica serves every call) instead of a fresh
    /// connection per call.
    pub(crate) pinned: Option<reqwest::Client>,
    token: String,
    session: Option<String>,
    next_id: u64,
}

impl McpClient {
    async fn post(&mut self, body: Value) -> Result<(reqwest::StatusCode, String), String> {
        let http = match &self.pinned {
            Some(h) => h.clone(),
            None => reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        };
        let mut rb = http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .bearer_auth(&self.token);
        if let Some(s) = &self.session {
            rb = rb.header("mcp-session-id", s);
        }
        let resp = rb.body(body.to_string()).send().await.map_err(|e| format!("{e:?}"))?;
        let status = resp.status();
        if let Some(sid) = resp.headers().get("mcp-session-id") {
            self.session = Some(sid.to_str().unwrap().to_owned());
        }
        Ok((status, resp.text().await.map_err(|e| e.to_string())?))
    }

    /// The JSON-RPC result of one request (an SSE or JSON answer), or why there is none.
    async fn request(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.next_id += 1;
        let body =
            json!({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params});
        let (status, text) = self.post(body).await?;
        if !status.is_success() {
            return Err(format!("{method}: HTTP {status}: {text}"));
        }
        let json = text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim)
            .find(|l| l.contains("\"id\""))
            .unwrap_or(text.trim());
        let v: Value = serde_json::from_str(json).map_err(|e| format!("{method}: {e}: {text}"))?;
        match v.get("result") {
            Some(r) if r.get("isError") != Some(&json!(true)) => Ok(r.clone()),
            _ => Err(format!("{method}: {v}")),
        }
    }

    pub(crate) async fn initialize(
        url: &str,
        token: &str,
        pinned: Option<reqwest::Client>,
    ) -> Self {
        let mut c = Self {
            url: url.to_owned(),
            pinned,
            token: token.to_owned(),
            session: None,
            next_id: 0,
        };
        let params = json!({"protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "cluster-e2e", "version": "1"}});
        c.request("initialize", params).await.expect("initialize");
        assert!(c.session.is_some(), "the gateway issued a session id");
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let (status, _) = c.post(note).await.expect("initialized");
        assert_eq!(status.as_u16(), 202);
        c
    }

    pub(crate) async fn tool_names(&mut self) -> Result<Vec<String>, String> {
        let r = self.request("tools/list", json!({})).await?;
        let mut names: Vec<String> = r["tools"]
            .as_array()
            .ok_or_else(|| format!("no tools: {r}"))?
            .iter()
            .map(|t| t["name"].as_str().unwrap_or_default().to_owned())
            .collect();
        names.sort();
        Ok(names)
    }

    pub(crate) async fn call(&mut self, name: &str, arguments: Value) -> Result<String, String> {
        let r = self.request("tools/call", json!({"name": name, "arguments": arguments})).await?;
        Ok(r["content"][0]["text"].as_str().unwrap_or_default().to_owned())
    }
}
