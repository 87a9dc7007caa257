//! `LmHead`: the final norm and the vocabulary projection of the rows that sample.

use crate::models::batch::ForwardBatch;
use crate::models::config::LlamaConfig;
use crate::models::linear::{tensor_bytes, Linear};
use crate::models::weights::WeightSource;
use candle_core::{DType, Device, Result, Tensor};
use candle_nn::ops::rms_norm;

#[derive(Clone)]
pub struct LmHead {
    /// [hidden], as the model multiplies by it (a family's own norm form applied at load).
    norm: Tensor,
    proj: Linear,
    vocab_size: usize,
}

impl LmHead {
    /// `lm_head`, or the embedding matrix when tied (in the source's own format: quantized for
    /// GGUF), after the final `norm`.
    pub fn load(w: &mut dyn WeightSource, norm: Tensor, cfg: &LlamaConfig) -> Result<Self> {
        let (vocab, h) = (cfg.vocab_size, cfg.hidden_size);
        let proj = if !cfg.tie_word_embeddings && w.contains("lm_head") {
            w.linear("lm_head", vocab, h, false)?
        } else {
            w.linear("model.embed_tokens", vocab, h, false)?
        };
        Ok(Self {
            norm,
            proj,
            vocab_size: vocab,
        })
    }

    /// f32 logits [num_sampled, vocab] of the step's sampling rows of x ([T, hidden]);
    /// `logits_rows`: the step's uploaded row indices (`None`: every row samples).
    pub fn logits(
        &self,
        x: Tensor,
        batch: &ForwardBatch,
        logits_rows: Option<&Tensor>,
        eps: f32,
    ) -> Result<Tensor> {
        if batch.logits_rows.is_empty() {
            return Tensor::zeros((0, self.vocab_size), DType::F32, x.device());
        }
        let x = self.final_hidden(x, batch, logits_rows, eps)?;
        self.proj.forward(&x)?.to_dtype(DType::F32)
    }

    /// The final hidden states (after the final norm) of the step's sampling rows of x, in x's
    /// dtype: what an embedding model pools.
    pub fn final_hidden(
        &self,
        x: Tensor,
        batch: &ForwardBatch,
        logits_rows: Option<&Tensor>,
        eps: f32,
    ) -> Result<Tensor> {
        if batch.logits_rows.is_empty() {
            return Tensor::zeros((0, x.dim(1)?), x.dtype(), x.device());
        }
        let x = match logits_rows {
            Some(rows) => x.index_select(rows, 0)?,
            None => x,
        };
        rms_norm(&x, &self.norm, eps)
    }

    pub fn to_device(&self, device: &Device) -> Result<Self> {
        Ok(Self {
            norm: self.norm.to_device(device)?,
            proj: self.proj.to_device(device)?,
            vocab_size: self.vocab_size,
        })
    }

    pub fn bytes(&self) -> u64 {
        tensor_bytes(&self.norm) + self.proj.bytes()
    }
}
