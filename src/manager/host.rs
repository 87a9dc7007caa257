//! The host tier: an evicted model's weights kept in host memory (`--host-memory-budget`), by
//! their own LRU of weight bytes, so the next load copies them back instead of reading files.

use super::lru::{Budget, Plan};
use super::{ModelHandle, ModelManager};
use crate::models::Model;
use crate::text::TextCodec;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// An evicted model's weights in host memory, with its tokenizer.
pub(super) struct HostCopy {
    pub(super) model: Arc<dyn Model>,
    pub(super) codec: Arc<TextCodec>,
}

impl ModelManager {
    /// Keeps the weights of the evicted model `id` in host memory when they fit the host
    /// budget (evicting the host tier's least recently used copies first). On the CPU the
    /// weights already are in host memory and stay as they are; elsewhere they are copied.
    pub(super) async fn keep_in_host(&self, id: &str, handle: &ModelHandle) {
        let Some(budget) = self.inner.limits.host_budget else {
            return;
        };
        let model = handle.model.clone();
        let bytes = model.weight_bytes();
        let budget = Budget {
            memory_bytes: Some(budget),
            max_loaded: None,
        };
        loop {
            let plan = self.inner.host_lru.lock().plan(bytes, budget, |_| false);
            match plan {
                Plan::Fits => break,
                Plan::Evict(victim) => self.drop_host_copy(&victim),
                Plan::TooLarge | Plan::Wait => {
                    tracing::info!(
                        model = id,
                        bytes,
                        "weights do not fit the host memory budget"
                    );
                    return;
                }
            }
        }
        let copy = tokio::task::spawn_blocking(move || {
            if model.device().is_cpu() {
                Ok(model)
            } else {
                model.to_device(&candle_core::Device::Cpu)
            }
        })
        .await;
        match copy {
            Ok(Ok(model)) => {
                let Some(entry) = self.inner.entries.get(id) else {
                    return;
                };
                self.inner.host_lru.lock().insert(id, bytes, false);
                entry.counters.host_bytes.store(bytes, Ordering::Relaxed);
                *entry.host.lock() = Some(HostCopy {
                    model,
                    codec: handle.codec.clone(),
                });
                tracing::info!(model = id, bytes, "weights kept in host memory");
            }
            Ok(Err(e)) => {
                tracing::warn!(model = id, error = %e, "cannot keep weights in host memory")
            }
            Err(e) => tracing::warn!(model = id, error = %e, "cannot keep weights in host memory"),
        }
    }

    /// Drops `id`'s weights from the host tier.
    pub(super) fn drop_host_copy(&self, id: &str) {
        self.inner.host_lru.lock().remove(id);
        if let Some(e) = self.inner.entries.get(id) {
            e.counters.host_bytes.store(0, Ordering::Relaxed);
            e.host.lock().take();
        }
    }
}
