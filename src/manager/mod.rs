//! `ModelManager`: the declared models and the loaded ones. A model loads on its first request
//! (or at start with `--preload`); concurrent first requests share one load (single flight) and
//! wait for it up to `--load-timeout`. Loads run one at a time so their memory can be measured
//! (RSS before and after). A load that does not fit `--memory-budget` / `--max-loaded-models`
//! first evicts the least recently used models that have no request in flight (`lru.rs` decides);
//! a model with requests in flight is never evicted: the load waits for it to drain, bounded by
//! the load timeout, else `Busy` (503 with Retry-After). Eviction stops the model's engine thread
//! and frees its memory. A failed load answers its waiters with the cause and is retried on a
//! later request.
//!
//! A request holds a `ModelLease` from lookup to its last byte (its `n` choices share it); a
//! model is busy while a lease is held. The lease count is the one count of requests in flight.

pub mod adapters;
pub mod decl;
pub mod handle;
pub mod host;
pub mod limits;
pub mod loader;
mod lora_admin;
mod lora_cache;
pub mod lru;
mod memory;
mod open;
pub mod task;

use crate::metrics::Metrics;
use crate::models::{CausalLm, Model};
use crate::store::gcs::GcsSource;
use crate::store::hf::HfSource;
use crate::store::LocalModel;
use crate::store::Sources;
use crate::text::TextCodec;
pub use limits::{EngineLimits, KvMemory};
use lru::{Budget, LruIndex, Plan};
use parking_lot::{Mutex, RwLock};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use adapters::LoraAdminError;
pub use decl::{validate_model_id, EngineOverrides, ModelDecl};
pub use handle::{ModelHandle, ModelLease};
use host::HostCopy;
pub use loader::{load_model, ManagerError};
pub use lora_cache::AdapterStatus;
pub use memory::rss_bytes;
use memory::trim_heap;
use open::{kv_estimate, open_local};

/// Load state of one declared model, as `/admin/models` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelState {
    Unloaded,
    Loading,
    Loaded,
    /// Evicted, its weights kept in host memory (`--host-memory-budget`).
    Host,
}

impl ModelState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unloaded => "unloaded",
            Self::Loading => "loading",
            Self::Loaded => "loaded",
            Self::Host => "host",
        }
    }
}

/// Counters of one declared model.
#[derive(Debug, Default)]
pub struct ModelCounters {
    pub loads: AtomicU64,
    pub evictions: AtomicU64,
    pub load_millis: AtomicU64,
    /// Bytes measured at the last load.
    pub bytes: AtomicU64,
    /// Unix milliseconds of the last request.
    pub last_used_ms: AtomicU64,
    /// Load attempts that failed.
    pub load_failures: AtomicU64,
    /// Loads served from the host tier (a copy to the device, no file read).
    pub host_loads: AtomicU64,
    /// Bytes of the copy in the host tier (0 when there is none).
    pub host_bytes: AtomicU64,
}

struct Entry {
    decl: ModelDecl,
    loaded: RwLock<Option<Arc<ModelHandle>>>,
    /// Held while this model loads: later requests wait on it (single flight).
    loading: tokio::sync::Mutex<()>,
    counters: ModelCounters,
    last_error: Mutex<Option<String>>,
    /// Load attempts finished so far, and how the last one failed (`None` after a success):
    /// requests that waited on an attempt share its failure instead of starting another.
    attempts: Mutex<(u64, Option<LoadError>)>,
    /// The weights of this model, evicted to host memory.
    host: Mutex<Option<HostCopy>>,
    /// Held while one of its LoRA adapters is read into it or evicted from it.
    adapter_swap: tokio::sync::Mutex<()>,
}

/// Where a load takes a model from.
enum LoadFrom {
    /// The host tier's copy of its weights, with its tokenizer.
    Host(Arc<dyn Model>, Arc<TextCodec>),
    Files(LocalModel),
}

/// What the manager is allowed to hold.
#[derive(Debug, Clone, Copy)]
pub struct ManagerLimits {
    pub engine: EngineLimits,
    pub budget: Budget,
    pub load_timeout: Duration,
    /// Host memory for evicted models' weights (`--host-memory-budget`); `None`: evicted
    /// models go back to disk.
    pub host_budget: Option<u64>,
}

struct Inner {
    entries: BTreeMap<String, Entry>,
    limits: ManagerLimits,
    sources: Sources,
    metrics: Arc<Metrics>,
    lru: Mutex<LruIndex>,
    /// The host tier's models, by bytes of weights.
    host_lru: Mutex<LruIndex>,
    /// The device models load on, opened once to measure its memory.
    device: std::sync::OnceLock<Option<candle_core::Device>>,
    /// One load at a time: budget decisions and RSS measurements do not interleave.
    load_lock: tokio::sync::Mutex<()>,
    /// Where engines started from now on publish their KV events (`--kv-events-config`).
    kv_events: std::sync::OnceLock<crate::kv_events::KvEventSink>,
    /// The models' LoRA adapters.
    adapters: adapters::Adapters,
}

#[derive(Clone)]
pub struct ModelManager {
    inner: Arc<Inner>,
}

/// Why a model could not be served.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error("The model `{0}` does not exist.")]
    NotFound(String),
    #[error("{0}")]
    InvalidId(String),
    #[error("model `{id}` failed to load: {cause}")]
    Failed { id: String, cause: String },
    #[error("model `{0}` cannot be loaded now: every loaded model is busy; retry later")]
    Busy(String),
    #[error("model `{0}` does not fit the memory budget even with every other model unloaded")]
    TooLarge(String),
    #[error("model `{0}` did not load within the load timeout")]
    Timeout(String),
}

impl ModelManager {
    /// Declares `models` (ids validated, sources resolved when loaded).
    pub fn new(
        models: Vec<ModelDecl>,
        limits: ManagerLimits,
        sources: Sources,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        let mut entries = BTreeMap::new();
        for decl in models {
            validate_model_id(&decl.spec.id)?;
            let src = &decl.spec.source;
            if let Some(parsed) = HfSource::parse(src) {
                parsed.map_err(|e| e.to_string())?;
            } else if let Some(parsed) = GcsSource::parse(src) {
                parsed.map_err(|e| e.to_string())?;
            } else if src.contains("://") {
                return Err(format!(
                    "model {:?}: source {src:?}: local paths, hf://ORG/NAME[/FILE][@REV] and gs://BUCKET/PREFIX (or a single object) are supported",
                    decl.spec.id
                ));
            } else if !std::path::Path::new(src).exists()
                && crate::store::pypi::named_source(src).is_none()
            {
                let names: Vec<&str> = crate::store::pypi::KNOWN_MODELS
                    .iter()
                    .map(|m| m.id)
                    .collect();
                return Err(format!(
                    "model {:?}: no such file or directory {src:?} (nor a model weir fetches by name: {})",
                    decl.spec.id,
                    names.join(", ")
                ));
            }
            let id = decl.spec.id.clone();
            let entry = Entry {
                decl,
                loaded: RwLock::new(None),
                loading: tokio::sync::Mutex::new(()),
                counters: ModelCounters::default(),
                last_error: Mutex::new(None),
                attempts: Mutex::new((0, None)),
                host: Mutex::new(None),
                adapter_swap: tokio::sync::Mutex::new(()),
            };
            if entries.insert(id.clone(), entry).is_some() {
                return Err(format!("model id {id:?} is declared twice"));
            }
        }
        let adapters = adapters::Adapters::declare(
            entries
                .iter()
                .map(|(id, e)| (id.as_str(), e.decl.loras.as_slice())),
        )?;
        Ok(Self {
            inner: Arc::new(Inner {
                entries,
                limits,
                sources,
                metrics,
                lru: Mutex::new(LruIndex::default()),
                host_lru: Mutex::new(LruIndex::default()),
                device: std::sync::OnceLock::new(),
                load_lock: tokio::sync::Mutex::new(()),
                kv_events: std::sync::OnceLock::new(),
                adapters,
            }),
        })
    }

    /// Engines loaded from now on publish their KV cache events to `sink` (set once, before
    /// the first load).
    pub fn publish_kv_events(&self, sink: crate::kv_events::KvEventSink) {
        let _ = self.inner.kv_events.set(sink);
    }

    /// The name of `model`'s adapter `index` (None once unloaded).
    pub fn adapter_name(&self, model: &str, index: u32) -> Option<String> {
        self.inner.adapters.name_of(model, index)
    }

    /// Whether `model` has LoRA adapters (loaded or not).
    pub fn has_adapters(&self, model: &str) -> bool {
        !self.inner.adapters.slots_of(model).is_empty()
    }

    /// The LoRA adapters served, sorted: (name, its model).
    pub fn adapters(&self) -> Vec<(String, String)> {
        self.inner.adapters.list()
    }

    /// Declared model ids, sorted.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.inner.entries.keys().map(String::as_str)
    }

    /// The loaded model `id`, without loading it.
    pub fn get(&self, id: &str) -> Option<Arc<ModelHandle>> {
        self.inner.entries.get(id)?.loaded.read().clone()
    }

    /// Loaded models.
    pub fn loaded(&self) -> Vec<Arc<ModelHandle>> {
        self.inner
            .entries
            .values()
            .filter_map(|e| e.loaded.read().clone())
            .collect()
    }

    /// The declared model `id` (a bad id is `InvalidId`, an undeclared one `NotFound`).
    fn entry(&self, id: &str) -> Result<&Entry, LoadError> {
        validate_model_id(id).map_err(LoadError::InvalidId)?;
        self.inner
            .entries
            .get(id)
            .ok_or_else(|| LoadError::NotFound(id.to_string()))
    }

    /// A lease on the model `id`, loading it first if needed.
    pub async fn get_or_load(&self, id: &str) -> Result<ModelLease, LoadError> {
        if let Some(a) = self.inner.adapters.lookup(id) {
            let lease = Box::pin(self.get_or_load(&a.model)).await?;
            let entry = self.entry(&a.model)?;
            self.resident_adapter(entry, &lease.model, &a).await?;
            return Ok(lease.with_lora(crate::step::LoraId(a.index), a.hold));
        }
        let entry = self.entry(id)?;
        entry.counters.last_used_ms.store(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            Ordering::Relaxed,
        );
        if let Some(lease) = self.lease_loaded(entry, id) {
            return Ok(lease);
        }
        let seen = entry.attempts.lock().0;
        let deadline = tokio::time::Instant::now() + self.inner.limits.load_timeout;
        let _single = tokio::time::timeout_at(deadline, entry.loading.lock())
            .await
            .map_err(|_| LoadError::Timeout(id.to_string()))?;
        if let Some(lease) = self.lease_loaded(entry, id) {
            return Ok(lease);
        }
        // an attempt finished while this request waited: its failure is this request's answer
        // (a later request tries again)
        if let (done, Some(failed)) = &*entry.attempts.lock() {
            if *done > seen {
                return Err(failed.clone());
            }
        }
        let result = self.load(entry, deadline).await;
        let mut attempts = entry.attempts.lock();
        attempts.0 += 1;
        // waiting for a busy model or the load lock depends on each waiter's own deadline
        attempts.1 = match &result {
            Err(e @ (LoadError::Failed { .. } | LoadError::TooLarge(_))) => Some(e.clone()),
            _ => None,
        };
        if let Err(e) = &result {
            entry.counters.load_failures.fetch_add(1, Ordering::Relaxed);
            *entry.last_error.lock() = Some(e.to_string());
        }
        result
    }

    /// A lease on `entry`'s model when it is loaded (marked used).
    fn lease_loaded(&self, entry: &Entry, id: &str) -> Option<ModelLease> {
        // NOTE: leases are taken under the read lock and eviction takes the model under the
        // write lock only when it has none (`unload_idle`), so a model a request just looked up
        // is never stopped under it.
        let lease = entry.loaded.read().as_ref().map(ModelLease::new)?;
        self.inner.lru.lock().touch(id);
        Some(lease)
    }

    /// Loads `entry` (its `loading` lock held by the caller); the lease is taken before the
    /// model is published, so no eviction can take it back before the request that loaded it.
    async fn load(
        &self,
        entry: &Entry,
        deadline: tokio::time::Instant,
    ) -> Result<ModelLease, LoadError> {
        let id = entry.decl.spec.id.clone();
        let _one = tokio::time::timeout_at(deadline, self.inner.load_lock.lock())
            .await
            .map_err(|_| LoadError::Timeout(id.clone()))?;
        let limits = entry.decl.overrides.apply(self.inner.limits.engine);
        // back from host memory (a copy to the device and a new KV cache), or from its files
        let host = entry
            .host
            .lock()
            .as_ref()
            .map(|h| (h.model.clone(), h.codec.clone()));
        let (from, need) = match host {
            Some((model, codec)) => {
                let need = model.weight_bytes() + kv_estimate(&limits);
                (LoadFrom::Host(model, codec), need)
            }
            None => {
                let (spec, sources) = (entry.decl.spec.clone(), self.inner.sources.clone());
                // may download (hf://, gs://): off the async threads
                let local =
                    tokio::task::spawn_blocking(move || open_local(&spec, &limits, &sources))
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| r)
                        .map_err(|cause| LoadError::Failed {
                            id: id.clone(),
                            cause,
                        })?;
                let need = loader::weight_file_bytes(&local) + kv_estimate(&limits);
                (LoadFrom::Files(local), need)
            }
        };
        self.make_room(&id, need, deadline).await?;
        let from_host = matches!(from, LoadFrom::Host(..));
        let (started, before) = (Instant::now(), self.used_bytes());
        let (metrics, lid) = (self.inner.metrics.clone(), id.clone());
        let kv_events = self.inner.kv_events.get().cloned();
        let (loras, sources) = (
            self.adapters_at_load(&id, &limits),
            self.inner.sources.clone(),
        );
        let result = tokio::task::spawn_blocking(move || match from {
            LoadFrom::Host(model, codec) => {
                let device = limits.device.open()?;
                let model = if model.device().same_device(&device) {
                    model
                } else {
                    model.to_device(&device)?
                };
                loader::start_model(&lid, model, codec, &limits, &metrics, kv_events)
                    .map(|h| (h, Vec::new()))
            }
            LoadFrom::Files(local) => {
                let (model, codec) = loader::read_model(&local, &limits, &[])?;
                let read = Self::attach_at_load(&*model, &loras, &sources, limits.max_lora_rank);
                loader::start_model(&lid, model, codec, &limits, &metrics, kv_events)
                    .map(|h| (h, read))
            }
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
        let (handle, read) = match result {
            Ok((h, read)) => (Arc::new(h), read),
            Err(cause) => {
                tracing::error!(model = %id, %cause, "load failed");
                return Err(LoadError::Failed { id, cause });
            }
        };
        // measured: what the device's memory grew by (at least the estimate: pages not yet
        // touched)
        let bytes = self.used_bytes().saturating_sub(before).max(need);
        let c = &entry.counters;
        c.loads.fetch_add(1, Ordering::Relaxed);
        if from_host {
            c.host_loads.fetch_add(1, Ordering::Relaxed);
            self.drop_host_copy(&id);
            self.drop_unloaded_adapters(&id, &*handle.model);
        } else {
            self.count_adapters_read(&id, &read);
        }
        c.load_millis
            .fetch_add(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        c.bytes.store(bytes, Ordering::Relaxed);
        self.inner
            .metrics
            .model_loaded(&id, started.elapsed(), bytes);
        *entry.last_error.lock() = None;
        self.inner.lru.lock().insert(&id, bytes, entry.decl.pinned);
        let lease = ModelLease::new(&handle);
        *entry.loaded.write() = Some(handle);
        tracing::info!(model = %id, bytes, load_s = started.elapsed().as_secs_f32(), "model ready");
        Ok(lease)
    }

    /// Evicts least recently used idle models until `need` more bytes fit.
    async fn make_room(
        &self,
        id: &str,
        need: u64,
        deadline: tokio::time::Instant,
    ) -> Result<(), LoadError> {
        loop {
            let plan = self
                .inner
                .lru
                .lock()
                .plan(need, self.inner.limits.budget, |m| self.is_busy(m));
            match plan {
                Plan::Fits => return Ok(()),
                Plan::TooLarge => return Err(LoadError::TooLarge(id.to_string())),
                Plan::Evict(victim) => {
                    tracing::info!(model = %victim, for_model = id, "evicting");
                    // a request that took a lease since the plan: plan again
                    self.unload_idle(&victim, true).await;
                }
                Plan::Wait => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(LoadError::Busy(id.to_string()));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    /// True while a request holds the model's handle.
    fn is_busy(&self, id: &str) -> bool {
        self.inner
            .entries
            .get(id)
            .and_then(|e| e.loaded.read().as_ref().map(|h| h.num_in_flight() > 0))
            .unwrap_or(false)
    }

    /// Stops and drops the loaded model `id` if no request holds a lease on it; false when one
    /// does (the model stays).
    async fn unload_idle(&self, id: &str, evicted: bool) -> bool {
        let Some(entry) = self.inner.entries.get(id) else {
            return true;
        };
        let handle = {
            let mut loaded = entry.loaded.write();
            // leases are taken under the read lock: none can appear while this is held
            let busy = match loaded.as_ref() {
                None => return true,
                Some(h) => h.num_in_flight() > 0,
            };
            if busy {
                return false;
            }
            loaded.take().expect("checked just above")
        };
        self.inner.lru.lock().remove(id);
        if evicted {
            entry.counters.evictions.fetch_add(1, Ordering::Relaxed);
        }
        let h = handle.clone();
        let _ = tokio::task::spawn_blocking(move || h.shutdown()).await;
        if evicted {
            self.keep_in_host(id, &handle).await;
        }
        drop(handle);
        trim_heap();
        self.inner.metrics.model_unloaded(id, evicted);
        true
    }

    /// Unloads `id` once its requests have finished (bounded by the load timeout): true when it
    /// was loaded.
    pub async fn unload(&self, id: &str) -> Result<bool, LoadError> {
        let entry = self.entry(id)?;
        let _single = entry.loading.lock().await;
        let in_host = entry.host.lock().is_some();
        self.drop_host_copy(id);
        if entry.loaded.read().is_none() {
            trim_heap();
            return Ok(in_host);
        }
        let deadline = Instant::now() + self.inner.limits.load_timeout;
        while !self.unload_idle(id, false).await {
            if Instant::now() >= deadline {
                return Err(LoadError::Busy(id.to_string()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(true)
    }

    /// What `/admin/models` reports of `id`.
    pub fn status(&self, id: &str) -> Option<ModelStatus<'_>> {
        let e = self.inner.entries.get(id)?;
        let handle = e.loaded.read().clone();
        let state = match (&handle, e.loading.try_lock()) {
            (Some(_), _) => ModelState::Loaded,
            (None, Err(_)) => ModelState::Loading,
            (None, Ok(_)) if e.host.lock().is_some() => ModelState::Host,
            (None, Ok(_)) => ModelState::Unloaded,
        };
        Some(ModelStatus {
            id: &e.decl.spec.id,
            source: &e.decl.spec.source,
            pinned: e.decl.pinned,
            state,
            in_flight: handle.as_ref().map_or(0, |h| h.num_in_flight()),
            counters: &e.counters,
            last_error: e.last_error.lock().clone(),
            dtype: handle
                .as_ref()
                .map(|h| h.model.dtype().as_str().to_string()),
            generation_defaults: handle
                .as_ref()
                .map(|h| h.codec.generation_defaults().clone()),
            adapters: self.adapter_status(id),
        })
    }

    /// Requests being served on any model.
    pub fn requests_in_flight(&self) -> usize {
        self.loaded().iter().map(|m| m.num_in_flight()).sum()
    }

    /// Stops every engine (blocking).
    pub fn shutdown(&self) {
        for e in self.inner.entries.values() {
            if let Some(h) = e.loaded.write().take() {
                h.shutdown();
            }
        }
    }
}

/// One declared model's state.
pub struct ModelStatus<'a> {
    pub id: &'a str,
    pub source: &'a str,
    pub pinned: bool,
    pub state: ModelState,
    pub in_flight: usize,
    pub counters: &'a ModelCounters,
    pub last_error: Option<String>,
    /// The loaded model's compute dtype (activations and dense weights): "f32", "bf16", ...
    pub dtype: Option<String>,
    /// The loaded model's sampling defaults from generation_config.json.
    pub generation_defaults: Option<crate::text::GenerationDefaults>,
    pub adapters: Vec<AdapterStatus>,
}
