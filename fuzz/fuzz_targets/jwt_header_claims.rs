//! Bearer token handling before and after the signature check: the `Authorization` header, the
//! JOSE header (`alg` allow-list, `typ`, `crit`), and the claim checks (`iss`, `aud`, `exp`,
//! `nbf`, `sub`). The input is used as a header value, as a token, and as a claims object.
#![no_main]

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use vmcp_gateway::auth::incoming::{
    DEFAULT_ALGORITHMS, bearer_from_headers, check_jwt_claims, check_jwt_header,
};

const ISSUER: &str = "https://issuer.example";
const AUDIENCE: &str = "vmcp-gateway";

fn claims(claims: &Map<String, Value>) {
    if let Ok((subject, _)) = check_jwt_claims(claims, ISSUER, AUDIENCE, Duration::from_secs(60)) {
        assert!(!subject.is_empty());
        assert_eq!(claims.get("sub").and_then(Value::as_str), Some(subject.as_str()));
        assert_eq!(claims.get("iss").and_then(Value::as_str), Some(ISSUER));
        assert!(claims.get("exp").is_some_and(Value::is_number));
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = http::HeaderValue::from_bytes(data) {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, value);
        if let Ok(Some(token)) = bearer_from_headers(&headers) {
            assert!(!token.is_empty() && !token.contains(' '));
        }
    }
    let token = String::from_utf8_lossy(data);
    if let Ok(Some(header)) = check_jwt_header(&token, &DEFAULT_ALGORITHMS) {
        assert!(DEFAULT_ALGORITHMS.contains(&header.alg));
    }
    if let Some(payload) = token.split('.').nth(1)
        && let Ok(bytes) = URL_SAFE_NO_PAD.decode(payload)
        && let Ok(Value::Object(map)) = serde_json::from_slice(&bytes)
    {
        claims(&map);
    }
    if let Ok(Value::Object(map)) = serde_json::from_slice(data) {
        claims(&map);
    }
});
