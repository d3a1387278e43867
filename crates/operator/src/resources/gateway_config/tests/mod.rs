//! Unit tests of the gateway configuration rendering, by topic.

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

fn auth_config(name: &str, spec: MCPExternalAuthConfigSpec) -> MCPExternalAuthConfig {
    let mut a = MCPExternalAuthConfig::new(name, spec);
    a.metadata.namespace = Some(fixtures::NS.into());
    a
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

mod auth;
mod example;
mod members;
mod remote_and_ca;
mod settings;
