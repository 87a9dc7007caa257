//! `ServerOptions`: the HTTP side's validated options (keys, limits, timeouts, CORS, logging),
//! built by `config` from the command line.

/// Validated HTTP-side options (`Default`: the flags' defaults, no keys).
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub admin_api_key: Option<String>,
    pub max_prompts_per_request: usize,
    pub rate_limits: super::ratelimit::RateLimits,
    pub shutdown_grace: std::time::Duration,
    pub allowed_origins: Vec<String>,
    pub log_prompts: bool,
    pub api_keys: Vec<String>,
    pub metrics_api_key: Option<String>,
    pub request_timeout: Option<std::time::Duration>,
    pub max_body_bytes: usize,
    /// Where stored responses (`/v1/responses` with `store: true`) live and how many bytes.
    pub response_store: super::openai::responses::store::StoreConfig,
    /// Where uploaded files and batches live (`files/`, `batches/`); `None`: a fresh folder
    /// under the system's temporary dir.
    pub data_dir: Option<std::path::PathBuf>,
    /// Largest file `POST /v1/files` takes.
    pub max_file_bytes: usize,
    /// An engine with work and no step progress for this long makes `/ready` 503.
    pub engine_stall_timeout: std::time::Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            admin_api_key: None,
            max_prompts_per_request: 64,
            rate_limits: Default::default(),
            shutdown_grace: std::time::Duration::from_secs(30),
            allowed_origins: Vec::new(),
            log_prompts: false,
            api_keys: Vec::new(),
            metrics_api_key: None,
            request_timeout: None,
            max_body_bytes: 32 << 20,
            response_store: super::openai::responses::store::StoreConfig {
                dir: None,
                max_bytes: 256 << 20,
            },
            data_dir: None,
            max_file_bytes: 128 << 20,
            engine_stall_timeout: std::time::Duration::from_secs(300),
        }
    }
}
