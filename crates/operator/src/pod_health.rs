//! Why a workload's pods are not ready, read from the pods and their Deployment: the reason
//! a user would otherwise dig out of `kubectl describe pod`, lifted into the owner's status.
//!
//! Pure: the controllers list the pods and pass them in.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::api::ListParams;

/// Container waiting reasons that do not resolve by waiting (the kubelet backs off and
/// retries, but the pod will not start until something changes).
const STUCK_WAITING: &[&str] = &[
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// Why the pods of a workload are not (all) ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodProblem {
    /// A CamelCase reason for a condition: a container waiting reason (`ImagePullBackOff`,
    /// `CrashLoopBackOff`, ...), `Unschedulable`, `ReplicaFailure` or
    /// `ProgressDeadlineExceeded`.
    pub reason: String,
    /// What and where, e.g. `pod weather-7d9 container mcp-server: Back-off pulling image …`.
    pub message: String,
}

/// The first problem found, in this order: a stuck container (init containers first) of a
/// pod that is not being deleted; an unschedulable pod; the Deployment's `ReplicaFailure`
/// (e.g. pods rejected by Pod Security admission, which never exist to be looked at); its
/// `Progressing=False` with `ProgressDeadlineExceeded`. `None` when nothing is wrong (or it is
/// too early to tell: pulling, creating, starting).
pub fn pod_problem(deployment: Option<&DeploymentStatus>, pods: &[Pod]) -> Option<PodProblem> {
    let live = pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none());
    for pod in live.clone() {
        let name = pod.metadata.name.as_deref().unwrap_or("?");
        let Some(status) = &pod.status else { continue };
        let containers = status
            .init_container_statuses
            .iter()
            .flatten()
            .chain(status.container_statuses.iter().flatten());
        if let Some(p) = containers.filter_map(|c| stuck_container(name, c)).next() {
            return Some(p);
        }
    }
    for pod in live {
        let name = pod.metadata.name.as_deref().unwrap_or("?");
        let unschedulable =
            pod.status.as_ref().and_then(|s| s.conditions.as_ref()).and_then(|cs| {
                cs.iter().find(|c| {
                    c.type_ == "PodScheduled"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("Unschedulable")
                })
            });
        if let Some(c) = unschedulable {
            return Some(PodProblem {
                reason: "Unschedulable".into(),
                message: format!("pod {name}: {}", c.message.as_deref().unwrap_or("unschedulable")),
            });
        }
    }
    let conditions = deployment.and_then(|d| d.conditions.as_ref()).into_iter().flatten();
    for c in conditions.clone() {
        if c.type_ == "ReplicaFailure" && c.status == "True" {
            return Some(PodProblem {
                reason: "ReplicaFailure".into(),
                message: format!(
                    "{}: {}",
                    c.reason.as_deref().unwrap_or("ReplicaFailure"),
                    c.message.as_deref().unwrap_or("pods could not be created")
                ),
            });
        }
    }
    conditions
        .filter(|c| {
            c.type_ == "Progressing"
                && c.status == "False"
                && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        })
        .map(|c| PodProblem {
            reason: "ProgressDeadlineExceeded".into(),
            message: c.message.clone().unwrap_or_else(|| "rollout did not progress".into()),
        })
        .next()
}

/// The list parameters that select the pods of `deployment` (its selector's `matchLabels`).
pub fn pod_selector(deployment: &Deployment) -> ListParams {
    let labels = deployment.spec.as_ref().and_then(|s| s.selector.match_labels.as_ref());
    let selector: Vec<String> =
        labels.into_iter().flatten().map(|(k, v)| format!("{k}={v}")).collect();
    ListParams::default().labels(&selector.join(","))
}

fn stuck_container(pod: &str, c: &ContainerStatus) -> Option<PodProblem> {
    let waiting = c.state.as_ref()?.waiting.as_ref()?;
    let reason = waiting.reason.as_deref()?;
    if !STUCK_WAITING.contains(&reason) {
        return None;
    }
    let mut message = format!("pod {pod} container {}: {reason}", c.name);
    if let Some(m) = waiting.message.as_deref().filter(|m| !m.is_empty()) {
        message.push_str(&format!(": {m}"));
    }
    let last = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
    if let Some(t) = last {
        message.push_str(&format!(" (last exit code {}", t.exit_code));
        if let Some(r) = t.reason.as_deref() {
            message.push_str(&format!(", {r}"));
        }
        message.push(')');
    }
    Some(PodProblem { reason: reason.to_owned(), message })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn waiting(name: &str, reason: &str, message: &str) -> serde_json::Value {
        json!({"name": name, "image": "i", "imageID": "", "ready": false, "restartCount": 0,
               "state": {"waiting": {"reason": reason, "message": message}}})
    }

    fn deployment(conditions: serde_json::Value) -> DeploymentStatus {
        serde_json::from_value(json!({"conditions": conditions})).unwrap()
    }

    #[test]
    fn image_pull_back_off_names_pod_container_and_image() {
        let p = pod(json!({"metadata": {"name": "w-1"}, "status": {"containerStatuses": [
            waiting("mcp-server", "ImagePullBackOff", "Back-off pulling image \"x/y:1\"")]}}));
        let got = pod_problem(None, &[p]).unwrap();
        assert_eq!(got.reason, "ImagePullBackOff");
        assert_eq!(
            got.message,
            "pod w-1 container mcp-server: ImagePullBackOff: Back-off pulling image \"x/y:1\""
        );
    }

    #[test]
    fn crash_loop_carries_the_last_exit_code() {
        let mut c = waiting("mcp-server", "CrashLoopBackOff", "back-off 10s restarting");
        c["lastState"] = json!({"terminated": {"exitCode": 2, "reason": "Error"}});
        let p = pod(json!({"metadata": {"name": "n-1"}, "status": {"containerStatuses": [c]}}));
        let got = pod_problem(None, &[p]).unwrap();
        assert_eq!(got.reason, "CrashLoopBackOff");
        assert!(got.message.ends_with("(last exit code 2, Error)"), "{}", got.message);
    }

    #[test]
    fn init_containers_come_first_and_transient_waits_are_no_problem() {
        let p = pod(json!({"metadata": {"name": "s-1"}, "status": {
            "initContainerStatuses": [waiting("install-bridge", "CreateContainerConfigError", "secret \"k\" not found")],
            "containerStatuses": [waiting("mcp-server", "PodInitializing", "")]}}));
        assert_eq!(pod_problem(None, &[p]).unwrap().reason, "CreateContainerConfigError");
        let starting = pod(json!({"metadata": {"name": "s-2"}, "status": {"containerStatuses": [
            waiting("mcp-server", "ContainerCreating", "")]}}));
        assert_eq!(pod_problem(None, &[starting]), None);
    }

    #[test]
    fn deleted_pods_do_not_count() {
        let p =
            pod(json!({"metadata": {"name": "old", "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"containerStatuses": [waiting("c", "CrashLoopBackOff", "")]}}));
        assert_eq!(pod_problem(None, &[p]), None);
    }

    #[test]
    fn unschedulable_pod() {
        let p = pod(json!({"metadata": {"name": "u-1"}, "status": {"conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": "0/1 nodes are available: 1 Insufficient memory."}]}}));
        let got = pod_problem(None, &[p]).unwrap();
        assert_eq!(got.reason, "Unschedulable");
        assert!(got.message.contains("Insufficient memory"), "{}", got.message);
    }

    #[test]
    fn deployment_conditions_when_no_pod_explains() {
        // Pod Security admission rejects the pods: none exist, the ReplicaSet (and so the
        // Deployment) has ReplicaFailure.
        let d = deployment(json!([
            {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"},
            {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
             "message": "pods \"x\" is forbidden: violates PodSecurity \"restricted:latest\""}]));
        let got = pod_problem(Some(&d), &[]).unwrap();
        assert_eq!(got.reason, "ReplicaFailure");
        assert!(
            got.message.starts_with("FailedCreate: pods \"x\" is forbidden"),
            "{}",
            got.message
        );

        let d = deployment(json!([{"type": "Progressing", "status": "False",
            "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet \"x\" has timed out progressing."}]));
        assert_eq!(pod_problem(Some(&d), &[]).unwrap().reason, "ProgressDeadlineExceeded");

        let fine = deployment(json!([{"type": "Available", "status": "True"}]));
        assert_eq!(pod_problem(Some(&fine), &[]), None);
    }
}
