//! `ModelManager`: the models this server serves, each a `ModelHandle` (engine thread + text
//! codec). Models are loaded at start-up; on-demand loading with LRU eviction is a later step.

pub mod loader;

use crate::engine::EngineHandle;
use crate::text::TextCodec;
use std::collections::BTreeMap;
use std::sync::Arc;

pub use loader::{load_model, ManagerError};

/// One served model. Held (as `Arc`) by every request in flight.
pub struct ModelHandle {
    pub id: String,
    pub engine: EngineHandle,
    pub codec: Arc<TextCodec>,
    /// Unix seconds when the model was loaded.
    pub created: u64,
    join: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl ModelHandle {
    pub fn new(
        id: String,
        engine: EngineHandle,
        codec: TextCodec,
        join: std::thread::JoinHandle<()>,
    ) -> Self {
        Self {
            id,
            engine,
            codec: Arc::new(codec),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            join: parking_lot::Mutex::new(Some(join)),
        }
    }

    /// Stops the engine thread and waits for it.
    pub fn shutdown(&self) {
        self.engine.shutdown();
        if let Some(j) = self.join.lock().take() {
            let _ = j.join();
        }
    }
}

#[derive(Default, Clone)]
pub struct ModelManager {
    models: Arc<BTreeMap<String, Arc<ModelHandle>>>,
}

impl ModelManager {
    pub fn new(models: Vec<ModelHandle>) -> Self {
        Self {
            models: Arc::new(
                models
                    .into_iter()
                    .map(|m| (m.id.clone(), Arc::new(m)))
                    .collect(),
            ),
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<ModelHandle>> {
        self.models.get(id).cloned()
    }

    pub fn list(&self) -> impl Iterator<Item = &Arc<ModelHandle>> {
        self.models.values()
    }

    /// Requests being served on any model.
    pub fn requests_in_flight(&self) -> usize {
        self.models
            .values()
            .map(|m| {
                m.engine
                    .stats()
                    .requests_in_flight
                    .load(std::sync::atomic::Ordering::Acquire)
            })
            .sum()
    }

    pub fn shutdown(&self) {
        for m in self.models.values() {
            m.shutdown();
        }
    }
}
