//! Llama-family decoder (Llama 2/3, SmolLM2, Mistral without sliding window, Qwen2) over the
//! paged KV cache. The model borrows the cache for each forward and owns no per-request state.

use super::attention::{Attention, AttentionMetadata, AttentionShape};
use super::batch::ForwardBatch;
use super::config::LlamaConfig;
use super::linear::Linear;
use super::rope::{Rope, RopeTables};
use super::weights::WeightSource;
use super::CausalLm;
use candle_core::{DType, Device, Result, Tensor};
use candle_nn::ops::rms_norm;

#[derive(Clone)]
struct Layer {
    attn_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    mlp_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
}

pub struct Llama {
    cfg: LlamaConfig,
    /// [vocab, hidden]
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Linear,
    rope: Rope,
    device: Device,
    /// Activations and dense weights (f32 on CPU by default, bf16 on CUDA).
    dtype: DType,
    span: tracing::Span,
}

impl Llama {
    /// Loads every weight from `w`, which places them on its device in its dtype.
    pub fn load(w: &mut dyn WeightSource, cfg: LlamaConfig) -> Result<Self> {
        let (device, dtype) = (w.device().clone(), w.dtype());
        let (h, nh, nkv, d) = (
            cfg.hidden_size,
            cfg.num_heads,
            cfg.num_kv_heads,
            cfg.head_dim,
        );
        let embed = w.dense("model.embed_tokens", &[cfg.vocab_size, h])?;
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let p = |m: &str| format!("model.layers.{i}.{m}");
            let bias = cfg.attention_bias;
            layers.push(Layer {
                attn_norm: w.dense(&p("input_layernorm"), &[h])?,
                q: w.linear(&p("self_attn.q_proj"), nh * d, h, bias)?,
                k: w.linear(&p("self_attn.k_proj"), nkv * d, h, bias)?,
                v: w.linear(&p("self_attn.v_proj"), nkv * d, h, bias)?,
                o: w.linear(&p("self_attn.o_proj"), h, nh * d, false)?,
                mlp_norm: w.dense(&p("post_attention_layernorm"), &[h])?,
                gate: w.linear(&p("mlp.gate_proj"), cfg.intermediate_size, h, false)?,
                up: w.linear(&p("mlp.up_proj"), cfg.intermediate_size, h, false)?,
                down: w.linear(&p("mlp.down_proj"), h, cfg.intermediate_size, false)?,
            });
        }
        let norm = w.dense("model.norm", &[h])?;
        let lm_head = if !cfg.tie_word_embeddings && w.contains("lm_head") {
            w.linear("lm_head", cfg.vocab_size, h, false)?
        } else {
            // Tied: the embedding matrix in the source's own format (quantized for GGUF).
            w.linear("model.embed_tokens", cfg.vocab_size, h, false)?
        };
        Ok(Self {
            rope: Rope::new(cfg.rope_inv_freq(), cfg.rope_interleaved),
            cfg,
            embed,
            layers,
            norm,
            lm_head,
            device,
            dtype,
            span: tracing::span!(tracing::Level::TRACE, "llama.forward"),
        })
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// This model on `device`: its dense weights copied there (shared where they already are).
    /// The model manager's host tier keeps an evicted GPU model this way on the CPU, and
    /// copies it back instead of reading and parsing its files again.
    pub fn to_device(&self, device: &Device) -> Result<Self> {
        let t = |x: &Tensor| x.to_device(device);
        let l = |x: &Linear| x.to_device(device);
        let layers = self
            .layers
            .iter()
            .map(|y| {
                Ok(Layer {
                    attn_norm: t(&y.attn_norm)?,
                    q: l(&y.q)?,
                    k: l(&y.k)?,
                    v: l(&y.v)?,
                    o: l(&y.o)?,
                    mlp_norm: t(&y.mlp_norm)?,
                    gate: l(&y.gate)?,
                    up: l(&y.up)?,
                    down: l(&y.down)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            cfg: self.cfg.clone(),
            embed: t(&self.embed)?,
            layers,
            norm: t(&self.norm)?,
            lm_head: l(&self.lm_head)?,
            rope: self.rope.clone(),
            device: device.clone(),
            dtype: self.dtype,
            span: self.span.clone(),
        })
    }

    /// Bytes of every weight.
    pub fn weight_bytes(&self) -> u64 {
        let tb = super::linear::tensor_bytes;
        let layers: u64 = self
            .layers
            .iter()
            .map(|y| {
                tb(&y.attn_norm)
                    + tb(&y.mlp_norm)
                    + [&y.q, &y.k, &y.v, &y.o, &y.gate, &y.up, &y.down]
                        .iter()
                        .map(|x| x.bytes())
                        .sum::<u64>()
            })
            .sum();
        tb(&self.embed) + layers + tb(&self.norm) + self.lm_head.bytes()
    }

    /// Self-attention of layer `i` over the paged cache. x: [T, hidden] (normed).
    fn attention(&self, i: usize, x: &Tensor, step: &Step, attn: &mut Attention) -> Result<Tensor> {
        let layer = &self.layers[i];
        let (nh, nkv) = (self.cfg.num_heads, self.cfg.num_kv_heads);
        // [T, H*D], [T, KvH*D], [T, KvH*D]
        let [q, k, v] = Linear::forward_many([&layer.q, &layer.k, &layer.v], x)?;
        let q = self.rope.apply(&q, nh, &step.rope)?;
        let k = self.rope.apply(&k, nkv, &step.rope)?;
        attn.write_kv(i, &k, &v, step.batch, &step.meta)?;
        let y = attn.attend(i, &q, step.batch, &step.meta)?;
        layer.o.forward(&y)
    }
}

/// What every layer of one step shares.
struct Step<'a> {
    batch: &'a ForwardBatch,
    rope: RopeTables,
    meta: AttentionMetadata,
}

impl CausalLm for Llama {
    fn forward(&self, batch: &ForwardBatch, attn: &mut Attention) -> Result<Tensor> {
        let _enter = self.span.enter();
        let t = batch.num_tokens();
        let eps = self.cfg.rms_norm_eps as f32;
        let ids = Tensor::from_slice(&batch.token_ids, t, &self.device)?;
        let mut x = self.embed.index_select(&ids, 0)?; // [T, hidden]
        let step = Step {
            batch,
            rope: self
                .rope
                .tables(&batch.positions, self.dtype, &self.device)?,
            meta: attn.prepare(batch)?,
        };
        for (i, layer) in self.layers.iter().enumerate() {
            let h = rms_norm(&x, &layer.attn_norm, eps)?;
            let a = self.attention(i, &h, &step, attn)?;
            x = (x + a)?;
            let h = rms_norm(&x, &layer.mlp_norm, eps)?;
            let a = Linear::forward_glu(&layer.gate, &layer.up, &h)?;
            x = (x + layer.down.forward(&a)?)?;
        }
        if batch.logits_rows.is_empty() {
            return Tensor::zeros((0, self.cfg.vocab_size), DType::F32, &self.device);
        }
        let rows = Tensor::from_slice(&batch.logits_rows, batch.logits_rows.len(), &self.device)?;
        let x = rms_norm(&x.index_select(&rows, 0)?, &self.norm, eps)?;
        self.lm_head.forward(&x)?.to_dtype(DType::F32) // [num_sampled, vocab]
    }

    fn num_layers(&self) -> usize {
        self.cfg.num_layers
    }

    fn attention_shape(&self) -> AttentionShape {
        AttentionShape {
            num_heads: self.cfg.num_heads,
            num_kv_heads: self.cfg.num_kv_heads,
            head_dim: self.cfg.head_dim,
        }
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
