//! `Origin` validation (DNS rebinding protection): requests without `Origin` are allowed;
//! browsers' requests must come from loopback, the gateway's own public origin, or a
//! configured origin.

use super::HttpSettings;

/// Is a request with this `Origin` header allowed?
pub fn allowed(origin: Option<&str>, settings: &HttpSettings) -> bool {
    let Some(origin) = origin else { return true };
    if settings.allowed_origins.iter().any(|o| o == "*" || o.eq_ignore_ascii_case(origin)) {
        return true;
    }
    let Ok(u) = url::Url::parse(origin) else { return false };
    if matches!(u.host_str(), Some("localhost" | "127.0.0.1" | "[::1]")) {
        return true;
    }
    settings.resource_url.as_ref().is_some_and(|r| r.origin() == u.origin())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(allowed: &[&str]) -> HttpSettings {
        HttpSettings {
            allowed_origins: allowed.iter().map(|s| s.to_string()).collect(),
            resource_url: url::Url::parse("https://mcp.example.com/mcp").ok(),
            max_body_bytes: 1,
            metrics_on_main: true,
        }
    }

    #[test]
    fn origins() {
        assert!(allowed(None, &s(&[])));
        assert!(allowed(Some("http://localhost:6274"), &s(&[])));
        assert!(allowed(Some("https://mcp.example.com"), &s(&[])));
        assert!(!allowed(Some("https://evil.example"), &s(&[])));
        assert!(allowed(Some("https://app.example"), &s(&["https://app.example"])));
        assert!(allowed(Some("https://any.example"), &s(&["*"])));
        assert!(!allowed(Some("null"), &s(&[])));
    }
}
