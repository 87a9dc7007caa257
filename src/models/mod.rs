//! Models over the paged KV cache. A model turns a `ForwardBatch` into the logits of the rows it
//! asks for, reading and writing K/V through the borrowed `KvCache`.

pub mod attention;
pub mod config;
pub mod linear;
pub mod llama;
pub mod quant_matmul;
pub mod weights;

use crate::kv::KvCache;
use crate::runner::batch::ForwardBatch;
use candle_core::{Result, Tensor};

pub use config::{HfLlamaConfig, LlamaConfig};
pub use linear::WeightFormat;
pub use llama::Llama;

pub trait CausalLm: Send {
    /// Logits `[batch.logits_rows.len(), vocab]` (f32).
    fn forward(&self, batch: &ForwardBatch, kv: &mut KvCache) -> Result<Tensor>;
    /// (num_layers, num_kv_heads, head_dim) of the cache this model needs.
    fn kv_shape(&self) -> (usize, usize, usize);
    fn max_context_len(&self) -> usize;
    fn vocab_size(&self) -> usize;
}
