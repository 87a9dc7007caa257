//! `WeightSource`: named tensors for a model, from GGUF or safetensors. Models ask for weights by
//! their Hugging Face name (`model.layers.3.self_attn.q_proj`); the GGUF source maps that to
//! llama.cpp's name (`blk.3.attn_q`). Every source places its tensors on one device in one
//! dtype: on CPU with the default f32, GGUF keeps its quantized blocks (`WeightFormat`); on a GPU
//! GGUF is dequantized to the model dtype at load, and safetensors load straight to the device.
//! `DummyWeights` makes random weights of any shape from a config alone (throughput runs).

use super::linear::{Linear, WeightFormat};
use candle_core::quantized::{gguf_file, GgmlDType, QStorage, QTensor};
use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use std::borrow::Cow;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

/// `--load-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadFormat {
    /// Weights from the model's files.
    Auto,
    /// Random weights from config.json alone (`DummyWeights`).
    Dummy,
}

impl std::str::FromStr for LoadFormat {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "dummy" => Ok(Self::Dummy),
            _ => Err(format!("expected auto or dummy, got {s:?}")),
        }
    }
}

pub trait WeightSource {
    /// Weight `[out, in]` of projection `name`, with its bias when `bias` is set.
    fn linear(&mut self, name: &str, out_dim: usize, in_dim: usize, bias: bool) -> Result<Linear>;
    /// A dense tensor `name.weight` (norm scales, embeddings) in `dtype()`.
    fn dense(&mut self, name: &str, shape: &[usize]) -> Result<Tensor>;
    /// `name.weight` in its GGML blocks, where the source keeps them (GGUF on the CPU, a
    /// quantized type); `None` otherwise (read it with `dense`).
    fn quantized(&mut self, _name: &str, _shape: &[usize]) -> Result<Option<QTensor>> {
        Ok(None)
    }
    /// The projection `proj` ([out, in]) of each of the `num_experts` experts under `prefix`
    /// (`{prefix}.{e}.{proj}` in Hugging Face checkpoints; GGUF stacks them in one tensor).
    fn experts(
        &mut self,
        prefix: &str,
        proj: &str,
        num_experts: usize,
        out_dim: usize,
        in_dim: usize,
    ) -> Result<Vec<Linear>> {
        (0..num_experts)
            .map(|e| self.linear(&format!("{prefix}.{e}.{proj}"), out_dim, in_dim, false))
            .collect()
    }
    fn contains(&self, name: &str) -> bool;
    fn device(&self) -> &Device;
    /// The dtype of dense weights and activations.
    fn dtype(&self) -> DType;
    /// The tensors by name as candle's `VarBuilder` reads them (safetensors, dummy weights),
    /// for a family that loads in candle's idiom (BERT); `None` for GGUF files.
    fn var_builder(&self) -> Option<VarBuilder<'_>> {
        None
    }
    /// A GGUF file's metadata and tensor index (its family reads its hyper-parameters there).
    fn gguf(&self) -> Option<&gguf_file::Content> {
        None
    }
}

/// llama.cpp's tensor name for a Hugging Face module name.
pub fn gguf_name(hf: &str) -> String {
    gguf_name_with(hf, &[])
}

/// `gguf_name` with a family's own names for some layer modules (`Family::gguf_names`) first.
pub fn gguf_name_with(hf: &str, layer_names: &[(&str, &str)]) -> String {
    const GLOBAL: [(&str, &str); 3] = [
        ("model.embed_tokens", "token_embd"),
        ("model.norm", "output_norm"),
        ("lm_head", "output"),
    ];
    const LAYER: [(&str, &str); 27] = [
        ("self_attn.q_proj", "attn_q"),
        ("self_attn.k_proj", "attn_k"),
        ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"),
        ("mlp.gate_proj", "ffn_gate"),
        ("mlp.up_proj", "ffn_up"),
        ("mlp.down_proj", "ffn_down"),
        ("input_layernorm", "attn_norm"),
        ("post_attention_layernorm", "ffn_norm"),
        ("self_attn.q_norm", "attn_q_norm"),
        ("self_attn.k_norm", "attn_k_norm"),
        ("pre_feedforward_layernorm", "ffn_norm"),
        ("post_feedforward_layernorm", "post_ffw_norm"),
        // Phi-3's fused projections (its `ffn_up` holds gate and up)
        ("self_attn.qkv_proj", "attn_qkv"),
        ("mlp.gate_up_proj", "ffn_up"),
        // mixture of experts: the router, the stacked experts (Qwen, OLMoE; Mixtral's w1/w3/w2),
        // Qwen2-MoE's shared expert and its gate
        ("mlp.gate", "ffn_gate_inp"),
        ("mlp.experts.gate_proj", "ffn_gate_exps"),
        ("mlp.experts.up_proj", "ffn_up_exps"),
        ("mlp.experts.down_proj", "ffn_down_exps"),
        ("block_sparse_moe.gate", "ffn_gate_inp"),
        ("block_sparse_moe.experts.w1", "ffn_gate_exps"),
        ("block_sparse_moe.experts.w3", "ffn_up_exps"),
        ("block_sparse_moe.experts.w2", "ffn_down_exps"),
        ("mlp.shared_expert.gate_proj", "ffn_gate_shexp"),
        ("mlp.shared_expert.up_proj", "ffn_up_shexp"),
        ("mlp.shared_expert.down_proj", "ffn_down_shexp"),
        ("mlp.shared_expert_gate", "ffn_gate_inp_shexp"),
    ];
    if let Some((_, g)) = GLOBAL.iter().find(|(h, _)| *h == hf) {
        return g.to_string();
    }
    if let Some(rest) = hf.strip_prefix("model.layers.") {
        if let Some((idx, module)) = rest.split_once('.') {
            let mut names = layer_names.iter().chain(&LAYER);
            if let Some((_, g)) = names.find(|(h, _)| *h == module) {
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
    dtype: DType,
    format: WeightFormat,
    /// The family's own names for some layer modules (`Family::gguf_names`).
    layer_names: &'static [(&'static str, &'static str)],
}

impl GgufWeights {
    /// GGUF on the CPU in f32 activations, keeping the quantized blocks `format` asks for.
    pub fn open(path: &Path, device: &Device, format: WeightFormat) -> Result<Self> {
        Self::open_as(path, device, DType::F32, format)
    }

    /// GGUF for `device` and `dtype`. Anything but CPU + f32 dequantizes every weight to
    /// `dtype` at load (`format` is then ignored).
    pub fn open_as(
        path: &Path,
        device: &Device,
        dtype: DType,
        format: WeightFormat,
    ) -> Result<Self> {
        let mut reader = BufReader::new(File::open(path)?);
        let content = gguf_file::Content::read(&mut reader).map_err(|e| e.with_path(path))?;
        Ok(Self {
            content,
            reader,
            device: device.clone(),
            dtype,
            format,
            layer_names: &[],
        })
    }

    /// Maps the layer modules in `names` (a family's `gguf_names`) to its own GGUF names.
    pub fn set_layer_names(&mut self, names: &'static [(&'static str, &'static str)]) {
        self.layer_names = names;
    }

    fn name(&self, hf: &str) -> String {
        gguf_name_with(hf, self.layer_names)
    }

    /// Whether weights keep their GGML blocks (CPU, f32 activations).
    fn keeps_quantized(&self) -> bool {
        self.device.is_cpu() && self.dtype == DType::F32
    }

    /// A GGML tensor as a dense tensor on the target device in the target dtype.
    fn dequantized(&self, qt: &QTensor) -> Result<Tensor> {
        qt.dequantize(&Device::Cpu)?
            .to_dtype(self.dtype)?
            .to_device(&self.device)
    }

    pub fn content(&self) -> &gguf_file::Content {
        &self.content
    }

    fn qtensor(&mut self, name: &str, shape: &[usize]) -> Result<QTensor> {
        let t = self.content.tensor(&mut self.reader, name, &Device::Cpu)?;
        // llama.cpp drops leading 1s (Qwen2-MoE's shared-expert gate [1, hidden] is [hidden])
        let squeezed = |s: &[usize]| {
            s.iter()
                .skip_while(|&&d| d == 1)
                .copied()
                .collect::<Vec<_>>()
        };
        if squeezed(t.shape().dims()) == squeezed(shape) && t.shape().dims() != shape {
            let dense = t.dequantize(&Device::Cpu)?.reshape(shape)?;
            return QTensor::quantize(&dense, GgmlDType::F32);
        }
        if t.shape().dims() != shape {
            candle_core::bail!("{name}: expected shape {shape:?}, file has {:?}", t.shape());
        }
        Ok(t)
    }
}

impl WeightSource for GgufWeights {
    fn linear(&mut self, name: &str, out_dim: usize, in_dim: usize, bias: bool) -> Result<Linear> {
        let g = self.name(name);
        let w = self.qtensor(&format!("{g}.weight"), &[out_dim, in_dim])?;
        let b = if bias {
            let qb = self.qtensor(&format!("{g}.bias"), &[out_dim])?;
            Some(self.dequantized(&qb)?)
        } else {
            None
        };
        if self.keeps_quantized() {
            Linear::from_qtensor(w, b, self.format)
        } else {
            Linear::from_dense(self.dequantized(&w)?, b)
        }
    }

    fn dense(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let g = self.name(name);
        let qt = self.qtensor(&format!("{g}.weight"), shape)?;
        self.dequantized(&qt)
    }

    fn quantized(&mut self, name: &str, shape: &[usize]) -> Result<Option<QTensor>> {
        if !self.keeps_quantized() || self.format == WeightFormat::Dense {
            return Ok(None);
        }
        let g = self.name(name);
        let qt = self.qtensor(&format!("{g}.weight"), shape)?;
        let float = matches!(
            qt.dtype(),
            GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16
        );
        let blocks_fit = shape
            .last()
            .is_some_and(|h| h % qt.dtype().block_size() == 0);
        Ok((!float && blocks_fit).then_some(qt))
    }

    /// llama.cpp's stacked `ffn_*_exps` tensor [experts, out, in], split into one projection
    /// per expert (GGML blocks never straddle two experts' rows).
    fn experts(
        &mut self,
        prefix: &str,
        proj: &str,
        num_experts: usize,
        out_dim: usize,
        in_dim: usize,
    ) -> Result<Vec<Linear>> {
        let g = self.name(&format!("{prefix}.{proj}"));
        let qt = self.qtensor(&format!("{g}.weight"), &[num_experts, out_dim, in_dim])?;
        if !self.keeps_quantized() {
            let all = self.dequantized(&qt)?;
            return (0..num_experts)
                .map(|e| Linear::from_dense(all.get(e)?, None))
                .collect();
        }
        let data = qt.data()?;
        let per_expert = data.len() / num_experts;
        (0..num_experts)
            .map(|e| {
                let bytes = &data[e * per_expert..(e + 1) * per_expert];
                let storage = QStorage::from_data(Cow::Borrowed(bytes), &Device::Cpu, qt.dtype())?;
                let w = QTensor::new(storage, (out_dim, in_dim))?;
                Linear::from_qtensor(w, None, self.format)
            })
            .collect()
    }

    fn contains(&self, name: &str) -> bool {
        self.content
            .tensor_infos
            .contains_key(&format!("{}.weight", self.name(name)))
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn dtype(&self) -> DType {
        self.dtype
    }

    fn gguf(&self) -> Option<&gguf_file::Content> {
        Some(self.content())
    }
}

/// Safetensors checkpoints (and in-memory `VarMap`s in tests), in the builder's dtype on its
/// device.
pub struct VarBuilderWeights<'a> {
    vb: VarBuilder<'a>,
    /// The checkpoint holds the base model without its `model.` prefix (saved from
    /// `MistralModel` / `Qwen3Model`, as embedding models such as e5-mistral are).
    bare: bool,
}

impl<'a> VarBuilderWeights<'a> {
    pub fn new(vb: VarBuilder<'a>) -> Self {
        let bare = !vb.contains_tensor("model.embed_tokens.weight")
            && vb.contains_tensor("embed_tokens.weight");
        Self { vb, bare }
    }

    /// Where `name` (Hugging Face's, under `model.`) is in this checkpoint.
    fn at(&self, name: &str) -> VarBuilder<'a> {
        match name.strip_prefix("model.").filter(|_| self.bare) {
            Some(bare) => self.vb.pp(bare),
            None => self.vb.pp(name),
        }
    }

    /// Maps the files and converts each tensor to `dtype` on `device` as it is read.
    pub fn from_safetensors(
        files: &[std::path::PathBuf],
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        // SAFETY: the files are not modified while mapped (they sit in weir's model directory).
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(files, dtype, device)? };
        Ok(Self::new(vb))
    }
}

impl WeightSource for VarBuilderWeights<'_> {
    fn linear(&mut self, name: &str, out_dim: usize, in_dim: usize, bias: bool) -> Result<Linear> {
        let vb = self.at(name);
        let dtype = self.vb.dtype();
        let w = vb.get((out_dim, in_dim), "weight")?.to_dtype(dtype)?;
        let b = if bias {
            Some(vb.get(out_dim, "bias")?.to_dtype(dtype)?)
        } else {
            None
        };
        Linear::from_dense(w, b)
    }

    fn dense(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.at(name)
            .get(shape, "weight")?
            .to_dtype(self.vb.dtype())
    }

    fn contains(&self, name: &str) -> bool {
        self.at(name).contains_tensor("weight")
    }

    fn var_builder(&self) -> Option<VarBuilder<'_>> {
        Some(self.vb.clone())
    }

    fn device(&self) -> &Device {
        self.vb.device()
    }

    fn dtype(&self) -> DType {
        self.vb.dtype()
    }
}

/// `--load-format dummy`: random weights in the shapes a config asks for, made on the device
/// (N(0, 0.02) for projections and embeddings, ones for norm scales), so throughput can be
/// measured without downloading weights. Every name exists: whether `lm_head` is its own
/// weight or the embedding is the family's config's to say (`tie_word_embeddings`).
pub struct DummyWeights {
    device: Device,
    dtype: DType,
}

impl DummyWeights {
    pub fn new(device: &Device, dtype: DType) -> Self {
        Self {
            device: device.clone(),
            dtype,
        }
    }

    fn random(&self, shape: &[usize]) -> Result<Tensor> {
        Tensor::randn(0f32, 0.02, shape, &self.device)?.to_dtype(self.dtype)
    }
}

impl WeightSource for DummyWeights {
    fn linear(&mut self, _name: &str, out_dim: usize, in_dim: usize, bias: bool) -> Result<Linear> {
        let b = bias.then(|| self.random(&[out_dim])).transpose()?;
        Linear::from_dense(self.random(&[out_dim, in_dim])?, b)
    }

    fn dense(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        if name.ends_with("norm") || name.ends_with("layernorm") {
            Tensor::ones(shape, self.dtype, &self.device)
        } else {
            self.random(shape)
        }
    }

    fn contains(&self, _name: &str) -> bool {
        true
    }

    fn var_builder(&self) -> Option<VarBuilder<'_>> {
        // zeros, not random: shapes only (its LayerNorms make any input the same vector)
        Some(VarBuilder::zeros(self.dtype, &self.device))
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn dtype(&self) -> DType {
        self.dtype
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
