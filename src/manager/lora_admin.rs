//! LoRA adapters loaded and unloaded while the server runs (vLLM's `/v1/load_lora_adapter` and
//! `/v1/unload_lora_adapter`).
//!
//! Loading takes the model's load lock, so no model load runs meanwhile: a loaded model reads
//! the adapter now (its failure is the answer) and keeps it when `--max-cpu-loras` leaves room
//! (an idle adapter evicted for it); one that is not loaded reads it with its next load if it is
//! among the first `--max-cpu-loras`, else with the first request on it (its host-tier copy,
//! which lacks it, is dropped). Unloading forgets the name at once (new
//! requests on it get 404) and empties the model's slot once the requests still running on the
//! adapter are done.

use super::adapters::LoraAdminError;
use super::ModelManager;
use crate::store::ModelSpec;
use std::sync::Arc;

impl ModelManager {
    /// Adds adapter `name` from `path` (a PEFT folder or GGUF LoRA file, local, `hf://` or
    /// `gs://`) to `model` (the one declared model when
    /// `None`).
    pub async fn load_lora(
        &self,
        name: &str,
        path: &str,
        model: Option<&str>,
    ) -> Result<(), LoraAdminError> {
        use LoraAdminError::Invalid;
        let model =
            match model {
                Some(m) => m.to_string(),
                None => match self.ids().collect::<Vec<_>>().as_slice() {
                    [one] => one.to_string(),
                    _ => return Err(Invalid(
                        "several models are declared: name the adapter's model in base_model_name"
                            .into(),
                    )),
                },
            };
        let entry = self.entry(&model).map_err(|e| Invalid(e.to_string()))?;
        let _no_load = entry.loading.lock().await;
        self.inner
            .adapters
            .check_new(name, path, self.ids())
            .map_err(Invalid)?;
        let spec = ModelSpec {
            id: name.to_string(),
            source: path.to_string(),
        };
        let index = self.inner.adapters.slots_of(&model).len() as u32;
        let limits = entry.decl.overrides.apply(self.inner.limits.engine);
        let loaded = entry.loaded.read().clone();
        let mut resident = false;
        match loaded {
            Some(handle) => {
                // read now, so that a bad adapter is this request's answer; kept when there is
                // room under --max-cpu-loras (an idle adapter evicted for it), else read again
                // by the first request that needs it
                let m = &handle.model;
                let adapter = self
                    .read_adapter(m, spec.clone(), limits.max_lora_rank)
                    .await
                    .map_err(Invalid)?;
                let _swap = entry.adapter_swap.lock().await;
                let count = m.lora_bytes().iter().flatten().count();
                resident = count < limits.max_cpu_loras.unwrap_or(usize::MAX)
                    || self.evict_idle_adapter(&model, m);
                if resident {
                    // `read_adapter` refuses a model that serves none
                    m.set_lora(index, Some(adapter));
                }
            }
            None => *entry.host.lock() = None,
        }
        let got = self.inner.adapters.push(&model, spec);
        debug_assert_eq!(got, index, "slots change only under the load lock");
        if resident {
            self.adapter_read(&model, name);
        }
        tracing::info!(adapter = name, model = %model, slot = index, "LoRA adapter loaded");
        Ok(())
    }

    /// Removes adapter `name`.
    pub async fn unload_lora(&self, name: &str) -> Result<(), LoraAdminError> {
        let slot = self
            .inner
            .adapters
            .remove(name)
            .ok_or_else(|| LoraAdminError::NotFound(name.to_string()))?;
        let manager = self.clone();
        tokio::spawn(async move {
            // each lease on the adapter and each of its sequences holds a clone of `hold`
            while Arc::strong_count(&slot.hold) > 1 {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            if let Ok(entry) = manager.entry(&slot.model) {
                let _no_load = entry.loading.lock().await;
                let _swap = entry.adapter_swap.lock().await;
                if let Some(h) = entry.loaded.read().clone() {
                    h.model.set_lora(slot.index, None);
                }
                *entry.host.lock() = None;
            }
        });
        tracing::info!(adapter = name, "LoRA adapter unloaded");
        Ok(())
    }
}
