//! `LlamaConfig`: the validated shape of a Llama-family model, from a Hugging Face
//! `config.json` (`HfLlamaConfig`) or from GGUF metadata.

pub use super::error::ConfigError;
pub use super::moe_config::MoeConfig;
use super::rope_params::RopeParams;
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
    pub rope: RopeParams,
    /// GGUF stores Q/K for interleaved (GPT-J) pairs; HF checkpoints pair i with i + d/2.
    pub rope_interleaved: bool,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Qwen2 has a bias on q/k/v.
    pub attention_bias: bool,
    /// Qwen3, Gemma 3 (each head) and OLMoE (the whole projection) RMS-normalize q and k
    /// before RoPE.
    pub qk_norm: Option<QkNormScope>,
    /// The window of the sliding-window layers (Mistral, Gemma 2/3, Qwen with
    /// `use_sliding_window`); `None` when every layer sees the whole context.
    pub sliding_window: Option<usize>,
    /// Per layer: whether it attends through `sliding_window` (all false without one).
    pub sliding_layers: Vec<bool>,
    /// Phi-3 stores q/k/v as one `qkv_proj` and gate/up as one `gate_up_proj`.
    pub fused_projections: bool,
    /// Routed experts in place of the MLP (Mixtral, Qwen2/3-MoE, OLMoE).
    pub moe: Option<MoeConfig>,
}

/// What the q/k RMSNorm of a layer normalizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QkNormScope {
    /// Each head (Qwen3, Gemma 3): scales of [head_dim].
    Head,
    /// The whole q and k projections (OLMoE): scales of [q width] and [kv width].
    Projection,
}

/// The `model_type` of a `config.json` that names none.
pub const DEFAULT_MODEL_TYPE: &str = "llama";

/// `config.json` of a Llama, Mistral, Qwen2, Qwen3, Phi-3 or SmolLM checkpoint (RoPE:
/// `RopeParams::from_hf`).
#[derive(Debug, Clone, Deserialize)]
struct HfLlamaConfig {
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    vocab_size: usize,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    #[serde(default = "default_max_pos")]
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    hidden_act: Option<String>,
    sliding_window: Option<usize>,
    use_sliding_window: Option<bool>,
    max_window_layers: Option<usize>,
    layer_types: Option<Vec<String>>,
    quantization_config: Option<serde_json::Value>,
    /// Qwen2-MoE's name for `attention_bias`.
    qkv_bias: Option<bool>,
    /// OLMoE's clamp of q, k and v.
    clip_qkv: Option<f64>,
}

fn default_eps() -> f64 {
    1e-5
}
fn default_max_pos() -> usize {
    4096
}

/// The `model_type` of a `config.json` (absent: `DEFAULT_MODEL_TYPE`).
pub fn hf_model_type(json: &serde_json::Value) -> &str {
    json.get("model_type")
        .and_then(|v| v.as_str())
        .unwrap_or(DEFAULT_MODEL_TYPE)
}

impl HfLlamaConfig {
    /// Refuses every field weir would otherwise ignore although it changes the math.
    fn check_implemented(&self) -> Result<(), ConfigError> {
        let unsupported = |m: String| Err(ConfigError::Unsupported(m));
        if let Some(q) = &self.quantization_config {
            let method = q
                .get("quant_method")
                .and_then(|m| m.as_str())
                .unwrap_or("?");
            return unsupported(format!(
                "quantization_config (quant_method {method:?}); weir reads unquantized safetensors and GGUF"
            ));
        }
        if let Some(act) = self.hidden_act.as_deref().filter(|a| *a != "silu") {
            return unsupported(format!("hidden_act {act:?} (this family runs silu)"));
        }
        if self.mlp_bias == Some(true) {
            return unsupported("mlp_bias true".into());
        }
        if let Some(c) = self.clip_qkv {
            return unsupported(format!("clip_qkv {c}"));
        }
        Ok(())
    }

    /// The window and which layers slide, as transformers reads them: `layer_types` when the
    /// config lists them; else Mistral and Phi-3 slide every layer when they have a window, and Qwen2/3
    /// with `use_sliding_window` the layers from `max_window_layers` on.
    fn sliding(&self, model_type: &str) -> Result<(Option<usize>, Vec<bool>), ConfigError> {
        let n = self.num_hidden_layers;
        // transformers drops Qwen's window (and with it any sliding layer) unless it is used
        if self.use_sliding_window == Some(false) {
            return Ok((None, vec![false; n]));
        }
        let layers = match &self.layer_types {
            Some(types) => layer_kinds(types, n)?,
            None if matches!(model_type, "mistral" | "mixtral" | "phi3") => vec![true; n],
            None if self.use_sliding_window == Some(true) => {
                let first = self.max_window_layers.unwrap_or(28);
                (0..n).map(|i| i >= first).collect()
            }
            None => vec![false; n],
        };
        Ok(windowed_layers(self.sliding_window, layers))
    }
}

/// `layer_types` (`full_attention` / `sliding_attention` per layer) as sliding flags.
pub fn layer_kinds(types: &[String], num_layers: usize) -> Result<Vec<bool>, ConfigError> {
    if types.len() != num_layers {
        return Err(ConfigError::Invalid(format!(
            "layer_types lists {} layers, the model has {num_layers}",
            types.len()
        )));
    }
    types
        .iter()
        .map(|t| match t.as_str() {
            "full_attention" => Ok(false),
            "sliding_attention" => Ok(true),
            other => Err(ConfigError::Unsupported(format!(
                "layer_types entry {other:?}; weir implements full_attention, sliding_attention"
            ))),
        })
        .collect()
}

/// The window and the sliding flags: none slide without a window, and without a sliding
/// layer there is no window.
pub fn windowed_layers(window: Option<usize>, layers: Vec<bool>) -> (Option<usize>, Vec<bool>) {
    match window {
        Some(w) if w > 0 && layers.iter().any(|&s| s) => (Some(w), layers),
        _ => (None, vec![false; layers.len()]),
    }
}

impl LlamaConfig {
    /// The validated shape of a Llama-family `config.json`; a field that changes the math and
    /// that weir does not implement is an error naming it.
    pub fn from_hf(json: &serde_json::Value) -> Result<Self, ConfigError> {
        let hf = HfLlamaConfig::deserialize(json)
            .map_err(|e| ConfigError::Invalid(format!("config.json: {e}")))?;
        let model_type = hf_model_type(json);
        hf.check_implemented()?;
        let (sliding_window, sliding_layers) = hf.sliding(model_type)?;
        let cfg = LlamaConfig {
            hidden_size: hf.hidden_size,
            intermediate_size: hf.intermediate_size,
            num_layers: hf.num_hidden_layers,
            num_heads: hf.num_attention_heads,
            num_kv_heads: hf.num_key_value_heads.unwrap_or(hf.num_attention_heads),
            head_dim: hf
                .head_dim
                .unwrap_or(hf.hidden_size / hf.num_attention_heads.max(1)),
            vocab_size: hf.vocab_size,
            rms_norm_eps: hf.rms_norm_eps,
            rope: RopeParams::from_hf(json, None)?,
            rope_interleaved: false,
            max_position_embeddings: hf.max_position_embeddings,
            tie_word_embeddings: hf.tie_word_embeddings,
            attention_bias: hf
                .attention_bias
                .or(hf.qkv_bias)
                .unwrap_or(matches!(model_type, "qwen2" | "qwen2_moe")),
            qk_norm: match model_type {
                "qwen3" | "qwen3_moe" => Some(QkNormScope::Head),
                "olmoe" => Some(QkNormScope::Projection),
                _ => None,
            },
            sliding_window,
            sliding_layers,
            fused_projections: model_type == "phi3",
            moe: MoeConfig::from_hf(json, model_type, hf.num_hidden_layers, hf.intermediate_size)?,
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
        if let (Ok(rotated), Ok(head)) = (u("rope.dimension_count"), u("attention.key_length")) {
            if rotated != head {
                return Err(ConfigError::Unsupported(format!(
                    "GGUF {arch}.rope.dimension_count {rotated} < head size {head} (partial rotary; weir rotates the whole head)"
                )));
            }
        }
        let num_layers = u("block_count")?;
        // Phi-3 windows every layer (as transformers runs it); llama.cpp's Llama, Qwen and
        // Mistral files carry no window
        let window = match arch.as_str() {
            "phi3" => u("attention.sliding_window").ok(),
            _ => None,
        };
        let (sliding_window, sliding_layers) = windowed_layers(window, vec![true; num_layers]);
        let vocab_size = match ct.metadata.get("tokenizer.ggml.tokens") {
            Some(gguf_file::Value::Array(a)) => a.len(),
            _ => ct
                .tensor_infos
                .get("token_embd.weight")
                .map(|t| t.shape.dims()[0])
                .ok_or_else(|| ConfigError::Invalid("no vocabulary".into()))?,
        };
        let intermediate_size = u("feed_forward_length")?;
        let cfg = LlamaConfig {
            hidden_size,
            intermediate_size,
            num_layers,
            num_heads,
            num_kv_heads: u("attention.head_count_kv").unwrap_or(num_heads),
            head_dim: u("attention.key_length")
                .or_else(|_| u("rope.dimension_count"))
                .unwrap_or(hidden_size / num_heads),
            vocab_size,
            rms_norm_eps: get("attention.layer_norm_rms_epsilon")
                .and_then(|v| v.to_f32().map_err(|e| ConfigError::Invalid(e.to_string())))?
                as f64,
            rope: RopeParams::from_gguf(ct, &arch)?,
            // NOTE: llama.cpp's converter permutes Llama Q/K rows for interleaved RoPE; Qwen
            // and Gemma GGUFs keep the NeoX pairing.
            rope_interleaved: arch == "llama",
            max_position_embeddings: u("context_length").unwrap_or(4096),
            tie_word_embeddings: !ct.tensor_infos.contains_key("output.weight"),
            attention_bias: matches!(arch.as_str(), "qwen2" | "qwen2moe"),
            qk_norm: match arch.as_str() {
                "olmoe" => Some(QkNormScope::Projection),
                _ => ct
                    .tensor_infos
                    .contains_key("blk.0.attn_q_norm.weight")
                    .then_some(QkNormScope::Head),
            },
            // a family with its own pattern of sliding layers (Gemma) sets them
            sliding_window,
            sliding_layers,
            fused_projections: arch == "phi3",
            moe: MoeConfig::from_gguf(ct, &arch, num_layers, intermediate_size)?,
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
        if let Some(m) = self
            .moe
            .as_ref()
            .filter(|m| m.sparse_layers.len() != self.num_layers)
        {
            return bad(format!(
                "{} sparse-layer flags for {} layers",
                m.sparse_layers.len(),
                self.num_layers
            ));
        }
        if self.sliding_layers.len() != self.num_layers {
            return bad(format!(
                "{} sliding-layer flags for {} layers",
                self.sliding_layers.len(),
                self.num_layers
            ));
        }
        Ok(())
    }

    /// RoPE inverse frequencies, [head_dim / 2].
    pub fn rope_inv_freq(&self) -> Result<Vec<f32>, ConfigError> {
        self.rope.inv_freq(self.head_dim)
    }

    /// The attention's softmax scale: 1/sqrt(head_dim), times the square of the factor RoPE
    /// scales q and k by (YaRN).
    pub fn softmax_scale(&self) -> f32 {
        self.rope.attention_factor().powi(2) / (self.head_dim as f32).sqrt()
    }
}
