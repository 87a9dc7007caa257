//! Paged attention on CPU: RoPE, writing new K/V into the cache by slot, and causal attention
//! that reads every key through the sequence's block table. GQA is handled by indexing (query
//! head `h` reads KV head `h / (num_heads / num_kv_heads)`); K/V are never repeated or copied.
//!
//! Cost per layer: O(Σ query_len × context_len × num_heads × head_dim), parallel over tokens.

use crate::kv::cache::LayerKv;
use crate::runner::batch::ForwardBatch;
use rayon::prelude::*;

#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

impl AttentionShape {
    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }
}

/// cos/sin of every token's position, computed once per step and shared by all layers.
pub struct RopeTable {
    /// [num_tokens, head_dim / 2]
    cos: Vec<f32>,
    /// [num_tokens, head_dim / 2]
    sin: Vec<f32>,
    half: usize,
    interleaved: bool,
}

impl RopeTable {
    pub fn new(inv_freq: &[f32], positions: &[u32], interleaved: bool) -> Self {
        let half = inv_freq.len();
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for &p in positions {
            for &f in inv_freq {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        Self {
            cos,
            sin,
            half,
            interleaved,
        }
    }

    /// Rotates x: [num_tokens, num_heads * head_dim] in place.
    ///
    /// ```text
    /// interleaved (GGUF llama): pairs (x0,x1) (x2,x3) ...     neox (HF): pairs (x0,x32) (x1,x33) ...
    /// ```
    pub fn apply(&self, x: &mut [f32], num_heads: usize) {
        let d = 2 * self.half;
        for (t, row) in x.chunks_exact_mut(num_heads * d).enumerate() {
            let cos = &self.cos[t * self.half..(t + 1) * self.half];
            let sin = &self.sin[t * self.half..(t + 1) * self.half];
            for head in row.chunks_exact_mut(d) {
                for i in 0..self.half {
                    let (a, b) = if self.interleaved {
                        (2 * i, 2 * i + 1)
                    } else {
                        (i, i + self.half)
                    };
                    let (x0, x1) = (head[a], head[b]);
                    head[a] = x0 * cos[i] - x1 * sin[i];
                    head[b] = x0 * sin[i] + x1 * cos[i];
                }
            }
        }
    }
}

/// Per-step tables shared by every layer: RoPE cos/sin and each token's sequence.
pub struct StepTables {
    pub rope: RopeTable,
    /// [num_tokens] index into `batch.seqs` of each token row
    pub token_seq: Vec<u32>,
}

impl StepTables {
    pub fn new(inv_freq: &[f32], batch: &ForwardBatch, interleaved: bool) -> Self {
        Self {
            rope: RopeTable::new(inv_freq, &batch.positions, interleaved),
            token_seq: batch.token_seq_index(),
        }
    }
}

/// Writes rows of k/v ([num_tokens, kv_dim]) to their slots.
pub fn write_kv(cache: &mut LayerKv, k: &[f32], v: &[f32], slot_mapping: &[u32], kv_dim: usize) {
    for (t, &slot) in slot_mapping.iter().enumerate() {
        let dst = slot as usize * kv_dim..(slot as usize + 1) * kv_dim;
        cache.k[dst.clone()].copy_from_slice(&k[t * kv_dim..(t + 1) * kv_dim]);
        cache.v[dst].copy_from_slice(&v[t * kv_dim..(t + 1) * kv_dim]);
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
    cache: &LayerKv,
    batch: &ForwardBatch,
    token_seq: &[u32],
    shape: AttentionShape,
) -> Vec<f32> {
    let (d, kv_dim, q_dim) = (shape.head_dim, shape.kv_dim(), shape.q_dim());
    let group = shape.num_heads / shape.num_kv_heads;
    let scale = 1.0 / (d as f32).sqrt();
    let bs = batch.block_size;
    let mut out = vec![0f32; q.len()];
    out.par_chunks_mut(q_dim)
        .enumerate()
        .for_each(|(t, out_row)| {
            let seq = &batch.seqs[token_seq[t] as usize];
            let ctx = batch.positions[t] as usize + 1;
            // slot of every visible key: [ctx]
            let slots: Vec<usize> = (0..ctx)
                .map(|j| seq.block_table[j / bs] as usize * bs + j % bs)
                .collect();
            let mut scores = vec![0f32; ctx];
            for h in 0..shape.num_heads {
                let kv_off = (h / group) * d;
                let qh = &q[t * q_dim + h * d..t * q_dim + (h + 1) * d];
                let mut max = f32::NEG_INFINITY;
                for (s, &slot) in scores.iter_mut().zip(&slots) {
                    let k = &cache.k[slot * kv_dim + kv_off..slot * kv_dim + kv_off + d];
                    *s = dot(qh, k) * scale;
                    max = max.max(*s);
                }
                let mut sum = 0.0;
                for s in scores.iter_mut() {
                    *s = (*s - max).exp();
                    sum += *s;
                }
                let inv = 1.0 / sum;
                let oh = &mut out_row[h * d..(h + 1) * d];
                for (&p, &slot) in scores.iter().zip(&slots) {
                    let v = &cache.v[slot * kv_dim + kv_off..slot * kv_dim + kv_off + d];
                    let w = p * inv;
                    for (o, &x) in oh.iter_mut().zip(v) {
                        *o += w * x;
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
    fn rope_rotates_pairs_by_position() {
        // head_dim 4, one head, inv_freq [1, 0.5]; position 1 rotates pair 0 by 1 rad, pair 1 by 0.5
        let t = RopeTable::new(&[1.0, 0.5], &[0, 1], true);
        let mut x = vec![1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0];
        t.apply(&mut x, 1);
        assert_eq!(&x[..4], &[1.0, 0.0, 1.0, 0.0], "position 0 is the identity");
        let expect = [1f32.cos(), 1f32.sin(), 0.5f32.cos(), 0.5f32.sin()];
        for (a, b) in x[4..].iter().zip(expect) {
            assert!((a - b).abs() < 1e-6);
        }
        // neox pairs element i with i + 2
        let t = RopeTable::new(&[1.0, 0.5], &[1], false);
        let mut x = vec![1.0, 1.0, 0.0, 0.0];
        t.apply(&mut x, 1);
        let expect = [1f32.cos(), 0.5f32.cos(), 1f32.sin(), 0.5f32.sin()];
        for (a, b) in x.iter().zip(expect) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn dot_handles_remainders() {
        let a: Vec<f32> = (0..37).map(|i| i as f32).collect();
        let b = vec![1.0; 37];
        assert_eq!(dot(&a, &b), (0..37).sum::<i32>() as f32);
    }
}
