//! `GatedMlp`: down(act(gate(x)) * up(x)), the feed-forward block of gated-linear-unit models.

use super::projs::Projs;
use crate::models::fused;
use crate::models::linear::Linear;
use crate::models::lora::Target;
use crate::models::lora_step::LayerLoras;
use crate::models::weights::WeightSource;
use candle_core::{Device, Result, Tensor};

/// The gate's activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// SwiGLU (Llama, Qwen, Mistral).
    Silu,
    /// GeGLU with the tanh approximation of GELU (Gemma's `gelu_pytorch_tanh`).
    GeluTanh,
}

#[derive(Clone)]
pub struct GatedMlp {
    /// gate, up
    gate_up: Projs<2>,
    down: Linear,
    act: Activation,
}

impl GatedMlp {
    /// `{prefix}.{gate,up,down}_proj` of a `hidden` → `intermediate` → `hidden` block.
    pub fn load(
        w: &mut dyn WeightSource,
        prefix: &str,
        hidden: usize,
        intermediate: usize,
        act: Activation,
    ) -> Result<Self> {
        let p = |m: &str| format!("{prefix}.{m}");
        Ok(Self {
            gate_up: Projs::new([
                w.linear(&p("gate_proj"), intermediate, hidden, false)?,
                w.linear(&p("up_proj"), intermediate, hidden, false)?,
            ])?,
            down: w.linear(&p("down_proj"), hidden, intermediate, false)?,
            act,
        })
    }

    /// From its three projections (a mixture-of-experts expert).
    pub fn from_parts(gate: Linear, up: Linear, down: Linear, act: Activation) -> Result<Self> {
        Ok(Self {
            gate_up: Projs::new([gate, up])?,
            down,
            act,
        })
    }

    /// `{prefix}.gate_up_proj` (gate and up stacked in one weight, as Phi-3 stores them) and
    /// `{prefix}.down_proj`.
    pub fn load_fused(
        w: &mut dyn WeightSource,
        prefix: &str,
        hidden: usize,
        intermediate: usize,
        act: Activation,
    ) -> Result<Self> {
        let p = |m: &str| format!("{prefix}.{m}");
        Ok(Self {
            gate_up: Projs::Merged(w.linear(
                &p("gate_up_proj"),
                2 * intermediate,
                hidden,
                false,
            )?),
            down: w.linear(&p("down_proj"), hidden, intermediate, false)?,
            act,
        })
    }

    /// h: [T, hidden] (normed). `kernels`: weir's fused CUDA kernel for the activation.
    pub fn forward(&self, h: &Tensor, kernels: bool) -> Result<Tensor> {
        let a = match (&self.gate_up, self.act) {
            (Projs::Merged(w), Activation::Silu) => fused::silu_mul(&w.forward(h)?, kernels)?,
            (Projs::Split([gate, up]), Activation::Silu) => Linear::forward_glu(gate, up, h)?,
            (Projs::Merged(w), Activation::GeluTanh) => {
                let gu = w.forward(h)?;
                let i = gu.dim(1)? / 2;
                (gu.narrow(1, 0, i)?.gelu()? * gu.narrow(1, i, i)?)?
            }
            (Projs::Split([gate, up]), Activation::GeluTanh) => {
                let [g, u] = Linear::forward_many([gate, up], h)?;
                (g.gelu()? * u)?
            }
        };
        self.down.forward(&a)
    }

    /// `forward` with the step's LoRA deltas on gate, up and down (`lora`: this layer's).
    pub fn forward_lora(&self, h: &Tensor, kernels: bool, lora: &LayerLoras) -> Result<Tensor> {
        if ![Target::Gate, Target::Up, Target::Down]
            .into_iter()
            .any(|t| lora.touches(t))
        {
            return self.forward(h, kernels);
        }
        let a = match &self.gate_up {
            Projs::Merged(w) => {
                let gu = w.forward(h)?;
                let i = gu.dim(1)? / 2;
                let gu = lora.add_merged(&[Target::Gate, Target::Up], &[i, i], h, gu)?;
                match self.act {
                    Activation::Silu => fused::silu_mul(&gu, kernels)?,
                    Activation::GeluTanh => (gu.narrow(1, 0, i)?.gelu()? * gu.narrow(1, i, i)?)?,
                }
            }
            Projs::Split([gate, up]) => {
                let [g, u] = Linear::forward_many([gate, up], h)?;
                let (g, u) = (lora.add(Target::Gate, h, g)?, lora.add(Target::Up, h, u)?);
                match self.act {
                    Activation::Silu => Linear::glu_of(gate, up, g, u)?,
                    Activation::GeluTanh => (g.gelu()? * u)?,
                }
            }
        };
        lora.add(Target::Down, &a, self.down.forward(&a)?)
    }

    /// gate/up run as one GEMM.
    pub fn is_merged(&self) -> bool {
        self.gate_up.is_merged()
    }

    pub fn to_device(&self, device: &Device) -> Result<Self> {
        Ok(Self {
            gate_up: self.gate_up.to_device(device)?,
            down: self.down.to_device(device)?,
            act: self.act,
        })
    }

    pub fn bytes(&self) -> u64 {
        self.gate_up.bytes() + self.down.bytes()
    }
}
