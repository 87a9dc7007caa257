//! Shared by the SmolLM2 tests: weir's paged model and candle-transformers' stock
//! `quantized_llama` loaded from the default model file, and a logit comparison of the two.
#![allow(dead_code)]

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use weir::models::batch::ForwardBatch;
use weir::models::weights::{GgufWeights, WeightSource};
use weir::models::{CausalLm, Llama, LlamaConfig, WeightFormat};
use weir::testing::{attention_for, default_model_path, single_seq_batch};

use weir::text::TextCodec;

pub fn load(format: WeightFormat) -> (Llama, TextCodec) {
    let path = default_model_path();
    let mut w = GgufWeights::open(&path, &Device::Cpu, format).unwrap();
    let cfg = LlamaConfig::from_gguf(w.content()).unwrap();
    let codec = TextCodec::from_gguf(w.content()).unwrap();
    (
        Llama::load(&mut w as &mut dyn WeightSource, cfg).unwrap(),
        codec,
    )
}

pub fn reference() -> ModelWeights {
    let path = default_model_path();
    let mut f = std::fs::File::open(&path).unwrap();
    let ct = gguf_file::Content::read(&mut f).unwrap();
    ModelWeights::from_gguf(ct, &mut f, &Device::Cpu).unwrap()
}

/// One sequence whose blocks run backwards through the pool (position 0 in the last block).
fn one_seq_batch(tokens: &[u32], start: usize, block_size: usize) -> ForwardBatch {
    let table: Vec<u32> = (0..NUM_BLOCKS as u32).rev().collect();
    single_seq_batch(tokens, start, &table, block_size)
}

const NUM_BLOCKS: usize = 8;

fn to_vec(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0
}

/// Compares logits at the prompt and at 20 greedy decode positions.
pub fn compare(format: WeightFormat, tolerance: f32) {
    let (model, codec) = load(format);
    let mut refm = reference();
    let mut kv = attention_for(&model, 16, NUM_BLOCKS);
    let prompt = codec.encode("The capital of France is", false).unwrap();
    let ours = to_vec(
        &model
            .forward(&one_seq_batch(&prompt, 0, 16), &mut kv)
            .unwrap(),
    );
    let input = Tensor::new(prompt.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let theirs = to_vec(&refm.forward(&input, 0).unwrap());
    let mut worst = 0f32;
    let mut check = |ours: &[f32], theirs: &[f32], pos: usize| {
        let d = ours
            .iter()
            .zip(theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        worst = worst.max(d);
        assert!(
            d < tolerance,
            "logits differ by {d} at position {pos} ({format:?})"
        );
    };
    check(&ours, &theirs, prompt.len() - 1);
    assert_eq!(
        argmax(&ours),
        argmax(&theirs),
        "top token after the prompt differs"
    );
    assert_eq!(
        codec.decode(&[argmax(&ours) as u32], false).unwrap(),
        " Paris"
    );
    let mut next = argmax(&ours) as u32;
    for pos in prompt.len()..prompt.len() + 20 {
        let ours = to_vec(
            &model
                .forward(&one_seq_batch(&[next], pos, 16), &mut kv)
                .unwrap(),
        );
        let input = Tensor::new(&[next], &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let theirs = to_vec(&refm.forward(&input, pos).unwrap());
        check(&ours, &theirs, pos);
        next = argmax(&theirs) as u32;
    }
    eprintln!("{format:?}: worst logit difference {worst}");
}

/// Worst logit difference from weir's dense f32 model, over the prompt and 20 greedy decode
/// positions (greedy by the dense model), of weir's quantized model and of candle's stock
/// quantized model: (weir, candle).
pub fn quantization_errors() -> (f32, f32) {
    let (dense, codec) = load(WeightFormat::Dense);
    let (quant, _) = load(WeightFormat::Quantized);
    let mut refm = reference();
    let (mut kv_d, mut kv_q) = (
        attention_for(&dense, 16, NUM_BLOCKS),
        attention_for(&quant, 16, NUM_BLOCKS),
    );
    let prompt = codec.encode("The capital of France is", false).unwrap();
    let diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    };
    let (mut worst_w, mut worst_c) = (0f32, 0f32);
    let (mut tokens, mut start) = (prompt.clone(), 0);
    for _ in 0..21 {
        let batch = one_seq_batch(&tokens, start, 16);
        let d = to_vec(&dense.forward(&batch, &mut kv_d).unwrap());
        let q = to_vec(&quant.forward(&batch, &mut kv_q).unwrap());
        let input = Tensor::new(tokens.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let c = to_vec(&refm.forward(&input, start).unwrap());
        worst_w = worst_w.max(diff(&q, &d));
        worst_c = worst_c.max(diff(&c, &d));
        start += tokens.len();
        tokens = vec![argmax(&d) as u32];
    }
    (worst_w, worst_c)
}
