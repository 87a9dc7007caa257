//! The BERT family as the engine runs it: an embedding model (`CausalLm::embed`), no logits and
//! no KV cache. Each step's sequences are whole prompts (the scheduler's `whole_prompts`), run
//! through `Bert::hidden_states` packed, pooled as the checkpoint's sentence-transformers
//! modules say and L2-normalized when they end in `Normalize`.
//!
//! The pooling reaches `load` inside the config: the loader adds the folder's
//! sentence-transformers settings under `SENTENCE_TRANSFORMERS` (`sentence_transformers_json`).

use super::attention::{Attention, AttentionShape};
use super::batch::ForwardBatch;
use super::bert::{normalizes, Bert, BertConfig, Pooling};
use super::config::ConfigError;
use super::rope_params::{RopeParams, RopeScaling};
use super::weights::WeightSource;
use super::{CausalLm, EmbeddingInfo, Family, LlamaConfig, Model, ModelLoadError, StepInputs};
use candle_core::{bail, DType, Device, Result, Tensor};
use std::path::Path;
use std::sync::Arc;

/// The key of `config.json` under which the loader passes the sentence-transformers settings.
pub const SENTENCE_TRANSFORMERS: &str = "weir_sentence_transformers";

pub const FAMILY: Family = Family {
    name: "bert",
    gguf_archs: &[],
    hf_model_types: &["bert"],
    gguf_names: &[],
    load,
    check,
};

/// A BERT checkpoint's pooling, normalization and longest input: `{"pooling": "mean" | "cls" |
/// "last", "normalize": bool, "max_seq_length": n | null}` from its `modules.json`,
/// `1_Pooling/config.json` and `sentence_bert_config.json`; without them vLLM's defaults for a
/// BERT embedding model (the [CLS] row, normalized).
pub fn sentence_transformers_json(
    dir: &Path,
) -> std::result::Result<serde_json::Value, ConfigError> {
    let pooling = match Pooling::from_sentence_transformers(dir)? {
        Some(Pooling::Mean) => "mean",
        Some(Pooling::Last) => "last",
        Some(Pooling::Cls) | None => "cls",
    };
    let has_modules = dir.join("modules.json").is_file();
    let max_seq_length = std::fs::read(dir.join("sentence_bert_config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|c| c.get("max_seq_length").and_then(|v| v.as_u64()));
    Ok(serde_json::json!({
        "pooling": pooling,
        "normalize": !has_modules || normalizes(dir),
        "max_seq_length": max_seq_length,
    }))
}

/// The engine's view of a BERT embedding model.
struct Encoder {
    bert: Arc<Bert>,
    pooling: Pooling,
    info: EmbeddingInfo,
    max_len: usize,
    /// The shape the engine sizes from: no KV layers.
    shape: LlamaConfig,
}

fn check(json: &serde_json::Value) -> std::result::Result<(), ConfigError> {
    BertConfig::from_hf(json).map(|_| ())
}

fn load(
    src: &mut dyn WeightSource,
    json: Option<&serde_json::Value>,
) -> std::result::Result<Box<dyn Model>, ModelLoadError> {
    let json = json.ok_or_else(|| {
        ConfigError::Invalid("a BERT model needs its config.json (GGUF is not read)".into())
    })?;
    let cfg = BertConfig::from_hf(json)?;
    let st = json.get(SENTENCE_TRANSFORMERS).cloned().unwrap_or_default();
    let pooling = match st.get("pooling").and_then(|p| p.as_str()) {
        Some("mean") => Pooling::Mean,
        Some("last") => Pooling::Last,
        _ => Pooling::Cls,
    };
    let normalized = st
        .get("normalize")
        .and_then(|n| n.as_bool())
        .unwrap_or(true);
    let max_len = st
        .get("max_seq_length")
        .and_then(|n| n.as_u64())
        .map_or(cfg.max_position_embeddings, |n| n as usize)
        .min(cfg.max_position_embeddings);
    let matryoshka = json.get("is_matryoshka").and_then(|v| v.as_bool()) == Some(true)
        || json.get("matryoshka_dimensions").is_some();
    let vb = src
        .var_builder()
        .ok_or_else(|| ConfigError::Invalid("a BERT model loads from safetensors".into()))?;
    let bert = Bert::load(vb, cfg.clone())?;
    Ok(Box::new(Encoder {
        bert: Arc::new(bert),
        pooling,
        info: EmbeddingInfo {
            dims: cfg.hidden_size,
            normalized,
            matryoshka,
        },
        max_len,
        shape: engine_config(&cfg),
    }))
}

/// The decoder-shaped config the engine sizes an encoder by: its widths, no KV layers.
fn engine_config(cfg: &BertConfig) -> LlamaConfig {
    LlamaConfig {
        hidden_size: cfg.hidden_size,
        intermediate_size: cfg.intermediate_size,
        num_layers: 0,
        num_heads: cfg.num_heads,
        num_kv_heads: cfg.num_heads,
        head_dim: cfg.hidden_size / cfg.num_heads,
        vocab_size: cfg.vocab_size,
        rms_norm_eps: cfg.layer_norm_eps,
        rope: RopeParams {
            theta: 10_000.0,
            scaling: RopeScaling::None,
        },
        rope_interleaved: false,
        max_position_embeddings: cfg.max_position_embeddings,
        tie_word_embeddings: false,
        attention_bias: true,
        qk_norm: None,
        sliding_window: None,
        sliding_layers: Vec::new(),
        fused_projections: false,
        moe: None,
    }
}

impl CausalLm for Encoder {
    fn upload(&self, _: &ForwardBatch, _: &Attention) -> Result<StepInputs> {
        bail!("an embedding model has no logits")
    }

    fn forward_inputs(
        &self,
        _: &ForwardBatch,
        _: &StepInputs,
        _: &mut Attention,
    ) -> Result<Tensor> {
        bail!("an embedding model has no logits")
    }

    fn embed(&self, batch: &ForwardBatch, _: &mut Attention) -> Result<Vec<Vec<f32>>> {
        let seqs: Vec<_> = batch
            .seqs
            .iter()
            .map(|s| {
                if s.context_len != s.query_len {
                    bail!("an encoder computes whole prompts only");
                }
                Ok(s.query_start..s.query_start + s.query_len)
            })
            .collect::<Result<_>>()?;
        let hidden = self.bert.hidden_states(&batch.token_ids, &seqs)?;
        let vectors = super::bert::pool(&hidden, &seqs, self.pooling)?;
        Ok(super::pooled_rows(vectors, self.info.normalized))
    }

    fn embedding(&self) -> Option<EmbeddingInfo> {
        Some(self.info)
    }

    fn num_layers(&self) -> usize {
        0
    }

    fn attention_shape(&self) -> AttentionShape {
        AttentionShape {
            num_heads: self.shape.num_heads,
            num_kv_heads: self.shape.num_kv_heads,
            head_dim: self.shape.head_dim,
            softmax_scale: (self.shape.head_dim as f32).powf(-0.5),
            sliding_window: None,
            logit_softcap: None,
        }
    }

    fn device(&self) -> &Device {
        self.bert.device()
    }

    fn dtype(&self) -> DType {
        DType::F32
    }

    fn max_context_len(&self) -> usize {
        self.max_len
    }

    fn vocab_size(&self) -> usize {
        self.shape.vocab_size
    }
}

impl Model for Encoder {
    fn config(&self) -> &LlamaConfig {
        &self.shape
    }

    fn weight_bytes(&self) -> u64 {
        self.bert.weight_bytes()
    }

    fn to_device(&self, device: &Device) -> Result<Arc<dyn Model>> {
        if !device.same_device(self.bert.device()) {
            bail!("an embedding model stays on the device it was loaded on");
        }
        Ok(Arc::new(Encoder {
            bert: self.bert.clone(),
            shape: self.shape.clone(),
            ..*self
        }))
    }

    fn projections_merged(&self) -> bool {
        false
    }

    fn set_fused_kernels(&mut self, _: bool) {}
}
