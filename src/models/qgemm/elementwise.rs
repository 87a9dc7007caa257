//! Element-wise functions of the CPU forward pass, written once in plain Rust.
//!
//! Each element goes through the same IEEE operations (`mul_add` is a fused multiply-add
//! wherever it runs, rounding is half to even), so the result of an element never depends on
//! whether the compiler vectorized the loop or on where the element sits in the batch. The
//! loops are shaped (fixed chunks, no branches) so that they vectorize.

const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split so that `n · LN2_HI` is exact for |n| < 2^15 (Cody and Waite).
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

/// `e^x` within 2 ulp for x in [-87, 88] (clamped outside it): x = n ln 2 + r with
/// |r| ≤ ln 2 / 2, e^r by its degree-7 Taylor polynomial (truncation error < 6e-9), times 2^n
/// built in the exponent bits.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // adding 1.5 · 2^23 rounds x·log2 e to an integer (half to even) in the low mantissa bits
    const SHIFT: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2_E + SHIFT;
    let n = t - SHIFT;
    let r = n.mul_add(-LN2_HI, x);
    let r = n.mul_add(-LN2_LO, r);
    let mut p: f32 = 1.0 / 5040.0;
    p = p.mul_add(r, 1.0 / 720.0);
    p = p.mul_add(r, 1.0 / 120.0);
    p = p.mul_add(r, 1.0 / 24.0);
    p = p.mul_add(r, 1.0 / 6.0);
    p = p.mul_add(r, 0.5);
    p = p.mul_add(r, 1.0);
    p = p.mul_add(r, 1.0);
    // n ∈ [-126, 127]: 2^n is a normal float, its exponent field n + 127
    let n_bits = t.to_bits().wrapping_sub(SHIFT.to_bits());
    p * f32::from_bits(n_bits.wrapping_add(127) << 23)
}

/// `silu(x) = x / (1 + e^-x)`.
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// `g ← silu(g) · u`, element by element (the gated MLP's activation).
pub fn silu_mul(g: &mut [f32], u: &[f32]) {
    assert_eq!(g.len(), u.len());
    const L: usize = 16;
    let mut gc = g.chunks_exact_mut(L);
    let mut uc = u.chunks_exact(L);
    for (gv, uv) in (&mut gc).zip(&mut uc) {
        for i in 0..L {
            gv[i] = silu(gv[i]) * uv[i];
        }
    }
    for (gv, &uv) in gc.into_remainder().iter_mut().zip(uc.remainder()) {
        *gv = silu(*gv) * uv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_std() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (exp(x) as f64, (x as f64).exp());
            worst = worst.max(((got - want) / want).abs());
            x += 0.000_731;
        }
        assert!(worst < 2.5e-7, "worst relative error {worst:e}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-200.0) > 0.0 && exp(200.0).is_finite());
    }

    #[test]
    fn silu_mul_is_the_same_per_element_in_any_chunk() {
        let g: Vec<f32> = (0..53).map(|i| (i as f32 - 26.0) * 0.731).collect();
        let u: Vec<f32> = (0..53).map(|i| 1.0 + i as f32 * 0.01).collect();
        let mut all = g.clone();
        silu_mul(&mut all, &u);
        for i in 0..g.len() {
            let mut one = [g[i]];
            silu_mul(&mut one, &u[i..i + 1]);
            assert_eq!(one[0].to_bits(), all[i].to_bits(), "element {i}");
            let want = g[i] as f64 / (1.0 + (-g[i] as f64).exp()) * u[i] as f64;
            assert!((all[i] as f64 - want).abs() <= 1e-6 * want.abs().max(1e-3));
        }
    }
}
