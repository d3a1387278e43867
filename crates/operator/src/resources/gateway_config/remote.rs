//! Remote members (`MCPServerEntry`): backends the gateway reaches at the entry's URL, with the
//! credential its auth config describes. Nothing runs in the cluster for them, so the operator
//! cannot observe their health: they are reported with status `remote`.

use std::collections::BTreeSet;
use std::time::Duration;

use vmcp_types::config::{BackendConfig, BackendTransport};
use vmcp_types::crd::{DiscoveredBackend, MCPServerEntry, RemoteTransport};

use super::outgoing::{outgoing_type_name, resolve_auth};
use super::{Mounts, Problem, ProblemKind, RenderInput, is_valid_backend_name};

/// The group's entries as backends (sorted by name) and as discovered backends. An entry named
/// like an `MCPServer` member of the group is left out (backend names are unique), as is one
/// whose credential cannot be resolved; both are reported as problems.
pub(super) fn remote_backends(
    input: &RenderInput<'_>,
    ns: &str,
    timeout: Duration,
    mounts: &mut Mounts,
    problems: &mut Vec<Problem>,
) -> (Vec<BackendConfig>, Vec<DiscoveredBackend>) {
    let group = &input.vmcp.spec.group_ref.name;
    let servers: BTreeSet<&str> = input
        .members
        .iter()
        .filter(|s| s.spec.group_ref.as_ref().is_some_and(|g| &g.name == group))
        .filter_map(|s| s.metadata.name.as_deref())
        .collect();
    let mut entries: Vec<&MCPServerEntry> = input
        .entries
        .iter()
        .filter(|e| e.metadata.deletion_timestamp.is_none())
        .filter(|e| e.metadata.namespace.as_deref().is_none_or(|n| n == ns))
        .filter(|e| &e.spec.group_ref.name == group)
        .collect();
    entries.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut backends = Vec::new();
    let mut discovered = Vec::new();
    for e in entries {
        let name = e.metadata.name.clone().unwrap_or_default();
        let mut d = DiscoveredBackend {
            name: name.clone(),
            url: Some(e.spec.url.clone()),
            status: Some("remote".into()),
            auth_type: None,
            message: None,
        };
        let outcome = if servers.contains(name.as_str()) {
            Err(Problem {
                kind: ProblemKind::Backend,
                message: format!(
                    "MCPServerEntry '{name}' left out: MCPServer '{name}' of the same group has \
                     that backend name; rename one of them"
                ),
            })
        } else if !is_valid_backend_name(&name) {
            Err(Problem {
                kind: ProblemKind::Backend,
                message: format!("MCPServerEntry '{name}': the name cannot be a backend name"),
            })
        } else {
            resolve_auth(input, e.spec.external_auth_config_ref.as_ref(), &name, mounts)
        };
        match outcome {
            Ok(auth) => {
                d.auth_type = Some(outgoing_type_name(auth.auth_type).into());
                backends.push(BackendConfig {
                    name,
                    url: e.spec.url.clone(),
                    transport: match e.spec.transport {
                        RemoteTransport::StreamableHttp => BackendTransport::StreamableHttp,
                        RemoteTransport::Sse => BackendTransport::Sse,
                    },
                    timeout,
                    auth,
                });
            }
            Err(p) => {
                d.status = Some("error".into());
                d.message = Some(p.message.clone());
                problems.push(p);
            }
        }
        discovered.push(d);
    }
    (backends, discovered)
}
