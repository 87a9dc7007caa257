//! `Linear`: a projection `y = x Wᵀ (+ b)` with one numeric path per weight type, whatever the
//! number of rows, so a row's output never depends on the rest of the batch.
//!
//! On the CPU, GGML Q4_0 / Q4_1 / Q8_0 / Q4_K / Q6_K weights (and Q5_0, converted losslessly to
//! Q8_0 at load) and dense f32 weights run through weir's own kernels (`qgemm::PackedWeight`: Q8 activations and integer dot products, or f32
//! panels). Other GGML types (Q2_K, Q3_K, Q5_K, ...) go through candle's `QMatMul`, whose
//! result for a row may differ between a 1-row and a many-row call (weir logs a warning at
//! load). Anything else (a GPU, or bf16/f16 on the CPU) is a dense candle matmul.

use super::qgemm::{matmul_glu, matmul_many, PackedWeight, QuantKind};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Result, Tensor};
use std::borrow::Cow;

/// Which form quantized GGUF weights take on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// Keep the GGML blocks (`auto`, the default): integer kernels on Q8 activations.
    Quantized,
    /// Dequantize to f32 at load (~7x the bytes of Q4; a reference, not faster).
    Dense,
}

#[derive(Debug, Clone)]
enum Weight {
    /// weir's CPU kernels.
    Packed(PackedWeight),
    /// candle's GGML matmul (K-quants and other types weir has no kernel for yet).
    Ggml(QMatMul),
    /// [out, in] dense, on any device.
    Dense(Tensor),
}

#[derive(Debug, Clone)]
pub struct Linear {
    weight: Weight,
    /// [out]
    bias: Option<Tensor>,
}

fn quant_kind(dtype: GgmlDType) -> Option<QuantKind> {
    match dtype {
        GgmlDType::Q4_0 => Some(QuantKind::Q4_0),
        GgmlDType::Q4_1 => Some(QuantKind::Q4_1),
        GgmlDType::Q8_0 => Some(QuantKind::Q8_0),
        GgmlDType::Q4K => Some(QuantKind::Q4K),
        GgmlDType::Q6K => Some(QuantKind::Q6K),
        _ => None,
    }
}

/// GGML Q5_0 blocks (f16 scale d, 32 high bits, 16 bytes of low nibbles: value
/// `d · (q - 16)`, q in 0..32) as Q8_0 blocks (f16 d, 32 i8 `q - 16`): the same numbers.
fn q5_0_as_q8_0(q5: &[u8]) -> Vec<u8> {
    const Q5: usize = 22; // 2 + 4 + 16
    const Q8: usize = 34; // 2 + 32
    let mut out = Vec::with_capacity(q5.len() / Q5 * Q8);
    for b in q5.chunks_exact(Q5) {
        out.extend_from_slice(&b[..2]);
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        let qs = &b[6..];
        for j in 0..32 {
            let low = if j < 16 {
                qs[j] & 0x0f
            } else {
                qs[j - 16] >> 4
            };
            let q = low | (((qh >> j) & 1) as u8) << 4;
            out.push((q as i8 - 16) as u8);
        }
    }
    out
}

impl Linear {
    /// A dense weight [out, in]: f32 on the CPU goes to weir's f32 panels.
    pub fn from_dense(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let weight = if weight.device().is_cpu() && weight.dtype() == DType::F32 {
            let (out_dim, in_dim) = weight.dims2()?;
            let w = weight.flatten_all()?.to_vec1::<f32>()?;
            Weight::Packed(PackedWeight::from_f32(&w, out_dim, in_dim))
        } else {
            Weight::Dense(weight)
        };
        Ok(Self { weight, bias })
    }

    /// From a GGML tensor on the CPU, in the form `format` asks for.
    pub fn from_qtensor(qt: QTensor, bias: Option<Tensor>, format: WeightFormat) -> Result<Self> {
        let float = matches!(
            qt.dtype(),
            GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16
        );
        if float || format == WeightFormat::Dense {
            return Self::from_dense(qt.dequantize(&qt.device())?, bias);
        }
        let (out_dim, in_dim) = qt.shape().dims2()?;
        if qt.dtype() == GgmlDType::Q5_0 && in_dim.is_multiple_of(32) {
            // Q5_0's values are Q8_0's, with the same scales: weir's Q8_0 kernel, lossless
            let blocks = q5_0_as_q8_0(&qt.data()?);
            let w = PackedWeight::from_ggml(QuantKind::Q8_0, &blocks, out_dim, in_dim);
            return Ok(Self {
                weight: Weight::Packed(w),
                bias,
            });
        }
        let weight = match (quant_kind(qt.dtype()), qt.data()?) {
            (Some(kind), Cow::Borrowed(blocks)) if in_dim.is_multiple_of(kind.ggml_block_len()) => {
                Weight::Packed(PackedWeight::from_ggml(kind, blocks, out_dim, in_dim))
            }
            _ => {
                tracing::warn!(
                    dtype = ?qt.dtype(),
                    "no weir kernel for this GGML type: candle's matmul, not batch-invariant"
                );
                Weight::Ggml(QMatMul::from_qtensor(qt)?)
            }
        };
        Ok(Self { weight, bias })
    }

    /// This projection on `device`: dense weights are copied there (or shared when they are
    /// already on it); weights in weir's CPU panels or GGML blocks only stay on the CPU.
    pub fn to_device(&self, device: &Device) -> Result<Self> {
        let weight = match &self.weight {
            Weight::Dense(w) => Weight::Dense(w.to_device(device)?),
            other if device.is_cpu() => other.clone(),
            _ => candle_core::bail!("weights packed for the CPU kernels cannot move to {device:?}"),
        };
        let bias = self
            .bias
            .as_ref()
            .map(|b| b.to_device(device))
            .transpose()?;
        Ok(Self { weight, bias })
    }

    /// One projection computing `parts` side by side (outputs concatenated in order), when all
    /// are dense weights of one dtype on one device: one GEMM instead of several. `None` for
    /// weights in weir's CPU panels or GGML blocks (their kernels share one pass anyway).
    pub fn concat(parts: &[&Linear]) -> Result<Option<Linear>> {
        let dense: Option<Vec<&Tensor>> = parts
            .iter()
            .map(|l| match &l.weight {
                Weight::Dense(w) => Some(w),
                _ => None,
            })
            .collect();
        let Some(ws) = dense else { return Ok(None) };
        if ws.windows(2).any(|p| p[0].dtype() != p[1].dtype()) {
            return Ok(None);
        }
        let weight = Tensor::cat(&ws, 0)?;
        let bias_dtype = parts
            .iter()
            .find_map(|l| l.bias.as_ref().map(Tensor::dtype));
        let bias = if let Some(dtype) = bias_dtype {
            let bs = parts
                .iter()
                .zip(&ws)
                .map(|(l, w)| match &l.bias {
                    Some(b) => Ok(b.clone()),
                    None => Tensor::zeros(w.dim(0)?, dtype, w.device()),
                })
                .collect::<Result<Vec<_>>>()?;
            Some(Tensor::cat(&bs, 0)?)
        } else {
            None
        };
        Ok(Some(Self {
            weight: Weight::Dense(weight),
            bias,
        }))
    }

    /// Bytes the weight and bias hold.
    pub fn bytes(&self) -> u64 {
        let weight = match &self.weight {
            Weight::Packed(p) => p.bytes(),
            Weight::Ggml(QMatMul::QTensor(q)) => q.storage_size_in_bytes() as u64,
            Weight::Ggml(QMatMul::Tensor(t) | QMatMul::TensorF16(t)) | Weight::Dense(t) => {
                tensor_bytes(t)
            }
        };
        weight + self.bias.as_ref().map_or(0, tensor_bytes)
    }

    /// The same input through several projections (q/k/v, gate/up): on weir's kernels the rows
    /// are quantized once and all projections share one parallel pass. Each output equals its
    /// own `forward` bit for bit.
    pub fn forward_many<const N: usize>(linears: [&Linear; N], x: &Tensor) -> Result<[Tensor; N]> {
        let packed: Option<Vec<&PackedWeight>> = linears
            .iter()
            .map(|l| match &l.weight {
                Weight::Packed(p) => Some(p),
                _ => None,
            })
            .collect();
        let ys: Vec<Tensor> = match packed {
            Some(ws) => packed_forward(&ws, x)?
                .into_iter()
                .zip(linears)
                .map(|(y, l)| l.add_bias(y))
                .collect::<Result<_>>()?,
            None => linears
                .iter()
                .map(|l| l.forward(x))
                .collect::<Result<_>>()?,
        };
        Ok(ys.try_into().expect("one output per projection"))
    }

    /// The gated MLP's hidden activations `silu(x Gᵀ) ⊙ (x Uᵀ)`: on weir's kernels in one
    /// parallel pass (`qgemm::matmul_glu`), elsewhere through candle.
    pub fn forward_glu(gate: &Linear, up: &Linear, x: &Tensor) -> Result<Tensor> {
        match (&gate.weight, &up.weight, &gate.bias, &up.bias) {
            (Weight::Packed(g), Weight::Packed(u), None, None) => {
                let rows = x.dim(0)?;
                let xs = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                Tensor::from_vec(matmul_glu(g, u, &xs, rows), (rows, g.out_dim()), x.device())
            }
            _ => {
                let [g, u] = Self::forward_many([gate, up], x)?;
                g.silu()? * u
            }
        }
    }

    /// `silu(g) ⊙ u` of `forward_many([gate, up], x)`'s outputs (after a change to them, e.g. a
    /// LoRA delta), as `forward_glu` computes it: bit for bit the same on weir's kernels.
    pub fn glu_of(gate: &Linear, up: &Linear, g: Tensor, u: Tensor) -> Result<Tensor> {
        match (&gate.weight, &up.weight, &gate.bias, &up.bias) {
            (Weight::Packed(_), Weight::Packed(_), None, None) => {
                let dims = g.dims2()?;
                let mut gv = g.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                let uv = u.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                super::qgemm::elementwise::silu_mul(&mut gv, &uv);
                Tensor::from_vec(gv, dims, g.device())
            }
            _ => g.silu()? * u,
        }
    }

    /// Whether the weight is in weir's panels with no bias (`packed_rows` serves it).
    pub fn is_packed(&self) -> bool {
        matches!((&self.weight, &self.bias), (Weight::Packed(_), None))
    }

    /// `rows` rows of `xs` (row-major f32) through a weight in weir's panels, no tensor on the
    /// way: the bits `forward` gives; None for another weight (see `is_packed`).
    pub fn packed_rows(&self, xs: &[f32], rows: usize) -> Option<Vec<f32>> {
        match (&self.weight, &self.bias) {
            (Weight::Packed(p), None) => matmul_many(&[p], xs, rows).pop(),
            _ => None,
        }
    }

    fn add_bias(&self, y: Tensor) -> Result<Tensor> {
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }

    /// x: [rows, in] → [rows, out]
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match &self.weight {
            Weight::Packed(p) => packed_forward(&[p], x)?
                .pop()
                .expect("one output per weight"),
            Weight::Ggml(q) => q.forward(x)?,
            Weight::Dense(w) => x.matmul(&w.t()?)?,
        };
        self.add_bias(y)
    }
}

/// Bytes of a tensor's elements.
pub fn tensor_bytes(t: &Tensor) -> u64 {
    (t.elem_count() * t.dtype().size_in_bytes()) as u64
}

/// x: [rows, in] through weir's kernels for each weight (one quantization of the rows, one
/// parallel pass) → one [rows, out] tensor per weight, without bias.
fn packed_forward(ws: &[&PackedWeight], x: &Tensor) -> Result<Vec<Tensor>> {
    let rows = x.dim(0)?;
    let xs = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    matmul_many(ws, &xs, rows)
        .into_iter()
        .zip(ws)
        .map(|(y, w)| Tensor::from_vec(y, (rows, w.out_dim()), x.device()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Q8_0 blocks made from Q5_0 hold exactly the numbers Q5_0 dequantizes to.
    #[test]
    fn q5_0_converts_to_q8_0_without_loss() {
        let x: Vec<f32> = (0..4 * 64)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let t = Tensor::from_vec(x, (4, 64), &Device::Cpu).unwrap();
        let qt = QTensor::quantize(&t, GgmlDType::Q5_0).unwrap();
        let want: Vec<f32> = qt
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let q8 = q5_0_as_q8_0(&qt.data().unwrap());
        let got: Vec<f32> = q8
            .chunks_exact(34)
            .flat_map(|b| {
                let d = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
                b[2..].iter().map(move |&q| d * (q as i8) as f32)
            })
            .collect();
        assert_eq!(got, want);
    }
}
