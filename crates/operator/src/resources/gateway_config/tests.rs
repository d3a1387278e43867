use std::borrow::Cow;

use super::super::fixtures;
use super::*;
use vmcp_types::config::{OutgoingAuthConfig, OutgoingAuthType};
use vmcp_types::crd::{
    BackendAuth, BearerTokenConfig, ExternalAuthType, HeaderInjectionConfig, LocalRef,
    MCPExternalAuthConfigSpec, OutgoingAuth, OutgoingAuthSource, TokenClientAuthMethod,
    TokenExchangeConfig,
};

fn render_example() -> Rendered {
    let vmcp = fixtures::vmcp();
    let servers = fixtures::servers();
    let auth = fixtures::auth_configs();
    render_gateway_config(&RenderInput {
        vmcp: &vmcp,
        members: &servers,
        entries: &[],
        auth_configs: &auth,
        missing_secrets: &BTreeSet::new(),
    })
    .unwrap()
}

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
fn backends_are_group_members_sorted_with_urls() {
    let r = render_example();
    let names: Vec<_> = r.config.backends.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["github-tools", "time"]);
    assert_eq!(r.config.backends[0].url, "http://github-tools.team-a.svc.cluster.local:8080/mcp");
    // stdio is bridged to streamable HTTP.
    assert_eq!(r.config.backends[1].url, "http://time.team-a.svc.cluster.local:8080/mcp");
    assert_eq!(r.config.backends[1].transport, BackendTransport::StreamableHttp);
    assert_eq!(r.config.listen, "0.0.0.0:4483");
}

#[test]
fn other_groups_and_sse_transport() {
    let vmcp = fixtures::vmcp();
    let mut servers = fixtures::servers();
    servers[1].spec.group_ref = Some(LocalRef { name: "other".into() });
    servers[0].spec.transport = vmcp_types::crd::McpTransport::Sse;
    servers[0].spec.port = Some(9000);
    let (config, _, discovered) =
        gateway_config(&vmcp, &servers, &fixtures::auth_configs()).unwrap();
    assert_eq!(config.backends.len(), 1);
    assert_eq!(discovered.len(), 1);
    assert_eq!(config.backends[0].url, "http://github-tools.team-a.svc.cluster.local:9000/sse");
    assert_eq!(config.backends[0].transport, BackendTransport::Sse);
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

fn auth_config(name: &str, spec: MCPExternalAuthConfigSpec) -> MCPExternalAuthConfig {
    let mut a = MCPExternalAuthConfig::new(name, spec);
    a.metadata.namespace = Some(fixtures::NS.into());
    a
}

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

#[test]
fn aggregation_drops_unknown_backends_with_a_problem() {
    let mut vmcp = fixtures::vmcp();
    let agg = vmcp.spec.aggregation.as_mut().unwrap();
    agg.tools[0].workload = "gone".into();
    let r = render_gateway_config(&RenderInput {
        vmcp: &vmcp,
        members: &fixtures::servers(),
        entries: &[],
        auth_configs: &fixtures::auth_configs(),
        missing_secrets: &BTreeSet::new(),
    })
    .unwrap();
    assert!(r.config.aggregation.tools.is_empty());
    assert_eq!(r.problems[0].kind, ProblemKind::Aggregation);
}

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
fn a_server_whose_name_is_taken_is_left_out() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    let mut servers = fixtures::servers();
    servers[0].status = Some(vmcp_types::crd::MCPServerStatus {
        phase: Some(MCPServerPhase::Failed),
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: "False".into(),
            reason: "NameConflict".into(),
            message: "Service 'github-tools' already exists and is not managed by the vmcp \
                      operator"
                .into(),
            observed_generation: Some(1),
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        }],
        ..Default::default()
    });
    let r = render_gateway_config(&RenderInput {
        vmcp: &fixtures::vmcp(),
        members: &servers,
        entries: &[],
        auth_configs: &fixtures::auth_configs(),
        missing_secrets: &BTreeSet::new(),
    })
    .unwrap();
    let names: Vec<_> = r.config.backends.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["time"], "no traffic to a Service someone else owns");
    let p = r.problems.iter().find(|p| p.kind == ProblemKind::Backend).unwrap();
    assert!(p.message.contains("'github-tools' left out"), "{}", p.message);
    assert_eq!(r.backends[0].status.as_deref(), Some("error"));
    // Nor its token-exchange client secret mounted.
    assert!(r.secret_mounts.iter().all(|m| m.secret != "vmcp-gateway-oidc-client"));
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

#[test]
fn failed_server_is_reported_but_kept() {
    let mut servers = fixtures::servers();
    servers[1].status = Some(vmcp_types::crd::MCPServerStatus {
        phase: Some(MCPServerPhase::Failed),
        ..Default::default()
    });
    let r = render_gateway_config(&RenderInput {
        vmcp: &fixtures::vmcp(),
        members: &servers,
        entries: &[],
        auth_configs: &fixtures::auth_configs(),
        missing_secrets: &BTreeSet::new(),
    })
    .unwrap();
    assert_eq!(r.config.backends.len(), 2);
    assert_eq!(r.backends[1].status.as_deref(), Some("error"));
    assert_eq!(r.problems[0].kind, ProblemKind::Backend);
    assert!(r.problems[0].message.contains("'time'"));
}

#[test]
fn invalid_member_name_is_a_backend_problem() {
    let mut servers = fixtures::servers();
    servers[1].metadata.name = Some("time.v2".into());
    let (config, _, discovered) =
        gateway_config(&fixtures::vmcp(), &servers, &fixtures::auth_configs()).unwrap();
    assert_eq!(config.backends.len(), 1);
    assert_eq!(discovered[1].status.as_deref(), Some("error"));
}

fn entry(name: &str, url: &str, auth: Option<&str>) -> vmcp_types::crd::MCPServerEntry {
    let mut e = vmcp_types::crd::MCPServerEntry::new(
        name,
        vmcp_types::crd::MCPServerEntrySpec {
            url: url.into(),
            transport: vmcp_types::crd::RemoteTransport::StreamableHttp,
            group_ref: LocalRef { name: "engineering".into() },
            external_auth_config_ref: auth.map(|a| LocalRef { name: a.into() }),
        },
    );
    e.metadata.namespace = Some(fixtures::NS.into());
    e
}

#[test]
fn remote_entries_are_backends_with_their_url_and_auth() {
    let vmcp = fixtures::vmcp();
    let entries = [
        entry("hosted", "https://mcp.example.com/mcp", Some("github-tools-token-exchange")),
        entry("plain", "http://other-team.tools.svc:9000/mcp", None),
        // Named like an MCPServer of the group: left out, reported.
        entry("time", "https://time.example.com/mcp", None),
        // Another group's: not a member.
        {
            let mut e = entry("elsewhere", "https://x.example.com/mcp", None);
            e.spec.group_ref.name = "other".into();
            e
        },
    ];
    let servers = fixtures::servers();
    let auth = fixtures::auth_configs();
    let r = render_gateway_config(&RenderInput {
        vmcp: &vmcp,
        members: &servers,
        entries: &entries,
        auth_configs: &auth,
        missing_secrets: &BTreeSet::new(),
    })
    .unwrap();
    let names: Vec<_> = r.config.backends.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["github-tools", "hosted", "plain", "time"]);
    let hosted = &r.config.backends[1];
    assert_eq!(hosted.url, "https://mcp.example.com/mcp");
    assert_eq!(hosted.auth.auth_type, OutgoingAuthType::TokenExchange);
    assert_eq!(r.config.backends[2].auth, OutgoingAuthConfig::default());
    assert_eq!(r.config.backends[3].url, "http://time.team-a.svc.cluster.local:8080/mcp");
    let d: Vec<_> =
        r.backends.iter().map(|b| (b.name.as_str(), b.status.as_deref().unwrap())).collect();
    assert_eq!(
        d,
        [
            ("github-tools", "ready"),
            ("hosted", "remote"),
            ("plain", "remote"),
            ("time", "pending"),
            ("time", "error")
        ]
    );
    let p = r.problems.iter().find(|p| p.kind == ProblemKind::Backend).unwrap();
    assert!(p.message.contains("MCPServerEntry 'time' left out"), "{}", p.message);
    // The entry's auth config is one the controller must fetch (discovered source).
    let wanted = referenced_auth_configs(&vmcp, &[], &entries);
    assert!(wanted.contains("github-tools-token-exchange"));
    // A missing auth config leaves only that entry out.
    let r = render_gateway_config(&RenderInput {
        vmcp: &vmcp,
        members: &[],
        entries: &entries[..2],
        auth_configs: &BTreeMap::new(),
        missing_secrets: &BTreeSet::new(),
    })
    .unwrap();
    let names: Vec<_> = r.config.backends.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["plain"]);
    assert!(
        r.problems.iter().any(|p| p.kind == ProblemKind::Auth && p.message.contains("'hosted'"))
    );
}

#[test]
fn ca_bundle_is_mounted_and_trusted() {
    let mut vmcp = fixtures::vmcp();
    vmcp.spec.ca_bundle_ref = Some(SecretKeyRef { name: "corp-ca".into(), key: "ca.crt".into() });
    let (config, mounts, _) =
        gateway_config(&vmcp, &fixtures::servers(), &fixtures::auth_configs()).unwrap();
    assert_eq!(
        config.outbound.ca_files,
        [std::path::PathBuf::from("/var/run/secrets/vmcp/corp-ca/ca.crt")]
    );
    let m = mounts.iter().find(|m| m.secret == "corp-ca").unwrap();
    assert!(m.keys.contains("ca.crt"));
    let r = render_gateway_config(&RenderInput {
        vmcp: &vmcp,
        members: &[],
        entries: &[],
        auth_configs: &BTreeMap::new(),
        missing_secrets: &BTreeSet::from(["corp-ca".to_owned()]),
    })
    .unwrap();
    assert!(
        r.problems.iter().any(|p| p.kind == ProblemKind::Auth
            && p.message.contains("Secret 'corp-ca'")
            && p.message.contains("spec.caBundleRef")),
        "{:?}",
        r.problems
    );
    // Without it, nothing extra is trusted.
    let (config, _, _) =
        gateway_config(&fixtures::vmcp(), &fixtures::servers(), &fixtures::auth_configs()).unwrap();
    assert!(config.outbound.ca_files.is_empty());
}

#[test]
fn ca_bundle_from_a_config_map_is_mounted_and_trusted() {
    use crate::resources::gateway::gateway_children;
    use crate::resources::{MountSource, WorkloadDefaults};
    use vmcp_types::crd::ConfigMapKeyRef;
    let mut vmcp = fixtures::vmcp();
    vmcp.spec.ca_bundle_config_map_ref =
        Some(ConfigMapKeyRef { name: "corp-ca".into(), key: "ca.crt".into() });
    let (config, mut mounts, _) =
        gateway_config(&vmcp, &fixtures::servers(), &fixtures::auth_configs()).unwrap();
    assert_eq!(
        config.outbound.ca_files,
        [std::path::PathBuf::from("/var/run/vmcp/configmaps/corp-ca/ca.crt")]
    );
    let m = mounts.iter().find(|m| m.secret == "corp-ca").unwrap();
    assert_eq!(m.source, MountSource::ConfigMap);
    // Secrets first, then the ConfigMap; a Secret of the same name stays a Secret.
    assert_eq!(mounts.last(), Some(m));
    assert!(mounts[..mounts.len() - 1].iter().all(|m| m.source == MountSource::Secret));

    let pod = |mounts: &[SecretMount]| {
        let c =
            gateway_children(&vmcp, &config, mounts, "img", &WorkloadDefaults::default()).unwrap();
        c.deployment.spec.unwrap().template
    };
    let template = pod(&mounts);
    let spec = template.spec.clone().unwrap();
    let volume = spec.volumes.unwrap().into_iter().find(|v| v.name == "configmap-corp-ca").unwrap();
    let paths: Vec<_> = spec.containers[0]
        .volume_mounts
        .iter()
        .flatten()
        .filter(|m| m.name == "configmap-corp-ca")
        .map(|m| m.mount_path.clone())
        .collect();
    assert_eq!(paths, ["/var/run/vmcp/configmaps/corp-ca"]);
    insta::assert_yaml_snapshot!("ca_bundle_config_map_volume", volume);

    // A changed bundle (new resourceVersion) rolls the pods.
    let checksum = |t: &k8s_openapi::api::core::v1::PodTemplateSpec| {
        t.metadata.as_ref().unwrap().annotations.as_ref().unwrap()["vmcp.dev/config-checksum"]
            .clone()
    };
    let before = checksum(&template);
    mounts.last_mut().unwrap().version = Some("42".into());
    assert_ne!(checksum(&pod(&mounts)), before);
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
