//! Gemma 2 and Gemma 3 (text) over the paged KV cache: the Llama decoder's parts rearranged.
//! Each layer normalizes before and after attention and before and after its GeGLU MLP; the
//! embedding is scaled by sqrt(hidden); the softmax scale is `query_pre_attn_scalar^-1/2`;
//! sliding-window (local) layers alternate with global ones.
//!
//! | | Gemma 2 | Gemma 3 |
//! |---|---|---|
//! | local : global layers | 1 : 1 | 5 : 1 |
//! | RoPE | one base | local base 10000, global the model's (and its scaling) |
//! | q / k heads | as projected | RMS-normalized before RoPE |
//! | soft-capping | attention logits, final logits | none (final when a config sets it) |
//!
//! Gemma's norms scale by `1 + w`: a Hugging Face checkpoint stores `w` (weir adds the 1 at
//! load), a GGUF file already `1 + w`.

use super::attention::{Attention, AttentionShape};
use super::batch::ForwardBatch;
use super::config::{layer_kinds, windowed_layers, ConfigError, LlamaConfig, QkNormScope};
use super::fused;
use super::layers::{Activation, Embedding, GatedMlp, LmHead, QkNorm, SelfAttention, StepContext};
use super::rope::Rope;
use super::rope_params::{RopeParams, RopeScaling};
use super::weights::WeightSource;
use super::{CausalLm, Family, Model, ModelLoadError, StepInputs};
use candle_core::{DType, Device, Result, Tensor};
use candle_nn::ops::rms_norm;
use serde::Deserialize;
use serde_json::Value;

/// The Gemma family's registry entry: Gemma 2, and Gemma 3's text model (`gemma3`
/// checkpoints with a vision tower are not).
pub const FAMILY: Family = Family {
    name: "gemma",
    gguf_archs: &["gemma2", "gemma3"],
    hf_model_types: &["gemma2", "gemma3_text"],
    gguf_names: &[("post_attention_layernorm", "post_attention_norm")],
    load: load_family,
    check: |json| GemmaConfig::from_hf(json).map(|_| ()),
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Gemma2,
    Gemma3,
}

impl Version {
    /// Every `layer_pattern()`-th layer is global, the others slide.
    fn layer_pattern(self) -> usize {
        match self {
            Self::Gemma2 => 2,
            Self::Gemma3 => 6,
        }
    }
}

/// Gemma 3's local layers' RoPE base when the checkpoint does not name one.
const LOCAL_ROPE_THETA: f32 = 10_000.0;

#[derive(Debug, Clone, PartialEq)]
pub struct GemmaConfig {
    pub version: Version,
    /// The decoder's shape; `rope` is the global layers' RoPE, `qk_norm` Gemma 3's.
    pub base: LlamaConfig,
    /// RoPE of the sliding-window layers.
    pub local_rope: RopeParams,
    pub query_pre_attn_scalar: f64,
    /// Attention scores become `cap · tanh(scores / cap)` before the softmax (Gemma 2).
    pub attn_logit_softcapping: Option<f64>,
    /// Logits become `cap · tanh(logits / cap)` (Gemma 2; null in Gemma 3).
    pub final_logit_softcapping: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct HfGemmaConfig {
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
    query_pre_attn_scalar: Option<f64>,
    sliding_window: Option<usize>,
    sliding_window_pattern: Option<usize>,
    layer_types: Option<Vec<String>>,
    rope_local_base_freq: Option<f32>,
    hidden_activation: Option<String>,
    // null is as absent (transformers writes `use_bidirectional_attention: null`)
    attention_bias: Option<bool>,
    tie_word_embeddings: Option<bool>,
    use_bidirectional_attention: Option<bool>,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_max_pos() -> usize {
    131_072
}

/// A soft-capping field: absent from a Gemma 2 config, transformers' defaults (attention 50,
/// final 30); `null`, none.
fn softcap(
    json: &Value,
    key: &str,
    version: Version,
) -> std::result::Result<Option<f64>, ConfigError> {
    match (json.get(key), version) {
        (None, Version::Gemma2) if key == "attn_logit_softcapping" => Ok(Some(50.0)),
        (None, Version::Gemma2) => Ok(Some(30.0)),
        (None | Some(Value::Null), _) => Ok(None),
        (Some(v), _) => v.as_f64().filter(|c| *c > 0.0).map(Some).ok_or_else(|| {
            ConfigError::Invalid(format!("{key} must be a positive number, got {v}"))
        }),
    }
}

/// Layer `i` slides unless it is the last of its group of `pattern`.
fn pattern_layers(num_layers: usize, pattern: usize) -> Vec<bool> {
    (0..num_layers)
        .map(|i| pattern == 0 || (i + 1) % pattern != 0)
        .collect()
}

impl GemmaConfig {
    pub fn from_hf(json: &Value) -> std::result::Result<Self, ConfigError> {
        let hf = HfGemmaConfig::deserialize(json)
            .map_err(|e| ConfigError::Invalid(format!("config.json: {e}")))?;
        let version = match super::config::hf_model_type(json) {
            "gemma2" => Version::Gemma2,
            _ => Version::Gemma3,
        };
        let unsupported = |m: String| Err(ConfigError::Unsupported(m));
        if let Some(act) = hf
            .hidden_activation
            .as_deref()
            .filter(|a| *a != "gelu_pytorch_tanh")
        {
            return unsupported(format!(
                "hidden_activation {act:?} (Gemma runs gelu_pytorch_tanh)"
            ));
        }
        if hf.use_bidirectional_attention == Some(true) {
            return unsupported("use_bidirectional_attention (an encoder)".into());
        }
        if json.get("quantization_config").is_some() {
            return unsupported("quantization_config; weir reads unquantized safetensors".into());
        }
        let n = hf.num_hidden_layers;
        let layers = match &hf.layer_types {
            Some(types) => layer_kinds(types, n)?,
            None => pattern_layers(
                n,
                hf.sliding_window_pattern.unwrap_or(version.layer_pattern()),
            ),
        };
        // transformers' defaults for Gemma 2 and 3: a 4096-token window (absent, not null),
        // head_dim and query_pre_attn_scalar 256
        let window = match json.get("sliding_window") {
            None => Some(4096),
            Some(_) => hf.sliding_window,
        };
        let (sliding_window, sliding_layers) = windowed_layers(window, layers);
        let head_dim = hf.head_dim.unwrap_or(256);
        let nested = |lt: &str| {
            ["rope_parameters", "rope_scaling"]
                .iter()
                .any(|k| json.get(k).and_then(|d| d.get(lt)).is_some())
        };
        let rope = RopeParams::from_hf(json, Some("full_attention"))?;
        let local_rope = if nested("sliding_attention") {
            RopeParams::from_hf(json, Some("sliding_attention"))?
        } else if version == Version::Gemma2 {
            rope.clone()
        } else {
            RopeParams {
                theta: hf.rope_local_base_freq.unwrap_or(LOCAL_ROPE_THETA),
                scaling: RopeScaling::None,
            }
        };
        let base = LlamaConfig {
            hidden_size: hf.hidden_size,
            intermediate_size: hf.intermediate_size,
            num_layers: n,
            num_heads: hf.num_attention_heads,
            num_kv_heads: hf.num_key_value_heads.unwrap_or(hf.num_attention_heads),
            head_dim,
            vocab_size: hf.vocab_size,
            rms_norm_eps: hf.rms_norm_eps,
            rope,
            rope_interleaved: false,
            max_position_embeddings: hf.max_position_embeddings,
            tie_word_embeddings: hf.tie_word_embeddings.unwrap_or(true),
            attention_bias: hf.attention_bias.unwrap_or(false),
            qk_norm: (version == Version::Gemma3).then_some(QkNormScope::Head),
            sliding_window,
            sliding_layers,
            fused_projections: false,
            moe: None,
        };
        base.validate()?;
        Ok(Self {
            version,
            base,
            local_rope,
            query_pre_attn_scalar: hf.query_pre_attn_scalar.unwrap_or(256.0),
            attn_logit_softcapping: softcap(json, "attn_logit_softcapping", version)?,
            final_logit_softcapping: softcap(json, "final_logit_softcapping", version)?,
        })
    }

    /// From GGUF metadata (`gemma2.*`, `gemma3.*`), with llama.cpp's fixed choices: every
    /// second (Gemma 2) or sixth (Gemma 3) layer global, Gemma 3's local RoPE base
    /// `rope.freq_base_swa` or 10000, and
    /// the query scale of the 27B models (46 / 62 layers) from hidden / heads, of the others
    /// from the head size.
    pub fn from_gguf(
        ct: &candle_core::quantized::gguf_file::Content,
    ) -> std::result::Result<Self, ConfigError> {
        let arch = super::config::gguf_architecture(ct);
        let version = match arch.as_str() {
            "gemma2" => Version::Gemma2,
            _ => Version::Gemma3,
        };
        let meta = |k: &str| ct.metadata.get(&format!("{arch}.{k}"));
        let invalid =
            |k: &str, e: candle_core::Error| ConfigError::Invalid(format!("{arch}.{k}: {e}"));
        let window = meta("attention.sliding_window")
            .map(|v| v.to_u32().map(|w| w as usize))
            .transpose()
            .map_err(|e| invalid("attention.sliding_window", e))?;
        // an optional f32 value
        let cap = |k: &str| -> std::result::Result<Option<f64>, ConfigError> {
            meta(k)
                .map(|v| v.to_f32().map(f64::from))
                .transpose()
                .map_err(|e| invalid(k, e))
        };
        // llama.cpp's defaults for Gemma 2 files that predate these keys
        let gemma2 = version == Version::Gemma2;
        let window = window.or(gemma2.then_some(4096));
        let (attn_cap, final_cap) = (
            cap("attn_logit_softcapping")?.or(gemma2.then_some(50.0)),
            cap("final_logit_softcapping")?.or(gemma2.then_some(30.0)),
        );
        let mut base = LlamaConfig::from_gguf(ct)?;
        let layers = pattern_layers(base.num_layers, version.layer_pattern());
        (base.sliding_window, base.sliding_layers) = windowed_layers(window, layers);
        let query_pre_attn_scalar = match (version, base.num_layers) {
            (Version::Gemma2, 46) | (Version::Gemma3, 62) => {
                (base.hidden_size / base.num_heads) as f64
            }
            _ => base.head_dim as f64,
        };
        base.qk_norm = (version == Version::Gemma3).then_some(QkNormScope::Head);
        base.validate()?;
        let local_rope = match version {
            Version::Gemma2 => base.rope.clone(),
            Version::Gemma3 => RopeParams {
                theta: cap("rope.freq_base_swa")?.map_or(LOCAL_ROPE_THETA, |t| t as f32),
                scaling: RopeScaling::None,
            },
        };
        Ok(Self {
            version,
            base,
            local_rope,
            query_pre_attn_scalar,
            attn_logit_softcapping: attn_cap,
            final_logit_softcapping: final_cap,
        })
    }

    fn attention_shape(&self) -> AttentionShape {
        let factor = self.base.rope.attention_factor();
        AttentionShape {
            num_heads: self.base.num_heads,
            num_kv_heads: self.base.num_kv_heads,
            head_dim: self.base.head_dim,
            softmax_scale: factor * factor / (self.query_pre_attn_scalar as f32).sqrt(),
            sliding_window: self.base.sliding_window,
            logit_softcap: self.attn_logit_softcapping.map(|c| c as f32),
        }
    }
}

fn load_family(
    w: &mut dyn WeightSource,
    config_json: Option<&Value>,
) -> std::result::Result<Box<dyn Model>, ModelLoadError> {
    let cfg = match (config_json, w.gguf()) {
        (Some(json), _) => GemmaConfig::from_hf(json)?,
        (None, Some(ct)) => GemmaConfig::from_gguf(ct)?,
        (None, None) => {
            return Err(ConfigError::Invalid("no config.json and no GGUF metadata".into()).into())
        }
    };
    Ok(Box::new(Gemma::load(w, cfg)?))
}

/// A norm's scale as weir multiplies by it: `1 + w` (GGUF files store it so already).
fn norm(w: &mut dyn WeightSource, name: &str, dim: usize) -> Result<Tensor> {
    let t = w.dense(name, &[dim])?;
    match w.gguf() {
        Some(_) => Ok(t),
        // in f32, as transformers adds it, then the model's dtype
        None => t
            .to_dtype(DType::F32)?
            .affine(1.0, 1.0)?
            .to_dtype(t.dtype()),
    }
}

#[derive(Clone)]
struct Layer {
    input_norm: Tensor,
    attn: SelfAttention,
    post_attn_norm: Tensor,
    pre_mlp_norm: Tensor,
    mlp: GatedMlp,
    post_mlp_norm: Tensor,
}

impl Layer {
    fn to_device(&self, device: &Device) -> Result<Self> {
        Ok(Self {
            input_norm: self.input_norm.to_device(device)?,
            attn: self.attn.to_device(device)?,
            post_attn_norm: self.post_attn_norm.to_device(device)?,
            pre_mlp_norm: self.pre_mlp_norm.to_device(device)?,
            mlp: self.mlp.to_device(device)?,
            post_mlp_norm: self.post_mlp_norm.to_device(device)?,
        })
    }

    fn bytes(&self) -> u64 {
        let tb = super::linear::tensor_bytes;
        tb(&self.input_norm)
            + tb(&self.post_attn_norm)
            + tb(&self.pre_mlp_norm)
            + tb(&self.post_mlp_norm)
            + self.attn.bytes()
            + self.mlp.bytes()
    }
}

pub struct Gemma {
    cfg: GemmaConfig,
    /// [vocab, hidden]
    embed: Embedding,
    layers: Vec<Layer>,
    /// The final norm and the vocabulary projection.
    head: LmHead,
    global_rope: Rope,
    local_rope: Rope,
    device: Device,
    dtype: DType,
    fused_kernels: bool,
    span: tracing::Span,
}

impl Gemma {
    pub fn load(w: &mut dyn WeightSource, cfg: GemmaConfig) -> Result<Self> {
        let (device, dtype) = (w.device().clone(), w.dtype());
        let c = &cfg.base;
        let (h, d) = (c.hidden_size, c.head_dim);
        let shape = cfg.attention_shape();
        let eps = c.rms_norm_eps as f32;
        let mut layers = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            let p = |m: &str| format!("model.layers.{i}.{m}");
            let mut attn = SelfAttention::load(w, &p("self_attn"), shape, h, c.attention_bias)?
                .with_window(c.sliding_layers[i]);
            if c.qk_norm.is_some() {
                attn = attn.with_qk_norm(QkNorm {
                    q: norm(w, &p("self_attn.q_norm"), d)?,
                    k: norm(w, &p("self_attn.k_norm"), d)?,
                    eps,
                });
            }
            layers.push(Layer {
                input_norm: norm(w, &p("input_layernorm"), h)?,
                attn,
                post_attn_norm: norm(w, &p("post_attention_layernorm"), h)?,
                pre_mlp_norm: norm(w, &p("pre_feedforward_layernorm"), h)?,
                mlp: GatedMlp::load(w, &p("mlp"), h, c.intermediate_size, Activation::GeluTanh)?,
                post_mlp_norm: norm(w, &p("post_feedforward_layernorm"), h)?,
            });
        }
        let embed = Embedding::load(w, "model.embed_tokens", c.vocab_size, h)?;
        let final_norm = norm(w, "model.norm", h)?;
        let head = LmHead::load(w, final_norm, c)?;
        let rope = |p: &RopeParams| -> Result<Rope> {
            let msg = |e: ConfigError| candle_core::Error::Msg(e.to_string());
            let inv_freq = p.inv_freq(d).map_err(msg)?;
            Ok(Rope::new(inv_freq, false).with_long(p.long_inv_freq(d).map_err(msg)?))
        };
        Ok(Self {
            global_rope: rope(&c.rope)?,
            local_rope: rope(&cfg.local_rope)?,
            embed,
            layers,
            head,
            fused_kernels: device.is_cuda(),
            device,
            dtype,
            cfg,
            span: tracing::span!(tracing::Level::TRACE, "gemma.forward"),
        })
    }

    fn kernels(&self) -> bool {
        self.fused_kernels && self.device.is_cuda()
    }
}

impl Model for Gemma {
    fn config(&self) -> &LlamaConfig {
        &self.cfg.base
    }

    fn weight_bytes(&self) -> u64 {
        let layers: u64 = self.layers.iter().map(Layer::bytes).sum();
        self.embed.bytes() + layers + self.head.bytes()
    }

    fn to_device(&self, device: &Device) -> Result<std::sync::Arc<dyn Model>> {
        let layers = self
            .layers
            .iter()
            .map(|l| l.to_device(device))
            .collect::<Result<_>>()?;
        Ok(std::sync::Arc::new(Self {
            cfg: self.cfg.clone(),
            embed: self.embed.to_device(device)?,
            layers,
            head: self.head.to_device(device)?,
            global_rope: self.global_rope.clone(),
            local_rope: self.local_rope.clone(),
            device: device.clone(),
            dtype: self.dtype,
            fused_kernels: self.fused_kernels,
            span: self.span.clone(),
        }))
    }

    fn projections_merged(&self) -> bool {
        self.layers
            .iter()
            .all(|l| l.attn.is_merged() && l.mlp.is_merged())
    }

    fn set_fused_kernels(&mut self, on: bool) {
        self.fused_kernels = on;
    }
}

impl CausalLm for Gemma {
    fn upload(&self, batch: &ForwardBatch, attn: &Attention) -> Result<StepInputs> {
        super::upload_step(batch, attn, &self.device, false)
    }

    fn forward_inputs(
        &self,
        batch: &ForwardBatch,
        inputs: &StepInputs,
        attn: &mut Attention,
    ) -> Result<Tensor> {
        let _enter = self.span.enter();
        let eps = self.cfg.base.rms_norm_eps as f32;
        let scale = (self.cfg.base.hidden_size as f64).sqrt();
        let mut x = (self.embed.forward(&inputs.token_ids)? * scale)?;
        let step = |rope: &Rope| -> Result<StepContext> {
            Ok(StepContext {
                batch,
                rope: rope.tables(&batch.positions, self.dtype, &self.device)?,
                meta: &inputs.attention,
                lora: &super::lora_step::NO_ADAPTERS,
            })
        };
        let (global, local) = (step(&self.global_rope)?, step(&self.local_rope)?);
        let k = self.kernels();
        let mut h = match self.layers.first() {
            Some(first) => rms_norm(&x, &first.input_norm, eps)?,
            None => x.clone(),
        };
        for (i, layer) in self.layers.iter().enumerate() {
            let (rope, ctx) = match self.cfg.base.sliding_layers[i] {
                true => (&self.local_rope, &local),
                false => (&self.global_rope, &global),
            };
            let a = layer.attn.forward(i, &h, rope, ctx, attn)?;
            let a = rms_norm(&a, &layer.post_attn_norm, eps)?;
            let (x1, h1) = fused::add_rms_norm(&x, &a, &layer.pre_mlp_norm, eps, k)?;
            let m = layer.mlp.forward(&h1, k)?;
            let m = rms_norm(&m, &layer.post_mlp_norm, eps)?;
            match self.layers.get(i + 1) {
                Some(next) => (x, h) = fused::add_rms_norm(&x1, &m, &next.input_norm, eps, k)?,
                None => x = (x1 + m)?,
            }
        }
        let logits = self
            .head
            .logits(x, batch, inputs.logits_rows.as_ref(), eps)?;
        match self.cfg.final_logit_softcapping {
            Some(cap) => (logits / cap)?.tanh()? * cap,
            None => Ok(logits),
        }
    }

    fn num_layers(&self) -> usize {
        self.cfg.base.num_layers
    }

    fn sliding_layers(&self) -> Vec<bool> {
        self.cfg.base.sliding_layers.clone()
    }

    fn attention_shape(&self) -> AttentionShape {
        self.cfg.attention_shape()
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn dtype(&self) -> DType {
        self.dtype
    }

    fn max_context_len(&self) -> usize {
        self.cfg.base.max_position_embeddings
    }

    fn vocab_size(&self) -> usize {
        self.cfg.base.vocab_size
    }
}
