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

use super::cpu_kernels::{blocks_scores, softmax, weighted_values, Values, Weights};
use super::{AttentionBackend, AttentionMetadata, AttentionShape};
use crate::kv::cache::{KvCache, KvCacheConfig, LayerKv};
use crate::models::batch::ForwardBatch;
use crate::models::pool::ComputePool;
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
            groups: Vec::new(),
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

/// What `paged_attention` attends for: the step's rows and the layer's kind.
pub struct PagedRows<'a> {
    pub batch: &'a ForwardBatch,
    /// `batch.token_seq_index()`
    pub token_seq: &'a [u32],
    pub shape: AttentionShape,
    /// A sliding-window layer (`shape.sliding_window`).
    pub windowed: bool,
}

/// Query rows attended together: up to this many consecutive tokens of one sequence (a prompt
/// chunk's rows), so that each K/V block is read from memory once per tile instead of once per
/// row. A row's arithmetic is the same in any tile (see `attend_tile`).
pub const TILE_ROWS: usize = 8;

/// K blocks scored together for one row (`cpu_kernels::blocks_scores`).
const QK_BLOCKS: usize = 4;

/// Causal attention of q ([num_tokens, num_heads * head_dim], already rotated) over the cache.
/// Token `t` at position `p` attends to positions `first_visible(p)..=p` of its own sequence
/// (0 unless windowed), so the K/V of this step must be written first. Blocks before the
/// window are not read. Returns [num_tokens, num_heads * head_dim].
pub fn paged_attention(q: &[f32], k_pool: &[f32], v_pool: &[f32], rows: &PagedRows) -> Vec<f32> {
    paged_attention_tiled(q, k_pool, v_pool, rows, TILE_ROWS)
}

/// `paged_attention` with tiles of at most `tile_rows` rows.
pub fn paged_attention_tiled(
    q: &[f32],
    k_pool: &[f32],
    v_pool: &[f32],
    rows: &PagedRows,
    tile_rows: usize,
) -> Vec<f32> {
    let q_dim = rows.shape.q_dim();
    let mut out = vec![0f32; q.len()];
    // tiles: runs of one sequence's consecutive tokens, each run cut every `tile_rows`
    let seqs = rows.token_seq;
    let mut tasks: Vec<Mutex<(usize, &mut [f32])>> = Vec::new();
    let mut rest: &mut [f32] = &mut out;
    let mut t = 0;
    while t < seqs.len() {
        let mut end = t + 1;
        while end < seqs.len() && end - t < tile_rows.max(1) && seqs[end] == seqs[t] {
            end += 1;
        }
        let (tile, tail) = std::mem::take(&mut rest).split_at_mut((end - t) * q_dim);
        tasks.push(Mutex::new((t, tile)));
        rest = tail;
        t = end;
    }
    // handed out dynamically: a prompt's later tiles see longer contexts
    ComputePool::global().run(tasks.len(), &|i| {
        let mut task = tasks[i].lock();
        let (first, ref mut tile) = *task;
        attend_tile(q, k_pool, v_pool, rows, first, tile);
    });
    out
}

/// Attention of the tile of rows `first..first + out.len() / q_dim` (one sequence's consecutive
/// tokens) into `out`. Per KV head: each K block's scores for every row that sees it, each row's
/// softmax, then each V block's weighted rows added to every row that sees it. A row's scores,
/// softmax and sums are the operations `paged_attention` runs for it alone, in the same order:
/// the tile only decides which rows share a block while it is in cache.
fn attend_tile(
    q: &[f32],
    k_pool: &[f32],
    v_pool: &[f32],
    rows: &PagedRows,
    first: usize,
    out: &mut [f32],
) {
    let (batch, shape) = (rows.batch, rows.shape);
    let (d, kv_dim, q_dim, group) = (shape.head_dim, shape.kv_dim(), shape.q_dim(), shape.group());
    let (scale, bs) = (shape.softmax_scale, batch.block_size);
    let n_rows = out.len() / q_dim;
    let table = batch.block_table(rows.token_seq[first] as usize);
    // each row's visible keys `start..ctx`
    let spans: Vec<(usize, usize)> = (first..first + n_rows)
        .map(|t| {
            let pos = batch.positions[t] as usize;
            (shape.first_visible(pos, rows.windowed), pos + 1)
        })
        .collect();
    let b0 = spans.iter().map(|s| s.0).min().unwrap_or(0) / bs;
    let b1 = spans.iter().map(|s| s.1).max().unwrap_or(0).div_ceil(bs);
    // [row][group][n_row]: the query heads that share one KV head read each K/V row once
    let offsets: Vec<usize> = spans
        .iter()
        .scan(0, |acc, (s, c)| {
            let at = *acc;
            *acc += group * (c - s);
            Some(at)
        })
        .collect();
    let mut scores = vec![0f32; spans.iter().map(|(s, c)| group * (c - s)).sum()];
    let mut lanes = vec![0f32; QK_BLOCKS * group * bs];
    // a row's visible lanes lo..hi of block jb, and where they start among its keys
    let visible = |(start, ctx): (usize, usize), jb: usize| {
        let block_start = jb * bs;
        (block_start < ctx && block_start + bs > start).then(|| {
            let lo = start.saturating_sub(block_start);
            (lo, bs.min(ctx - block_start), block_start + lo - start)
        })
    };
    let capped = shape.logit_softcap.is_some();
    for g in 0..shape.num_kv_heads {
        let kv_off = g * d;
        // QK_BLOCKS blocks at a time: the scores of a row's keys in them share its q loads (a
        // block it does not see is scored too, on keys its sequence holds, and dropped)
        for j0 in (b0..b1).step_by(QK_BLOCKS) {
            let jbs = j0..(j0 + QK_BLOCKS).min(b1);
            let mut kbs: [&[f32]; QK_BLOCKS] = [&[]; QK_BLOCKS];
            for (kb, jb) in kbs.iter_mut().zip(jbs.clone()) {
                *kb = &k_pool[(table[jb] as usize * kv_dim + kv_off) * bs..][..d * bs];
            }
            let kbs = &kbs[..jbs.len()];
            for (r, &span) in spans.iter().enumerate() {
                if !jbs.clone().any(|jb| visible(span, jb).is_some()) {
                    continue;
                }
                let t = first + r;
                let qs = &q[t * q_dim + g * group * d..][..group * d];
                blocks_scores(qs, d, group, kbs, bs, &mut lanes);
                let n = span.1 - span.0;
                let row = &mut scores[offsets[r]..][..group * n];
                for (jb, block) in jbs.clone().zip(lanes.chunks_exact(group * bs)) {
                    let Some((lo, hi, at)) = visible(span, jb) else {
                        continue;
                    };
                    for (i, l) in block.chunks_exact(bs).enumerate() {
                        let dst = row[i * n + at..][..hi - lo].iter_mut().zip(&l[lo..hi]);
                        // two loops, so that the plain one is vectorized
                        if capped {
                            dst.for_each(|(sc, &v)| *sc = shape.cap(v * scale));
                        } else {
                            dst.for_each(|(sc, &v)| *sc = v * scale);
                        }
                    }
                }
            }
        }
        for (r, (s, c)) in spans.iter().enumerate() {
            let n = c - s;
            scores[offsets[r]..][..group * n]
                .chunks_exact_mut(n)
                .for_each(softmax);
        }
        for jb in b0..b1 {
            for (r, &span) in spans.iter().enumerate() {
                let Some((lo, hi, at)) = visible(span, jb) else {
                    continue;
                };
                let n = span.1 - span.0;
                let w = Weights {
                    p: &scores[offsets[r] + at..],
                    stride: n,
                };
                let vs = Values {
                    pool: v_pool,
                    blocks: &table[jb..=jb],
                    first: lo,
                    bs,
                    kv_dim,
                    off: kv_off,
                };
                let out_g = &mut out[r * q_dim + g * group * d..][..group * d];
                weighted_values(w, hi - lo, &vs, d, group, out_g);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::batch::{ForwardBatch, SeqInput};
    use rand::{Rng, SeedableRng};

    /// Rows attended in tiles of any size give the bits each row gets alone (tiles of 1), with
    /// and without a window, for prompt chunks beside decodes.
    #[test]
    fn tiles_give_each_row_its_alone_bits() {
        let bs = 16;
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for (d, window) in [(64, None), (64, Some(13)), (16, None), (16, Some(40))] {
            let shape = AttentionShape {
                num_heads: 6,
                num_kv_heads: 2,
                head_dim: d,
                softmax_scale: 0.125,
                sliding_window: window,
                logit_softcap: None,
            };
            // a prompt chunk at 10..47, a decode at 60, a first chunk 0..20; disjoint blocks
            let mut ids: Vec<u32> = (0..12).collect();
            ids.reverse();
            let tokens = vec![0u32; 60];
            let seqs = [
                SeqInput {
                    token_ids: &tokens[..37],
                    start: 10,
                    block_table: &ids[0..3],
                    sample: true,
                },
                SeqInput {
                    token_ids: &tokens[..1],
                    start: 60,
                    block_table: &ids[3..7],
                    sample: true,
                },
                SeqInput {
                    token_ids: &tokens[..20],
                    start: 0,
                    block_table: &ids[7..9],
                    sample: true,
                },
            ];
            let batch = ForwardBatch::build(&seqs, bs);
            let mut randv = |n: usize| {
                (0..n)
                    .map(|_| rng.random_range(-1.0f32..1.0))
                    .collect::<Vec<_>>()
            };
            let (k, v) = (
                randv(12 * bs * shape.kv_dim()),
                randv(12 * bs * shape.kv_dim()),
            );
            let q = randv(batch.num_tokens() * shape.q_dim());
            let token_seq = batch.token_seq_index();
            let rows = PagedRows {
                batch: &batch,
                token_seq: &token_seq,
                shape,
                windowed: window.is_some(),
            };
            let bits = |x: Vec<f32>| x.into_iter().map(f32::to_bits).collect::<Vec<_>>();
            let alone = bits(paged_attention_tiled(&q, &k, &v, &rows, 1));
            for tile in [2, 5, TILE_ROWS, 64] {
                let got = bits(paged_attention_tiled(&q, &k, &v, &rows, tile));
                assert!(got == alone, "d {d}, window {window:?}, tiles of {tile}");
            }
        }
    }
}
