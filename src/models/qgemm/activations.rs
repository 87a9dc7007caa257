//! Activation rows quantized once per layer to Q8 blocks of 32, the form every quantized weight
//! kernel reads.
//!
//! Block `b` of row `r` holds 32 signed bytes `q` with `x ≈ d · q`, where `d = max|x| / 127` and
//! `q = round(x / d)`, plus `d`, `Σq` and `d · Σq`, the block sum that the `min` term of Q4_1 and
//! Q4_K multiplies. (That sum of the quantized inputs, not of the exact ones, keeps the rounding
//! error of a block at `Σ w·e` instead of `Σ (w − min)·e`: GGML's Q8_1 does the same.) Each row is quantized by itself, so a row's blocks never depend on the
//! other rows of the batch.

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
    /// Quantizes `x` ([rows, in_dim], row-major); `in_dim` must be a multiple of 32.
    pub fn quantize(x: &[f32], rows: usize, in_dim: usize) -> Self {
        assert!(
            in_dim.is_multiple_of(QK) && x.len() == rows * in_dim,
            "activation shape. This is a bug."
        );
        let nb = rows * in_dim / QK;
        let mut out = Self {
            rows,
            in_dim,
            qs: vec![0; rows * in_dim],
            d: vec![0.0; nb],
            s: vec![0; nb],
            s16: vec![0; nb],
            ds: vec![0.0; nb],
        };
        for (i, (xb, qb)) in x
            .chunks_exact(QK)
            .zip(out.qs.chunks_exact_mut(QK))
            .enumerate()
        {
            let (d, s, ds) = quantize_block(xb, qb);
            out.d[i] = d;
            out.s[i] = s;
            out.s16[i] = qb[..16].iter().map(|&v| i32::from(v)).sum();
            out.ds[i] = ds;
        }
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

/// One block: returns (d, Σq, d·Σq). Written so the compiler vectorizes it; the result does not
/// depend on how (max, rounding and the integer sum are exact). Rounds half to even
/// (`vroundps`), unlike GGML's half away from zero.
#[inline]
fn quantize_block(x: &[f32], q: &mut [i8]) -> (f32, i32, f32) {
    const L: usize = 8;
    let mut amax = [0f32; L];
    for c in x.chunks_exact(L) {
        for i in 0..L {
            amax[i] = amax[i].max(c[i].abs());
        }
    }
    let amax = amax.iter().fold(0f32, |m, &v| m.max(v));
    let d = amax / 127.0;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    let mut s = 0i32;
    for (qi, &xi) in q.iter_mut().zip(x) {
        let v = (xi * id).round_ties_even() as i8;
        *qi = v;
        s += i32::from(v);
    }
    (d, s, d * s as f32)
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
    fn zero_block_has_zero_scale() {
        let q = QuantRows::quantize(&[0.0; 32], 1, 32);
        assert_eq!((q.d[0], q.s[0], q.ds[0]), (0.0, 0, 0.0));
        assert!(q.qs.iter().all(|&v| v == 0));
    }
}
