//! `Linear`: a projection `y = x Wᵀ (+ b)` that may hold its weight in two formats and picks one
//! per call by the number of rows in the batch.
//!
//! On CPU, GGML-quantized weights (candle's `QMatMul`) read 4-5 bits per weight, which wins when
//! one or two rows are multiplied (memory-bound), but candle does one dot product per
//! (row, column) so its cost grows linearly with the batch. Dense f32 weights go through `gemm`,
//! which reuses every weight load across the rows of the batch. See BENCHMARKS.md ("linear").

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{Module, Result, Tensor};
use std::sync::Arc;

/// Which weight formats a model keeps and when it uses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// Dense f32 only (quantized files are dequantized at load).
    Dense,
    /// Quantized only (dense checkpoints stay dense).
    Quantized,
    /// Both; quantized below `dense_from_rows` rows, dense from there on.
    Auto { dense_from_rows: usize },
}

#[derive(Debug, Clone)]
pub struct Linear {
    /// [out, in] f32
    dense: Option<Tensor>,
    quant: Option<QMatMul>,
    /// [out]
    bias: Option<Tensor>,
    dense_from_rows: usize,
}

impl Linear {
    pub fn from_dense(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self {
            dense: Some(weight),
            quant: None,
            bias,
            dense_from_rows: 0,
        }
    }

    /// Builds from a GGML tensor, keeping the formats `format` asks for.
    pub fn from_qtensor(qt: QTensor, bias: Option<Tensor>, format: WeightFormat) -> Result<Self> {
        let is_float = matches!(
            qt.dtype(),
            candle_core::quantized::GgmlDType::F32
                | candle_core::quantized::GgmlDType::F16
                | candle_core::quantized::GgmlDType::BF16
        );
        if is_float {
            let w = qt.dequantize(&qt.device())?;
            return Ok(Self::from_dense(w, bias));
        }
        let (keep_dense, keep_quant, dense_from_rows) = match format {
            WeightFormat::Dense => (true, false, 0),
            WeightFormat::Quantized => (false, true, usize::MAX),
            WeightFormat::Auto { dense_from_rows } => (true, true, dense_from_rows),
        };
        let dense = keep_dense
            .then(|| qt.dequantize(&qt.device()))
            .transpose()?;
        let quant = keep_quant
            .then(|| QMatMul::from_arc(Arc::new(qt)))
            .transpose()?;
        Ok(Self {
            dense,
            quant,
            bias,
            dense_from_rows,
        })
    }

    /// x: [rows, in] → [rows, out]
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let rows = x.dim(0)?;
        let y = match (&self.quant, &self.dense) {
            (Some(q), Some(_)) if rows < self.dense_from_rows => q.forward(x)?,
            (Some(q), None) => q.forward(x)?,
            (_, Some(w)) => x.matmul(&w.t()?)?,
            (None, None) => unreachable!("a Linear holds at least one format. This is a bug."),
        };
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}
