//! The Helm chart: install and uninstall with real helm, the operator under the chart's own
//! RBAC, and the values rendered as documented.

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn helm_install_creates_the_operator_and_uninstall_keeps_crds() {
    let api = ApiServer::start().await.expect("a fresh API server for helm");
    let chart = repo_root().join("charts/vmcp-operator");
    let out = api.helm().args(["lint"]).arg(&chart).output().unwrap();
    assert!(out.status.success(), "helm lint: {}", String::from_utf8_lossy(&out.stdout));
    let out = api.helm().args(["template", "t"]).arg(&chart).output().unwrap();
    assert!(out.status.success());
    let rendered = String::from_utf8_lossy(&out.stdout);
    assert!(
        rendered.contains("kind: CustomResourceDefinition")
            && rendered.contains("kind: ClusterRole")
    );
    let out = api
        .helm()
        .args(["install", "vmcp", "--namespace", "vmcp-system", "--create-namespace"])
        .arg(&chart)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm install: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let client = api.client();
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "vmcp-system");
    assert_eq!(
        deps.list(&ListParams::default()).await.unwrap().items.len(),
        1,
        "operator Deployment"
    );
    let crds = api.run_kubectl(&["get", "crd", "-o", "name"]).await.unwrap();
    let all = vmcp_types::crd::all_crds().len();
    assert_eq!(crds.lines().filter(|l| l.contains("vmcp.dev")).count(), all, "{crds}");
    let out =
        api.helm().args(["uninstall", "vmcp", "--namespace", "vmcp-system"]).output().unwrap();
    assert!(out.status.success(), "helm uninstall: {}", String::from_utf8_lossy(&out.stderr));
    let crds = api.run_kubectl(&["get", "crd", "-o", "name"]).await.unwrap();
    assert_eq!(
        crds.lines().filter(|l| l.contains("vmcp.dev")).count(),
        all,
        "CRDs are kept on uninstall: {crds}"
    );
    assert!(deps.list(&ListParams::default()).await.unwrap().items.is_empty(), "operator removed");

    // A reinstall under another release name and namespace (or a second release next to the
    // first) leaves the kept CRDs alone instead of failing on their ownership annotations.
    let out = api
        .helm()
        .args(["install", "vmcp2", "--namespace", "ops", "--create-namespace"])
        .arg(&chart)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm install under another release: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let owner = api
        .run_kubectl(&[
            "get",
            "crd",
            "mcpgroups.vmcp.dev",
            "-o",
            "jsonpath={.metadata.annotations.meta\\.helm\\.sh/release-name}",
        ])
        .await
        .unwrap();
    assert_eq!(owner.trim(), "vmcp", "the CRDs were not adopted or replaced");
    let ops: Api<Deployment> = Api::namespaced(client.clone(), "ops");
    assert_eq!(ops.list(&ListParams::default()).await.unwrap().items.len(), 1);
    // The release that created them still renders (and so upgrades) them.
    let out = api
        .helm()
        .args(["template", "vmcp", "--namespace", "vmcp-system", "--dry-run=server"])
        .arg(&chart)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let own = String::from_utf8_lossy(&out.stdout);
    assert_eq!(own.matches("kind: CustomResourceDefinition").count(), all);
    let out = api
        .helm()
        .args(["template", "other", "--namespace", "ops", "--dry-run=server"])
        .arg(&chart)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("kind: CustomResourceDefinition"));
}

/// The operator under the chart's own RBAC: the chart's Role and RoleBinding for one watched
/// namespace (and nothing cluster-wide) and its leader-election Role, rendered by real helm, bound to the chart's
/// ServiceAccount, which the controllers impersonate. Every call the controllers make is
/// allowed: the examples reconcile to children and status on all four kinds, and the Lease can
/// be taken. The impersonated client really is restricted (it cannot list ReplicaSets).
#[tokio::test(flavor = "multi_thread")]
async fn operator_runs_under_the_charts_rbac() {
    use k8s_openapi::api::apps::v1::ReplicaSet;
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::Secret;
    let (api, admin, ns) = setup("op-rbac").await;
    let chart = repo_root().join("charts/vmcp-operator");
    let out = api
        .helm()
        .args(["template", "vmcp", "--namespace", &ns, "--set", &format!("watchNamespace={ns}")])
        .args(["--show-only", "templates/rbac.yaml"])
        .args(["--show-only", "templates/leader-election-rbac.yaml"])
        .arg(&chart)
        .output()
        .unwrap();
    assert!(out.status.success(), "helm template: {}", String::from_utf8_lossy(&out.stderr));
    let rbac = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&rbac).unwrap();
    assert!(
        !docs.iter().any(|d| d["kind"] == "ClusterRole" || d["kind"] == "ClusterRoleBinding"),
        "a namespace-scoped install grants nothing cluster-wide:\n{rbac}"
    );
    let binding = docs
        .iter()
        .find(|d| {
            d["kind"] == "RoleBinding"
                && d["roleRef"]["kind"] == "Role"
                && d["metadata"]["namespace"] == ns.as_str()
                && !d["roleRef"]["name"].as_str().unwrap().ends_with("leader-election")
        })
        .unwrap_or_else(|| panic!("no RoleBinding of the operator's Role in {ns}:\n{rbac}"));
    let subject = &binding["subjects"][0];
    assert_eq!(subject["kind"], "ServiceAccount");
    let user = format!(
        "system:serviceaccount:{}:{}",
        subject["namespace"].as_str().unwrap(),
        subject["name"].as_str().unwrap()
    );
    apply_text(api, &ns, &rbac).await;
    kubectl_apply(api, &ns, "examples/k8s/").await;

    let mut config = api.config().clone();
    config.auth_info.impersonate = Some(user.clone());
    let client = kube::Client::try_from(config).unwrap();
    // RBAC reads bindings from a cache: wait until they apply to the impersonated user.
    let vmcps: Api<VirtualMCPServer> = Api::namespaced(client.clone(), &ns);
    eventually("the RoleBinding in effect", Duration::from_secs(10), || async {
        vmcps.list(&ListParams::default()).await.ok().map(|_| ())
    })
    .await;
    let sets =
        Api::<ReplicaSet>::namespaced(client.clone(), &ns).list(&ListParams::default()).await;
    assert!(
        matches!(&sets, Err(kube::Error::Api(s)) if s.code == 403),
        "{user} may list ReplicaSets: {sets:?}"
    );
    // Secrets are visible in the watched namespace only.
    let here =
        Api::<Secret>::namespaced(client.clone(), &ns).list_metadata(&ListParams::default()).await;
    assert!(here.is_ok(), "{user} cannot list Secrets in {ns}: {here:?}");
    let elsewhere = Api::<Secret>::namespaced(client.clone(), "kube-system")
        .list_metadata(&ListParams::default())
        .await;
    assert!(
        matches!(&elsewhere, Err(kube::Error::Api(s)) if s.code == 403),
        "{user} may list Secrets in kube-system: {elsewhere:?}"
    );

    let _stop = run_operator(client.clone(), &ns);
    let v = eventually("gateway status with 2 backends", Duration::from_secs(60), || async {
        let v = vmcps.get("engineering-gateway").await.unwrap();
        v.status.clone().filter(|s| s.backend_count == 2).map(|_| v)
    })
    .await;
    let st = v.status.unwrap();
    for t in ["GroupRefValidated", "AuthConfigured", "BackendsDiscovered"] {
        let c = st.conditions.iter().find(|c| c.type_ == t).unwrap();
        assert_eq!(c.status, "True", "{t}: {c:?}");
    }
    let deps: Api<Deployment> = Api::namespaced(admin.clone(), &ns);
    for name in ["engineering-gateway-vmcp", "weather", "notes"] {
        eventually(&format!("Deployment {name}"), Duration::from_secs(30), || async {
            deps.get_opt(name).await.unwrap().map(|_| ())
        })
        .await;
    }
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(admin.clone(), &ns);
    assert!(pdbs.get_opt("engineering-gateway-vmcp").await.unwrap().is_some());
    let servers: Api<vmcp_types::crd::MCPServer> = Api::namespaced(admin.clone(), &ns);
    let groups: Api<vmcp_types::crd::MCPGroup> = Api::namespaced(admin.clone(), &ns);
    let auths: Api<vmcp_types::crd::MCPExternalAuthConfig> = Api::namespaced(admin.clone(), &ns);
    eventually("status on every kind", Duration::from_secs(30), || async {
        let s = servers.get("notes").await.unwrap().status?;
        let g = groups.get("engineering").await.unwrap().status?;
        let a = auths.get("weather-api-key").await.unwrap().status?;
        (s.observed_generation.is_some()
            && g.server_count == 2
            && a.conditions.iter().any(|c| c.type_ == "Valid" && c.status == "True"))
        .then_some(())
    })
    .await;
    // No call was refused: no ReconcileFailed Event anywhere in the namespace.
    let events: Api<Event> = Api::namespaced(admin.clone(), &ns);
    let failed: Vec<_> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("ReconcileFailed"))
        .map(|e| e.note.unwrap_or_default())
        .collect();
    assert!(failed.is_empty(), "{failed:?}");

    // Leader election under the chart's leader-election Role (in the release namespace).
    let mut elector = vmcp_operator::leader::LeaderElector::new(
        client.clone(),
        vmcp_operator::leader::LeaseConfig::new("vmcp-operator-leader", ns.as_str(), "rbac-test"),
    );
    let attempt = elector.try_acquire_or_renew().await.unwrap();
    assert_eq!(attempt, vmcp_operator::leader::Attempt::Held);
    assert_eq!(elector.try_acquire_or_renew().await.unwrap(), vmcp_operator::leader::Attempt::Held);
    let lease = Api::<Lease>::namespaced(admin, &ns).get("vmcp-operator-leader").await.unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some("rbac-test"));
}

/// `helm template` of `args` (each `--set` etc.) as JSON documents.
fn helm_template(
    api: &ApiServer,
    chart: &std::path::Path,
    args: &[&str],
) -> Vec<serde_json::Value> {
    let out = api
        .helm()
        .args(["template", "t", "--namespace", "ops"])
        .args(args)
        .arg(chart)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm template {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_saphyr::from_multiple::<serde_json::Value>(&text)
        .unwrap()
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

fn operator_env(docs: &[serde_json::Value]) -> Vec<(String, String)> {
    let dep = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    dep["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?.to_owned(), e["value"].as_str()?.to_owned())))
        .collect()
}

/// The chart's values render what they say: usable as a subchart (Helm's `global`), a global
/// registry, namespace-list scope with per-namespace Roles and no cluster-wide grant, and
/// workload settings the operator itself parses back (the chart and the operator agree on the
/// environment variables and their JSON).
#[tokio::test(flavor = "multi_thread")]
async fn chart_values_render_as_documented() {
    let api = ApiServer::shared().await;
    let chart = repo_root().join("charts/vmcp-operator");
    let out = api.helm().args(["lint", "--strict"]).arg(&chart).output().unwrap();
    assert!(out.status.success(), "helm lint: {}", String::from_utf8_lossy(&out.stdout));

    // As a dependency of a parent chart, with a global registry and pull secret.
    let parent = tempfile::tempdir().unwrap();
    std::fs::write(
        parent.path().join("Chart.yaml"),
        "apiVersion: v2\nname: platform\nversion: 1.0.0\ndependencies:\n  - name: vmcp-operator\n    version: 0.1.0\n",
    )
    .unwrap();
    std::fs::write(
        parent.path().join("values.yaml"),
        "global:\n  imageRegistry: registry.internal:5000\n  imagePullSecrets: [{name: mirror}]\n  team: platform\n",
    )
    .unwrap();
    let sub = parent.path().join("charts");
    std::fs::create_dir_all(&sub).unwrap();
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(&chart)
        .arg(sub.join("vmcp-operator"))
        .status()
        .unwrap();
    assert!(status.success());
    let docs = helm_template(api, parent.path(), &[]);
    let dep = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(
        pod["containers"][0]["image"],
        "registry.internal:5000/vmcp-dev/vmcp-operator:0.1.0"
    );
    assert_eq!(pod["imagePullSecrets"][0]["name"], "mirror");
    let env = operator_env(&docs);
    assert!(env.contains(&(
        "VMCP_GATEWAY_IMAGE".into(),
        "registry.internal:5000/vmcp-dev/vmcp-gateway:0.1.0".into()
    )));

    // Every namespace: one ClusterRole; listed namespaces: a Role + RoleBinding in each, with
    // Secret access there only, and nothing cluster-wide.
    let docs = helm_template(api, &chart, &[]);
    assert!(docs.iter().any(|d| d["kind"] == "ClusterRole"));
    let docs = helm_template(
        api,
        &chart,
        &["--set", "watchNamespaces={team-a,team-b}", "--set", "watchNamespace=team-c"],
    );
    let kinds: Vec<String> = docs
        .iter()
        .map(|d| {
            format!(
                "{}/{}",
                d["kind"].as_str().unwrap(),
                d["metadata"]["namespace"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert!(!kinds.iter().any(|k| k.starts_with("Cluster")), "{kinds:?}");
    for ns in ["team-a", "team-b", "team-c"] {
        let role = docs
            .iter()
            .find(|d| d["kind"] == "Role" && d["metadata"]["namespace"] == ns)
            .unwrap_or_else(|| panic!("no Role in {ns}: {kinds:?}"));
        assert!(role["rules"].as_array().unwrap().iter().any(|r| r["resources"][0] == "secrets"));
        assert!(kinds.contains(&format!("RoleBinding/{ns}")), "{kinds:?}");
    }

    // Workload settings, log level, extra env, Redis password: parsed by the operator itself.
    let docs = helm_template(
        api,
        &chart,
        &[
            "--set",
            "watchNamespaces={team-a,team-b}",
            "--set",
            "workloads.imagePullSecrets={regcred}",
            "--set",
            "workloads.gateway.podSecurityContext.runAsNonRoot=true",
            "--set",
            "workloads.mcpServer.containerSecurityContext.allowPrivilegeEscalation=false",
            "--set",
            "defaultRedis.address=redis:6379",
            "--set",
            "defaultRedis.existingSecret=redis-auth",
            "--set",
            "logLevel=debug",
            "--set",
            "extraEnv[0].name=HTTPS_PROXY",
            "--set",
            "extraEnv[0].value=http://proxy:3128",
            "--set",
            "podSecurityContext.runAsUser=null",
        ],
    );
    let env = operator_env(&docs);
    assert!(env.contains(&("RUST_LOG".into(), "debug".into())), "{env:?}");
    assert!(env.contains(&("HTTPS_PROXY".into(), "http://proxy:3128".into())), "{env:?}");
    let settings = vmcp_operator::Settings::from_lookup(|k| {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    })
    .unwrap();
    assert_eq!(settings.namespaces, ["team-a", "team-b"]);
    assert_eq!(settings.workloads.image_pull_secrets, ["regcred"]);
    let g = settings.workloads.gateway.pod_security_context.unwrap();
    assert_eq!((g.run_as_non_root, g.run_as_user), (Some(true), None));
    let c = settings.workloads.mcp_server.container_security_context.unwrap();
    assert_eq!(c.allow_privilege_escalation, Some(false));
    let redis = settings.defaults.redis.unwrap();
    assert_eq!(redis.password.unwrap().name, "redis-auth");
    let dep = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let psc = &dep["spec"]["template"]["spec"]["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true);
    assert!(psc.get("runAsUser").is_none(), "null removes the fixed UID: {psc}");

    // Monitoring: a PodMonitor on the gateways' metrics port, the operator's Service and
    // ServiceMonitor, and the dashboard, whose every metric is one the binaries export.
    let docs = helm_template(
        api,
        &chart,
        &[
            "--set",
            "monitoring.podMonitor.enabled=true",
            "--set",
            "monitoring.serviceMonitor.enabled=true",
            "--set",
            "monitoring.dashboard.enabled=true",
            "--set",
            "workloads.mcpServer.networkPolicy=true",
        ],
    );
    let pm = docs.iter().find(|d| d["kind"] == "PodMonitor").unwrap();
    assert_eq!(pm["spec"]["podMetricsEndpoints"][0]["port"], "metrics");
    assert_eq!(pm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"], "vmcp-gateway");
    assert!(docs.iter().any(|d| d["kind"] == "ServiceMonitor"));
    let env = operator_env(&docs);
    let settings = vmcp_operator::Settings::from_lookup(|k| {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    })
    .unwrap();
    assert!(settings.workloads.server_network_policy);
    let role = docs.iter().find(|d| d["kind"] == "ClusterRole").unwrap();
    assert!(
        role["rules"].as_array().unwrap().iter().any(|r| r["resources"][0] == "networkpolicies"),
        "{role}"
    );
    let cm = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["labels"]["grafana_dashboard"] == "1")
        .unwrap();
    let dashboard: serde_json::Value =
        serde_json::from_str(cm["data"]["vmcp.json"].as_str().unwrap()).unwrap();
    // What the registries register (families without samples are not in the exposition).
    let mut exported = Vec::new();
    for (file, prefix) in [
        ("crates/gateway/src/metrics.rs", "vmcp_"),
        ("crates/operator/src/metrics.rs", "vmcp_operator_"),
    ] {
        let src = std::fs::read_to_string(repo_root().join(file)).unwrap();
        for part in src.split("registry.register(").skip(1) {
            let name = part.trim_start().trim_start_matches('"').split('"').next().unwrap();
            exported.push(format!("{prefix}{name}"));
        }
    }
    assert!(exported.len() >= 15, "{exported:?}");
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for name in expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("vmcp_"))
            {
                let base = ["_total", "_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(name);
                assert!(
                    exported.iter().any(|e| e == base),
                    "panel {} queries {name}, which nothing exports: {exported:?}",
                    panel["title"]
                );
                queried += 1;
            }
        }
    }
    assert!(queried >= 15, "{queried}");
}
