//! Gateway config loading: examples parse, every problem is reported with its path, and
//! `docs/config.md` documents every field.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use vmcp_types::config::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn local_examples_load() {
    let dir = repo().join("examples/local");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|e| e == "yaml") {
            load_file(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            n += 1;
        }
    }
    assert!(n >= 1);
}

#[test]
fn defaults_are_sensible() {
    let c = from_yaml_str("backends: []\n").unwrap();
    assert_eq!(c.listen, "0.0.0.0:4483");
    assert_eq!(c.session_storage.ttl, Duration::from_secs(1800));
    assert_eq!(c.aggregation.prefix_format, "{backend}_");
    assert_eq!(c.incoming_auth.auth_type, IncomingAuthType::Anonymous);
    assert_eq!(c.http.max_body_bytes, 4 * 1024 * 1024);
}

#[test]
fn every_value_error_is_reported_with_its_path() {
    let yaml = r#"
listen: "not-an-address"
incomingAuth:
  type: oidc
backends:
  - name: a
    url: http://127.0.0.1:1/mcp
  - name: b
    url: "/relative"
    auth:
      type: tokenExchange
      tokenExchange:
        tokenUrl: "not a url"
        clientId: gw
        clientSecret: {}
        audience: b
  - name: a
    url: http://127.0.0.1:2/mcp
    auth:
      type: headerInjection
aggregation:
  conflictResolution: priority
sessionStorage:
  provider: redis
"#;
    let err = from_yaml_str(yaml).unwrap_err();
    let got: Vec<String> = err.field_errors().iter().map(ToString::to_string).collect();
    let expect = [
        "listen: 'not-an-address' is not a socket address like 0.0.0.0:4483",
        "incomingAuth.oidc: required when incomingAuth.type is 'oidc' (set at least 'issuer')",
        "backends[1].url: not an absolute URL: '/relative'",
        "backends[1].auth.tokenExchange.tokenUrl: not an absolute URL: 'not a url'",
        "backends[1].auth.tokenExchange.clientSecret: set 'env' (an environment variable name) or 'file' (a file path); secrets are never inline",
        "backends[2].name: duplicate backend name 'a'",
        "backends[2].auth.headerInjection: required when backends[2].auth.type is 'headerInjection'",
        "aggregation.priorityOrder: required when conflictResolution is 'priority': list backend names, highest priority first",
        "sessionStorage.redis: required when sessionStorage.provider is 'redis' (set at least 'url')",
    ];
    for e in expect {
        assert!(got.iter().any(|g| g == e), "missing: {e}\n got: {got:#?}");
    }
    assert_eq!(got.len(), expect.len(), "{got:#?}");
    let shown = err.to_string();
    assert!(shown.starts_with("9 invalid field(s):"), "{shown}");
}

#[test]
fn shape_errors_name_the_field() {
    let err = from_yaml_str("backends:\n  - name: a\n    url: http://x/mcp\n    tiemout: 3s\n")
        .unwrap_err();
    let e = &err.field_errors()[0];
    assert!(e.path.starts_with("backends[0]"), "{e}");
    assert!(e.message.contains("tiemout"), "{e}");

    let err = from_yaml_str("sessionStorage:\n  ttl: soon\n").unwrap_err();
    assert_eq!(err.field_errors()[0].path, "sessionStorage.ttl", "{err}");
}

#[test]
fn redis_wait_settings_parse_and_a_zero_wait_timeout_is_refused() {
    let base = "sessionStorage:\n  provider: redis\n  redis:\n    url: 'redis-sentinel://s1:26379/0?sentinelServiceName=m&node=s2:26379'\n";
    let c = from_yaml_str(&format!("{base}    waitReplicas: 1\n    waitTimeout: 250ms\n")).unwrap();
    let r = c.session_storage.redis.unwrap();
    assert_eq!((r.wait_replicas, r.wait_timeout), (1, Duration::from_millis(250)));
    let r = from_yaml_str(base).unwrap().session_storage.redis.unwrap();
    assert_eq!((r.wait_replicas, r.wait_timeout), (0, Duration::from_millis(500)));
    // WAIT with timeout 0 would block forever once the replicas are gone.
    let err =
        from_yaml_str(&format!("{base}    waitReplicas: 1\n    waitTimeout: 0s\n")).unwrap_err();
    assert!(err.to_string().contains("sessionStorage.redis.waitTimeout"), "{err}");
}

#[test]
fn secrets_are_never_inline() {
    let err = from_yaml_str(
        "backends:\n  - name: a\n    url: http://x/mcp\n    auth:\n      type: bearerToken\n      bearerToken:\n        token: s3cr3t\n",
    )
    .unwrap_err();
    assert!(err.to_string().contains("backends[0].auth.bearerToken.token"), "{err}");
}

/// Every field path of the schema, e.g. `backends[].auth.tokenExchange.tokenUrl`.
fn field_paths() -> Vec<String> {
    let schema = serde_json::to_value(schemars::schema_for!(GatewayConfig)).unwrap();
    let defs = schema["$defs"].clone();
    let mut out = Vec::new();
    fn resolve<'a>(v: &'a serde_json::Value, defs: &'a serde_json::Value) -> &'a serde_json::Value {
        if let Some(r) = v.get("$ref").and_then(|r| r.as_str()) {
            return &defs[r.trim_start_matches("#/$defs/")];
        }
        for key in ["anyOf", "oneOf", "allOf"] {
            if let Some(alts) = v.get(key).and_then(|a| a.as_array()) {
                for a in alts {
                    let r = resolve(a, defs);
                    if r.get("properties").is_some() || r.get("items").is_some() {
                        return r;
                    }
                }
            }
        }
        v
    }
    fn walk(v: &serde_json::Value, defs: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
        // SecretSource (`env` | `file`) is documented once, in its own section.
        if v.to_string().contains("SecretSource") && v.get("properties").is_none() {
            return;
        }
        let v = resolve(v, defs);
        if let Some(props) = v.get("properties").and_then(|p| p.as_object()) {
            for (k, p) in props {
                let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                out.push(path.clone());
                walk(p, defs, &path, out);
            }
        }
        if let Some(items) = v.get("items") {
            walk(items, defs, &format!("{prefix}[]"), out);
        }
        if let Some(ap) = v.get("additionalProperties").filter(|a| a.is_object()) {
            walk(ap, defs, &format!("{prefix}.<name>"), out);
        }
    }
    walk(&schema, &defs, "", &mut out);
    out
}

#[test]
fn docs_cover_every_field() {
    let docs = std::fs::read_to_string(repo().join("docs/config.md")).unwrap();
    let missing: Vec<_> =
        field_paths().into_iter().filter(|p| !docs.contains(&format!("`{p}`"))).collect();
    assert!(missing.is_empty(), "docs/config.md does not document: {missing:#?}");
}

#[test]
fn metrics_listen_is_a_socket_address_on_another_port() {
    let ok = from_yaml_str("listen: 0.0.0.0:4483\ntelemetry:\n  metricsListen: 0.0.0.0:9090\n");
    assert_eq!(ok.unwrap().telemetry.metrics_listen.as_deref(), Some("0.0.0.0:9090"));
    for (value, why) in [("9090", "is not a socket address"), ("127.0.0.1:4483", "uses the port")] {
        let yaml = format!("listen: 0.0.0.0:4483\ntelemetry:\n  metricsListen: \"{value}\"\n");
        let e = from_yaml_str(&yaml).unwrap_err().to_string();
        assert!(e.contains("telemetry.metricsListen") && e.contains(why), "{value}: {e}");
    }
}

/// L14: loopback origins are allowed by default only for a gateway that listens on loopback.
#[test]
fn loopback_origins_default_to_the_listen_address() {
    for (listen, allowed) in [
        ("127.0.0.1:4483", true),
        ("[::1]:4483", true),
        ("0.0.0.0:4483", false),
        ("10.0.0.5:4483", false),
        ("[::]:4483", false),
    ] {
        let c = from_yaml_str(&format!("listen: \"{listen}\"\n")).unwrap();
        assert_eq!(c.allows_loopback_origins(), allowed, "{listen}");
    }
    let c = from_yaml_str("listen: 0.0.0.0:4483\nhttp:\n  allowLoopbackOrigins: true\n").unwrap();
    assert!(c.allows_loopback_origins());
    let c =
        from_yaml_str("listen: 127.0.0.1:4483\nhttp:\n  allowLoopbackOrigins: false\n").unwrap();
    assert!(!c.allows_loopback_origins());
}
