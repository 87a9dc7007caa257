//! Loads a `LocalModel` into a running engine: weights on the chosen device and dtype, text
//! codec, KV cache sized from the memory budget (host memory, or the GPU's free memory after
//! the weights load), scheduler, engine thread.

use super::limits::{EngineLimits, KvMemory};
use super::ModelHandle;
use crate::engine::core::EngineCore;
use crate::engine::{spawn_engine, QueueLimits};
use crate::kv::{KvCacheConfig, KvGroups};
use crate::kv_events::KvEventSink;
use crate::metrics::Metrics;
use crate::models::attention::BackendKind;
use crate::models::config::ConfigError;
use crate::models::config::{gguf_architecture, hf_model_type};
use crate::models::device::DeviceError;
use crate::models::family;
use crate::models::weights::{
    DummyWeights, GgufWeights, LoadFormat, VarBuilderWeights, WeightSource,
};
use crate::models::{Family, LlamaConfig, Model};
use crate::runner::ModelRunner;
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::store::{LocalModel, StoreError};
use crate::text::{GenerationConfigMode, TextCodec, TextError};
use candle_core::{DType, Device};
use std::sync::Arc;

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
    #[error(transparent)]
    Model(#[from] crate::models::ModelLoadError),
    #[error("{0}")]
    Limits(String),
    #[error(transparent)]
    Device(#[from] DeviceError),
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

/// A `config.json` and the family its `model_type` names (from the registry), which reads the
/// rest.
fn read_hf_config(
    path: &std::path::Path,
) -> Result<(&'static Family, serde_json::Value), ManagerError> {
    let text = std::fs::read_to_string(path).map_err(|e| StoreError::io(path, e))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?;
    Ok((family::for_hf(hf_model_type(&json))?, json))
}

/// Reads the `config.json` of a model served from a local folder (or a config.json itself)
/// as its family will, so that a config weir cannot serve right stops the server at start
/// rather than failing the model's first request. Other sources are checked when they load.
pub fn check_local_config(source: &str) -> Result<(), ManagerError> {
    let path = std::path::Path::new(source);
    let config = if path.is_dir() {
        path.join("config.json")
    } else {
        path.to_path_buf()
    };
    if config.extension().is_none_or(|e| e != "json") || !config.is_file() {
        return Ok(());
    }
    let (family, json) = read_hf_config(&config)?;
    (family.check)(&json)?;
    Ok(())
}

/// The tokenizer of a dummy model: its directory's tokenizer.json when there is one, else ids
/// only.
fn dummy_codec(config: &std::path::Path, vocab_size: usize) -> Result<TextCodec, ManagerError> {
    let dir = config.parent().unwrap_or(std::path::Path::new("."));
    if dir.join("tokenizer.json").is_file() {
        return Ok(TextCodec::from_hf_dir(dir)?);
    }
    let json: serde_json::Value = std::fs::read_to_string(config)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let eos = crate::text::tokenizer::id_list(json.get("eos_token_id"));
    Ok(TextCodec::ids_only(vocab_size, eos))
}

/// Reads weights, tokenizer and config of a local model onto the device and dtype `limits`
/// ask for.
pub fn load_weights(
    local: &LocalModel,
    limits: &EngineLimits,
) -> Result<(Box<dyn Model>, TextCodec), ManagerError> {
    let (mut model, mut codec) = read_weights(local, limits)?;
    super::task::apply_task(model.as_mut(), local, limits.task)?;
    model.set_fused_kernels(limits.fused_kernels);
    codec.set_reasoning_parser(limits.reasoning_parser);
    match limits.generation_config {
        GenerationConfigMode::Vllm => codec.clear_generation_defaults(),
        GenerationConfigMode::Auto if !codec.generation_defaults().is_empty() => tracing::info!(
            defaults = %serde_json::to_string(codec.generation_defaults()).unwrap_or_default(),
            "generation_config.json sets the sampling defaults (--generation-config vllm: the OpenAI ones)"
        ),
        GenerationConfigMode::Auto => {}
    }
    Ok((model, codec))
}

fn read_weights(
    local: &LocalModel,
    limits: &EngineLimits,
) -> Result<(Box<dyn Model>, TextCodec), ManagerError> {
    let device = limits.device.open()?;
    let dtype = limits.dtype.resolve(&device);
    if device.is_cpu() && matches!(dtype, DType::BF16 | DType::F16) {
        warn_cpu_half_precision(dtype);
    }
    match (limits.load_format, local) {
        (LoadFormat::Dummy, LocalModel::ConfigOnly { config: path })
        | (LoadFormat::Dummy, LocalModel::HfDir { dir: path, .. }) => {
            let config = if path.is_dir() {
                path.join("config.json")
            } else {
                path.clone()
            };
            let (family, mut json) = read_hf_config(&config)?;
            add_encoder_settings(family, &mut json, config.parent().unwrap_or(path), None)?;
            let mut w = DummyWeights::new(&device, dtype);
            let model = (family.load)(&mut w, Some(&json))?;
            let codec = dummy_codec(&config, model.config().vocab_size)?;
            Ok((model, codec))
        }
        (LoadFormat::Dummy, LocalModel::Gguf(_)) => Err(ManagerError::Limits(
            "--load-format dummy takes a config.json, not a GGUF file".into(),
        )),
        (LoadFormat::Auto, LocalModel::ConfigOnly { config }) => {
            Err(ManagerError::Limits(format!(
                "{} holds no weights; use --load-format dummy for random weights",
                config.display()
            )))
        }
        (LoadFormat::Auto, LocalModel::Gguf(path)) => {
            let mut w = GgufWeights::open_as(path, &device, dtype, limits.weight_format)?;
            let family = family::for_gguf(&gguf_architecture(w.content()))?;
            w.set_layer_names(family.gguf_names);
            let codec = TextCodec::from_gguf(w.content())?;
            let model = (family.load)(&mut w as &mut dyn WeightSource, None)?;
            Ok((model, codec))
        }
        (LoadFormat::Auto, LocalModel::HfDir { dir, safetensors }) => {
            let (family, mut json) = read_hf_config(&dir.join("config.json"))?;
            let codec = TextCodec::from_hf_dir(dir)?;
            add_encoder_settings(family, &mut json, dir, Some(&codec))?;
            let mut w = VarBuilderWeights::from_safetensors(safetensors, dtype, &device)?;
            let model = (family.load)(&mut w, Some(&json))?;
            Ok((model, codec))
        }
    }
}

/// An encoder's `config.json` gains its folder's sentence-transformers settings (pooling,
/// normalization, longest input) and its tokenizer's `[SEP]` id, which its family reads there.
fn add_encoder_settings(
    family: &Family,
    json: &mut serde_json::Value,
    dir: &std::path::Path,
    codec: Option<&TextCodec>,
) -> Result<(), ManagerError> {
    if family.name == crate::models::encoder::FAMILY.name {
        let mut st = crate::models::encoder::sentence_transformers_json(dir)?;
        let sep = st["sep_token"].as_str().unwrap_or("[SEP]").to_string();
        if let Some(id) = codec.and_then(|c| c.token_to_id(&sep)) {
            st["sep_token_id"] = id.into();
        }
        if let Some(obj) = json.as_object_mut() {
            obj.insert(crate::models::encoder::SENTENCE_TRANSFORMERS.into(), st);
        }
    }
    Ok(())
}

/// `--dtype bf16` / `f16` on the CPU: what it costs and the faster default.
fn warn_cpu_half_precision(dtype: DType) {
    let cpu = crate::cpu::CpuInfo::get();
    let native = if cpu.avx512_bf16 || cpu.amx {
        "has avx512_bf16/amx, which weir's CPU matmuls do not use yet"
    } else {
        "has no native bf16/f16 arithmetic (avx512_bf16, amx)"
    };
    tracing::warn!(
        dtype = dtype.as_str(),
        cpu = %cpu.model,
        "--dtype {} on the CPU: this CPU {native}, so every matmul and the KV cache convert in software; decode runs 5-6x slower than the default --dtype auto (f32 activations, the weights' own quantized or f32 format; BENCHMARKS.md). Use --dtype auto unless the memory matters more than speed",
        dtype.as_str()
    );
}

/// Bytes the KV cache may take: on CUDA, `--gpu-memory-utilization` of the card minus what the
/// weights already use and a reserve for one step's activations; elsewhere `--kv-cache-memory`.
fn kv_budget_bytes(
    cfg: &LlamaConfig,
    limits: &EngineLimits,
    device: &Device,
) -> Result<u64, ManagerError> {
    if let Some((free, total)) = gpu_memory_info(device)? {
        let reserve = activation_reserve_bytes(cfg, limits, device);
        let allowed = (total as f64 * limits.gpu_memory_utilization) as u64;
        let used = total - free;
        let kv = allowed.saturating_sub(used).saturating_sub(reserve);
        tracing::info!(
            total_mib = total >> 20,
            used_after_weights_mib = used >> 20,
            activation_reserve_mib = reserve >> 20,
            kv_mib = kv >> 20,
            "GPU memory"
        );
        if kv == 0 {
            return Err(ManagerError::Limits(format!(
                "no GPU memory left for the KV cache: {} MiB of {} MiB allowed by --gpu-memory-utilization {} are used by the weights and a {} MiB activation reserve; raise it or lower --max-num-batched-tokens",
                used >> 20, allowed >> 20, limits.gpu_memory_utilization, reserve >> 20
            )));
        }
        return Ok(kv);
    }
    match limits.kv_cache_memory {
        KvMemory::Bytes(b) => Ok(b),
        KvMemory::FractionOfAvailable(f) => {
            let available = available_memory_bytes().ok_or_else(|| {
                ManagerError::Limits("cannot read available memory (/proc/meminfo); give --kv-cache-memory as a size".into())
            })?;
            Ok((available as f64 * f) as u64)
        }
    }
}

/// (free, total) bytes of a CUDA device; `None` elsewhere.
pub(crate) fn gpu_memory_info(device: &Device) -> Result<Option<(u64, u64)>, ManagerError> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => {
            let (free, total) = d
                .cuda_stream()
                .context()
                .mem_get_info()
                .map_err(|e| ManagerError::Limits(format!("reading GPU memory: {e}")))?;
            Ok(Some((free as u64, total as u64)))
        }
        _ => Ok(None),
    }
}

/// A bound on one step's activations on the GPU: the projections of
/// `--max-num-batched-tokens` tokens, the sampled logits, the attention's scratch for the
/// longest context, and 1 GiB for cuBLAS workspaces and the allocator's slack. The scratch is
/// the f32 scores of a prompt chunk over its context on the candle-op path (`tensor`), and the
/// split-K partials (512-key partitions: max, sum and a head-dim vector each) with weir's
/// kernels (`cuda`).
fn activation_reserve_bytes(cfg: &LlamaConfig, limits: &EngineLimits, device: &Device) -> u64 {
    let (seqs, tokens) = limits.batch_limits(device);
    let (seqs, tokens) = (seqs as u64, tokens as u64);
    let q_dim = (cfg.num_heads * cfg.head_dim) as u64;
    let per_token = 4 * cfg.hidden_size as u64 + 3 * cfg.intermediate_size as u64 + 3 * q_dim;
    let ctx = limits
        .max_model_len
        .unwrap_or(cfg.max_position_embeddings)
        .min(16_384) as u64;
    let projections = tokens * per_token * 4 * 2;
    let logits = seqs * cfg.vocab_size as u64 * 4 * 3;
    let heads = cfg.num_heads as u64;
    let scratch = match limits.attention_backend {
        BackendKind::Cuda => heads * tokens * ctx.div_ceil(512) * (cfg.head_dim as u64 + 2) * 4,
        _ => heads * tokens * ctx * 4 * 2,
    };
    (1 << 30) + projections + logits + scratch
}

/// Sizes the KV cache and the scheduler of `model`'s engine under `limits`.
pub fn engine_shape(
    model: &dyn Model,
    limits: &EngineLimits,
) -> Result<(KvCacheConfig, SchedulerConfig), ManagerError> {
    // an encoder keeps no KV; a decoder that embeds needs its cache like any decoder
    if model.embedding().is_some() && model.num_layers() == 0 {
        return Ok(embedding_shape(model, limits));
    }
    let (cfg, device, dtype) = (model.config(), model.device(), model.dtype());
    let groups = KvGroups::plan(
        &model.sliding_layers(),
        cfg.sliding_window,
        limits.max_model_len.unwrap_or(cfg.max_position_embeddings),
        limits.hybrid_kv_cache,
    );
    let mut kv = KvCacheConfig {
        num_layers: cfg.num_layers,
        num_kv_heads: cfg.num_kv_heads,
        head_dim: cfg.head_dim,
        block_size: limits.block_size,
        num_blocks: 0,
        dtype_size: dtype.size_in_bytes(),
        groups,
    };
    kv.num_blocks = match limits.num_kv_blocks {
        Some(n) => n,
        None => kv.blocks_for_bytes(kv_budget_bytes(cfg, limits, device)? as usize),
    };
    // blocks out of the window are freed from the groups whose layers all slide
    let window = cfg.sliding_window.filter(|_| groups.sliding > 0);
    let (max_num_seqs, max_num_batched_tokens) = limits.batch_limits(device);
    // a decoder that embeds by the mean needs every row of its prompt in one step
    let whole_prompts = model.embedding().is_some_and(|e| e.mean);
    let capacity = groups.max_tokens(
        kv.num_blocks,
        limits.block_size,
        window,
        match whole_prompts {
            // a step as long as the sequence: a window saves nothing
            true => usize::MAX / 4,
            false => max_num_batched_tokens,
        },
    );
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
        max_num_seqs,
        max_num_batched_tokens: if whole_prompts {
            max_num_batched_tokens.max(max_model_len)
        } else {
            max_num_batched_tokens
        },
        block_size: limits.block_size,
        num_blocks: kv.num_blocks,
        max_model_len,
        enable_prefix_caching: limits.enable_prefix_caching && !whole_prompts,
        policy: limits.scheduling_policy,
        sliding_window: window,
        kv_groups: groups,
        whole_prompts,
        max_loras: limits.max_loras,
        speculative: limits.speculative,
    };
    Ok((kv, sched))
}

/// An embedding model's engine: no KV cache (its blocks only count tokens, enough for every
/// sequence at full length), each prompt computed whole in one step (a step's budget holds
/// the longest), nothing shared between prompts.
fn embedding_shape(model: &dyn Model, limits: &EngineLimits) -> (KvCacheConfig, SchedulerConfig) {
    let max_model_len = limits
        .max_model_len
        .unwrap_or(usize::MAX)
        .min(model.max_context_len());
    let (max_num_seqs, budget) = limits.batch_limits(model.device());
    let blocks_per_seq = max_model_len.div_ceil(limits.block_size);
    let kv = KvCacheConfig {
        num_layers: 0,
        num_kv_heads: model.attention_shape().num_kv_heads,
        head_dim: model.attention_shape().head_dim,
        block_size: limits.block_size,
        num_blocks: max_num_seqs * blocks_per_seq,
        dtype_size: model.dtype().size_in_bytes(),
        groups: KvGroups::uniform(0, false),
    };
    let sched = SchedulerConfig {
        max_num_seqs,
        max_num_batched_tokens: budget.max(max_model_len),
        block_size: limits.block_size,
        num_blocks: kv.num_blocks,
        max_model_len,
        enable_prefix_caching: false,
        policy: limits.scheduling_policy,
        sliding_window: None,
        kv_groups: KvGroups::uniform(0, false),
        whole_prompts: true,
        max_loras: None,
        speculative: None,
    };
    (kv, sched)
}

/// Reads `local` with the adapters of `loras` in their slots (`LoraId` i is `loras[i]`; an
/// empty slot stays empty).
pub fn read_model(
    local: &LocalModel,
    limits: &EngineLimits,
    loras: &[Option<crate::store::ModelSpec>],
) -> Result<(Arc<dyn Model>, Arc<TextCodec>), ManagerError> {
    let (model, codec) = load_weights(local, limits)?;
    for (i, l) in loras.iter().enumerate() {
        if let Some(l) = l {
            attach_lora(model.as_ref(), i as u32, l, limits.max_lora_rank)?;
        }
    }
    Ok((Arc::from(model), Arc::new(codec)))
}

/// Reads the adapter `spec` (a local PEFT folder or GGUF LoRA file) for `model` and puts it in
/// slot `index`; one of a rank above `max_rank` is refused.
pub fn attach_lora(
    model: &dyn Model,
    index: u32,
    spec: &crate::store::ModelSpec,
    max_rank: Option<usize>,
) -> Result<(), ManagerError> {
    let adapter = read_lora(model, spec, max_rank)?;
    if !model.set_lora(index, Some(adapter)) {
        return Err(ManagerError::Limits(NO_ADAPTERS.into()));
    }
    Ok(())
}

/// Why a model refuses adapters (`Model::serves_loras`).
pub(super) const NO_ADAPTERS: &str = "this model does not serve LoRA adapters (Llama-family models without fused projections or experts do)";

/// Reads the adapter `spec` (a local PEFT folder or GGUF LoRA file) for `model`, without
/// putting it in; one of a rank above `max_rank`, or for a model that serves none
/// (`Model::serves_loras`), is refused, so `set_lora` takes any adapter this returns.
pub fn read_lora(
    model: &dyn Model,
    spec: &crate::store::ModelSpec,
    max_rank: Option<usize>,
) -> Result<crate::models::lora::LoraAdapter, ManagerError> {
    use crate::models::lora::{LoraAdapter, LoraShape};
    if !model.serves_loras() {
        return Err(ManagerError::Limits(NO_ADAPTERS.into()));
    }
    let shape = LoraShape::of(model.config());
    let dir = std::path::Path::new(&spec.source);
    let adapter = LoraAdapter::load(&spec.id, dir, &shape, model.device(), model.dtype())
        .map_err(|e| ManagerError::Limits(format!("LoRA adapter {}: {e}", spec.id)))?;
    if let Some(max) = max_rank.filter(|&m| adapter.config.rank > m) {
        return Err(ManagerError::Limits(format!(
            "LoRA adapter {}: rank {} is above --max-lora-rank {max}",
            spec.id, adapter.config.rank
        )));
    }
    Ok(adapter)
}

/// Loads `local` and starts its engine thread (publishing KV events to `kv_events`, if any).
pub fn load_model(
    id: &str,
    local: &LocalModel,
    limits: &EngineLimits,
    metrics: &Metrics,
    kv_events: Option<KvEventSink>,
) -> Result<ModelHandle, ManagerError> {
    let started = std::time::Instant::now();
    let (model, codec) = load_weights(local, limits)?;
    tracing::info!(
        model = id,
        load_s = started.elapsed().as_secs_f32(),
        "weights read"
    );
    start_model(
        id,
        Arc::from(model),
        Arc::new(codec),
        limits,
        metrics,
        kv_events,
    )
}

/// Starts an engine thread over `model` (read from disk, or back from the host tier) with a
/// new KV cache.
pub fn start_model(
    id: &str,
    model: Arc<dyn Model>,
    codec: Arc<TextCodec>,
    limits: &EngineLimits,
    metrics: &Metrics,
    kv_events: Option<KvEventSink>,
) -> Result<ModelHandle, ManagerError> {
    let (kv, sched) = engine_shape(model.as_ref(), limits)?;
    let runner = ModelRunner::new(
        Box::new(model.clone()),
        kv,
        limits.attention_backend,
        limits.cuda_graphs,
    )?;
    // The weights (made or copied here) and the KV pool are complete before the engine thread,
    // whose GPU stream is its own, reads them (`DeviceSpec::open`: no event tracking).
    model.device().synchronize()?;
    tracing::info!(
        model = id,
        attention = runner.backend_kind().name(),
        merged_projections = model.projections_merged(),
        kv_blocks = kv.num_blocks,
        kv_groups = kv.groups.num_groups(),
        kv_mib = (kv.num_blocks * kv.bytes_per_block()) >> 20,
        max_model_len = sched.max_model_len,
        full_length_seqs = kv.num_blocks / sched.blocks_for(sched.max_model_len).max(1),
        "model loaded"
    );
    let core = EngineCore::new(Scheduler::new(sched), runner);
    let queue = QueueLimits {
        max_requests: limits.max_queued_requests,
        max_prompt_tokens: limits.max_queued_prompt_tokens,
    };
    let (engine, join) = spawn_engine(id, core, metrics.engine(id), queue, kv_events)?;
    Ok(ModelHandle::new(id.to_string(), engine, model, codec, join))
}

/// Bytes of a model's weight files on disk (0 for dummy weights).
pub(crate) fn weight_file_bytes(local: &LocalModel) -> u64 {
    let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
    match local {
        LocalModel::Gguf(p) => size(p),
        LocalModel::HfDir { safetensors, .. } => safetensors.iter().map(|p| size(p)).sum(),
        LocalModel::ConfigOnly { .. } => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attention_scratch_reserve_follows_the_backend() {
        let root = env!("CARGO_MANIFEST_DIR");
        let (_, json) = read_hf_config(std::path::Path::new(&format!(
            "{root}/benches/shapes/llama-3.1-8b.json"
        )))
        .unwrap();
        let cfg = LlamaConfig::from_hf(&json).unwrap();
        let limits = |backend: &str| EngineLimits {
            max_num_seqs: Some(256),
            max_num_batched_tokens: Some(8192),
            max_model_len: Some(16384),
            attention_backend: backend.parse().unwrap(),
            ..crate::testing::test_limits(0, 16)
        };
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        let tensor = activation_reserve_bytes(&cfg, &limits("tensor"), &Device::Cpu);
        let cuda = activation_reserve_bytes(&cfg, &limits("cuda"), &Device::Cpu);
        // scores: 32 heads x 8192 tokens x 16384 keys x 8 bytes = 32 GiB; partials: 32 x 8192
        // x 32 partitions x 130 x 4 bytes = 4.06 GiB
        assert!(
            (gib(tensor - cuda) - (32.0 - 4.0625)).abs() < 1e-6,
            "{tensor} {cuda}"
        );
        assert!(
            gib(cuda) < gib(tensor) / 3.0,
            "{} {}",
            gib(cuda),
            gib(tensor)
        );
    }
}
