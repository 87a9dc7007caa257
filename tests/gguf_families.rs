//! GGUF files of the families llama.cpp's converter cannot write for the tiny test models (it
//! needs their own SentencePiece tokenizers), written here in llama.cpp's layout, answer as the
//! same weights from a Hugging Face folder (which tests/hf_reference.rs checks against
//! transformers):
//! - Phi-3 with LongRoPE (`rope_factors_short` / `rope_factors_long` tensors,
//!   `phi3.rope.scaling.original_context_length`, fused `attn_qkv` and `ffn_up`); the 20-token
//!   prompt crosses the original context (8) and uses both factor sets;
//! - Qwen2 (q/k/v biases);
//! - Gemma 2 (`1 + w` norms stored as such, its own post-attention norm name, a window on every
//!   other layer, both soft-caps in `gemma2.*` metadata).

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use std::collections::HashMap;
use weir::models::linear::WeightFormat;
use weir::models::weights::{GgufWeights, VarBuilderWeights};
use weir::models::Model;
use weir::testing::{
    attention_for, single_seq_batch, tiny_llama_config_json, tiny_llama_weights, TINY_VOCAB,
};

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

use gguf_file::Value as V;

/// `weights` (Hugging Face names) as an f32 GGUF file of `family` with `arch`'s `meta` (keys
/// without the `{arch}.` prefix), loaded back.
fn gguf_model(
    path: &std::path::Path,
    family: &weir::models::Family,
    arch: &str,
    weights: &HashMap<String, Tensor>,
    meta: Vec<(&str, V)>,
) -> Box<dyn Model> {
    let f32q = |t: &Tensor| QTensor::quantize(t, GgmlDType::F32).unwrap();
    let tensors: Vec<(String, QTensor)> = weights
        .iter()
        .map(|(k, t)| {
            let (module, suffix) = k.rsplit_once('.').unwrap();
            let name = weir::models::weights::gguf_name_with(module, family.gguf_names);
            (format!("{name}.{suffix}"), f32q(t))
        })
        .collect();
    let keys: Vec<String> = meta.iter().map(|(k, _)| format!("{arch}.{k}")).collect();
    let arch_value = V::String(arch.into());
    let mut meta_refs: Vec<(&str, &V)> = vec![("general.architecture", &arch_value)];
    meta_refs.extend(keys.iter().zip(&meta).map(|(k, (_, v))| (k.as_str(), v)));
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    let mut f = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut f, &meta_refs, &tensor_refs).unwrap();
    let mut src = GgufWeights::open(path, &Device::Cpu, WeightFormat::Quantized).unwrap();
    src.set_layer_names(family.gguf_names);
    (family.load)(&mut src, None).unwrap()
}

/// The tiny shape's GGUF metadata (2 layers, 4 heads of 16, 2 KV heads) plus `more`.
fn tiny_meta(more: Vec<(&'static str, V)>) -> Vec<(&'static str, V)> {
    let mut m = vec![
        ("embedding_length", V::U32(64)),
        ("feed_forward_length", V::U32(128)),
        ("block_count", V::U32(2)),
        ("attention.head_count", V::U32(4)),
        ("attention.head_count_kv", V::U32(2)),
        ("attention.key_length", V::U32(16)),
        ("rope.dimension_count", V::U32(16)),
        ("rope.freq_base", V::F32(10000.0)),
        ("context_length", V::U32(512)),
        ("attention.layer_norm_rms_epsilon", V::F32(1e-5)),
    ];
    m.extend(more);
    m
}

/// The Phi-3 weights as a GGUF file, with LongRoPE's factor tensors when `longrope`.
fn phi3_gguf(dir: &std::path::Path, longrope: bool) -> Box<dyn Model> {
    let mut w = phi3_weights();
    if longrope {
        for (name, f) in [("rope_factors_short", SHORT), ("rope_factors_long", LONG)] {
            w.insert(
                format!("{name}.weight"),
                Tensor::new(&f, &Device::Cpu).unwrap(),
            );
        }
    }
    let meta = tiny_meta(vec![("rope.scaling.original_context_length", V::U32(8))]);
    let path = dir.join(format!("phi3-{longrope}.gguf"));
    gguf_model(&path, &weir::models::llama::FAMILY, "phi3", &w, meta)
}

/// The last-position logits of a 20-token prompt.
fn logits(model: &dyn Model) -> Vec<f32> {
    let mut kv = attention_for(model, 4, 8);
    let prompt: Vec<u32> = (0..20u32)
        .map(|i| (i * 37 + 5) % TINY_VOCAB as u32)
        .collect();
    let table: Vec<u32> = (0..8).collect();
    let out = model
        .forward(&single_seq_batch(&prompt, 0, &table, 4), &mut kv)
        .unwrap();
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
    let gguf = logits(phi3_gguf(dir.path(), true).as_ref());
    assert!(
        max_diff(&folder, &gguf) < 1e-4,
        "{}",
        max_diff(&folder, &gguf)
    );
    // without its factors the same file rotates differently: the factors are read
    let plain = logits(phi3_gguf(dir.path(), false).as_ref());
    assert!(
        max_diff(&folder, &plain) > 1e-2,
        "{}",
        max_diff(&folder, &plain)
    );
}

/// Random biases for q/k/v of both layers (Qwen2).
fn with_qkv_biases(mut w: HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(11);
    for l in 0..2 {
        for (m, n) in [("q_proj", 64), ("k_proj", 32), ("v_proj", 32)] {
            let b = weir::testing::uniform(&mut rng, &[n], 0.5, 0.0);
            w.insert(format!("model.layers.{l}.self_attn.{m}.bias"), b);
        }
    }
    w
}

#[test]
fn gguf_qwen2_answers_as_the_folder() {
    let weights = with_qkv_biases(tiny_llama_weights(9));
    let mut json = tiny_llama_config_json();
    json["model_type"] = "qwen2".into();
    let vb = VarBuilder::from_tensors(weights.clone(), DType::F32, &Device::Cpu);
    let folder =
        (weir::models::llama::FAMILY.load)(&mut VarBuilderWeights::new(vb), Some(&json)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qwen2.gguf");
    let gguf = gguf_model(
        &path,
        &weir::models::llama::FAMILY,
        "qwen2",
        &weights,
        tiny_meta(vec![]),
    );
    let (a, b) = (logits(folder.as_ref()), logits(gguf.as_ref()));
    assert!(max_diff(&a, &b) < 1e-4, "{}", max_diff(&a, &b));
}

#[test]
fn gguf_gemma2_answers_as_the_folder() {
    // Gemma 2's extra norms on the tiny weights; a folder stores w, a GGUF file 1 + w
    let mut weights = tiny_llama_weights(10);
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(12);
    for l in 0..2 {
        for m in ["pre_feedforward_layernorm", "post_feedforward_layernorm"] {
            let t = weir::testing::uniform(&mut rng, &[64], 0.2, 0.0);
            weights.insert(format!("model.layers.{l}.{m}.weight"), t);
        }
    }
    weights.remove("lm_head.weight"); // tied, as Gemma's are
    let mut json = tiny_llama_config_json();
    for (k, v) in [
        ("model_type", serde_json::json!("gemma2")),
        ("head_dim", serde_json::json!(16)),
        ("sliding_window", serde_json::json!(4)),
        (
            "layer_types",
            serde_json::json!(["sliding_attention", "full_attention"]),
        ),
        ("query_pre_attn_scalar", serde_json::json!(16)),
        ("attn_logit_softcapping", serde_json::json!(5.0)),
        ("final_logit_softcapping", serde_json::json!(3.0)),
        ("tie_word_embeddings", serde_json::json!(true)),
        ("hidden_activation", serde_json::json!("gelu_pytorch_tanh")),
    ] {
        json[k] = v;
    }
    let vb = VarBuilder::from_tensors(weights.clone(), DType::F32, &Device::Cpu);
    let folder =
        (weir::models::gemma::FAMILY.load)(&mut VarBuilderWeights::new(vb), Some(&json)).unwrap();
    let stored: HashMap<String, Tensor> = weights
        .into_iter()
        .map(|(k, t)| match k.contains("norm") {
            true => (k, t.affine(1.0, 1.0).unwrap()),
            false => (k, t),
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let meta = tiny_meta(vec![
        ("attention.sliding_window", V::U32(4)),
        ("attn_logit_softcapping", V::F32(5.0)),
        ("final_logit_softcapping", V::F32(3.0)),
    ]);
    let path = dir.path().join("gemma2.gguf");
    let gguf = gguf_model(&path, &weir::models::gemma::FAMILY, "gemma2", &stored, meta);
    let (a, b) = (logits(folder.as_ref()), logits(gguf.as_ref()));
    assert!(max_diff(&a, &b) < 1e-4, "{}", max_diff(&a, &b));
}

/// The embedding rows a GGUF model dequantizes per step (`layers::Embedding`, its table kept in
/// GGML blocks) are the very numbers of the whole table dequantized: SmolLM2 (Q4_1 file) and
/// Gemma 3 270M (Q4_K_M file, a 262k-row table).
#[test]
fn quantized_embedding_rows_equal_the_table_dequantized() {
    use weir::models::layers::Embedding;
    use weir::models::weights::WeightSource;
    for path in [
        weir::testing::default_model_path(),
        weir::testing::gemma3_model_path(),
    ] {
        let mut w = GgufWeights::open(&path, &Device::Cpu, WeightFormat::Quantized).unwrap();
        let info = &w.content().tensor_infos["token_embd.weight"];
        let (vocab, hidden) = info.shape.dims2().unwrap();
        let e = Embedding::load(&mut w, "model.embed_tokens", vocab, hidden).unwrap();
        assert!(matches!(e, Embedding::Quantized(_)), "{}", path.display());
        let dense = w.dense("model.embed_tokens", &[vocab, hidden]).unwrap();
        let ids: Vec<u32> = (0..64u32).map(|i| (i * 7919) % vocab as u32).collect();
        let ids = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap();
        let rows: Vec<f32> = e
            .forward(&ids)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let want: Vec<f32> = dense
            .index_select(&ids, 0)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(rows, want, "{}", path.display());
        assert!(
            e.bytes() * 3 < (vocab * hidden * 4) as u64,
            "{} bytes",
            e.bytes()
        );
    }
}
