//! `PackedQuant`: batched CPU matmul straight from GGML Q4_1 / Q8_0 blocks.
//!
//! candle's quantized matmul does one dot product per (row, output), so a batch of B rows reads
//! every weight block B times and costs B single-row steps. Here each weight block is
//! dequantized once into registers and multiplied into up to `TILE` activation rows, so weight
//! traffic and dequantization are paid once per tile: batching pays from the second row on.
//! Activations stay f32 (no Q8 rounding of activations). Parallel over output features.
//!
//! GGML block layouts (32 weights each, little endian):
//! ```text
//! Q4_1: d: f16 | m: f16 | qs: [u8; 16]   weight j = d * nibble_j + m, nibble j<16 = qs[j] & 0xF,
//!                                        nibble j>=16 = qs[j-16] >> 4                  (20 bytes)
//! Q8_0: d: f16 | qs: [i8; 32]            weight j = d * qs[j]                          (34 bytes)
//! ```

use candle_core::quantized::{GgmlDType, QTensor};
use half::f16;
use rayon::prelude::*;
use std::borrow::Cow;
use std::sync::Arc;

const QK: usize = 32;
/// Activation rows that share one pass over a weight row.
const TILE: usize = 8;
/// Output features per parallel task.
const OUT_CHUNK: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantKind {
    Q4_1,
    Q8_0,
}

impl QuantKind {
    fn block_bytes(self) -> usize {
        match self {
            QuantKind::Q4_1 => 20,
            QuantKind::Q8_0 => 34,
        }
    }
}

/// A GGML-quantized weight `[out_dim, in_dim]` on CPU, read in place (blocks row by row): it
/// shares its `QTensor` with candle's `QMatMul`, so no weight is stored twice.
#[derive(Debug, Clone)]
pub struct PackedQuant {
    kind: QuantKind,
    out_dim: usize,
    in_dim: usize,
    qt: Arc<QTensor>,
}

#[inline(always)]
fn dequant(kind: QuantKind, blk: &[u8], w: &mut [f32; QK]) {
    let d = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
    match kind {
        QuantKind::Q4_1 => {
            let m = f16::from_le_bytes([blk[2], blk[3]]).to_f32();
            let qs = &blk[4..20];
            for j in 0..16 {
                w[j] = f32::from(qs[j] & 0x0F).mul_add(d, m);
                w[j + 16] = f32::from(qs[j] >> 4).mul_add(d, m);
            }
        }
        QuantKind::Q8_0 => {
            let qs = &blk[2..34];
            for j in 0..QK {
                w[j] = f32::from(qs[j] as i8) * d;
            }
        }
    }
}

impl PackedQuant {
    /// Wraps a 2-D CPU Q4_1 or Q8_0 tensor whose rows are whole blocks; `None` otherwise.
    pub fn from_arc(qt: &Arc<QTensor>) -> Option<Self> {
        let kind = match qt.dtype() {
            GgmlDType::Q4_1 => QuantKind::Q4_1,
            GgmlDType::Q8_0 => QuantKind::Q8_0,
            _ => return None,
        };
        let (out_dim, in_dim) = qt.shape().dims2().ok()?;
        if in_dim % QK != 0 {
            return None;
        }
        match qt.data().ok()? {
            Cow::Borrowed(b) if b.len() == out_dim * in_dim / QK * kind.block_bytes() => {}
            _ => return None,
        }
        Some(Self {
            kind,
            out_dim,
            in_dim,
            qt: qt.clone(),
        })
    }

    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// y = x Wᵀ for x: [rows, in_dim] (row-major) → [rows, out_dim].
    pub fn matmul(&self, x: &[f32], rows: usize) -> Vec<f32> {
        assert_eq!(
            x.len(),
            rows * self.in_dim,
            "activation shape. This is a bug."
        );
        let nb = self.in_dim / QK;
        let row_bytes = nb * self.kind.block_bytes();
        let data = self
            .qt
            .data()
            .expect("CPU QTensor data is borrowed (checked in from_arc)");
        let blocks: &[u8] = &data;
        // [out_dim, rows]: each task writes whole output features
        let mut yt = vec![0f32; self.out_dim * rows];
        yt.par_chunks_mut(OUT_CHUNK * rows)
            .enumerate()
            .for_each(|(chunk, out)| {
                let o0 = chunk * OUT_CHUNK;
                for (oi, y_o) in out.chunks_mut(rows).enumerate() {
                    let o = o0 + oi;
                    let wrow = &blocks[o * row_bytes..(o + 1) * row_bytes];
                    self.dot_row(wrow, x, rows, y_o);
                }
            });
        // [rows, out_dim]
        let mut y = vec![0f32; rows * self.out_dim];
        for (o, col) in yt.chunks(rows).enumerate() {
            for (r, v) in col.iter().enumerate() {
                y[r * self.out_dim + o] = *v;
            }
        }
        y
    }

    /// y_o[r] = Σ_k w_o[k] · x[r][k] for every row r, one weight row.
    #[inline(always)]
    fn dot_row(&self, wrow: &[u8], x: &[f32], rows: usize, y_o: &mut [f32]) {
        let mut r0 = 0;
        while r0 < rows {
            let rt = TILE.min(rows - r0);
            let x = &x[r0 * self.in_dim..(r0 + rt) * self.in_dim];
            let y = &mut y_o[r0..r0 + rt];
            #[cfg(target_arch = "x86_64")]
            if avx512::available() {
                // SAFETY: the CPU supports AVX-512F (checked above); slices cover `rt` rows.
                unsafe { avx512::dot_rows(self.kind, wrow, x, self.in_dim, y) };
                r0 += rt;
                continue;
            }
            self.dot_tile_portable(wrow, x, y);
            r0 += rt;
        }
    }

    /// Portable fallback: up to `TILE` rows against one weight row.
    fn dot_tile_portable(&self, wrow: &[u8], x: &[f32], y: &mut [f32]) {
        let bb = self.kind.block_bytes();
        let mut w = [0f32; QK];
        // [rows, 16] lane-wise partial sums
        let mut acc = [[0f32; 16]; TILE];
        for (k, blk) in wrow.chunks_exact(bb).enumerate() {
            dequant(self.kind, blk, &mut w);
            for (t, acc_t) in acc.iter_mut().enumerate().take(y.len()) {
                let xb = &x[t * self.in_dim + k * QK..][..QK];
                for i in 0..16 {
                    acc_t[i] = w[i].mul_add(xb[i], acc_t[i]);
                    acc_t[i] = w[i + 16].mul_add(xb[i + 16], acc_t[i]);
                }
            }
        }
        for (yt, acc_t) in y.iter_mut().zip(&acc) {
            *yt = acc_t.iter().sum();
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    //! The same kernel with AVX-512 intrinsics: a block's 32 weights become two 16-lane
    //! vectors once, then one FMA pair per activation row.
    use super::{QuantKind, QK};
    use half::f16;
    use std::arch::x86_64::*;
    use std::sync::OnceLock;

    pub fn available() -> bool {
        static AVAILABLE: OnceLock<bool> = OnceLock::new();
        *AVAILABLE.get_or_init(|| is_x86_feature_detected!("avx512f"))
    }

    /// # Safety
    /// The CPU must support AVX-512F; `x` holds `y.len()` rows of `in_dim` floats and `wrow`
    /// one weight row of `in_dim / 32` blocks of `kind`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn dot_rows(kind: QuantKind, wrow: &[u8], x: &[f32], in_dim: usize, y: &mut [f32]) {
        match y.len() {
            8 => dot_tile::<8>(kind, wrow, x, in_dim, y),
            7 => dot_tile::<7>(kind, wrow, x, in_dim, y),
            6 => dot_tile::<6>(kind, wrow, x, in_dim, y),
            5 => dot_tile::<5>(kind, wrow, x, in_dim, y),
            4 => dot_tile::<4>(kind, wrow, x, in_dim, y),
            3 => dot_tile::<3>(kind, wrow, x, in_dim, y),
            2 => dot_tile::<2>(kind, wrow, x, in_dim, y),
            _ => dot_tile::<1>(kind, wrow, x, in_dim, y),
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn weights(kind: QuantKind, blk: *const u8) -> (__m512, __m512) {
        let d = _mm512_set1_ps(f16::from_le_bytes([*blk, *blk.add(1)]).to_f32());
        match kind {
            QuantKind::Q4_1 => {
                let m = _mm512_set1_ps(f16::from_le_bytes([*blk.add(2), *blk.add(3)]).to_f32());
                let q = _mm_loadu_si128(blk.add(4) as *const __m128i);
                let mask = _mm_set1_epi8(0x0F);
                let lo = _mm_and_si128(q, mask);
                let hi = _mm_and_si128(_mm_srli_epi16::<4>(q), mask);
                let lo = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(lo));
                let hi = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(hi));
                (_mm512_fmadd_ps(lo, d, m), _mm512_fmadd_ps(hi, d, m))
            }
            QuantKind::Q8_0 => {
                let q0 = _mm_loadu_si128(blk.add(2) as *const __m128i);
                let q1 = _mm_loadu_si128(blk.add(18) as *const __m128i);
                let q0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q0));
                let q1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q1));
                (_mm512_mul_ps(q0, d), _mm512_mul_ps(q1, d))
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn dot_tile<const R: usize>(
        kind: QuantKind,
        wrow: &[u8],
        x: &[f32],
        in_dim: usize,
        y: &mut [f32],
    ) {
        debug_assert!(x.len() >= R * in_dim && y.len() == R);
        let bb = kind.block_bytes();
        let nb = in_dim / QK;
        let xp = x.as_ptr();
        let mut lo = [_mm512_setzero_ps(); R];
        let mut hi = [_mm512_setzero_ps(); R];
        for k in 0..nb {
            let (wl, wh) = weights(kind, wrow.as_ptr().add(k * bb));
            for t in 0..R {
                let p = xp.add(t * in_dim + k * QK);
                lo[t] = _mm512_fmadd_ps(wl, _mm512_loadu_ps(p), lo[t]);
                hi[t] = _mm512_fmadd_ps(wh, _mm512_loadu_ps(p.add(16)), hi[t]);
            }
        }
        for t in 0..R {
            y[t] = _mm512_reduce_add_ps(_mm512_add_ps(lo[t], hi[t]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn check(dtype: GgmlDType, rows: usize) {
        let dev = Device::Cpu;
        let (out_dim, in_dim) = (40, 96);
        let w = Tensor::randn(0f32, 0.5, (out_dim, in_dim), &dev).unwrap();
        let qt = QTensor::quantize(&w, dtype).unwrap();
        let dense = qt.dequantize(&dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (rows, in_dim), &dev).unwrap();
        let want: Vec<f32> = x
            .matmul(&dense.t().unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let packed = PackedQuant::from_arc(&Arc::new(qt)).expect("packable");
        let got = packed.matmul(&x.flatten_all().unwrap().to_vec1().unwrap(), rows);
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() < 1e-4 * (1.0 + b.abs()),
                "{dtype:?} rows {rows} elem {i}: {a} vs {b}"
            );
        }
    }

    #[test]
    fn q4_1_matches_dequantized_matmul() {
        for rows in [1, 3, 8, 13] {
            check(GgmlDType::Q4_1, rows);
        }
    }

    #[test]
    fn q8_0_matches_dequantized_matmul() {
        for rows in [1, 9] {
            check(GgmlDType::Q8_0, rows);
        }
    }

    #[test]
    fn other_types_are_not_packed() {
        let w = Tensor::zeros((4, 256), candle_core::DType::F32, &Device::Cpu).unwrap();
        let qt = QTensor::quantize(&w, GgmlDType::Q4K).unwrap();
        assert!(PackedQuant::from_arc(&Arc::new(qt)).is_none());
    }
}
