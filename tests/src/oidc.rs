//! The test OpenID provider (`tests/peers/oidc/provider.mjs`, built on the OpenID-certified
//! `oidc-provider` package): one per test, on an ephemeral loopback port, killed on drop.
//!
//! Its facts (users, clients, exchange policy, test hooks) are in `tests/peers/oidc/README.md`.
//! When `tests/peers/oidc/node_modules` is missing, the harness runs
//! `npm ci --prefix tests/peers/oidc` once.

use parking_lot::Mutex;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::process::{Peer, ProcessError};
use crate::repo_root;

/// The gateway's confidential client in the provider (and in the Keycloak realm).
pub const GATEWAY_CLIENT_ID: &str = "vmcp-gateway";
/// Its secret.
pub const GATEWAY_CLIENT_SECRET: &str = "gateway-secret";
/// The public client that may use the password grant.
pub const CLI_CLIENT_ID: &str = "vmcp-cli";

/// Why the provider could not be started or a call to it failed.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// `node` or the npm packages are missing and could not be installed.
    #[error("cannot install the oidc peer: {0}")]
    Install(String),
    /// A temp folder could not be created.
    #[error("cannot create a temp dir: {0}")]
    TempDir(std::io::Error),
    /// The process failed to start or to print `READY`.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// An HTTP call to the provider failed.
    #[error("oidc peer: {0}")]
    Http(String),
}

/// Start options (flags of `provider.mjs`).
#[derive(Debug, Clone, Default)]
pub struct OidcOptions {
    /// A path for the issuer, e.g. `/realms/vmcp` (default: the root).
    pub issuer_path: Option<String>,
    /// Lifetime of password-grant tokens in seconds (default 300).
    pub access_ttl: Option<u64>,
    /// Lifetime of exchanged tokens in seconds (default: `access_ttl`).
    pub exchange_ttl: Option<u64>,
    /// Keep old public keys in the JWKS on rotation.
    pub keep_old_keys: bool,
    /// A `--config` JSON document (users, clients, exchange policy, …).
    pub config: Option<Value>,
    /// Request and grant logs on stderr (in the peer's log file).
    pub log: bool,
    /// The address to bind and to name in the issuer (default `127.0.0.1`); e.g. a node IP
    /// that pods of `make cluster` reach.
    pub host: Option<String>,
}

/// A running provider.
#[derive(Debug)]
pub struct OidcProvider {
    port: u16,
    host: String,
    issuer: String,
    peer: Peer,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

static INSTALL: Mutex<()> = Mutex::new(());

/// The payload of a JWT, decoded without checking its signature (`Null` when `jwt` is not
/// one): what a test asserts about a token it was given.
pub fn unverified_claims(jwt: &str) -> Value {
    use base64::Engine as _;
    let payload = jwt.split('.').nth(1).unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload);
    serde_json::from_slice(&bytes.unwrap_or_default()).unwrap_or(Value::Null)
}

/// The folder of the peer, with its npm packages installed.
pub fn ensure_installed() -> Result<PathBuf, OidcError> {
    let dir = repo_root().join("tests/peers/oidc");
    let ready = || dir.join("node_modules/oidc-provider/package.json").is_file();
    if ready() {
        return Ok(dir);
    }
    let _guard = INSTALL.lock();
    if ready() {
        return Ok(dir);
    }
    eprintln!("[harness] installing the oidc peer: npm ci --prefix {}", dir.display());
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--prefix"])
        .arg(&dir)
        .output()
        .map_err(|e| OidcError::Install(format!("cannot run npm: {e}")))?;
    if !out.status.success() || !ready() {
        return Err(OidcError::Install(format!(
            "npm ci exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(dir)
}

fn read_ready_port(log: &std::path::Path) -> Option<u16> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().find_map(|l| l.strip_prefix("READY ")).and_then(|p| p.trim().parse().ok())
}

/// A copy of a command (program, arguments, environment) to spawn it again.
fn clone_command(cmd: &Command) -> Command {
    let mut c = Command::new(cmd.get_program());
    c.args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c
}

impl OidcProvider {
    /// Starts the provider with its defaults.
    pub async fn start() -> Result<Self, OidcError> {
        Self::start_with(OidcOptions::default()).await
    }

    /// Starts the provider with options, waiting until it prints `READY <port>`.
    pub async fn start_with(opts: OidcOptions) -> Result<Self, OidcError> {
        let peer_dir = tokio::task::spawn_blocking(ensure_installed)
            .await
            .map_err(|e| OidcError::Install(e.to_string()))??;
        let dir = tempfile::tempdir().map_err(OidcError::TempDir)?;
        let mut cmd = Command::new("node");
        let host = opts.host.clone().unwrap_or_else(|| "127.0.0.1".to_owned());
        cmd.arg(peer_dir.join("provider.mjs")).args(["--port", "0", "--host", &host]);
        if let Some(p) = &opts.issuer_path {
            cmd.args(["--issuer", &format!("http://{host}:{{port}}{p}")]);
        }
        if let Some(t) = opts.access_ttl {
            cmd.args(["--access-ttl", &t.to_string()]);
        }
        if let Some(t) = opts.exchange_ttl {
            cmd.args(["--exchange-ttl", &t.to_string()]);
        }
        if opts.keep_old_keys {
            cmd.arg("--keep-old-keys");
        }
        if let Some(c) = &opts.config {
            let file = dir.path().join("config.json");
            std::fs::write(&file, c.to_string()).map_err(OidcError::TempDir)?;
            cmd.arg("--config").arg(file);
        }
        if opts.log {
            cmd.arg("--log");
        }
        // A provider that has not printed READY after 60 s is started once more: a start that
        // stalled under a loaded CI machine was seen twice (stuck before key generation), and
        // a second start has always come up in seconds.
        let mut attempt = 0;
        let (peer, log) = loop {
            attempt += 1;
            let log = dir.path().join(format!("oidc-{attempt}.log"));
            let mut peer = Peer::spawn("oidc-provider", clone_command(&cmd), log.clone())?;
            let log2 = log.clone();
            let waited = peer
                .wait_ready(Duration::from_secs(60), move || {
                    let ready = read_ready_port(&log2).is_some();
                    async move { ready }
                })
                .await;
            match waited {
                Ok(()) => break (peer, log),
                Err(e) if attempt < 2 => {
                    eprintln!("[harness] oidc-provider did not start, retrying once: {e}")
                }
                Err(e) => return Err(e.into()),
            }
        };
        let port = read_ready_port(&log).unwrap_or_default();
        let issuer = format!("http://{host}:{port}{}", opts.issuer_path.as_deref().unwrap_or(""));
        Ok(Self { port, host, issuer, peer, http: reqwest::Client::new(), _dir: dir })
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The issuer (`iss` of its tokens).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The token endpoint.
    pub fn token_url(&self) -> String {
        format!("{}/token", self.issuer)
    }

    /// The JWKS.
    pub fn jwks_url(&self) -> String {
        format!("{}/jwks", self.issuer)
    }

    /// The peer's log (for failure messages).
    pub fn log_tail(&self) -> String {
        self.peer.log_tail()
    }

    /// The peer's whole log so far (with `log: true`, one line per grant).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.peer.log_path()).unwrap_or_default()
    }

    /// POSTs a form to the token endpoint; returns the status and the JSON body.
    pub async fn token_request(&self, form: &[(&str, &str)]) -> Result<(u16, Value), OidcError> {
        let resp = self
            .http
            .post(self.token_url())
            .form(form)
            .send()
            .await
            .map_err(|e| OidcError::Http(format!("POST {}: {e}", self.token_url())))?;
        let status = resp.status().as_u16();
        let body =
            resp.json().await.map_err(|e| OidcError::Http(format!("token response: {e}")))?;
        Ok((status, body))
    }

    /// A user's access token from the password grant (client `vmcp-cli`). `audience` selects
    /// `aud` (default `vmcp-gateway`).
    pub async fn password_token(
        &self,
        user: &str,
        password: &str,
        audience: Option<&str>,
    ) -> Result<String, OidcError> {
        let mut form = vec![
            ("grant_type", "password"),
            ("client_id", CLI_CLIENT_ID),
            ("username", user),
            ("password", password),
        ];
        if let Some(a) = audience {
            form.push(("audience", a));
        }
        let (status, body) = self.token_request(&form).await?;
        body.get("access_token").and_then(Value::as_str).map(str::to_owned).ok_or_else(|| {
            OidcError::Http(format!("password grant for {user}: HTTP {status} {body}"))
        })
    }

    async fn test_hook(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, OidcError> {
        let url = format!("http://{}:{}{path}", self.host, self.port);
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| OidcError::Http(format!("{url}: {e}")))?;
        let status = resp.status();
        let body: Value = resp.json().await.map_err(|e| OidcError::Http(format!("{url}: {e}")))?;
        if !status.is_success() {
            return Err(OidcError::Http(format!("{url}: HTTP {status} {body}")));
        }
        Ok(body)
    }

    /// Signs with a new key from now on; the old key leaves the JWKS (unless the provider was
    /// started with `keep_old_keys`). Returns the new `kid`.
    pub async fn rotate_keys(&self) -> Result<String, OidcError> {
        self.rotate(None).await
    }

    /// Like [`Self::rotate_keys`], choosing whether the old public key stays in the JWKS.
    pub async fn rotate_keys_keeping_old(&self, keep_old: bool) -> Result<String, OidcError> {
        self.rotate(Some(keep_old)).await
    }

    async fn rotate(&self, keep_old: Option<bool>) -> Result<String, OidcError> {
        let body = keep_old.map(|k| json!({ "keep_old": k }));
        let r = self.test_hook(reqwest::Method::POST, "/test/rotate-keys", body).await?;
        r.get("kid")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| OidcError::Http(format!("rotate: {r}")))
    }

    /// Makes exchanges for `audience` (`"*"`: any) fail with an OAuth `error` and HTTP
    /// `status`, `times` times (`None`: until cleared).
    pub async fn fail_exchange(
        &self,
        audience: &str,
        error: &str,
        status: u16,
        times: Option<u32>,
    ) -> Result<(), OidcError> {
        let mut body = json!({"audience": audience, "error": error, "status": status});
        if let Some(t) = times {
            body["times"] = json!(t);
        }
        self.test_hook(reqwest::Method::POST, "/test/fail-exchange", Some(body)).await.map(|_| ())
    }

    /// Clears every injected exchange failure.
    pub async fn clear_exchange_failures(&self) -> Result<(), OidcError> {
        self.test_hook(reqwest::Method::DELETE, "/test/fail-exchange", None).await.map(|_| ())
    }

    /// Stops the provider now (to test behaviour while it is down).
    pub fn stop(&mut self) {
        self.peer.signal_and_wait("KILL");
    }
}
