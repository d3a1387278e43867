//! RBAC on the real API server: a user without bindings (impersonated, or with its own client
//! certificate) is forbidden; a Role and RoleBinding allow exactly their namespace.

use std::time::{Duration, Instant};

use vmcp_e2e::repo_root;

use super::setup;

#[tokio::test]
async fn rbac_forbids_a_user_without_bindings() {
    let (api, _client, ns) = setup("rbac").await;
    let file = repo_root().join("examples/k8s/10-group.yaml");
    api.run_kubectl(&["apply", "-n", &ns, "-f", file.to_str().unwrap()]).await.unwrap();
    // The admin (system:masters) may.
    api.run_kubectl(&["get", "vmcp", "-n", &ns]).await.unwrap();

    let forbidden = |out: std::process::Output, who: &str| {
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "{who} was allowed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(stderr.contains("(Forbidden)"), "{who}: {stderr}");
        assert!(
            stderr.contains(
                r#"User "nobody" cannot list resource "virtualmcpservers" in API group "vmcp.dev""#
            ),
            "{who}: {stderr}"
        );
    };
    // Impersonation of a user without bindings.
    let out = api.kubectl().args(["--as=nobody", "get", "vmcp", "-n", &ns]).output().unwrap();
    forbidden(out, "--as=nobody");
    // The same user authenticated by its own client certificate.
    let kubeconfig = api.write_user_kubeconfig("nobody", &[]).unwrap();
    let out = api
        .kubectl()
        .env("KUBECONFIG", &kubeconfig)
        .args(["get", "vmcp", "-n", &ns])
        .output()
        .unwrap();
    forbidden(out, "client certificate CN=nobody");
    let whoami = api
        .kubectl()
        .env("KUBECONFIG", &kubeconfig)
        .args(["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&whoami.stdout), "nobody");

    // RBAC is really evaluated: a Role + RoleBinding in this namespace lets nobody list there
    // (RBAC reads bindings from a cache, so allow it a moment), and nowhere else.
    api.run_kubectl(&[
        "create",
        "role",
        "vmcp-reader",
        "-n",
        &ns,
        "--verb=get,list",
        "--resource=virtualmcpservers.vmcp.dev",
    ])
    .await
    .unwrap();
    api.run_kubectl(&[
        "create",
        "rolebinding",
        "nobody-reads",
        "-n",
        &ns,
        "--role=vmcp-reader",
        "--user=nobody",
    ])
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = api
            .kubectl()
            .env("KUBECONFIG", &kubeconfig)
            .args(["get", "vmcp", "-n", &ns])
            .output()
            .unwrap();
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the RoleBinding never took effect: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = api.kubectl().args(["--as=nobody", "get", "vmcp", "-n", "default"]).output().unwrap();
    assert!(!out.status.success(), "the binding must not reach other namespaces");
    let out = api.kubectl().args(["--as=nobody", "get", "mcpgroups", "-n", &ns]).output().unwrap();
    assert!(!out.status.success(), "the role grants virtualmcpservers only");
}
