//! `GenerationDefaults`: the sampling defaults a Hugging Face checkpoint ships in
//! `generation_config.json`, which weir applies (as vLLM's `--generation-config auto` does) to
//! every request field the client leaves out: `temperature`, `top_p`, `top_k`, `min_p`,
//! `repetition_penalty`, and `max_new_tokens` as the default `max_tokens`.

use serde::Deserialize;

/// The defaults of one model; every field `None` when the checkpoint sets none.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
pub struct GenerationDefaults {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repetition_penalty: Option<f32>,
    #[serde(rename = "max_new_tokens", skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<i64>,
}

/// `--generation-config`: whether a checkpoint's generation_config.json sets the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GenerationConfigMode {
    /// The checkpoint's defaults apply (vLLM's default).
    #[default]
    Auto,
    /// Only the OpenAI defaults apply (temperature 1, top_p 1, ...).
    Vllm,
}

impl std::str::FromStr for GenerationConfigMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "vllm" => Ok(Self::Vllm),
            _ => Err(format!("expected auto or vllm, got {s:?}")),
        }
    }
}

impl GenerationDefaults {
    /// The defaults in a `generation_config.json`, whatever its `do_sample` says (vLLM's rule).
    pub fn from_json(json: &serde_json::Value) -> Self {
        let mut d = Self::deserialize(json).unwrap_or_default();
        // transformers' own defaults mean "no change": keep them out of the log and the API
        d.top_k = d.top_k.filter(|&k| k > 0);
        d.top_p = d.top_p.filter(|&p| p < 1.0);
        d.min_p = d.min_p.filter(|&p| p > 0.0);
        d.repetition_penalty = d.repetition_penalty.filter(|&p| p != 1.0);
        d.max_tokens = d.max_tokens.filter(|&m| m > 0);
        d
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_sampling_fields_and_skips_no_ops() {
        let d = GenerationDefaults::from_json(&json!({
            "bos_token_id": 1, "eos_token_id": [2, 3], "do_sample": true,
            "temperature": 0.6, "top_p": 0.9, "top_k": 0, "repetition_penalty": 1.0,
            "max_new_tokens": 256, "transformers_version": "5.19.0"}));
        assert_eq!(
            d,
            GenerationDefaults {
                temperature: Some(0.6),
                top_p: Some(0.9),
                max_tokens: Some(256),
                ..Default::default()
            }
        );
        let flagged =
            GenerationDefaults::from_json(&json!({"do_sample": false, "temperature": 0.6}));
        assert_eq!(flagged.temperature, Some(0.6));
        assert!(GenerationDefaults::from_json(&json!({"eos_token_id": 2})).is_empty());
    }
}
