//! Attention without a cache for an encoder: packed whole sequences, each token attending to
//! every token of its own sequence (no mask), on the CPU's `ComputePool`.
//!
//! One task per (sequence, head): the head's keys transposed once, then each query's scores
//! accumulate across all keys one column at a time, a softmax (`cpu_kernels::softmax`'s fixed order) and the
//! weighted values summed key by key. Nothing depends on the other sequences of the step, so a
//! sequence's output is the same bits alone or packed.

use super::cpu_kernels::softmax;
use crate::models::pool::ComputePool;
use parking_lot::Mutex;
use std::ops::Range;

/// softmax(q kᵀ · `scale`) v per head over each sequence of `seqs` (ranges of rows that tile
/// q, k and v): q, k, v and the result are [num_tokens, heads * head_dim], row-major.
pub fn bidirectional_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    seqs: &[Range<usize>],
    heads: usize,
    scale: f32,
) -> Vec<f32> {
    let width = q.len() / seqs.last().map_or(1, |r| r.end.max(1));
    let d = width / heads;
    let tasks: Vec<(usize, usize)> = (0..seqs.len())
        .flat_map(|s| (0..heads).map(move |h| (s, h)))
        .collect();
    let results: Vec<Mutex<Vec<f32>>> = tasks.iter().map(|_| Mutex::new(Vec::new())).collect();
    ComputePool::global().run(tasks.len(), &|t| {
        let (s, h) = tasks[t];
        let rows = Head {
            q,
            k,
            v,
            width,
            d,
            col: h * d,
        };
        *results[t].lock() = rows.attend(seqs[s].clone(), scale);
    });
    let mut out = vec![0f32; q.len()];
    for (&(s, h), block) in tasks.iter().zip(results) {
        let block = block.into_inner();
        for (i, row) in seqs[s].clone().zip(block.chunks_exact(d)) {
            out[i * width + h * d..][..d].copy_from_slice(row);
        }
    }
    out
}

/// One head's columns `col..col + d` of the packed q, k, v rows.
struct Head<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    width: usize,
    d: usize,
    col: usize,
}

impl Head<'_> {
    fn row<'b>(&self, m: &'b [f32], i: usize) -> &'b [f32] {
        &m[i * self.width + self.col..][..self.d]
    }

    /// This head's output rows [r.len()][d] for the sequence `r`.
    fn attend(&self, r: Range<usize>, scale: f32) -> Vec<f32> {
        let (n, d) = (r.len(), self.d);
        // kᵀ [d][n]: a query's scores accumulate across the keys, one column of k at a time
        let mut kt = vec![0f32; d * n];
        for (j, key) in r.clone().enumerate() {
            for (c, &x) in self.row(self.k, key).iter().enumerate() {
                kt[c * n + j] = x;
            }
        }
        let mut out = vec![0f32; n * d];
        let mut scores = vec![0f32; n];
        for (i, query) in r.clone().enumerate() {
            scores.fill(0.0);
            for (c, &qc) in self.row(self.q, query).iter().enumerate() {
                for (s, &kc) in scores.iter_mut().zip(&kt[c * n..(c + 1) * n]) {
                    *s += qc * kc;
                }
            }
            scores.iter_mut().for_each(|s| *s *= scale);
            softmax(&mut scores);
            let o = &mut out[i * d..(i + 1) * d];
            for (key, &p) in r.clone().zip(&scores) {
                for (o, &x) in o.iter_mut().zip(self.row(self.v, key)) {
                    *o += p * x;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against a naive f64 softmax attention, and one sequence alone = packed with others.
    #[test]
    fn matches_naive_and_is_batch_invariant() {
        let (heads, d) = (3, 20);
        let width = heads * d;
        let seqs = [0..5, 5..22, 22..23];
        let n = 23;
        let val = |i: usize, salt: usize| ((i * 7919 + salt * 104_729) % 1000) as f32 / 500.0 - 1.0;
        let q: Vec<f32> = (0..n * width).map(|i| val(i, 1)).collect();
        let k: Vec<f32> = (0..n * width).map(|i| val(i, 2)).collect();
        let v: Vec<f32> = (0..n * width).map(|i| val(i, 3)).collect();
        let scale = 0.3;
        let out = bidirectional_attention(&q, &k, &v, &seqs, heads, scale);
        for r in &seqs {
            for i in r.clone() {
                for h in 0..heads {
                    let at = |m: &[f32], j: usize, c: usize| f64::from(m[j * width + h * d + c]);
                    let s: Vec<f64> = r
                        .clone()
                        .map(|j| (0..d).map(|c| at(&q, i, c) * at(&k, j, c)).sum::<f64>() * 0.3)
                        .collect();
                    let max = s.iter().cloned().fold(f64::MIN, f64::max);
                    let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for c in 0..d {
                        let want: f64 = r.clone().zip(&e).map(|(j, p)| p / z * at(&v, j, c)).sum();
                        let got = f64::from(out[i * width + h * d + c]);
                        assert!((got - want).abs() < 1e-5, "{i} {h} {c}: {got} {want}");
                    }
                }
            }
        }
        // the middle sequence alone
        let (a, b) = (5 * width, 22 * width);
        let one = [Range { start: 0, end: 17 }];
        let alone = bidirectional_attention(&q[a..b], &k[a..b], &v[a..b], &one, heads, scale);
        assert_eq!(alone, out[a..b]);
    }
}
