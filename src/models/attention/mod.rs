//! Paged attention behind one seam. The model projects Q/K/V, applies RoPE and hands the rest
//! to an `AttentionBackend`: `write_kv` stores this step's K/V in the pool by slot, `attend`
//! lets each token attend to its own sequence's context through the block table. The model
//! never knows which backend runs.
//!
//! Backends:
//! - `cpu::CpuBackend`: host f32 pools, parallel over tokens, GQA by index (the reference, and
//!   the fast CPU path);
//! - `tensor::TensorBackend`: tensor pools in the model's dtype on any device, built only from
//!   candle's own tested ops (scatter by slot, gather through the block table with
//!   `index_select`, matmul + softmax in f32). The default CUDA path, right the first time it
//!   runs, and it runs on CPU in the tests that check it against the reference.
//! - `cuda::CudaBackend` (feature `cuda`): weir's own kernels (`kernels/`) for the KV write and
//!   split-K paged attention of every token (decodes and prompt chunks); `--attention-backend cuda`.
//!
//! `Attention` pairs the chosen backend with the pool it allocated; the runner owns it and lends
//! it to the model each step. Metadata is built once per step (`prepare`) and read by every
//! layer.

pub mod bidirectional;
pub mod cpu;
mod cpu_kernels;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod tensor;

use super::batch::ForwardBatch;
use crate::kv::cache::{KvCache, KvCacheConfig, LayerKv};
use candle_core::{DType, Device, Result, Tensor};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionShape {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// What q·k is multiplied by before the softmax: 1/sqrt(head_dim) unless the model says
    /// otherwise (YaRN's mscale², Gemma's query_pre_attn_scalar).
    pub softmax_scale: f32,
    /// The window of the model's sliding-window layers: a token at position `p` of such a
    /// layer sees positions `p + 1 - w ..= p` (transformers' `kv_idx > q_idx - w`). `None`:
    /// every layer sees the whole context. Which layers slide is the model's (`attend`'s
    /// `windowed`).
    pub sliding_window: Option<usize>,
    /// Scores (after `softmax_scale`) become `cap · tanh(score / cap)` before the softmax
    /// (Gemma 2's `attn_logit_softcapping`).
    pub logit_softcap: Option<f32>,
}

impl AttentionShape {
    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }
    /// Query heads per KV head.
    pub fn group(&self) -> usize {
        self.num_heads / self.num_kv_heads
    }
    /// A scaled score as the softmax sees it (soft-capped when the model caps).
    #[inline(always)]
    pub fn cap(&self, score: f32) -> f32 {
        match self.logit_softcap {
            Some(c) => c * (score / c).tanh(),
            None => score,
        }
    }
    /// The first position a token at `pos` sees: 0, or the start of its window in a
    /// sliding-window layer.
    pub fn first_visible(&self, pos: usize, windowed: bool) -> usize {
        match (windowed, self.sliding_window) {
            (true, Some(w)) => (pos + 1).saturating_sub(w),
            _ => 0,
        }
    }
}

/// Per-step metadata, built once by `AttentionBackend::prepare` and read by every layer.
pub struct AttentionMetadata {
    /// [num_tokens] host: index into `batch.seqs` of each token row (CPU backend).
    pub token_seq: Vec<u32>,
    /// Device tensors of the tensor-based backends; `None` on the CPU backend.
    pub device: Option<tensor::DeviceMetadata>,
    /// The metadata of a hybrid model's KV groups after the first (`ForwardBatch::kv_groups`),
    /// filled by `Attention::prepare`.
    pub groups: Vec<AttentionMetadata>,
}

pub trait AttentionBackend: Send {
    /// Which backend this is (never `Auto`).
    fn kind(&self) -> BackendKind;
    /// Allocates the pool (once) on the backend's device in its dtype.
    fn allocate(&self, cfg: KvCacheConfig) -> Result<KvCache>;
    /// Metadata of one step.
    fn prepare(&self, batch: &ForwardBatch) -> Result<AttentionMetadata>;
    /// Metadata of another KV group's batch of the step `like` was prepared for (same tokens,
    /// other tables): a backend may share what depends on positions only (the tensor
    /// backend's masks).
    fn prepare_like(
        &self,
        batch: &ForwardBatch,
        like: &AttentionMetadata,
    ) -> Result<AttentionMetadata> {
        let _ = like;
        self.prepare(batch)
    }
    /// Writes k, v ([num_tokens, kv_dim], RoPE already applied to k) to their slots.
    fn write_kv(
        &self,
        kv: &mut LayerKv,
        k: &Tensor,
        v: &Tensor,
        batch: &ForwardBatch,
        meta: &AttentionMetadata,
    ) -> Result<()>;
    /// Causal attention of q ([num_tokens, q_dim], rotated) over the pool, after `write_kv`:
    /// token `t` at position `p` sees positions `0..=p` of its own sequence, or in a
    /// `windowed` layer `shape.first_visible(p, true)..=p`.
    /// Returns [num_tokens, q_dim] in q's dtype.
    fn attend(
        &self,
        kv: &LayerKv,
        q: &Tensor,
        batch: &ForwardBatch,
        meta: &AttentionMetadata,
        windowed: bool,
    ) -> Result<Tensor>;
}

/// `--attention-backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// `cpu` for f32 on the CPU, `tensor` everywhere else.
    Auto,
    Cpu,
    Tensor,
    /// weir's CUDA kernels (builds with the `cuda` feature).
    Cuda,
}

impl BackendKind {
    /// The flag value naming this backend (for logs).
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Cpu => "cpu",
            Self::Tensor => "tensor",
            Self::Cuda => "cuda",
        }
    }
}

impl std::str::FromStr for BackendKind {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "tensor" => Ok(Self::Tensor),
            "cuda" => Ok(Self::Cuda),
            _ => Err(format!("expected auto, cpu, tensor or cuda, got {s:?}")),
        }
    }
}

/// The backend `kind` names for a model of `shape` whose activations are `dtype` on `device`.
pub fn backend_for(
    kind: BackendKind,
    shape: AttentionShape,
    dtype: DType,
    device: &Device,
) -> Result<Box<dyn AttentionBackend>> {
    let kind = match (kind, device, dtype) {
        (BackendKind::Auto, Device::Cpu, DType::F32) => BackendKind::Cpu,
        (BackendKind::Auto, _, _) => BackendKind::Tensor,
        (k, _, _) => k,
    };
    match (kind, device) {
        (BackendKind::Cpu, Device::Cpu) if dtype == DType::F32 => {
            Ok(Box::new(cpu::CpuBackend::new(shape)))
        }
        (BackendKind::Cpu, _) => {
            candle_core::bail!("--attention-backend cpu needs --device cpu and f32 activations")
        }
        #[cfg(feature = "cuda")]
        (BackendKind::Cuda, Device::Cuda(_)) => Ok(Box::new(cuda::CudaBackend::new(
            shape,
            dtype,
            device.clone(),
        ))),
        (BackendKind::Cuda, _) => {
            candle_core::bail!("--attention-backend cuda needs a CUDA build and --device cuda")
        }
        _ => Ok(Box::new(tensor::TensorBackend::new(
            shape,
            dtype,
            device.clone(),
        ))),
    }
}

/// A backend and the KV pool it allocated.
pub struct Attention {
    backend: Box<dyn AttentionBackend>,
    cache: KvCache,
    /// (KV group, storage slot) of each layer (`KvGroups::places`).
    places: Vec<(usize, usize)>,
}

impl Attention {
    /// The pool of a model with one KV group (layer `l` in slot `l`).
    pub fn new(backend: Box<dyn AttentionBackend>, cfg: KvCacheConfig) -> Result<Self> {
        assert!(
            !cfg.groups.is_hybrid(),
            "a hybrid KV layout needs the model's sliding layers (Attention::with_layers)"
        );
        Self::with_layers(backend, cfg, &vec![false; cfg.num_layers])
    }

    /// The pool of a model whose layer `l` slides when `windowed[l]`, laid out by
    /// `cfg.groups`.
    pub fn with_layers(
        backend: Box<dyn AttentionBackend>,
        cfg: KvCacheConfig,
        windowed: &[bool],
    ) -> Result<Self> {
        let cache = backend.allocate(cfg)?;
        Ok(Self {
            backend,
            cache,
            places: cfg.groups.places(windowed),
        })
    }

    /// The storage slot, batch and metadata of layer `layer`'s KV group.
    fn group<'a>(
        &self,
        layer: usize,
        batch: &'a ForwardBatch,
        meta: &'a AttentionMetadata,
    ) -> (usize, &'a ForwardBatch, &'a AttentionMetadata) {
        match self.places[layer] {
            (0, slot) => (slot, batch, meta),
            (g, slot) => (slot, &batch.kv_groups[g - 1], &meta.groups[g - 1]),
        }
    }

    pub fn backend_kind(&self) -> BackendKind {
        self.backend.kind()
    }

    pub fn cache(&self) -> &KvCache {
        &self.cache
    }

    pub fn prepare(&self, batch: &ForwardBatch) -> Result<AttentionMetadata> {
        let mut meta = self.backend.prepare(batch)?;
        meta.groups = batch
            .kv_groups
            .iter()
            .map(|b| self.backend.prepare_like(b, &meta))
            .collect::<Result<_>>()?;
        Ok(meta)
    }

    pub fn write_kv(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
        batch: &ForwardBatch,
        meta: &AttentionMetadata,
    ) -> Result<()> {
        let (slot, batch, meta) = self.group(layer, batch, meta);
        self.backend
            .write_kv(self.cache.layer_mut(slot), k, v, batch, meta)
    }

    /// Attention of layer `layer` (`windowed`: one of the model's sliding-window layers).
    pub fn attend(
        &self,
        layer: usize,
        q: &Tensor,
        batch: &ForwardBatch,
        meta: &AttentionMetadata,
        windowed: bool,
    ) -> Result<Tensor> {
        let (slot, batch, meta) = self.group(layer, batch, meta);
        self.backend
            .attend(self.cache.layer(slot), q, batch, meta, windowed)
    }
}
