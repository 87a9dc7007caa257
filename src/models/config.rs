//! `LlamaConfig`: the validated shape of a Llama-family model, from a Hugging Face
//! `config.json` (`HfLlamaConfig`) or from GGUF metadata.

use candle_core::quantized::gguf_file;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f32,
    pub rope_scaling: Option<Llama3RopeScaling>,
    /// GGUF stores Q/K for interleaved (GPT-J) pairs; HF checkpoints pair i with i + d/2.
    pub rope_interleaved: bool,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Qwen2 has a bias on q/k/v.
    pub attention_bias: bool,
}

/// Llama 3.1's `rope_scaling` (`rope_type: "llama3"`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Llama3RopeScaling {
    pub factor: f32,
    pub low_freq_factor: f32,
    pub high_freq_factor: f32,
    pub original_max_position_embeddings: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unsupported model: {0}")]
    Unsupported(String),
    #[error("invalid model config: {0}")]
    Invalid(String),
}

/// The `model_type` of a `config.json` that names none.
pub const DEFAULT_MODEL_TYPE: &str = "llama";

/// `config.json` of a Llama, Mistral, Qwen2 or SmolLM checkpoint.
#[derive(Debug, Clone, Deserialize)]
pub struct HfLlamaConfig {
    #[serde(default)]
    pub model_type: Option<String>,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub vocab_size: usize,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    pub rope_theta: f32,
    pub rope_scaling: Option<HfRopeScaling>,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    pub attention_bias: Option<bool>,
    pub sliding_window: Option<usize>,
    pub use_sliding_window: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HfRopeScaling {
    #[serde(alias = "type")]
    pub rope_type: Option<String>,
    pub factor: Option<f32>,
    pub low_freq_factor: Option<f32>,
    pub high_freq_factor: Option<f32>,
    pub original_max_position_embeddings: Option<usize>,
}

fn default_eps() -> f64 {
    1e-5
}
fn default_theta() -> f32 {
    10_000.0
}
fn default_max_pos() -> usize {
    4096
}

impl HfLlamaConfig {
    /// `model_type` (absent: `DEFAULT_MODEL_TYPE`).
    pub fn model_type(&self) -> &str {
        self.model_type.as_deref().unwrap_or(DEFAULT_MODEL_TYPE)
    }

    pub fn into_config(self) -> Result<LlamaConfig, ConfigError> {
        let model_type = self.model_type();
        let is_qwen2 = model_type == "qwen2";
        // NOTE: which model types run at all is the family registry's (`family::for_hf`)
        if model_type == "mistral" {
            let window_used = self.use_sliding_window.unwrap_or(true);
            if let (Some(w), true) = (self.sliding_window, window_used) {
                if w < self.max_position_embeddings {
                    return Err(ConfigError::Unsupported(format!(
                        "mistral with sliding window {w} (< context {})",
                        self.max_position_embeddings
                    )));
                }
            }
        }
        let rope_scaling = match self.rope_scaling {
            None => None,
            Some(s) => match s.rope_type.as_deref() {
                Some("llama3") => Some(Llama3RopeScaling {
                    factor: s.factor.unwrap_or(8.0),
                    low_freq_factor: s.low_freq_factor.unwrap_or(1.0),
                    high_freq_factor: s.high_freq_factor.unwrap_or(4.0),
                    original_max_position_embeddings: s
                        .original_max_position_embeddings
                        .unwrap_or(8192),
                }),
                Some("default") | None => None,
                Some(other) => {
                    return Err(ConfigError::Unsupported(format!(
                        "rope_scaling type {other:?}"
                    )))
                }
            },
        };
        let cfg = LlamaConfig {
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_layers: self.num_hidden_layers,
            num_heads: self.num_attention_heads,
            num_kv_heads: self.num_key_value_heads.unwrap_or(self.num_attention_heads),
            head_dim: self
                .head_dim
                .unwrap_or(self.hidden_size / self.num_attention_heads.max(1)),
            vocab_size: self.vocab_size,
            rms_norm_eps: self.rms_norm_eps,
            rope_theta: self.rope_theta,
            rope_scaling,
            rope_interleaved: false,
            max_position_embeddings: self.max_position_embeddings,
            tie_word_embeddings: self.tie_word_embeddings,
            attention_bias: self.attention_bias.unwrap_or(is_qwen2),
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// A GGUF file's `general.architecture` (absent: `llama`).
pub fn gguf_architecture(ct: &gguf_file::Content) -> String {
    ct.metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_else(|| "llama".into())
}

impl LlamaConfig {
    /// Reads the `{arch}.*` hyper-parameters of a GGUF file (which architectures run at all is
    /// the family registry's: `family::for_gguf`).
    pub fn from_gguf(ct: &gguf_file::Content) -> Result<Self, ConfigError> {
        let arch = gguf_architecture(ct);
        let get = |k: &str| -> Result<&gguf_file::Value, ConfigError> {
            ct.metadata
                .get(&format!("{arch}.{k}"))
                .ok_or_else(|| ConfigError::Invalid(format!("GGUF metadata lacks {arch}.{k}")))
        };
        let u = |k: &str| -> Result<usize, ConfigError> {
            get(k)?
                .to_u32()
                .map(|v| v as usize)
                .map_err(|e| ConfigError::Invalid(format!("{arch}.{k}: {e}")))
        };
        let hidden_size = u("embedding_length")?;
        let num_heads = u("attention.head_count")?;
        let vocab_size = match ct.metadata.get("tokenizer.ggml.tokens") {
            Some(gguf_file::Value::Array(a)) => a.len(),
            _ => ct
                .tensor_infos
                .get("token_embd.weight")
                .map(|t| t.shape.dims()[0])
                .ok_or_else(|| ConfigError::Invalid("no vocabulary".into()))?,
        };
        let cfg = LlamaConfig {
            hidden_size,
            intermediate_size: u("feed_forward_length")?,
            num_layers: u("block_count")?,
            num_heads,
            num_kv_heads: u("attention.head_count_kv").unwrap_or(num_heads),
            head_dim: u("rope.dimension_count").unwrap_or(hidden_size / num_heads),
            vocab_size,
            rms_norm_eps: get("attention.layer_norm_rms_epsilon")
                .and_then(|v| v.to_f32().map_err(|e| ConfigError::Invalid(e.to_string())))?
                as f64,
            rope_theta: get("rope.freq_base")
                .and_then(|v| v.to_f32().map_err(|e| ConfigError::Invalid(e.to_string())))
                .unwrap_or(10_000.0),
            rope_scaling: None,
            // NOTE: llama.cpp's converter permutes Llama Q/K rows for interleaved RoPE; Qwen2
            // GGUFs keep the NeoX pairing.
            rope_interleaved: arch == "llama",
            max_position_embeddings: u("context_length").unwrap_or(4096),
            tie_word_embeddings: !ct.tensor_infos.contains_key("output.weight"),
            attention_bias: arch == "qwen2",
        };
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.num_heads == 0
            || self.num_kv_heads == 0
            || !self.num_heads.is_multiple_of(self.num_kv_heads)
        {
            return bad(format!(
                "{} attention heads are not a multiple of {} KV heads",
                self.num_heads, self.num_kv_heads
            ));
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            return bad(format!("head_dim {} must be even", self.head_dim));
        }
        if self.num_layers == 0 || self.vocab_size == 0 || self.hidden_size == 0 {
            return bad("zero-sized model".into());
        }
        Ok(())
    }

    /// RoPE inverse frequencies, [head_dim / 2], with Llama 3.1 scaling when configured.
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        let d = self.head_dim;
        let base: Vec<f32> = (0..d)
            .step_by(2)
            .map(|i| 1.0 / self.rope_theta.powf(i as f32 / d as f32))
            .collect();
        let Some(s) = &self.rope_scaling else {
            return base;
        };
        let old = s.original_max_position_embeddings as f32;
        let low_wavelen = old / s.low_freq_factor;
        let high_wavelen = old / s.high_freq_factor;
        base.into_iter()
            .map(|f| {
                let wavelen = 2.0 * std::f32::consts::PI / f;
                if wavelen < high_wavelen {
                    f
                } else if wavelen > low_wavelen {
                    f / s.factor
                } else {
                    let smooth = (old / wavelen - s.low_freq_factor)
                        / (s.high_freq_factor - s.low_freq_factor);
                    (1.0 - smooth) * f / s.factor + smooth * f
                }
            })
            .collect()
    }
}
