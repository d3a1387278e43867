//! The capability lists last seen from one backend, shared by every session that sees the same
//! lists: a thousand sessions of one backend hold one copy of its tools, not a thousand (I8).

use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::aggregate::BackendCapabilities;

/// Interned capability lists of one backend.
#[derive(Debug, Default)]
pub struct Catalog {
    last: Mutex<Option<(Arc<BackendCapabilities>, Instant)>>,
}

impl Catalog {
    /// Returns the shared copy of `caps`: the one already held when equal, else `caps` itself,
    /// which becomes the shared copy.
    pub fn intern(&self, caps: BackendCapabilities) -> Arc<BackendCapabilities> {
        let mut last = self.last.lock();
        if let Some((held, seen)) = last.as_mut()
            && **held == caps
        {
            *seen = Instant::now();
            return held.clone();
        }
        let caps = Arc::new(caps);
        *last = Some((caps.clone(), Instant::now()));
        caps
    }

    /// The last lists seen, however old (what a member that is down right now offered).
    pub fn last(&self) -> Option<Arc<BackendCapabilities>> {
        self.last.lock().as_ref().map(|(c, _)| c.clone())
    }

    /// The shared lists if they were seen within `max_age`.
    pub fn fresh(&self, max_age: Duration) -> Option<Arc<BackendCapabilities>> {
        let last = self.last.lock();
        last.as_ref().filter(|(_, seen)| seen.elapsed() <= max_age).map(|(c, _)| c.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn caps(tool: &str) -> BackendCapabilities {
        BackendCapabilities {
            backend: Arc::from("a"),
            tools: vec![json!({"name": tool})],
            ..Default::default()
        }
    }

    #[test]
    fn equal_lists_share_one_copy_and_changed_lists_replace_it() {
        let c = Catalog::default();
        let first = c.intern(caps("x"));
        let again = c.intern(caps("x"));
        assert!(Arc::ptr_eq(&first, &again));
        let changed = c.intern(caps("y"));
        assert!(!Arc::ptr_eq(&first, &changed));
        assert!(Arc::ptr_eq(&changed, &c.fresh(Duration::from_secs(60)).unwrap()));
        std::thread::sleep(Duration::from_millis(5));
        assert!(c.fresh(Duration::from_millis(1)).is_none(), "old lists are not fresh");
    }
}
