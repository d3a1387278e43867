//! The images of `make images` (docs/images.md), run with podman: `--version`, the gateway
//! serving MCP as UID 65532 on a read-only root with its config mounted read-only, the
//! operator's `crds`, and the stdio bridge installed the way the operator's init container does
//! it into two MCP server images: a glibc Debian one, and one without libc, shell or `cp`.
//! Every test prints a SKIPPED line and returns only where podman cannot run containers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::json;
use vmcp_e2e::images::{Container, Images, empty_dir, image_config, images, run_to_end};
use vmcp_e2e::peers::{Client, Sdk};
use vmcp_e2e::ports::free_port;
use vmcp_e2e::repo_root;
use vmcp_types::crd::MCPServer;

const START: Duration = Duration::from_secs(30);

fn stdout(out: &std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn version_labels_user_and_entrypoint_of_every_image() {
    let Some(img) = images() else { return };
    let chart = std::fs::read_to_string(repo_root().join("charts/vmcp-operator/Chart.yaml"));
    assert!(chart.unwrap().contains(&format!("appVersion: \"{}\"", img.version)));
    for (image, binary) in [
        (&img.gateway, "vmcp-gateway"),
        (&img.operator, "vmcp-operator"),
        (&img.example_backend, "vmcp-example-backend"),
    ] {
        let out = run_to_end(&["--read-only", image, "--version"]);
        assert_eq!(stdout(&out, image).trim(), format!("{binary} {}", img.version));
        let cfg = image_config(image);
        assert_eq!(cfg["User"], "65532:65532", "{image}");
        assert_eq!(cfg["Entrypoint"], json!([format!("/usr/local/bin/{binary}")]), "{image}");
        let labels = &cfg["Labels"];
        assert_eq!(labels["org.opencontainers.image.version"], img.version.as_str(), "{image}");
        assert_eq!(labels["org.opencontainers.image.title"], binary, "{image}");
        assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0", "{image}");
        assert!(
            labels["org.opencontainers.image.source"].as_str().unwrap().starts_with("https://")
        );
        // No shell and no cp: nothing but the binary and the base files.
        for tool in ["/bin/sh", "cp"] {
            let out = run_to_end(&["--entrypoint", tool, image]);
            assert!(!out.status.success(), "{image} has {tool}");
        }
    }
}

#[test]
fn examples_use_the_example_backend_image_this_build_makes() {
    let Some(img) = images() else { return };
    let text = std::fs::read_to_string(repo_root().join("examples/k8s/30-mcpservers.yaml"));
    let docs: Vec<MCPServer> = serde_saphyr::from_multiple(&text.unwrap()).unwrap();
    assert!(!docs.is_empty());
    for s in docs {
        assert_eq!(s.spec.image, img.example_backend, "{:?}", s.metadata.name);
    }
}

#[test]
fn chart_and_operator_defaults_name_the_images_this_build_makes() {
    let Some(img) = images() else { return };
    let values =
        std::fs::read_to_string(repo_root().join("charts/vmcp-operator/values.yaml")).unwrap();
    for image in [&img.operator, &img.gateway] {
        let repository = image.rsplit_once(':').unwrap().0;
        assert!(values.contains(&format!("repository: {repository}\n")), "{repository}");
    }
    assert_eq!(vmcp_operator::settings::default_gateway_image(), img.gateway);
}

#[test]
fn operator_image_prints_the_crds() {
    let Some(img) = images() else { return };
    let out = run_to_end(&["--read-only", &img.operator, "crds"]);
    assert_eq!(stdout(&out, "crds"), vmcp_operator::crdgen::render_stream().unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_image_serves_mcp_read_only_as_65532() {
    let Some(img) = images() else { return };
    let backend_port = free_port().unwrap().to_string();
    let backend = Container::start(&[
        "--read-only",
        &img.example_backend,
        "--kind",
        "weather",
        "--host",
        "127.0.0.1",
        "--port",
        &backend_port,
    ]);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    std::fs::write(
        dir.path().join("config.yaml"),
        format!(
            "listen: 127.0.0.1:{port}\nbackends:\n  - name: weather\n    url: http://127.0.0.1:{backend_port}/mcp\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap();
    let mount = format!("{}:/etc/vmcp:ro", dir.path().display());
    let gateway = Container::start(&[
        "--read-only",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "-v",
        &mount,
        &img.gateway,
        "--config",
        "/etc/vmcp/config.yaml",
    ]);
    backend.wait_http(backend_port.parse().unwrap(), "/mcp", START).await;
    gateway.wait_http(port, "/healthz", START).await;
    assert_eq!(gateway.process_uid(), 65532, "the gateway runs as the image's user");
    assert_eq!(backend.process_uid(), 65532);
    assert_eq!(gateway.inspect("{{.HostConfig.ReadonlyRootfs}}"), "true");

    let mut c = Client::start(Sdk::TypeScript, &format!("http://127.0.0.1:{port}/mcp"), &[]).await;
    c.ok(json!({"op": "initialize"})).await;
    let tools = c.ok(json!({"op": "list_tools"})).await;
    assert!(tools.as_array().unwrap().iter().any(|t| t["name"] == "weather_forecast"), "{tools}");
    let r = c
        .ok(json!({"op": "call_tool", "name": "weather_forecast",
                   "arguments": {"city": "Lisbon", "days": 2}}))
        .await;
    assert!(r["text"].as_str().unwrap().starts_with("2-day forecast for Lisbon:"), "{r}");
    c.exit().await;
}

/// Runs the operator's stdio `MCPServer` pod with podman: the init container (gateway image,
/// the command the operator renders) installs the bridge into an emptyDir-like folder, then the
/// server image runs the bridge in front of `command`, as `user`. Calls `tool` over Streamable
/// HTTP from the host and returns its text.
async fn bridged_call(
    img: &Images,
    server_image: &str,
    user: &str,
    extra: &[&str],
    command: &[&str],
    tool: (&str, serde_json::Value),
) -> String {
    let port = free_port().unwrap();
    let server: MCPServer = serde_json::from_value(json!({
        "apiVersion": "vmcp.dev/v1alpha1", "kind": "MCPServer",
        "metadata": {"name": "bridged", "namespace": "images", "uid": "u1"},
        "spec": {"image": server_image, "transport": "stdio", "port": port, "command": command},
    }))
    .unwrap();
    let dep = vmcp_operator::resources::mcp_server::server_deployment(
        &server,
        &img.gateway,
        &Default::default(),
    )
    .unwrap();
    let pod = dep.spec.unwrap().template.spec.unwrap();
    let init = &pod.init_containers.unwrap()[0];
    let main = &pod.containers[0];
    let mount_path = &init.volume_mounts.as_ref().unwrap()[0].mount_path;

    let dir = tempfile::tempdir().unwrap();
    let bin = empty_dir(dir.path(), "vmcp-bin");
    let volume = format!("{}:{mount_path}", bin.display());
    let init_cmd = init.command.clone().unwrap();
    let mut args = vec!["--read-only", "-v", &volume, "--entrypoint", &init_cmd[0]];
    args.push(init.image.as_deref().unwrap());
    args.extend(init_cmd[1..].iter().map(String::as_str));
    stdout(&run_to_end(&args), "the install-bridge init container");

    // The bridge admits only the gateway: the token Secret the operator mounts (M8) is a
    // read-only folder with the file `token` here.
    let token = "bridge-token-for-the-image-test";
    let token_dir = empty_dir(dir.path(), "bridge-token");
    std::fs::write(token_dir.join("token"), token).unwrap();
    let token_mount = main
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path.contains("vmcp-bridge"))
        .expect("the bridge token mount");
    let token_volume = format!("{}:{}:ro", token_dir.display(), token_mount.mount_path);
    let entry = &main.command.as_ref().unwrap()[0];
    let mut args = vec!["--user", user, "-v", &volume, "-v", &token_volume, "--entrypoint", entry];
    args.extend_from_slice(extra);
    args.push(main.image.as_deref().unwrap());
    args.extend(main.args.as_ref().unwrap().iter().map(String::as_str));
    let bridge = Container::start(&args);
    bridge.wait_http(port, "/healthz", START).await;

    let auth = format!("Authorization: Bearer {token}");
    let mut c =
        Client::start(Sdk::TypeScript, &format!("http://127.0.0.1:{port}/mcp"), &[auth]).await;
    c.ok(json!({"op": "initialize"})).await;
    let r = c.ok(json!({"op": "call_tool", "name": tool.0, "arguments": tool.1})).await;
    c.exit().await;
    r["text"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn bridge_runs_in_an_image_without_libc_shell_or_cp() {
    let Some(img) = images() else { return };
    // The example-backend image is FROM scratch: a static binary, no libc, no shell, no cp
    // (version_labels_user_and_entrypoint_of_every_image checks the last two).
    let text = bridged_call(
        img,
        &img.example_backend,
        "65532:65532",
        &["--read-only"],
        &["/usr/local/bin/vmcp-example-backend", "--kind", "notes", "--stdio"],
        ("add_note", json!({"text": "from scratch"})),
    )
    .await;
    assert_eq!(text, "added note #1");
}

/// The example backend built for the host: a dynamically linked glibc executable.
fn host_example_backend() -> std::path::PathBuf {
    let root = repo_root();
    let status = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()))
        .args(["build", "-q", "-p", "vmcp-example-backends"])
        .current_dir(&root)
        .status()
        .unwrap();
    assert!(status.success(), "cargo build -p vmcp-example-backends");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    target.join("debug/vmcp-example-backend")
}

#[tokio::test(flavor = "multi_thread")]
async fn bridge_runs_in_a_glibc_debian_image_as_another_user() {
    let Some(img) = images() else { return };
    // The Debian image has glibc and coreutils (the kind of image the old `cp` init step needed).
    let out = run_to_end(&["--entrypoint", "cp", &img.debian, "--version"]);
    assert!(stdout(&out, "cp in Debian").contains("GNU coreutils"));
    let backend = host_example_backend();
    let elf = std::process::Command::new("readelf").arg("-l").arg(&backend).output().unwrap();
    assert!(
        String::from_utf8_lossy(&elf.stdout).contains("program interpreter"),
        "the glibc test server must be dynamically linked"
    );
    let mount = format!("{}:/opt/backend/vmcp-example-backend:ro", backend.display());
    let text = bridged_call(
        img,
        &img.debian,
        "4242:4242",
        &["-v", &mount],
        &["/opt/backend/vmcp-example-backend", "--kind", "weather", "--stdio"],
        ("forecast", json!({"city": "Oslo", "days": 1})),
    )
    .await;
    assert!(text.starts_with("1-day forecast for Oslo:"), "{text}");
}
