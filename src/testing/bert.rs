//! A tiny random BERT: its config and weights, for the encoder's tests on the CPU and the GPU.

use super::uniform;
use candle_core::Tensor;
use rand::{rngs::StdRng, SeedableRng};
use std::collections::HashMap;

/// A tiny BERT's `config.json` (hidden 32, 2 layers, 4 heads, vocabulary 100) with
/// `hidden_act` `act`.
pub fn tiny_bert_config_json(act: &str) -> serde_json::Value {
    serde_json::json!({
        "model_type": "bert", "vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": 64,
        "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_act": act,
        "hidden_dropout_prob": 0.1, "initializer_range": 0.02, "pad_token_id": 0,
    })
}

/// Random weights of `tiny_bert_config_json`'s BERT by Hugging Face name (without the
/// `bert.` prefix).
pub fn tiny_bert_weights(seed: u64) -> HashMap<String, Tensor> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut w = HashMap::new();
    let mut put = |name: String, shape: &[usize], scale: f32, offset: f32| {
        w.insert(name, uniform(&mut rng, shape, scale, offset));
    };
    for (t, rows) in [("word", 100), ("position", 64), ("token_type", 2)] {
        put(
            format!("embeddings.{t}_embeddings.weight"),
            &[rows, 32],
            1.0,
            0.0,
        );
    }
    let mut norms = vec!["embeddings.LayerNorm".to_string()];
    for l in 0..2 {
        let p = |m: &str| format!("encoder.layer.{l}.{m}");
        for (m, out, inp) in [
            ("attention.self.query", 32, 32),
            ("attention.self.key", 32, 32),
            ("attention.self.value", 32, 32),
            ("attention.output.dense", 32, 32),
            ("intermediate.dense", 64, 32),
            ("output.dense", 32, 64),
        ] {
            put(p(&format!("{m}.weight")), &[out, inp], 0.3, 0.0);
            put(p(&format!("{m}.bias")), &[out], 0.1, 0.0);
        }
        norms.extend([p("attention.output.LayerNorm"), p("output.LayerNorm")]);
    }
    for n in norms {
        put(format!("{n}.weight"), &[32], 0.1, 1.0);
        put(format!("{n}.bias"), &[32], 0.1, 0.0);
    }
    w
}
