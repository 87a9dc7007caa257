//! The x86-64 block quantizers (AVX-512 F/BW, AVX2): the same bits as
//! `quantize_block_portable`.

use super::QK;
use std::arch::x86_64::*;

/// One Q8 block of activations (`quantize_block_portable`'s bits): returns (d, Σq,
/// Σq over the first 16).
///
/// # Safety
/// The CPU supports AVX-512 F/BW; `x` and `q` hold 32 values.
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn quantize_block_avx512(x: &[f32], q: &mut [i8]) -> (f32, i32, i32) {
    debug_assert!(x.len() == QK && q.len() == QK);
    let v0 = _mm512_loadu_ps(x.as_ptr());
    let v1 = _mm512_loadu_ps(x.as_ptr().add(16));
    let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
    let (d, id) = super::block_scale(amax);
    let id = _mm512_set1_ps(id);
    // `vcvtps2dq` rounds half to even under the default MXCSR, like `round_ties_even`
    let q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, id));
    let q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, id));
    _mm_storeu_si128(q.as_mut_ptr() as *mut _, _mm512_cvtepi32_epi8(q0));
    _mm_storeu_si128(q.as_mut_ptr().add(16) as *mut _, _mm512_cvtepi32_epi8(q1));
    let s16 = _mm512_reduce_add_epi32(q0);
    (d, s16 + _mm512_reduce_add_epi32(q1), s16)
}

/// One Q8 block of activations (`quantize_block_portable`'s bits): returns (d, Σq,
/// Σq over the first 16).
///
/// # Safety
/// The CPU supports AVX2; `x` and `q` hold 32 values.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn quantize_block_avx2(x: &[f32], q: &mut [i8]) -> (f32, i32, i32) {
    debug_assert!(x.len() == QK && q.len() == QK);
    let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(x.as_ptr().add(8 * i)));
    let sign = _mm256_set1_ps(-0.0);
    let mut m = _mm256_setzero_ps();
    for vi in v {
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, vi));
    }
    let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
    let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    let amax = _mm_cvtss_f32(_mm_max_ss(m2, _mm_movehdup_ps(m2)));
    let (d, id) = super::block_scale(amax);
    let id = _mm256_set1_ps(id);
    // `vcvtps2dq` rounds half to even under the default MXCSR, like `round_ties_even`
    let qi: [__m256i; 4] = std::array::from_fn(|i| _mm256_cvtps_epi32(_mm256_mul_ps(v[i], id)));
    let sum = |a: __m256i, b: __m256i| {
        let s = _mm256_add_epi32(a, b);
        let s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
        let s2 = _mm_add_epi32(s4, _mm_unpackhi_epi64(s4, s4));
        _mm_cvtsi128_si32(_mm_add_epi32(s2, _mm_shuffle_epi32::<1>(s2)))
    };
    let s16 = sum(qi[0], qi[1]);
    let s = s16 + sum(qi[2], qi[3]);
    // i32 -> i8 (values are within ±127): packs interleave 128-bit lanes, the permute undoes it
    let w16 = _mm256_packs_epi32(qi[0], qi[1]);
    let w16b = _mm256_packs_epi32(qi[2], qi[3]);
    let b8 = _mm256_packs_epi16(w16, w16b);
    let ordered = _mm256_permutevar8x32_epi32(b8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(q.as_mut_ptr() as *mut _, ordered);
    (d, s, s16)
}
