//! `Adapters`: the LoRA adapters of the declared models. Each model has adapter slots in order;
//! a slot's index is the `LoraId` its requests carry, stable while the server runs (an unloaded
//! adapter leaves its slot empty, a new one takes a new slot). A name maps to its model and
//! slot, and to a `hold` that every lease on the adapter clones: its count says how many requests
//! still run on it. No IO here.

use crate::store::ModelSpec;
use parking_lot::Mutex;
use std::collections::BTreeMap;
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
    /// Cloned into each lease on the adapter (`Arc::strong_count` - 1 requests use it).
    pub hold: Arc<str>,
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
    /// are unique among models and adapters; each is a local PEFT folder.
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

    /// Refuses `name` when a model or an adapter has it, or `path` when it is no PEFT folder.
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
        if !std::path::Path::new(path)
            .join("adapter_config.json")
            .exists()
        {
            return Err(format!(
                "LoRA adapter {name:?}: {path:?} is not a PEFT folder on local disk (no adapter_config.json)"
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
