//! The per-request envelope of MCP 2026-07-28 (stateless), as pure functions: which requests
//! take the stateless path, the validation ladder (`_meta` fields, then the mirrored headers,
//! then the version), the revision's error codes and their HTTP statuses, and the shape of
//! its results (`resultType`, caching hints, `serverInfo`). No I/O; unit tested below.
//!
//! Facts from the specification (`docs/specification/2026-07-28/`): `basic/index.mdx`
//! (per-request `_meta` fields, error codes), `basic/transports/streamable-http.mdx`
//! (request metadata headers, server validation, status codes), `server/discover.mdx`,
//! `server/utilities/caching.mdx`.

use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use serde_json::{Map, Value, json};

use crate::jsonrpc::{
    INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR, RESOURCE_NOT_FOUND, RpcError,
};
use crate::protocol::{Method, SESSION_HEADER, SUPPORTED_VERSIONS, VERSION_HEADER};

/// Revisions served without a session (per-request envelope), newest first.
pub const MODERN_VERSIONS: &[&str] = &["2026-07-28"];
/// `Mcp-Method`: mirrors the body's `method`.
pub const METHOD_HEADER: &str = "mcp-method";
/// `Mcp-Name`: mirrors `params.name` (`tools/call`, `prompts/get`) or `params.uri`
/// (`resources/read`).
pub const NAME_HEADER: &str = "mcp-name";
/// `_meta` key: the request's protocol revision (required).
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// `_meta` key: the client's capabilities for this request (required).
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
/// `_meta` key: the client's name and version (optional).
pub const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
/// `_meta` key: the log level the client opts into for this request (optional).
pub const META_LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";
/// `_meta` key of results: the server's name and version.
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
/// The HTTP headers do not match the body, or a required one is missing or malformed.
pub const HEADER_MISMATCH: i64 = -32020;
/// The request needs a client capability the request did not declare.
pub const MISSING_REQUIRED_CLIENT_CAPABILITY: i64 = -32021;
/// The request's revision is not served here (`data.supported` lists what is).
pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
/// `server/discover`: the revision's replacement for the `initialize` handshake.
pub const DISCOVER: &str = "server/discover";

/// The per-request `_meta` keys the gateway consumes; never forwarded to a backend (which
/// speaks an older revision inside the gateway's own backend session).
const RESERVED_META: [&str; 4] =
    [META_PROTOCOL_VERSION, META_CLIENT_CAPABILITIES, META_CLIENT_INFO, META_LOG_LEVEL];

/// The methods of the revision the gateway serves (besides `server/discover`).
pub fn served(method: Method) -> bool {
    matches!(
        method,
        Method::ToolsList
            | Method::ToolsCall
            | Method::ResourcesList
            | Method::ResourcesTemplatesList
            | Method::ResourcesRead
            | Method::PromptsList
            | Method::PromptsGet
            | Method::CompletionComplete
    )
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn meta(params: Option<&Value>) -> Option<&Map<String, Value>> {
    params?.get("_meta")?.as_object()
}

/// Does this POST take the stateless path? When its `MCP-Protocol-Version` header names a
/// stateless revision, or (without a session) its body carries the per-request protocol
/// version: then the envelope rules answer it, including a header that disagrees with the
/// body. Everything else (sessions, `initialize`, older clients' probes) keeps the
/// session path.
pub fn applies(headers: &HeaderMap, body: &Value) -> bool {
    let modern_header = headers
        .get_all(VERSION_HEADER)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| MODERN_VERSIONS.contains(&v)));
    modern_header
        || (headers.get(SESSION_HEADER).is_none()
            && meta(body.get("params")).is_some_and(|m| m.contains_key(META_PROTOCOL_VERSION)))
}

/// What a valid envelope declares.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The request's revision (one of [`MODERN_VERSIONS`]).
    pub version: String,
    /// The client's capabilities for this request.
    pub client_capabilities: Value,
}

fn mismatch(message: impl Into<String>) -> RpcError {
    RpcError::new(HEADER_MISMATCH, message)
}

/// Every revision the gateway serves: stateless ones first, then the session revisions.
pub fn all_versions() -> Vec<&'static str> {
    MODERN_VERSIONS.iter().chain(SUPPORTED_VERSIONS.iter()).copied().collect()
}

/// The `UnsupportedProtocolVersion` error for `requested`.
pub fn unsupported(requested: &str) -> RpcError {
    RpcError::new(UNSUPPORTED_PROTOCOL_VERSION, "Unsupported protocol version")
        .with_data(json!({ "supported": all_versions(), "requested": requested }))
}

/// Decodes a header value that may use the `=?base64?…?=` sentinel (`Mcp-Name`,
/// `Mcp-Param-*`). `None` for a malformed sentinel, so it never matches a body value.
pub fn decode_header_value(v: &str) -> Option<String> {
    let Some(payload) = v.strip_prefix("=?base64?").and_then(|p| p.strip_suffix("?=")) else {
        return Some(v.to_owned());
    };
    let bytes = base64::engine::general_purpose::STANDARD.decode(payload).ok()?;
    String::from_utf8(bytes).ok()
}

/// The validation ladder of one request (its `method` and `params`); the first failing rung
/// wins: a repeated routing header, then the required `_meta` fields (`-32602`), then the
/// mirrored headers against the body (`-32020`), then the version (`-32022`).
pub fn check(
    headers: &HeaderMap,
    method: &str,
    params: Option<&Value>,
) -> Result<Envelope, RpcError> {
    for name in [VERSION_HEADER, METHOD_HEADER, NAME_HEADER] {
        if headers.get_all(name).iter().count() > 1 {
            return Err(mismatch(format!("the {name} header appears more than once")));
        }
    }
    let Some(meta) = meta(params) else {
        return Err(RpcError::new(
            INVALID_PARAMS,
            format!(
                "params._meta must be an object with '{META_PROTOCOL_VERSION}' and '{META_CLIENT_CAPABILITIES}'"
            ),
        ));
    };
    let missing: Vec<&str> = [META_PROTOCOL_VERSION, META_CLIENT_CAPABILITIES]
        .into_iter()
        .filter(|k| !meta.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        return Err(RpcError::new(
            INVALID_PARAMS,
            format!("params._meta is missing the required key(s): {}", missing.join(", ")),
        ));
    }
    let version = &meta[META_PROTOCOL_VERSION];
    if header(headers, VERSION_HEADER).is_none_or(|h| version.as_str() != Some(h)) {
        return Err(mismatch(format!(
            "the {VERSION_HEADER} header does not match params._meta['{META_PROTOCOL_VERSION}']"
        )));
    }
    if header(headers, METHOD_HEADER) != Some(method) {
        return Err(mismatch(format!("the {METHOD_HEADER} header does not match the method")));
    }
    let name_key = match Method::parse(method) {
        Some(Method::ToolsCall | Method::PromptsGet) => Some("name"),
        Some(Method::ResourcesRead) => Some("uri"),
        _ => None,
    };
    if let Some(key) = name_key
        && let Some(expected) = params.and_then(|p| p.get(key)).and_then(Value::as_str)
        && header(headers, NAME_HEADER).and_then(decode_header_value).as_deref() != Some(expected)
    {
        return Err(mismatch(format!(
            "the {NAME_HEADER} header does not match params.{key} (or is missing)"
        )));
    }
    let Some(version) = version.as_str() else {
        return Err(RpcError::new(INVALID_PARAMS, "the protocol version must be a string"));
    };
    if !MODERN_VERSIONS.contains(&version) {
        return Err(unsupported(version));
    }
    Ok(Envelope {
        version: version.to_owned(),
        client_capabilities: meta[META_CLIENT_CAPABILITIES].clone(),
    })
}

/// Removes the per-request envelope from `params._meta` before the request goes to a
/// backend (the backend speaks an older revision in the gateway's backend session); other
/// `_meta` keys (`progressToken`, trace context) stay.
pub fn strip_envelope(params: &mut Value) {
    let Some(meta) = params.get_mut("_meta").and_then(Value::as_object_mut) else { return };
    for k in RESERVED_META {
        meta.remove(k);
    }
    if meta.is_empty()
        && let Some(p) = params.as_object_mut()
    {
        p.remove("_meta");
    }
}

/// The HTTP status of a JSON answer carrying JSON-RPC error `code`: 404 for an unknown
/// method, 400 for a malformed or mismatched request, else 200.
pub fn status_for(code: i64) -> StatusCode {
    match code {
        METHOD_NOT_FOUND => StatusCode::NOT_FOUND,
        PARSE_ERROR
        | INVALID_REQUEST
        | INVALID_PARAMS
        | HEADER_MISMATCH
        | MISSING_REQUIRED_CLIENT_CAPABILITY
        | UNSUPPORTED_PROTOCOL_VERSION => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    }
}

/// The gateway's identity, as the revision's results carry it.
pub fn server_info() -> Value {
    json!({ "name": "vmcp", "title": "vmcp gateway", "version": env!("CARGO_PKG_VERSION") })
}

/// Rewrites a JSON-RPC response of the session machinery into the revision's shape, for
/// the client's own request id: results get `resultType`, the caching hints where the
/// revision requires them (lists and `resources/read`: private, because each identity has
/// its own view, and immediately stale, because this revision's change notifications are
/// not offered) and the gateway's `serverInfo`; the retired `-32002` becomes `-32602`.
pub fn finish(response: &mut Value, client_id: &Value, method: Method) {
    response["id"] = client_id.clone();
    if let Some(result) = response.get_mut("result").and_then(Value::as_object_mut) {
        result.entry("resultType").or_insert_with(|| json!("complete"));
        if method.is_list() || method == Method::ResourcesRead {
            result.insert("cacheScope".into(), json!("private"));
            result.insert("ttlMs".into(), json!(0));
        }
        let meta = result.entry("_meta").or_insert_with(|| json!({}));
        if let Some(m) = meta.as_object_mut() {
            m.entry(META_SERVER_INFO).or_insert_with(server_info);
        }
    } else if let Some(code) = response.pointer_mut("/error/code")
        && code.as_i64() == Some(RESOURCE_NOT_FOUND)
    {
        *code = json!(INVALID_PARAMS);
    }
}

/// The `server/discover` result: every revision served, the capabilities of the gateway's
/// merged endpoint (no `listChanged`/`subscribe`: this revision delivers those through
/// `subscriptions/listen`, which the gateway does not offer yet), its identity. The same for
/// every caller, so publicly cacheable.
pub fn discover_result() -> Value {
    json!({
        "resultType": "complete",
        "supportedVersions": all_versions(),
        "capabilities": { "tools": {}, "resources": {}, "prompts": {}, "completions": {} },
        "_meta": { META_SERVER_INFO: server_info() },
        "ttlMs": 60_000,
        "cacheScope": "public",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn check_body(h: &HeaderMap, body: &Value) -> Result<Envelope, RpcError> {
        check(h, body["method"].as_str().unwrap_or_default(), body.get("params"))
    }

    fn call(name: &str) -> Value {
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": name, "arguments": {},
            "_meta": {META_PROTOCOL_VERSION: "2026-07-28", META_CLIENT_CAPABILITIES: {},
                "progressToken": 7}}})
    }

    const GOOD: &[(&str, &str)] = &[
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "a_echo"),
    ];

    #[test]
    fn which_requests_are_stateless() {
        let modern = headers(&[("mcp-protocol-version", "2026-07-28")]);
        assert!(applies(&modern, &json!({})));
        let old = headers(&[("mcp-protocol-version", "2025-11-25")]);
        assert!(!applies(&old, &json!({"method": "tools/list"})));
        // The body's per-request version without a session takes the path (and then fails
        // the header rung); with a session it is an old client's business.
        assert!(applies(&HeaderMap::new(), &call("x")));
        let session = headers(&[("mcp-session-id", "abc")]);
        assert!(!applies(&session, &call("x")));
        // An older client's probe (no envelope) stays on the session path.
        assert!(!applies(&HeaderMap::new(), &json!({"method": "server/discover", "params": {}})));
    }

    #[test]
    fn a_valid_envelope_passes() {
        let env = check_body(&headers(GOOD), &call("a_echo")).unwrap();
        assert_eq!(env.version, "2026-07-28");
        assert_eq!(env.client_capabilities, json!({}));
    }

    #[test]
    fn the_ladder_reports_the_first_failure() {
        let code = |h: &[(&str, &str)], b: &Value| check_body(&headers(h), b).unwrap_err().code;
        // Missing _meta fields: invalid params.
        let mut b = call("a_echo");
        b["params"]["_meta"].as_object_mut().unwrap().remove(META_CLIENT_CAPABILITIES);
        assert_eq!(code(GOOD, &b), INVALID_PARAMS);
        assert_eq!(code(GOOD, &json!({"method": "tools/call", "params": {}})), INVALID_PARAMS);
        // Each mirrored header, missing or different: header mismatch.
        for drop in ["mcp-protocol-version", "mcp-method", "mcp-name"] {
            let h: Vec<_> = GOOD.iter().copied().filter(|(k, _)| *k != drop).collect();
            assert_eq!(code(&h, &call("a_echo")), HEADER_MISMATCH, "without {drop}");
        }
        assert_eq!(code(GOOD, &call("b_echo")), HEADER_MISMATCH);
        let mut h = GOOD.to_vec();
        h[1] = ("mcp-method", "tools/list");
        assert_eq!(code(&h, &call("a_echo")), HEADER_MISMATCH);
        let mut twice = GOOD.to_vec();
        twice.push(("mcp-method", "tools/call"));
        assert_eq!(code(&twice, &call("a_echo")), HEADER_MISMATCH);
        // A version nobody serves, in header and body alike: unsupported, listing ours.
        let mut b = call("a_echo");
        b["params"]["_meta"][META_PROTOCOL_VERSION] = json!("2099-01-01");
        let mut h = GOOD.to_vec();
        h[0] = ("mcp-protocol-version", "2099-01-01");
        let e = check_body(&headers(&h), &b).unwrap_err();
        assert_eq!(e.code, UNSUPPORTED_PROTOCOL_VERSION);
        let data = e.data.unwrap();
        assert_eq!(data["requested"], "2099-01-01");
        assert_eq!(data["supported"][0], "2026-07-28");
        assert!(data["supported"].as_array().unwrap().contains(&json!("2025-03-26")));
    }

    #[test]
    fn mcp_name_may_be_base64_encoded() {
        assert_eq!(decode_header_value("plain").as_deref(), Some("plain"));
        assert_eq!(decode_header_value("=?base64?SGVsbG8sIOS4lueVjA==?=").unwrap(), "Hello, 世界");
        assert_eq!(decode_header_value("=?base64?***?="), None);
        let name = "Hello, 世界";
        let mut h = GOOD.to_vec();
        h[2] = ("mcp-name", "=?base64?SGVsbG8sIOS4lueVjA==?=");
        assert!(check_body(&headers(&h), &call(name)).is_ok());
        h[2] = ("mcp-name", "=?base64?SGVsbG8=?=");
        assert_eq!(check_body(&headers(&h), &call(name)).unwrap_err().code, HEADER_MISMATCH);
    }

    #[test]
    fn the_envelope_is_not_forwarded() {
        let mut p = call("a")["params"].clone();
        strip_envelope(&mut p);
        assert_eq!(p["_meta"], json!({"progressToken": 7}));
        let mut p =
            json!({"_meta": {META_PROTOCOL_VERSION: "2026-07-28", META_CLIENT_CAPABILITIES: {}}});
        strip_envelope(&mut p);
        assert_eq!(p, json!({}));
    }

    #[test]
    fn results_get_the_revisions_fields() {
        let mut r = json!({"jsonrpc": "2.0", "id": "vmcp-sl-1", "result": {"tools": []}});
        finish(&mut r, &json!(9), Method::ToolsList);
        assert_eq!(r["id"], 9);
        assert_eq!(r["result"]["resultType"], "complete");
        assert_eq!(
            (r["result"]["cacheScope"].clone(), r["result"]["ttlMs"].clone()),
            (json!("private"), json!(0))
        );
        assert_eq!(r["result"]["_meta"][META_SERVER_INFO]["name"], "vmcp");
        let mut r = json!({"id": "x", "result": {"content": [], "_meta": {"k": 1}}});
        finish(&mut r, &json!("c"), Method::ToolsCall);
        assert!(r["result"].get("ttlMs").is_none(), "tools/call results are not cacheable");
        assert_eq!(r["result"]["_meta"]["k"], 1);
        let mut r = json!({"id": "x", "error": {"code": RESOURCE_NOT_FOUND, "message": "m"}});
        finish(&mut r, &json!(1), Method::ResourcesRead);
        assert_eq!(r["error"]["code"], INVALID_PARAMS);
        let d = discover_result();
        assert_eq!(d["supportedVersions"][0], "2026-07-28");
        assert_eq!(d["cacheScope"], "public");
    }

    #[test]
    fn statuses() {
        assert_eq!(status_for(METHOD_NOT_FOUND), StatusCode::NOT_FOUND);
        assert_eq!(status_for(HEADER_MISMATCH), StatusCode::BAD_REQUEST);
        assert_eq!(status_for(UNSUPPORTED_PROTOCOL_VERSION), StatusCode::BAD_REQUEST);
        assert_eq!(status_for(crate::jsonrpc::INTERNAL_ERROR), StatusCode::OK);
        assert!(served(Method::ToolsCall) && !served(Method::Initialize) && !served(Method::Ping));
    }
}
