//! `RopeParams`: a checkpoint's rotary embedding settings (base and scaling), read the way the
//! libraries that write them do, and the inverse frequencies they give.
//!
//! A Hugging Face `config.json` says it in one of two shapes:
//! ```text
//! transformers >= 5:  "rope_parameters": {"rope_type": "yarn", "rope_theta": 1e6, "factor": 4, ...}
//!                     (or one such dict per layer type: {"full_attention": {..}, "sliding_attention": {..}})
//! older:              "rope_theta": 1e6, "rope_scaling": {"type" | "rope_type": "yarn", "factor": 4, ...}
//! ```
//! transformers merges them as `rope_scaling or rope_parameters`, takes `rope_theta` from that dict,
//! else from the top level, else 10000, and for llama3 / yarn / longrope takes
//! `original_max_position_embeddings` from the top level, else from the dict, else
//! `max_position_embeddings`. A GGUF file says it in `{arch}.rope.*` metadata and, for Llama 3.1,
//! a `rope_freqs` tensor of per-frequency divisors.
//!
//! A `rope_type` weir does not implement is an error naming it; never a silent default.

use super::error::ConfigError;
use candle_core::quantized::gguf_file;
use serde_json::Value;

/// The base and scaling of one attention layer's rotary embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeParams {
    pub theta: f32,
    pub scaling: RopeScaling,
}

/// `rope_type` and its parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// `default` (no scaling).
    None,
    /// `linear`: every frequency divided by `factor` (position interpolation).
    Linear { factor: f32 },
    /// `dynamic` (NTK): transformers rescales the base only once a sequence outgrows
    /// `max_position_embeddings`, which weir's context never does (`--max-model-len` is capped
    /// there), so the frequencies are the unscaled ones.
    Dynamic,
    /// `llama3` (Llama 3.1+): low frequencies divided by `factor`, a smooth blend in between.
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position_embeddings: f32,
    },
    /// `yarn`: interpolation below a ramp of dimensions, extrapolation above it, and cos/sin
    /// scaled by `attention_factor`.
    Yarn {
        factor: f32,
        original_max_position_embeddings: f32,
        beta_fast: f32,
        beta_slow: f32,
        attention_factor: f32,
        truncate: bool,
    },
    /// GGUF `rope_freqs`: each frequency divided by its own factor (llama.cpp's form of llama3).
    FreqFactors(Vec<f32>),
    /// `longrope` (Phi-3 128k, Phi-3.5, Phi-4-mini): each frequency divided by its own factor,
    /// `short_factor` at positions below `original_max_position_embeddings` and `long_factor`
    /// from there on (`long_inv_freq`), cos/sin scaled by `attention_factor`.
    LongRope {
        short_factor: Vec<f32>,
        long_factor: Vec<f32>,
        original_max_position_embeddings: f32,
        attention_factor: f32,
    },
}

/// The `rope_type`s `RopeParams::from_hf` reads.
const SUPPORTED: &str = "default, linear, dynamic, llama3, yarn, longrope";

fn invalid(m: String) -> ConfigError {
    ConfigError::Invalid(m)
}

impl RopeParams {
    /// The settings of `config.json` for layers of `layer_type` (`None`: a model whose layers all
    /// share one; a per-layer-type `rope_parameters` then is an error).
    pub fn from_hf(json: &Value, layer_type: Option<&str>) -> Result<Self, ConfigError> {
        let empty = serde_json::Map::new();
        let dict = RopeDict::find(json, layer_type, &empty)?;
        let (d, field) = (dict.d, dict.field);
        let theta = num(d.get("rope_theta"), &format!("{field}.rope_theta"))?
            .or(num(json.get("rope_theta"), "rope_theta")?)
            .unwrap_or(10_000.0);
        let partial = num(d.get("partial_rotary_factor"), "partial_rotary_factor")?.or(num(
            json.get("partial_rotary_factor"),
            "partial_rotary_factor",
        )?);
        if partial.is_some_and(|p| p != 1.0) {
            return Err(ConfigError::Unsupported(format!(
                "partial_rotary_factor {} (weir rotates the whole head)",
                partial.unwrap_or(1.0)
            )));
        }
        let rope_type = match d.get("rope_type").or(d.get("type")) {
            None | Some(Value::Null) => "default",
            Some(Value::String(s)) => s.as_str(),
            Some(other) => {
                return Err(invalid(format!(
                    "{field}.rope_type must be a string, got {other}"
                )))
            }
        };
        Ok(Self {
            theta: theta as f32,
            scaling: dict.scaling(rope_type)?,
        })
    }

    /// LongRoPE from a GGUF file (llama.cpp's Phi-3 form): the `rope_factors_short` /
    /// `rope_factors_long` tensors the caller read, `{arch}.rope.scaling.original_context_length`
    /// and `.attn_factor` (else computed from `context_length` as transformers does).
    pub fn gguf_longrope(
        ct: &gguf_file::Content,
        arch: &str,
        short_factor: Vec<f32>,
        long_factor: Vec<f32>,
    ) -> Result<RopeScaling, ConfigError> {
        let get = |k: &str| ct.metadata.get(&format!("{arch}.{k}"));
        let num = |k: &str| -> Result<Option<f32>, ConfigError> {
            get(k)
                .map(|v| {
                    v.to_f32()
                        .or_else(|_| v.to_u32().map(|u| u as f32))
                        .map_err(|e| invalid(format!("{arch}.{k}: {e}")))
                })
                .transpose()
        };
        let original = num("rope.scaling.original_context_length")?.ok_or_else(|| {
            invalid(format!(
                "{arch}.rope.scaling.original_context_length is required with rope_factors_long"
            ))
        })?;
        let factor = num("context_length")?.map_or(1.0, |c| c / original);
        let attention_factor = match num("rope.scaling.attn_factor")? {
            Some(a) => a,
            None => longrope_attention_factor(factor, original),
        };
        Ok(RopeScaling::LongRope {
            short_factor,
            long_factor,
            original_max_position_embeddings: original,
            attention_factor,
        })
    }

    /// The settings in GGUF metadata (`{arch}.rope.freq_base`, `{arch}.rope.scaling.*`).
    pub fn from_gguf(ct: &gguf_file::Content, arch: &str) -> Result<Self, ConfigError> {
        let get = |k: &str| ct.metadata.get(&format!("{arch}.{k}"));
        let f32_of = |k: &str| -> Result<Option<f32>, ConfigError> {
            get(k)
                .map(|v| v.to_f32().map_err(|e| invalid(format!("{arch}.{k}: {e}"))))
                .transpose()
        };
        let theta = f32_of("rope.freq_base")?.unwrap_or(10_000.0);
        let kind = get("rope.scaling.type")
            .map(|v| {
                v.to_string()
                    .cloned()
                    .map_err(|e| invalid(format!("{arch}.rope.scaling.type: {e}")))
            })
            .transpose()?;
        let factor = f32_of("rope.scaling.factor")?;
        let scaling = match (kind.as_deref(), factor) {
            (None | Some("none"), _) | (Some("linear"), Some(1.0) | None) => RopeScaling::None,
            (Some("linear"), Some(f)) => RopeScaling::Linear { factor: f },
            (Some("yarn"), Some(f)) => {
                let original = get("rope.scaling.original_context_length")
                    .ok_or_else(|| {
                        invalid(format!(
                            "{arch}.rope.scaling.original_context_length is required for yarn"
                        ))
                    })?
                    .to_u32()
                    .map_err(|e| invalid(e.to_string()))? as f32;
                RopeScaling::Yarn {
                    factor: f,
                    original_max_position_embeddings: original,
                    beta_fast: 32.0,
                    beta_slow: 1.0,
                    attention_factor: f32_of("rope.scaling.attn_factor")?
                        .unwrap_or(yarn_mscale(f, 1.0)),
                    truncate: true,
                }
            }
            (Some(other), _) => {
                return Err(ConfigError::Unsupported(format!(
                    "GGUF {arch}.rope.scaling.type {other:?} (weir reads none, linear, yarn)"
                )))
            }
        };
        Ok(Self { theta, scaling })
    }

    /// These settings with a GGUF file's `rope_freqs` tensor (one divisor per frequency).
    pub fn with_freq_factors(self, factors: Vec<f32>) -> Result<Self, ConfigError> {
        match self.scaling {
            RopeScaling::None => Ok(Self {
                scaling: RopeScaling::FreqFactors(factors),
                ..self
            }),
            _ => Err(ConfigError::Unsupported(
                "GGUF with both rope.scaling and a rope_freqs tensor".into(),
            )),
        }
    }

    /// Inverse frequencies for a head of `head_dim`, [head_dim / 2], in f32 as transformers
    /// computes them.
    pub fn inv_freq(&self, head_dim: usize) -> Result<Vec<f32>, ConfigError> {
        let d = head_dim as f32;
        let base: Vec<f32> = (0..head_dim)
            .step_by(2)
            .map(|i| 1.0 / self.theta.powf(i as f32 / d))
            .collect();
        Ok(match &self.scaling {
            RopeScaling::None | RopeScaling::Dynamic => base,
            RopeScaling::Linear { factor } => base.into_iter().map(|f| f / factor).collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old,
            } => {
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                base.into_iter()
                    .map(|f| {
                        let wavelen = 2.0 * std::f32::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings: old,
                beta_fast,
                beta_slow,
                truncate,
                ..
            } => {
                let base_theta = self.theta as f64;
                let dim = head_dim as f64;
                let correction_dim = |rotations: f32| {
                    dim * (*old as f64 / (rotations as f64 * 2.0 * std::f64::consts::PI)).ln()
                        / (2.0 * base_theta.ln())
                };
                let (mut low, mut high) = (correction_dim(*beta_fast), correction_dim(*beta_slow));
                if *truncate {
                    (low, high) = (low.floor(), high.ceil());
                }
                let (low, mut high) = (low.max(0.0) as f32, high.min(dim - 1.0) as f32);
                if low == high {
                    high += 0.001;
                }
                base.into_iter()
                    .enumerate()
                    .map(|(i, f)| {
                        let ramp = ((i as f32 - low) / (high - low)).clamp(0.0, 1.0);
                        let extrapolation = 1.0 - ramp;
                        (f / factor) * (1.0 - extrapolation) + f * extrapolation
                    })
                    .collect()
            }
            RopeScaling::FreqFactors(factors) => divided(base, factors, "rope_freqs")?,
            RopeScaling::LongRope { short_factor, .. } => {
                divided(base, short_factor, "short_factor")?
            }
        })
    }

    /// LongRoPE's frequencies from `original_max_position_embeddings` on, and that position.
    pub fn long_inv_freq(&self, head_dim: usize) -> Result<Option<(Vec<f32>, u32)>, ConfigError> {
        let RopeScaling::LongRope {
            long_factor,
            original_max_position_embeddings,
            ..
        } = &self.scaling
        else {
            return Ok(None);
        };
        let unscaled = Self {
            theta: self.theta,
            scaling: RopeScaling::None,
        };
        let long = divided(unscaled.inv_freq(head_dim)?, long_factor, "long_factor")?;
        Ok(Some((long, *original_max_position_embeddings as u32)))
    }

    /// The factor transformers multiplies cos and sin with (YaRN's mscale); 1 otherwise. Both q
    /// and k carry it, so the attention logits scale by its square.
    pub fn attention_factor(&self) -> f32 {
        match self.scaling {
            RopeScaling::Yarn {
                attention_factor, ..
            }
            | RopeScaling::LongRope {
                attention_factor, ..
            } => attention_factor,
            _ => 1.0,
        }
    }
}

/// Each frequency divided by its own factor (`what` names the factors in an error).
fn divided(base: Vec<f32>, factors: &[f32], what: &str) -> Result<Vec<f32>, ConfigError> {
    if factors.len() != base.len() {
        return Err(invalid(format!(
            "{what} has {} factors for {} frequencies",
            factors.len(),
            base.len()
        )));
    }
    Ok(base.into_iter().zip(factors).map(|(f, s)| f / s).collect())
}

/// A number or null (`name` in the error).
fn num(src: Option<&Value>, name: &str) -> Result<Option<f64>, ConfigError> {
    match src {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| invalid(format!("{name} must be a number, got {v}"))),
    }
}

/// LongRoPE's default attention factor (transformers' and llama.cpp's).
fn longrope_attention_factor(factor: f32, original: f32) -> f32 {
    if factor <= 1.0 {
        1.0
    } else {
        (1.0 + factor.ln() / original.ln()).sqrt()
    }
}

/// The RoPE dict of a `config.json` (`d`, found under `field`) and the config around it.
struct RopeDict<'a> {
    json: &'a Value,
    field: &'static str,
    d: &'a serde_json::Map<String, Value>,
}

impl<'a> RopeDict<'a> {
    /// transformers' choice: `rope_scaling` when set, else `rope_parameters` (for `layer_type`
    /// when it has one dict per layer type); `empty` when neither is there.
    fn find(
        json: &'a Value,
        layer_type: Option<&str>,
        empty: &'a serde_json::Map<String, Value>,
    ) -> Result<Self, ConfigError> {
        let (field, dict) = match (json.get("rope_scaling"), json.get("rope_parameters")) {
            (Some(v), _) if !v.is_null() => ("rope_scaling", Some(v)),
            (_, Some(v)) if !v.is_null() => ("rope_parameters", Some(v)),
            _ => ("rope_parameters", None),
        };
        let dict = match (dict, layer_type) {
            (Some(d), Some(lt)) if d.get(lt).is_some_and(Value::is_object) => Some(&d[lt]),
            (Some(d), _) => {
                if let Some((k, _)) = d
                    .as_object()
                    .and_then(|o| o.iter().find(|(_, v)| v.is_object()))
                {
                    return Err(invalid(format!(
                        "{field} holds a per-layer-type entry {k:?}, which this model's layers do not use"
                    )));
                }
                Some(d)
            }
            (None, _) => None,
        };
        let d = match dict {
            Some(Value::Object(o)) => o,
            Some(other) => return Err(invalid(format!("{field} must be an object, got {other}"))),
            None => empty,
        };
        Ok(Self { json, field, d })
    }

    fn key(&self, k: &str) -> Result<Option<f64>, ConfigError> {
        num(self.d.get(k), &format!("{}.{k}", self.field))
    }

    fn need(&self, k: &str, rope_type: &str) -> Result<f32, ConfigError> {
        self.key(k)?.map(|v| v as f32).ok_or_else(|| {
            invalid(format!(
                "{}.{k} is required for rope_type {rope_type:?}",
                self.field
            ))
        })
    }

    fn max_pos(&self) -> Result<Option<f64>, ConfigError> {
        num(
            self.json.get("max_position_embeddings"),
            "max_position_embeddings",
        )
    }

    /// transformers prefers a top-level original_max_position_embeddings (Phi-3 writes it there)
    fn original_max(&self) -> Result<f32, ConfigError> {
        num(
            self.json.get("original_max_position_embeddings"),
            "original_max_position_embeddings",
        )?
        .or(self.key("original_max_position_embeddings")?)
        .or(self.max_pos()?)
        .map(|v| v as f32)
        .ok_or_else(|| {
            invalid(format!(
                "{}.original_max_position_embeddings is required",
                self.field
            ))
        })
    }

    /// `factor`, else `max_position_embeddings` over `original`.
    fn factor_or_ratio(&self, original: f32) -> Result<Option<f32>, ConfigError> {
        Ok(self
            .key("factor")?
            .map(|f| f as f32)
            .or(self.max_pos()?.map(|m| m as f32 / original)))
    }

    fn scaling(&self, rope_type: &str) -> Result<RopeScaling, ConfigError> {
        Ok(match rope_type {
            "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear {
                factor: self.need("factor", rope_type)?,
            },
            "dynamic" => {
                self.need("factor", rope_type)?;
                RopeScaling::Dynamic
            }
            "llama3" => RopeScaling::Llama3 {
                factor: self.need("factor", rope_type)?,
                low_freq_factor: self.need("low_freq_factor", rope_type)?,
                high_freq_factor: self.need("high_freq_factor", rope_type)?,
                original_max_position_embeddings: self.original_max()?,
            },
            "yarn" => self.yarn()?,
            "longrope" | "su" => self.longrope()?,
            other => {
                return Err(ConfigError::Unsupported(format!(
                    "{}.rope_type {other:?}; weir implements {SUPPORTED}",
                    self.field
                )))
            }
        })
    }

    fn yarn(&self) -> Result<RopeScaling, ConfigError> {
        let field = self.field;
        let original = self.original_max()?;
        let factor = self
            .factor_or_ratio(original)?
            .ok_or_else(|| invalid(format!("{field}.factor is required for rope_type \"yarn\"")))?;
        if self.key("mscale_all_dim")?.is_some_and(|m| m != 0.0) {
            return Err(ConfigError::Unsupported(format!(
                "{field}.mscale_all_dim (DeepSeek's YaRN softmax scaling)"
            )));
        }
        let attention_factor = self
            .key("attention_factor")?
            .map(|a| a as f32)
            .unwrap_or_else(|| yarn_mscale(factor, 1.0));
        Ok(RopeScaling::Yarn {
            factor,
            original_max_position_embeddings: original,
            beta_fast: self.key("beta_fast")?.filter(|&b| b != 0.0).unwrap_or(32.0) as f32,
            beta_slow: self.key("beta_slow")?.filter(|&b| b != 0.0).unwrap_or(1.0) as f32,
            attention_factor,
            truncate: match self.d.get("truncate") {
                None | Some(Value::Null) => true,
                Some(Value::Bool(b)) => *b,
                Some(other) => {
                    return Err(invalid(format!(
                        "{field}.truncate must be a bool, got {other}"
                    )))
                }
            },
        })
    }

    fn longrope(&self) -> Result<RopeScaling, ConfigError> {
        let original = self.original_max()?;
        let factor = self.factor_or_ratio(original)?.unwrap_or(1.0);
        let attention_factor = match self.key("attention_factor")? {
            Some(a) => a as f32,
            None => longrope_attention_factor(factor, original),
        };
        let factors = |k: &str| -> Result<Vec<f32>, ConfigError> {
            self.d
                .get(k)
                .and_then(Value::as_array)
                .and_then(|a| a.iter().map(|v| v.as_f64().map(|f| f as f32)).collect())
                .ok_or_else(|| {
                    invalid(format!(
                        "{}.{k} must be a list of numbers for longrope",
                        self.field
                    ))
                })
        };
        Ok(RopeScaling::LongRope {
            short_factor: factors("short_factor")?,
            long_factor: factors("long_factor")?,
            original_max_position_embeddings: original,
            attention_factor,
        })
    }
}

/// YaRN's `0.1 · mscale · ln(scale) + 1` (1 for scale <= 1).
fn yarn_mscale(scale: f32, mscale: f32) -> f32 {
    if scale <= 1.0 {
        1.0
    } else {
        0.1 * mscale * scale.ln() + 1.0
    }
}

#[cfg(test)]
mod tests;
