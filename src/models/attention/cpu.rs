//! The CPU attention backend: host f32 pools, K/V written by slot, causal attention that reads
//! every key through the sequence's block table. GQA is handled by indexing (query head `h`
//! reads KV head `h / (num_heads / num_kv_heads)`); K/V are never repeated or copied. This is
//! the reference the other backends are checked against.
//!
//! Cost per layer: O(Σ query_len × context_len × num_heads × head_dim), parallel over tokens.
//! Each token's reduction runs in one fixed order, whatever else is in the batch. The query heads
//! that share a KV head are done together, so each K/V row is read once per token and KV head.

use super::{AttentionBackend, AttentionMetadata, AttentionShape};
use crate::kv::cache::{KvCache, KvCacheConfig, LayerKv};
use crate::models::batch::{slot, ForwardBatch};
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
    fn name(&self) -> &'static str {
        "cpu"
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
        write_kv(kc, vc, &k, &v, &batch.slot_mapping, self.shape.kv_dim());
        Ok(())
    }

    fn attend(
        &self,
        kv: &LayerKv,
        q: &Tensor,
        batch: &ForwardBatch,
        meta: &AttentionMetadata,
    ) -> Result<Tensor> {
        let (kc, vc) = host_pools(kv)?;
        let y = paged_attention(&host_rows(q)?, kc, vc, batch, &meta.token_seq, self.shape);
        Tensor::from_vec(y, (batch.num_tokens(), self.shape.q_dim()), &Device::Cpu)?
            .to_dtype(q.dtype())
    }
}

/// Writes rows of k/v ([num_tokens, kv_dim]) to their slots.
pub fn write_kv(
    k_pool: &mut [f32],
    v_pool: &mut [f32],
    k: &[f32],
    v: &[f32],
    slot_mapping: &[u32],
    kv_dim: usize,
) {
    for (t, &slot) in slot_mapping.iter().enumerate() {
        let dst = slot as usize * kv_dim..(slot as usize + 1) * kv_dim;
        k_pool[dst.clone()].copy_from_slice(&k[t * kv_dim..(t + 1) * kv_dim]);
        v_pool[dst].copy_from_slice(&v[t * kv_dim..(t + 1) * kv_dim]);
    }
}

#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const L: usize = 16;
    let mut acc = [0f32; L];
    let (ac, bc) = (a.chunks_exact(L), b.chunks_exact(L));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for i in 0..L {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ar.iter().zip(br) {
        s += x * y;
    }
    s
}

/// Causal attention of q ([num_tokens, num_heads * head_dim], already rotated) over the cache.
/// Token `t` at position `p` attends to positions `0..=p` of its own sequence, so the K/V of
/// this step must be written first. `token_seq` is `batch.token_seq_index()`.
/// Returns [num_tokens, num_heads * head_dim].
pub fn paged_attention(
    q: &[f32],
    k_pool: &[f32],
    v_pool: &[f32],
    batch: &ForwardBatch,
    token_seq: &[u32],
    shape: AttentionShape,
) -> Vec<f32> {
    let (d, kv_dim, q_dim) = (shape.head_dim, shape.kv_dim(), shape.q_dim());
    let group = shape.group();
    let scale = 1.0 / (d as f32).sqrt();
    let bs = batch.block_size;
    let mut out = vec![0f32; q.len()];
    let pool = ComputePool::global();
    // one task per token, handed out dynamically: a prompt's later tokens see longer contexts
    let tasks: Vec<Mutex<&mut [f32]>> = out.chunks_mut(q_dim).map(Mutex::new).collect();
    pool.run(tasks.len(), &|t| {
        let mut out_row = tasks[t].lock();
        {
            let seq = &batch.seqs[token_seq[t] as usize];
            let ctx = batch.positions[t] as usize + 1;
            // slot of every visible key: [ctx]
            let slots: Vec<usize> = (0..ctx)
                .map(|j| slot(&seq.block_table, j, bs) as usize)
                .collect();
            // [group][ctx]: the query heads that share one KV head read each K/V row once
            let mut scores = vec![0f32; group * ctx];
            for g in 0..shape.num_kv_heads {
                let kv_off = g * d;
                let heads = g * group..(g + 1) * group;
                for (j, &slot) in slots.iter().enumerate() {
                    let k = &k_pool[slot * kv_dim + kv_off..slot * kv_dim + kv_off + d];
                    for (i, h) in heads.clone().enumerate() {
                        let qh = &q[t * q_dim + h * d..t * q_dim + (h + 1) * d];
                        scores[i * ctx + j] = dot(qh, k) * scale;
                    }
                }
                for s in scores.chunks_exact_mut(ctx) {
                    let max = s.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                    let mut sum = 0.0;
                    for v in s.iter_mut() {
                        *v = (*v - max).exp();
                        sum += *v;
                    }
                    let inv = 1.0 / sum;
                    for v in s.iter_mut() {
                        *v *= inv;
                    }
                }
                let out_g = &mut out_row[g * group * d..(g + 1) * group * d];
                for (j, &slot) in slots.iter().enumerate() {
                    let v = &v_pool[slot * kv_dim + kv_off..slot * kv_dim + kv_off + d];
                    for (i, oh) in out_g.chunks_exact_mut(d).enumerate() {
                        let w = scores[i * ctx + j];
                        for (o, &x) in oh.iter_mut().zip(v) {
                            *o += w * x;
                        }
                    }
                }
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_handles_remainders() {
        let a: Vec<f32> = (0..37).map(|i| i as f32).collect();
        let b = vec![1.0; 37];
        assert_eq!(dot(&a, &b), (0..37).sum::<i32>() as f32);
    }
}
