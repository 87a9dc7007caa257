//! weir's CPU matmul kernels (`models::qgemm`) and `Linear`:
//! - batch invariance: a row's output is bit-identical alone and inside batches of 2, 7, 16 and
//!   33 rows at any position, for every weight type;
//! - every SIMD path equals the portable kernel bit for bit;
//! - the portable kernel matches the dequantized f32 product within quantization tolerance;
//! - the fused gated-MLP pass (`matmul_glu`) equals two matmuls and `silu_mul`, and is batch
//!   invariant too.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use proptest::prelude::*;
use weir::models::linear::{Linear, WeightFormat};
use weir::models::qgemm::elementwise::silu_mul;
use weir::models::qgemm::{matmul_glu_on, matmul_many_on, Isa, PackedWeight, QuantKind};

const KINDS: [(GgmlDType, Option<QuantKind>); 6] = [
    (GgmlDType::Q4_0, Some(QuantKind::Q4_0)),
    (GgmlDType::Q4_1, Some(QuantKind::Q4_1)),
    (GgmlDType::Q8_0, Some(QuantKind::Q8_0)),
    (GgmlDType::Q4K, Some(QuantKind::Q4K)),
    (GgmlDType::Q6K, Some(QuantKind::Q6K)),
    (GgmlDType::F32, None),
];

/// Inputs per GGML block of `dtype` (K-quants: 256).
fn block_len(dtype: GgmlDType) -> usize {
    match dtype {
        GgmlDType::Q4K | GgmlDType::Q6K => 256,
        _ => 32,
    }
}

/// A deterministic pseudo-random f32 vector (splitmix64) in [-scale, scale).
fn randv(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// The weight as weir packs it, and its dequantized f32 values [out, in].
fn weight(dtype: GgmlDType, out_dim: usize, in_dim: usize, seed: u64) -> (PackedWeight, Vec<f32>) {
    let w = randv(seed, out_dim * in_dim, 0.5);
    let t = Tensor::from_vec(w.clone(), (out_dim, in_dim), &Device::Cpu).unwrap();
    let kind = KINDS.iter().find(|(d, _)| *d == dtype).unwrap().1;
    match kind {
        None => (PackedWeight::from_f32(&w, out_dim, in_dim), w),
        Some(kind) => {
            let qt = QTensor::quantize(&t, dtype).unwrap();
            let deq = qt.dequantize(&Device::Cpu).unwrap();
            let blocks = qt.data().unwrap().into_owned();
            (
                PackedWeight::from_ggml(kind, &blocks, out_dim, in_dim),
                deq.flatten_all().unwrap().to_vec1().unwrap(),
            )
        }
    }
}

fn row(y: &[f32], r: usize, out_dim: usize) -> &[f32] {
    &y[r * out_dim..(r + 1) * out_dim]
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// The probe row gives the same bits alone and at `pos` among `batch - 1` other rows.
    #[test]
    fn rows_are_batch_invariant(
        kind_idx in 0usize..6,
        out_panels in 1usize..5,
        out_extra in 0usize..16,
        in_blocks in 1usize..9,
        seed in any::<u64>(),
        pos_frac in 0.0f64..1.0,
    ) {
        let (dtype, _) = KINDS[kind_idx];
        let in_dim = if block_len(dtype) == 256 { 256 * (1 + in_blocks % 2) } else { in_blocks * 32 };
        let out_dim = out_panels * 16 - 16 + out_extra.max(1);
        let (w, _) = weight(dtype, out_dim, in_dim, seed);
        let probe = randv(seed ^ 1, in_dim, 3.0);
        for &isa in Isa::available() {
            let alone = w.matmul_on(isa, &probe, 1);
            for batch in [2usize, 7, 16, 33] {
                let pos = ((batch as f64 * pos_frac) as usize).min(batch - 1);
                let mut x = randv(seed ^ batch as u64, batch * in_dim, 3.0);
                x[pos * in_dim..(pos + 1) * in_dim].copy_from_slice(&probe);
                let y = w.matmul_on(isa, &x, batch);
                prop_assert_eq!(bits(row(&y, pos, out_dim)), bits(&alone),
                    "{:?} {:?} batch {} pos {}", dtype, isa, batch, pos);
            }
        }
    }

    /// Every SIMD path gives the portable kernel's bits.
    #[test]
    fn simd_paths_equal_portable(
        kind_idx in 0usize..6,
        rows in 1usize..20,
        seed in any::<u64>(),
    ) {
        let (dtype, _) = KINDS[kind_idx];
        let (out_dim, in_dim) = (40, 512);
        let (w, _) = weight(dtype, out_dim, in_dim, seed);
        let x = randv(seed ^ 7, rows * in_dim, 2.0);
        let want = bits(&w.matmul_on(Isa::Portable, &x, rows));
        for &isa in Isa::available() {
            prop_assert_eq!(bits(&w.matmul_on(isa, &x, rows)), want.clone(), "{:?} {:?}", dtype, isa);
        }
    }

    /// The fused gate/up pass gives the bits of `silu(x Gᵀ) ⊙ (x Uᵀ)` computed step by step, on
    /// every path, and its rows are batch invariant.
    #[test]
    fn glu_equals_its_steps_and_is_batch_invariant(
        kind_idx in 0usize..6,
        out_panels in 1usize..5,
        out_extra in 0usize..16,
        rows in 1usize..40,
        seed in any::<u64>(),
    ) {
        let (dtype, _) = KINDS[kind_idx];
        let in_dim = 256;
        let out_dim = out_panels * 16 - 16 + out_extra.max(1);
        let (g, _) = weight(dtype, out_dim, in_dim, seed);
        let (u, _) = weight(dtype, out_dim, in_dim, seed ^ 3);
        let x = randv(seed ^ 5, rows * in_dim, 2.0);
        let want = {
            let mut gu = matmul_many_on(Isa::Portable, &[&g, &u], &x, rows);
            let up = gu.pop().unwrap();
            let mut gate = gu.pop().unwrap();
            silu_mul(&mut gate, &up);
            bits(&gate)
        };
        let last = &x[(rows - 1) * in_dim..];
        for &isa in Isa::available() {
            prop_assert_eq!(bits(&matmul_glu_on(isa, &g, &u, &x, rows)), want.clone(), "{:?} {:?}", dtype, isa);
            let alone = matmul_glu_on(isa, &g, &u, last, 1);
            prop_assert_eq!(bits(&alone), want[(rows - 1) * out_dim..].to_vec(), "{:?} {:?} alone", dtype, isa);
        }
    }
}

/// The kernels against the dequantized weights in f64: activation rounding to Q8 (half a step
/// of max|x|/127 per input) bounds the error.
#[test]
fn portable_matches_dequantized_product() {
    let (out_dim, in_dim, rows) = (48, 256, 5);
    for (dtype, kind) in KINDS {
        let (w, deq) = weight(dtype, out_dim, in_dim, 42);
        let x = randv(43, rows * in_dim, 2.0);
        let y = w.matmul_on(Isa::Portable, &x, rows);
        for r in 0..rows {
            let xr = &x[r * in_dim..(r + 1) * in_dim];
            let amax = xr.iter().fold(0f32, |m, v| m.max(v.abs()));
            for o in 0..out_dim {
                let wr = &deq[o * in_dim..(o + 1) * in_dim];
                let exact: f64 = wr.iter().zip(xr).map(|(&a, &b)| a as f64 * b as f64).sum();
                let wabs: f64 = wr.iter().map(|v| v.abs() as f64).sum();
                // Q8 rounding: |Δx| <= amax/254 per input; f32 accumulation besides
                let tol = match kind {
                    Some(_) => wabs * amax as f64 / 254.0 + 1e-4,
                    None => 1e-4 * (1.0 + exact.abs()),
                };
                let got = y[r * out_dim + o] as f64;
                assert!(
                    (got - exact).abs() <= tol,
                    "{dtype:?} row {r} out {o}: {got} vs {exact} (tol {tol})"
                );
            }
        }
    }
}

/// `Linear` (what the model calls) keeps the invariance for every GGML type weir has a kernel
/// for, K-quants included.
#[test]
fn linear_rows_are_batch_invariant_for_every_ggml_type() {
    let (out_dim, in_dim) = (64, 512);
    let w = Tensor::from_vec(
        randv(5, out_dim * in_dim, 0.5),
        (out_dim, in_dim),
        &Device::Cpu,
    )
    .unwrap();
    for dtype in [
        GgmlDType::Q4_0,
        GgmlDType::Q4_1,
        GgmlDType::Q8_0,
        GgmlDType::Q4K,
        GgmlDType::Q6K,
        GgmlDType::F32,
    ] {
        let lin = Linear::from_qtensor(
            QTensor::quantize(&w, dtype).unwrap(),
            None,
            WeightFormat::Quantized,
        )
        .unwrap();
        let probe = randv(6, in_dim, 3.0);
        let alone = lin
            .forward(&Tensor::from_vec(probe.clone(), (1, in_dim), &Device::Cpu).unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for batch in [2usize, 7, 16, 33] {
            let pos = batch / 2;
            let mut x = randv(batch as u64, batch * in_dim, 3.0);
            x[pos * in_dim..(pos + 1) * in_dim].copy_from_slice(&probe);
            let y = lin
                .forward(&Tensor::from_vec(x, (batch, in_dim), &Device::Cpu).unwrap())
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            assert_eq!(bits(&y[pos]), bits(&alone), "{dtype:?} batch {batch}");
        }
    }
}

/// Several projections in one pass (q/k/v) give each projection's own result, bit for bit.
#[test]
fn forward_many_equals_forward() {
    let in_dim = 256;
    let make = |dtype, out_dim, seed| {
        let w = Tensor::from_vec(
            randv(seed, out_dim * in_dim, 0.5),
            (out_dim, in_dim),
            &Device::Cpu,
        )
        .unwrap();
        Linear::from_qtensor(
            QTensor::quantize(&w, dtype).unwrap(),
            None,
            WeightFormat::Quantized,
        )
        .unwrap()
    };
    let (a, b, c) = (
        make(GgmlDType::Q4_1, 48, 1),
        make(GgmlDType::Q8_0, 16, 2),
        make(GgmlDType::Q6K, 40, 3),
    );
    let x = Tensor::from_vec(randv(4, 5 * in_dim, 2.0), (5, in_dim), &Device::Cpu).unwrap();
    let many = Linear::forward_many([&a, &b, &c], &x).unwrap();
    for (lin, y) in [&a, &b, &c].into_iter().zip(&many) {
        let want = lin
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(
            bits(&y.flatten_all().unwrap().to_vec1::<f32>().unwrap()),
            bits(&want)
        );
    }
}
