//! Who may write a child. The operator applies a child only when no object of that name exists
//! yet or the existing one is controlled by the object being reconciled. Anything else (an
//! object someone created by hand, or the child of another vmcp object that wants the same
//! name, e.g. `VirtualMCPServer foo` and `MCPServer foo-vmcp`) is a name conflict: reported on
//! the reconciled object's status and as a Warning Event, and never taken over by a forced
//! server-side apply.
//!
//! The check and the apply of one name are serialized inside the operator ([`NameLocks`]; one
//! leader runs the controllers), so two objects that want the same child cannot both find it
//! absent and then take turns overwriting it.

use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::{Mutex, MutexGuard};

/// How soon an object with a name conflict is reconciled again (the foreign object is not
/// watched, so its deletion triggers nothing).
pub const CONFLICT_RECHECK: Duration = Duration::from_secs(30);

/// The `Ready` reason of an object whose child name is held by something else.
pub const NAME_CONFLICT: &str = "NameConflict";

/// A child name held by an object that the reconciled object does not control.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameConflict {
    /// Kind of the child, e.g. `Service`.
    pub kind: &'static str,
    /// Its name.
    pub name: String,
    /// Its controller (`VirtualMCPServer 'foo'`), or `None` when nothing controls it.
    pub holder: Option<String>,
}

impl fmt::Display for NameConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} '{}' already exists and ", self.kind, self.name)?;
        match &self.holder {
            Some(h) => write!(f, "is controlled by {h}")?,
            None => f.write_str("is not managed by the vmcp operator")?,
        }
        f.write_str("; it is left untouched: rename this object, or delete the other one")
    }
}

/// `Some` when `existing` (the metadata of child `kind`/`name`) is not controlled by the object
/// with uid `owner_uid`.
pub fn conflict(
    kind: &'static str,
    name: &str,
    existing: &ObjectMeta,
    owner_uid: &str,
) -> Option<NameConflict> {
    let controller =
        existing.owner_references.iter().flatten().find(|o| o.controller == Some(true));
    match controller {
        Some(o) if o.uid == owner_uid => None,
        Some(o) => Some(NameConflict {
            kind,
            name: name.to_owned(),
            holder: Some(format!("{} '{}'", o.kind, o.name)),
        }),
        None => Some(NameConflict { kind, name: name.to_owned(), holder: None }),
    }
}

/// Reads the metadata of child `name`: returns it when the child exists and is controlled by
/// the object with uid `owner_uid`, `None` when it is absent or held by someone else (then the
/// conflict is pushed onto `conflicts`).
pub(crate) async fn claim<K>(
    api: &Api<K>,
    name: &str,
    owner_uid: &str,
    conflicts: &mut Vec<NameConflict>,
) -> Result<Option<PartialObjectMeta<K>>, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + fmt::Debug,
{
    let kind = match K::kind(&()) {
        std::borrow::Cow::Borrowed(k) => k,
        std::borrow::Cow::Owned(_) => "object",
    };
    let Some(existing) = api.get_metadata_opt(name).await? else { return Ok(None) };
    match conflict(kind, name, existing.meta(), owner_uid) {
        None => Ok(Some(existing)),
        Some(c) => {
            conflicts.push(c);
            Ok(None)
        }
    }
}

/// The uid of `obj` (every stored object has one).
pub(crate) fn uid<K: Resource>(obj: &K) -> String {
    obj.uid().unwrap_or_default()
}

/// One message for several conflicts.
pub fn describe(conflicts: &[NameConflict]) -> String {
    conflicts.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

const STRIPES: usize = 64;

/// Striped locks over `(namespace, child name)`: a fixed set, so nothing grows with the number
/// of objects. Two names may share a stripe; that only serializes them.
#[derive(Debug)]
pub(crate) struct NameLocks(Vec<Mutex<()>>);

impl Default for NameLocks {
    fn default() -> Self {
        Self((0..STRIPES).map(|_| Mutex::new(())).collect())
    }
}

fn stripe(ns: &str, name: &str) -> usize {
    let mut h = DefaultHasher::new();
    (ns, name).hash(&mut h);
    // Lossless: the modulus is below usize::MAX.
    usize::try_from(h.finish() % STRIPES as u64).unwrap_or(0)
}

impl NameLocks {
    /// Locks every stripe of `names` in `ns`, in ascending order (so two callers never wait on
    /// each other in a cycle). Held until the returned guards drop.
    pub(crate) async fn lock(&self, ns: &str, names: &[&str]) -> Vec<MutexGuard<'_, ()>> {
        let mut idx: Vec<usize> = names.iter().map(|n| stripe(ns, n)).collect();
        idx.sort_unstable();
        idx.dedup();
        let mut guards = Vec::with_capacity(idx.len());
        for i in idx {
            if let Some(m) = self.0.get(i) {
                guards.push(m.lock().await);
            }
        }
        guards
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn owned_by(uid: &str, controller: Option<bool>) -> ObjectMeta {
        ObjectMeta {
            owner_references: Some(vec![OwnerReference {
                api_version: "vmcp.dev/v1alpha1".into(),
                kind: "VirtualMCPServer".into(),
                name: "foo".into(),
                uid: uid.into(),
                controller,
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn only_our_controller_reference_is_ours() {
        assert_eq!(conflict("Service", "foo-vmcp", &owned_by("u1", Some(true)), "u1"), None);
        let other = conflict("Service", "foo-vmcp", &owned_by("u2", Some(true)), "u1").unwrap();
        assert_eq!(other.holder.as_deref(), Some("VirtualMCPServer 'foo'"));
        assert!(other.to_string().contains("Service 'foo-vmcp' already exists"), "{other}");
        // An owner reference that is not the controller does not make it ours.
        let plain = conflict("Service", "foo-vmcp", &owned_by("u1", None), "u1").unwrap();
        assert_eq!(plain.holder, None);
        let unowned = conflict("Deployment", "redis", &ObjectMeta::default(), "u1").unwrap();
        assert!(unowned.to_string().contains("not managed by the vmcp operator"), "{unowned}");
    }

    #[tokio::test]
    async fn locks_serialize_the_same_name_and_not_deadlock() {
        let locks = std::sync::Arc::new(NameLocks::default());
        let g = locks.lock("ns", &["a-vmcp", "a-vmcp-config", "a-vmcp"]).await;
        let l2 = locks.clone();
        let waiter = tokio::spawn(async move {
            let _g = l2.lock("ns", &["a-vmcp"]).await;
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "the same name must wait");
        drop(g);
        tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
    }
}
