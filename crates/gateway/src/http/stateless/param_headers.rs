//! `Mcp-Param-{Name}` headers of a stateless `tools/call` (MCP 2026-07-28,
//! `basic/transports/streamable-http.mdx`, "Custom Headers from Tool Parameters"): a tool's
//! `inputSchema` may mark properties with `x-mcp-header: Name`; the client mirrors those
//! arguments into headers, and a server that reads the body must check that they agree.
//! Pure functions; unit tested below.

use axum::http::HeaderMap;
use serde_json::Value;

use super::envelope::{HEADER_MISMATCH, decode_header_value};
use crate::jsonrpc::RpcError;

const ANNOTATION: &str = "x-mcp-header";
const PREFIX: &str = "mcp-param-";

/// One annotated property: its path of `properties` keys, the header token, its type.
#[derive(Debug, PartialEq)]
struct Annotated<'a> {
    path: Vec<&'a str>,
    token: &'a str,
    kind: &'a str,
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn count_annotations(v: &Value) -> usize {
    match v {
        Value::Object(m) => {
            usize::from(m.contains_key(ANNOTATION))
                + m.values().map(count_annotations).sum::<usize>()
        }
        Value::Array(a) => a.iter().map(count_annotations).sum(),
        _ => 0,
    }
}

fn collect<'a>(schema: &'a Value, path: &mut Vec<&'a str>, out: &mut Vec<Annotated<'a>>) {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else { return };
    for (name, sub) in props {
        path.push(name);
        if let Some(token) = sub.get(ANNOTATION) {
            out.push(Annotated {
                path: path.clone(),
                token: token.as_str().unwrap_or_default(),
                kind: sub.get("type").and_then(Value::as_str).unwrap_or_default(),
            });
        }
        collect(sub, path, out);
        path.pop();
    }
}

/// The valid annotations of `schema`, or `None` when any annotation is invalid (not on a
/// property reachable through `properties` alone, not a header token, not on a string,
/// integer or boolean property, or repeated): clients drop such a tool, so nothing is checked.
fn annotations(schema: &Value) -> Option<Vec<Annotated<'_>>> {
    let mut out = Vec::new();
    collect(schema, &mut Vec::new(), &mut out);
    if out.len() != count_annotations(schema) {
        return None;
    }
    let mut seen = std::collections::HashSet::new();
    for a in &out {
        let ok = is_token(a.token)
            && matches!(a.kind, "string" | "integer" | "boolean")
            && seen.insert(a.token.to_ascii_lowercase());
        if !ok {
            return None;
        }
    }
    Some(out)
}

/// How a client renders an argument into a header (`None`: it cannot, and sends none).
fn render(v: &Value) -> Option<String> {
    match v {
        Value::Bool(b) => Some(b.to_string()),
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// An integer argument compared with its header numerically (`42` equals `42.0`).
fn integer_matches(value: &Value, header: &str) -> Option<bool> {
    let n = value.as_f64().filter(|f| f.fract() == 0.0)?;
    let (whole, fraction) = header.split_once('.').unwrap_or((header, ""));
    let digits = whole.strip_prefix('-').unwrap_or(whole);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !fraction.bytes().all(|b| b == b'0') {
        return Some(false);
    }
    Some(whole.parse::<i64>().ok().is_some_and(|w| w as f64 == n))
}

/// Checks the `Mcp-Param-*` headers of a `tools/call` against its `arguments`, for the tool's
/// `input_schema`: each annotated argument and its header must be present together and equal
/// (after the base64 sentinel is decoded), or absent together. `-32020` otherwise.
pub fn check(input_schema: &Value, arguments: &Value, headers: &HeaderMap) -> Result<(), RpcError> {
    let Some(annotated) = annotations(input_schema) else { return Ok(()) };
    for a in annotated {
        let name = format!("{PREFIX}{}", a.token.to_ascii_lowercase());
        let shown = format!("Mcp-Param-{}", a.token);
        let mismatch =
            |what: &str| RpcError::new(HEADER_MISMATCH, format!("the {shown} header {what}"));
        let mut copies = headers.get_all(name.as_str()).iter();
        let raw = copies.next();
        if copies.next().is_some() {
            return Err(mismatch("appears more than once"));
        }
        let value =
            a.path.iter().try_fold(arguments, |node, key| node.get(*key)).filter(|v| !v.is_null());
        let rendered = value.and_then(render);
        let (Some(value), Some(rendered)) = (value, rendered) else {
            if raw.is_some() {
                return Err(mismatch("is present but the argument is absent or not mirrorable"));
            }
            continue;
        };
        let Some(raw) = raw else { return Err(mismatch("is missing but the argument is present")) };
        let Some(decoded) = raw.to_str().ok().and_then(decode_header_value) else {
            return Err(mismatch("carries invalid characters or a malformed base64 value"));
        };
        let equal = match (a.kind, integer_matches(value, &decoded)) {
            ("integer", Some(same)) => same,
            _ => decoded == rendered,
        };
        if !equal {
            return Err(mismatch("does not match the argument"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderName, HeaderValue};
    use serde_json::json;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "region": {"type": "string", "x-mcp-header": "Region"},
            "count": {"type": "integer", "x-mcp-header": "Count"},
            "opts": {"type": "object", "properties": {"dry": {"type": "boolean", "x-mcp-header": "Dry"}}},
            "query": {"type": "string"}
        }})
    }

    #[test]
    fn annotated_arguments_and_headers_must_agree() {
        let s = schema();
        let args = json!({"region": "us-west1", "count": 42, "opts": {"dry": true}, "query": "q"});
        let good = [
            ("mcp-param-region", "us-west1"),
            ("Mcp-Param-Count", "42.0"),
            ("mcp-param-dry", "true"),
        ];
        assert!(check(&s, &args, &headers(&good)).is_ok());
        // Absent together is fine; null counts as absent.
        assert!(check(&s, &json!({"query": "q", "region": null}), &headers(&[])).is_ok());
        let bad = |h: &[(&str, &str)], a: &Value| check(&s, a, &headers(h)).unwrap_err().code;
        assert_eq!(bad(&good[1..], &args), HEADER_MISMATCH, "missing");
        assert_eq!(bad(&[("mcp-param-region", "eu")], &json!({"region": "us"})), HEADER_MISMATCH);
        assert_eq!(bad(&[("mcp-param-region", "eu")], &json!({})), HEADER_MISMATCH, "no argument");
        assert_eq!(bad(&[("mcp-param-count", "42.5")], &json!({"count": 42})), HEADER_MISMATCH);
        let twice = [("mcp-param-region", "us"), ("mcp-param-region", "us")];
        assert_eq!(bad(&twice, &json!({"region": "us"})), HEADER_MISMATCH);
        // The base64 sentinel is decoded first.
        let h = headers(&[("mcp-param-region", "=?base64?SGVsbG8sIOS4lueVjA==?=")]);
        assert!(check(&s, &json!({"region": "Hello, 世界"}), &h).is_ok());
    }

    #[test]
    fn invalid_annotations_check_nothing() {
        for s in [
            json!({"properties": {"a": {"type": "number", "x-mcp-header": "A"}}}),
            json!({"properties": {"a": {"type": "string", "x-mcp-header": "bad name"}}}),
            json!({"properties": {"a": {"type": "string", "x-mcp-header": "A"},
                                  "b": {"type": "string", "x-mcp-header": "a"}}}),
            json!({"properties": {"l": {"type": "array", "items": {"type": "string", "x-mcp-header": "I"}}}}),
        ] {
            assert!(annotations(&s).is_none(), "{s}");
            assert!(check(&s, &json!({}), &headers(&[("mcp-param-a", "x")])).is_ok());
        }
        assert_eq!(annotations(&schema()).unwrap().len(), 3);
        assert!(check(&json!({}), &json!({"x": 1}), &headers(&[])).is_ok());
    }
}
