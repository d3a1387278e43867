//! The example manifests (`tests/fixtures/k8s/`) rendered: snapshots, secrets as files.

use super::*;

#[test]
fn example_config_snapshot() {
    let r = render_example();
    insta::assert_snapshot!("example_config_yaml", serde_saphyr::to_string(&r.config).unwrap());
    insta::assert_yaml_snapshot!("example_secret_mounts", r.secret_mounts);
    insta::assert_yaml_snapshot!("example_discovered_backends", r.backends);
    assert!(r.problems.is_empty(), "{:?}", r.problems);
}

#[test]
fn rendered_yaml_loads_in_the_gateway() {
    let r = render_example();
    let yaml = serde_saphyr::to_string(&r.config).unwrap();
    let loaded = vmcp_types::config::from_yaml_str(&yaml).unwrap();
    assert_eq!(loaded, r.config);
}

#[test]
fn secret_values_never_appear() {
    let r = render_example();
    let yaml = serde_saphyr::to_string(&r.config).unwrap();
    for secret in fixtures::secrets() {
        for value in secret.string_data.unwrap_or_default().values() {
            assert!(!yaml.contains(value.as_str()), "secret value {value:?} in config");
        }
    }
    assert!(!yaml.contains("env:"), "secrets come from mounted files, not env");
}

#[test]
fn token_exchange_mapping() {
    let r = render_example();
    let te = r.config.backends[0].auth.token_exchange.as_ref().unwrap();
    assert_eq!(r.config.backends[0].auth.auth_type, OutgoingAuthType::TokenExchange);
    assert_eq!(
        te.token_url,
        "https://keycloak.example.com/realms/vmcp/protocol/openid-connect/token"
    );
    assert_eq!(te.client_id, "vmcp-gateway");
    assert_eq!(
        te.client_secret,
        SecretSource {
            env: None,
            file: Some("/var/run/secrets/vmcp/vmcp-gateway-oidc-client/client-secret".into())
        }
    );
    assert_eq!(te.audience.as_deref(), Some("backend-a"));
    assert_eq!(te.scopes, ["openid"]);
    assert_eq!(te.subject_token_type, cfg::ACCESS_TOKEN_TYPE);
    assert_eq!(te.external_token_header_name, None);
    // The stdio server without a reference authenticates to its bridge with the bridge token.
    assert_eq!(r.config.backends[1].auth.auth_type, OutgoingAuthType::BearerToken);
}

#[test]
fn secret_mounts_and_paths() {
    let r = render_example();
    let mounts: Vec<(String, Vec<String>)> = r
        .secret_mounts
        .iter()
        .map(|m| (m.secret.clone(), m.keys.iter().cloned().collect()))
        .collect();
    assert_eq!(
        mounts,
        [
            // Not the stdio member's bridge token: the gateway's bridge tokens Secret holds it.
            ("vmcp-gateway-oidc-client".to_owned(), vec!["client-secret".to_owned()]),
            ("vmcp-redis".to_owned(), vec!["password".to_owned()]),
        ]
    );
    let redis = r.config.session_storage.redis.as_ref().unwrap();
    assert_eq!(redis.url, "redis://redis.vmcp-system.svc:6379");
    assert_eq!(redis.key_prefix, "vmcp:engineering:");
    assert_eq!(
        redis.password.as_ref().unwrap().file.as_deref(),
        Some(std::path::Path::new("/var/run/secrets/vmcp/vmcp-redis/password"))
    );
    assert_eq!(r.config.session_storage.ttl, Duration::from_secs(1800));
}

#[test]
fn oidc_mapping() {
    let r = render_example();
    assert_eq!(r.config.resource_url.as_deref(), Some("https://mcp.example.com/mcp"));
    let o = r.config.incoming_auth.oidc.as_ref().unwrap();
    assert_eq!(o.issuer, "https://keycloak.example.com/realms/vmcp");
    assert_eq!(o.audience.as_deref(), Some("vmcp-gateway"));
    assert_eq!(o.client_id.as_deref(), Some("vmcp-gateway"));
    assert_eq!(o.leeway, Duration::from_secs(30));
}
