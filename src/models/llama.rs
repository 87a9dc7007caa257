//! Llama-family decoder (Llama 2/3, SmolLM2, Mistral with its sliding window, Qwen2, Qwen3,
//! Phi-3, and with routed experts Mixtral, Qwen2/3-MoE, OLMoE) over the paged KV cache. The
//! model borrows the cache for each forward and owns no per-request state.

use super::attention::{Attention, AttentionShape};
use super::batch::ForwardBatch;
use super::config::{ConfigError, LlamaConfig, QkNormScope};
use super::fused;
use super::layers::{
    Activation, Embedding, GatedMlp, LmHead, QkNorm, SelfAttention, SparseMoe, StepContext,
};
use super::lora::LoraAdapter;
use super::lora_step::{LayerLoras, LoraStep};
use super::rope::{Rope, RopeTables};
use super::rope_params::RopeParams;
use super::weights::WeightSource;
use super::{CausalLm, Family, Model, ModelLoadError, StepInputs};
use candle_core::{DType, Device, Result, Tensor};
use candle_nn::ops::rms_norm;

/// The Llama family's registry entry: Llama 2/3, SmolLM2, Mistral (sliding window), Qwen2
/// (attention biases), Qwen3 (per-head q/k norms), Phi-3 / Phi-4 (fused q/k/v and gate/up
/// weights, a window) and the mixtures of experts Mixtral, Qwen2-MoE, Qwen3-MoE and OLMoE
/// (whole-projection q/k norms) share this decoder.
pub const FAMILY: Family = Family {
    name: "llama",
    gguf_archs: &[
        "llama", "qwen2", "qwen3", "phi3", "qwen2moe", "qwen3moe", "olmoe",
    ],
    hf_model_types: &[
        "llama",
        "mistral",
        "qwen2",
        "qwen3",
        "phi3",
        "mixtral",
        "qwen2_moe",
        "qwen3_moe",
        "olmoe",
    ],
    gguf_names: &[],
    load: load_family,
    check: |json| LlamaConfig::from_hf(json).map(|_| ()),
};

/// `FAMILY`'s `load`: the config from `config.json` or the GGUF metadata, then the weights.
fn load_family(
    w: &mut dyn WeightSource,
    config_json: Option<&serde_json::Value>,
) -> std::result::Result<Box<dyn Model>, ModelLoadError> {
    let cfg = match (config_json, w.gguf()) {
        (Some(json), _) => LlamaConfig::from_hf(json)?,
        (None, Some(ct)) => {
            let mut cfg = LlamaConfig::from_gguf(ct)?;
            // Phi-3's LongRoPE: its two factor sets as tensors
            if w.contains("rope_factors_long") {
                let half = cfg.head_dim / 2;
                let mut factors = |name: &str| -> Result<Vec<f32>> {
                    w.dense(name, &[half])?.to_dtype(DType::F32)?.to_vec1()
                };
                let (short, long) = (
                    factors("rope_factors_short")?,
                    factors("rope_factors_long")?,
                );
                let ct = w.gguf().expect("a GGUF source");
                let arch = super::config::gguf_architecture(ct);
                cfg.rope.scaling = RopeParams::gguf_longrope(ct, &arch, short, long)?;
            }
            // llama.cpp keeps Llama 3.1's RoPE scaling as a tensor of frequency divisors
            if w.contains("rope_freqs") {
                let t = w.dense("rope_freqs", &[cfg.head_dim / 2])?;
                cfg.rope = cfg
                    .rope
                    .with_freq_factors(t.to_dtype(DType::F32)?.to_vec1()?)?;
            }
            cfg
        }
        (None, None) => {
            return Err(ConfigError::Invalid("no config.json and no GGUF metadata".into()).into())
        }
    };
    Ok(Box::new(Llama::load(w, cfg)?))
}

/// One decoder layer: pre-norm self-attention, then a pre-norm gated MLP or mixture of
/// experts.
#[derive(Clone)]
struct Layer {
    attn_norm: Tensor,
    attn: SelfAttention,
    mlp_norm: Tensor,
    mlp: FeedForward,
}

/// A layer's feed-forward block.
#[derive(Clone)]
enum FeedForward {
    Dense(GatedMlp),
    Sparse(SparseMoe),
}

impl FeedForward {
    /// The block of layer `i`: dense, or routed experts where the config has them.
    fn load(w: &mut dyn WeightSource, cfg: &LlamaConfig, i: usize) -> Result<Self> {
        let (h, p) = (cfg.hidden_size, format!("model.layers.{i}"));
        match cfg.moe.as_ref().filter(|m| m.sparse_layers[i]) {
            // Mixtral names its block and experts its own way
            Some(m) if w.contains(&format!("{p}.block_sparse_moe.gate")) => Ok(Self::Sparse(
                SparseMoe::load_mixtral(w, &format!("{p}.block_sparse_moe"), h, m)?,
            )),
            Some(m) => Ok(Self::Sparse(SparseMoe::load(w, &format!("{p}.mlp"), h, m)?)),
            None => {
                // Phi-3 stores gate and up as one weight
                let load = match cfg.fused_projections {
                    true => GatedMlp::load_fused,
                    false => GatedMlp::load,
                };
                let mlp = load(
                    w,
                    &format!("{p}.mlp"),
                    h,
                    cfg.intermediate_size,
                    Activation::Silu,
                );
                Ok(Self::Dense(mlp?))
            }
        }
    }

    /// `lora`: the step's adapters at this layer (a sparse MoE layer takes none).
    fn forward(&self, h: &Tensor, kernels: bool, lora: &LayerLoras) -> Result<Tensor> {
        match self {
            Self::Dense(m) => m.forward_lora(h, kernels, lora),
            Self::Sparse(m) => m.forward(h, kernels),
        }
    }

    fn is_merged(&self) -> bool {
        match self {
            Self::Dense(m) => m.is_merged(),
            Self::Sparse(_) => false,
        }
    }

    fn to_device(&self, device: &Device) -> Result<Self> {
        Ok(match self {
            Self::Dense(m) => Self::Dense(m.to_device(device)?),
            Self::Sparse(m) => Self::Sparse(m.to_device(device)?),
        })
    }

    fn bytes(&self) -> u64 {
        match self {
            Self::Dense(m) => m.bytes(),
            Self::Sparse(m) => m.bytes(),
        }
    }
}

pub struct Llama {
    cfg: LlamaConfig,
    /// [vocab, hidden]
    embed: Embedding,
    layers: Vec<Layer>,
    /// The final norm and the vocabulary projection.
    head: LmHead,
    rope: Rope,
    device: Device,
    /// Activations and dense weights (f32 on CPU by default, bf16 on CUDA).
    dtype: DType,
    /// On CUDA: `kernels/fused.cu` for the residual add + RMSNorm, SiLU-mul and RoPE of the
    /// merged QKV (off: the candle ops they fuse, `--no-fused-kernels`).
    fused_kernels: bool,
    /// RoPE's inverse frequencies on `device` (the fused kernel computes the angles).
    rope_inv_freq: Tensor,
    /// Served as an embedding model (`--task embed`): its last token's final hidden state.
    embedding: Option<super::EmbeddingInfo>,
    /// LoRA adapters requests may run with (`LoraId` i is `loras[i]`; None: unloaded).
    loras: parking_lot::RwLock<Vec<Option<LoraAdapter>>>,
    span: tracing::Span,
}

impl Llama {
    /// Loads every weight from `w`, which places them on its device in its dtype.
    pub fn load(w: &mut dyn WeightSource, cfg: LlamaConfig) -> Result<Self> {
        let (device, dtype) = (w.device().clone(), w.dtype());
        let h = cfg.hidden_size;
        let shape = attention_shape(&cfg);
        let embed = Embedding::load(w, "model.embed_tokens", cfg.vocab_size, h)?;
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let p = |m: &str| format!("model.layers.{i}.{m}");
            let attn = if cfg.fused_projections {
                SelfAttention::load_fused(w, &p("self_attn"), shape, h)?
            } else {
                SelfAttention::load(w, &p("self_attn"), shape, h, cfg.attention_bias)?
            };
            let mut attn = attn.with_window(cfg.sliding_layers[i]);
            if let Some(scope) = cfg.qk_norm {
                let (q, k) = match scope {
                    QkNormScope::Head => (cfg.head_dim, cfg.head_dim),
                    QkNormScope::Projection => (shape.q_dim(), shape.kv_dim()),
                };
                attn = attn.with_qk_norm(QkNorm {
                    q: w.dense(&p("self_attn.q_norm"), &[q])?,
                    k: w.dense(&p("self_attn.k_norm"), &[k])?,
                    eps: cfg.rms_norm_eps as f32,
                });
            }
            let mlp = FeedForward::load(w, &cfg, i)?;
            layers.push(Layer {
                attn_norm: w.dense(&p("input_layernorm"), &[h])?,
                attn,
                mlp_norm: w.dense(&p("post_attention_layernorm"), &[h])?,
                mlp,
            });
        }
        let final_norm = w.dense("model.norm", &[h])?;
        let head = LmHead::load(w, final_norm, &cfg)?;
        let msg = |e: ConfigError| candle_core::Error::Msg(e.to_string());
        let inv_freq = cfg.rope_inv_freq().map_err(msg)?;
        let long = cfg.rope.long_inv_freq(cfg.head_dim).map_err(msg)?;
        let rope = Rope::new(inv_freq, cfg.rope_interleaved).with_long(long);
        Ok(Self {
            rope_inv_freq: rope.inv_freq_on(&device)?,
            rope,
            cfg,
            embed,
            layers,
            head,
            fused_kernels: device.is_cuda(),
            device,
            dtype,
            embedding: None,
            loras: Default::default(),
            span: tracing::span!(tracing::Level::TRACE, "llama.forward"),
        })
    }

    /// The residual stream after the last layer [T, hidden] (before the final norm).
    fn residual(
        &self,
        batch: &ForwardBatch,
        inputs: &StepInputs,
        attn: &mut Attention,
    ) -> Result<Tensor> {
        let _enter = self.span.enter();
        let eps = self.cfg.rms_norm_eps as f32;
        let mut x = self.embed.forward(&inputs.token_ids)?; // [T, hidden]
                                                            // the fused RoPE kernel computes its angles from the positions: no host trigonometry
        let rope = match &inputs.positions {
            Some(positions) => RopeTables::Device {
                positions: positions.clone(),
                inv_freq: self.rope_inv_freq.clone(),
            },
            None => self
                .rope
                .tables(&batch.positions, self.dtype, &self.device)?,
        };
        let adapters = self.loras.read();
        let loras = LoraStep::new(&adapters, &batch.lora_rows, &self.device)?;
        let step = StepContext {
            batch,
            rope,
            meta: &inputs.attention,
            lora: &loras,
        };
        let k = self.kernels();
        // h: the normed input of the next sublayer; each residual add is fused with the norm
        // that follows it
        let mut h = match self.layers.first() {
            Some(first) => rms_norm(&x, &first.attn_norm, eps)?,
            None => x.clone(),
        };
        for (i, layer) in self.layers.iter().enumerate() {
            let a = layer.attn.forward(i, &h, &self.rope, &step, attn)?;
            let (x1, h1) = fused::add_rms_norm(&x, &a, &layer.mlp_norm, eps, k)?;
            let m = layer.mlp.forward(&h1, k, &step.lora.layer(i))?;
            match self.layers.get(i + 1) {
                Some(next) => (x, h) = fused::add_rms_norm(&x1, &m, &next.attn_norm, eps, k)?,
                None => x = (x1 + m)?,
            }
        }
        Ok(x)
    }

    /// The fused kernels run on this step's device.
    fn kernels(&self) -> bool {
        self.fused_kernels && self.device.is_cuda()
    }
}

impl Model for Llama {
    fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// Whether q/k/v and gate/up run as one GEMM each (dense weights).
    fn projections_merged(&self) -> bool {
        self.layers
            .iter()
            .all(|l| l.attn.is_merged() && l.mlp.is_merged())
    }

    /// Whether CUDA runs weir's fused kernels (the default) or the candle ops they replace.
    fn set_fused_kernels(&mut self, on: bool) {
        self.fused_kernels = on;
    }

    fn set_embedding(&mut self, info: super::EmbeddingInfo) -> bool {
        self.embedding = Some(info);
        true
    }

    /// This model on `device`: its dense weights copied there (shared where they already are).
    /// The model manager's host tier keeps an evicted GPU model this way on the CPU, and
    /// copies it back instead of reading and parsing its files again.
    fn to_device(&self, device: &Device) -> Result<std::sync::Arc<dyn Model>> {
        let t = |x: &Tensor| x.to_device(device);
        let layers = self
            .layers
            .iter()
            .map(|y| {
                Ok(Layer {
                    attn_norm: t(&y.attn_norm)?,
                    attn: y.attn.to_device(device)?,
                    mlp_norm: t(&y.mlp_norm)?,
                    mlp: y.mlp.to_device(device)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(std::sync::Arc::new(Self {
            cfg: self.cfg.clone(),
            embed: self.embed.to_device(device)?,
            layers,
            head: self.head.to_device(device)?,
            rope: self.rope.clone(),
            rope_inv_freq: t(&self.rope_inv_freq)?,
            device: device.clone(),
            dtype: self.dtype,
            fused_kernels: self.fused_kernels,
            embedding: self.embedding,
            loras: parking_lot::RwLock::new(
                self.loras
                    .read()
                    .iter()
                    .map(|a| a.as_ref().map(|a| a.to_device(device)).transpose())
                    .collect::<Result<_>>()?,
            ),
            span: self.span.clone(),
        }))
    }

    /// Bytes of every weight.
    fn weight_bytes(&self) -> u64 {
        let tb = super::linear::tensor_bytes;
        let layers: u64 = self
            .layers
            .iter()
            .map(|y| tb(&y.attn_norm) + tb(&y.mlp_norm) + y.attn.bytes() + y.mlp.bytes())
            .sum();
        let loras: u64 = self
            .loras
            .read()
            .iter()
            .flatten()
            .map(LoraAdapter::bytes)
            .sum();
        self.embed.bytes() + layers + self.head.bytes() + loras
    }

    fn serves_loras(&self) -> bool {
        // NOTE: adapters of a fused-projection (Phi-3) or mixture-of-experts model name
        // modules weir does not adapt
        !self.cfg.fused_projections && self.cfg.moe.is_none()
    }

    fn set_lora(&self, index: u32, adapter: Option<LoraAdapter>) -> bool {
        if !self.serves_loras() {
            return false;
        }
        let mut slots = self.loras.write();
        let i = index as usize;
        if slots.len() <= i {
            slots.resize_with(i + 1, || None);
        }
        slots[i] = adapter;
        true
    }

    fn lora_bytes(&self) -> Vec<Option<u64>> {
        let slots = self.loras.read();
        slots
            .iter()
            .map(|a| a.as_ref().map(LoraAdapter::bytes))
            .collect()
    }
}

/// The attention shape `cfg` describes.
fn attention_shape(cfg: &LlamaConfig) -> AttentionShape {
    AttentionShape {
        num_heads: cfg.num_heads,
        num_kv_heads: cfg.num_kv_heads,
        head_dim: cfg.head_dim,
        softmax_scale: cfg.softmax_scale(),
        sliding_window: cfg.sliding_window,
        logit_softcap: None,
    }
}

impl CausalLm for Llama {
    fn upload(&self, batch: &ForwardBatch, attn: &Attention) -> Result<StepInputs> {
        super::upload_step(batch, attn, &self.device, self.graph_capable())
    }

    fn forward_inputs(
        &self,
        batch: &ForwardBatch,
        inputs: &StepInputs,
        attn: &mut Attention,
    ) -> Result<Tensor> {
        let x = self.residual(batch, inputs, attn)?;
        let eps = self.cfg.rms_norm_eps as f32;
        self.head.logits(x, batch, inputs.logits_rows.as_ref(), eps)
    }

    fn embed(&self, batch: &ForwardBatch, attn: &mut Attention) -> Result<Vec<Vec<f32>>> {
        let Some(info) = self.embedding else {
            candle_core::bail!("this model generates; it has no embeddings")
        };
        let inputs = self.upload(batch, attn)?;
        let x = self.residual(batch, &inputs, attn)?;
        let eps = self.cfg.rms_norm_eps as f32;
        if !info.mean {
            let rows = self
                .head
                .final_hidden(x, batch, inputs.logits_rows.as_ref(), eps)?;
            let rows = rows.to_dtype(DType::F32)?.to_vec2::<f32>()?;
            return Ok(super::pooled_rows(rows, info.normalized));
        }
        // the mean of each pooling sequence's rows, its whole prompt in this step
        let seqs: Vec<_> = batch
            .seqs
            .iter()
            .filter(|s| s.sample)
            .map(|s| {
                if s.context_len != s.query_len {
                    candle_core::bail!("mean pooling needs whole prompts");
                }
                Ok(s.query_start..s.query_start + s.query_len)
            })
            .collect::<Result<_>>()?;
        let rows = self.head.final_hidden(x, batch, None, eps)?;
        let means = super::bert::pool(&rows, &seqs, super::bert::Pooling::Mean)?;
        Ok(super::pooled_rows(means, info.normalized))
    }

    fn embedding(&self) -> Option<super::EmbeddingInfo> {
        self.embedding
    }

    fn graph_capable(&self) -> bool {
        // windowed models attend through the tensor backend, which CUDA graphs do not capture;
        // routing reads the router's scores on the host
        self.kernels()
            && self.cfg.sliding_window.is_none()
            && self.cfg.moe.is_none()
            && self.rope.device_capable()
            && self.layers.iter().all(|l| l.attn.fused_rope_capable())
    }

    fn num_layers(&self) -> usize {
        self.cfg.num_layers
    }

    fn sliding_layers(&self) -> Vec<bool> {
        self.cfg.sliding_layers.clone()
    }

    fn attention_shape(&self) -> AttentionShape {
        attention_shape(&self.cfg)
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn dtype(&self) -> DType {
        self.dtype
    }

    fn max_context_len(&self) -> usize {
        self.cfg.max_position_embeddings
    }

    fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }
}
