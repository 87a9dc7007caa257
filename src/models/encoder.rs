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
/// "last", "normalize": bool, "max_seq_length": n | null, "sep_token": "[SEP]"}` from its
/// `modules.json`, `1_Pooling/config.json`, `sentence_bert_config.json` and
/// `tokenizer_config.json`; without them vLLM's defaults for a BERT embedding model (the [CLS]
/// row, normalized). The loader adds `sep_token_id` (the tokenizer's id of `sep_token`).
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
    let sep_token = std::fs::read(dir.join("tokenizer_config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|c| {
            c.get("sep_token")
                .and_then(|v| v.as_str())
                .map(String::from)
        })
        .unwrap_or_else(|| "[SEP]".into());
    Ok(serde_json::json!({
        "pooling": pooling,
        "normalize": !has_modules || normalizes(dir),
        "max_seq_length": max_seq_length,
        "sep_token": sep_token,
    }))
}

/// The engine's view of a BERT embedding model or cross-encoder.
struct Encoder {
    bert: Arc<Bert>,
    /// A cross-encoder's classification head on the [CLS] row (`BertForSequenceClassification`).
    head: Option<Arc<ClassifierHead>>,
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
    let mut bert = Bert::load(vb.clone(), cfg.clone())?;
    if let Some(sep) = st.get("sep_token_id").and_then(|v| v.as_u64()) {
        bert = bert.with_pair_separator(sep as u32);
    }
    let head = ClassifierHead::load(&vb, json, &cfg)?;
    let scores = head.is_some();
    Ok(Box::new(Encoder {
        info: EmbeddingInfo {
            dims: head.as_ref().map_or(cfg.hidden_size, |h| h.num_labels),
            normalized: normalized && !scores,
            matryoshka,
            scores,
            mean: false,
        },
        head: head.map(Arc::new),
        bert: Arc::new(bert),
        pooling: if scores { Pooling::Cls } else { pooling },
        max_len,
        shape: engine_config(&cfg),
    }))
}

/// `BertForSequenceClassification`'s head: `classifier(tanh(pooler(h_cls)))`, then the
/// activation sentence-transformers' CrossEncoder applies (config.json
/// `sentence_transformers.activation_fn`; by default a sigmoid for one label, none for more).
struct ClassifierHead {
    pooler: super::linear::Linear,
    classifier: super::linear::Linear,
    num_labels: usize,
    sigmoid: bool,
    /// The hidden width and the weights' dtype (the [CLS] rows arrive as host f32).
    width: usize,
    dtype: DType,
}

impl ClassifierHead {
    /// The head of a checkpoint whose `architectures` name a sequence classifier; `None` for
    /// an embedding model.
    fn load(
        vb: &candle_nn::VarBuilder,
        json: &serde_json::Value,
        cfg: &BertConfig,
    ) -> std::result::Result<Option<Self>, ModelLoadError> {
        let classifies = json["architectures"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == "BertForSequenceClassification"));
        if !classifies {
            return Ok(None);
        }
        let num_labels = match (json.get("id2label"), json.get("num_labels")) {
            (Some(serde_json::Value::Object(m)), _) => m.len(),
            (_, Some(n)) => n.as_u64().unwrap_or(2) as usize,
            _ => 2, // transformers' default
        };
        let activation = json["sentence_transformers"]["activation_fn"].as_str();
        let sigmoid = match activation {
            Some(a) if a.ends_with("Sigmoid") => true,
            Some(a) if a.ends_with("Identity") => false,
            Some(a) => {
                return Err(ConfigError::Unsupported(format!(
                    "sentence_transformers.activation_fn {a:?} (weir applies Sigmoid or Identity)"
                ))
                .into())
            }
            None => num_labels == 1,
        };
        let h = cfg.hidden_size;
        let linear = |name: &str, out: usize| -> Result<super::linear::Linear> {
            let vb = vb.pp(name);
            super::linear::Linear::from_dense(
                vb.get((out, h), "weight")?,
                Some(vb.get(out, "bias")?),
            )
        };
        Ok(Some(Self {
            pooler: linear("bert.pooler.dense", h)?,
            classifier: linear("classifier", num_labels)?,
            num_labels,
            sigmoid,
            width: h,
            dtype: vb.dtype(),
        }))
    }

    /// Each pair's scores from its [CLS] row.
    fn scores(&self, cls: Vec<Vec<f32>>, device: &Device) -> Result<Vec<Vec<f32>>> {
        let n = cls.len();
        let x = Tensor::from_vec(cls.concat(), (n, self.width), device)?.to_dtype(self.dtype)?;
        let pooled = self.pooler.forward(&x)?.tanh()?;
        let logits = self.classifier.forward(&pooled)?.to_dtype(DType::F32)?;
        let scores = if self.sigmoid {
            candle_nn::ops::sigmoid(&logits)?
        } else {
            logits
        };
        scores.to_vec2::<f32>()
    }
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
        match &self.head {
            Some(head) => head.scores(vectors, self.bert.device()),
            None => Ok(super::pooled_rows(vectors, self.info.normalized)),
        }
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
            head: self.head.clone(),
            shape: self.shape.clone(),
            ..*self
        }))
    }

    fn projections_merged(&self) -> bool {
        false
    }

    fn set_fused_kernels(&mut self, _: bool) {}
}
