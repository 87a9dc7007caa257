//! Llama-family decoder (Llama 2/3, SmolLM2, Mistral without sliding window, Qwen2) over the
//! paged KV cache. The model borrows the cache for each forward and owns no per-request state.

use super::attention::{paged_attention, write_kv, AttentionShape, StepTables};
use super::config::LlamaConfig;
use super::linear::Linear;
use super::weights::WeightSource;
use super::CausalLm;
use crate::kv::KvCache;
use crate::runner::batch::ForwardBatch;
use candle_core::{Device, Result, Tensor};
use candle_nn::ops::rms_norm;

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
    inv_freq: Vec<f32>,
    device: Device,
    span: tracing::Span,
}

impl Llama {
    pub fn load(w: &mut dyn WeightSource, cfg: LlamaConfig, device: &Device) -> Result<Self> {
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
            inv_freq: cfg.rope_inv_freq(),
            cfg,
            embed,
            layers,
            norm,
            lm_head,
            device: device.clone(),
            span: tracing::span!(tracing::Level::TRACE, "llama.forward"),
        })
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    fn attention_shape(&self) -> AttentionShape {
        AttentionShape {
            num_heads: self.cfg.num_heads,
            num_kv_heads: self.cfg.num_kv_heads,
            head_dim: self.cfg.head_dim,
        }
    }

    /// Self-attention of one layer over the paged cache. x: [T, hidden] (normed).
    fn attention(
        &self,
        layer: &Layer,
        x: &Tensor,
        tables: &StepTables,
        batch: &ForwardBatch,
        kv: &mut crate::kv::cache::LayerKv,
    ) -> Result<Tensor> {
        let shape = self.attention_shape();
        let t = x.dim(0)?;
        // [T, H*D], [T, KvH*D], [T, KvH*D]
        let mut q = layer.q.forward(x)?.flatten_all()?.to_vec1::<f32>()?;
        let mut k = layer.k.forward(x)?.flatten_all()?.to_vec1::<f32>()?;
        let v = layer.v.forward(x)?.flatten_all()?.to_vec1::<f32>()?;
        tables.rope.apply(&mut q, shape.num_heads);
        tables.rope.apply(&mut k, shape.num_kv_heads);
        write_kv(kv, &k, &v, &batch.slot_mapping, shape.kv_dim());
        let y = paged_attention(&q, kv, batch, &tables.token_seq, shape);
        let y = Tensor::from_vec(y, (t, shape.q_dim()), &self.device)?;
        layer.o.forward(&y)
    }
}

impl CausalLm for Llama {
    fn forward(&self, batch: &ForwardBatch, kv: &mut KvCache) -> Result<Tensor> {
        let _enter = self.span.enter();
        let t = batch.num_tokens();
        let eps = self.cfg.rms_norm_eps as f32;
        let ids = Tensor::from_slice(&batch.token_ids, t, &self.device)?;
        let mut x = self.embed.index_select(&ids, 0)?; // [T, hidden]
        let tables = StepTables::new(&self.inv_freq, batch, self.cfg.rope_interleaved);
        for (i, layer) in self.layers.iter().enumerate() {
            let h = rms_norm(&x, &layer.attn_norm, eps)?;
            let a = self.attention(layer, &h, &tables, batch, kv.layer_mut(i))?;
            x = (x + a)?;
            let h = rms_norm(&x, &layer.mlp_norm, eps)?;
            let g = layer.gate.forward(&h)?.silu()?;
            let u = layer.up.forward(&h)?;
            x = (x + layer.down.forward(&(g * u)?)?)?;
        }
        if batch.logits_rows.is_empty() {
            return Tensor::zeros(
                (0, self.cfg.vocab_size),
                candle_core::DType::F32,
                &self.device,
            );
        }
        let rows = Tensor::from_slice(&batch.logits_rows, batch.logits_rows.len(), &self.device)?;
        let x = rms_norm(&x.index_select(&rows, 0)?, &self.norm, eps)?;
        self.lm_head.forward(&x) // [num_sampled, vocab]
    }

    fn kv_shape(&self) -> (usize, usize, usize) {
        (
            self.cfg.num_layers,
            self.cfg.num_kv_heads,
            self.cfg.head_dim,
        )
    }

    fn max_context_len(&self) -> usize {
        self.cfg.max_position_embeddings
    }

    fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }
}
