//! LoRA fixtures: random PEFT adapters for the tiny Llama, the tiny Llama with one merged into
//! its dense weights (the reference), and engines that serve adapters.

use super::{greedy_request, open_source, tiny_llama_weights, write_tiny_llama_weights};
use crate::engine::core::EngineCore;
use crate::manager::limits::EngineLimits;
use crate::manager::loader::{engine_shape, load_weights};
use crate::models::lora::{LoraAdapter, LoraConfig, LoraShape, Target};
use crate::runner::ModelRunner;
use crate::scheduler::Scheduler;
use crate::step::{LoraId, Request, RequestId, TokenDelta};
use candle_core::Device;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::HashMap;
use std::path::Path;

/// The tiny Llama's projection widths.
pub const TINY_SHAPE: LoraShape = LoraShape {
    num_layers: 2,
    hidden: 64,
    q_dim: 64,
    kv_dim: 32,
    intermediate: 128,
    q_heads: 4,
    kv_heads: 2,
    rope_interleaved: false,
    llama_arch: true,
};

/// Writes a PEFT adapter for the tiny Llama under `dir`: rank `rank`, `targets`, A and B both
/// random and non-zero (PEFT starts B at zero, which would make any adapter the base model).
pub fn write_peft_adapter(
    dir: &Path,
    seed: u64,
    rank: usize,
    alpha: f64,
    rslora: bool,
    targets: &[Target],
) {
    std::fs::create_dir_all(dir).expect("create adapter dir");
    let modules: Vec<&str> = targets.iter().map(|t| t.module()).collect();
    let config = serde_json::json!({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": alpha,
        "use_rslora": rslora, "target_modules": modules, "bias": "none", "lora_dropout": 0.0,
        "fan_in_fan_out": false, "modules_to_save": null, "use_dora": false,
    });
    std::fs::write(dir.join("adapter_config.json"), config.to_string()).expect("write config");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tensors = HashMap::new();
    for l in 0..TINY_SHAPE.num_layers {
        for &t in targets {
            let (in_dim, out_dim) = TINY_SHAPE.dims(t);
            let name = |m: &str| t.tensor_name(l, m);
            tensors.insert(
                name("lora_A"),
                super::uniform(&mut rng, &[rank, in_dim], 0.3, 0.0),
            );
            tensors.insert(
                name("lora_B"),
                super::uniform(&mut rng, &[out_dim, rank], 0.3, 0.0),
            );
        }
    }
    candle_core::safetensors::save(&tensors, dir.join("adapter_model.safetensors"))
        .expect("save adapter");
}

/// Writes the tiny Llama of `seed` with `adapter` merged into its weights (W + scale · B A, in
/// f32) under `dir`: what the adapter's outputs must equal.
pub fn write_merged_tiny_llama(dir: &Path, seed: u64, adapter: &Path) {
    let config = LoraConfig::read(adapter).expect("adapter config");
    let tensors =
        candle_core::safetensors::load(adapter.join("adapter_model.safetensors"), &Device::Cpu)
            .expect("adapter tensors");
    let mut weights = tiny_llama_weights(seed);
    for (name, a) in &tensors {
        let Some(base) = name.strip_suffix(".lora_A.weight") else {
            continue;
        };
        let b = &tensors[&format!("{base}.lora_B.weight")];
        let key = format!("{}.weight", base.trim_start_matches("base_model.model."));
        let w = weights.get_mut(&key).expect("adapted weight exists");
        let delta = (b.matmul(a).expect("B A") * config.scale()).expect("scale");
        *w = (&*w + delta).expect("merge");
    }
    write_tiny_llama_weights(dir, &weights);
}

/// An `EngineCore` over the model at `source` serving `adapters` (adapter i is `LoraId(i)`).
pub fn engine_core_with_loras(
    source: &Path,
    limits: &EngineLimits,
    adapters: &[&Path],
) -> EngineCore {
    let local = open_source(source, limits);
    let (model, _codec) = load_weights(&local, limits).expect("load model");
    let shape = LoraShape::of(model.config());
    for (i, dir) in adapters.iter().enumerate() {
        let a = LoraAdapter::load(&format!("a{i}"), dir, &shape, model.device(), model.dtype())
            .expect("load adapter");
        assert!(
            model.set_lora(i as u32, Some(a)),
            "the model serves adapters"
        );
    }
    let (kv, sched) = engine_shape(model.as_ref(), limits).expect("engine shape");
    let runner = ModelRunner::new(model, kv, limits.attention_backend, limits.cuda_graphs)
        .expect("allocate the KV cache");
    EngineCore::new(Scheduler::new(sched), runner)
}

pub fn request(id: u64, prompt: &[u32], lora: Option<u32>) -> Request {
    let mut r = greedy_request(id, prompt.to_vec(), 10);
    r.lora = lora.map(LoraId);
    r
}

/// Runs `reqs` to the end; every delta of each request.
pub fn run(core: &mut EngineCore, reqs: Vec<Request>) -> HashMap<RequestId, Vec<TokenDelta>> {
    for r in reqs {
        core.add(r).unwrap();
    }
    let mut out: HashMap<RequestId, Vec<TokenDelta>> = HashMap::new();
    while core.has_work() {
        for d in core.step().0 {
            out.entry(d.request_id).or_default().push(d);
        }
    }
    out
}

pub fn tokens(deltas: &[TokenDelta]) -> Vec<u32> {
    deltas
        .iter()
        .flat_map(|d| d.new_token_ids.clone())
        .collect()
}

/// `prompt` on `core` (request `id`, adapter `lora`), greedy: its generated tokens and the
/// teacher-forced logprobs of its prompt tokens.
pub fn prompt_logprobs(
    core: &mut EngineCore,
    id: u64,
    prompt: &[u32],
    lora: Option<u32>,
) -> (Vec<u32>, Vec<f32>) {
    let mut r = request(id, prompt, lora);
    r.sampling.prompt_logprobs = Some(1);
    let deltas = &run(core, vec![r])[&RequestId(id)];
    let lps = deltas
        .iter()
        .flat_map(|d| d.prompt_logprobs.iter().map(|l| l.logprob))
        .collect();
    (tokens(deltas), lps)
}

/// Max |a - b| over two equally long rows.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

/// tests/peft_reference.py: PEFT's prompt logprobs of `base` with `adapter` against those
/// `core` (serving `adapter` as adapter 0) gives; what the script printed.
pub async fn check_with_peft(
    core: &mut EngineCore,
    base: &std::path::Path,
    adapter: &std::path::Path,
    prompt: &[u32],
) -> String {
    let (_, lps) = prompt_logprobs(core, 0, prompt, Some(0));
    let join = |v: Vec<String>| v.join(",");
    let ids = join(prompt.iter().map(|t| t.to_string()).collect());
    let lps = join(lps.iter().map(|l| l.to_string()).collect());
    let (base, adapter) = (base.display().to_string(), adapter.display().to_string());
    super::run_python_test("peft_reference.py", &[&base, &adapter, &ids, &lps]).await
}
