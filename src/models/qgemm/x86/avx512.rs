//! AVX-512 VNNI kernels: 16 features per register, `vpdpbusd` for the integer block sums.

use super::*;

pub fn available() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni")
}

/// Rows per tile.
pub const TILE: usize = 8;

/// # Safety
/// The CPU supports AVX-512 F/BW/VNNI; `panel` is one packed panel of `x.num_blocks()`
/// blocks of `kind`; `out` holds 1..=TILE rows of 16 and `r0 + rows <= x.rows`.
pub unsafe fn quant_tile(kind: QuantKind, panel: &[u8], x: &QuantRows, r0: usize, out: &mut [f32]) {
    let rows = out.len() / PANEL;
    debug_assert!((1..=TILE).contains(&rows) && r0 + rows <= x.rows);
    let p = RowPtrs::new(x, r0);
    dispatch!(tile, rows, kind, [8, 7, 6, 5, 4, 3, 2], panel, &p, out)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile<const R: usize, const K: u8>(panel: &[u8], x: &RowPtrs, out: &mut [f32]) {
    let kind = kind_of(K);
    let pbb = kind.panel_block_bytes();
    let qs_bytes = kind.qs_bytes();
    let zp = kind.zero_point();
    let low = _mm512_set1_epi8(0x0F);
    let mut acc = [_mm512_setzero_ps(); R];
    for b in 0..x.nb {
        let blk = panel.as_ptr().add(b * pbb);
        let sc = blk.add(qs_bytes);
        let k0 = b * QK;
        let mut isum = [_mm512_setzero_si512(); R];
        if K == Q8_0 || K == Q6K {
            // Q6_K: the first 16 inputs (groups 0..4) have their own scale
            let mut first = [_mm512_setzero_si512(); R];
            for g in 0..8 {
                if K == Q6K && g == 4 {
                    let s_lo = _mm512_cvtepi8_epi32(_mm_loadu_si128(sc.add(32) as *const _));
                    for t in 0..R {
                        let (z_lo, _) = x.q6_halves(t, b);
                        let i = _mm512_sub_epi32(isum[t], _mm512_set1_epi32(z_lo));
                        first[t] = _mm512_mullo_epi32(i, s_lo);
                        isum[t] = _mm512_setzero_si512();
                    }
                }
                let w = _mm512_loadu_si512(blk.add(64 * g) as *const _);
                for t in 0..R {
                    let a = _mm512_set1_epi32(x.quad(t, k0 + 4 * g));
                    isum[t] = _mm512_dpbusd_epi32(isum[t], w, a);
                }
            }
            if K == Q6K {
                let s_hi = _mm512_cvtepi8_epi32(_mm_loadu_si128(sc.add(48) as *const _));
                for t in 0..R {
                    let (_, z_hi) = x.q6_halves(t, b);
                    let i = _mm512_sub_epi32(isum[t], _mm512_set1_epi32(z_hi));
                    isum[t] = _mm512_add_epi32(first[t], _mm512_mullo_epi32(i, s_hi));
                }
            }
        } else {
            for i in 0..4 {
                let raw = _mm512_loadu_si512(blk.add(64 * i) as *const _);
                let lo = _mm512_and_si512(raw, low);
                let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(raw), low);
                for t in 0..R {
                    let a = _mm512_set1_epi32(x.quad(t, k0 + 8 * i));
                    isum[t] = _mm512_dpbusd_epi32(isum[t], lo, a);
                    let a = _mm512_set1_epi32(x.quad(t, k0 + 8 * i + 4));
                    isum[t] = _mm512_dpbusd_epi32(isum[t], hi, a);
                }
            }
        }
        let (dw, mw) = if K == Q4K {
            (
                _mm512_loadu_ps(sc as *const f32),
                _mm512_loadu_ps(sc.add(64) as *const f32),
            )
        } else {
            let dw = _mm512_cvtph_ps(_mm256_loadu_si256(sc as *const _));
            let mw = if K == Q4_1 {
                _mm512_cvtph_ps(_mm256_loadu_si256(sc.add(32) as *const _))
            } else {
                _mm512_setzero_ps()
            };
            (dw, mw)
        };
        for t in 0..R {
            let (dx, sx, ds) = x.block(t, b);
            let i = if K == Q6K {
                isum[t]
            } else {
                _mm512_sub_epi32(isum[t], _mm512_set1_epi32(zp * sx))
            };
            let scale = _mm512_mul_ps(dw, _mm512_set1_ps(dx));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), scale, acc[t]);
            if K == Q4_1 || K == Q4K {
                acc[t] = _mm512_fmadd_ps(mw, _mm512_set1_ps(ds), acc[t]);
            }
        }
    }
    for (t, a) in acc.iter().enumerate() {
        _mm512_storeu_ps(out.as_mut_ptr().add(t * PANEL), *a);
    }
}

/// # Safety
/// The CPU supports AVX-512F; `panel` is [in_dim][16]; `x` holds rows `r0..r0 + rows` of
/// `in_dim` floats; `out` holds 1..=TILE rows of 16.
pub unsafe fn f32_tile(panel: &[f32], x: &[f32], in_dim: usize, r0: usize, out: &mut [f32]) {
    let xs = &x[r0 * in_dim..];
    match out.len() / PANEL {
        8 => f32_rows::<8>(panel, xs, in_dim, out),
        7 => f32_rows::<7>(panel, xs, in_dim, out),
        6 => f32_rows::<6>(panel, xs, in_dim, out),
        5 => f32_rows::<5>(panel, xs, in_dim, out),
        4 => f32_rows::<4>(panel, xs, in_dim, out),
        3 => f32_rows::<3>(panel, xs, in_dim, out),
        2 => f32_rows::<2>(panel, xs, in_dim, out),
        _ => f32_rows::<1>(panel, xs, in_dim, out),
    }
}

#[target_feature(enable = "avx512f")]
unsafe fn f32_rows<const R: usize>(panel: &[f32], x: &[f32], in_dim: usize, out: &mut [f32]) {
    debug_assert!(x.len() >= R * in_dim && panel.len() == in_dim * PANEL);
    let mut acc = [_mm512_setzero_ps(); R];
    for k in 0..in_dim {
        let w = _mm512_loadu_ps(panel.as_ptr().add(k * PANEL));
        for t in 0..R {
            acc[t] = _mm512_fmadd_ps(w, _mm512_set1_ps(*x.get_unchecked(t * in_dim + k)), acc[t]);
        }
    }
    for (t, a) in acc.iter().enumerate() {
        _mm512_storeu_ps(out.as_mut_ptr().add(t * PANEL), *a);
    }
}
