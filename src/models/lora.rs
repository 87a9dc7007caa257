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

    fn index(self) -> usize {
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
struct LoraPair {
    a: Linear,
    b: Linear,
}

/// An adapter's matrices, per layer and target.
#[derive(Clone)]
pub struct LoraAdapter {
    pub name: String,
    pub config: LoraConfig,
    layers: Vec<[Option<LoraPair>; 7]>,
    bytes: u64,
}

impl LoraAdapter {
    /// Reads the PEFT folder `dir` for a model of `shape` on `device` (f32 on the CPU, `dtype`
    /// elsewhere). Every tensor must belong to a declared target of an existing layer.
    pub fn load(
        name: &str,
        dir: &Path,
        shape: &LoraShape,
        device: &Device,
        dtype: DType,
    ) -> Result<Self, String> {
        let config = LoraConfig::read(dir)?;
        let file = dir.join("adapter_model.safetensors");
        let tensors = candle_core::safetensors::load(&file, &Device::Cpu)
            .map_err(|e| format!("{}: {e}", file.display()))?;
        let mut layers: Vec<[Option<LoraPair>; 7]> =
            (0..shape.num_layers).map(|_| Default::default()).collect();
        let mut found = 0;
        for (i, slots) in layers.iter_mut().enumerate() {
            for &t in &config.targets {
                let key = |m: &str| t.tensor_name(i, m);
                let (a, b) = match (tensors.get(&key("lora_A")), tensors.get(&key("lora_B"))) {
                    (Some(a), Some(b)) => (a, b),
                    (None, None) => continue,
                    _ => {
                        return Err(format!(
                            "{}: layer {i} {} has only one of lora_A, lora_B",
                            file.display(),
                            t.module()
                        ))
                    }
                };
                slots[t.index()] = Some(
                    pair(a, b, shape.dims(t), &config, device, dtype).map_err(|e| {
                        format!("{}: layer {i} {}: {e}", file.display(), t.module())
                    })?,
                );
                found += 2;
            }
        }
        if found != tensors.len() {
            let mut extra: Vec<&String> = tensors.keys().collect();
            extra.sort();
            return Err(format!(
                "{}: {} tensors are not the lora_A/lora_B of a declared target in the model's {} layers (e.g. {})",
                file.display(),
                tensors.len() - found,
                shape.num_layers,
                extra.first().map_or("", |s| s.as_str())
            ));
        }
        let bytes = layers
            .iter()
            .flatten()
            .flatten()
            .map(|p| p.a.bytes() + p.b.bytes())
            .sum();
        Ok(Self {
            name: name.to_string(),
            config,
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

/// One step's adapter rows: each adapter with rows in the batch and those rows' indices.
pub struct LoraStep<'a> {
    /// Each adapter, its rows as a device tensor and on the host.
    groups: Vec<(&'a LoraAdapter, Tensor, Vec<u32>)>,
}

/// The step of a model without adapters.
pub static NO_ADAPTERS: LoraStep<'static> = LoraStep { groups: Vec::new() };

impl<'a> LoraStep<'a> {
    /// `rows`: (index into `adapters`, the batch rows of that adapter), from
    /// `ForwardBatch::lora_rows`.
    pub fn new(
        adapters: &'a [Option<LoraAdapter>],
        rows: &[(u32, Vec<u32>)],
        device: &Device,
    ) -> CResult<Self> {
        let groups = rows
            .iter()
            .map(|(i, rows)| {
                let slot = adapters.get(*i as usize).and_then(Option::as_ref);
                let adapter = slot.ok_or_else(|| {
                    candle_core::Error::Msg(format!("adapter {i} is not loaded. This is a bug."))
                })?;
                Ok((adapter, Tensor::new(rows.as_slice(), device)?, rows.clone()))
            })
            .collect::<CResult<_>>()?;
        Ok(Self { groups })
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Layer `i`'s view.
    pub fn layer(&self, i: usize) -> LayerLoras<'_> {
        LayerLoras {
            step: self,
            layer: i,
        }
    }
}

/// The adapters of one step at one layer.
pub struct LayerLoras<'s> {
    step: &'s LoraStep<'s>,
    layer: usize,
}

impl LayerLoras<'_> {
    fn pairs(&self, t: Target) -> impl Iterator<Item = (&LoraPair, &Tensor, &[u32])> {
        self.step.groups.iter().filter_map(move |(a, rows, host)| {
            let p = a.layers.get(self.layer)?[t.index()].as_ref()?;
            Some((p, rows, host.as_slice()))
        })
    }

    /// Whether any of the step's adapters adapts `t` at this layer.
    pub fn touches(&self, t: Target) -> bool {
        self.pairs(t).next().is_some()
    }

    /// `y` (the projection `t` of `x`, [rows, out]) plus each adapter's delta on its rows.
    pub fn add(&self, t: Target, x: &Tensor, mut y: Tensor) -> CResult<Tensor> {
        if !self.touches(t) {
            return Ok(y);
        }
        if let Some(out) = self.add_on_host(t, x, &y)? {
            return Ok(out);
        }
        for (p, rows, _) in self.pairs(t) {
            let d = p.b.forward(&p.a.forward(&x.index_select(rows, 0)?)?)?;
            y = y.index_add(rows, &d.to_dtype(y.dtype())?, 0)?;
        }
        Ok(y)
    }

    /// `add` on the CPU with every matrix in weir's panels and `y` in f32: `x` and `y` read
    /// once, each adapter's rows through its A and B with no tensor op between, each delta
    /// added in place (the same bits as the tensor path, without its per-op cost, which
    /// dominates at a few rows per adapter). None when that does not apply.
    fn add_on_host(&self, t: Target, x: &Tensor, y: &Tensor) -> CResult<Option<Tensor>> {
        let host = y.device().is_cpu() && y.dtype() == DType::F32;
        if !host
            || !self
                .pairs(t)
                .all(|(p, _, _)| p.a.is_packed() && p.b.is_packed())
        {
            return Ok(None);
        }
        let ((n, in_dim), (_, out_dim)) = (x.dims2()?, y.dims2()?);
        let xs = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let mut ys = y.flatten_all()?.to_vec1::<f32>()?;
        for (p, _, rows) in self.pairs(t) {
            let mut xr = Vec::with_capacity(rows.len() * in_dim);
            for &r in rows {
                xr.extend_from_slice(&xs[r as usize * in_dim..][..in_dim]);
            }
            let a = p.a.packed_rows(&xr, rows.len()).expect("checked packed");
            let d = p.b.packed_rows(&a, rows.len()).expect("checked packed");
            for (&r, delta) in rows.iter().zip(d.chunks_exact(out_dim)) {
                let dst = &mut ys[r as usize * out_dim..][..out_dim];
                dst.iter_mut().zip(delta).for_each(|(o, v)| *o += v);
            }
        }
        Ok(Some(Tensor::from_vec(ys, (n, out_dim), y.device())?))
    }

    /// `y`: the outputs of `targets` side by side (a merged projection), `widths` theirs; each
    /// adapter's deltas (zeros for a target it lacks) added on its rows.
    pub fn add_merged(
        &self,
        targets: &[Target],
        widths: &[usize],
        x: &Tensor,
        mut y: Tensor,
    ) -> CResult<Tensor> {
        for (adapter, rows, _) in &self.step.groups {
            let Some(slots) = adapter.layers.get(self.layer) else {
                continue;
            };
            if targets.iter().all(|t| slots[t.index()].is_none()) {
                continue;
            }
            let xr = x.index_select(rows, 0)?;
            let n = xr.dim(0)?;
            let parts = targets
                .iter()
                .zip(widths)
                .map(|(t, &w)| match &slots[t.index()] {
                    Some(p) => p.b.forward(&p.a.forward(&xr)?)?.to_dtype(y.dtype()),
                    None => Tensor::zeros((n, w), y.dtype(), y.device()),
                })
                .collect::<CResult<Vec<_>>>()?;
            y = y.index_add(rows, &Tensor::cat(&parts, 1)?, 0)?;
        }
        Ok(y)
    }
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
