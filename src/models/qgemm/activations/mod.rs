//! Activation rows quantized once per layer to Q8 blocks of 32, the form every quantized weight
//! kernel reads.
//!
//! Block `b` of row `r` holds 32 signed bytes `q` with `x ≈ d · q`, where `d = max|x| / 127` and
//! `q = round(x / d)`, plus `d`, `Σq` and `d · Σq`, the block sum that the `min` term of Q4_1 and
//! Q4_K multiplies. (That sum of the quantized inputs, not of the exact ones, keeps the rounding
//! error of a block at `Σ w·e` instead of `Σ (w − min)·e`: GGML's Q8_1 does the same.) Each row is quantized by itself, so a row's blocks never depend on the
//! other rows of the batch.

#[cfg(target_arch = "x86_64")]
mod x86;

use super::super::pool::ComputePool;
use super::Isa;
use parking_lot::Mutex;

/// Inputs per quantization block (GGML's `QK8_0`).
pub const QK: usize = 32;

/// `rows` activation rows of `in_dim` values, quantized.
#[derive(Debug, Default)]
pub struct QuantRows {
    pub rows: usize,
    pub in_dim: usize,
    /// [rows, in_dim] quantized values.
    pub qs: Vec<i8>,
    /// [rows, in_dim / QK] block scales.
    pub d: Vec<f32>,
    /// [rows, in_dim / QK] Σ of the block's quantized values (integer, exact).
    pub s: Vec<i32>,
    /// [rows, in_dim / QK] Σ of the block's first 16 quantized values (Q6_K's 16-input scales).
    pub s16: Vec<i32>,
    /// [rows, in_dim / QK] d · Σq: the block's sum as quantized (kept so the kernels' hot
    /// loop does not convert and multiply it per weight panel).
    pub ds: Vec<f32>,
}

impl QuantRows {
    /// Quantizes `x` ([rows, in_dim], row-major) on the fastest path; `in_dim` must be a
    /// multiple of 32.
    pub fn quantize(x: &[f32], rows: usize, in_dim: usize) -> Self {
        Self::quantize_on(Isa::best(), x, rows, in_dim)
    }

    /// `quantize` on a given path (every path gives the same bits). Large calls split the rows
    /// between the compute pool's threads; a row's blocks never depend on that split.
    pub fn quantize_on(isa: Isa, x: &[f32], rows: usize, in_dim: usize) -> Self {
        assert!(
            in_dim.is_multiple_of(QK) && x.len() == rows * in_dim,
            "activation shape. This is a bug."
        );
        let nb = in_dim / QK;
        let mut out = Self {
            rows,
            in_dim,
            qs: vec![0; rows * in_dim],
            d: vec![0.0; rows * nb],
            s: vec![0; rows * nb],
            s16: vec![0; rows * nb],
            ds: vec![0.0; rows * nb],
        };
        let pool = ComputePool::global();
        let rows_per_task = if rows * in_dim < PARALLEL_FROM {
            rows.max(1)
        } else {
            rows.div_ceil(pool.num_threads() * 2)
        };
        let (bx, bq) = (rows_per_task * in_dim, rows_per_task * nb);
        let tasks: Vec<Mutex<Blocks>> = x
            .chunks(bx)
            .zip(out.qs.chunks_mut(bx))
            .zip(out.d.chunks_mut(bq))
            .zip(out.s.chunks_mut(bq))
            .zip(out.s16.chunks_mut(bq))
            .zip(out.ds.chunks_mut(bq))
            .map(|(((((x, qs), d), s), s16), ds)| {
                Mutex::new(Blocks {
                    x,
                    qs,
                    d,
                    s,
                    s16,
                    ds,
                })
            })
            .collect();
        pool.run(tasks.len(), &|i| tasks[i].lock().quantize(isa));
        drop(tasks);
        out
    }

    pub fn num_blocks(&self) -> usize {
        self.in_dim / QK
    }

    /// Row `r`'s quantized values.
    pub fn row(&self, r: usize) -> &[i8] {
        &self.qs[r * self.in_dim..(r + 1) * self.in_dim]
    }
}

/// Quantized floats below which one thread quantizes the whole call.
const PARALLEL_FROM: usize = 1 << 14;

/// One task's share of the rows: inputs and the blocks they quantize to.
struct Blocks<'a> {
    x: &'a [f32],
    qs: &'a mut [i8],
    d: &'a mut [f32],
    s: &'a mut [i32],
    s16: &'a mut [i32],
    ds: &'a mut [f32],
}

impl Blocks<'_> {
    fn quantize(&mut self, isa: Isa) {
        for (i, (xb, qb)) in self
            .x
            .chunks_exact(QK)
            .zip(self.qs.chunks_exact_mut(QK))
            .enumerate()
        {
            let (d, s, s16) = quantize_block(isa, xb, qb);
            self.d[i] = d;
            self.s[i] = s;
            self.s16[i] = s16;
            self.ds[i] = d * s as f32;
        }
    }
}

fn quantize_block(isa: Isa, x: &[f32], q: &mut [i8]) -> (f32, i32, i32) {
    match isa {
        // SAFETY: `isa` is one this CPU supports (`Isa::available`); blocks are 32 long.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => unsafe { x86::quantize_block_avx512(x, q) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::quantize_block_avx2(x, q) },
        _ => quantize_block_portable(x, q),
    }
}

/// The block's scale `d = max|x| / 127`, or 0 for an all-zero block.
#[inline(always)]
fn block_scale(amax: f32) -> (f32, f32) {
    let d = amax / 127.0;
    (d, if d > 0.0 { 1.0 / d } else { 0.0 })
}

/// One block: returns (d, Σq, Σq over the first 16). The reference every path equals: max,
/// rounding (half to even, `vcvtps2dq`'s default; GGML rounds half away from zero) and the
/// integer sums are exact, so the order of operations does not matter.
fn quantize_block_portable(x: &[f32], q: &mut [i8]) -> (f32, i32, i32) {
    let amax = x.iter().fold(0f32, |m, &v| m.max(v.abs()));
    let (d, id) = block_scale(amax);
    let (mut s, mut s16) = (0i32, 0i32);
    for (k, (qi, &xi)) in q.iter_mut().zip(x).enumerate() {
        let v = (xi * id).round_ties_even() as i8;
        *qi = v;
        s += i32::from(v);
        if k < 16 {
            s16 += i32::from(v);
        }
    }
    (d, s, s16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_round_trips_within_half_a_step() {
        let x: Vec<f32> = (0..64).map(|i| (i as f32 - 20.5) * 0.37).collect();
        let q = QuantRows::quantize(&x, 2, 32);
        for r in 0..2 {
            let d = q.d[r];
            for (k, &qk) in q.row(r).iter().enumerate() {
                let back = d * f32::from(qk);
                assert!((back - x[r * 32 + k]).abs() <= d * 0.5 + 1e-6);
            }
            let s: i32 = q.row(r).iter().map(|&v| i32::from(v)).sum();
            assert_eq!(q.s[r], s);
        }
        assert_eq!(q.row(0).iter().map(|v| v.abs()).max(), Some(127));
    }

    #[test]
    fn every_path_quantizes_alike() {
        // large enough to split between threads, with ties, zeros and a zero block
        let (rows, in_dim) = (40, 576);
        let mut x: Vec<f32> = (0..rows * in_dim)
            .map(|i| ((i * 7919 % 1013) as f32 - 506.0) * 0.013)
            .collect();
        x[..32].fill(0.0);
        x[40] = 0.5 * x[41];
        let want = QuantRows::quantize_on(Isa::Portable, &x, rows, in_dim);
        for &isa in Isa::available() {
            let got = QuantRows::quantize_on(isa, &x, rows, in_dim);
            assert_eq!(got.qs, want.qs, "{isa:?}");
            assert_eq!((&got.s, &got.s16), (&want.s, &want.s16), "{isa:?}");
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got.d), bits(&want.d), "{isa:?}");
            assert_eq!(bits(&got.ds), bits(&want.ds), "{isa:?}");
        }
    }

    #[test]
    fn zero_block_has_zero_scale() {
        let q = QuantRows::quantize(&[0.0; 32], 1, 32);
        assert_eq!((q.d[0], q.s[0], q.ds[0]), (0.0, 0, 0.0));
        assert!(q.qs.iter().all(|&v| v == 0));
    }
}
