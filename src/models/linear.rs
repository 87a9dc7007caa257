//! `Linear`: a projection `y = x Wᵀ (+ b)` that may hold its weight in two formats and picks one
//! per call by the number of rows in the batch.
//!
//! On CPU, GGML-quantized weights read 4-5 bits per weight, which wins while few rows are
//! multiplied (memory-bound). Q4_1 and Q8_0 go through weir's own batched kernel
//! (`PackedQuant`), which dequantizes each weight block once per tile of rows; other GGML types
//! through candle's `QMatMul`, whose cost grows linearly with the rows. Dense f32 weights go
//! through `gemm`, which wins for large row counts (long prompt chunks). See BENCHMARKS.md.

use super::quant_matmul::PackedQuant;
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
    /// Batched kernel for Q4_1 / Q8_0 over the same blocks as `quant`, used from 2 rows on
    /// (candle's integer dot product is faster for a single row).
    packed: Option<PackedQuant>,
    /// [out]
    bias: Option<Tensor>,
    dense_from_rows: usize,
}

impl Linear {
    pub fn from_dense(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self {
            dense: Some(weight),
            quant: None,
            packed: None,
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
        let qt = Arc::new(qt);
        let packed = keep_quant.then(|| PackedQuant::from_arc(&qt)).flatten();
        let quant = keep_quant.then(|| QMatMul::from_arc(qt)).transpose()?;
        Ok(Self {
            dense,
            quant,
            packed,
            bias,
            dense_from_rows,
        })
    }

    /// x: [rows, in] → [rows, out]
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let rows = x.dim(0)?;
        let y = match (&self.packed, &self.quant, &self.dense) {
            (_, None, Some(w)) => x.matmul(&w.t()?)?,
            (_, _, Some(w)) if rows >= self.dense_from_rows => x.matmul(&w.t()?)?,
            (Some(p), _, _) if rows >= 2 => {
                let xs = x.flatten_all()?.to_vec1::<f32>()?;
                Tensor::from_vec(p.matmul(&xs, rows), (rows, p.out_dim()), x.device())?
            }
            (_, Some(q), _) => q.forward(x)?,
            _ => unreachable!("a Linear holds at least one format. This is a bug."),
        };
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}
