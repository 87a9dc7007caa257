//! llama.cpp's LoRA adapters in GGUF (`general.type` = `adapter`, `adapter.type` = `lora`, as
//! its `convert_lora_to_gguf.py` writes them): each adapted weight `blk.N.MODULE.weight` has a
//! `.lora_a` [r, in] and a `.lora_b` [out, r] (candle's order of dimensions), and the file states
//! `adapter.lora.alpha`. This file only reads them; `lora.rs` maps the names to projections.

use candle_core::quantized::gguf_file::Content;
use candle_core::{Device, Tensor};
use std::path::Path;

/// A GGUF LoRA file's contents.
pub struct GgufLora {
    /// `general.architecture` of the model it was made for.
    pub architecture: String,
    /// `adapter.lora.alpha` (0 when absent).
    pub alpha: f32,
    /// (layer, module as in `blk.N.MODULE.weight`, A [r, in], B [out, r]), in f32 on the host.
    pub pairs: Vec<(usize, String, Tensor, Tensor)>,
}

/// Reads the GGUF LoRA adapter `path`.
pub fn read(path: &Path) -> Result<GgufLora, String> {
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let ct = Content::read(&mut file).map_err(|e| format!("not a GGUF file: {e}"))?;
    let text = |k: &str| ct.metadata.get(k).and_then(|v| v.to_string().ok()).cloned();
    if text("general.type").as_deref() != Some("adapter") {
        return Err("not a GGUF adapter (general.type is not \"adapter\")".into());
    }
    if text("adapter.type").as_deref() != Some("lora") {
        return Err(format!(
            "adapter.type {:?}: only LoRA adapters are served",
            text("adapter.type")
        ));
    }
    if ct.metadata.keys().any(|k| k.starts_with("adapter.alora")) {
        return Err("activated LoRA (adapter.alora.*) is not supported".into());
    }
    let alpha = match ct.metadata.get("adapter.lora.alpha") {
        None => 0.0,
        Some(v) => v
            .to_f32()
            .or_else(|_| v.to_f64().map(|x| x as f32))
            .map_err(|e| format!("adapter.lora.alpha: {e}"))?,
    };
    let mut names: Vec<&String> = ct.tensor_infos.keys().collect();
    names.sort();
    let mut pairs = Vec::new();
    for name in &names {
        let Some(base) = name.strip_suffix(".lora_a") else {
            if !name.ends_with(".lora_b") {
                return Err(format!("{name}: not a .lora_a / .lora_b tensor"));
            }
            continue;
        };
        let b_name = format!("{base}.lora_b");
        if !ct.tensor_infos.contains_key(&b_name) {
            return Err(format!("{name} has no {b_name}"));
        }
        let (layer, module) = base
            .strip_prefix("blk.")
            .and_then(|r| r.strip_suffix(".weight"))
            .and_then(|r| r.split_once('.'))
            .and_then(|(n, m)| Some((n.parse::<usize>().ok()?, m.to_string())))
            .ok_or_else(|| format!("{base}: not a layer's weight (blk.N.MODULE.weight)"))?;
        let mut load = |n: &str| -> Result<Tensor, String> {
            ct.tensor(&mut file, n, &Device::Cpu)
                .and_then(|q| q.dequantize(&Device::Cpu))
                .map_err(|e| format!("{n}: {e}"))
        };
        let (a, b) = (load(name)?, load(&b_name)?);
        pairs.push((layer, module, a, b));
    }
    if 2 * pairs.len() != names.len() {
        return Err("a .lora_b tensor has no .lora_a".into());
    }
    Ok(GgufLora {
        architecture: text("general.architecture").unwrap_or_default(),
        alpha,
        pairs,
    })
}
