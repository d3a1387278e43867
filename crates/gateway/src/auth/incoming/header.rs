//! The JOSE header of a bearer token, checked before any key is looked up: the algorithm
//! allow-list (`none` and HMAC never), the access-token `typ`, no `crit`.

use std::str::FromStr;

use base64::Engine;
use jsonwebtoken::{Algorithm, AlgorithmFamily};
use serde_json::{Map, Value};

use super::IncomingAuthError;

/// Algorithms accepted when the configuration lists none.
pub const DEFAULT_ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Header `typ` values accepted (case-insensitive); an absent `typ` is accepted too.
const ACCEPTED_TYP: [&str; 3] = ["jwt", "at+jwt", "application/at+jwt"];

/// Parses the configured algorithm list (empty: [`DEFAULT_ALGORITHMS`]); `none` and HMAC
/// algorithms are refused.
pub fn parse_algorithms(names: &[String]) -> Result<Vec<Algorithm>, IncomingAuthError> {
    if names.is_empty() {
        return Ok(DEFAULT_ALGORITHMS.to_vec());
    }
    names
        .iter()
        .map(|n| match Algorithm::from_str(n) {
            Ok(a) if a.family() != AlgorithmFamily::Hmac => Ok(a),
            Ok(_) => {
                Err(IncomingAuthError::Config(format!("algorithm {n} (HMAC) is never accepted")))
            }
            Err(_) => Err(IncomingAuthError::Config(format!("algorithm {n:?} is not supported"))),
        })
        .collect()
}

/// The parts of a bearer token's JOSE header that select the verification key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtHeader {
    /// The signature algorithm (one of the allowed ones).
    pub alg: Algorithm,
    /// The key id, if the header names one.
    pub kid: Option<String>,
}

/// Checks the JOSE header of `token` before any key is looked up: `alg` must be one of
/// `allowed`, `typ` absent or an access-token type, no `crit`. `Ok(None)` when the token is not
/// a compact JWS at all (an opaque token, for introspection). No signature is checked here.
pub fn check_jwt_header(
    token: &str,
    allowed: &[Algorithm],
) -> Result<Option<JwtHeader>, IncomingAuthError> {
    let Some(header) = jwt_header(token) else { return Ok(None) };
    let alg_name = header.get("alg").and_then(Value::as_str).unwrap_or_default();
    let alg = Algorithm::from_str(alg_name)
        .ok()
        .filter(|a| allowed.contains(a))
        .ok_or_else(|| IncomingAuthError::AlgorithmNotAllowed(printable(alg_name)))?;
    match header.get("typ") {
        None => {}
        Some(Value::String(t)) if ACCEPTED_TYP.iter().any(|a| a.eq_ignore_ascii_case(t)) => {}
        Some(_) => {
            return Err(IncomingAuthError::Malformed("the token type is not an access token"));
        }
    }
    if header.contains_key("crit") {
        return Err(IncomingAuthError::Malformed("the token has critical header parameters"));
    }
    let kid = header.get("kid").and_then(Value::as_str).map(str::to_owned);
    Ok(Some(JwtHeader { alg, kid }))
}

/// The decoded JOSE header of a compact JWS, or `None` when `token` is not one.
fn jwt_header(token: &str) -> Option<Map<String, Value>> {
    let mut parts = token.split('.');
    let (h, _, _, None) = (parts.next()?, parts.next()?, parts.next()?, parts.next()) else {
        return None;
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(h).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// A token-supplied name, made safe for an error message.
fn printable(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '+').take(16).collect()
}
