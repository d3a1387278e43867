//! A real Keycloak (the OpenID provider users run), started once per test process and shared.
//!
//! [`Keycloak::shared`] installs the pinned distribution with `scripts/keycloak-install.sh`
//! (idempotent; see `tests/fixtures/keycloak/README.md`), starts
//! `kc.sh start-dev --db=dev-mem --import-realm` on a free loopback port with the `vmcp` realm,
//! and waits (up to 300 s) until `/realms/vmcp/.well-known/openid-configuration` answers.
//! Set `VMCP_KEYCLOAK_URL=http://127.0.0.1:<port>` to use a Keycloak that is already running
//! (with the same realm) instead.
//!
//! Stopping: a `static` is never dropped, so the harness cannot stop Keycloak from a `Drop`.
//! Instead `kc.sh` runs in its own process group, and a small watchdog shell (in a process
//! group of its own, so a Ctrl-C to the test's group does not kill it first) polls the test
//! process once a second; when the test process is gone it sends SIGTERM to Keycloak's process
//! group (kc.sh forwards it to the JVM; the JVM is in the group too), SIGKILL after 30 s if
//! anything is left, and removes the log folder. This works however the test process ends
//! (normal exit, panic, SIGKILL; a test process that is a zombie counts as gone).
//!
//! Tokens, clients and users are those of the realm fixture.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::OnceCell;

use crate::ports::free_port;
use crate::process::Peer;
use crate::repo_root;

/// The realm of the fixture.
pub const REALM: &str = "vmcp";
/// `sub` of the user `alice`.
pub const ALICE_SUB: &str = "3b9a6c2e-5d1f-4a57-9c1e-a11ce0000001";
/// `sub` of the user `bob`.
pub const BOB_SUB: &str = "7c4e1d9a-2b6f-4e83-8d2a-b0b000000002";

const READY_TIMEOUT: Duration = Duration::from_secs(300);

/// Why Keycloak could not be started or a call to it failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KeycloakError {
    /// The install script failed.
    #[error("keycloak-install.sh failed: {0}")]
    Install(String),
    /// Keycloak did not start or become ready.
    #[error("keycloak did not start: {0}")]
    Start(String),
    /// An HTTP call failed.
    #[error("keycloak: {0}")]
    Http(String),
}

/// A running Keycloak with the `vmcp` realm.
#[derive(Debug)]
pub struct Keycloak {
    base: String,
    started_in: Duration,
    /// The `kc.sh` process (None when `VMCP_KEYCLOAK_URL` was used). Never dropped.
    _peer: Option<Peer>,
}

static SHARED: OnceCell<Result<Keycloak, KeycloakError>> = OnceCell::const_new();
/// Serializes admin changes (key rotation) between tests of one process.
static ADMIN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn client() -> reqwest::Client {
    // A fresh client per call: the shared Keycloak outlives each test's runtime, and a pooled
    // connection must not outlive the runtime that opened it.
    reqwest::Client::new()
}

impl Keycloak {
    /// The Keycloak of this test process (started by the first caller; later callers wait for
    /// it). A start failure is remembered and returned to every caller.
    pub async fn shared() -> Result<&'static Keycloak, KeycloakError> {
        SHARED.get_or_init(Self::start).await.as_ref().map_err(Clone::clone)
    }

    async fn start() -> Result<Self, KeycloakError> {
        let started = Instant::now();
        if let Ok(url) = std::env::var("VMCP_KEYCLOAK_URL") {
            let base = url.trim_end_matches('/').to_owned();
            wait_until_ready(&base, READY_TIMEOUT).await?;
            return Ok(Self { base, started_in: started.elapsed(), _peer: None });
        }
        let home = tokio::task::spawn_blocking(install)
            .await
            .map_err(|e| KeycloakError::Install(e.to_string()))??;
        let port = free_port().map_err(|e| KeycloakError::Start(format!("no free port: {e}")))?;
        let dir = tempfile::Builder::new()
            .prefix("vmcp-keycloak-")
            .tempdir()
            .map_err(|e| KeycloakError::Start(format!("temp dir: {e}")))?
            .keep();
        let mut cmd = Command::new(home.join("bin/kc.sh"));
        cmd.args([
            "start-dev",
            "--http-host=127.0.0.1",
            &format!("--http-port={port}"),
            "--db=dev-mem",
            "--import-realm",
        ])
        .env("KC_BOOTSTRAP_ADMIN_USERNAME", "admin")
        .env("KC_BOOTSTRAP_ADMIN_PASSWORD", "admin")
        .env("JAVA_OPTS_APPEND", "-XX:TieredStopAtLevel=1");
        if let Ok(j) = std::env::var("KC_JAVA_HOME") {
            cmd.env("JAVA_HOME", j);
        }
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        eprintln!(
            "[harness] starting Keycloak on 127.0.0.1:{port} (log: {}/keycloak.log)",
            dir.display()
        );
        let mut peer = Peer::spawn("keycloak", cmd, dir.join("keycloak.log"))
            .map_err(|e| KeycloakError::Start(e.to_string()))?;
        let pgid = peer.pid().unwrap_or_default();
        spawn_watchdog(pgid, &dir);
        let base = format!("http://127.0.0.1:{port}");
        let http = client();
        let probe = discovery_url(&base);
        let ready = peer
            .wait_ready(READY_TIMEOUT, || {
                let (http, probe) = (http.clone(), probe.clone());
                async move { http.get(&probe).send().await.is_ok_and(|r| r.status().is_success()) }
            })
            .await;
        if let Err(e) = ready {
            // kc.sh forwards SIGTERM to the JVM; SIGKILL on kc.sh alone would orphan the JVM.
            let _ = Command::new("kill").arg("-TERM").arg(format!("-{pgid}")).status();
            return Err(KeycloakError::Start(e.to_string()));
        }
        let started_in = started.elapsed();
        eprintln!("[harness] Keycloak ready in {:.1} s", started_in.as_secs_f64());
        Ok(Self { base, started_in, _peer: Some(peer) })
    }

    /// How long the start took (install check + JVM start + realm import).
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `http://127.0.0.1:<port>/realms/vmcp`.
    pub fn issuer(&self) -> String {
        format!("{}/realms/{REALM}", self.base)
    }

    /// The token endpoint of the realm.
    pub fn token_url(&self) -> String {
        format!("{}/protocol/openid-connect/token", self.issuer())
    }

    /// The JWKS of the realm (has an `enc` key besides the signature keys).
    pub fn jwks_url(&self) -> String {
        format!("{}/protocol/openid-connect/certs", self.issuer())
    }

    /// POSTs a form to the realm's token endpoint; returns the status and the JSON body.
    pub async fn token_request(
        &self,
        form: &[(&str, &str)],
    ) -> Result<(u16, Value), KeycloakError> {
        let url = self.token_url();
        let resp = client()
            .post(&url)
            .form(form)
            .send()
            .await
            .map_err(|e| KeycloakError::Http(format!("POST {url}: {e}")))?;
        let status = resp.status().as_u16();
        let body =
            resp.json().await.map_err(|e| KeycloakError::Http(format!("token response: {e}")))?;
        Ok((status, body))
    }

    /// A user's access token from the password grant (client `vmcp-cli`; `aud` is
    /// `vmcp-gateway`).
    pub async fn password_token(
        &self,
        user: &str,
        password: &str,
    ) -> Result<String, KeycloakError> {
        let form = [
            ("grant_type", "password"),
            ("client_id", "vmcp-cli"),
            ("username", user),
            ("password", password),
        ];
        let (status, body) = self.token_request(&form).await?;
        body.get("access_token").and_then(Value::as_str).map(str::to_owned).ok_or_else(|| {
            KeycloakError::Http(format!("password grant for {user}: HTTP {status} {body}"))
        })
    }

    async fn admin_token(&self, http: &reqwest::Client) -> Result<String, KeycloakError> {
        let url = format!("{}/realms/master/protocol/openid-connect/token", self.base);
        let form = [
            ("grant_type", "password"),
            ("client_id", "admin-cli"),
            ("username", "admin"),
            ("password", "admin"),
        ];
        let body: Value = http
            .post(&url)
            .form(&form)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| KeycloakError::Http(format!("admin token: {e}")))?
            .json()
            .await
            .map_err(|e| KeycloakError::Http(format!("admin token: {e}")))?;
        body.get("access_token")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| KeycloakError::Http(format!("admin token: {body}")))
    }

    async fn admin(
        &self,
        http: &reqwest::Client,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Option<Value>, KeycloakError> {
        let url = format!("{}/admin/realms/{REALM}{path}", self.base);
        let mut req = http.request(method.clone(), &url).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp =
            req.send().await.map_err(|e| KeycloakError::Http(format!("{method} {url}: {e}")))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(KeycloakError::Http(format!("{method} {url}: HTTP {status} {text}")));
        }
        Ok(serde_json::from_str(&text).ok())
    }

    /// The `kid` of the realm's active RS256 signing key.
    pub async fn active_kid(&self) -> Result<String, KeycloakError> {
        let http = client();
        let t = self.admin_token(&http).await?;
        self.active_kid_with(&http, &t).await
    }

    async fn active_kid_with(
        &self,
        http: &reqwest::Client,
        t: &str,
    ) -> Result<String, KeycloakError> {
        let keys =
            self.admin(http, t, reqwest::Method::GET, "/keys", None).await?.unwrap_or_default();
        keys.pointer("/active/RS256")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| KeycloakError::Http(format!("no active RS256 key: {keys}")))
    }

    /// Rotates the realm's signing key through the admin REST API: adds a new RS256 key with a
    /// higher priority, so new tokens carry a new `kid`. The old keys stay in the JWKS (other
    /// tests sharing this Keycloak may hold tokens signed with them). Returns the new `kid`.
    pub async fn rotate_keys(&self) -> Result<String, KeycloakError> {
        let _serial = ADMIN.lock().await;
        let http = client();
        let t = self.admin_token(&http).await?;
        let before = self.active_kid_with(&http, &t).await?;
        let realm =
            self.admin(&http, &t, reqwest::Method::GET, "", None).await?.unwrap_or_default();
        let realm_id = realm
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| KeycloakError::Http("realm has no id".into()))?;
        let providers = self
            .admin(
                &http,
                &t,
                reqwest::Method::GET,
                "/components?type=org.keycloak.keys.KeyProvider",
                None,
            )
            .await?
            .unwrap_or_default();
        let top = providers
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| {
                c.pointer("/config/priority/0").and_then(Value::as_str)?.parse::<i64>().ok()
            })
            .max()
            .unwrap_or(100);
        let component = json!({
            "name": format!("rsa-rotated-{}", top + 100),
            "providerId": "rsa-generated",
            "providerType": "org.keycloak.keys.KeyProvider",
            "parentId": realm_id,
            "config": {"priority": [(top + 100).to_string()], "keySize": ["2048"], "algorithm": ["RS256"],
                       "active": ["true"], "enabled": ["true"]}
        });
        self.admin(&http, &t, reqwest::Method::POST, "/components", Some(component)).await?;
        let after = self.active_kid_with(&http, &t).await?;
        if after == before {
            return Err(KeycloakError::Http(format!(
                "the active kid is still {before} after rotation"
            )));
        }
        Ok(after)
    }
}

fn discovery_url(base: &str) -> String {
    format!("{base}/realms/{REALM}/.well-known/openid-configuration")
}

async fn wait_until_ready(base: &str, timeout: Duration) -> Result<(), KeycloakError> {
    let http = client();
    let start = Instant::now();
    loop {
        if http.get(discovery_url(base)).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(KeycloakError::Start(format!(
                "{base} did not serve the vmcp realm within {timeout:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs the install script; returns the Keycloak home (its last stdout line).
fn install() -> Result<PathBuf, KeycloakError> {
    let script = repo_root().join("scripts/keycloak-install.sh");
    let out = Command::new(&script)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| KeycloakError::Install(format!("cannot run {}: {e}", script.display())))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let home = stdout.lines().last().map(str::trim).unwrap_or_default();
    if !out.status.success() || home.is_empty() {
        return Err(KeycloakError::Install(format!(
            "exit {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(PathBuf::from(home))
}

/// Stops Keycloak's process group when this test process is gone (see the module docs).
fn spawn_watchdog(kc_pgid: u32, dir: &std::path::Path) {
    if kc_pgid == 0 {
        return;
    }
    let script = r#"
        alive() { kill -0 "$1" 2>/dev/null && [ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" != Z ]; }
        while alive "$1"; do sleep 1; done
        kill -TERM "-$2" 2>/dev/null
        i=0
        while kill -0 "-$2" 2>/dev/null && [ "$i" -lt 30 ]; do sleep 1; i=$((i + 1)); done
        kill -KILL "-$2" 2>/dev/null
        rm -rf "$3"
    "#;
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script, "vmcp-keycloak-watchdog"])
        .arg(std::process::id().to_string())
        .arg(kc_pgid.to_string())
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    if let Err(e) = cmd.spawn() {
        eprintln!(
            "[harness] cannot start the Keycloak watchdog ({e}); stop Keycloak by hand: kill -TERM -{kc_pgid}"
        );
    }
}
