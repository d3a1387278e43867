//! `Origin` validation (DNS rebinding protection): requests without `Origin` are allowed;
//! browsers' requests must come from the gateway's own public origin, a configured origin, or
//! loopback when that is allowed (by default only for a gateway listening on loopback: L14).

use super::HttpSettings;

/// Is a request with this `Origin` header allowed?
pub fn allowed(origin: Option<&str>, settings: &HttpSettings) -> bool {
    let Some(origin) = origin else { return true };
    if settings.allowed_origins.iter().any(|o| o == "*" || o.eq_ignore_ascii_case(origin)) {
        return true;
    }
    let Ok(u) = url::Url::parse(origin) else { return false };
    if settings.allow_loopback_origins
        && matches!(u.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"))
    {
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
            allow_loopback_origins: true,
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

    /// L14: without `allowLoopbackOrigins` a page on any local port is a foreign origin.
    #[test]
    fn loopback_origins_only_when_allowed() {
        let strict = HttpSettings { allow_loopback_origins: false, ..s(&[]) };
        for o in ["http://localhost:6274", "http://127.0.0.1:8000", "http://[::1]:3000"] {
            assert!(!allowed(Some(o), &strict), "{o}");
            assert!(allowed(Some(o), &s(&[])), "{o}");
        }
        assert!(allowed(Some("https://mcp.example.com"), &strict), "its own origin");
        let listed =
            HttpSettings { allow_loopback_origins: false, ..s(&["http://localhost:6274"]) };
        assert!(allowed(Some("http://localhost:6274"), &listed), "a listed one");
        assert!(!allowed(Some("http://localhost:9999"), &listed));
    }
}
