//! `Sampler`: picks each sequence's next token from its logits row, where the logits are.
//! - On a GPU (feature `cuda`) every row is sampled by `kernels/sampling.cu` (greedy,
//!   temperature, top-k, top-p, a Gumbel-max draw seeded from the request's own RNG); only token
//!   ids cross to the host.
//! - On the CPU greedy rows take an argmax; other rows apply temperature, then top-k, then
//!   top-p, then a draw from the request's own RNG.
//!
//! The RNG is seeded from `seed` when given, so a seeded request is reproducible whatever it is
//! batched with (on one kind of device: the GPU draw is a different, equally exact algorithm).

use crate::engine::request::{RequestId, SamplingParams};
use candle_core::{Tensor, D};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::HashMap;

#[derive(Default)]
pub struct Sampler {
    rngs: HashMap<RequestId, StdRng>,
}

pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best_v = v;
            best = i;
        }
    }
    best as u32
}

impl Sampler {
    /// One token per row of `logits` ([rows.len(), vocab], f32, on any device).
    pub fn sample_rows(
        &mut self,
        logits: &Tensor,
        rows: &[(RequestId, &SamplingParams)],
    ) -> candle_core::Result<Vec<u32>> {
        #[cfg(feature = "cuda")]
        if logits.device().is_cuda() {
            let params: Vec<_> = rows
                .iter()
                .map(|(id, p)| super::cuda_sampler::RowParams {
                    temperature: if p.is_greedy() { 0.0 } else { p.temperature },
                    top_k: p.top_k.map_or(0, |k| k.min(u32::MAX as usize) as u32),
                    top_p: p.top_p,
                    seed: if p.is_greedy() {
                        0
                    } else {
                        self.rng(*id, p).random()
                    },
                })
                .collect();
            return super::cuda_sampler::sample(logits, &params);
        }
        let greedy = if rows.iter().any(|(_, p)| p.is_greedy()) {
            logits.argmax(D::Minus1)?.to_vec1::<u32>()?
        } else {
            Vec::new()
        };
        rows.iter()
            .enumerate()
            .map(|(i, (id, params))| {
                if params.is_greedy() {
                    return Ok(greedy[i]);
                }
                let row = logits.get(i)?.to_vec1::<f32>()?;
                Ok(self.sample(*id, params, &row))
            })
            .collect()
    }

    pub fn sample(&mut self, id: RequestId, params: &SamplingParams, logits: &[f32]) -> u32 {
        if params.is_greedy() {
            return argmax(logits);
        }
        let u = self.rng(id, params).random::<f32>();
        sample_filtered(logits, params, u)
    }

    /// The request's RNG, seeded from `seed` on first use.
    fn rng(&mut self, id: RequestId, params: &SamplingParams) -> &mut StdRng {
        self.rngs.entry(id).or_insert_with(|| match params.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        })
    }

    /// Forgets a finished request's RNG.
    pub fn remove(&mut self, id: RequestId) {
        self.rngs.remove(&id);
    }
}

/// Temperature → top-k → top-p, then picks the token where the cumulative probability passes
/// `u` (uniform in [0, 1)).
fn sample_filtered(logits: &[f32], params: &SamplingParams, u: f32) -> u32 {
    let inv_t = 1.0 / params.temperature;
    let mut cand: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, l * inv_t))
        .collect();
    let by_logit_desc = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1);
    if let Some(k) = params.top_k.filter(|&k| k > 0 && k < cand.len()) {
        cand.select_nth_unstable_by(k - 1, by_logit_desc);
        cand.truncate(k);
    }
    cand.sort_unstable_by(by_logit_desc);
    let max = cand[0].1;
    let mut total = 0.0f32;
    for c in cand.iter_mut() {
        c.1 = (c.1 - max).exp();
        total += c.1;
    }
    if params.top_p < 1.0 {
        let mut cum = 0.0;
        let mut keep = cand.len();
        for (i, c) in cand.iter().enumerate() {
            cum += c.1 / total;
            if cum >= params.top_p {
                keep = i + 1;
                break;
            }
        }
        cand.truncate(keep);
        total = cand.iter().map(|c| c.1).sum();
    }
    let target = u * total;
    let mut cum = 0.0;
    for c in &cand {
        cum += c.1;
        if cum > target {
            return c.0;
        }
    }
    cand.last().expect("at least one candidate").0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_k: Option<usize>, top_p: f32, seed: u64) -> SamplingParams {
        SamplingParams {
            temperature,
            top_p,
            top_k,
            seed: Some(seed),
        }
    }

    const LOGITS: [f32; 4] = [1.0, 3.0, 2.0, 0.5];

    #[test]
    fn greedy_is_argmax() {
        let mut s = Sampler::default();
        assert_eq!(
            s.sample(RequestId(0), &SamplingParams::greedy(), &LOGITS),
            1
        );
        assert_eq!(
            s.sample(RequestId(0), &params(0.7, Some(1), 1.0, 0), &LOGITS),
            1
        );
    }

    #[test]
    fn cumulative_pick_is_exact() {
        // softmax([1,3,2,.5]) sorted: 3 → .6308, 2 → .2320, 1 → .0854, .5 → .0518
        let p = params(1.0, None, 1.0, 0);
        assert_eq!(sample_filtered(&LOGITS, &p, 0.0), 1);
        assert_eq!(sample_filtered(&LOGITS, &p, 0.62), 1);
        assert_eq!(sample_filtered(&LOGITS, &p, 0.64), 2);
        assert_eq!(sample_filtered(&LOGITS, &p, 0.87), 0);
        assert_eq!(sample_filtered(&LOGITS, &p, 0.99), 3);
    }

    #[test]
    fn top_k_and_top_p_cut_the_tail() {
        let k2 = params(1.0, Some(2), 1.0, 0);
        assert_eq!(sample_filtered(&LOGITS, &k2, 0.999), 2);
        // top_p 0.8: keeps {1: .6308, 2: .2320}
        let p8 = params(1.0, None, 0.8, 0);
        assert_eq!(sample_filtered(&LOGITS, &p8, 0.999), 2);
        let p5 = params(1.0, None, 0.5, 0);
        assert_eq!(sample_filtered(&LOGITS, &p5, 0.999), 1);
    }

    #[test]
    fn seeded_draws_are_reproducible() {
        let p = params(1.5, None, 1.0, 1234);
        let draw = |id| {
            let mut s = Sampler::default();
            (0..32)
                .map(|_| s.sample(RequestId(id), &p, &LOGITS))
                .collect::<Vec<_>>()
        };
        let a = draw(1);
        assert_eq!(
            a,
            draw(2),
            "same seed, same tokens, whatever the request id"
        );
        assert!(
            a.iter().any(|&t| t != a[0]),
            "temperature 1.5 varies: {a:?}"
        );
    }
}
