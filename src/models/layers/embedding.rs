//! `Embedding`: the token embedding table. A GGUF table on the CPU keeps its GGML blocks and
//! dequantizes only the step's rows (the same numbers as dequantizing it whole: Gemma 3's
//! 262,144 x 640 table is 671 MB in f32, ~130 MB in its blocks); everything else is a dense
//! tensor on the model's device.

use crate::models::linear::tensor_bytes;
use crate::models::weights::WeightSource;
use candle_core::quantized::QTensor;
use candle_core::{Device, Result, Tensor};
use std::sync::Arc;

#[derive(Clone)]
pub enum Embedding {
    /// [vocab, hidden]
    Dense(Tensor),
    /// [vocab, hidden] GGML blocks on the CPU.
    Quantized(Arc<QTensor>),
}

impl Embedding {
    /// `{name}.weight`, [vocab, hidden], in the form the source keeps it.
    pub fn load(w: &mut dyn WeightSource, name: &str, vocab: usize, hidden: usize) -> Result<Self> {
        Ok(match w.quantized(name, &[vocab, hidden])? {
            Some(q) => Self::Quantized(Arc::new(q)),
            None => Self::Dense(w.dense(name, &[vocab, hidden])?),
        })
    }

    /// The rows of `ids` ([T] u32): [T, hidden].
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        match self {
            Self::Dense(t) => t.index_select(ids, 0),
            Self::Quantized(q) => q.embedding(ids),
        }
    }

    /// On `device`: a dense table is copied there; GGML blocks stay on the CPU.
    pub fn to_device(&self, device: &Device) -> Result<Self> {
        match self {
            Self::Dense(t) => Ok(Self::Dense(t.to_device(device)?)),
            Self::Quantized(_) if device.is_cpu() => Ok(self.clone()),
            Self::Quantized(_) => {
                candle_core::bail!("an embedding in GGML blocks cannot move to {device:?}")
            }
        }
    }

    pub fn bytes(&self) -> u64 {
        match self {
            Self::Dense(t) => tensor_bytes(t),
            Self::Quantized(q) => q.storage_size_in_bytes() as u64,
        }
    }
}
