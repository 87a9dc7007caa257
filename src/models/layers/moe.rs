//! `SparseMoe`: a mixture-of-experts block (Mixtral, Qwen2/3-MoE, OLMoE). A router scores every
//! expert for each token; each token runs its top-k experts, weighted by their softmax
//! probabilities (renormalized over the k when the family does), plus Qwen2-MoE's shared expert
//! behind a sigmoid gate.
//!
//! The step's tokens are grouped by expert: each expert runs once over the rows routed to it
//! (one GEMM per expert and projection, not one per token), and its weighted output is added
//! into those rows. On the CPU each row's expert output comes from weir's batch-invariant
//! kernels and every row sums its experts in expert order, so a token's output does not depend
//! on which other tokens share its experts. On CUDA this is the tensor path (index_select, the
//! experts' GEMMs, index_add); the routing reads the router's scores on the host.

use super::mlp::{Activation, GatedMlp};
use crate::models::config::MoeConfig;
use crate::models::linear::Linear;
use crate::models::weights::WeightSource;
use candle_core::{DType, Device, Result, Tensor};

/// Where a token goes: per expert, the rows routed to it and their weights.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ExpertRows {
    pub rows: Vec<u32>,
    pub weights: Vec<f32>,
}

/// The top-k experts of each row of router scores `logits` ([rows][experts]), as transformers
/// routes: softmax in f32, the k largest probabilities (the lower expert first on a tie), divided
/// by their sum when `renormalize`. Returns one `ExpertRows` per expert, rows ascending.
pub fn route(logits: &[Vec<f32>], top_k: usize, renormalize: bool) -> Vec<ExpertRows> {
    let num_experts = logits.first().map_or(0, Vec::len);
    let mut experts = vec![ExpertRows::default(); num_experts];
    let mut order: Vec<usize> = Vec::with_capacity(num_experts);
    for (row, scores) in logits.iter().enumerate() {
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exp: Vec<f32> = scores.iter().map(|&s| (s - max).exp()).collect();
        let sum: f32 = exp.iter().sum();
        order.clear();
        order.extend(0..num_experts);
        order.sort_by(|&a, &b| exp[b].total_cmp(&exp[a]).then(a.cmp(&b)));
        let chosen = &order[..top_k.min(num_experts)];
        let probs: Vec<f32> = chosen.iter().map(|&e| exp[e] / sum).collect();
        let total: f32 = probs.iter().sum();
        for (&e, &p) in chosen.iter().zip(&probs) {
            experts[e].rows.push(row as u32);
            experts[e]
                .weights
                .push(if renormalize { p / total } else { p });
        }
    }
    experts
}

/// Qwen2-MoE's shared expert and its gate ([1, hidden]).
#[derive(Clone)]
struct SharedExpert {
    mlp: GatedMlp,
    gate: Linear,
}

#[derive(Clone)]
pub struct SparseMoe {
    /// [experts, hidden]
    router: Linear,
    experts: Vec<GatedMlp>,
    top_k: usize,
    renormalize: bool,
    shared: Option<SharedExpert>,
}

impl SparseMoe {
    /// The router `{prefix}.gate` and experts `{prefix}.experts.{e}.{gate,up,down}_proj`
    /// (Qwen2-MoE also `{prefix}.shared_expert` and `{prefix}.shared_expert_gate`).
    pub fn load(
        w: &mut dyn WeightSource,
        prefix: &str,
        hidden: usize,
        cfg: &MoeConfig,
    ) -> Result<Self> {
        Self::load_named(
            w,
            prefix,
            hidden,
            cfg,
            ["gate_proj", "up_proj", "down_proj"],
        )
    }

    /// Mixtral's names: `{prefix}.gate` and `{prefix}.experts.{e}.{w1,w3,w2}` (gate, up, down).
    pub fn load_mixtral(
        w: &mut dyn WeightSource,
        prefix: &str,
        hidden: usize,
        cfg: &MoeConfig,
    ) -> Result<Self> {
        Self::load_named(w, prefix, hidden, cfg, ["w1", "w3", "w2"])
    }

    fn load_named(
        w: &mut dyn WeightSource,
        prefix: &str,
        hidden: usize,
        cfg: &MoeConfig,
        [gate, up, down]: [&str; 3],
    ) -> Result<Self> {
        let (n, width) = (cfg.num_experts, cfg.expert_intermediate);
        let ex = format!("{prefix}.experts");
        let gates = w.experts(&ex, gate, n, width, hidden)?;
        let ups = w.experts(&ex, up, n, width, hidden)?;
        let downs = w.experts(&ex, down, n, hidden, width)?;
        let experts = gates
            .into_iter()
            .zip(ups)
            .zip(downs)
            .map(|((g, u), d)| GatedMlp::from_parts(g, u, d, Activation::Silu))
            .collect::<Result<_>>()?;
        let shared = match cfg.shared_intermediate {
            Some(width) => Some(SharedExpert {
                mlp: GatedMlp::load(
                    w,
                    &format!("{prefix}.shared_expert"),
                    hidden,
                    width,
                    Activation::Silu,
                )?,
                gate: w.linear(&format!("{prefix}.shared_expert_gate"), 1, hidden, false)?,
            }),
            None => None,
        };
        Ok(Self {
            router: w.linear(&format!("{prefix}.gate"), n, hidden, false)?,
            experts,
            top_k: cfg.top_k,
            renormalize: cfg.norm_topk_prob,
            shared,
        })
    }

    /// h: [T, hidden] (normed) → [T, hidden].
    pub fn forward(&self, h: &Tensor, kernels: bool) -> Result<Tensor> {
        let scores = self.router.forward(h)?.to_dtype(DType::F32)?.to_vec2()?;
        let device = h.device();
        let mut out = h.zeros_like()?;
        for (expert, to) in self
            .experts
            .iter()
            .zip(route(&scores, self.top_k, self.renormalize))
        {
            if to.rows.is_empty() {
                continue;
            }
            let n = to.rows.len();
            let rows = Tensor::from_vec(to.rows, n, device)?;
            let y = expert.forward(&h.index_select(&rows, 0)?, kernels)?;
            let weights = Tensor::from_vec(to.weights, (n, 1), device)?.to_dtype(y.dtype())?;
            out = out.index_add(&rows, &y.broadcast_mul(&weights)?, 0)?;
        }
        if let Some(s) = &self.shared {
            let gate = candle_nn::ops::sigmoid(&s.gate.forward(h)?)?;
            out = (out + s.mlp.forward(h, kernels)?.broadcast_mul(&gate)?)?;
        }
        Ok(out)
    }

    pub fn to_device(&self, device: &Device) -> Result<Self> {
        Ok(Self {
            router: self.router.to_device(device)?,
            experts: self
                .experts
                .iter()
                .map(|e| e.to_device(device))
                .collect::<Result<_>>()?,
            top_k: self.top_k,
            renormalize: self.renormalize,
            shared: self
                .shared
                .as_ref()
                .map(|s| {
                    Ok::<_, candle_core::Error>(SharedExpert {
                        mlp: s.mlp.to_device(device)?,
                        gate: s.gate.to_device(device)?,
                    })
                })
                .transpose()?,
        })
    }

    pub fn bytes(&self) -> u64 {
        let shared = self
            .shared
            .as_ref()
            .map_or(0, |s| s.mlp.bytes() + s.gate.bytes());
        self.router.bytes() + self.experts.iter().map(GatedMlp::bytes).sum::<u64>() + shared
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_each_row_to_its_top_k_in_softmax_weights() {
        let logits = vec![vec![0.0, 2.0, 1.0, -1.0], vec![3.0, 0.0, 0.0, 3.0]];
        let r = route(&logits, 2, false);
        assert_eq!(r[0].rows, [1]);
        assert_eq!(r[1].rows, [0]);
        assert_eq!(r[2].rows, [0]);
        assert_eq!(r[3].rows, [1]);
        let z: f32 = [0.0f32, 2.0, 1.0, -1.0].iter().map(|x| x.exp()).sum();
        assert!((r[1].weights[0] - 2f32.exp() / z).abs() < 1e-6);
        // renormalized: the pair sums to 1; a tie keeps the lower expert first
        let r = route(&logits, 2, true);
        assert!((r[1].weights[0] + r[2].weights[0] - 1.0).abs() < 1e-6);
        assert!((r[0].weights[0] - 0.5).abs() < 1e-6 && (r[3].weights[0] - 0.5).abs() < 1e-6);
        let r = route(&[vec![1.0, 1.0, 1.0]], 1, true);
        assert_eq!(
            (r[0].rows.len(), r[1].rows.len(), r[2].rows.len()),
            (1, 0, 0)
        );
    }
}
