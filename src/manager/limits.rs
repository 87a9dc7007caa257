//! `EngineLimits`: what every model's engine is sized and bounded by (batch limits, KV memory,
//! device, dtype, weight format), built by `config` from the command line.

use crate::models::attention::BackendKind;
use crate::models::device::{DTypeSpec, DeviceSpec};
use crate::models::weights::LoadFormat;
use crate::models::WeightFormat;
use crate::step::SchedulingPolicy;
use crate::text::GenerationConfigMode;

/// How much memory the KV cache of a model may take.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KvMemory {
    Bytes(u64),
    /// Share (0, 1] of the memory available after the weights are loaded.
    FractionOfAvailable(f64),
}

/// What a model is served for (vLLM's `--task`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ModelTask {
    /// Embeddings for an encoder (BERT) or a folder whose sentence-transformers `modules.json`
    /// has a Pooling module; text generation otherwise.
    #[default]
    Auto,
    Generate,
    /// Embeddings (`/v1/embeddings`): a decoder pools its last token's final hidden state.
    Embed,
}

impl std::str::FromStr for ModelTask {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "generate" => Ok(Self::Generate),
            "embed" | "embedding" => Ok(Self::Embed),
            _ => Err(format!("expected auto, generate or embed, got {s:?}")),
        }
    }
}

/// Validated engine limits shared by every model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EngineLimits {
    /// `None`: the device's default (`EngineLimits::batch_limits`).
    pub max_num_seqs: Option<usize>,
    /// `None`: the device's default.
    pub max_num_batched_tokens: Option<usize>,
    pub block_size: usize,
    pub kv_cache_memory: KvMemory,
    pub num_kv_blocks: Option<usize>,
    pub max_model_len: Option<usize>,
    pub weight_format: WeightFormat,
    pub enable_prefix_caching: bool,
    /// Sliding-window layers of a hybrid model (Gemma 2/3) keep only their window's blocks
    /// (`kv::KvGroups`); `--disable-hybrid-kv-cache-manager` turns it off.
    pub hybrid_kv_cache: bool,
    pub scheduling_policy: SchedulingPolicy,
    pub device: DeviceSpec,
    pub dtype: DTypeSpec,
    pub gpu_memory_utilization: f64,
    pub load_format: LoadFormat,
    /// `--generation-config`.
    pub generation_config: GenerationConfigMode,
    /// `--reasoning-parser`: chat answers split `<think>...</think>` into `reasoning_content`.
    pub reasoning_parser: Option<crate::text::ReasoningParser>,
    /// `--task`.
    pub task: ModelTask,
    pub attention_backend: BackendKind,
    /// weir's fused CUDA kernels (`--no-fused-kernels` turns them off).
    pub fused_kernels: bool,
    /// `--cuda-graphs`.
    pub cuda_graphs: bool,
    pub max_queued_requests: usize,
    pub max_queued_prompt_tokens: usize,
    /// `--max-loras`: adapters among a model's running requests (None: no limit).
    pub max_loras: Option<usize>,
    /// `--max-lora-rank`: adapters of a larger rank are refused (None: no limit).
    pub max_lora_rank: Option<usize>,
    /// `--max-cpu-loras`: adapters a model keeps loaded (None: all of them).
    pub max_cpu_loras: Option<usize>,
    /// `--speculative-config`: speculative decoding by prompt lookup.
    pub speculative: Option<crate::scheduler::spec::SpecConfig>,
}

/// Defaults of `--max-num-seqs` and `--max-num-batched-tokens` on the CPU: a step of 512
/// tokens takes about 1.5 s on 2 cores.
pub const CPU_BATCH_LIMITS: (usize, usize) = (64, 512);
/// The same on a GPU: enough sequences for a saturating decode batch and a token budget that
/// keeps prompt chunks large (vLLM's V1 defaults on an H100 are 1024 and 8192).
pub const GPU_BATCH_LIMITS: (usize, usize) = (512, 8192);

impl EngineLimits {
    /// (`max_num_seqs`, `max_num_batched_tokens`) on `device`: what was given, else the
    /// device's default, kept consistent (a step's budget holds one token of every sequence).
    pub fn batch_limits(&self, device: &candle_core::Device) -> (usize, usize) {
        let (seqs, tokens) = if device.is_cpu() {
            CPU_BATCH_LIMITS
        } else {
            GPU_BATCH_LIMITS
        };
        match (self.max_num_seqs, self.max_num_batched_tokens) {
            (Some(s), Some(t)) => (s, t),
            (Some(s), None) => (s, tokens.max(s)),
            (None, Some(t)) => (seqs.min(t), t),
            (None, None) => (seqs, tokens),
        }
    }
}
