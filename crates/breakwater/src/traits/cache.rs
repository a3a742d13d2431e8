//! A small bounded map for what executors work out once per distinct action.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, PoisonError, RwLock};

/// Values by key, shared by clones; at most `cap` of them: past that it
/// starts again empty (actions come from configuration, so a working set
/// larger than the bound is unusual and only costs the work the cache saves).
pub(crate) struct BoundedCache<K, V> {
    map: Arc<RwLock<HashMap<K, V, foldhash::fast::RandomState>>>,
    cap: usize,
}

impl<K, V> Clone for BoundedCache<K, V> {
    fn clone(&self) -> Self {
        Self {
            map: Arc::clone(&self.map),
            cap: self.cap,
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> BoundedCache<K, V> {
    /// An empty cache of at most `cap` entries.
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            map: Arc::default(),
            cap: cap.max(1),
        }
    }

    /// The value kept for `key`, or `make`'s, which is kept when it is `Ok`.
    pub(crate) fn get_or_try_insert<E>(
        &self,
        key: &K,
        make: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, E> {
        let kept = self
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned();
        if let Some(value) = kept {
            return Ok(value);
        }
        let value = make()?;
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= self.cap {
            map.clear();
        }
        map.insert(key.clone(), value.clone());
        Ok(value)
    }

    /// Entries kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl<K, V> fmt::Debug for BoundedCache<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let len = self
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        f.debug_struct("BoundedCache")
            .field("entries", &len)
            .field("cap", &self.cap)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_kept_up_to_the_bound_and_errors_never() {
        let cache = BoundedCache::<u32, Arc<u32>>::new(4);
        let first = cache
            .get_or_try_insert(&1, || Ok::<_, ()>(Arc::new(10)))
            .unwrap();
        let again = cache
            .get_or_try_insert(&1, || Ok::<_, ()>(Arc::new(99)))
            .unwrap();
        assert!(Arc::ptr_eq(&first, &again), "the kept value is returned");
        assert_eq!(cache.get_or_try_insert(&2, || Err("bad")), Err("bad"));
        assert_eq!(cache.len(), 1, "an error is not kept");
        for k in 2..20 {
            cache
                .get_or_try_insert(&k, || Ok::<_, ()>(Arc::new(k)))
                .unwrap();
            assert!(cache.len() <= 4);
        }
        assert_eq!(*cache.get_or_try_insert(&19, || Err(())).unwrap(), 19);
        let shared = cache.clone();
        assert_eq!(shared.len(), cache.len(), "clones share the entries");
    }
}
