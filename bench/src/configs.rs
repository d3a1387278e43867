//! Configuration files for the two gateways under test, rendered from one description so both
//! front the same backends the same way. Pure text builders (unit-tested); no I/O.

/// The environment variable that holds the token-exchange client secret for both gateways.
pub const TE_SECRET_ENV: &str = "BENCH_TE_CLIENT_SECRET";

/// How clients authenticate and how the token-exchange backend is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// Anonymous clients, unauthenticated backends.
    Anonymous,
    /// OIDC bearer tokens from `issuer` (audience `vmcp-gateway`); the first backend gets a token
    /// exchanged at `token_url` for audience `backend-a`, the others none.
    Oidc {
        /// The provider's issuer.
        issuer: String,
        /// Its token endpoint.
        token_url: String,
    },
}

/// One gateway configuration.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Listening port.
    pub port: u16,
    /// Backends: (name, MCP URL).
    pub backends: Vec<(String, String)>,
    /// Incoming/outgoing auth.
    pub auth: Auth,
    /// `host:port` (or a full URL) of a Redis for sessions; memory when `None`.
    pub redis: Option<String>,
}

/// The `vmcp-gateway` YAML for `setup` (defaults everywhere else, logging included).
pub fn vmcp_gateway(setup: &Setup) -> String {
    let port = setup.port;
    let mut y = format!("listen: 127.0.0.1:{port}\nresourceUrl: http://127.0.0.1:{port}/mcp\n");
    match &setup.auth {
        Auth::Anonymous => y.push_str("incomingAuth:\n  type: anonymous\n"),
        Auth::Oidc { issuer, .. } => y.push_str(&format!(
            "incomingAuth:\n  type: oidc\n  oidc:\n    issuer: {issuer}\n    audience: vmcp-gateway\n"
        )),
    }
    y.push_str("backends:\n");
    for (i, (name, url)) in setup.backends.iter().enumerate() {
        y.push_str(&format!("  - name: {name}\n    url: {url}\n"));
        if let (0, Auth::Oidc { token_url, .. }) = (i, &setup.auth) {
            y.push_str(&format!(
                "    auth:\n      type: tokenExchange\n      tokenExchange:\n        tokenUrl: {token_url}\n        clientId: vmcp-gateway\n        clientSecret: {{ env: {TE_SECRET_ENV} }}\n        audience: backend-a\n"
            ));
        }
    }
    match &setup.redis {
        None => y.push_str("sessionStorage:\n  provider: memory\n"),
        // A full URL (e.g. `redis-cluster://…?node=…&node=…`) is quoted as is.
        Some(url) if url.contains("://") => y.push_str(&format!(
            "sessionStorage:\n  provider: redis\n  redis:\n    url: '{url}'\n    keyPrefix: \"vmcp:\"\n"
        )),
        Some(addr) => y.push_str(&format!(
            "sessionStorage:\n  provider: redis\n  redis:\n    url: redis://{addr}\n    keyPrefix: \"vmcp:\"\n"
        )),
    }
    y
}

/// The ToolHive `vmcp` YAML for `setup`: static backends (no Kubernetes, no ToolHive group
/// lookups), the same auth, prefix conflict resolution like vmcp-gateway's default.
/// The port is a command-line flag of `vmcp serve`, not part of this file.
pub fn toolhive(setup: &Setup) -> String {
    let mut y = String::from("name: bench\ngroupRef: bench\nbackends:\n");
    for (name, url) in &setup.backends {
        y.push_str(&format!("  - name: {name}\n    url: {url}\n    transport: streamable-http\n"));
    }
    match &setup.auth {
        Auth::Anonymous => y.push_str("incomingAuth:\n  type: anonymous\n"),
        Auth::Oidc { issuer, .. } => y.push_str(&format!(
            "incomingAuth:\n  type: oidc\n  oidc:\n    issuer: {issuer}\n    clientId: vmcp-gateway\n    audience: vmcp-gateway\n    resource: http://127.0.0.1:{}/mcp\n    insecureAllowHttp: true\n    jwksAllowPrivateIp: true\n    protectedResourceAllowPrivateIp: true\n",
            setup.port
        )),
    }
    y.push_str("outgoingAuth:\n  source: inline\n  default:\n    type: unauthenticated\n");
    if let (Auth::Oidc { token_url, .. }, Some((first, _))) = (&setup.auth, setup.backends.first())
    {
        y.push_str(&format!(
            "  backends:\n    {first}:\n      type: token_exchange\n      tokenExchange:\n        tokenUrl: {token_url}\n        clientId: vmcp-gateway\n        clientSecretEnv: {TE_SECRET_ENV}\n        audience: backend-a\n"
        ));
    }
    y.push_str(
        "aggregation:\n  conflictResolution: prefix\n  conflictResolutionConfig:\n    prefixFormat: \"{workload}_\"\n",
    );
    match &setup.redis {
        None => y.push_str("sessionStorage:\n  provider: memory\n"),
        Some(addr) => y.push_str(&format!(
            "sessionStorage:\n  provider: redis\n  address: {addr}\n  keyPrefix: \"thv:\"\n"
        )),
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(auth: Auth, redis: Option<&str>) -> Setup {
        Setup {
            port: 4000,
            backends: vec![
                ("weather".into(), "http://127.0.0.1:1/mcp".into()),
                ("notes".into(), "http://127.0.0.1:2/mcp".into()),
            ],
            auth,
            redis: redis.map(str::to_owned),
        }
    }

    fn oidc() -> Auth {
        Auth::Oidc {
            issuer: "http://127.0.0.1:9/".into(),
            token_url: "http://127.0.0.1:9/token".into(),
        }
    }

    #[test]
    fn vmcp_gateway_config_is_valid_for_the_gateway() {
        for s in [setup(Auth::Anonymous, None), setup(oidc(), Some("127.0.0.1:6379"))] {
            let text = vmcp_gateway(&s);
            let cfg = vmcp_gateway_config(&text);
            assert_eq!(cfg.backends.len(), 2, "{text}");
        }
        let text = vmcp_gateway(&setup(oidc(), Some("127.0.0.1:6379")));
        assert!(text.contains("audience: backend-a"), "{text}");
        assert_eq!(text.matches("tokenExchange:").count(), 1, "only the first backend: {text}");
        assert!(text.contains("url: redis://127.0.0.1:6379"), "{text}");
    }

    fn vmcp_gateway_config(text: &str) -> vmcp_types::config::GatewayConfig {
        vmcp_types::config::from_yaml_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn toolhive_config_uses_static_backends_and_the_same_exchange() {
        let text = toolhive(&setup(oidc(), Some("127.0.0.1:6379")));
        assert!(text.contains("groupRef: bench"));
        assert!(text.contains("transport: streamable-http"));
        assert!(text.contains("    weather:\n      type: token_exchange"), "{text}");
        assert!(text.contains("clientSecretEnv: BENCH_TE_CLIENT_SECRET"));
        assert!(text.contains("address: 127.0.0.1:6379"));
        let anon = toolhive(&setup(Auth::Anonymous, None));
        assert!(!anon.contains("token_exchange") && anon.contains("type: anonymous"), "{anon}");
    }
}
