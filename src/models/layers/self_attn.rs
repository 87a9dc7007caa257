//! `SelfAttention`: the q/k/v projections, rotary embedding and output projection around the
//! paged attention the runner lends (`Attention`: the backend and its KV pool).

use super::projs::Projs;
use super::StepContext;
use crate::models::attention::{Attention, AttentionShape};
use crate::models::linear::Linear;
use crate::models::rope::Rope;
use crate::models::weights::WeightSource;
use candle_core::{Device, Result, Tensor};

#[derive(Clone)]
pub struct SelfAttention {
    /// q, k, v
    qkv: Projs<3>,
    o: Linear,
    shape: AttentionShape,
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
        })
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
        let (nh, nkv) = (self.shape.num_heads, self.shape.num_kv_heads);
        // [T, H*D], [T, KvH*D], [T, KvH*D]
        let (q, k, v) = match &self.qkv {
            Projs::Merged(w) => {
                let qkv = w.forward(x)?;
                rope.apply_qkv(&qkv, nh, nkv, &step.rope)?
            }
            Projs::Split([q, k, v]) => {
                let [q, k, v] = Linear::forward_many([q, k, v], x)?;
                let q = rope.apply(&q, nh, &step.rope)?;
                (q, rope.apply(&k, nkv, &step.rope)?, v)
            }
        };
        attn.write_kv(layer, &k, &v, step.batch, step.meta)?;
        let y = attn.attend(layer, &q, step.batch, step.meta)?;
        self.o.forward(&y)
    }

    /// q/k/v run as one GEMM.
    pub fn is_merged(&self) -> bool {
        self.qkv.is_merged()
    }

    pub fn to_device(&self, device: &Device) -> Result<Self> {
        Ok(Self {
            qkv: self.qkv.to_device(device)?,
            o: self.o.to_device(device)?,
            shape: self.shape,
        })
    }

    pub fn bytes(&self) -> u64 {
        self.qkv.bytes() + self.o.bytes()
    }
}
