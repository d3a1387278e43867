//! RFC 9728 OAuth 2.0 Protected Resource Metadata: the document and where it is served.

use serde_json::{Value, json};

use super::IncomingAuthError;

/// The well-known path prefix of protected resource metadata.
pub const WELL_KNOWN_PREFIX: &str = "/.well-known/oauth-protected-resource";

/// The metadata document for `resource_url` whose tokens come from `issuer`.
/// `scopes_supported` is present only when scopes are configured;
/// `bearer_methods_supported` is `["header"]` (tokens in the body or query are refused).
pub fn protected_resource_metadata(resource_url: &str, issuer: &str, scopes: &[String]) -> Value {
    let mut doc = json!({
        "resource": resource_url,
        "authorization_servers": [issuer],
        "bearer_methods_supported": ["header"],
    });
    if !scopes.is_empty()
        && let Some(o) = doc.as_object_mut()
    {
        o.insert("scopes_supported".into(), json!(scopes));
    }
    doc
}

/// The metadata URL of a resource (RFC 9728 §3.1): the well-known path inserted between the
/// host and the resource's path, e.g. `https://gw.example/mcp` →
/// `https://gw.example/.well-known/oauth-protected-resource/mcp`, and `https://gw.example/` →
/// `https://gw.example/.well-known/oauth-protected-resource`. This is the URL to put in
/// `WWW-Authenticate: Bearer resource_metadata="…"`.
pub fn resource_metadata_url(resource_url: &str) -> Result<String, IncomingAuthError> {
    let u = url::Url::parse(resource_url)
        .map_err(|e| IncomingAuthError::Config(format!("resourceUrl is not a URL: {e}")))?;
    if u.cannot_be_a_base() || u.host_str().is_none() {
        return Err(IncomingAuthError::Config(
            "resourceUrl must be an absolute http(s) URL".into(),
        ));
    }
    let mut origin = format!("{}://{}", u.scheme(), u.host_str().unwrap_or_default());
    if let Some(p) = u.port() {
        origin.push_str(&format!(":{p}"));
    }
    Ok(format!("{origin}{}", resource_metadata_path(resource_url)?))
}

/// The request path at which the router serves the metadata of `resource_url` in its
/// path-scoped form (`/.well-known/oauth-protected-resource/mcp` for `…/mcp`; just the prefix
/// for a resource at the root). Serve [`WELL_KNOWN_PREFIX`] as well, for clients that only try
/// the root form.
pub fn resource_metadata_path(resource_url: &str) -> Result<String, IncomingAuthError> {
    let u = url::Url::parse(resource_url)
        .map_err(|e| IncomingAuthError::Config(format!("resourceUrl is not a URL: {e}")))?;
    let path = u.path().trim_start_matches('/');
    let mut out = WELL_KNOWN_PREFIX.to_owned();
    if !path.is_empty() {
        out.push('/');
        out.push_str(path);
    }
    if let Some(q) = u.query() {
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_document() {
        let d =
            protected_resource_metadata("https://gw/mcp", "https://idp/realms/x", &["mcp".into()]);
        assert_eq!(
            d,
            json!({"resource":"https://gw/mcp","authorization_servers":["https://idp/realms/x"],
                   "scopes_supported":["mcp"],"bearer_methods_supported":["header"]})
        );
        let d = protected_resource_metadata("https://gw/mcp", "https://idp", &[]);
        assert!(d.get("scopes_supported").is_none());
    }

    #[test]
    fn metadata_urls() {
        let u = |r| resource_metadata_url(r).unwrap_or_default();
        assert_eq!(
            u("https://gw.example/mcp"),
            "https://gw.example/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            u("http://127.0.0.1:8080/mcp"),
            "http://127.0.0.1:8080/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            u("https://gw.example/"),
            "https://gw.example/.well-known/oauth-protected-resource"
        );
        assert_eq!(
            u("https://gw.example"),
            "https://gw.example/.well-known/oauth-protected-resource"
        );
        assert_eq!(
            u("https://gw.example/a/mcp"),
            "https://gw.example/.well-known/oauth-protected-resource/a/mcp"
        );
        assert_eq!(
            resource_metadata_path("https://gw/mcp").unwrap_or_default(),
            "/.well-known/oauth-protected-resource/mcp"
        );
        assert!(resource_metadata_url("not a url").is_err());
    }
}
