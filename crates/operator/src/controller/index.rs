//! In-memory indexes of the controllers: which objects each object referenced at its last
//! reconcile ([`RefIndex`], so a change of a referenced object maps back to its referrers) and
//! the failures per object since its last success ([`Backoff`]). Both forget an object when it
//! is deleted ([`super::Context::forget`]).

use std::collections::{BTreeSet, HashMap};

use parking_lot::{Mutex, RwLock};

/// Failures per object since its last success.
#[derive(Debug, Default)]
pub(crate) struct Backoff(Mutex<HashMap<String, u32>>);

impl Backoff {
    pub(crate) fn fail(&self, key: &str) -> u32 {
        let mut m = self.0.lock();
        let n = m.entry(key.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    pub(crate) fn reset(&self, key: &str) {
        self.0.lock().remove(key);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.lock().len()
    }
}

/// Kinds an object can reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum RefKind {
    Group,
    Server,
    Entry,
    AuthConfig,
    Secret,
    ConfigMap,
}

/// Which objects each object referenced at its last reconcile, so that a change to a
/// referenced object (or a server leaving a group) maps back to the objects it affects.
#[derive(Debug, Default)]
pub(crate) struct RefIndex(RwLock<HashMap<Referrer, References>>);

/// `(namespace, name)` of a referring object.
type Referrer = (String, String);
/// What an object references.
type References = BTreeSet<(RefKind, String)>;

impl RefIndex {
    /// Records what `referrer` in `ns` references now.
    pub(crate) fn set(&self, ns: &str, referrer: &str, refs: BTreeSet<(RefKind, String)>) {
        let mut m = self.0.write();
        m.insert((ns.to_owned(), referrer.to_owned()), refs);
    }

    /// Records what `referrer` in `ns` references now, unless it is gone: `exists` is asked
    /// after the write, so a reconcile that ends after the object's deletion was handled
    /// ([`Context::forget`] runs once the store has dropped it) never leaves an entry behind.
    pub(crate) fn set_unless_gone(
        &self,
        ns: &str,
        referrer: &str,
        refs: BTreeSet<(RefKind, String)>,
        exists: impl Fn() -> bool,
    ) {
        self.set(ns, referrer, refs);
        if !exists() {
            self.remove(ns, referrer);
        }
    }

    /// Forgets `referrer` in `ns` (it was deleted).
    pub(crate) fn remove(&self, ns: &str, referrer: &str) {
        self.0.write().remove(&(ns.to_owned(), referrer.to_owned()));
    }

    /// How many referrers the index holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.read().len()
    }

    /// The referrers in `ns` that referenced `(kind, name)`.
    pub(crate) fn referrers(&self, ns: &str, kind: RefKind, name: &str) -> Vec<String> {
        let m = self.0.read();
        m.iter()
            .filter(|((n, _), refs)| n == ns && refs.contains(&(kind, name.to_owned())))
            .map(|((_, r), _)| r.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_counts_and_resets() {
        let b = Backoff::default();
        assert_eq!(b.fail("a"), 1);
        assert_eq!(b.fail("a"), 2);
        assert_eq!(b.fail("b"), 1);
        b.reset("a");
        assert_eq!(b.fail("a"), 1);
    }

    #[test]
    fn a_reconcile_ending_after_the_deletion_leaves_no_entry() {
        let i = RefIndex::default();
        let refs = || BTreeSet::from([(RefKind::Secret, "s".to_owned())]);
        i.set_unless_gone("ns", "alive", refs(), || true);
        i.set_unless_gone("ns", "deleted", refs(), || false);
        assert_eq!(i.referrers("ns", RefKind::Secret, "s"), ["alive"]);
    }

    #[test]
    fn ref_index_maps_back() {
        let i = RefIndex::default();
        i.set(
            "ns",
            "gw1",
            BTreeSet::from([(RefKind::Secret, "s".into()), (RefKind::Group, "g".into())]),
        );
        i.set("ns", "gw2", BTreeSet::from([(RefKind::Secret, "s".into())]));
        i.set("other", "gw3", BTreeSet::from([(RefKind::Secret, "s".into())]));
        let mut r = i.referrers("ns", RefKind::Secret, "s");
        r.sort();
        assert_eq!(r, ["gw1", "gw2"]);
        assert_eq!(i.referrers("ns", RefKind::Group, "g"), ["gw1"]);
        assert!(i.referrers("ns", RefKind::Server, "s").is_empty());
        i.set("ns", "gw1", BTreeSet::new());
        assert_eq!(i.referrers("ns", RefKind::Secret, "s"), ["gw2"]);
    }
}
