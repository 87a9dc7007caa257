//! A tiny random Qwen3-MoE on the tiny Llama's shapes and tokenizer: 8 experts of width 32, 2
//! per token (renormalized), per-head q/k norms; `dense_last` makes its last layer a dense MLP
//! (`mlp_only_layers`).

use super::{tiny_llama_config_json, tiny_llama_weights, uniform, write_tiny_llama};
use candle_core::Tensor;
use rand::{rngs::StdRng, SeedableRng};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const TINY_EXPERTS: usize = 8;
/// Each expert's hidden width.
pub const TINY_EXPERT_WIDTH: usize = 32;

/// The tiny MoE's config.json (`dense_last`: layer 1 is a dense MLP).
pub fn tiny_moe_config_json(dense_last: bool) -> serde_json::Value {
    let mut c = tiny_llama_config_json();
    for (k, v) in [
        ("model_type", serde_json::json!("qwen3_moe")),
        ("head_dim", serde_json::json!(16)),
        (
            "moe_intermediate_size",
            serde_json::json!(TINY_EXPERT_WIDTH),
        ),
        ("num_experts", serde_json::json!(TINY_EXPERTS)),
        ("num_experts_per_tok", serde_json::json!(2)),
        ("norm_topk_prob", serde_json::json!(true)),
        ("rms_norm_eps", serde_json::json!(1e-6)),
        (
            "mlp_only_layers",
            serde_json::json!(if dense_last { vec![1] } else { vec![] }),
        ),
    ] {
        c[k] = v;
    }
    c
}

/// Random weights of the tiny MoE by Hugging Face name.
pub fn tiny_moe_weights(seed: u64, dense_last: bool) -> HashMap<String, Tensor> {
    let mut w = tiny_llama_weights(seed);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6d6f65);
    let mut t = |shape: &[usize], scale: f32, offset: f32| uniform(&mut rng, shape, scale, offset);
    let (h, width) = (64, TINY_EXPERT_WIDTH);
    for l in 0..2 {
        let p = |m: &str| format!("model.layers.{l}.{m}.weight");
        w.insert(p("self_attn.q_norm"), t(&[16], 0.1, 1.0));
        w.insert(p("self_attn.k_norm"), t(&[16], 0.1, 1.0));
        if dense_last && l == 1 {
            continue;
        }
        for m in ["gate_proj", "up_proj", "down_proj"] {
            w.remove(&p(&format!("mlp.{m}")));
        }
        w.insert(p("mlp.gate"), t(&[TINY_EXPERTS, h], 1.0, 0.0));
        for e in 0..TINY_EXPERTS {
            let p = |m: &str| format!("model.layers.{l}.mlp.experts.{e}.{m}.weight");
            w.insert(p("gate_proj"), t(&[width, h], 0.3, 0.0));
            w.insert(p("up_proj"), t(&[width, h], 0.3, 0.0));
            w.insert(p("down_proj"), t(&[h, width], 0.3, 0.0));
        }
    }
    w
}

/// Writes the tiny MoE (every layer sparse) as a Hugging Face directory under `dir`.
pub fn write_tiny_moe(dir: &Path, seed: u64) -> PathBuf {
    write_tiny_llama(dir, seed);
    let config = tiny_moe_config_json(false);
    std::fs::write(dir.join("config.json"), config.to_string()).expect("write config");
    candle_core::safetensors::save(
        &tiny_moe_weights(seed, false),
        dir.join("model.safetensors"),
    )
    .expect("save weights");
    dir.to_path_buf()
}
