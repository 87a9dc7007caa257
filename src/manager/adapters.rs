//! `Adapters`: the LoRA adapters of the declared models. Each model has adapter slots in order;
//! a slot's index is the `LoraId` its requests carry, stable while the server runs (an unloaded
//! adapter leaves its slot empty, a new one takes a new slot). A name maps to its model and
//! slot, and to a `hold` that every lease on the adapter clones: its count says how many requests
//! still run on it. Each slot also keeps its use and load counts for the LRU of resident
//! adapters (`lora_cache.rs`). No IO here.

use crate::store::ModelSpec;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Why an adapter could not be loaded or unloaded.
#[derive(Debug, thiserror::Error)]
pub enum LoraAdminError {
    /// The request names something that cannot be served (400).
    #[error("{0}")]
    Invalid(String),
    /// No adapter has this name (404).
    #[error("The LoRA adapter `{0}` does not exist.")]
    NotFound(String),
}

/// One adapter's place.
#[derive(Debug, Clone)]
pub struct AdapterSlot {
    pub model: String,
    pub index: u32,
    /// Cloned into each lease on the adapter and each of its sequences (`Arc::strong_count` - 1
    /// requests and sequences use it).
    pub hold: Arc<str>,
    pub stats: Arc<AdapterStats>,
    /// Held while the adapter is read on demand, so one read serves every waiting request.
    pub reading: Arc<tokio::sync::Mutex<()>>,
}

impl AdapterSlot {
    /// Whether no request and no sequence uses it (its hold is the registry's alone).
    pub fn is_idle(&self) -> bool {
        // the registry's own and this clone's
        Arc::strong_count(&self.hold) <= 2
    }
}

/// An adapter's counters.
#[derive(Debug, Default)]
pub struct AdapterStats {
    /// Unix milliseconds of its last request.
    pub last_used_ms: AtomicU64,
    /// Times its weights were read into the model.
    pub loads: AtomicU64,
    /// Times it was dropped from the model to make room (`--max-cpu-loras`).
    pub evictions: AtomicU64,
}

impl AdapterStats {
    pub fn touch(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.last_used_ms.store(now, Relaxed);
    }
}

#[derive(Debug, Default)]
pub struct Adapters {
    /// name -> its slot
    by_name: Mutex<BTreeMap<String, AdapterSlot>>,
    /// model id -> its slots (None: unloaded)
    slots: Mutex<BTreeMap<String, Vec<Option<ModelSpec>>>>,
}

impl Adapters {
    /// The adapters declared with the models (`models`: each model's id and adapters). Names
    /// are unique among models and adapters (see `check_new` for their sources).
    pub fn declare<'a>(
        models: impl Iterator<Item = (&'a str, &'a [ModelSpec])> + Clone,
    ) -> Result<Self, String> {
        let out = Self::default();
        for (model, loras) in models.clone() {
            for l in loras {
                out.check_new(&l.id, &l.source, models.clone().map(|(m, _)| m))?;
                out.push(model, l.clone());
            }
        }
        Ok(out)
    }

    /// Refuses `name` when a model or an adapter has it, or `path` when it is neither a PEFT
    /// folder nor a GGUF file on local disk nor an `hf://` or `gs://` source (those are read when
    /// the adapter loads).
    pub fn check_new<'a>(
        &self,
        name: &str,
        path: &str,
        mut models: impl Iterator<Item = &'a str>,
    ) -> Result<(), String> {
        crate::manager::decl::validate_model_id(name)?;
        if models.any(|m| m == name) || self.by_name.lock().contains_key(name) {
            return Err(format!(
                "LoRA adapter name {name:?} is already a model's or another adapter's"
            ));
        }
        if let Some(remote) = crate::store::hf::HfSource::parse(path)
            .map(|r| r.map(drop))
            .or_else(|| crate::store::gcs::GcsSource::parse(path).map(|r| r.map(drop)))
        {
            return remote.map_err(|e| format!("LoRA adapter {name:?}: {e}"));
        }
        let p = std::path::Path::new(path);
        let peft = p.join("adapter_config.json").is_file();
        let gguf = p.is_file() && path.ends_with(".gguf");
        if !peft && !gguf {
            return Err(format!(
                "LoRA adapter {name:?}: {path:?} is neither a PEFT folder (adapter_config.json) nor a GGUF LoRA file on local disk, nor an hf:// or gs:// source"
            ));
        }
        Ok(())
    }

    /// Gives `spec` the next slot of `model`; its index.
    pub fn push(&self, model: &str, spec: ModelSpec) -> u32 {
        let mut slots = self.slots.lock();
        let list = slots.entry(model.to_string()).or_default();
        let index = list.len() as u32;
        self.by_name.lock().insert(
            spec.id.clone(),
            AdapterSlot {
                model: model.to_string(),
                index,
                hold: Arc::from(spec.id.as_str()),
                stats: Arc::default(),
                reading: Arc::default(),
            },
        );
        list.push(Some(spec));
        index
    }

    /// Forgets `name` (its slot stays, empty); its place, for the caller to empty the model's.
    pub fn remove(&self, name: &str) -> Option<AdapterSlot> {
        let slot = self.by_name.lock().remove(name)?;
        if let Some(list) = self.slots.lock().get_mut(&slot.model) {
            list[slot.index as usize] = None;
        }
        Some(slot)
    }

    pub fn lookup(&self, name: &str) -> Option<AdapterSlot> {
        self.by_name.lock().get(name).cloned()
    }

    /// `model`'s slots, in order.
    pub fn slots_of(&self, model: &str) -> Vec<Option<ModelSpec>> {
        self.slots.lock().get(model).cloned().unwrap_or_default()
    }

    /// The name of `model`'s adapter in slot `index` (None once unloaded).
    pub fn name_of(&self, model: &str, index: u32) -> Option<String> {
        let slots = self.slots.lock();
        let spec = slots.get(model)?.get(index as usize)?.as_ref()?;
        Some(spec.id.clone())
    }

    /// `model`'s adapters, sorted by name.
    pub fn of_model(&self, model: &str) -> Vec<(String, AdapterSlot)> {
        self.by_name
            .lock()
            .iter()
            .filter(|(_, s)| s.model == model)
            .map(|(n, s)| (n.clone(), s.clone()))
            .collect()
    }

    /// Of `model`'s adapters for which `resident(slot index)` holds, the least recently used that
    /// no request or sequence uses.
    pub fn lru_idle(&self, model: &str, resident: impl Fn(u32) -> bool) -> Option<AdapterSlot> {
        self.of_model(model)
            .into_iter()
            .map(|(_, s)| s)
            .filter(|s| resident(s.index) && s.is_idle())
            .min_by_key(|s| s.stats.last_used_ms.load(Relaxed))
    }

    /// Every adapter, sorted by name: (name, its model).
    pub fn list(&self) -> Vec<(String, String)> {
        self.by_name
            .lock()
            .iter()
            .map(|(n, s)| (n.clone(), s.model.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_stay_put_and_names_are_unique() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("adapter_config.json"), "{}").unwrap();
        let path = dir.path().display().to_string();
        let spec = |n: &str| ModelSpec {
            id: n.into(),
            source: path.clone(),
        };
        let declared = [spec("a"), spec("b")];
        let ads = Adapters::declare([("m", &declared[..])].into_iter()).unwrap();
        assert_eq!(ads.lookup("b").unwrap().index, 1);
        assert!(ads.check_new("a", &path, ["m"].into_iter()).is_err());
        assert!(ads.check_new("m", &path, ["m"].into_iter()).is_err());
        assert!(ads.check_new("c", "/no/such", ["m"].into_iter()).is_err());
        ads.remove("a").unwrap();
        assert_eq!(
            ads.push("m", spec("c")),
            2,
            "a new adapter takes a new slot"
        );
        let slots = ads.slots_of("m");
        assert!(slots[0].is_none() && slots[2].as_ref().unwrap().id == "c");
        assert_eq!(
            ads.list(),
            [("b".into(), "m".into()), ("c".into(), "m".into())]
        );
    }
}
