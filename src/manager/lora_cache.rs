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
use crate::models::lora::LoraAdapter;
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

    /// Makes adapter `a` resident in the loaded `model`: read from its source (once, whatever
    /// the requests waiting for it), then put in when the model holds fewer than
    /// `--max-cpu-loras` or once an idle adapter is evicted for it; waits while every resident
    /// adapter is in use, up to the load timeout. The residency check and the swap run under the
    /// model's `adapter_swap` lock, which no IO ever holds: an adapter a request found resident
    /// holds its hold before the lock is released, so it is not evicted under the request.
    pub(super) async fn resident_adapter(
        &self,
        entry: &Entry,
        model: &Arc<dyn Model>,
        a: &AdapterSlot,
    ) -> Result<(), LoadError> {
        a.stats.touch();
        let name = a.hold.to_string();
        let deadline = tokio::time::Instant::now() + self.inner.limits.load_timeout;
        let timeout = || LoadError::Timeout(name.clone());
        let swap = || tokio::time::timeout_at(deadline, entry.adapter_swap.lock());
        let here = |m: &Arc<dyn Model>| {
            m.lora_bytes()
                .get(a.index as usize)
                .is_some_and(Option::is_some)
        };
        // one read per adapter at a time: later requests find it resident
        let _reading = tokio::time::timeout_at(deadline, a.reading.lock())
            .await
            .map_err(|_| timeout())?;
        if here(model) {
            // re-checked under the lock: an eviction that chose it before this request's hold
            // existed has finished once the lock is free
            let _swap = swap().await.map_err(|_| timeout())?;
            if here(model) {
                return Ok(());
            }
        }
        let limits = entry.decl.overrides.apply(self.inner.limits.engine);
        let spec = self.inner.adapters.slots_of(&a.model)[a.index as usize]
            .clone()
            .ok_or_else(|| LoadError::NotFound(name.clone()))?;
        let adapter = self
            .read_adapter(model, spec, limits.max_lora_rank)
            .await
            .map_err(|cause| LoadError::Failed {
                id: name.clone(),
                cause,
            })?;
        let mut adapter = Some(adapter);
        loop {
            {
                let _swap = swap().await.map_err(|_| timeout())?;
                if here(model) {
                    return Ok(());
                }
                let count = model.lora_bytes().iter().flatten().count();
                if count < limits.max_cpu_loras.unwrap_or(usize::MAX)
                    || self.evict_idle_adapter(&a.model, model)
                {
                    // `read_adapter` refuses a model that serves none
                    model.set_lora(a.index, adapter.take());
                    self.adapter_read(&a.model, &name);
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(timeout());
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

    /// Reads the adapter `spec` for `model` from its source (downloading an `hf://` or `gs://`
    /// one into the cache first), on a blocking thread, without putting it in.
    pub(super) async fn read_adapter(
        &self,
        model: &Arc<dyn Model>,
        spec: ModelSpec,
        max_rank: Option<usize>,
    ) -> Result<LoraAdapter, String> {
        let (m, sources) = (model.clone(), self.inner.sources.clone());
        tokio::task::spawn_blocking(move || {
            let local = super::open::local_adapter(&spec, &sources)?;
            super::loader::read_lora(m.as_ref(), &local, max_rank).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Puts the adapters of `loras` (a load's, from `adapters_at_load`) into the freshly read
    /// `model`, reading each from its source; one that fails is logged and left out (a request
    /// that needs it reads it again and gets the error), so a bad adapter never keeps its base
    /// model from loading. Runs on a blocking thread of the runtime.
    pub(super) fn attach_at_load(
        model: &dyn Model,
        loras: &[Option<ModelSpec>],
        sources: &crate::store::Sources,
        max_rank: Option<usize>,
    ) -> Vec<Option<ModelSpec>> {
        let mut read = vec![None; loras.len()];
        for (i, spec) in loras.iter().enumerate() {
            let Some(spec) = spec else { continue };
            let attached = super::open::local_adapter(spec, sources).and_then(|local| {
                super::loader::attach_lora(model, i as u32, &local, max_rank)
                    .map_err(|e| e.to_string())
            });
            match attached {
                Ok(()) => read[i] = Some(spec.clone()),
                Err(e) => {
                    tracing::warn!(adapter = %spec.id, error = %e, "LoRA adapter not read with its model")
                }
            }
        }
        read
    }

    /// After `model` came back from the host tier: empties the slots of adapters unloaded
    /// meanwhile (the host copy may have been taken while they were still there).
    pub(super) fn drop_unloaded_adapters(&self, id: &str, model: &dyn Model) {
        for (i, spec) in self.inner.adapters.slots_of(id).iter().enumerate() {
            if spec.is_none() {
                model.set_lora(i as u32, None);
            }
        }
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
    /// Holds on it: each request's lease and each of its engine sequences (a request with `n`
    /// choices holds it 1 + n times).
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
                    source: slots
                        .get(a.index as usize)
                        .and_then(Option::as_ref)
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
