//! The CPU attention kernels: one K block's scores for the query heads sharing a KV head, the
//! softmax, and the weighted sum of V rows. Each has an AVX-512 form and a plain-Rust form with
//! the same operations in the same order (the same bits); every reduction runs in an order that
//! depends only on the row's own context, never on the batch.

use crate::models::qgemm::elementwise::exp;

/// Raw scores of one block's keys for `group` query heads: `out[h][s] = Σ_i q_h[i] · kb[i][s]`
/// (`kb`: [d][bs]), each lane summed over i in order. Register accumulators on AVX-512 when
/// bs = 16 and group is 1-4 or 8 (one FMA chain per head); the same sum in plain Rust elsewhere.
pub(super) fn block_scores(
    qs: &[f32],
    d: usize,
    group: usize,
    kb: &[f32],
    bs: usize,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if bs == 16
        && matches!(group, 1..=4 | 8)
        && crate::models::qgemm::Isa::best() == crate::models::qgemm::Isa::Avx512Vnni
    {
        // SAFETY: AVX-512F is present (the VNNI path implies it); slices are [group][d] and
        // [d][16], `out` [group][16].
        unsafe {
            match group {
                1 => scores16::<1>(qs, d, kb, out),
                2 => scores16::<2>(qs, d, kb, out),
                3 => scores16::<3>(qs, d, kb, out),
                4 => scores16::<4>(qs, d, kb, out),
                _ => scores16::<8>(qs, d, kb, out),
            }
        }
        return;
    }
    block_scores_plain(qs, d, group, kb, bs, out);
}

/// `block_scores` of several blocks (`kbs`, each [d][bs]) into `out` ([block][group][bs]), the
/// same bits: each lane summed over i in order. On AVX-512 with bs = 16, four blocks and group
/// 1-4 the four blocks share each query broadcast (one FMA chain per block and head).
pub(super) fn blocks_scores(
    qs: &[f32],
    d: usize,
    group: usize,
    kbs: &[&[f32]],
    bs: usize,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if bs == 16
        && kbs.len() == 4
        && matches!(group, 1..=4)
        && crate::models::qgemm::Isa::best() == crate::models::qgemm::Isa::Avx512Vnni
    {
        let kbs = [kbs[0], kbs[1], kbs[2], kbs[3]];
        // SAFETY: AVX-512F is present (the VNNI path implies it); `qs` is [group][d], each of
        // `kbs` [d][16], `out` [4][group][16].
        unsafe {
            match group {
                1 => scores16x4::<1>(qs, d, kbs, out),
                2 => scores16x4::<2>(qs, d, kbs, out),
                3 => scores16x4::<3>(qs, d, kbs, out),
                _ => scores16x4::<4>(qs, d, kbs, out),
            }
        }
        return;
    }
    for (kb, o) in kbs.iter().zip(out.chunks_exact_mut(group * bs)) {
        block_scores(qs, d, group, kb, bs, o);
    }
}

/// `scores16` of four blocks at once: per dimension, four K loads and G query broadcasts feed
/// 4·G FMA chains.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn scores16x4<const G: usize>(qs: &[f32], d: usize, kbs: [&[f32]; 4], out: &mut [f32]) {
    use std::arch::x86_64::*;
    debug_assert!(qs.len() >= G * d && kbs.iter().all(|k| k.len() >= d * 16));
    debug_assert!(out.len() >= 4 * G * 16);
    let mut acc = [[_mm512_setzero_ps(); 4]; G];
    for i in 0..d {
        let k: [__m512; 4] = std::array::from_fn(|b| _mm512_loadu_ps(kbs[b].as_ptr().add(i * 16)));
        for (h, a) in acc.iter_mut().enumerate() {
            let q = _mm512_set1_ps(*qs.get_unchecked(h * d + i));
            for b in 0..4 {
                a[b] = _mm512_fmadd_ps(q, k[b], a[b]);
            }
        }
    }
    for (h, a) in acc.iter().enumerate() {
        for (b, ab) in a.iter().enumerate() {
            _mm512_storeu_ps(out.as_mut_ptr().add((b * G + h) * 16), *ab);
        }
    }
}

pub(super) fn block_scores_plain(
    qs: &[f32],
    d: usize,
    group: usize,
    kb: &[f32],
    bs: usize,
    out: &mut [f32],
) {
    for (h, o) in out.chunks_exact_mut(bs).enumerate().take(group) {
        o.fill(0.0);
        for (&qe, row) in qs[h * d..(h + 1) * d].iter().zip(kb.chunks_exact(bs)) {
            for (l, &kv) in o.iter_mut().zip(row) {
                *l = qe.mul_add(kv, *l);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn scores16<const G: usize>(qs: &[f32], d: usize, kb: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    debug_assert!(qs.len() >= G * d && kb.len() >= d * 16 && out.len() >= G * 16);
    let mut acc = [_mm512_setzero_ps(); G];
    for i in 0..d {
        let k = _mm512_loadu_ps(kb.as_ptr().add(i * 16));
        for (h, a) in acc.iter_mut().enumerate() {
            *a = _mm512_fmadd_ps(_mm512_set1_ps(*qs.get_unchecked(h * d + i)), k, *a);
        }
    }
    for (h, a) in acc.iter().enumerate() {
        _mm512_storeu_ps(out.as_mut_ptr().add(h * 16), *a);
    }
}

/// `s ← softmax(s)`. The sum runs in 16 fixed lanes (then lane by lane), an order that
/// depends only on `s.len()`.
pub(crate) fn softmax(s: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::models::qgemm::Isa::best() == crate::models::qgemm::Isa::Avx512Vnni {
        // SAFETY: AVX-512F is present (the VNNI path implies it)
        unsafe { softmax_avx512(s) };
        return;
    }
    softmax_plain(s);
}

/// `softmax_plain` compiled for AVX-512: the same operations per element, 16 at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn softmax_avx512(s: &mut [f32]) {
    softmax_plain(s);
}

#[inline(always)]
fn softmax_plain(s: &mut [f32]) {
    let max = s.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for v in s.iter_mut() {
        *v = exp(*v - max);
    }
    let mut lanes = [0f32; 16];
    let mut chunks = s.chunks_exact(16);
    for c in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += v;
        }
    }
    let sum = lanes
        .iter()
        .chain(chunks.remainder())
        .fold(0.0, |a, &v| a + v);
    let inv = 1.0 / sum;
    for v in s.iter_mut() {
        *v *= inv;
    }
}

/// The V rows of one KV head of one sequence's visible keys: visible key `j` is key
/// `first + j` of `blocks`, row `blocks[k / bs] * bs + k % bs` of the pool for `k = first + j`,
/// at column `off`.
pub(super) struct Values<'a> {
    pub(super) pool: &'a [f32],
    pub(super) blocks: &'a [u32],
    /// The first visible key within `blocks[0]`.
    pub(super) first: usize,
    pub(super) bs: usize,
    pub(super) kv_dim: usize,
    pub(super) off: usize,
}

impl Values<'_> {
    /// Calls `f(j, row_start)` for visible keys `0..n` in order (`row_start` indexes `pool`).
    #[inline(always)]
    fn for_keys(&self, n: usize, mut f: impl FnMut(usize, usize)) {
        let end = self.first + n;
        for (jb, &blk) in self.blocks.iter().enumerate() {
            let lo = (jb * self.bs).max(self.first);
            let hi = ((jb + 1) * self.bs).min(end);
            for k in lo..hi {
                let row = blk as usize * self.bs + k - jb * self.bs;
                f(k - self.first, row * self.kv_dim + self.off);
            }
        }
    }
}

/// Weights of keys: head `h`'s weight of visible key `j` is `p[h * stride + j]`.
#[derive(Clone, Copy)]
pub(super) struct Weights<'a> {
    pub(super) p: &'a [f32],
    pub(super) stride: usize,
}

impl Weights<'_> {
    #[inline(always)]
    fn at(&self, h: usize, j: usize) -> f32 {
        self.p[h * self.stride + j]
    }
}

/// `out[h] += Σ_j w[h][j] · V_j` over visible keys `j` in `0..n` of `vs` for the `group` heads
/// of one KV head (`out`: [group][d]): one fused multiply-add per key in key order for each
/// output element, so accumulating a context block by block gives the bits of one call over it.
/// Register accumulators on AVX-512 (d a multiple of 16, group 1-4 or 8); the same operations in
/// plain Rust elsewhere, so both give the same bits.
pub(super) fn weighted_values(
    w: Weights,
    n: usize,
    vs: &Values,
    d: usize,
    group: usize,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if d.is_multiple_of(16)
        && matches!(group, 1..=4 | 8)
        && crate::models::qgemm::Isa::best() == crate::models::qgemm::Isa::Avx512Vnni
    {
        let v = if group <= 4 && d.is_multiple_of(64) {
            4
        } else if d.is_multiple_of(32) {
            2
        } else {
            1
        };
        macro_rules! by_v {
            ($g:literal) => {
                match v {
                    4 => pv16::<$g, 4>(w, n, vs, d, out),
                    2 => pv16::<$g, 2>(w, n, vs, d, out),
                    _ => pv16::<$g, 1>(w, n, vs, d, out),
                }
            };
        }
        // SAFETY: AVX-512F is present (the VNNI path implies it); `w` holds [group] rows of `n`
        // weights, `out` is [group][d], and every key's row of `d` values is inside the pool.
        unsafe {
            match group {
                1 => by_v!(1),
                2 => by_v!(2),
                3 => by_v!(3),
                4 => by_v!(4),
                _ => by_v!(8),
            }
        }
        return;
    }
    weighted_values_plain(w, n, vs, d, group, out);
}

pub(super) fn weighted_values_plain(
    w: Weights,
    n: usize,
    vs: &Values,
    d: usize,
    group: usize,
    out: &mut [f32],
) {
    vs.for_keys(n, |j, row| {
        let v = &vs.pool[row..row + d];
        for (i, oh) in out.chunks_exact_mut(d).enumerate().take(group) {
            let wi = w.at(i, j);
            for (o, &x) in oh.iter_mut().zip(v) {
                *o = wi.mul_add(x, *o);
            }
        }
    });
}

/// `weighted_values` for G heads, `16 · V` columns at a time in registers (loaded from `out`,
/// stored back).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn pv16<const G: usize, const V: usize>(
    w: Weights,
    n: usize,
    vs: &Values,
    d: usize,
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    debug_assert!(w.p.len() >= (G - 1) * w.stride + n && out.len() >= G * d);
    let pool = vs.pool.as_ptr();
    for c in (0..d).step_by(16 * V) {
        let mut acc: [[__m512; V]; G] = std::array::from_fn(|h| {
            std::array::from_fn(|k| _mm512_loadu_ps(out.as_ptr().add(h * d + c + 16 * k)))
        });
        vs.for_keys(n, |j, row| {
            let r = pool.add(row + c);
            let v: [__m512; V] = std::array::from_fn(|k| _mm512_loadu_ps(r.add(16 * k)));
            for (h, a) in acc.iter_mut().enumerate() {
                let w = _mm512_set1_ps(*w.p.get_unchecked(h * w.stride + j));
                for k in 0..V {
                    a[k] = _mm512_fmadd_ps(w, v[k], a[k]);
                }
            }
        });
        for (h, a) in acc.iter().enumerate() {
            for (k, ak) in a.iter().enumerate() {
                _mm512_storeu_ps(out.as_mut_ptr().add(h * d + c + 16 * k), *ak);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn randv(seed: u32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let h = (i as u32 ^ seed.wrapping_mul(0x9E37_79B9)).wrapping_mul(0x85EB_CA6B);
                ((h >> 8) as f32 / (1u32 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The AVX-512 score and value kernels give the plain-Rust bits for every head group and
    /// head size they take.
    #[test]
    fn simd_attention_kernels_equal_plain_rust() {
        if crate::models::qgemm::Isa::best() != crate::models::qgemm::Isa::Avx512Vnni {
            return; // only the plain path exists here
        }
        let bs = 16;
        for group in [1usize, 2, 3, 4, 8] {
            for d in [16usize, 32, 48, 64, 128] {
                for ctx in [1usize, 17, 40, 70] {
                    let kv_dim = 2 * d;
                    let blocks: Vec<u32> = (0..ctx.div_ceil(bs) as u32).rev().collect();
                    let pool = randv(7, (blocks.len() * bs) * kv_dim);
                    let qs = randv(3, group * d);
                    let (mut a, mut b) = (vec![0f32; group * bs], vec![1f32; group * bs]);
                    block_scores(&qs, d, group, &pool[..d * bs], bs, &mut a);
                    block_scores_plain(&qs, d, group, &pool[..d * bs], bs, &mut b);
                    assert_eq!(a, b, "scores group {group} d {d}");
                    if blocks.len() >= 4 {
                        let kbs: Vec<&[f32]> =
                            (0..4).map(|b| &pool[b * d * bs..][..d * bs]).collect();
                        let mut four = vec![0f32; 4 * group * bs];
                        blocks_scores(&qs, d, group, &kbs, bs, &mut four);
                        for (kb, o) in kbs.iter().zip(four.chunks_exact(group * bs)) {
                            block_scores_plain(&qs, d, group, kb, bs, &mut b);
                            assert_eq!(o, &b[..], "four blocks, group {group} d {d}");
                        }
                    }
                    let p = randv(5, group * ctx);
                    let (mut sa, mut sb) = (p.clone(), p.clone());
                    softmax(&mut sa);
                    softmax_plain(&mut sb);
                    assert_eq!(sa, sb, "softmax of {}", p.len());
                    let vs = Values {
                        pool: &pool,
                        blocks: &blocks,
                        first: 0,
                        bs,
                        kv_dim,
                        off: d,
                    };
                    let (mut a, mut b) = (vec![0f32; group * d], vec![0f32; group * d]);
                    let w = Weights { p: &p, stride: ctx };
                    weighted_values(w, ctx, &vs, d, group, &mut a);
                    weighted_values_plain(w, ctx, &vs, d, group, &mut b);
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&a), bits(&b), "values group {group} d {d} ctx {ctx}");
                }
            }
        }
    }
}
