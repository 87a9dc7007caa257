//! The CPU attention backend: host f32 pools, K/V written by slot, causal attention that reads
//! every key through the sequence's block table. GQA is handled by indexing (query head `h`
//! reads KV head `h / (num_heads / num_kv_heads)`); K/V are never repeated or copied. This is
//! the reference the other backends are checked against.
//!
//! Cost per layer: O(Σ query_len × context_len × num_heads × head_dim), parallel over tokens.
//! Each token's reduction runs in one fixed order, whatever else is in the batch. The query heads
//! that share a KV head are done together, so each K/V row is read once per token and KV head.
//! K is stored transposed within each block, so the scores of a block's keys are lanes of one
//! vector: an FMA chain per query head over the head's dimensions, no horizontal sums.

use super::{AttentionBackend, AttentionMetadata, AttentionShape};
use crate::kv::cache::{KvCache, KvCacheConfig, LayerKv};
use crate::models::batch::ForwardBatch;
use crate::models::pool::ComputePool;
use crate::models::qgemm::elementwise::exp;
use candle_core::{DType, Device, Result, Tensor};
use parking_lot::Mutex;

pub struct CpuBackend {
    shape: AttentionShape,
}

impl CpuBackend {
    pub fn new(shape: AttentionShape) -> Self {
        Self { shape }
    }
}

fn host_pools(kv: &LayerKv) -> Result<(&[f32], &[f32])> {
    match kv {
        LayerKv::Host { k, v } => Ok((k, v)),
        LayerKv::Device { .. } => candle_core::bail!("the CPU backend needs a host KV pool"),
    }
}

fn host_rows(x: &Tensor) -> Result<Vec<f32>> {
    x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
}

impl AttentionBackend for CpuBackend {
    fn kind(&self) -> super::BackendKind {
        super::BackendKind::Cpu
    }

    fn allocate(&self, cfg: KvCacheConfig) -> Result<KvCache> {
        Ok(KvCache::new_host(cfg))
    }

    fn prepare(&self, batch: &ForwardBatch) -> Result<AttentionMetadata> {
        Ok(AttentionMetadata {
            token_seq: batch.token_seq_index(),
            device: None,
        })
    }

    fn write_kv(
        &self,
        kv: &mut LayerKv,
        k: &Tensor,
        v: &Tensor,
        batch: &ForwardBatch,
        _meta: &AttentionMetadata,
    ) -> Result<()> {
        let LayerKv::Host { k: kc, v: vc } = kv else {
            candle_core::bail!("the CPU backend needs a host KV pool")
        };
        let (k, v) = (host_rows(k)?, host_rows(v)?);
        write_kv(
            kc,
            vc,
            &k,
            &v,
            &batch.slot_mapping,
            self.shape,
            batch.block_size,
        );
        Ok(())
    }

    fn attend(
        &self,
        kv: &LayerKv,
        q: &Tensor,
        batch: &ForwardBatch,
        meta: &AttentionMetadata,
        windowed: bool,
    ) -> Result<Tensor> {
        let (kc, vc) = host_pools(kv)?;
        let rows = PagedRows {
            batch,
            token_seq: &meta.token_seq,
            shape: self.shape,
            windowed,
        };
        let y = paged_attention(&host_rows(q)?, kc, vc, &rows);
        Tensor::from_vec(y, (batch.num_tokens(), self.shape.q_dim()), &Device::Cpu)?
            .to_dtype(q.dtype())
    }
}

/// Writes rows of k/v ([num_tokens, kv_dim]) to their slots. V is stored by slot
/// (`[slot][kv_dim]`); K transposed within each block (`[block][kv_head][head_dim][block_size]`),
/// so a block's keys are the lanes of one vector and their scores need no horizontal sums.
pub fn write_kv(
    k_pool: &mut [f32],
    v_pool: &mut [f32],
    k: &[f32],
    v: &[f32],
    slot_mapping: &[u32],
    shape: AttentionShape,
    block_size: usize,
) {
    let kv_dim = shape.kv_dim();
    for (t, &slot) in slot_mapping.iter().enumerate() {
        let slot = slot as usize;
        let dst = slot * kv_dim..(slot + 1) * kv_dim;
        v_pool[dst].copy_from_slice(&v[t * kv_dim..(t + 1) * kv_dim]);
        let (b, s) = (slot / block_size, slot % block_size);
        let kb = &mut k_pool[b * kv_dim * block_size..(b + 1) * kv_dim * block_size];
        for (e, &x) in k[t * kv_dim..(t + 1) * kv_dim].iter().enumerate() {
            kb[e * block_size + s] = x;
        }
    }
}

/// Raw scores of one block's keys for `group` query heads: `out[h][s] = Σ_i q_h[i] · kb[i][s]`
/// (`kb`: [d][bs]), each lane summed over i in order. Register accumulators on AVX-512 when
/// bs = 16 and group is 1-4 or 8 (one FMA chain per head); the same sum in plain Rust elsewhere.
fn block_scores(qs: &[f32], d: usize, group: usize, kb: &[f32], bs: usize, out: &mut [f32]) {
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

fn block_scores_plain(qs: &[f32], d: usize, group: usize, kb: &[f32], bs: usize, out: &mut [f32]) {
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
struct Values<'a> {
    pool: &'a [f32],
    blocks: &'a [u32],
    /// The first visible key within `blocks[0]` (non-zero only in a sliding window).
    first: usize,
    bs: usize,
    kv_dim: usize,
    off: usize,
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

/// `out[h] = Σ_j p[h][j] · V_j` for the `group` heads of one KV head (`p`: [group][ctx], `out`:
/// [group][d], zero on entry): one fused multiply-add per key in key order for each output
/// element. Register accumulators on AVX-512 (d a multiple of 16, group 1-4 or 8); the same
/// operations in plain Rust elsewhere, so both give the same bits.
fn weighted_values(p: &[f32], ctx: usize, vs: &Values, d: usize, group: usize, out: &mut [f32]) {
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
                    4 => pv16::<$g, 4>(p, ctx, vs, d, out),
                    2 => pv16::<$g, 2>(p, ctx, vs, d, out),
                    _ => pv16::<$g, 1>(p, ctx, vs, d, out),
                }
            };
        }
        // SAFETY: AVX-512F is present (the VNNI path implies it); `p` is [group][ctx], `out`
        // [group][d], and every key's row of `d` values is inside the pool.
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
    weighted_values_plain(p, ctx, vs, d, group, out);
}

fn weighted_values_plain(
    p: &[f32],
    ctx: usize,
    vs: &Values,
    d: usize,
    group: usize,
    out: &mut [f32],
) {
    vs.for_keys(ctx, |j, row| {
        let v = &vs.pool[row..row + d];
        for (i, oh) in out.chunks_exact_mut(d).enumerate().take(group) {
            let w = p[i * ctx + j];
            for (o, &x) in oh.iter_mut().zip(v) {
                *o = w.mul_add(x, *o);
            }
        }
    });
}

/// `weighted_values` for G heads, `16 · V` columns at a time in registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn pv16<const G: usize, const V: usize>(
    p: &[f32],
    ctx: usize,
    vs: &Values,
    d: usize,
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    debug_assert!(p.len() >= G * ctx && out.len() >= G * d);
    let pool = vs.pool.as_ptr();
    for c in (0..d).step_by(16 * V) {
        let mut acc = [[_mm512_setzero_ps(); V]; G];
        vs.for_keys(ctx, |j, row| {
            let r = pool.add(row + c);
            let v: [__m512; V] = std::array::from_fn(|k| _mm512_loadu_ps(r.add(16 * k)));
            for (h, a) in acc.iter_mut().enumerate() {
                let w = _mm512_set1_ps(*p.get_unchecked(h * ctx + j));
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

/// What `paged_attention` attends for: the step's rows and the layer's kind.
pub struct PagedRows<'a> {
    pub batch: &'a ForwardBatch,
    /// `batch.token_seq_index()`
    pub token_seq: &'a [u32],
    pub shape: AttentionShape,
    /// A sliding-window layer (`shape.sliding_window`).
    pub windowed: bool,
}

/// Causal attention of q ([num_tokens, num_heads * head_dim], already rotated) over the cache.
/// Token `t` at position `p` attends to positions `first_visible(p)..=p` of its own sequence
/// (0 unless windowed), so the K/V of this step must be written first. Blocks before the
/// window are not read. Returns [num_tokens, num_heads * head_dim].
pub fn paged_attention(q: &[f32], k_pool: &[f32], v_pool: &[f32], rows: &PagedRows) -> Vec<f32> {
    let (batch, token_seq, shape) = (rows.batch, rows.token_seq, rows.shape);
    let (d, kv_dim, q_dim) = (shape.head_dim, shape.kv_dim(), shape.q_dim());
    let group = shape.group();
    let scale = shape.softmax_scale;
    let bs = batch.block_size;
    let mut out = vec![0f32; q.len()];
    let pool = ComputePool::global();
    // one task per token, handed out dynamically: a prompt's later tokens see longer contexts
    let tasks: Vec<Mutex<&mut [f32]>> = out.chunks_mut(q_dim).map(Mutex::new).collect();
    pool.run(tasks.len(), &|t| {
        let mut out_row = tasks[t].lock();
        {
            let pos = batch.positions[t] as usize;
            let (start, ctx) = (shape.first_visible(pos, rows.windowed), pos + 1);
            let (b0, n) = (start / bs, ctx - start);
            // the blocks holding the visible keys `start..ctx`
            let blocks = &batch.block_table(token_seq[t] as usize)[b0..ctx.div_ceil(bs)];
            // [group][n]: the query heads that share one KV head read each K/V row once
            let mut scores = vec![0f32; group * n];
            let mut lanes = vec![0f32; group * bs];
            for g in 0..shape.num_kv_heads {
                let kv_off = g * d;
                let qs = &q[t * q_dim + g * group * d..t * q_dim + (g + 1) * group * d];
                for (jb, &blk) in blocks.iter().enumerate() {
                    let kb = &k_pool[(blk as usize * kv_dim + kv_off) * bs..][..d * bs];
                    // this block's visible keys, lanes lo..hi, are scores from `at`
                    let block_start = (b0 + jb) * bs;
                    let lo = start.saturating_sub(block_start);
                    let hi = bs.min(ctx - block_start);
                    let at = block_start + lo - start;
                    block_scores(qs, d, group, kb, bs, &mut lanes);
                    for (i, l) in lanes.chunks_exact(bs).enumerate() {
                        for (sc, &v) in scores[i * n + at..][..hi - lo].iter_mut().zip(&l[lo..hi]) {
                            *sc = shape.cap(v * scale);
                        }
                    }
                }
                for s in scores.chunks_exact_mut(n) {
                    softmax(s);
                }
                let out_g = &mut out_row[g * group * d..(g + 1) * group * d];
                let vs = Values {
                    pool: v_pool,
                    blocks,
                    first: start - b0 * bs,
                    bs,
                    kv_dim,
                    off: kv_off,
                };
                weighted_values(&scores, n, &vs, d, group, out_g);
            }
        }
    });
    out
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
                for ctx in [1usize, 17, 40] {
                    let kv_dim = 2 * d;
                    let blocks: Vec<u32> = (0..ctx.div_ceil(bs) as u32).rev().collect();
                    let pool = randv(7, (blocks.len() * bs) * kv_dim);
                    let qs = randv(3, group * d);
                    let (mut a, mut b) = (vec![0f32; group * bs], vec![1f32; group * bs]);
                    block_scores(&qs, d, group, &pool[..d * bs], bs, &mut a);
                    block_scores_plain(&qs, d, group, &pool[..d * bs], bs, &mut b);
                    assert_eq!(a, b, "scores group {group} d {d}");
                    let p = randv(5, group * ctx);
                    let vs = Values {
                        pool: &pool,
                        blocks: &blocks,
                        first: 0,
                        bs,
                        kv_dim,
                        off: d,
                    };
                    let (mut a, mut b) = (vec![0f32; group * d], vec![0f32; group * d]);
                    weighted_values(&p, ctx, &vs, d, group, &mut a);
                    weighted_values_plain(&p, ctx, &vs, d, group, &mut b);
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&a), bits(&b), "values group {group} d {d} ctx {ctx}");
                }
            }
        }
    }
}
