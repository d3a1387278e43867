//! `MCPServer` -> Deployment + Service (+ a NetworkPolicy when the installation enables it).
//!
//! Streamable HTTP and SSE servers run as given. A `stdio` server is wrapped by the gateway's
//! bridge: an init container runs `vmcp-gateway install-bridge /vmcp-bin` from the gateway image,
//! which copies the (statically linked) binary into an emptyDir without needing a shell or `cp`
//! in either image, and the server container runs `vmcp-gateway bridge --port <port> -- <command>
//! <args>`, which serves the stdio server as Streamable HTTP at `/mcp` to callers presenting
//! the server's bridge token ([`super::bridge_token`]).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, PodSecurityContext,
    PodSpec, PodTemplateSpec, Probe, SecretKeySelector, SecurityContext, Service, ServicePort,
    ServiceSpec, TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use vmcp_types::crd::{MCPServer, McpTransport};

use super::bridge_token::{bridge_token_secret_name, bridge_token_volume};
use super::gateway::GATEWAY_APP;
use super::merge::overlay_pod_template;
use super::workload::WorkloadDefaults;
use super::{
    BRIDGE_DIR, DEFAULT_SERVER_PORT, GATEWAY_BINARY, GROUP_LABEL, RenderError, child_meta,
    drop_all_capabilities, labels, runtime_default_seccomp, selector_labels,
};

/// `app.kubernetes.io/name` of MCP server objects.
pub const SERVER_APP: &str = "mcp-server";
/// `app.kubernetes.io/component` of MCP server objects.
pub const SERVER_COMPONENT: &str = "mcp-server";
const KIND: &str = "MCPServer";
const BRIDGE_VOLUME: &str = "vmcp-bin";

/// The Service port (default 8080).
pub fn server_port(s: &MCPServer) -> i32 {
    s.spec.port.unwrap_or(DEFAULT_SERVER_PORT)
}

/// The container port (default: the Service port).
pub fn server_target_port(s: &MCPServer) -> i32 {
    s.spec.target_port.unwrap_or_else(|| server_port(s))
}

/// Does the gateway talk to this server with the legacy SSE transport?
pub fn server_transport_is_sse(s: &MCPServer) -> bool {
    s.spec.transport == McpTransport::Sse
}

/// In-cluster URL of the server's MCP endpoint: `http://<name>.<ns>.svc.cluster.local:<port>`
/// + `/sse` for SSE servers, `/mcp` otherwise (stdio servers are bridged to `/mcp`).
pub fn server_url(s: &MCPServer, namespace: &str) -> String {
    let name = s.metadata.name.as_deref().unwrap_or_default();
    let path = if server_transport_is_sse(s) { "/sse" } else { "/mcp" };
    format!("http://{name}.{namespace}.svc.cluster.local:{}{path}", server_port(s))
}

fn instance(s: &MCPServer) -> String {
    s.metadata.name.clone().unwrap_or_default()
}

/// The server's Deployment (named like the server). `gateway_image` supplies the bridge for
/// `stdio` servers; `workload` the installation's pod settings.
pub fn server_deployment(
    s: &MCPServer,
    gateway_image: &str,
    workload: &WorkloadDefaults,
) -> Result<Deployment, RenderError> {
    let name = instance(s);
    let target_port = server_target_port(s);
    let mut env = s.spec.env.clone();
    for sec in &s.spec.secrets {
        env.push(EnvVar {
            name: sec.target_env_name.clone().unwrap_or_else(|| sec.key.clone()),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: sec.name.clone(),
                    key: sec.key.clone(),
                    optional: None,
                }),
                ..EnvVarSource::default()
            }),
        });
    }
    let mut container = Container {
        name: "mcp-server".into(),
        image: Some(s.spec.image.clone()),
        env: (!env.is_empty()).then_some(env),
        ports: Some(vec![ContainerPort {
            name: Some("mcp".into()),
            container_port: target_port,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction { host: None, port: IntOrString::Int(target_port) }),
            period_seconds: Some(10),
            ..Probe::default()
        }),
        resources: s.spec.resources.clone(),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(drop_all_capabilities()),
            seccomp_profile: Some(runtime_default_seccomp()),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };
    let mut init_containers = Vec::new();
    let mut volumes = Vec::new();
    if s.spec.transport == McpTransport::Stdio {
        if s.spec.command.is_empty() {
            return Err(RenderError::StdioWithoutCommand);
        }
        let bridge = format!("{BRIDGE_DIR}/vmcp-gateway");
        let mount = VolumeMount {
            name: BRIDGE_VOLUME.into(),
            mount_path: BRIDGE_DIR.into(),
            ..VolumeMount::default()
        };
        init_containers.push(Container {
            name: "install-bridge".into(),
            image: Some(gateway_image.to_owned()),
            command: Some(vec![GATEWAY_BINARY.into(), "install-bridge".into(), BRIDGE_DIR.into()]),
            volume_mounts: Some(vec![mount.clone()]),
            security_context: Some(SecurityContext {
                allow_privilege_escalation: Some(false),
                capabilities: Some(drop_all_capabilities()),
                read_only_root_filesystem: Some(true),
                seccomp_profile: Some(runtime_default_seccomp()),
                ..SecurityContext::default()
            }),
            ..Container::default()
        });
        let mut args = vec!["bridge".to_owned(), "--port".into(), target_port.to_string()];
        let mut mounts = vec![mount];
        if let Some(secret) = bridge_token_secret_name(s) {
            // Only the gateway, which has the same token, may use the bridge (M8).
            let (volume, token_mount, path) = bridge_token_volume(&secret);
            args.extend(["--auth-token-file".to_owned(), path]);
            mounts.push(token_mount);
            volumes.push(volume);
        }
        args.push("--".into());
        args.extend(s.spec.command.iter().cloned());
        args.extend(s.spec.args.iter().cloned());
        container.command = Some(vec![bridge]);
        container.args = Some(args);
        container.volume_mounts = Some(mounts);
        volumes.push(Volume {
            name: BRIDGE_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        });
    } else {
        container.command = (!s.spec.command.is_empty()).then(|| s.spec.command.clone());
        container.args = (!s.spec.args.is_empty()).then(|| s.spec.args.clone());
    }

    let selector = selector_labels(SERVER_APP, &name);
    let mut template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(SERVER_APP, &name, SERVER_COMPONENT)),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            automount_service_account_token: Some(false),
            // The restricted Pod Security Standard: non-root (no fixed UID, so the image's
            // own USER, or one an overlay or the platform sets), RuntimeDefault seccomp. An
            // image that runs as root fails with CreateContainerConfigError, which the
            // status names; set `podTemplateSpec.spec.securityContext.runAsUser` for it.
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                seccomp_profile: Some(runtime_default_seccomp()),
                ..PodSecurityContext::default()
            }),
            containers: vec![container],
            init_containers: (!init_containers.is_empty()).then_some(init_containers),
            volumes: (!volumes.is_empty()).then_some(volumes),
            ..PodSpec::default()
        }),
    };
    if let Some(spec) = template.spec.as_mut() {
        workload.apply(&workload.mcp_server, spec);
    }
    let template = overlay_pod_template(template, s.spec.pod_template_spec.as_ref(), &selector)?;
    Ok(Deployment {
        metadata: child_meta(s, KIND, name.clone(), labels(SERVER_APP, &name, SERVER_COMPONENT))?,
        spec: Some(DeploymentSpec {
            replicas: Some(s.spec.replicas.unwrap_or(1)),
            selector: LabelSelector { match_labels: Some(selector), match_expressions: None },
            template,
            ..DeploymentSpec::default()
        }),
        status: None,
    })
}

/// The server's Service (named like the server): `port` -> the container's `targetPort`.
pub fn server_service(s: &MCPServer) -> Result<Service, RenderError> {
    let name = instance(s);
    Ok(Service {
        metadata: child_meta(s, KIND, name.clone(), labels(SERVER_APP, &name, SERVER_COMPONENT))?,
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector_labels(SERVER_APP, &name)),
            ports: Some(vec![ServicePort {
                name: Some("mcp".into()),
                port: server_port(s),
                target_port: Some(IntOrString::Int(server_target_port(s))),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}

/// The server's NetworkPolicy (named like the server), when the installation enables it: only
/// gateway pods of the server's group (any vmcp gateway pod when it has no group) may connect
/// to the server's pods, and only on the container port. Other pods of the cluster can no
/// longer bypass the gateway's authentication.
pub fn server_network_policy(s: &MCPServer) -> Result<NetworkPolicy, RenderError> {
    let name = instance(s);
    let mut gateways =
        BTreeMap::from([("app.kubernetes.io/name".to_owned(), GATEWAY_APP.to_owned())]);
    if let Some(g) = s.spec.group_ref.as_ref() {
        gateways.insert(GROUP_LABEL.to_owned(), g.name.clone());
    }
    Ok(NetworkPolicy {
        metadata: child_meta(s, KIND, name.clone(), labels(SERVER_APP, &name, SERVER_COMPONENT))?,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(SERVER_APP, &name)),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![NetworkPolicyPeer {
                    pod_selector: Some(LabelSelector {
                        match_labels: Some(gateways),
                        match_expressions: None,
                    }),
                    ..NetworkPolicyPeer::default()
                }]),
                ports: Some(vec![NetworkPolicyPort {
                    port: Some(IntOrString::Int(server_target_port(s))),
                    protocol: Some("TCP".into()),
                    end_port: None,
                }]),
            }]),
            egress: None,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::super::fixtures;
    use super::*;
    use vmcp_types::crd::SecretEnv;

    const IMAGE: &str = "ghcr.io/vmcp-dev/vmcp-gateway:0.1.0";

    #[test]
    fn example_servers_snapshot() {
        for s in fixtures::servers() {
            let name = s.metadata.name.clone().unwrap();
            insta::assert_yaml_snapshot!(
                format!("server_{name}_deployment"),
                server_deployment(&s, IMAGE, &WorkloadDefaults::default()).unwrap()
            );
            insta::assert_yaml_snapshot!(
                format!("server_{name}_service"),
                server_service(&s).unwrap()
            );
        }
    }

    #[test]
    fn stdio_is_bridged() {
        let d = server_deployment(&fixtures::server("time"), IMAGE, &WorkloadDefaults::default())
            .unwrap();
        let pod = d.spec.unwrap().template.spec.unwrap();
        let init = &pod.init_containers.unwrap()[0];
        assert_eq!(init.image.as_deref(), Some(IMAGE));
        assert_eq!(
            init.command.as_deref().unwrap(),
            ["/usr/local/bin/vmcp-gateway", "install-bridge", "/vmcp-bin"]
        );
        let c = &pod.containers[0];
        assert_eq!(c.command.as_deref().unwrap(), ["/vmcp-bin/vmcp-gateway"]);
        assert_eq!(
            c.args.as_deref().unwrap(),
            [
                "bridge",
                "--port",
                "8080",
                "--auth-token-file",
                "/var/run/secrets/vmcp-bridge/token",
                "--",
                "mcp-server-time",
                "--local-timezone",
                "UTC"
            ]
        );
        // The token comes read-only from the server's own token Secret.
        let token = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find_map(|v| v.secret.as_ref())
            .and_then(|s| s.secret_name.as_deref());
        assert_eq!(token, Some("time-bridge-token"));
        let m = c.volume_mounts.as_ref().unwrap().iter().find(|m| m.name == "vmcp-bridge-token");
        assert_eq!(m.unwrap().read_only, Some(true));
        assert_eq!(c.image.as_deref(), Some("ghcr.io/example/mcp-time:0.6.2"));
    }

    #[test]
    fn stdio_needs_a_command() {
        let mut s = fixtures::server("time");
        s.spec.command.clear();
        assert!(matches!(
            server_deployment(&s, IMAGE, &WorkloadDefaults::default()),
            Err(RenderError::StdioWithoutCommand)
        ));
    }

    #[test]
    fn ports_env_and_secrets() {
        let mut s = fixtures::server("github-tools");
        s.spec.port = Some(80);
        s.spec.target_port = Some(3000);
        s.spec.secrets = vec![
            SecretEnv {
                name: "gh".into(),
                key: "token".into(),
                target_env_name: Some("GH".into()),
            },
            SecretEnv { name: "gh".into(), key: "OTHER".into(), target_env_name: None },
        ];
        let svc = server_service(&s).unwrap().spec.unwrap();
        let p = &svc.ports.unwrap()[0];
        assert_eq!((p.port, p.target_port.clone()), (80, Some(IntOrString::Int(3000))));
        let d = server_deployment(&s, IMAGE, &WorkloadDefaults::default()).unwrap();
        let c = &d.spec.unwrap().template.spec.unwrap().containers[0];
        assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 3000);
        let env = c.env.as_ref().unwrap();
        assert_eq!(env[0].name, "GH");
        let r = env[0].value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
        assert_eq!((r.name.as_str(), r.key.as_str()), ("gh", "token"));
        assert_eq!(env[0].value, None);
        assert_eq!(env[1].name, "OTHER");
        assert_eq!(server_url(&s, "ns"), "http://github-tools.ns.svc.cluster.local:80/mcp");
    }

    #[test]
    fn network_policy_admits_only_the_groups_gateways() {
        let s = fixtures::server("time");
        let p = server_network_policy(&s).unwrap();
        insta::assert_yaml_snapshot!("server_network_policy", p);
        let spec = p.spec.unwrap();
        let from = spec.ingress.as_ref().unwrap()[0].from.as_ref().unwrap()[0]
            .pod_selector
            .clone()
            .unwrap()
            .match_labels
            .unwrap();
        assert_eq!(from["app.kubernetes.io/name"], "vmcp-gateway");
        assert_eq!(from["vmcp.dev/group"], "engineering");
        let selected = spec.pod_selector.unwrap().match_labels.unwrap();
        let d = server_deployment(&s, IMAGE, &WorkloadDefaults::default()).unwrap();
        let pod_labels = d.spec.unwrap().template.metadata.unwrap().labels.unwrap();
        assert!(selected.iter().all(|(k, v)| pod_labels.get(k) == Some(v)), "selects the pods");
        assert_eq!(spec.policy_types.unwrap(), ["Ingress"]);
    }
}
