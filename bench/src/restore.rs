//! Cold restore: sessions created on replica A (one user each, OIDC + token exchange, Redis),
//! then the first call of each on a fresh replica B that shares the Redis. B must read the
//! record and exchange that user's token (its exchange cache is cold for every user).
//!
//! The gateway's own share of a restore, per session, is `cold − warm − IdP − backend`: the
//! first call on B, minus the second call on B (the same forwarding and backend work without the
//! restore), minus the IdP's token-exchange latency for that user measured by the bench right
//! after, minus the backend's time for what a resumed backend session is asked before the first
//! call (its four capability lists, asked at once, as the gateway asks them), measured by the
//! bench right after on the backend directly. The design's target excludes IdP and backend time.

use std::time::{Duration, Instant};

use serde_json::Value;
use vmcp_e2e::oidc::{GATEWAY_CLIENT_ID, GATEWAY_CLIENT_SECRET, OidcProvider};

use crate::load::{Method, REQUEST_TIMEOUT, one_call};
use crate::mcp::{Conn, Endpoint, McpError, Session};
use crate::report::RestoreRow;
use crate::stats::summarize;

/// The lists a gateway asks a resumed backend session (capabilities unknown) before using it.
const RESUME_LISTS: [&str; 4] =
    ["tools/list", "resources/list", "resources/templates/list", "prompts/list"];

/// The backend asked directly what a restore asks it: [`RESUME_LISTS`] at once, one keep-alive
/// connection each, on one backend session.
struct BackendLists {
    conns: [Conn; 4],
    session: Session,
}

impl BackendLists {
    async fn open(url: &str) -> anyhow::Result<Self> {
        let endpoint = Endpoint::parse(url)?;
        // One session on four connections: distinct JSON-RPC ids, as the gateway's are.
        let mut n = 0;
        let mut conns = RESUME_LISTS.map(|_| {
            n += 1;
            Conn::with_id_base(endpoint.clone(), REQUEST_TIMEOUT, n << 32)
        });
        // The example backends take any bearer or none; the gateway's exchanged token is not
        // needed to time their lists.
        let session = conns[0].open_session(None).await?;
        Ok(Self { conns, session })
    }

    /// Wall time of the four lists asked at once. A JSON-RPC error answer (a list the backend
    /// does not serve) is an answer, as it is to the gateway; a transport failure is an error.
    async fn latency(&mut self) -> Result<Duration, String> {
        let s = &self.session;
        let [c0, c1, c2, c3] = &mut self.conns;
        let [m0, m1, m2, m3] = RESUME_LISTS;
        let none = || serde_json::json!({});
        let t0 = Instant::now();
        let answers = tokio::join!(
            c0.request(s, m0, none()),
            c1.request(s, m1, none()),
            c2.request(s, m2, none()),
            c3.request(s, m3, none()),
        );
        let took = t0.elapsed();
        for a in [answers.0, answers.1, answers.2, answers.3] {
            match a {
                Ok(_) | Err(McpError::Protocol { .. }) => {}
                Err(e) => return Err(format!("backend lists: {e}")),
            }
        }
        Ok(took)
    }
}

/// One RFC 8693 exchange by the bench itself; its latency.
async fn exchange_latency(idp: &OidcProvider, subject: &str) -> Result<Duration, String> {
    let t0 = Instant::now();
    let (status, body): (u16, Value) = idp
        .token_request(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
            ("subject_token", subject),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:access_token"),
            ("audience", "backend-a"),
            ("client_id", GATEWAY_CLIENT_ID),
            ("client_secret", GATEWAY_CLIENT_SECRET),
        ])
        .await
        .map_err(|e| e.to_string())?;
    let took = t0.elapsed();
    if status != 200 {
        return Err(format!("exchange: HTTP {status} {body}"));
    }
    Ok(took)
}

/// Measures restores of one session per bearer: created on `a_url`, first used on `b_url`;
/// `backend_url` is the token-exchange member both gateways front.
pub async fn run(
    label: &str,
    a_url: &str,
    b_url: &str,
    backend_url: &str,
    tool: &str,
    bearers: &[String],
    idp: &OidcProvider,
) -> anyhow::Result<RestoreRow> {
    let mut a = Conn::new(Endpoint::parse(a_url)?, REQUEST_TIMEOUT);
    let mut sessions = Vec::new();
    let mut row = RestoreRow { target: label.to_owned(), ..Default::default() };
    for b in bearers {
        match a.open_session(Some(b.clone())).await {
            Ok(s) => sessions.push(s),
            Err(e) => {
                row.errors += 1;
                row.first_error.get_or_insert_with(|| format!("create on replica A: {e}"));
            }
        }
    }
    // Let coalesced store writes land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut b = Conn::new(Endpoint::parse(b_url)?, REQUEST_TIMEOUT);
    let mut lists = BackendLists::open(backend_url).await?;
    let (mut cold, mut warm, mut idp_t, mut backend_t, mut own) =
        (vec![], vec![], vec![], vec![], vec![]);
    for s in &sessions {
        let t0 = Instant::now();
        let first = one_call(&mut b, s, Method::Call, tool).await;
        let t_cold = t0.elapsed();
        if let Err(e) = first {
            row.errors += 1;
            row.first_error.get_or_insert_with(|| format!("first call on replica B: {e}"));
            continue;
        }
        let t1 = Instant::now();
        let second = one_call(&mut b, s, Method::Call, tool).await;
        let t_warm = t1.elapsed();
        if let Err(e) = second {
            row.errors += 1;
            row.first_error.get_or_insert_with(|| format!("second call on replica B: {e}"));
            continue;
        }
        let bearer = s.bearer.as_deref().unwrap_or_default();
        let t_idp = match exchange_latency(idp, bearer).await {
            Ok(t) => t,
            Err(e) => {
                row.errors += 1;
                row.first_error.get_or_insert(e);
                continue;
            }
        };
        let t_backend = match lists.latency().await {
            Ok(t) => t,
            Err(e) => {
                row.errors += 1;
                row.first_error.get_or_insert(e);
                continue;
            }
        };
        let us = |d: Duration| d.as_micros() as u64;
        cold.push(us(t_cold));
        warm.push(us(t_warm));
        idp_t.push(us(t_idp));
        backend_t.push(us(t_backend));
        own.push(us(t_cold).saturating_sub(us(t_warm) + us(t_idp) + us(t_backend)));
    }
    row.sessions = cold.len();
    if !cold.is_empty() {
        row.cold = Some(summarize(cold, 0, 0.0, None));
        row.warm = Some(summarize(warm, 0, 0.0, None));
        row.idp = Some(summarize(idp_t, 0, 0.0, None));
        row.backend = Some(summarize(backend_t, 0, 0.0, None));
        row.own_share = Some(summarize(own, 0, 0.0, None));
    }
    Ok(row)
}
