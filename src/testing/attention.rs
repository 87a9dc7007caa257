//! Attention backends against a naive reference on random paged layouts: random block tables
//! (blocks scattered over the pool), prompts computed in chunks, then decode steps, with random
//! Q/K/V per token. The reference keeps each sequence's K/V contiguously by position and
//! computes softmax(q·Kᵀ/√d)·V in f64. Shared by the CPU tests and the GPU checks.

use crate::kv::KvCacheConfig;
use crate::models::attention::{Attention, AttentionBackend, AttentionShape};
use crate::models::batch::{ForwardBatch, SeqInput};
use candle_core::{DType, Device, Result, Tensor};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// One random layout to check.
#[derive(Debug, Clone, Copy)]
pub struct AttentionCase {
    pub shape: AttentionShape,
    pub block_size: usize,
    /// Final context length of each sequence (at most 8 sequences).
    pub context_lens: [usize; 3],
    pub seed: u64,
}

/// Per sequence: its K/V rows by position ([pos][kv_dim]) as the reference sees them.
struct RefSeq {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    table: Vec<u32>,
}

fn random_rows(rng: &mut StdRng, rows: usize, width: usize) -> Vec<f32> {
    (0..rows * width)
        .map(|_| rng.random::<f32>() * 2.0 - 1.0)
        .collect()
}

/// softmax(q·Kᵀ/√d)·V of one token over `ctx` positions (the last `shape.sliding_window` of
/// them when the case slides), GQA by index. [q_dim]
fn reference_row(shape: AttentionShape, q: &[f32], seq: &RefSeq, ctx: usize) -> Vec<f32> {
    let d = shape.head_dim;
    let first = shape.first_visible(ctx - 1, true);
    let mut out = vec![0f32; shape.q_dim()];
    for h in 0..shape.num_heads {
        let kv = (h / shape.group()) * d;
        let qh = &q[h * d..(h + 1) * d];
        let scores: Vec<f64> = (first..ctx)
            .map(|j| {
                let k = &seq.k[j][kv..kv + d];
                qh.iter()
                    .zip(k)
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum::<f64>()
                    * shape.softmax_scale as f64
            })
            .map(|s| match shape.logit_softcap {
                Some(c) => c as f64 * (s / c as f64).tanh(),
                None => s,
            })
            .collect();
        let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
        let total: f64 = w.iter().sum();
        for (i, o) in out[h * d..(h + 1) * d].iter_mut().enumerate() {
            let weighted: f64 = (first..ctx)
                .map(|j| w[j - first] * seq.v[j][kv + i] as f64)
                .sum();
            *o = (weighted / total) as f32;
        }
    }
    out
}

/// Runs `case` through `backend` (pool and inputs in `dtype` on `device`) and returns the
/// largest absolute difference from the reference over all steps: two prompt chunks per
/// sequence (the second reading the first through the block table), a mixed step, then three
/// decode-only steps.
pub fn max_error(
    case: &AttentionCase,
    backend: Box<dyn AttentionBackend>,
    dtype: DType,
    device: &Device,
) -> Result<f32> {
    let AttentionCase {
        shape,
        block_size: bs,
        context_lens,
        seed,
    } = *case;
    let mut rng = StdRng::seed_from_u64(seed);
    let blocks_per_seq: Vec<usize> = context_lens.iter().map(|c| c.div_ceil(bs)).collect();
    let num_blocks = blocks_per_seq.iter().sum::<usize>() + 3;
    // a random permutation of the pool, dealt out to the sequences
    let mut pool: Vec<u32> = (0..num_blocks as u32).collect();
    for i in (1..pool.len()).rev() {
        pool.swap(i, rng.random_range(0..=i));
    }
    let mut seqs: Vec<RefSeq> = Vec::new();
    let mut next = 0;
    for &n in &blocks_per_seq {
        seqs.push(RefSeq {
            k: Vec::new(),
            v: Vec::new(),
            table: pool[next..next + n].to_vec(),
        });
        next += n;
    }
    let cfg = KvCacheConfig {
        num_layers: 1,
        num_kv_heads: shape.num_kv_heads,
        head_dim: shape.head_dim,
        block_size: bs,
        num_blocks,
        dtype_size: dtype.size_in_bytes(),
        groups: crate::kv::KvGroups::uniform(1, false),
    };
    let mut attn = Attention::new(backend, cfg)?;
    // the steps: per sequence, tokens to compute in each step (prefill ends 3 before the end)
    let mut steps: Vec<Vec<usize>> = Vec::new();
    let prefill: Vec<usize> = context_lens.iter().map(|c| c - 3).collect();
    steps.push(prefill.iter().map(|p| p / 2).collect());
    steps.push(vec![0; 3]);
    steps[1][0] = prefill[0] - prefill[0] / 2;
    steps[1][1] = prefill[1] - prefill[1] / 2;
    steps.push(vec![1, 0, prefill[2] - prefill[2] / 2]); // a decode beside a prompt chunk
    steps.push(vec![0, 1, 1]);
    steps.push(vec![1, 1, 1]);
    steps.push(vec![1, 1, 1]);
    let tables: Vec<Vec<u32>> = seqs.iter().map(|s| s.table.clone()).collect();
    let mut worst = 0f32;
    for step in &steps {
        let mut inputs = Vec::new();
        let tokens: Vec<Vec<u32>> = step.iter().map(|&n| vec![0; n]).collect();
        for (i, &n) in step.iter().enumerate() {
            if n > 0 {
                inputs.push((
                    i,
                    SeqInput {
                        token_ids: &tokens[i],
                        start: seqs[i].k.len(),
                        block_table: &tables[i],
                        sample: true,
                    },
                ));
            }
        }
        let batch = ForwardBatch::build(&inputs.iter().map(|(_, s)| *s).collect::<Vec<_>>(), bs);
        let t = batch.num_tokens();
        let (q, k, v) = (
            random_rows(&mut rng, t, shape.q_dim()),
            random_rows(&mut rng, t, shape.kv_dim()),
            random_rows(&mut rng, t, shape.kv_dim()),
        );
        let to_t = |x: &[f32], w: usize| -> Result<Tensor> {
            Tensor::from_slice(x, (t, w), device)?.to_dtype(dtype)
        };
        let meta = attn.prepare(&batch)?;
        attn.write_kv(
            0,
            &to_t(&k, shape.kv_dim())?,
            &to_t(&v, shape.kv_dim())?,
            &batch,
            &meta,
        )?;
        let windowed = shape.sliding_window.is_some();
        let y = attn.attend(0, &to_t(&q, shape.q_dim())?, &batch, &meta, windowed)?;
        let y: Vec<f32> = y.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        // the reference sees the inputs as the backend stored them (rounded to dtype)
        let round = |x: &[f32], w: usize| -> Result<Vec<f32>> {
            to_t(x, w)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1()
        };
        let (q, k, v) = (
            round(&q, shape.q_dim())?,
            round(&k, shape.kv_dim())?,
            round(&v, shape.kv_dim())?,
        );
        let mut row = 0;
        for (i, s) in &inputs {
            for _ in 0..s.token_ids.len() {
                let kd = shape.kv_dim();
                seqs[*i].k.push(k[row * kd..(row + 1) * kd].to_vec());
                seqs[*i].v.push(v[row * kd..(row + 1) * kd].to_vec());
                let ctx = seqs[*i].k.len();
                let qd = shape.q_dim();
                let expect = reference_row(shape, &q[row * qd..(row + 1) * qd], &seqs[*i], ctx);
                for (a, b) in y[row * qd..(row + 1) * qd].iter().zip(&expect) {
                    worst = worst.max((a - b).abs());
                }
                row += 1;
            }
        }
    }
    Ok(worst)
}

/// The layouts every backend is checked on: GQA ratios 1, 2, 4 and 8, head dims 64 and 128,
/// block sizes 1 to 32, contexts from 5 to 1,100 tokens (several decode partitions of 512), and
/// a softmax scale other than 1/sqrt(head_dim), and sliding windows (not a multiple of the block
/// size; one longer than some contexts and shorter than others).
pub fn attention_cases() -> Vec<AttentionCase> {
    let shape = |num_heads, num_kv_heads, head_dim| AttentionShape {
        num_heads,
        num_kv_heads,
        head_dim,
        softmax_scale: 1.0 / (head_dim as f32).sqrt(),
        sliding_window: None,
        logit_softcap: None,
    };
    let windowed = |window, s: AttentionShape| AttentionShape {
        sliding_window: Some(window),
        ..s
    };
    vec![
        AttentionCase {
            shape: shape(4, 4, 64),
            block_size: 16,
            context_lens: [5, 17, 40],
            seed: 1,
        },
        AttentionCase {
            shape: shape(8, 4, 64),
            block_size: 4,
            context_lens: [33, 7, 64],
            seed: 2,
        },
        AttentionCase {
            shape: shape(8, 2, 128),
            block_size: 32,
            context_lens: [100, 31, 9],
            seed: 3,
        },
        AttentionCase {
            // a model's own softmax scale (YaRN's attention factor squared over sqrt(d))
            shape: AttentionShape {
                softmax_scale: 0.2,
                ..shape(16, 2, 64)
            },
            block_size: 1,
            context_lens: [12, 6, 20],
            seed: 4,
        },
        AttentionCase {
            shape: shape(8, 2, 128),
            block_size: 16,
            context_lens: [1100, 513, 70],
            seed: 5,
        },
        AttentionCase {
            shape: windowed(7, shape(8, 4, 64)),
            block_size: 4,
            context_lens: [33, 7, 64],
            seed: 6,
        },
        AttentionCase {
            // Gemma 2: a window and soft-capped scores (a cap the scores reach)
            shape: AttentionShape {
                logit_softcap: Some(0.5),
                ..windowed(9, shape(8, 4, 64))
            },
            block_size: 16,
            context_lens: [40, 12, 70],
            seed: 8,
        },
        AttentionCase {
            shape: windowed(512, shape(4, 1, 256)),
            block_size: 16,
            context_lens: [1100, 513, 70],
            seed: 7,
        },
    ]
}
