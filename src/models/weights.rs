//! `WeightSource`: named tensors for a model, from GGUF or safetensors. Models ask for weights by
//! their Hugging Face name (`model.layers.3.self_attn.q_proj`); the GGUF source maps that to
//! llama.cpp's name (`blk.3.attn_q`).

use super::linear::{Linear, WeightFormat};
use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

pub trait WeightSource {
    /// Weight `[out, in]` of projection `name`, with its bias when `bias` is set.
    fn linear(&mut self, name: &str, out_dim: usize, in_dim: usize, bias: bool) -> Result<Linear>;
    /// A dense f32 tensor `name.weight` (norm scales, embeddings).
    fn dense(&mut self, name: &str, shape: &[usize]) -> Result<Tensor>;
    fn contains(&self, name: &str) -> bool;
}

/// llama.cpp's tensor name for a Hugging Face module name.
pub fn gguf_name(hf: &str) -> String {
    const GLOBAL: [(&str, &str); 3] = [
        ("model.embed_tokens", "token_embd"),
        ("model.norm", "output_norm"),
        ("lm_head", "output"),
    ];
    const LAYER: [(&str, &str); 9] = [
        ("self_attn.q_proj", "attn_q"),
        ("self_attn.k_proj", "attn_k"),
        ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"),
        ("mlp.gate_proj", "ffn_gate"),
        ("mlp.up_proj", "ffn_up"),
        ("mlp.down_proj", "ffn_down"),
        ("input_layernorm", "attn_norm"),
        ("post_attention_layernorm", "ffn_norm"),
    ];
    if let Some((_, g)) = GLOBAL.iter().find(|(h, _)| *h == hf) {
        return g.to_string();
    }
    if let Some(rest) = hf.strip_prefix("model.layers.") {
        if let Some((idx, module)) = rest.split_once('.') {
            if let Some((_, g)) = LAYER.iter().find(|(h, _)| *h == module) {
                return format!("blk.{idx}.{g}");
            }
        }
    }
    hf.to_string()
}

pub struct GgufWeights {
    content: gguf_file::Content,
    reader: BufReader<File>,
    device: Device,
    format: WeightFormat,
}

impl GgufWeights {
    pub fn open(path: &Path, device: &Device, format: WeightFormat) -> Result<Self> {
        let mut reader = BufReader::new(File::open(path)?);
        let content = gguf_file::Content::read(&mut reader).map_err(|e| e.with_path(path))?;
        Ok(Self {
            content,
            reader,
            device: device.clone(),
            format,
        })
    }

    pub fn content(&self) -> &gguf_file::Content {
        &self.content
    }

    fn qtensor(&mut self, name: &str, shape: &[usize]) -> Result<candle_core::quantized::QTensor> {
        let t = self.content.tensor(&mut self.reader, name, &self.device)?;
        if t.shape().dims() != shape {
            candle_core::bail!("{name}: expected shape {shape:?}, file has {:?}", t.shape());
        }
        Ok(t)
    }
}

impl WeightSource for GgufWeights {
    fn linear(&mut self, name: &str, out_dim: usize, in_dim: usize, bias: bool) -> Result<Linear> {
        let g = gguf_name(name);
        let w = self.qtensor(&format!("{g}.weight"), &[out_dim, in_dim])?;
        let b = if bias {
            Some(
                self.qtensor(&format!("{g}.bias"), &[out_dim])?
                    .dequantize(&self.device)?,
            )
        } else {
            None
        };
        Linear::from_qtensor(w, b, self.format)
    }

    fn dense(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let g = gguf_name(name);
        self.qtensor(&format!("{g}.weight"), shape)?
            .dequantize(&self.device)
    }

    fn contains(&self, name: &str) -> bool {
        self.content
            .tensor_infos
            .contains_key(&format!("{}.weight", gguf_name(name)))
    }
}

/// Safetensors checkpoints (and in-memory `VarMap`s in tests), loaded as f32.
pub struct VarBuilderWeights<'a> {
    vb: VarBuilder<'a>,
}

impl<'a> VarBuilderWeights<'a> {
    pub fn new(vb: VarBuilder<'a>) -> Self {
        Self { vb }
    }

    pub fn from_safetensors(files: &[std::path::PathBuf], device: &Device) -> Result<Self> {
        // SAFETY: the files are not modified while mapped (they sit in weir's model directory).
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(files, DType::F32, device)? };
        Ok(Self { vb })
    }
}

impl WeightSource for VarBuilderWeights<'_> {
    fn linear(&mut self, name: &str, out_dim: usize, in_dim: usize, bias: bool) -> Result<Linear> {
        let vb = self.vb.pp(name);
        let w = vb.get((out_dim, in_dim), "weight")?.to_dtype(DType::F32)?;
        let b = if bias {
            Some(vb.get(out_dim, "bias")?.to_dtype(DType::F32)?)
        } else {
            None
        };
        Ok(Linear::from_dense(w, b))
    }

    fn dense(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.vb.pp(name).get(shape, "weight")?.to_dtype(DType::F32)
    }

    fn contains(&self, name: &str) -> bool {
        self.vb.contains_tensor(&format!("{name}.weight"))
    }
}

#[cfg(test)]
mod tests {
    use super::gguf_name;

    #[test]
    fn maps_hf_names_to_gguf() {
        assert_eq!(
            gguf_name("model.layers.12.self_attn.o_proj"),
            "blk.12.attn_output"
        );
        assert_eq!(
            gguf_name("model.layers.0.post_attention_layernorm"),
            "blk.0.ffn_norm"
        );
        assert_eq!(gguf_name("model.embed_tokens"), "token_embd");
        assert_eq!(gguf_name("lm_head"), "output");
    }
}
