//! What the operator's installation puts into every pod it creates (from the chart's
//! `workloads` values): security contexts that replace the built-in ones, and image pull
//! secrets. Applied to the generated pod template before a `spec.podTemplateSpec` overlay, so
//! an object's own overlay still wins.

use k8s_openapi::api::core::v1::{
    LocalObjectReference, PodSecurityContext, PodSpec, SecurityContext,
};

/// Security contexts for one kind of pod; `None` keeps the built-in one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodDefaults {
    /// Replaces the pod's `securityContext`.
    pub pod_security_context: Option<PodSecurityContext>,
    /// Replaces the `securityContext` of every container and init container the operator
    /// generates.
    pub container_security_context: Option<SecurityContext>,
}

/// The installation-wide pod settings of gateway and MCP server pods.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkloadDefaults {
    /// Gateway pods (`VirtualMCPServer`).
    pub gateway: PodDefaults,
    /// MCP server pods (`MCPServer`).
    pub mcp_server: PodDefaults,
    /// `imagePullSecrets` of every pod (Secrets in the pod's namespace).
    pub image_pull_secrets: Vec<String>,
    /// Give every `MCPServer` a NetworkPolicy that admits only its group's gateway pods.
    pub server_network_policy: bool,
}

impl WorkloadDefaults {
    /// Applies `pod` (the gateway's or the MCP server's defaults) and the pull secrets to
    /// `spec`.
    pub fn apply(&self, pod: &PodDefaults, spec: &mut PodSpec) {
        if let Some(p) = &pod.pod_security_context {
            spec.security_context = Some(p.clone());
        }
        if let Some(c) = &pod.container_security_context {
            for container in
                spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten())
            {
                container.security_context = Some(c.clone());
            }
        }
        if !self.image_pull_secrets.is_empty() {
            spec.image_pull_secrets = Some(
                self.image_pull_secrets
                    .iter()
                    .map(|n| LocalObjectReference { name: n.clone() })
                    .collect(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Container;

    #[test]
    fn replaces_only_what_is_set() {
        let builtin = SecurityContext { run_as_non_root: Some(true), ..Default::default() };
        let mut spec = PodSpec {
            containers: vec![Container {
                name: "a".into(),
                security_context: Some(builtin.clone()),
                ..Default::default()
            }],
            init_containers: Some(vec![Container { name: "init".into(), ..Default::default() }]),
            security_context: Some(PodSecurityContext {
                run_as_user: Some(65532),
                ..Default::default()
            }),
            ..Default::default()
        };
        let untouched = spec.clone();
        WorkloadDefaults::default().apply(&PodDefaults::default(), &mut spec);
        assert_eq!(spec, untouched, "empty defaults change nothing");

        let pod = PodSecurityContext { run_as_non_root: Some(true), ..Default::default() };
        let container = SecurityContext { privileged: Some(false), ..Default::default() };
        let w =
            WorkloadDefaults { image_pull_secrets: vec!["regcred".into()], ..Default::default() };
        w.apply(
            &PodDefaults {
                pod_security_context: Some(pod.clone()),
                container_security_context: Some(container.clone()),
            },
            &mut spec,
        );
        assert_eq!(spec.security_context, Some(pod), "replaced: no fixed UID is left");
        assert_eq!(spec.containers[0].security_context.as_ref(), Some(&container));
        assert_eq!(spec.init_containers.as_ref().unwrap()[0].security_context, Some(container));
        assert_eq!(spec.image_pull_secrets.unwrap()[0].name, "regcred");
    }
}
