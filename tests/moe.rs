//! Mixtures of experts on the CPU: a token's output does not depend on which other tokens share
//! its experts. A tiny random Qwen3-MoE (`weir::testing::moe`: 8 experts, 2 per token, with and
//! without a dense layer) and the same
//! model as a GGUF file with quantized stacked experts (llama.cpp's `ffn_*_exps` layout, split
//! into one projection per expert at load) must give bit-identical logits for a sequence alone,
//! batched with others, and prefilled in chunks. Agreement with transformers itself (Mixtral,
//! Qwen2-MoE with its shared expert, Qwen3-MoE, OLMoE, from folders and from llama.cpp's GGUF
//! conversion) is tests/hf_reference.rs's.

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use weir::models::attention::Attention;
use weir::models::linear::WeightFormat;
use weir::models::weights::{GgufWeights, VarBuilderWeights, WeightSource};
use weir::models::Model;
use weir::testing::moe::{tiny_moe_config_json, tiny_moe_weights, TINY_EXPERTS, TINY_EXPERT_WIDTH};
use weir::testing::{attention_for, packed_batch, single_seq_batch, TINY_VOCAB};

const BLOCK: usize = 4;
const LAYERS: usize = 2;
const VOCAB: usize = TINY_VOCAB;

/// The tiny model from safetensors-shaped weights (f32, weir's f32 panels).
fn folder_model(dense_last: bool) -> Box<dyn Model> {
    let json = tiny_moe_config_json(dense_last);
    let vb = VarBuilder::from_tensors(tiny_moe_weights(3, dense_last), DType::F32, &Device::Cpu);
    let mut w = VarBuilderWeights::new(vb);
    (weir::models::llama::FAMILY.load)(&mut w, Some(&json)).unwrap()
}

/// The same weights as a qwen3moe GGUF file: experts stacked per layer and projection in `q`,
/// everything else f32.
fn gguf_model(dir: &std::path::Path, q: GgmlDType) -> Box<dyn Model> {
    let w = tiny_moe_weights(3, false);
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    let f32q = |t: &Tensor| QTensor::quantize(t, GgmlDType::F32).unwrap();
    let name = |hf: &str| weir::models::weights::gguf_name(hf);
    for (k, t) in &w {
        if k.contains(".experts.") {
            continue;
        }
        tensors.push((
            format!("{}.weight", name(k.trim_end_matches(".weight"))),
            f32q(t),
        ));
    }
    for l in 0..LAYERS {
        for (proj, gguf) in [
            ("gate_proj", "ffn_gate_exps"),
            ("up_proj", "ffn_up_exps"),
            ("down_proj", "ffn_down_exps"),
        ] {
            let stack: Vec<Tensor> = (0..TINY_EXPERTS)
                .map(|e| w[&format!("model.layers.{l}.mlp.experts.{e}.{proj}.weight")].clone())
                .collect();
            let stacked = Tensor::stack(&stack, 0).unwrap();
            tensors.push((
                format!("blk.{l}.{gguf}.weight"),
                QTensor::quantize(&stacked, q).unwrap(),
            ));
        }
    }
    use gguf_file::Value as V;
    let meta: Vec<(&str, V)> = vec![
        ("general.architecture", V::String("qwen3moe".into())),
        ("qwen3moe.embedding_length", V::U32(64)),
        ("qwen3moe.feed_forward_length", V::U32(128)),
        (
            "qwen3moe.expert_feed_forward_length",
            V::U32(TINY_EXPERT_WIDTH as u32),
        ),
        ("qwen3moe.block_count", V::U32(LAYERS as u32)),
        ("qwen3moe.attention.head_count", V::U32(4)),
        ("qwen3moe.attention.head_count_kv", V::U32(2)),
        ("qwen3moe.attention.key_length", V::U32(16)),
        ("qwen3moe.attention.layer_norm_rms_epsilon", V::F32(1e-6)),
        ("qwen3moe.rope.freq_base", V::F32(10000.0)),
        ("qwen3moe.context_length", V::U32(512)),
        ("qwen3moe.expert_count", V::U32(TINY_EXPERTS as u32)),
        ("qwen3moe.expert_used_count", V::U32(2)),
    ];
    let path = dir.join(format!("moe-{q:?}.gguf"));
    let mut f = std::fs::File::create(&path).unwrap();
    let meta_refs: Vec<(&str, &V)> = meta.iter().map(|(k, v)| (*k, v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    gguf_file::write(&mut f, &meta_refs, &tensor_refs).unwrap();
    let mut src = GgufWeights::open(&path, &Device::Cpu, WeightFormat::Quantized).unwrap();
    assert!(src.gguf().is_some());
    (weir::models::llama::FAMILY.load)(&mut src, None).unwrap()
}

fn pool(model: &dyn Model) -> Attention {
    attention_for(model, BLOCK, 16)
}

fn prompt(n: usize, salt: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (i * 37 + salt) % VOCAB as u32)
        .collect()
}

fn alone(model: &dyn Model, tokens: &[u32]) -> Vec<f32> {
    let table: Vec<u32> = (0..16).collect();
    let mut kv = pool(model);
    let logits = model
        .forward(&single_seq_batch(tokens, 0, &table, BLOCK), &mut kv)
        .unwrap();
    logits.flatten_all().unwrap().to_vec1().unwrap()
}

/// Each prompt alone, all three in one batch, and the last one prefilled in three chunks: the
/// same bits.
fn assert_batch_invariant(model: &dyn Model, what: &str) {
    let prompts = [prompt(3, 5), prompt(9, 11), prompt(17, 2)];
    let each: Vec<Vec<f32>> = prompts.iter().map(|p| alone(model, p)).collect();
    let tables: [Vec<u32>; 3] = [vec![7], vec![1, 4, 10], vec![0, 2, 3, 5, 6]];
    let seqs: Vec<(&[u32], &[u32])> = prompts
        .iter()
        .zip(&tables)
        .map(|(p, t)| (p.as_slice(), t.as_slice()))
        .collect();
    let mut kv = pool(model);
    let batched = model.forward(&packed_batch(&seqs, BLOCK), &mut kv).unwrap();
    for (i, want) in each.iter().enumerate() {
        let row: Vec<f32> = batched.get(i).unwrap().to_vec1().unwrap();
        assert_eq!(
            &row, want,
            "{what}: sequence {i} batched differs from alone"
        );
    }
    let p = &prompts[2];
    let table = &tables[2];
    let mut kv = pool(model);
    let mut last = None;
    for (start, end) in [(0, 5), (5, 12), (12, p.len())] {
        let b = single_seq_batch(&p[start..end], start, table, BLOCK);
        last = Some(model.forward(&b, &mut kv).unwrap());
    }
    let chunked: Vec<f32> = last.unwrap().flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(
        chunked, each[2],
        "{what}: chunked prefill differs from whole"
    );
}

#[test]
fn experts_answer_the_same_alone_batched_and_chunked() {
    assert_batch_invariant(folder_model(false).as_ref(), "f32 experts");
    assert_batch_invariant(folder_model(true).as_ref(), "f32 experts, dense last layer");
}

#[test]
fn quantized_stacked_gguf_experts_split_per_expert() {
    let dir = tempfile::tempdir().unwrap();
    let reference = alone(folder_model(false).as_ref(), &prompt(17, 2));
    for (q, tolerance) in [(GgmlDType::Q8_0, 0.2f32), (GgmlDType::Q4_0, 1.5)] {
        let model = gguf_model(dir.path(), q);
        assert_batch_invariant(model.as_ref(), &format!("{q:?} experts"));
        // each expert gets its own rows of the stack: close to the f32 model's logits (the
        // largest |logit| is 3.7; Q8_0 is off by 0.05, Q4_0 by 0.6; experts in reverse order
        // move them by 5.4)
        let got = alone(model.as_ref(), &prompt(17, 2));
        let d = got
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(d < tolerance, "{q:?} experts: logits differ by {d}");
    }
}
