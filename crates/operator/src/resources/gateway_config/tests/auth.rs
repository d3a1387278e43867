//! Outgoing auth: auth configs, their Secrets, validation, stdio bridge tokens, token URLs.

use super::*;

#[test]
fn inline_header_injection_and_bearer_token() {
    let mut vmcp = fixtures::vmcp();
    vmcp.spec.outgoing_auth = Some(OutgoingAuth {
        source: OutgoingAuthSource::Inline,
        default: Some(BackendAuth {
            auth_type: ExternalAuthType::BearerToken,
            external_auth_config_ref: Some(LocalRef { name: "bearer".into() }),
        }),
        backends: BTreeMap::from([(
            "github-tools".to_owned(),
            BackendAuth {
                auth_type: ExternalAuthType::HeaderInjection,
                external_auth_config_ref: Some(LocalRef { name: "header".into() }),
            },
        )]),
    });
    let configs = BTreeMap::from([
        (
            "header".to_owned(),
            auth_config(
                "header",
                MCPExternalAuthConfigSpec {
                    auth_type: ExternalAuthType::HeaderInjection,
                    header_injection: Some(HeaderInjectionConfig {
                        header_name: "X-API-Key".into(),
                        value_secret_ref: SecretKeyRef { name: "api".into(), key: "k".into() },
                    }),
                    ..Default::default()
                },
            ),
        ),
        (
            "bearer".to_owned(),
            auth_config(
                "bearer",
                MCPExternalAuthConfigSpec {
                    auth_type: ExternalAuthType::BearerToken,
                    bearer_token: Some(BearerTokenConfig {
                        token_secret_ref: SecretKeyRef { name: "tok".into(), key: "t".into() },
                    }),
                    ..Default::default()
                },
            ),
        ),
    ]);
    // Both served over HTTP (a stdio server's credential is its bridge token instead).
    let mut servers = fixtures::servers();
    servers[1].spec.transport = vmcp_types::crd::McpTransport::StreamableHttp;
    let (config, mounts, discovered) = gateway_config(&vmcp, &servers, &configs).unwrap();
    let h = config.backends[0].auth.header_injection.as_ref().unwrap();
    assert_eq!(h.header_name, "X-API-Key");
    assert_eq!(h.value.file.as_deref(), Some(std::path::Path::new("/var/run/secrets/vmcp/api/k")));
    let b = config.backends[1].auth.bearer_token.as_ref().unwrap();
    assert_eq!(b.token.file.as_deref(), Some(std::path::Path::new("/var/run/secrets/vmcp/tok/t")));
    let secrets: Vec<_> = mounts.iter().map(|m| m.secret.as_str()).collect();
    assert_eq!(secrets, ["api", "tok", "vmcp-redis"]);
    assert_eq!(discovered[0].auth_type.as_deref(), Some("headerInjection"));
    assert_eq!(discovered[1].auth_type.as_deref(), Some("bearerToken"));
}

#[test]
fn missing_auth_config_leaves_backend_out_and_names_it() {
    let vmcp = fixtures::vmcp();
    let servers = fixtures::servers();
    let r = render_gateway_config(&RenderInput {
        vmcp: &vmcp,
        members: &servers,
        entries: &[],
        auth_configs: &BTreeMap::new(),
        missing_secrets: &BTreeSet::new(),
    })
    .unwrap();
    let names: Vec<_> = r.config.backends.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["time"]);
    assert_eq!(r.backends[0].status.as_deref(), Some("error"));
    let auth: Vec<_> = r.problems.iter().filter(|p| p.kind == ProblemKind::Auth).collect();
    assert_eq!(auth.len(), 1, "{:?}", r.problems);
    assert!(auth[0].message.contains("'github-tools-token-exchange'"), "{:?}", r.problems);
    // Its tool filter names a backend that is no longer rendered: ignored, reported.
    assert!(r.config.aggregation.tools.is_empty());
    assert!(r.problems.iter().any(|p| p.kind == ProblemKind::Aggregation));
    // Its secret is not mounted either.
    assert!(r.secret_mounts.iter().all(|m| m.secret != "vmcp-gateway-oidc-client"));
}

#[test]
fn missing_secret_leaves_backend_out_and_names_it() {
    let vmcp = fixtures::vmcp();
    let servers = fixtures::servers();
    let auth = fixtures::auth_configs();
    let missing = BTreeSet::from(["vmcp-gateway-oidc-client".to_owned(), "vmcp-redis".into()]);
    let r = render_gateway_config(&RenderInput {
        vmcp: &vmcp,
        members: &servers,
        entries: &[],
        auth_configs: &auth,
        missing_secrets: &missing,
    })
    .unwrap();
    assert_eq!(r.config.backends.len(), 1);
    let msgs: Vec<_> = r
        .problems
        .iter()
        .filter(|p| p.kind == ProblemKind::Auth)
        .map(|p| p.message.as_str())
        .collect();
    assert!(msgs[0].contains("Secret 'vmcp-gateway-oidc-client'"), "{msgs:?}");
    assert!(msgs[1].contains("Secret 'vmcp-redis'"), "{msgs:?}");
}

#[test]
fn invalid_auth_config_is_reported() {
    let mut bad = fixtures::auth_config();
    bad.spec.token_exchange.as_mut().unwrap().client_secret_ref = None;
    let configs = BTreeMap::from([("github-tools-token-exchange".to_owned(), bad)]);
    let (config, _, discovered) =
        gateway_config(&fixtures::vmcp(), &fixtures::servers(), &configs).unwrap();
    assert_eq!(config.backends.len(), 1);
    assert!(discovered[0].message.as_deref().unwrap().contains("clientSecretRef"));
}

#[test]
fn validate_auth_spec_rules() {
    let ok = fixtures::auth_config().spec;
    assert_eq!(validate_auth_spec(&ok), Ok(()));
    let mut wrong = ok.clone();
    wrong.auth_type = ExternalAuthType::BearerToken;
    assert!(validate_auth_spec(&wrong).unwrap_err().contains("tokenExchange"));
    let mut url = ok.clone();
    url.token_exchange = Some(TokenExchangeConfig {
        token_url: "not-a-url".into(),
        ..ok.token_exchange.clone().unwrap()
    });
    assert!(validate_auth_spec(&url).unwrap_err().contains("tokenUrl"));
    let header = MCPExternalAuthConfigSpec {
        auth_type: ExternalAuthType::HeaderInjection,
        header_injection: Some(HeaderInjectionConfig {
            header_name: "Bad Header".into(),
            value_secret_ref: SecretKeyRef { name: "s".into(), key: "k".into() },
        }),
        ..Default::default()
    };
    assert!(validate_auth_spec(&header).unwrap_err().contains("headerName"));
}

/// M8: a stdio member's credential is its bridge token (a copy of the Secret the MCPServer
/// owns, in the gateway's always-mounted bridge tokens Secret: issue 16), whatever outgoing
/// auth the gateway names for it; until its token is there the member is left out (pending).
#[test]
fn stdio_members_authenticate_with_their_bridge_token() {
    let r = render_example();
    let time = r.config.backends.iter().find(|b| b.name == "time").unwrap();
    assert_eq!(time.auth.auth_type, OutgoingAuthType::BearerToken);
    let bearer = time.auth.bearer_token.as_ref().unwrap();
    let file = bearer.token.file.clone().unwrap();
    assert_eq!(file, std::path::PathBuf::from("/var/run/secrets/vmcp-bridge-tokens/time"));
    assert!(bearer.wait_for_file, "the kubelet may sync the Secret after the ConfigMap");
    assert!(!r.secret_mounts.iter().any(|m| m.secret.contains("bridge-token")), "no own mount");
    let github = r.config.backends.iter().find(|b| b.name == "github-tools").unwrap();
    assert_ne!(github.auth.bearer_token.as_ref().map(|b| b.token.file.clone()), Some(Some(file)));

    let (vmcp, servers, auth) = (fixtures::vmcp(), fixtures::servers(), fixtures::auth_configs());
    let missing = BTreeSet::from(["time-bridge-token".to_owned()]);
    let r = render_gateway_config(&RenderInput {
        vmcp: &vmcp,
        members: &servers,
        entries: &[],
        auth_configs: &auth,
        missing_secrets: &missing,
    })
    .unwrap();
    let names: Vec<_> = r.config.backends.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["github-tools"]);
    assert!(!r.secret_mounts.iter().any(|m| m.secret == "time-bridge-token"), "not mounted");
    // Pending, not a problem: the server's reconcile creates the Secret moments later.
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    let time = r.backends.iter().find(|b| b.name == "time").unwrap();
    assert_eq!(time.status.as_deref(), Some("pending"));
    assert!(time.message.as_deref().unwrap().contains("'time-bridge-token'"), "{time:?}");
}

/// L13: the gateway's owner (not an auth config) lists extra token endpoints.
#[test]
fn allowed_token_urls_come_from_the_gateway_spec() {
    let mut vmcp = fixtures::vmcp();
    vmcp.spec.allowed_token_urls = vec!["http://keycloak.auth.svc:8080/realms/vmcp/token".into()];
    let (config, _, _) =
        gateway_config(&vmcp, &fixtures::servers(), &fixtures::auth_configs()).unwrap();
    assert_eq!(config.outbound.allowed_token_urls, vmcp.spec.allowed_token_urls);
    let (plain, _, _) =
        gateway_config(&fixtures::vmcp(), &fixtures::servers(), &fixtures::auth_configs()).unwrap();
    assert!(plain.outbound.allowed_token_urls.is_empty());
}
