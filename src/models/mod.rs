//! Models over the paged KV cache. A model turns a `ForwardBatch` into the logits of the rows it
//! asks for, writing and reading K/V through the `Attention` the runner lends it; it owns no
//! per-request state and does not know which attention backend or device it runs on.

pub mod attention;
pub mod batch;
pub mod bert;
pub mod config;
pub mod device;
pub mod encoder;
pub mod error;
pub mod family;
pub mod fused;
pub mod gemma;
pub mod layers;
pub mod linear;
pub mod llama;
pub mod lora;
pub mod lora_gguf;
pub mod lora_step;
pub mod moe_config;
pub mod pool;
pub mod qgemm;
pub mod rope;
pub mod rope_params;
pub mod weights;

use attention::{Attention, AttentionShape};
use batch::ForwardBatch;
use candle_core::{DType, Device, Result, Tensor};

pub use config::LlamaConfig;
pub use linear::WeightFormat;
pub use llama::Llama;

/// A step's inputs on the model's device: what `CausalLm::upload` makes of a `ForwardBatch`,
/// or what a CUDA graph keeps at fixed addresses and rewrites before each replay.
pub struct StepInputs {
    /// [num_tokens] u32
    pub token_ids: Tensor,
    /// [num_tokens] u32 when the model rotates on the device (its fused RoPE kernel), else
    /// `None` (host tables from the batch's positions).
    pub positions: Option<Tensor>,
    /// [num_logits_rows] u32, `None` when every row returns logits (a decode step).
    pub logits_rows: Option<Tensor>,
    pub attention: attention::AttentionMetadata,
}

/// `batch`'s device inputs, in one upload of [token ids | positions | logits rows] before any
/// layer is launched (on a GPU a copy from pageable host memory waits for the stream, so a late
/// one would stall the host until every layer ran). `device_rope`: the positions go up too, for
/// a fused RoPE kernel that computes its own angles.
pub fn upload_step(
    batch: &ForwardBatch,
    attn: &Attention,
    device: &Device,
    device_rope: bool,
) -> Result<StepInputs> {
    let t = batch.num_tokens();
    // The logits rows are needed only when some row does not sample (prompt chunks); in a
    // decode step every row samples and there is nothing to pick.
    let every_row = batch.logits_rows.len() == t
        && (0..t)
            .zip(&batch.logits_rows)
            .all(|(i, &r)| r as usize == i);
    let pick_rows = !every_row && !batch.logits_rows.is_empty();
    let mut host = Vec::with_capacity(2 * t + batch.logits_rows.len());
    host.extend_from_slice(&batch.token_ids);
    if device_rope {
        host.extend_from_slice(&batch.positions);
    }
    if pick_rows {
        host.extend_from_slice(&batch.logits_rows);
    }
    let n = host.len();
    let all = Tensor::from_vec(host, n, device)?;
    let r = batch.logits_rows.len();
    Ok(StepInputs {
        token_ids: all.narrow(0, 0, t)?,
        positions: device_rope.then(|| all.narrow(0, t, t)).transpose()?,
        logits_rows: pick_rows.then(|| all.narrow(0, n - r, r)).transpose()?,
        attention: attn.prepare(batch)?,
    })
}

pub trait CausalLm: Send {
    /// Logits `[batch.logits_rows.len(), vocab]` (f32, on the model's device).
    fn forward(&self, batch: &ForwardBatch, attn: &mut Attention) -> Result<Tensor> {
        let inputs = self.upload(batch, attn)?;
        self.forward_inputs(batch, &inputs, attn)
    }
    /// `batch`'s device inputs (uploaded before any layer runs).
    fn upload(&self, batch: &ForwardBatch, attn: &Attention) -> Result<StepInputs>;
    /// The forward pass over inputs already on the device; `batch` gives the shapes and
    /// host-side values (positions for host RoPE tables, context lengths).
    fn forward_inputs(
        &self,
        batch: &ForwardBatch,
        inputs: &StepInputs,
        attn: &mut Attention,
    ) -> Result<Tensor>;
    /// Whether a decode step's inputs are all device tensors (fused RoPE, weir's kernels), so
    /// that a CUDA graph can replay it.
    fn graph_capable(&self) -> bool {
        false
    }
    fn num_layers(&self) -> usize;
    /// Per layer: whether it attends through `attention_shape().sliding_window` (which sets
    /// the KV groups, `kv::KvGroups`).
    fn sliding_layers(&self) -> Vec<bool> {
        vec![false; self.num_layers()]
    }
    fn attention_shape(&self) -> AttentionShape;
    fn device(&self) -> &Device;
    /// Activation dtype (the KV cache's dtype).
    fn dtype(&self) -> DType;
    fn max_context_len(&self) -> usize;
    fn vocab_size(&self) -> usize;
    /// An embedding model's vectors: one per pooling sequence of `batch` (those whose last row
    /// is a sampling row, `BatchSeq::sample`), in batch order. An encoder's sequences are whole
    /// prompts (`Scheduler`'s `whole_prompts`); a decoder's may arrive in chunks, the last of
    /// which pools.
    fn embed(&self, batch: &ForwardBatch, attn: &mut Attention) -> Result<Vec<Vec<f32>>> {
        let _ = (batch, attn);
        candle_core::bail!("this model generates; it has no embeddings")
    }
    /// What an embedding model's vectors are; `None` for a model that generates.
    fn embedding(&self) -> Option<EmbeddingInfo> {
        None
    }
}

/// The vectors an embedding model answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddingInfo {
    /// Their length.
    pub dims: usize,
    /// Whether they are L2-normalized (sentence-transformers' `Normalize` module).
    pub normalized: bool,
    /// Whether their leading values are a vector of their own (trained as a Matryoshka
    /// embedding: `config.json` `is_matryoshka` or `matryoshka_dimensions`), so a request may
    /// ask for fewer `dimensions`.
    pub matryoshka: bool,
    /// The vector is a classifier's scores of a text pair (a cross-encoder: `/score`,
    /// `/rerank`), one per label, not an embedding.
    pub scores: bool,
    /// A decoder averages its prompt's final hidden states (its prompt computed whole in one
    /// step) instead of taking the last one.
    pub mean: bool,
}

/// A loaded model as the model manager holds it: the forward pass (`CausalLm`) plus what the
/// manager needs to size its engine and move it between device and host memory.
pub trait Model: CausalLm + Sync {
    /// The decoder's shape (KV cache and activation sizing).
    fn config(&self) -> &LlamaConfig;
    /// Bytes of every weight.
    fn weight_bytes(&self) -> u64;
    /// This model on `device` (weights copied there, shared where they already are).
    fn to_device(&self, device: &Device) -> Result<std::sync::Arc<dyn Model>>;
    /// Whether its projections run as one GEMM each (dense weights).
    fn projections_merged(&self) -> bool;
    /// On CUDA: weir's fused kernels (on) or the candle ops they replace.
    fn set_fused_kernels(&mut self, on: bool);
    /// Serves this model as an embedding model (`--task embed`): `embed` answers with each
    /// pooling sequence's last final hidden state. False when the family cannot.
    fn set_embedding(&mut self, info: EmbeddingInfo) -> bool {
        let _ = info;
        false
    }
    /// Puts `adapter` in slot `index` (`LoraId(index)`; None empties it), growing the slots as
    /// needed; false when the family does not serve adapters. Safe while the model serves: a
    /// step reads the slots once.
    fn set_lora(&self, index: u32, adapter: Option<lora::LoraAdapter>) -> bool {
        let _ = (index, adapter);
        false
    }
    /// Whether `set_lora` takes adapters (checked before one is read).
    fn serves_loras(&self) -> bool {
        false
    }
    /// Each adapter slot's bytes, None where empty.
    fn lora_bytes(&self) -> Vec<Option<u64>> {
        Vec::new()
    }
}

/// Pooled rows as f32 vectors, each L2-normalized when `normalize` (sentence-transformers'
/// `Normalize`: `v / max(|v|, 1e-12)`, the norm summed in f64 in order).
pub fn pooled_rows(rows: Vec<Vec<f32>>, normalize: bool) -> Vec<Vec<f32>> {
    let mut rows = rows;
    if normalize {
        rows.iter_mut().for_each(|v| l2_normalize(v));
    }
    rows
}

/// `v / max(|v|, 1e-12)`, the norm summed in f64 in order.
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let norm = norm.max(1e-12);
    v.iter_mut()
        .for_each(|x| *x = (f64::from(*x) / norm) as f32);
}

/// One family of architectures and how it loads.
pub struct Family {
    /// Its name in logs and errors.
    pub name: &'static str,
    /// GGUF `general.architecture` values it runs.
    pub gguf_archs: &'static [&'static str],
    /// `config.json` `model_type` values it runs.
    pub hf_model_types: &'static [&'static str],
    /// llama.cpp's names of the layer modules whose name differs from the common map
    /// (`weights::gguf_name`): (Hugging Face module, GGUF name), e.g. Gemma's
    /// `post_attention_layernorm` is `post_attention_norm`, not `ffn_norm`.
    pub gguf_names: &'static [(&'static str, &'static str)],
    /// Reads the family's hyper-parameters (from `config_json`, a Hugging Face `config.json`,
    /// or else from the source's GGUF metadata) and builds the model from its weights (names in
    /// the Hugging Face layout; GGUF sources map theirs).
    pub load: LoadFn,
    /// Reads a `config.json` as `load` would, without weights: every error `load` would give
    /// for it (an unknown `rope_type`, a field weir does not implement), at start-up.
    pub check: fn(&serde_json::Value) -> std::result::Result<(), config::ConfigError>,
}

/// A family's loader: weights, and the `config.json` when the checkpoint has one.
pub type LoadFn = fn(
    &mut dyn weights::WeightSource,
    Option<&serde_json::Value>,
) -> std::result::Result<Box<dyn Model>, ModelLoadError>;

/// Why a family could not build its model.
#[derive(Debug, thiserror::Error)]
pub enum ModelLoadError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("loading weights: {0}")]
    Weights(#[from] candle_core::Error),
}

/// A model shared with its manager (which keeps it for the host tier after the engine stops).
impl<M: CausalLm + Sync + ?Sized> CausalLm for std::sync::Arc<M> {
    fn forward(&self, batch: &ForwardBatch, attn: &mut Attention) -> Result<Tensor> {
        (**self).forward(batch, attn)
    }
    fn upload(&self, batch: &ForwardBatch, attn: &Attention) -> Result<StepInputs> {
        (**self).upload(batch, attn)
    }
    fn forward_inputs(
        &self,
        batch: &ForwardBatch,
        inputs: &StepInputs,
        attn: &mut Attention,
    ) -> Result<Tensor> {
        (**self).forward_inputs(batch, inputs, attn)
    }
    fn graph_capable(&self) -> bool {
        (**self).graph_capable()
    }
    fn num_layers(&self) -> usize {
        (**self).num_layers()
    }
    fn sliding_layers(&self) -> Vec<bool> {
        (**self).sliding_layers()
    }
    fn attention_shape(&self) -> AttentionShape {
        (**self).attention_shape()
    }
    fn device(&self) -> &Device {
        (**self).device()
    }
    fn dtype(&self) -> DType {
        (**self).dtype()
    }
    fn max_context_len(&self) -> usize {
        (**self).max_context_len()
    }
    fn vocab_size(&self) -> usize {
        (**self).vocab_size()
    }
    fn embed(&self, batch: &ForwardBatch, attn: &mut Attention) -> Result<Vec<Vec<f32>>> {
        (**self).embed(batch, attn)
    }
    fn embedding(&self) -> Option<EmbeddingInfo> {
        (**self).embedding()
    }
}
