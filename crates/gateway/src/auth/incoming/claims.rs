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
///
/// A payload `typ` that marks another kind of token (Keycloak's `ID`, `Refresh`, `Offline`,
/// `Logout`) is refused (L6): an ID token whose `aud` is the gateway's client id would
/// otherwise pass as an access token. Access tokens carry `typ: Bearer` there, or no `typ`.
pub fn check_jwt_claims(
    claims: &Map<String, Value>,
    issuer: &str,
    audience: &str,
    leeway: Duration,
) -> Result<(String, Option<SystemTime>), IncomingAuthError> {
    if let Some(Value::String(t)) = claims.get("typ")
        && NOT_ACCESS_TOKENS.iter().any(|k| t.eq_ignore_ascii_case(k))
    {
        return Err(IncomingAuthError::Malformed(
            "the token is an ID, refresh or logout token, not an access token",
        ));
    }
    check(claims, Expect { issuer, audience, leeway, require_iss_exp: true })
}

/// Payload `typ` values of tokens that are not access tokens.
const NOT_ACCESS_TOKENS: [&str; 4] = ["ID", "Refresh", "Offline", "Logout"];

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn claims(typ: Option<&str>) -> Map<String, Value> {
        let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 300;
        let mut c =
            serde_json::json!({"iss": "https://idp", "aud": "gw", "sub": "alice", "exp": exp});
        if let Some(t) = typ {
            c["typ"] = t.into();
        }
        c.as_object().unwrap().clone()
    }

    #[test]
    fn id_and_refresh_tokens_are_not_access_tokens() {
        let ok = |t| check_jwt_claims(&claims(t), "https://idp", "gw", Duration::ZERO);
        assert!(ok(None).is_ok());
        assert!(ok(Some("Bearer")).is_ok());
        for t in ["ID", "id", "Refresh", "Offline", "Logout"] {
            let e = ok(Some(t)).unwrap_err();
            assert!(e.to_string().contains("not an access token"), "{t}: {e}");
        }
    }
}
