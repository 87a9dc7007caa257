//! `ModelHandle`: a loaded model (engine handle, weights, tokenizer, grammar compiler), and
//! `ModelLease`: a request's hold on one, counted so the manager never evicts a model in use and
//! knows how many requests are in flight.

use crate::engine::EngineHandle;
use crate::models::Model;
use crate::text::TextCodec;
use parking_lot::Mutex;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// One loaded model: its engine, weights and tokenizer. Requests reach it through a `ModelLease`.
pub struct ModelHandle {
    pub id: String,
    pub engine: EngineHandle,
    /// The weights the engine runs (kept for the host tier when the model is evicted).
    pub model: Arc<dyn Model>,
    pub codec: Arc<TextCodec>,
    /// The vocabulary compiled for constrained decoding, built on first use.
    pub grammar: std::sync::OnceLock<Result<Arc<crate::text::grammar::GrammarCompiler>, String>>,
    /// Unix seconds when the model was loaded.
    pub created: u64,
    join: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Requests holding a `ModelLease` on this model.
    in_flight: std::sync::atomic::AtomicUsize,
}

/// A request's hold on a loaded model, from lookup to its last byte: while one is held the model
/// is never evicted. Clones (a request's `n` choices) share one hold.
#[derive(Clone)]
pub struct ModelLease {
    inner: Arc<LeaseInner>,
    /// With a request addressed to a LoRA adapter: the adapter and its name.
    lora: Option<(crate::step::LoraId, Arc<str>)>,
}

struct LeaseInner(Arc<ModelHandle>);

impl ModelLease {
    pub(super) fn new(handle: &Arc<ModelHandle>) -> Self {
        handle.in_flight.fetch_add(1, Ordering::AcqRel);
        Self {
            inner: Arc::new(LeaseInner(handle.clone())),
            lora: None,
        }
    }

    /// The same hold, for requests on the model's adapter `lora`; `hold` is the adapter's name
    /// as the manager keeps it (its count is the adapter's requests in flight).
    pub(super) fn with_lora(self, lora: crate::step::LoraId, hold: Arc<str>) -> Self {
        Self {
            lora: Some((lora, hold)),
            ..self
        }
    }

    /// The adapter the request runs with (None: the base model).
    pub fn lora(&self) -> Option<crate::step::LoraId> {
        self.lora.as_ref().map(|(l, _)| *l)
    }

    /// The adapter's hold, for the engine's sequence to keep (see `Request::lora_hold`).
    pub fn lora_hold(&self) -> Option<Arc<str>> {
        self.lora.as_ref().map(|(_, h)| h.clone())
    }

    /// The name the request addressed: its adapter's, else the model's.
    pub fn served_id(&self) -> &str {
        match &self.lora {
            Some((_, name)) => name,
            None => &self.id,
        }
    }
}

impl Drop for LeaseInner {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::ops::Deref for ModelLease {
    type Target = ModelHandle;

    fn deref(&self) -> &ModelHandle {
        &self.inner.0
    }
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl ModelHandle {
    pub fn new(
        id: String,
        engine: EngineHandle,
        model: Arc<dyn Model>,
        codec: Arc<TextCodec>,
        join: std::thread::JoinHandle<()>,
    ) -> Self {
        Self {
            id,
            engine,
            model,
            codec,
            grammar: std::sync::OnceLock::new(),
            created: unix_secs(),
            join: Mutex::new(Some(join)),
            in_flight: Default::default(),
        }
    }

    /// Requests holding a lease on this model.
    pub fn num_in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Stops the engine thread and waits for it.
    pub fn shutdown(&self) {
        self.engine.shutdown();
        if let Some(j) = self.join.lock().take() {
            let _ = j.join();
        }
    }
}
