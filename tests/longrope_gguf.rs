//! Phi-3 with LongRoPE from a GGUF file (llama.cpp's form: `rope_factors_short` /
//! `rope_factors_long` tensors, `phi3.rope.scaling.original_context_length`, fused `attn_qkv`
//! and `ffn_up`) answers as the same weights from a Hugging Face folder, whose LongRoPE
//! tests/hf_reference.rs checks against transformers; a prompt that crosses the original
//! context (8 tokens here) uses both factor sets.

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use std::collections::HashMap;
use weir::kv::KvCacheConfig;
use weir::models::attention::cpu::CpuBackend;
use weir::models::attention::Attention;
use weir::models::batch::{ForwardBatch, SeqInput};
use weir::models::linear::WeightFormat;
use weir::models::weights::{GgufWeights, VarBuilderWeights};
use weir::models::Model;
use weir::testing::{tiny_llama_config_json, tiny_llama_weights, TINY_VOCAB};

const SHORT: [f32; 8] = [1.0, 1.1, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0];
const LONG: [f32; 8] = [1.0, 2.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0];

/// The tiny model's weights with q/k/v and gate/up fused, as Phi-3 stores them.
fn phi3_weights() -> HashMap<String, Tensor> {
    let mut w = tiny_llama_weights(8);
    for l in 0..2 {
        let p = |m: &str| format!("model.layers.{l}.{m}.weight");
        let mut take = |m: &str| w.remove(&p(m)).unwrap();
        let qkv = Tensor::cat(
            &[
                take("self_attn.q_proj"),
                take("self_attn.k_proj"),
                take("self_attn.v_proj"),
            ],
            0,
        );
        let gate_up = Tensor::cat(&[take("mlp.gate_proj"), take("mlp.up_proj")], 0);
        w.insert(p("self_attn.qkv_proj"), qkv.unwrap());
        w.insert(p("mlp.gate_up_proj"), gate_up.unwrap());
    }
    w
}

fn folder_model() -> Box<dyn Model> {
    let mut json = tiny_llama_config_json();
    json["model_type"] = "phi3".into();
    json["original_max_position_embeddings"] = 8.into();
    json["rope_scaling"] =
        serde_json::json!({"rope_type": "longrope", "short_factor": SHORT, "long_factor": LONG});
    let vb = VarBuilder::from_tensors(phi3_weights(), DType::F32, &Device::Cpu);
    let mut w = VarBuilderWeights::new(vb);
    (weir::models::llama::FAMILY.load)(&mut w, Some(&json)).unwrap()
}

/// The same weights as a phi3 GGUF (f32), with LongRoPE's factor tensors when `longrope`.
fn gguf_model(dir: &std::path::Path, longrope: bool) -> Box<dyn Model> {
    let f32q = |t: &Tensor| QTensor::quantize(t, GgmlDType::F32).unwrap();
    let mut tensors: Vec<(String, QTensor)> = phi3_weights()
        .iter()
        .map(|(k, t)| {
            let name = weir::models::weights::gguf_name(k.trim_end_matches(".weight"));
            (format!("{name}.weight"), f32q(t))
        })
        .collect();
    if longrope {
        for (name, f) in [("rope_factors_short", SHORT), ("rope_factors_long", LONG)] {
            let t = Tensor::new(&f, &Device::Cpu).unwrap();
            tensors.push((format!("{name}.weight"), f32q(&t)));
        }
    }
    use gguf_file::Value as V;
    let meta: Vec<(&str, V)> = vec![
        ("general.architecture", V::String("phi3".into())),
        ("phi3.embedding_length", V::U32(64)),
        ("phi3.feed_forward_length", V::U32(128)),
        ("phi3.block_count", V::U32(2)),
        ("phi3.attention.head_count", V::U32(4)),
        ("phi3.attention.head_count_kv", V::U32(2)),
        ("phi3.attention.layer_norm_rms_epsilon", V::F32(1e-5)),
        ("phi3.rope.dimension_count", V::U32(16)),
        ("phi3.rope.freq_base", V::F32(10000.0)),
        ("phi3.context_length", V::U32(512)),
        ("phi3.rope.scaling.original_context_length", V::U32(8)),
    ];
    let path = dir.join(format!("phi3-{longrope}.gguf"));
    let mut f = std::fs::File::create(&path).unwrap();
    let meta_refs: Vec<(&str, &V)> = meta.iter().map(|(k, v)| (*k, v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    gguf_file::write(&mut f, &meta_refs, &tensor_refs).unwrap();
    let mut src = GgufWeights::open(&path, &Device::Cpu, WeightFormat::Quantized).unwrap();
    (weir::models::llama::FAMILY.load)(&mut src, None).unwrap()
}

/// The last-position logits of a 20-token prompt.
fn logits(model: &dyn Model) -> Vec<f32> {
    let shape = model.attention_shape();
    let cfg = KvCacheConfig {
        num_layers: 2,
        num_kv_heads: shape.num_kv_heads,
        head_dim: shape.head_dim,
        block_size: 4,
        num_blocks: 8,
        dtype_size: 4,
    };
    let mut kv = Attention::new(Box::new(CpuBackend::new(shape)), cfg).unwrap();
    let prompt: Vec<u32> = (0..20u32)
        .map(|i| (i * 37 + 5) % TINY_VOCAB as u32)
        .collect();
    let table: Vec<u32> = (0..8).collect();
    let b = ForwardBatch::build(
        &[SeqInput {
            token_ids: &prompt,
            start: 0,
            block_table: &table,
            sample: true,
        }],
        4,
    );
    let out = model.forward(&b, &mut kv).unwrap();
    out.flatten_all().unwrap().to_vec1().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn gguf_longrope_answers_as_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let folder = logits(folder_model().as_ref());
    let gguf = logits(gguf_model(dir.path(), true).as_ref());
    assert!(
        max_diff(&folder, &gguf) < 1e-4,
        "{}",
        max_diff(&folder, &gguf)
    );
    // without its factors the same file rotates differently: the factors are read
    let plain = logits(gguf_model(dir.path(), false).as_ref());
    assert!(
        max_diff(&folder, &plain) > 1e-2,
        "{}",
        max_diff(&folder, &plain)
    );
}
