//! The layers model families compose: projections merged for one GEMM where the weights allow
//! (`projs`), self-attention over the paged KV cache with its rotary embedding (`self_attn`),
//! the gated MLP (`mlp`) and the mixture of experts that replaces it in sparse models (`moe`),
//! the final norm and vocabulary projection (`lm_head`). Norms are `fused::add_rms_norm` and candle's `rms_norm`; rotary
//! variants live in `rope`. Each layer loads from a `WeightSource` under a name prefix, runs
//! `forward`, and moves between devices (`to_device`) for the model manager's host tier.

pub mod embedding;
pub mod lm_head;
pub mod mlp;
pub mod moe;
pub mod projs;
pub mod self_attn;

pub use embedding::Embedding;
pub use lm_head::LmHead;
pub use mlp::{Activation, GatedMlp};
pub use moe::SparseMoe;
pub use projs::Projs;
pub use self_attn::{QkNorm, SelfAttention};

use super::attention::AttentionMetadata;
use super::batch::ForwardBatch;
use super::rope::RopeTables;

/// What every layer of one step shares.
pub struct StepContext<'a> {
    pub batch: &'a ForwardBatch,
    pub rope: RopeTables,
    pub meta: &'a AttentionMetadata,
    /// The step's LoRA adapter rows (`LoraStep::NONE` for a model without adapters).
    pub lora: &'a crate::models::lora_step::LoraStep<'a>,
}
