//! Value checks of a parsed configuration: every problem is collected, none stops the others.

use std::collections::BTreeSet;

use super::error::FieldError;
use super::*;

/// Collects problems under a growing field path.
struct Checker {
    errors: Vec<FieldError>,
}

impl Checker {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError::new(path, message));
    }

    fn absolute_url(&mut self, path: &str, value: &str, schemes: &[&str]) {
        match url::Url::parse(value) {
            Ok(u) if schemes.contains(&u.scheme()) => {}
            Ok(u) => self.err(
                path,
                format!("scheme '{}' is not supported; use {}", u.scheme(), schemes.join(" or ")),
            ),
            Err(_) => self.err(path, format!("not an absolute URL: '{value}'")),
        }
    }

    fn secret(&mut self, path: &str, s: &SecretSource) {
        match (&s.env, &s.file) {
            (Some(_), Some(_)) => self.err(path, "set exactly one of 'env' and 'file', not both"),
            (None, None) => self.err(
                path,
                "set 'env' (an environment variable name) or 'file' (a file path); secrets are never inline",
            ),
            (Some(e), None) if e.is_empty() => self.err(format!("{path}.env"), "must not be empty"),
            _ => {}
        }
    }

    fn header_name(&mut self, path: &str, name: &str) {
        let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if name.is_empty() || !name.chars().all(token) {
            self.err(path, format!("'{name}' is not a valid HTTP header name"));
        }
    }
}

const HTTP: &[&str] = &["http", "https"];

/// Redis URL schemes the gateway accepts.
pub const REDIS_SCHEMES: &[&str] =
    &["redis", "rediss", "redis-sentinel", "rediss-sentinel", "redis-cluster", "rediss-cluster"];

/// Is `name` usable as a backend name (prefixes, metrics labels, log fields)?
pub fn is_valid_backend_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl GatewayConfig {
    /// Every value problem of this configuration, each with its field path.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut c = Checker { errors: Vec::new() };
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            c.err("listen", format!("'{}' is not a socket address like 0.0.0.0:4483", self.listen));
        }
        if let Some(m) = &self.telemetry.metrics_listen {
            match m.parse::<std::net::SocketAddr>() {
                Err(_) => c.err(
                    "telemetry.metricsListen",
                    format!("'{m}' is not a socket address like 0.0.0.0:9090"),
                ),
                Ok(a)
                    if self
                        .listen
                        .parse::<std::net::SocketAddr>()
                        .is_ok_and(|l| l.port() == a.port() && a.port() != 0) =>
                {
                    c.err(
                        "telemetry.metricsListen",
                        format!("'{m}' uses the port of listen ('{}')", self.listen),
                    )
                }
                Ok(_) => {}
            }
        }
        if let Some(u) = &self.resource_url {
            c.absolute_url("resourceUrl", u, HTTP);
        }
        if self.http.max_body_bytes == 0 {
            c.err("http.maxBodyBytes", "must be greater than 0");
        }
        if self.http.init_timeout.is_zero() {
            c.err("http.initTimeout", "must be greater than 0");
        }
        self.validate_incoming(&mut c);
        let names = self.validate_backends(&mut c);
        self.validate_aggregation(&mut c, &names);
        self.validate_sessions(&mut c);
        c.errors
    }

    fn validate_incoming(&self, c: &mut Checker) {
        let auth = &self.incoming_auth;
        match (auth.auth_type, &auth.oidc) {
            (IncomingAuthType::Oidc, None) => c.err(
                "incomingAuth.oidc",
                "required when incomingAuth.type is 'oidc' (set at least 'issuer')",
            ),
            (IncomingAuthType::Anonymous, Some(_)) => c.err(
                "incomingAuth.oidc",
                "set only when incomingAuth.type is 'oidc' (type is 'anonymous')",
            ),
            (IncomingAuthType::Oidc, Some(o)) => {
                c.absolute_url("incomingAuth.oidc.issuer", &o.issuer, HTTP);
                if let Some(j) = &o.jwks_url {
                    c.absolute_url("incomingAuth.oidc.jwksUrl", j, HTTP);
                }
                if o.audience.is_none() && self.resource_url.is_none() {
                    c.err(
                        "incomingAuth.oidc.audience",
                        "set 'audience' or the top-level 'resourceUrl' (the expected token audience)",
                    );
                }
                for (i, alg) in o.algorithms.iter().enumerate() {
                    if alg.eq_ignore_ascii_case("none") || alg.starts_with("HS") {
                        c.err(
                            format!("incomingAuth.oidc.algorithms[{i}]"),
                            format!(
                                "'{alg}' is not allowed: only asymmetric algorithms are accepted"
                            ),
                        );
                    }
                }
                if let Some(intro) = &o.introspection {
                    c.absolute_url("incomingAuth.oidc.introspection.url", &intro.url, HTTP);
                    c.secret("incomingAuth.oidc.introspection.clientSecret", &intro.client_secret);
                }
            }
            (IncomingAuthType::Anonymous, None) => {}
        }
    }

    fn validate_backends(&self, c: &mut Checker) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        for (i, b) in self.backends.iter().enumerate() {
            let p = format!("backends[{i}]");
            if !is_valid_backend_name(&b.name) {
                c.err(
                    format!("{p}.name"),
                    format!(
                        "'{}' is not a valid backend name: use 1-63 letters, digits, '-' or '_'",
                        b.name
                    ),
                );
            } else if !names.insert(b.name.clone()) {
                c.err(format!("{p}.name"), format!("duplicate backend name '{}'", b.name));
            }
            c.absolute_url(&format!("{p}.url"), &b.url, HTTP);
            if b.timeout.is_zero() {
                c.err(format!("{p}.timeout"), "must be greater than 0");
            }
            validate_outgoing(c, &format!("{p}.auth"), &b.auth);
        }
        names
    }

    fn validate_aggregation(&self, c: &mut Checker, names: &BTreeSet<String>) {
        let a = &self.aggregation;
        if a.conflict_resolution == ConflictResolution::Prefix
            && !a.prefix_format.contains("{backend}")
        {
            c.err("aggregation.prefixFormat", "must contain '{backend}', e.g. '{backend}_'");
        }
        if a.conflict_resolution == ConflictResolution::Priority && a.priority_order.is_empty() {
            c.err(
                "aggregation.priorityOrder",
                "required when conflictResolution is 'priority': list backend names, highest priority first",
            );
        }
        for (i, n) in a.priority_order.iter().enumerate() {
            if !names.contains(n) {
                c.err(format!("aggregation.priorityOrder[{i}]"), format!("no backend named '{n}'"));
            }
        }
        let mut seen = BTreeSet::new();
        for (i, t) in a.tools.iter().enumerate() {
            let p = format!("aggregation.tools[{i}]");
            if !names.contains(&t.backend) {
                c.err(format!("{p}.backend"), format!("no backend named '{}'", t.backend));
            } else if !seen.insert(&t.backend) {
                c.err(
                    format!("{p}.backend"),
                    format!("backend '{}' is listed twice; merge the entries", t.backend),
                );
            }
            for (tool, o) in &t.overrides {
                if o.name.as_deref() == Some("") {
                    c.err(format!("{p}.overrides.{tool}.name"), "must not be empty");
                }
            }
        }
    }

    fn validate_sessions(&self, c: &mut Checker) {
        let s = &self.session_storage;
        if s.ttl.is_zero() {
            c.err("sessionStorage.ttl", "must be greater than 0");
        }
        match (s.provider, &s.redis) {
            (SessionStorageProvider::Redis, None) => c.err(
                "sessionStorage.redis",
                "required when sessionStorage.provider is 'redis' (set at least 'url')",
            ),
            (SessionStorageProvider::Memory, Some(_)) => c.err(
                "sessionStorage.redis",
                "set only when sessionStorage.provider is 'redis' (provider is 'memory')",
            ),
            (SessionStorageProvider::Redis, Some(r)) => {
                let url = if r.url.contains("://") {
                    r.url.clone()
                } else {
                    format!("redis://{}", r.url)
                };
                c.absolute_url("sessionStorage.redis.url", &url, REDIS_SCHEMES);
                if let Some(p) = &r.password {
                    c.secret("sessionStorage.redis.password", p);
                }
                if r.key_prefix.is_empty() {
                    c.err("sessionStorage.redis.keyPrefix", "must not be empty");
                }
                if r.wait_replicas > 0 && r.wait_timeout.is_zero() {
                    // WAIT with timeout 0 blocks until enough replicas answer: forever, when
                    // they are gone.
                    c.err(
                        "sessionStorage.redis.waitTimeout",
                        "must be more than 0 when waitReplicas is set",
                    );
                }
            }
            (SessionStorageProvider::Memory, None) => {}
        }
    }
}

fn validate_outgoing(c: &mut Checker, p: &str, a: &OutgoingAuthConfig) {
    let set = [
        ("headerInjection", a.header_injection.is_some(), OutgoingAuthType::HeaderInjection),
        ("bearerToken", a.bearer_token.is_some(), OutgoingAuthType::BearerToken),
        ("tokenExchange", a.token_exchange.is_some(), OutgoingAuthType::TokenExchange),
    ];
    for (field, present, ty) in set {
        if present && a.auth_type != ty {
            c.err(format!("{p}.{field}"), format!("set only when {p}.type is '{field}'"));
        }
        if !present && a.auth_type == ty {
            c.err(format!("{p}.{field}"), format!("required when {p}.type is '{field}'"));
        }
    }
    if let Some(h) = &a.header_injection {
        c.header_name(&format!("{p}.headerInjection.headerName"), &h.header_name);
        if h.header_name.eq_ignore_ascii_case("host") {
            c.err(format!("{p}.headerInjection.headerName"), "the Host header cannot be injected");
        }
        c.secret(&format!("{p}.headerInjection.value"), &h.value);
    }
    if let Some(b) = &a.bearer_token {
        c.secret(&format!("{p}.bearerToken.token"), &b.token);
        if b.wait_for_file && b.token.file.is_none() {
            c.err(format!("{p}.bearerToken.waitForFile"), "needs 'token.file'");
        }
    }
    if let Some(t) = &a.token_exchange {
        let q = format!("{p}.tokenExchange");
        c.absolute_url(&format!("{q}.tokenUrl"), &t.token_url, HTTP);
        if t.client_id.is_empty() {
            c.err(format!("{q}.clientId"), "must not be empty");
        }
        c.secret(&format!("{q}.clientSecret"), &t.client_secret);
        if t.audience.is_none() && t.resource.is_none() {
            c.err(
                format!("{q}.audience"),
                "set 'audience' or 'resource': the exchanged token must be for this backend",
            );
        }
        if let Some(h) = &t.external_token_header_name {
            c.header_name(&format!("{q}.externalTokenHeaderName"), h);
        }
    }
}
