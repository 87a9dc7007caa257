//! LoRA fixtures: random PEFT adapters for the tiny Llama, the tiny Llama with one merged into
//! its dense weights (the reference), and engines that serve adapters.

use super::{open_source, tiny_llama_weights, write_tiny_llama_weights};
use crate::engine::core::EngineCore;
use crate::manager::limits::EngineLimits;
use crate::manager::loader::{engine_shape, load_weights};
use crate::models::lora::{LoraAdapter, LoraConfig, LoraShape, Target};
use crate::runner::ModelRunner;
use crate::scheduler::Scheduler;
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
