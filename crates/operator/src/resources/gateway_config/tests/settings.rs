//! Gateway settings from the spec: durations, OIDC, session storage, hard errors.

use super::*;

#[test]
fn gateway_settings_from_the_spec() {
    let mut vmcp = fixtures::vmcp();
    vmcp.spec.allowed_origins = vec!["https://app.example.com".into()];
    vmcp.spec.backend_timeout = Some("2m".into());
    let oidc = vmcp.spec.incoming_auth.as_mut().unwrap().oidc.as_mut().unwrap();
    oidc.algorithms = vec!["ES256".into()];
    oidc.leeway = Some("5s".into());
    oidc.jwks_refresh_interval = Some("1h".into());
    let mut auth = fixtures::auth_configs();
    let te = auth.values_mut().next().unwrap().spec.token_exchange.as_mut().unwrap();
    te.client_auth_method = Some(TokenClientAuthMethod::ClientSecretPost);
    te.resource = Some("https://github-tools.example.com/mcp".into());
    te.requested_token_type = Some("urn:ietf:params:oauth:token-type:jwt".into());
    let (config, _, _) = gateway_config(&vmcp, &fixtures::servers(), &auth).unwrap();
    assert_eq!(config.http.allowed_origins, ["https://app.example.com"]);
    assert!(config.backends.iter().all(|b| b.timeout == Duration::from_secs(120)));
    let o = config.incoming_auth.oidc.as_ref().unwrap();
    assert_eq!(o.algorithms, ["ES256"]);
    assert_eq!(o.leeway, Duration::from_secs(5));
    assert_eq!(o.jwks_refresh_interval, Duration::from_secs(3600));
    let t = config.backends[0].auth.token_exchange.as_ref().unwrap();
    assert_eq!(t.client_auth_method, cfg::ClientAuthMethod::ClientSecretPost);
    assert_eq!(t.resource.as_deref(), Some("https://github-tools.example.com/mcp"));
    assert_eq!(t.requested_token_type.as_deref(), Some("urn:ietf:params:oauth:token-type:jwt"));
    // The gateway's own validation still applies: an HMAC algorithm is refused.
    let oidc = vmcp.spec.incoming_auth.as_mut().unwrap().oidc.as_mut().unwrap();
    oidc.algorithms = vec!["HS256".into()];
    let e = gateway_config(&vmcp, &fixtures::servers(), &auth).unwrap_err().to_string();
    assert!(e.contains("HS256"), "{e}");
    // Unset, the defaults hold.
    let mut plain = fixtures::vmcp();
    plain.spec.allowed_origins.clear();
    plain.spec.backend_timeout = None;
    let (config, _, _) =
        gateway_config(&plain, &fixtures::servers(), &fixtures::auth_configs()).unwrap();
    assert!(config.http.allowed_origins.is_empty());
    assert!(config.backends.iter().all(|b| b.timeout == Duration::from_secs(30)));
}

#[test]
fn malformed_durations_name_their_field() {
    let mut vmcp = fixtures::vmcp();
    vmcp.spec.backend_timeout = Some("0s".into());
    let e = gateway_config(&vmcp, &[], &BTreeMap::new()).unwrap_err().to_string();
    assert!(e.contains("spec.backendTimeout") && e.contains("'0s'"), "{e}");
    let mut vmcp = fixtures::vmcp();
    vmcp.spec.incoming_auth.as_mut().unwrap().oidc.as_mut().unwrap().leeway = Some("soon".into());
    let e = gateway_config(&vmcp, &[], &BTreeMap::new()).unwrap_err().to_string();
    assert!(e.contains("spec.incomingAuth.oidc.leeway"), "{e}");
}

#[test]
fn hard_errors() {
    let mut vmcp = fixtures::vmcp();
    vmcp.spec.incoming_auth.as_mut().unwrap().oidc.as_mut().unwrap().issuer = None;
    assert!(matches!(
        gateway_config(&vmcp, &[], &BTreeMap::new()),
        Err(RenderError::OidcIssuerMissing)
    ));
    let mut vmcp = fixtures::vmcp();
    vmcp.spec.session_storage.as_mut().unwrap().ttl = Some("soon".into());
    assert!(matches!(
        gateway_config(&vmcp, &[], &BTreeMap::new()),
        Err(RenderError::InvalidTtl(_))
    ));
    let mut vmcp = fixtures::vmcp();
    let oidc = vmcp.spec.incoming_auth.as_mut().unwrap().oidc.as_mut().unwrap();
    oidc.audience = None;
    oidc.resource_url = None;
    let err = gateway_config(&vmcp, &[], &BTreeMap::new()).unwrap_err();
    assert!(err.to_string().contains("incomingAuth.oidc.audience"), "{err}");
}

/// Found on a real node: `audience` without `resourceUrl` rendered no `resourceUrl`, and
/// the gateway exits at start without an absolute one ("resourceUrl: … relative URL
/// without a base"), so its pods crash-looped.
#[test]
fn oidc_audience_alone_gets_the_in_cluster_resource_url() {
    let mut vmcp = fixtures::vmcp();
    let oidc = vmcp.spec.incoming_auth.as_mut().unwrap().oidc.as_mut().unwrap();
    oidc.resource_url = None;
    let audience = oidc.audience.clone().unwrap();
    let (config, _, _) = gateway_config(&vmcp, &[], &BTreeMap::new()).unwrap();
    let ns = vmcp.metadata.namespace.clone().unwrap();
    let name = vmcp.metadata.name.clone().unwrap();
    assert_eq!(
        config.resource_url.as_deref(),
        Some(format!("http://{name}-vmcp.{ns}.svc.cluster.local:4483/mcp").as_str())
    );
    assert_eq!(config.incoming_auth.oidc.unwrap().audience.as_deref(), Some(audience.as_str()));
}

#[test]
fn default_redis_applies_only_without_session_storage() {
    let defaults = Defaults {
        redis: Some(DefaultRedis {
            address: "redis:6379".into(),
            key_prefix: "vmcp:".into(),
            password: Some(SecretKeyRef { name: "redis-auth".into(), key: "password".into() }),
        }),
    };
    let explicit = fixtures::vmcp();
    assert!(matches!(defaults.apply(&explicit), Cow::Borrowed(_)));
    let mut bare = fixtures::vmcp();
    bare.spec.session_storage = None;
    let applied = defaults.apply(&bare);
    let s = applied.spec.session_storage.as_ref().unwrap();
    assert_eq!(s.provider, SessionStorageProvider::Redis);
    assert_eq!(s.key_prefix.as_deref(), Some("vmcp:team-a:engineering-gateway:"));
    let (config, mounts, _) = gateway_config(&applied, &[], &BTreeMap::new()).unwrap();
    let redis = config.session_storage.redis.unwrap();
    assert_eq!(redis.url, "redis://redis:6379");
    assert_eq!(
        redis.password.unwrap().file.as_deref(),
        Some(std::path::Path::new("/var/run/secrets/vmcp/redis-auth/password"))
    );
    assert_eq!(mounts[0].secret, "redis-auth", "the password Secret is mounted");
}

#[test]
fn durations() {
    assert_eq!(parse_duration("30m"), Some(Duration::from_secs(1800)));
    assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
    assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(parse_duration("0s"), None);
    assert_eq!(parse_duration(""), None);
    assert_eq!(parse_duration("m"), None);
    assert_eq!(parse_duration("5d"), None);
}
