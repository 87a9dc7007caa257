//! `MoeConfig`: the mixture-of-experts part of a Llama-shaped model (Mixtral, Qwen2-MoE,
//! Qwen3-MoE, OLMoE), from `config.json` as transformers reads it or from GGUF metadata as
//! llama.cpp reads it.

use super::error::ConfigError;
use candle_core::quantized::gguf_file;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoeConfig {
    pub num_experts: usize,
    /// Experts each token runs (`num_experts_per_tok`).
    pub top_k: usize,
    /// Whether the top-k routing probabilities are renormalized to sum to 1 (Mixtral always;
    /// Qwen and OLMoE by `norm_topk_prob`).
    pub norm_topk_prob: bool,
    /// The hidden width of each expert.
    pub expert_intermediate: usize,
    /// Qwen2-MoE's shared expert (its hidden width), added to every token through a sigmoid
    /// gate.
    pub shared_intermediate: Option<usize>,
    /// Per layer: a sparse (routed) block, or the dense MLP of `intermediate_size` (Qwen's
    /// `mlp_only_layers` / `decoder_sparse_step`).
    pub sparse_layers: Vec<bool>,
}

/// The mixture-of-experts fields of a `config.json`.
#[derive(Debug, Clone, Deserialize)]
struct HfMoe {
    num_local_experts: Option<usize>,
    num_experts: Option<usize>,
    num_experts_per_tok: Option<usize>,
    norm_topk_prob: Option<bool>,
    moe_intermediate_size: Option<usize>,
    shared_expert_intermediate_size: Option<usize>,
    #[serde(default)]
    mlp_only_layers: Option<Vec<usize>>,
    decoder_sparse_step: Option<usize>,
}

/// The `model_type`s with routed experts.
pub const MOE_MODEL_TYPES: [&str; 4] = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe"];

impl MoeConfig {
    /// The experts of a `config.json` of `model_type` (`None` for a dense model), with
    /// transformers' defaults for absent fields.
    pub fn from_hf(
        json: &serde_json::Value,
        model_type: &str,
        num_layers: usize,
        intermediate_size: usize,
    ) -> Result<Option<Self>, ConfigError> {
        let hf = HfMoe::deserialize(json)
            .map_err(|e| ConfigError::Invalid(format!("config.json: {e}")))?;
        // (experts, top-k, norm_topk_prob, expert width) when the config leaves them out
        let (experts, top_k, norm, width) = match model_type {
            "mixtral" => (8, 2, true, intermediate_size),
            "qwen2_moe" => (60, 4, false, 1408),
            "qwen3_moe" => (128, 8, false, 768),
            "olmoe" => (64, 8, false, intermediate_size),
            _ => return Ok(None),
        };
        let qwen = model_type.starts_with("qwen");
        let num_experts = hf.num_experts.or(hf.num_local_experts).unwrap_or(experts);
        let step = hf.decoder_sparse_step.unwrap_or(1).max(1);
        let dense = hf.mlp_only_layers.unwrap_or_default();
        let sparse_layers = (0..num_layers)
            .map(|i| !qwen || (!dense.contains(&i) && (i + 1) % step == 0))
            .collect();
        let cfg = Self {
            num_experts,
            top_k: hf.num_experts_per_tok.unwrap_or(top_k),
            // Mixtral's router always renormalizes (transformers has no field for it)
            norm_topk_prob: model_type == "mixtral" || hf.norm_topk_prob.unwrap_or(norm),
            expert_intermediate: if qwen {
                hf.moe_intermediate_size.unwrap_or(width)
            } else {
                width
            },
            shared_intermediate: (model_type == "qwen2_moe")
                .then(|| hf.shared_expert_intermediate_size.unwrap_or(5632)),
            sparse_layers,
        };
        cfg.validate()?;
        Ok(Some(cfg))
    }

    /// The experts of a GGUF file (`{arch}.expert_count` present), as llama.cpp runs them:
    /// Qwen3-MoE and Mixtral (`llama`) renormalize the top-k weights, Qwen2-MoE and OLMoE do
    /// not; every layer is sparse.
    pub fn from_gguf(
        ct: &gguf_file::Content,
        arch: &str,
        num_layers: usize,
        feed_forward: usize,
    ) -> Result<Option<Self>, ConfigError> {
        let u = |k: &str| -> Result<Option<usize>, ConfigError> {
            ct.metadata
                .get(&format!("{arch}.{k}"))
                .map(|v| v.to_u32().map(|x| x as usize))
                .transpose()
                .map_err(|e| ConfigError::Invalid(format!("{arch}.{k}: {e}")))
        };
        let Some(num_experts) = u("expert_count")?.filter(|&n| n > 0) else {
            return Ok(None);
        };
        if let Some(v) = ct.metadata.get(&format!("{arch}.expert_weights_scale")) {
            let scale = v.to_f32().unwrap_or(0.0);
            if scale != 0.0 && scale != 1.0 {
                return Err(ConfigError::Unsupported(format!(
                    "GGUF {arch}.expert_weights_scale {scale}"
                )));
            }
        }
        let top_k = u("expert_used_count")?.ok_or_else(|| {
            ConfigError::Invalid(format!("GGUF metadata lacks {arch}.expert_used_count"))
        })?;
        let cfg = Self {
            num_experts,
            top_k,
            norm_topk_prob: matches!(arch, "llama" | "qwen3moe"),
            expert_intermediate: u("expert_feed_forward_length")?.unwrap_or(feed_forward),
            shared_intermediate: match arch {
                "qwen2moe" => Some(u("expert_shared_feed_forward_length")?.unwrap_or(feed_forward)),
                _ => None,
            },
            sparse_layers: vec![true; num_layers],
        };
        cfg.validate()?;
        Ok(Some(cfg))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.top_k == 0 || self.top_k > self.num_experts || self.expert_intermediate == 0 {
            return Err(ConfigError::Invalid(format!(
                "{} experts per token of {} experts of width {}",
                self.top_k, self.num_experts, self.expert_intermediate
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn qwen_layers_are_sparse_by_step_and_mlp_only_layers() {
        let json = json!({"num_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 16,
            "decoder_sparse_step": 2, "mlp_only_layers": [3]});
        let c = MoeConfig::from_hf(&json, "qwen3_moe", 6, 64)
            .unwrap()
            .unwrap();
        assert_eq!(c.sparse_layers, [false, true, false, false, false, true]);
        assert_eq!((c.num_experts, c.top_k, c.expert_intermediate), (8, 2, 16));
        assert!(!c.norm_topk_prob && c.shared_intermediate.is_none());
    }

    #[test]
    fn mixtral_renormalizes_and_uses_the_intermediate_size() {
        let json = json!({"num_local_experts": 4, "norm_topk_prob": false});
        let c = MoeConfig::from_hf(&json, "mixtral", 2, 48)
            .unwrap()
            .unwrap();
        assert!(c.norm_topk_prob);
        assert_eq!((c.num_experts, c.top_k, c.expert_intermediate), (4, 2, 48));
        assert_eq!(c.sparse_layers, [true, true]);
        assert!(MoeConfig::from_hf(&json, "llama", 2, 48).unwrap().is_none());
        let bad = json!({"num_local_experts": 2, "num_experts_per_tok": 3});
        assert!(MoeConfig::from_hf(&bad, "mixtral", 2, 48).is_err());
    }
}
