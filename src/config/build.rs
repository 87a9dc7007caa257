//! `ServeArgs` validated into the types of the modules below: engine limits, manager limits,
//! server options, model declarations and stores.

use super::parse::parse_models_config;
use super::{Preload, ServeArgs};
use crate::api::ServerOptions;
use crate::manager::limits::EngineLimits;
use clap::Parser;
use std::path::PathBuf;

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
        if self.max_loras == Some(0) || self.max_lora_rank == Some(0) {
            return Err("--max-loras and --max-lora-rank must be positive".into());
        }
        if let Some(cpu) = self.max_cpu_loras {
            if cpu < self.max_loras.unwrap_or(1) {
                return Err(format!(
                    "--max-cpu-loras ({cpu}) must be at least --max-loras ({})",
                    self.max_loras.unwrap_or(1)
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
            hybrid_kv_cache: !self.disable_hybrid_kv_cache_manager,
            scheduling_policy: self.scheduling_policy,
            device: self.device,
            dtype: self.dtype,
            gpu_memory_utilization: self.gpu_memory_utilization,
            load_format: self.load_format,
            generation_config: self.generation_config,
            reasoning_parser: self.reasoning_parser,
            task: self.task,
            attention_backend: self.attention_backend,
            fused_kernels: !self.no_fused_kernels,
            cuda_graphs: self.cuda_graphs,
            max_queued_requests: self.max_queued_requests,
            max_queued_prompt_tokens: self.max_queued_prompt_tokens,
            max_loras: self.max_loras,
            max_lora_rank: self.max_lora_rank,
            max_cpu_loras: self.max_cpu_loras,
            speculative: self.speculative_config,
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
            response_store: crate::api::openai::responses::store::StoreConfig {
                dir: Some(self.cache_dir().join("responses")),
                max_bytes: self.response_store_bytes,
            },
            data_dir: Some(self.cache_dir()),
            max_file_bytes: self.max_file_bytes as usize,
            engine_stall_timeout: std::time::Duration::from_secs_f64(
                self.engine_stall_timeout.max(0.001),
            ),
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

    /// Hands `--lora-modules` to the one declared model (an error with several: each model's
    /// adapters are then declared in `--models-config`).
    pub fn attach_loras(&self, decls: &mut [crate::manager::ModelDecl]) -> Result<(), String> {
        if self.lora_modules.is_empty() {
            return Ok(());
        }
        match decls {
            [one] => {
                one.loras.extend(self.lora_modules.iter().cloned());
                Ok(())
            }
            _ => Err("--lora-modules needs exactly one declared model to attach to".into()),
        }
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
            pypi: crate::store::pypi::PypiConfig {
                cache_dir: self.cache_dir(),
                index_url: self.pip_index_url.clone(),
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

    /// `--kv-events-config` / `--kv-events-endpoint`: `None` when KV events are off.
    pub fn kv_events(&self) -> Result<Option<crate::kv_events::KvEventsConfig>, String> {
        if let Some(endpoint) = &self.kv_events_endpoint {
            return Ok(Some(crate::kv_events::KvEventsConfig {
                endpoint: endpoint.clone(),
                ..Default::default()
            }));
        }
        match &self.kv_events_config {
            Some(json) => super::parse::parse_kv_events_config(json),
            None => Ok(None),
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
