//! AVX2 kernels: 8 features per register (two halves per panel), `vpmaddubsw` + `vpmaddwd`.

use super::*;

pub fn available() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// Rows per tile.
pub const TILE: usize = 4;

/// # Safety
/// The CPU supports AVX2, FMA and F16C; otherwise as `avx512::quant_tile`.
pub unsafe fn quant_tile(kind: QuantKind, panel: &[u8], x: &QuantRows, r0: usize, out: &mut [f32]) {
    let rows = out.len() / PANEL;
    debug_assert!((1..=TILE).contains(&rows) && r0 + rows <= x.rows);
    let p = RowPtrs::new(x, r0);
    for half in 0..2 {
        dispatch!(tile, rows, kind, [4, 3, 2], panel, &p, half, out)
    }
}

/// Σ over 4-byte groups of u8 `w` × i8 `a` into i32 lanes (exact: each i16 pair sum stays
/// below 2 · 127 · 128).
#[inline(always)]
unsafe fn dot4(w: __m256i, a: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(w, a), _mm256_set1_epi16(1))
}

/// Features `8·half .. 8·half + 8` of the panel.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile<const R: usize, const K: u8>(
    panel: &[u8],
    x: &RowPtrs,
    half: usize,
    out: &mut [f32],
) {
    let kind = kind_of(K);
    let pbb = kind.panel_block_bytes();
    let qs_bytes = kind.qs_bytes();
    let low = _mm256_set1_epi8(0x0F);
    let flip = _mm256_set1_epi8(-128);
    // Q8_0 sums Σ q·x directly (sign trick); that equals Σ (q + 128)·x − 128·Σx exactly.
    let zp = if K == Q8_0 { 0 } else { kind.zero_point() };
    let mut acc = [_mm256_setzero_ps(); R];
    for b in 0..x.nb {
        let blk = panel.as_ptr().add(b * pbb + 32 * half);
        let sc = panel.as_ptr().add(b * pbb + qs_bytes);
        let k0 = b * QK;
        let mut isum = [_mm256_setzero_si256(); R];
        if K == Q8_0 {
            for g in 0..8 {
                let w = _mm256_xor_si256(_mm256_loadu_si256(blk.add(64 * g) as *const _), flip);
                let aw = _mm256_abs_epi8(w);
                for t in 0..R {
                    let a = _mm256_sign_epi8(_mm256_set1_epi32(x.quad(t, k0 + 4 * g)), w);
                    isum[t] = _mm256_add_epi32(isum[t], dot4(aw, a));
                }
            }
        } else if K == Q6K {
            let mut first = [_mm256_setzero_si256(); R];
            for g in 0..8 {
                if g == 4 {
                    let s_lo =
                        _mm256_cvtepi8_epi32(_mm_loadl_epi64(sc.add(32 + 8 * half) as *const _));
                    for t in 0..R {
                        let (z_lo, _) = x.q6_halves(t, b);
                        let i = _mm256_sub_epi32(isum[t], _mm256_set1_epi32(z_lo));
                        first[t] = _mm256_mullo_epi32(i, s_lo);
                        isum[t] = _mm256_setzero_si256();
                    }
                }
                // 6-bit quants: each i16 pair sum stays below 2 · 63 · 128
                let w = _mm256_loadu_si256(blk.add(64 * g) as *const _);
                for t in 0..R {
                    let a = _mm256_set1_epi32(x.quad(t, k0 + 4 * g));
                    isum[t] = _mm256_add_epi32(isum[t], dot4(w, a));
                }
            }
            let s_hi = _mm256_cvtepi8_epi32(_mm_loadl_epi64(sc.add(48 + 8 * half) as *const _));
            for t in 0..R {
                let (_, z_hi) = x.q6_halves(t, b);
                let i = _mm256_sub_epi32(isum[t], _mm256_set1_epi32(z_hi));
                isum[t] = _mm256_add_epi32(first[t], _mm256_mullo_epi32(i, s_hi));
            }
        } else {
            for i in 0..4 {
                let raw = _mm256_loadu_si256(blk.add(64 * i) as *const _);
                let lo = _mm256_and_si256(raw, low);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(raw), low);
                for t in 0..R {
                    let a = _mm256_set1_epi32(x.quad(t, k0 + 8 * i));
                    isum[t] = _mm256_add_epi32(isum[t], dot4(lo, a));
                    let a = _mm256_set1_epi32(x.quad(t, k0 + 8 * i + 4));
                    isum[t] = _mm256_add_epi32(isum[t], dot4(hi, a));
                }
            }
        }
        let (dw, mw) = if K == Q4K {
            (
                _mm256_loadu_ps((sc as *const f32).add(8 * half)),
                _mm256_loadu_ps((sc.add(64) as *const f32).add(8 * half)),
            )
        } else {
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(sc.add(16 * half) as *const _));
            let mw = if K == Q4_1 {
                _mm256_cvtph_ps(_mm_loadu_si128(sc.add(32 + 16 * half) as *const _))
            } else {
                _mm256_setzero_ps()
            };
            (dw, mw)
        };
        for t in 0..R {
            let (dx, sx, ds) = x.block(t, b);
            let i = if K == Q6K {
                isum[t]
            } else {
                _mm256_sub_epi32(isum[t], _mm256_set1_epi32(zp * sx))
            };
            let scale = _mm256_mul_ps(dw, _mm256_set1_ps(dx));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), scale, acc[t]);
            if K == Q4_1 || K == Q4K {
                acc[t] = _mm256_fmadd_ps(mw, _mm256_set1_ps(ds), acc[t]);
            }
        }
    }
    for (t, a) in acc.iter().enumerate() {
        _mm256_storeu_ps(out.as_mut_ptr().add(t * PANEL + 8 * half), *a);
    }
}

/// # Safety
/// The CPU supports AVX2 and FMA; otherwise as `avx512::f32_tile`.
pub unsafe fn f32_tile(panel: &[f32], x: &[f32], in_dim: usize, r0: usize, out: &mut [f32]) {
    let xs = &x[r0 * in_dim..];
    match out.len() / PANEL {
        4 => f32_rows::<4>(panel, xs, in_dim, out),
        3 => f32_rows::<3>(panel, xs, in_dim, out),
        2 => f32_rows::<2>(panel, xs, in_dim, out),
        _ => f32_rows::<1>(panel, xs, in_dim, out),
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn f32_rows<const R: usize>(panel: &[f32], x: &[f32], in_dim: usize, out: &mut [f32]) {
    debug_assert!(x.len() >= R * in_dim && panel.len() == in_dim * PANEL);
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    for k in 0..in_dim {
        let w0 = _mm256_loadu_ps(panel.as_ptr().add(k * PANEL));
        let w1 = _mm256_loadu_ps(panel.as_ptr().add(k * PANEL + 8));
        for t in 0..R {
            let a = _mm256_set1_ps(*x.get_unchecked(t * in_dim + k));
            acc[t][0] = _mm256_fmadd_ps(w0, a, acc[t][0]);
            acc[t][1] = _mm256_fmadd_ps(w1, a, acc[t][1]);
        }
    }
    for (t, a) in acc.iter().enumerate() {
        _mm256_storeu_ps(out.as_mut_ptr().add(t * PANEL), a[0]);
        _mm256_storeu_ps(out.as_mut_ptr().add(t * PANEL + 8), a[1]);
    }
}
