//! Loads a `LocalModel` into a running engine: weights, text codec, KV cache sized from the
//! memory budget, scheduler, engine thread.

use super::ModelHandle;
use crate::config::{EngineLimits, KvMemory};
use crate::engine::core::EngineCore;
use crate::engine::scheduler::{Scheduler, SchedulerConfig};
use crate::engine::spawn_engine;
use crate::kv::KvCacheConfig;
use crate::models::config::ConfigError;
use crate::models::weights::{GgufWeights, VarBuilderWeights, WeightSource};
use crate::models::{HfLlamaConfig, Llama, LlamaConfig};
use crate::runner::ModelRunner;
use crate::store::{LocalModel, StoreError};
use crate::text::{TextCodec, TextError};
use candle_core::Device;

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Text(#[from] TextError),
    #[error("loading weights: {0}")]
    Weights(#[from] candle_core::Error),
    #[error("{0}")]
    Limits(String),
    #[error("starting the engine thread: {0}")]
    Spawn(#[from] std::io::Error),
}

/// `MemAvailable` of /proc/meminfo in bytes (Linux).
fn available_memory_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn read_hf_config(dir: &std::path::Path) -> Result<LlamaConfig, ManagerError> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| StoreError::io(&path, e))?;
    let hf: HfLlamaConfig = serde_json::from_str(&text)
        .map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?;
    Ok(hf.into_config()?)
}

/// Reads weights, tokenizer and config of a local model (CPU).
pub fn load_weights(
    local: &LocalModel,
    limits: &EngineLimits,
) -> Result<(Llama, TextCodec), ManagerError> {
    let device = Device::Cpu;
    match local {
        LocalModel::Gguf(path) => {
            let mut w = GgufWeights::open(path, &device, limits.weight_format)?;
            let cfg = LlamaConfig::from_gguf(w.content())?;
            let codec = TextCodec::from_gguf(w.content())?;
            let model = Llama::load(&mut w as &mut dyn WeightSource, cfg, &device)?;
            Ok((model, codec))
        }
        LocalModel::HfDir { dir, safetensors } => {
            let cfg = read_hf_config(dir)?;
            let codec = TextCodec::from_hf_dir(dir)?;
            let mut w = VarBuilderWeights::from_safetensors(safetensors, &device)?;
            let model = Llama::load(&mut w, cfg, &device)?;
            Ok((model, codec))
        }
    }
}

/// Sizes the KV cache and the scheduler for `cfg` under `limits`.
pub fn engine_shape(
    cfg: &LlamaConfig,
    limits: &EngineLimits,
) -> Result<(KvCacheConfig, SchedulerConfig), ManagerError> {
    let mut kv = KvCacheConfig {
        num_layers: cfg.num_layers,
        num_kv_heads: cfg.num_kv_heads,
        head_dim: cfg.head_dim,
        block_size: limits.block_size,
        num_blocks: 0,
    };
    let kv_bytes = match limits.kv_cache_memory {
        KvMemory::Bytes(b) => b,
        KvMemory::FractionOfAvailable(f) => {
            let available = available_memory_bytes().ok_or_else(|| {
                ManagerError::Limits("cannot read available memory (/proc/meminfo); give --kv-cache-memory as a size".into())
            })?;
            (available as f64 * f) as u64
        }
    };
    kv.num_blocks = limits
        .num_kv_blocks
        .unwrap_or_else(|| kv.blocks_for_bytes(kv_bytes as usize));
    let capacity = kv.num_slots();
    let max_model_len = match limits.max_model_len {
        Some(n) if n > cfg.max_position_embeddings => {
            return Err(ManagerError::Limits(format!(
                "--max-model-len {n} exceeds the model's context length {}",
                cfg.max_position_embeddings
            )))
        }
        Some(n) => n,
        None => cfg.max_position_embeddings,
    }
    .min(capacity);
    let sched = SchedulerConfig {
        max_num_seqs: limits.max_num_seqs,
        max_num_batched_tokens: limits.max_num_batched_tokens,
        block_size: limits.block_size,
        num_blocks: kv.num_blocks,
        max_model_len,
        enable_prefix_caching: limits.enable_prefix_caching,
        policy: limits.scheduling_policy,
    };
    Ok((kv, sched))
}

/// Loads `local` and starts its engine thread.
pub fn load_model(
    id: &str,
    local: &LocalModel,
    limits: &EngineLimits,
) -> Result<ModelHandle, ManagerError> {
    let started = std::time::Instant::now();
    let (model, codec) = load_weights(local, limits)?;
    let (kv, sched) = engine_shape(model.config(), limits)?;
    tracing::info!(
        model = id,
        kv_blocks = kv.num_blocks,
        kv_tokens = kv.num_slots(),
        kv_mib = (kv.num_blocks * kv.bytes_per_block()) >> 20,
        max_model_len = sched.max_model_len,
        full_length_seqs = kv.num_slots() / sched.max_model_len.max(1),
        load_s = started.elapsed().as_secs_f32(),
        "model loaded"
    );
    let core = EngineCore::new(Scheduler::new(sched), ModelRunner::new(Box::new(model), kv));
    let (engine, join) = spawn_engine(id, core)?;
    Ok(ModelHandle::new(id.to_string(), engine, codec, join))
}
