//! Merged views shared between sessions: sessions whose members offer the same (interned)
//! capability lists get the same aggregation result, computed once (I8: an idle session costs
//! a few KiB, not a copy of every tool).

use parking_lot::Mutex;
use std::sync::Arc;

use vmcp_types::config::AggregationConfig;

use super::{View, ViewError};
use crate::aggregate::BackendCapabilities;

/// How many distinct member combinations are remembered (e.g. "all up", "one backend down").
const KEEP: usize = 16;

/// A small most-recently-used cache of views, keyed by member order and the identity of each
/// member's interned capability lists.
#[derive(Debug, Default)]
pub struct ViewCache {
    entries: Mutex<Vec<Entry>>,
}

#[derive(Debug)]
struct Entry {
    order: Vec<Arc<str>>,
    // Holding the lists keeps their addresses from being reused while the entry lives.
    caps: Vec<Arc<BackendCapabilities>>,
    view: View,
}

impl Entry {
    fn matches(&self, order: &[Arc<str>], caps: &[Arc<BackendCapabilities>]) -> bool {
        self.order == order
            && self.caps.len() == caps.len()
            && self.caps.iter().zip(caps).all(|(a, b)| Arc::ptr_eq(a, b))
    }
}

impl ViewCache {
    /// The view of `caps` (in member `order`) under `config`, shared when already built.
    pub fn view(
        &self,
        config: &AggregationConfig,
        order: &[Arc<str>],
        caps: Vec<Arc<BackendCapabilities>>,
    ) -> View {
        {
            let mut entries = self.entries.lock();
            if let Some(i) = entries.iter().position(|e| e.matches(order, &caps)) {
                let entry = entries.remove(i);
                let view = entry.view.clone();
                entries.insert(0, entry);
                return view;
            }
        }
        let owned: Vec<BackendCapabilities> = caps.iter().map(|c| (**c).clone()).collect();
        let view: View =
            Arc::new(crate::aggregate::aggregate(config, order, &owned).map_err(ViewError::from));
        let mut entries = self.entries.lock();
        entries.insert(0, Entry { order: order.to_vec(), caps, view: view.clone() });
        entries.truncate(KEEP);
        drop(entries);
        view
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn caps(backend: &str) -> Arc<BackendCapabilities> {
        Arc::new(BackendCapabilities {
            backend: Arc::from(backend),
            tools: vec![json!({"name": "t"})],
            ..Default::default()
        })
    }

    #[test]
    fn same_lists_share_a_view_and_other_lists_do_not() {
        let cache = ViewCache::default();
        let cfg = AggregationConfig::default();
        let order: Vec<Arc<str>> = vec![Arc::from("a"), Arc::from("b")];
        let (a, b) = (caps("a"), caps("b"));
        let v1 = cache.view(&cfg, &order, vec![a.clone(), b.clone()]);
        let v2 = cache.view(&cfg, &order, vec![a.clone(), b.clone()]);
        assert!(Arc::ptr_eq(&v1, &v2));
        let only_a = cache.view(&cfg, &order, vec![a.clone()]);
        assert!(!Arc::ptr_eq(&v1, &only_a));
        let tools = |v: &View| v.as_ref().as_ref().unwrap().tools.len();
        assert_eq!((tools(&v1), tools(&only_a)), (2, 1));
        // An equal but separately built list is another key (lists are interned upstream).
        let v3 = cache.view(&cfg, &order, vec![caps("a"), b]);
        assert!(!Arc::ptr_eq(&v1, &v3));
    }
}
