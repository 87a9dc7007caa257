//! Models over the paged KV cache. A model turns a `ForwardBatch` into the logits of the rows it
//! asks for, writing and reading K/V through the `Attention` the runner lends it; it owns no
//! per-request state and does not know which attention backend or device it runs on.

pub mod attention;
pub mod batch;
pub mod config;
pub mod device;
pub mod fused;
pub mod linear;
pub mod llama;
pub mod pool;
pub mod qgemm;
pub mod rope;
pub mod weights;

use attention::{Attention, AttentionShape};
use batch::ForwardBatch;
use candle_core::{DType, Device, Result, Tensor};

pub use config::{HfLlamaConfig, LlamaConfig};
pub use linear::WeightFormat;
pub use llama::Llama;

pub trait CausalLm: Send {
    /// Logits `[batch.logits_rows.len(), vocab]` (f32, on the model's device).
    fn forward(&self, batch: &ForwardBatch, attn: &mut Attention) -> Result<Tensor>;
    fn num_layers(&self) -> usize;
    fn attention_shape(&self) -> AttentionShape;
    fn device(&self) -> &Device;
    /// Activation dtype (the KV cache's dtype).
    fn dtype(&self) -> DType;
    fn max_context_len(&self) -> usize;
    fn vocab_size(&self) -> usize;
}

/// A model shared with its manager (which keeps it for the host tier after the engine stops).
impl<M: CausalLm + Sync> CausalLm for std::sync::Arc<M> {
    fn forward(&self, batch: &ForwardBatch, attn: &mut Attention) -> Result<Tensor> {
        (**self).forward(batch, attn)
    }
    fn num_layers(&self) -> usize {
        (**self).num_layers()
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
}
