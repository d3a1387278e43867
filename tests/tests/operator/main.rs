//! The operator against a real kube-apiserver (in-process controllers, one namespace per
//! test), the Helm chart installed with real helm, and the rendered gateway config run by the
//! real gateway binary against official-SDK backends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bridge_token;
mod chart;
mod conditions;
mod examples;
mod operations;
mod remote;
mod rollout;
mod stores;
mod support;
