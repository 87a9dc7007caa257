//! `Sampler`: picks each sequence's next token from its logits row, where the logits are.
//! - On a GPU (feature `cuda`) every row is sampled by `kernels/sampling.cu` (greedy,
//!   temperature, top-k, top-p, a Gumbel-max draw seeded from the request's own RNG); only token
//!   ids cross to the host. Rows that need more (penalties, `logit_bias`, `min_p`, logprobs:
//!   `SamplingParams::needs_host`) are copied to the host and sampled there, always, so a
//!   request's result never depends on its batch.
//! - On the CPU greedy rows take an argmax; other rows apply temperature, then `min_p`, top-k,
//!   top-p, then a draw from the request's own RNG. Penalties and `logit_bias` come first
//!   (`apply_processors`); logprobs are of the raw row (`token_logprobs`).
//!
//! Each row draws from its sequence's own RNG (`SamplingState`, seeded from `seed` when given),
//! so a seeded request is reproducible whatever it is batched with (on one kind of device: the
//! GPU draw is a different, equally exact algorithm). The sampler keeps no per-request state.

use crate::step::{Sampled, SamplingParams, SamplingState, TokenLogprobs};
use candle_core::{Tensor, D};
use rand::Rng;

#[derive(Default)]
pub struct Sampler {
    /// On a GPU: the kernel rows of the coming step (indices among its sampling rows) and
    /// their parameters, uploaded before the forward pass (`prepare_kernel_rows`), so that
    /// sampling launches right after it instead of first waiting for it to copy them.
    #[cfg(feature = "cuda")]
    prepared: Option<(Vec<usize>, Tensor)>,
}

/// One row of logits to sample, and what it is sampled for.
pub struct Row<'a> {
    pub params: &'a SamplingParams,
    /// The sequence's RNG and grammar (advanced past the sampled token).
    pub state: &'a mut SamplingState,
    /// Prompt then output tokens (when the penalties need them).
    pub history: &'a [u32],
    pub num_prompt_tokens: usize,
    /// The grammar's allowed tokens (constrained rows).
    pub mask: Option<llguidance::toktrie::SimpleVob>,
}

impl Row<'_> {
    /// Sampled on the host (from a GPU, the row is copied there).
    fn on_host(&self) -> bool {
        self.params.needs_host() || self.state.constraint.is_some()
    }
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
        rows: &mut [Row],
    ) -> candle_core::Result<Vec<Sampled>> {
        #[cfg(feature = "cuda")]
        if logits.device().is_cuda() {
            return self.sample_rows_cuda(logits, rows);
        }
        let plain_greedy = |r: &Row| r.params.is_greedy() && !r.on_host();
        let greedy = if rows.iter().any(plain_greedy) {
            logits.argmax(D::Minus1)?.to_vec1::<u32>()?
        } else {
            Vec::new()
        };
        rows.iter_mut()
            .enumerate()
            .map(|(i, row)| {
                if plain_greedy(row) {
                    return Ok(Sampled::plain(greedy[i]));
                }
                let logits = logits.get(i)?.to_vec1::<f32>()?;
                Ok(sample_host(row, logits))
            })
            .collect()
    }

    /// On a GPU, before the forward pass: the parameters of the coming step's kernel rows
    /// (its sampling rows in order), uploaded now while the stream is idle. Seeds are drawn
    /// here, one per row and step as at sampling time.
    #[cfg(feature = "cuda")]
    pub fn prepare_kernel_rows<'a>(
        &mut self,
        rows: impl Iterator<Item = (&'a SamplingParams, &'a mut SamplingState)>,
        device: &candle_core::Device,
    ) -> candle_core::Result<()> {
        let mut idx = Vec::new();
        let mut params = Vec::new();
        for (i, (p, state)) in rows.enumerate() {
            if !p.needs_host() && state.constraint.is_none() {
                idx.push(i);
                params.push(kernel_params(p, state));
            }
        }
        self.prepared = if idx.is_empty() {
            None
        } else {
            Some((idx, super::cuda_sampler::upload(&params, device)?))
        };
        Ok(())
    }

    /// Drops the kernel rows prepared for a step (`prepare_kernel_rows`) that did not sample.
    #[cfg(feature = "cuda")]
    pub fn forget_prepared(&mut self) {
        self.prepared = None;
    }

    /// The kernel samples the rows it can; the others are copied to the host.
    #[cfg(feature = "cuda")]
    fn sample_rows_cuda(
        &mut self,
        logits: &Tensor,
        rows: &mut [Row],
    ) -> candle_core::Result<Vec<Sampled>> {
        let (host, kernel): (Vec<usize>, Vec<usize>) =
            (0..rows.len()).partition(|&i| rows[i].on_host());
        let n = rows.len();
        let mut out = vec![Sampled::plain(0); n];
        let pick = |idx: &[usize]| -> candle_core::Result<Tensor> {
            if idx.len() == n {
                return Ok(logits.clone());
            }
            let ids: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
            logits.index_select(&Tensor::new(ids.as_slice(), logits.device())?, 0)
        };
        if !kernel.is_empty() {
            let params = match self.prepared.take() {
                Some((idx, params)) if idx == kernel => params,
                _ => {
                    let params: Vec<_> = kernel
                        .iter()
                        .map(|&i| kernel_params(rows[i].params, rows[i].state))
                        .collect();
                    super::cuda_sampler::upload(&params, logits.device())?
                }
            };
            let tokens = super::cuda_sampler::sample(&pick(&kernel)?, &params)?;
            for (&i, t) in kernel.iter().zip(tokens) {
                out[i] = Sampled::plain(t);
            }
        }
        if !host.is_empty() {
            let on_host = pick(&host)?.to_device(&candle_core::Device::Cpu)?;
            for (j, &i) in host.iter().enumerate() {
                let row = on_host.get(j)?.to_vec1::<f32>()?;
                out[i] = sample_host(&mut rows[i], row);
            }
        }
        Ok(out)
    }
}

/// One row's kernel parameters; a sampled row draws its kernel seed from its own RNG (one draw
/// per step, as on the host).
#[cfg(feature = "cuda")]
fn kernel_params(p: &SamplingParams, state: &mut SamplingState) -> super::cuda_sampler::RowParams {
    super::cuda_sampler::RowParams {
        temperature: if p.is_greedy() { 0.0 } else { p.temperature },
        top_k: p.top_k.map_or(0, |k| k.min(u32::MAX as usize) as u32),
        top_p: p.top_p,
        seed: if p.is_greedy() {
            0
        } else {
            state.rng(p.seed).random()
        },
    }
}

/// Samples one row on the host: the grammar's mask, `apply_processors`, then argmax or the
/// filtered draw; logprobs of the raw row. Advances the row's grammar past the token.
fn sample_host(row: &mut Row, mut logits: Vec<f32>) -> Sampled {
    let p = row.params;
    let raw = p.logprobs.map(|k| (logits.clone(), k));
    if let Some(mask) = &row.mask {
        apply_mask(&mut logits, mask);
    }
    apply_processors(&mut logits, p, row.history, row.num_prompt_tokens);
    let token = sample(p, row.state, &logits);
    if let Some(c) = row.state.constraint.as_mut() {
        c.consume(token);
    }
    Sampled {
        token,
        logprobs: raw.map(|(raw, k)| token_logprobs(&raw, token, k)),
    }
}

/// A token from an already processed row.
pub fn sample(params: &SamplingParams, state: &mut SamplingState, logits: &[f32]) -> u32 {
    if params.is_greedy() {
        return argmax(logits);
    }
    let u = state.rng(params.seed).random::<f32>();
    sample_filtered(logits, params, u)
}

/// Tokens the grammar does not allow get -inf (tokens past the mask too).
pub fn apply_mask(logits: &mut [f32], mask: &llguidance::toktrie::SimpleVob) {
    for (i, l) in logits.iter_mut().enumerate() {
        if i >= mask.len() || !mask.is_allowed(i as u32) {
            *l = f32::NEG_INFINITY;
        }
    }
}

/// `logit_bias`, then the repetition penalty over every token of `history`, then the frequency
/// and presence penalties over its output tokens (those after `num_prompt_tokens`), in place.
pub fn apply_processors(
    logits: &mut [f32],
    p: &SamplingParams,
    history: &[u32],
    num_prompt_tokens: usize,
) {
    for &(t, bias) in p.logit_bias.iter() {
        if let Some(l) = logits.get_mut(t as usize) {
            *l += bias;
        }
    }
    if p.repetition_penalty != 1.0 {
        let mut seen = history.to_vec();
        seen.sort_unstable();
        seen.dedup();
        for t in seen {
            if let Some(l) = logits.get_mut(t as usize) {
                *l = if *l > 0.0 {
                    *l / p.repetition_penalty
                } else {
                    *l * p.repetition_penalty
                };
            }
        }
    }
    if p.frequency_penalty != 0.0 || p.presence_penalty != 0.0 {
        let mut out = history[num_prompt_tokens.min(history.len())..].to_vec();
        out.sort_unstable();
        for run in out.chunk_by(|a, b| a == b) {
            if let Some(l) = logits.get_mut(run[0] as usize) {
                *l -= p.frequency_penalty * run.len() as f32 + p.presence_penalty;
            }
        }
    }
}

/// The logprob of `token` and the `k` most likely tokens (ties: lower id first) under
/// log-softmax of `raw` (the log-sum-exp summed in f64).
pub fn token_logprobs(raw: &[f32], token: u32, k: usize) -> TokenLogprobs {
    let max = raw.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = raw.iter().map(|&l| ((l - max) as f64).exp()).sum();
    let lse = max as f64 + sum.ln();
    let lp = |l: f32| (l as f64 - lse) as f32;
    let mut top: Vec<(u32, f32)> = raw
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, l))
        .collect();
    let order = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    let k = k.min(top.len());
    if k > 0 && k < top.len() {
        top.select_nth_unstable_by(k - 1, order);
    }
    top.truncate(k);
    top.sort_unstable_by(order);
    let chosen = raw[token as usize];
    TokenLogprobs {
        token,
        rank: 1 + raw.iter().filter(|&&l| l > chosen).count() as u32,
        logprob: lp(chosen),
        top: top.into_iter().map(|(t, l)| (t, lp(l))).collect(),
    }
}

/// Temperature → min-p → top-k → top-p, then picks the token where the cumulative probability
/// passes `u` (uniform in [0, 1)).
fn sample_filtered(logits: &[f32], params: &SamplingParams, u: f32) -> u32 {
    let inv_t = 1.0 / params.temperature;
    let mut cand: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, l * inv_t))
        .collect();
    if params.min_p > 0.0 {
        // p >= min_p * p_max  <=>  l >= l_max + ln(min_p)
        let max = cand.iter().map(|c| c.1).fold(f32::NEG_INFINITY, f32::max);
        let floor = max + params.min_p.ln();
        cand.retain(|c| c.1 >= floor);
    }
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
            ..SamplingParams::default()
        }
    }

    const LOGITS: [f32; 4] = [1.0, 3.0, 2.0, 0.5];

    #[test]
    fn greedy_is_argmax() {
        let mut s = SamplingState::default();
        assert_eq!(sample(&SamplingParams::greedy(), &mut s, &LOGITS), 1);
        assert_eq!(sample(&params(0.7, Some(1), 1.0, 0), &mut s, &LOGITS), 1);
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
        let draw = || {
            let mut s = SamplingState::default();
            (0..32)
                .map(|_| sample(&p, &mut s, &LOGITS))
                .collect::<Vec<_>>()
        };
        let a = draw();
        assert_eq!(a, draw(), "same seed, same tokens");
        assert!(
            a.iter().any(|&t| t != a[0]),
            "temperature 1.5 varies: {a:?}"
        );
    }

    #[test]
    fn processors_change_logits_as_defined() {
        let p = SamplingParams {
            logit_bias: vec![(0, 0.5), (3, -1.0)].into(),
            repetition_penalty: 2.0,
            frequency_penalty: 0.25,
            presence_penalty: 0.125,
            ..SamplingParams::default()
        };
        // prompt [1], output [2, 2, 3]
        let history = [1, 2, 2, 3];
        let mut l = vec![1.0, 3.0, -2.0, 0.5, 4.0];
        apply_processors(&mut l, &p, &history, 1);
        // 0: bias only; 1: prompt token, positive → /2; 2: negative → ×2, then 2 × 0.25 + 0.125;
        // 3: bias → -0.5, negative → ×2, then 0.25 + 0.125; 4: untouched
        assert_eq!(l, vec![1.5, 1.5, -4.0 - 0.625, -1.0 - 0.375, 4.0]);
    }

    #[test]
    fn min_p_drops_unlikely_tokens() {
        // softmax([1,3,2,.5]): p_max .6308; min_p .3 keeps p >= .189: tokens 1 and 2
        let mut p = params(1.0, None, 1.0, 0);
        p.min_p = 0.3;
        assert_eq!(sample_filtered(&LOGITS, &p, 0.999), 2);
        p.min_p = 1.0;
        assert_eq!(sample_filtered(&LOGITS, &p, 0.999), 1, "min_p 1 is greedy");
    }

    #[test]
    fn logprobs_are_log_softmax_with_ordered_alternatives() {
        let lp = token_logprobs(&LOGITS, 2, 3);
        let lse = LOGITS.iter().map(|&l| (l as f64).exp()).sum::<f64>().ln();
        assert!((lp.logprob as f64 - (2.0 - lse)).abs() < 1e-6);
        let ids: Vec<u32> = lp.top.iter().map(|t| t.0).collect();
        assert_eq!(ids, vec![1, 2, 0]);
        assert!((lp.top[0].1 as f64 - (3.0 - lse)).abs() < 1e-6);
        assert!(token_logprobs(&LOGITS, 2, 0).top.is_empty());
    }
}
