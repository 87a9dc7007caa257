//! `LruIndex`: which loaded model to evict. Pure bookkeeping (no IO, no locks): loaded models
//! with their bytes, pin flag and last use; `plan` says whether a load of `need` bytes fits the
//! budget, which model to evict first, or that everything evictable is busy or pinned.

use std::collections::HashMap;

/// Limits on the loaded models together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Bytes of all loaded models (weights + KV + activations, as measured at load).
    pub memory_bytes: Option<u64>,
    pub max_loaded: Option<usize>,
}

#[derive(Debug, Clone)]
struct Resident {
    bytes: u64,
    pinned: bool,
    last_used: u64,
}

/// What a load of `need` bytes must do first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// It fits now.
    Fits,
    /// Evict this model (the least recently used evictable one), then ask again.
    Evict(String),
    /// It does not fit and every loaded model is pinned or busy: wait for one to drain.
    Wait,
    /// It can never fit: the budget is smaller than the model even with nothing else loaded
    /// (pinned models included).
    TooLarge,
}

#[derive(Debug, Default)]
pub struct LruIndex {
    loaded: HashMap<String, Resident>,
    clock: u64,
}

impl LruIndex {
    pub fn insert(&mut self, id: &str, bytes: u64, pinned: bool) {
        self.clock += 1;
        self.loaded.insert(
            id.to_string(),
            Resident {
                bytes,
                pinned,
                last_used: self.clock,
            },
        );
    }

    pub fn remove(&mut self, id: &str) {
        self.loaded.remove(id);
    }

    /// Marks `id` used now.
    pub fn touch(&mut self, id: &str) {
        self.clock += 1;
        if let Some(r) = self.loaded.get_mut(id) {
            r.last_used = self.clock;
        }
    }

    pub fn bytes_loaded(&self) -> u64 {
        self.loaded.values().map(|r| r.bytes).sum()
    }

    /// The next step before loading a model of `need` bytes under `budget`; `busy(id)` says
    /// which loaded models have requests in flight (they are never evicted).
    pub fn plan(&self, need: u64, budget: Budget, busy: impl Fn(&str) -> bool) -> Plan {
        let count_ok = budget.max_loaded.is_none_or(|m| self.loaded.len() < m);
        let bytes_ok = budget
            .memory_bytes
            .is_none_or(|b| self.bytes_loaded() + need <= b);
        if count_ok && bytes_ok {
            return Plan::Fits;
        }
        let pinned: u64 = self
            .loaded
            .values()
            .filter(|r| r.pinned)
            .map(|r| r.bytes)
            .sum();
        let num_pinned = self.loaded.values().filter(|r| r.pinned).count();
        let never = budget.memory_bytes.is_some_and(|b| pinned + need > b)
            || budget.max_loaded.is_some_and(|m| num_pinned >= m);
        if never {
            return Plan::TooLarge;
        }
        self.loaded
            .iter()
            .filter(|(id, r)| !r.pinned && !busy(id))
            .min_by_key(|(_, r)| r.last_used)
            .map_or(Plan::Wait, |(id, _)| Plan::Evict(id.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(bytes: Option<u64>, n: Option<usize>) -> Budget {
        Budget {
            memory_bytes: bytes,
            max_loaded: n,
        }
    }

    #[test]
    fn evicts_the_least_recently_used_until_the_bytes_fit() {
        let mut l = LruIndex::default();
        l.insert("a", 40, false);
        l.insert("b", 40, false);
        l.touch("a");
        let b = budget(Some(100), None);
        assert_eq!(l.plan(20, b, |_| false), Plan::Fits);
        assert_eq!(l.plan(30, b, |_| false), Plan::Evict("b".into()));
        l.remove("b");
        assert_eq!(l.plan(30, b, |_| false), Plan::Fits);
        assert_eq!(l.plan(70, b, |_| false), Plan::Evict("a".into()));
        assert_eq!(l.plan(101, b, |_| false), Plan::TooLarge);
    }

    #[test]
    fn pinned_and_busy_models_are_skipped() {
        let mut l = LruIndex::default();
        l.insert("pinned", 50, true);
        l.insert("busy", 30, false);
        l.insert("idle", 10, false);
        l.touch("busy");
        l.touch("idle");
        let b = budget(Some(100), None);
        // idle is the most recent but the only evictable one
        assert_eq!(l.plan(20, b, |id| id == "busy"), Plan::Evict("idle".into()));
        l.remove("idle");
        assert_eq!(l.plan(30, b, |id| id == "busy"), Plan::Wait);
        assert_eq!(l.plan(30, b, |_| false), Plan::Evict("busy".into()));
        assert_eq!(
            l.plan(60, b, |_| false),
            Plan::TooLarge,
            "the pinned model stays"
        );
    }

    #[test]
    fn the_model_count_is_a_budget_too() {
        let mut l = LruIndex::default();
        l.insert("a", 1, false);
        l.insert("b", 1, false);
        let b = budget(None, Some(2));
        assert_eq!(l.plan(1, b, |_| false), Plan::Evict("a".into()));
        assert_eq!(l.plan(1, budget(None, Some(3)), |_| false), Plan::Fits);
        let mut p = LruIndex::default();
        p.insert("p", 1, true);
        assert_eq!(p.plan(1, budget(None, Some(1)), |_| false), Plan::TooLarge);
    }
}
