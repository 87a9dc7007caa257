//! LoRA adapters in the PEFT layout (`adapter_config.json` + `adapter_model.safetensors`),
//! served without merging (S-LoRA / Punica style): a step's rows of one adapter are gathered,
//! run through its A and then its scaled B, and added to the base projection's output of those
//! rows. Rows of other adapters, and base rows, are untouched.
//!
//! On the CPU, A and B are f32 in weir's panels (`Linear::from_dense`): one FMA chain per row
//! and feature, so a row's delta is the same bits whatever else the step holds. The sum
//! `y + delta` is one add per element. A request's tokens are thus the same alone, in a batch of
//! other adapters, and after preemption.
//!
//! The PEFT scale `lora_alpha / r` (`lora_alpha / sqrt(r)` with `use_rslora`) is folded into B
//! at load. Supported targets: the seven projections of a Llama-family layer.

use super::linear::Linear;
use candle_core::{DType, Device, Result as CResult, Tensor};
use std::path::Path;

/// A projection an adapter may target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Target {
    pub const ALL: [Target; 7] = [
        Target::Q,
        Target::K,
        Target::V,
        Target::O,
        Target::Gate,
        Target::Up,
        Target::Down,
    ];

    /// The module's name in PEFT's `target_modules` and tensor names.
    pub fn module(self) -> &'static str {
        match self {
            Target::Q => "q_proj",
            Target::K => "k_proj",
            Target::V => "v_proj",
            Target::O => "o_proj",
            Target::Gate => "gate_proj",
            Target::Up => "up_proj",
            Target::Down => "down_proj",
        }
    }

    /// The module's name in llama.cpp's GGUF tensor names (`blk.N.attn_q.weight`).
    pub fn gguf_name(self) -> &'static str {
        match self {
            Target::Q => "attn_q",
            Target::K => "attn_k",
            Target::V => "attn_v",
            Target::O => "attn_output",
            Target::Gate => "ffn_gate",
            Target::Up => "ffn_up",
            Target::Down => "ffn_down",
        }
    }

    /// `self_attn` or `mlp`.
    fn block(self) -> &'static str {
        match self {
            Target::Q | Target::K | Target::V | Target::O => "self_attn",
            _ => "mlp",
        }
    }

    /// PEFT's name of this target's `matrix` (`lora_A`, `lora_B`) in layer `layer`.
    pub fn tensor_name(self, layer: usize, matrix: &str) -> String {
        let (block, module) = (self.block(), self.module());
        format!("base_model.model.model.layers.{layer}.{block}.{module}.{matrix}.weight")
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// `adapter_config.json`: what changes the math, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    pub rslora: bool,
    pub targets: Vec<Target>,
}

impl LoraConfig {
    /// Reads `dir/adapter_config.json`; a field weir does not implement is an error naming it.
    pub fn read(dir: &Path) -> Result<Self, String> {
        let path = dir.join("adapter_config.json");
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::from_json(&v).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn from_json(v: &serde_json::Value) -> Result<Self, String> {
        if let Some(t) = v.get("peft_type").and_then(|t| t.as_str()) {
            if t != "LORA" {
                return Err(format!("peft_type {t:?}: only LORA adapters are served"));
            }
        }
        let set = |k: &str| match v.get(k) {
            None | Some(serde_json::Value::Null) | Some(serde_json::Value::Bool(false)) => false,
            Some(serde_json::Value::Object(m)) => !m.is_empty(),
            Some(serde_json::Value::Array(a)) => !a.is_empty(),
            Some(serde_json::Value::String(s)) => !s.is_empty() && s != "none",
            Some(_) => true,
        };
        for k in [
            "use_dora",
            "fan_in_fan_out",
            "modules_to_save",
            "layers_to_transform",
            "rank_pattern",
            "alpha_pattern",
            "bias",
        ] {
            if set(k) {
                return Err(format!("{k} is not supported"));
            }
        }
        let rank = v.get("r").and_then(|r| r.as_u64()).ok_or("r: missing")? as usize;
        let alpha = v
            .get("lora_alpha")
            .and_then(|a| a.as_f64())
            .ok_or("lora_alpha: missing")?;
        if rank == 0 {
            return Err("r: must be positive".into());
        }
        let targets = match v.get("target_modules") {
            Some(serde_json::Value::String(s)) if s == "all-linear" => Target::ALL.to_vec(),
            Some(serde_json::Value::Array(names)) => names
                .iter()
                .map(|n| {
                    let n = n.as_str().unwrap_or_default();
                    Target::ALL
                        .into_iter()
                        .find(|t| t.module() == n)
                        .ok_or_else(|| format!("target_modules: {n:?} is not a projection weir adapts (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)"))
                })
                .collect::<Result<_, _>>()?,
            other => return Err(format!("target_modules: expected a list or \"all-linear\", got {other:?}")),
        };
        let rslora = v
            .get("use_rslora")
            .and_then(|b| b.as_bool())
            .unwrap_or(false);
        Ok(Self {
            rank,
            alpha,
            rslora,
            targets,
        })
    }

    /// The factor on B·A.
    pub fn scale(&self) -> f64 {
        if self.rslora {
            self.alpha / (self.rank as f64).sqrt()
        } else {
            self.alpha / self.rank as f64
        }
    }
}

/// The widths of a layer's projections, to check an adapter's tensors against.
#[derive(Debug, Clone, Copy)]
pub struct LoraShape {
    pub num_layers: usize,
    pub hidden: usize,
    pub q_dim: usize,
    pub kv_dim: usize,
    pub intermediate: usize,
    pub q_heads: usize,
    pub kv_heads: usize,
    /// The model's Q/K rows are in llama.cpp's interleaved order (a Llama GGUF).
    pub rope_interleaved: bool,
    /// The model is one llama.cpp converts as its `llama` architecture (Llama, Mistral,
    /// SmolLM2: no attention biases, no q/k norms, split projections), whose GGUF adapters have
    /// interleaved Q/K rows.
    pub llama_arch: bool,
}

impl LoraShape {
    /// The widths of a model of `cfg`.
    pub fn of(cfg: &super::config::LlamaConfig) -> Self {
        Self {
            num_layers: cfg.num_layers,
            hidden: cfg.hidden_size,
            q_dim: cfg.num_heads * cfg.head_dim,
            kv_dim: cfg.num_kv_heads * cfg.head_dim,
            intermediate: cfg.intermediate_size,
            q_heads: cfg.num_heads,
            kv_heads: cfg.num_kv_heads,
            rope_interleaved: cfg.rope_interleaved,
            llama_arch: !cfg.attention_bias && cfg.qk_norm.is_none() && !cfg.fused_projections,
        }
    }

    /// (in, out) of `t`.
    pub fn dims(&self, t: Target) -> (usize, usize) {
        match t {
            Target::Q => (self.hidden, self.q_dim),
            Target::K | Target::V => (self.hidden, self.kv_dim),
            Target::O => (self.q_dim, self.hidden),
            Target::Gate | Target::Up => (self.hidden, self.intermediate),
            Target::Down => (self.intermediate, self.hidden),
        }
    }
}

/// One target's A [r, in] and scaled B [out, r].
#[derive(Clone)]
pub(super) struct LoraPair {
    pub(super) a: Linear,
    pub(super) b: Linear,
}

/// An adapter's matrices, per layer and target.
#[derive(Clone)]
pub struct LoraAdapter {
    pub name: String,
    pub config: LoraConfig,
    pub(super) layers: Vec<[Option<LoraPair>; 7]>,
    bytes: u64,
}

/// An adapter as its files hold it: its config, each (layer, target)'s A [r, in] and unscaled
/// B [out, r] on the host, and whether its Q/K rows are in llama.cpp's interleaved order.
struct AdapterFiles {
    config: LoraConfig,
    pairs: Vec<(usize, Target, Tensor, Tensor)>,
    interleaved_qk: bool,
}

/// Reads the PEFT folder `dir` for a model of `num_layers` layers. Every tensor must belong to a
/// declared target of an existing layer.
fn read_peft(dir: &Path, num_layers: usize) -> Result<AdapterFiles, String> {
    let config = LoraConfig::read(dir)?;
    let file = dir.join("adapter_model.safetensors");
    let tensors = candle_core::safetensors::load(&file, &Device::Cpu)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let mut pairs = Vec::new();
    for i in 0..num_layers {
        for &t in &config.targets {
            let key = |m: &str| t.tensor_name(i, m);
            match (tensors.get(&key("lora_A")), tensors.get(&key("lora_B"))) {
                (Some(a), Some(b)) => pairs.push((i, t, a.clone(), b.clone())),
                (None, None) => {}
                _ => {
                    return Err(format!(
                        "{}: layer {i} {} has only one of lora_A, lora_B",
                        file.display(),
                        t.module()
                    ))
                }
            }
        }
    }
    if 2 * pairs.len() != tensors.len() {
        let mut extra: Vec<&String> = tensors.keys().collect();
        extra.sort();
        return Err(format!(
            "{}: {} tensors are not the lora_A/lora_B of a declared target in the model's {num_layers} layers (e.g. {})",
            file.display(),
            tensors.len() - 2 * pairs.len(),
            extra.first().map_or("", |s| s.as_str())
        ));
    }
    Ok(AdapterFiles {
        config,
        pairs,
        interleaved_qk: false,
    })
}

/// Reads llama.cpp's GGUF LoRA `file` (`general.type` = adapter): the alpha it states (none or 0:
/// a scale of 1, as llama.cpp applies it), its rank from its A matrices, its targets from its
/// tensor names. llama.cpp's converter permutes a Llama adapter's Q/K rows as it permutes the
/// model's.
fn read_gguf(file: &Path, shape: &LoraShape) -> Result<AdapterFiles, String> {
    let num_layers = shape.num_layers;
    let g = super::lora_gguf::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    // llama.cpp refuses an adapter of another architecture; here the architecture also decides
    // the Q/K row order, so a mismatch would be a wrong answer, not an error
    if (g.architecture == "llama") != shape.llama_arch {
        return Err(format!(
            "{}: a LoRA adapter for a {:?} model (general.architecture); this model is {}one llama.cpp converts as \"llama\"",
            file.display(),
            g.architecture,
            if shape.llama_arch { "" } else { "not " }
        ));
    }
    let mut pairs = Vec::new();
    let mut targets = Vec::new();
    for (layer, module, a, b) in g.pairs {
        let t = Target::ALL
            .into_iter()
            .find(|t| t.gguf_name() == module)
            .ok_or_else(|| format!("{}: blk.{layer}.{module}: not a projection weir adapts (attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down)", file.display()))?;
        if layer >= num_layers {
            return Err(format!(
                "{}: blk.{layer}: the model has {num_layers} layers",
                file.display()
            ));
        }
        if !targets.contains(&t) {
            targets.push(t);
        }
        pairs.push((layer, t, a, b));
    }
    let rank = pairs
        .first()
        .map(|(_, _, a, _)| a.dims()[0])
        .ok_or_else(|| format!("{}: no lora_a / lora_b tensors", file.display()))?;
    let alpha = if g.alpha > 0.0 {
        g.alpha as f64
    } else {
        rank as f64
    };
    Ok(AdapterFiles {
        config: LoraConfig {
            rank,
            alpha,
            rslora: false,
            targets,
        },
        pairs,
        interleaved_qk: g.architecture == "llama",
    })
}

impl LoraAdapter {
    /// Reads the adapter at `path` for a model of `shape` on `device` (f32 on the CPU, `dtype`
    /// elsewhere): a PEFT folder, or a GGUF LoRA file. Q/K rows are permuted where the adapter's
    /// order and the model's differ (a PEFT adapter on a Llama GGUF, whose Q/K rows llama.cpp
    /// interleaves, and a GGUF adapter on a Hugging Face folder).
    pub fn load(
        name: &str,
        path: &Path,
        shape: &LoraShape,
        device: &Device,
        dtype: DType,
    ) -> Result<Self, String> {
        let files = if path.is_file() {
            read_gguf(path, shape)?
        } else {
            read_peft(path, shape.num_layers)?
        };
        let mut layers: Vec<[Option<LoraPair>; 7]> =
            (0..shape.num_layers).map(|_| Default::default()).collect();
        for (i, t, a, b) in files.pairs {
            let heads = match t {
                Target::Q => shape.q_heads,
                Target::K => shape.kv_heads,
                _ => 0,
            };
            let b = if heads > 0 && files.interleaved_qk != shape.rope_interleaved {
                permute_rows(&b, heads, shape.rope_interleaved).map_err(|e| e.to_string())?
            } else {
                b
            };
            layers[i][t.index()] = Some(
                pair(&a, &b, shape.dims(t), &files.config, device, dtype)
                    .map_err(|e| format!("{}: layer {i} {}: {e}", path.display(), t.module()))?,
            );
        }
        let bytes = layers
            .iter()
            .flatten()
            .flatten()
            .map(|p| p.a.bytes() + p.b.bytes())
            .sum();
        Ok(Self {
            name: name.to_string(),
            config: files.config,
            layers,
            bytes,
        })
    }

    /// Bytes of its matrices.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn to_device(&self, device: &Device) -> CResult<Self> {
        let layers = self
            .layers
            .iter()
            .map(|slots| {
                let mut out: [Option<LoraPair>; 7] = Default::default();
                for (o, p) in out.iter_mut().zip(slots) {
                    if let Some(p) = p {
                        *o = Some(LoraPair {
                            a: p.a.to_device(device)?,
                            b: p.b.to_device(device)?,
                        });
                    }
                }
                Ok(out)
            })
            .collect::<CResult<_>>()?;
        Ok(Self {
            layers,
            ..self.clone()
        })
    }
}

/// `b`'s rows (a Q or K projection of `heads` heads) from the Hugging Face order (a head's rotary
/// pairs are i and i + d/2) to llama.cpp's (pairs side by side) when `to_interleaved`, else back.
fn permute_rows(b: &Tensor, heads: usize, to_interleaved: bool) -> CResult<Tensor> {
    let (out, r) = b.dims2()?;
    let half = out / heads / 2;
    let (d1, d2) = if to_interleaved { (2, half) } else { (half, 2) };
    b.reshape((heads, d1, d2, r))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((out, r))
}

/// A and B as weir's linears, B scaled; shapes checked against the projection's (in, out).
fn pair(
    a: &Tensor,
    b: &Tensor,
    (in_dim, out_dim): (usize, usize),
    config: &LoraConfig,
    device: &Device,
    dtype: DType,
) -> Result<LoraPair, String> {
    let r = config.rank;
    let (a_dims, b_dims) = (a.dims().to_vec(), b.dims().to_vec());
    if a_dims != [r, in_dim] || b_dims != [out_dim, r] {
        return Err(format!(
            "lora_A {a_dims:?} and lora_B {b_dims:?}, expected [{r}, {in_dim}] and [{out_dim}, {r}]"
        ));
    }
    let load = |t: Tensor| -> CResult<Linear> {
        let t = t.to_dtype(DType::F32)?;
        let t = if device.is_cpu() {
            t
        } else {
            t.to_dtype(dtype)?.to_device(device)?
        };
        Linear::from_dense(t, None)
    };
    let scaled = (b.to_dtype(DType::F32).map_err(|e| e.to_string())? * config.scale())
        .map_err(|e| e.to_string())?;
    Ok(LoraPair {
        a: load(a.clone()).map_err(|e| e.to_string())?,
        b: load(scaled).map_err(|e| e.to_string())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn config_scales_and_refuses_what_it_cannot_serve() {
        let c = LoraConfig::from_json(
            &json!({"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]}),
        )
        .unwrap();
        assert_eq!(
            (c.scale(), c.targets.clone()),
            (2.0, vec![Target::Q, Target::V])
        );
        let c = LoraConfig::from_json(&json!({"r": 16, "lora_alpha": 8, "use_rslora": true, "target_modules": "all-linear", "bias": "none"})).unwrap();
        assert_eq!((c.scale(), c.targets.len()), (2.0, 7));
        for bad in [
            json!({"r": 8, "lora_alpha": 16, "target_modules": ["q_proj"], "use_dora": true}),
            json!({"r": 8, "lora_alpha": 16, "target_modules": ["lm_head"]}),
            json!({"r": 8, "lora_alpha": 16, "target_modules": ["q_proj"], "bias": "all"}),
            json!({"r": 8, "lora_alpha": 16, "target_modules": ["q_proj"], "rank_pattern": {"q": 4}}),
            json!({"r": 8, "lora_alpha": 16, "target_modules": ".*proj"}),
        ] {
            assert!(LoraConfig::from_json(&bad).is_err(), "{bad}");
        }
    }
}
