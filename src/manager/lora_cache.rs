//! Which of a model's LoRA adapters are read into it (`--max-cpu-loras`, vLLM's flag).
//!
//! Without the flag every adapter is read when the model loads and stays. With it, a load reads
//! the first `--max-cpu-loras` adapters; a request for another one reads it from its source
//! (local, `hf://`, `gs://`) before it is queued, first evicting the least recently used adapter
//! that no request and no engine sequence holds (see `AdapterSlot::is_idle`). While every
//! resident adapter is in use the request waits, up to the load timeout. Swaps of one model's
//! adapters take its `adapter_swap` lock, so the count never passes the cap.

use super::adapters::AdapterSlot;
use super::limits::EngineLimits;
use super::{Entry, LoadError, ModelManager};
use crate::models::Model;
use crate::store::ModelSpec;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

impl ModelManager {
    /// The adapters a load of `model` reads, slot by slot: the first `--max-cpu-loras` of them
    /// (every one without the flag); the others stay empty until a request needs them.
    pub(super) fn adapters_at_load(
        &self,
        model: &str,
        limits: &EngineLimits,
    ) -> Vec<Option<ModelSpec>> {
        let mut room = limits.max_cpu_loras.unwrap_or(usize::MAX);
        let mut slots = self.inner.adapters.slots_of(model);
        for s in slots.iter_mut().filter(|s| s.is_some()) {
            if room == 0 {
                *s = None;
            }
            room = room.saturating_sub(1);
        }
        slots
    }

    /// Counts the adapters a load of `model` read (`loras`, from `adapters_at_load`).
    pub(super) fn count_adapters_read(&self, model: &str, loras: &[Option<ModelSpec>]) {
        for spec in loras.iter().flatten() {
            self.adapter_read(model, &spec.id);
        }
    }

    /// Counts a read of adapter `name` into `model`.
    pub(super) fn adapter_read(&self, model: &str, name: &str) {
        if let Some(a) = self.inner.adapters.lookup(name) {
            a.stats.loads.fetch_add(1, Relaxed);
        }
        self.inner.metrics.lora_swapped(model, true);
    }

    /// Makes adapter `a` resident in the loaded `model` (reading it, after evicting an idle one
    /// when the model holds `--max-cpu-loras`), waiting while every resident adapter is in use.
    pub(super) async fn resident_adapter(
        &self,
        entry: &Entry,
        model: &Arc<dyn Model>,
        a: &AdapterSlot,
    ) -> Result<(), LoadError> {
        a.stats.touch();
        let name = a.hold.to_string();
        let resident = |m: &Arc<dyn Model>| {
            let bytes = m.lora_bytes();
            (
                bytes.get(a.index as usize).is_some_and(Option::is_some),
                bytes.iter().flatten().count(),
            )
        };
        if resident(model).0 {
            return Ok(());
        }
        let limits = entry.decl.overrides.apply(self.inner.limits.engine);
        let deadline = tokio::time::Instant::now() + self.inner.limits.load_timeout;
        loop {
            {
                let _swap = entry.adapter_swap.lock().await;
                let (here, count) = resident(model);
                if here {
                    return Ok(());
                }
                if count < limits.max_cpu_loras.unwrap_or(usize::MAX)
                    || self.evict_idle_adapter(&a.model, model)
                {
                    let spec = self.inner.adapters.slots_of(&a.model)[a.index as usize]
                        .clone()
                        .ok_or_else(|| LoadError::NotFound(name.clone()))?;
                    self.read_adapter(model, a.index, spec, limits.max_lora_rank)
                        .await
                        .map_err(|cause| LoadError::Failed {
                            id: name.clone(),
                            cause,
                        })?;
                    self.adapter_read(&a.model, &name);
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(LoadError::Timeout(name));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Drops the least recently used adapter of `model` (the model `name`) that nothing holds;
    /// false when every resident adapter is in use. Under the model's `adapter_swap` lock.
    pub(super) fn evict_idle_adapter(&self, name: &str, model: &Arc<dyn Model>) -> bool {
        let bytes = model.lora_bytes();
        let resident = |i: u32| bytes.get(i as usize).is_some_and(Option::is_some);
        let Some(victim) = self.inner.adapters.lru_idle(name, resident) else {
            return false;
        };
        model.set_lora(victim.index, None);
        victim.stats.evictions.fetch_add(1, Relaxed);
        self.inner.metrics.lora_swapped(name, false);
        tracing::info!(adapter = %victim.hold, model = name, "LoRA adapter evicted");
        true
    }

    /// Reads the adapter `spec` (from its source) into slot `index` of `model`.
    pub(super) async fn read_adapter(
        &self,
        model: &Arc<dyn Model>,
        index: u32,
        spec: ModelSpec,
        max_rank: Option<usize>,
    ) -> Result<(), String> {
        let (m, sources) = (model.clone(), self.inner.sources.clone());
        tokio::task::spawn_blocking(move || {
            let local = super::open::local_adapter(&spec, &sources)?;
            super::loader::attach_lora(m.as_ref(), index, &local, max_rank)
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }
}

/// One adapter as `/admin/models` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AdapterStatus {
    pub id: String,
    pub source: String,
    /// `loaded` (read into the loaded model) or `unloaded`.
    pub state: &'static str,
    /// Bytes of its matrices while loaded.
    pub bytes: Option<u64>,
    /// Requests and engine sequences using it.
    pub in_flight: usize,
    pub loads: u64,
    pub evictions: u64,
    pub last_used_ms: u64,
}

impl ModelManager {
    /// `model`'s adapters, sorted by name.
    pub fn adapter_status(&self, model: &str) -> Vec<AdapterStatus> {
        let bytes = self.get(model).map_or(Vec::new(), |h| h.model.lora_bytes());
        let slots = self.inner.adapters.slots_of(model);
        self.inner
            .adapters
            .of_model(model)
            .into_iter()
            .map(|(id, a)| {
                let b = bytes.get(a.index as usize).copied().flatten();
                AdapterStatus {
                    source: slots[a.index as usize]
                        .as_ref()
                        .map_or(String::new(), |s| s.source.clone()),
                    state: if b.is_some() { "loaded" } else { "unloaded" },
                    bytes: b,
                    // the registry's hold and this clone's
                    in_flight: Arc::strong_count(&a.hold).saturating_sub(2),
                    loads: a.stats.loads.load(Relaxed),
                    evictions: a.stats.evictions.load(Relaxed),
                    last_used_ms: a.stats.last_used_ms.load(Relaxed),
                    id,
                }
            })
            .collect()
    }
}
