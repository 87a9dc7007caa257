//! `SelfAttention`: the q/k/v projections, the q/k norms some families have (per head: Qwen3,
//! Gemma 3; whole projection: OLMoE), rotary embedding and output projection around the paged attention the runner lends
//! (`Attention`: the backend and its KV pool), through the sliding window in the layers that
//! have one.

use super::projs::Projs;
use super::StepContext;
use crate::models::attention::{Attention, AttentionShape};
use crate::models::linear::Linear;
use crate::models::lora::Target;
use crate::models::rope::Rope;
use crate::models::weights::WeightSource;
use candle_core::{Device, Result, Tensor};
use candle_nn::ops::rms_norm;

/// RMSNorm scales of q and k, applied before RoPE: of each head ([head_dim]: Qwen3, Gemma 3) or
/// of the whole projection ([heads * head_dim]: OLMoE).
#[derive(Clone)]
pub struct QkNorm {
    pub q: Tensor,
    pub k: Tensor,
    pub eps: f32,
}

impl QkNorm {
    /// x: [T, width], normalized in pieces of `w`'s length (a head, or the whole row).
    fn apply(x: &Tensor, w: &Tensor, eps: f32) -> Result<Tensor> {
        let (t, width) = x.dims2()?;
        let piece = w.dim(0)?;
        let rows = x.contiguous()?.reshape((t * width / piece, piece))?;
        rms_norm(&rows, w, eps)?.reshape((t, width))
    }

    fn to_device(&self, device: &Device) -> Result<Self> {
        Ok(Self {
            q: self.q.to_device(device)?,
            k: self.k.to_device(device)?,
            eps: self.eps,
        })
    }
}

#[derive(Clone)]
pub struct SelfAttention {
    /// q, k, v
    qkv: Projs<3>,
    o: Linear,
    shape: AttentionShape,
    qk_norm: Option<QkNorm>,
    /// Attends through the model's sliding window (`shape.sliding_window`).
    windowed: bool,
}

impl SelfAttention {
    /// `{prefix}.{q,k,v,o}_proj` (q/k/v with a bias when `qkv_bias`) for inputs of `hidden`.
    pub fn load(
        w: &mut dyn WeightSource,
        prefix: &str,
        shape: AttentionShape,
        hidden: usize,
        qkv_bias: bool,
    ) -> Result<Self> {
        let p = |m: &str| format!("{prefix}.{m}");
        Ok(Self {
            qkv: Projs::new([
                w.linear(&p("q_proj"), shape.q_dim(), hidden, qkv_bias)?,
                w.linear(&p("k_proj"), shape.kv_dim(), hidden, qkv_bias)?,
                w.linear(&p("v_proj"), shape.kv_dim(), hidden, qkv_bias)?,
            ])?,
            o: w.linear(&p("o_proj"), hidden, shape.q_dim(), false)?,
            shape,
            qk_norm: None,
            windowed: false,
        })
    }

    /// `{prefix}.qkv_proj` (q, k and v stacked in one weight, as Phi-3 stores them) and
    /// `{prefix}.o_proj`, without biases.
    pub fn load_fused(
        w: &mut dyn WeightSource,
        prefix: &str,
        shape: AttentionShape,
        hidden: usize,
    ) -> Result<Self> {
        let p = |m: &str| format!("{prefix}.{m}");
        let qkv_rows = shape.q_dim() + 2 * shape.kv_dim();
        Ok(Self {
            qkv: Projs::Merged(w.linear(&p("qkv_proj"), qkv_rows, hidden, false)?),
            o: w.linear(&p("o_proj"), hidden, shape.q_dim(), false)?,
            shape,
            qk_norm: None,
            windowed: false,
        })
    }

    /// With per-head q/k norms before RoPE.
    pub fn with_qk_norm(self, qk_norm: QkNorm) -> Self {
        Self {
            qk_norm: Some(qk_norm),
            ..self
        }
    }

    /// A sliding-window layer (when `windowed`).
    pub fn with_window(self, windowed: bool) -> Self {
        Self { windowed, ..self }
    }

    /// The rotated q, k and v of x at layer `layer` (with the step's LoRA deltas, if any).
    fn qkv(
        &self,
        layer: usize,
        x: &Tensor,
        rope: &Rope,
        step: &StepContext,
    ) -> Result<[Tensor; 3]> {
        let (nh, nkv) = (self.shape.num_heads, self.shape.num_kv_heads);
        let (qw, kw) = (self.shape.q_dim(), self.shape.kv_dim());
        let lora = step.lora.layer(layer);
        let merged = |w: &Linear| {
            let y = w.forward(x)?;
            lora.add_merged(&[Target::Q, Target::K, Target::V], &[qw, kw, kw], x, y)
        };
        let split = |[q, k, v]: &[Linear; 3]| -> Result<[Tensor; 3]> {
            let [q, k, v] = Linear::forward_many([q, k, v], x)?;
            Ok([
                lora.add(Target::Q, x, q)?,
                lora.add(Target::K, x, k)?,
                lora.add(Target::V, x, v)?,
            ])
        };
        let Some(n) = &self.qk_norm else {
            // [T, H*D], [T, KvH*D], [T, KvH*D]
            return match &self.qkv {
                Projs::Merged(w) => {
                    let (q, k, v) = rope.apply_qkv(&merged(w)?, nh, nkv, &step.rope)?;
                    Ok([q, k, v])
                }
                Projs::Split(w) => {
                    let [q, k, v] = split(w)?;
                    let q = rope.apply(&q, nh, &step.rope)?;
                    Ok([q, rope.apply(&k, nkv, &step.rope)?, v])
                }
            };
        };
        let [q, k, v] = match &self.qkv {
            Projs::Merged(w) => {
                let qkv = merged(w)?;
                [
                    qkv.narrow(1, 0, qw)?,
                    qkv.narrow(1, qw, kw)?,
                    qkv.narrow(1, qw + kw, kw)?.contiguous()?,
                ]
            }
            Projs::Split(w) => split(w)?,
        };
        let q = QkNorm::apply(&q, &n.q, n.eps)?;
        let k = QkNorm::apply(&k, &n.k, n.eps)?;
        Ok([
            rope.apply(&q, nh, &step.rope)?,
            rope.apply(&k, nkv, &step.rope)?,
            v,
        ])
    }

    /// Self-attention of layer `layer` over the paged cache. x: [T, hidden] (normed).
    pub fn forward(
        &self,
        layer: usize,
        x: &Tensor,
        rope: &Rope,
        step: &StepContext,
        attn: &mut Attention,
    ) -> Result<Tensor> {
        let [q, k, v] = self.qkv(layer, x, rope, step)?;
        attn.write_kv(layer, &k, &v, step.batch, step.meta)?;
        let y = attn.attend(layer, &q, step.batch, step.meta, self.windowed)?;
        step.lora
            .layer(layer)
            .add(Target::O, &y, self.o.forward(&y)?)
    }

    /// q/k/v run as one GEMM.
    pub fn is_merged(&self) -> bool {
        self.qkv.is_merged()
    }

    /// Whether q and k rotate in one kernel with the merged projection (no q/k norm between).
    pub fn fused_rope_capable(&self) -> bool {
        self.qkv.is_merged() && self.qk_norm.is_none()
    }

    pub fn to_device(&self, device: &Device) -> Result<Self> {
        Ok(Self {
            qkv: self.qkv.to_device(device)?,
            o: self.o.to_device(device)?,
            shape: self.shape,
            qk_norm: self
                .qk_norm
                .as_ref()
                .map(|n| n.to_device(device))
                .transpose()?,
            windowed: self.windowed,
        })
    }

    pub fn bytes(&self) -> u64 {
        let norms = self.qk_norm.as_ref().map_or(0, |n| {
            crate::models::linear::tensor_bytes(&n.q) + crate::models::linear::tensor_bytes(&n.k)
        });
        self.qkv.bytes() + self.o.bytes() + norms
    }
}
