//! Claim checks shared by JWT validation and introspection: `iss`, `aud`, `exp`, `nbf`, `sub`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use super::IncomingAuthError;

/// What the claims must satisfy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expect<'a> {
    pub(crate) issuer: &'a str,
    pub(crate) audience: &'a str,
    pub(crate) leeway: Duration,
    /// JWTs must carry `iss` and `exp`; introspection responses may omit them.
    pub(crate) require_iss_exp: bool,
}

fn number(
    claims: &Map<String, Value>,
    name: &'static str,
    malformed: &'static str,
) -> Result<Option<f64>, IncomingAuthError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or(IncomingAuthError::Malformed(malformed)),
    }
}

/// Checks the claims; returns the subject and the expiry.
pub(crate) fn check(
    claims: &Map<String, Value>,
    expect: Expect<'_>,
) -> Result<(String, Option<SystemTime>), IncomingAuthError> {
    match claims.get("iss") {
        Some(Value::String(iss)) if iss == expect.issuer => {}
        None if !expect.require_iss_exp => {}
        None => return Err(IncomingAuthError::Malformed("the token has no iss claim")),
        Some(_) => return Err(IncomingAuthError::WrongIssuer),
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    let leeway = expect.leeway.as_secs_f64();
    let exp = number(claims, "exp", "the exp claim is not a number")?;
    match exp {
        None if expect.require_iss_exp => {
            return Err(IncomingAuthError::Malformed("the token has no exp claim"));
        }
        Some(exp) if exp + leeway < now => return Err(IncomingAuthError::Expired),
        _ => {}
    }
    if let Some(nbf) = number(claims, "nbf", "the nbf claim is not a number")?
        && nbf - leeway > now
    {
        return Err(IncomingAuthError::NotYetValid);
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == expect.audience,
        Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(expect.audience)),
        _ => false,
    };
    if !aud_ok {
        return Err(IncomingAuthError::WrongAudience);
    }
    let sub = match claims.get("sub") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(IncomingAuthError::Malformed("the token has no sub claim")),
    };
    let expires_at = exp
        .and_then(|e| Duration::try_from_secs_f64(e).ok())
        .and_then(|d| UNIX_EPOCH.checked_add(d));
    Ok((sub, expires_at))
}

/// The claim checks a validated JWT goes through after its signature is verified: `iss` equal
/// to `issuer`, `exp` present and not past (with `leeway`), `nbf` not in the future, `aud`
/// containing `audience`, a non-empty `sub`. Returns the subject and the expiry.
pub fn check_jwt_claims(
    claims: &Map<String, Value>,
    issuer: &str,
    audience: &str,
    leeway: Duration,
) -> Result<(String, Option<SystemTime>), IncomingAuthError> {
    check(claims, Expect { issuer, audience, leeway, require_iss_exp: true })
}
