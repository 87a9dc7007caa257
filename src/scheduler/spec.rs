//! Speculative decoding by prompt lookup (vLLM's `ngram` method): a decoding sequence whose
//! last tokens occurred earlier in its own tokens proposes the tokens that followed them
//! (`propose`), and one step computes its last token and the drafts together. The runner
//! samples each of those rows in order as plain decoding would, and keeps drafts while they
//! equal what it sampled; the first sample that differs (or the one after the last draft) is
//! the step's own token. On the CPU a row's logits do not depend on the rows beside it, so the
//! output is bit for bit that of decoding without speculation, greedy or seeded (each kept
//! token takes one draw of the sequence's RNG, as without).
//!
//! ```text
//! tokens  … a b c d | x y a b c        last 3 tokens "a b c" occurred before, followed by "d x y"
//! step    computes c d x y (4 rows)    samples after c: d ✓, after d: x ✓, after x: q ✗
//! result  d x q appended               (the KV of y is overwritten later)
//! ```
//!
//! Adaptive: each sequence proposes up to its own length (`SpecState::next_len`), which grows by
//! one after a step that kept every draft and falls to what was kept plus one otherwise; after
//! `MISSES_TO_PAUSE` steps in a row that kept nothing (or found nothing to propose) it stops
//! proposing, and looking, for `PAUSE_STEPS` steps. No sequence proposes while more than `disable_by_batch_size` run (vLLM's field).
//!
//! Off when it costs throughput, by the measured step cost (`StepCost`): the engine reports
//! each decode step's tokens and time, and a decayed least-squares fit gives a step's time as
//! `base + per_token × tokens`. A step of B decoding sequences takes T and yields B tokens;
//! d more drafts, of which a share `a` is kept, add `d × per_token` and yield `a × d` more. That
//! raises tokens per second only when `a × T > B × per_token`, so a sequence proposes only while
//! its recent acceptance (`SpecState::rate`) exceeds `B × per_token / T`: always on a lone
//! request, rarely once the batch makes the step compute-bound.

/// `--speculative-config` (vLLM's JSON): `{"method": "ngram", "num_speculative_tokens": k,
/// "prompt_lookup_min": n1, "prompt_lookup_max": n2, "disable_by_batch_size": b}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecConfig {
    /// Most drafts per step.
    pub num_tokens: usize,
    pub lookup_min: usize,
    pub lookup_max: usize,
    /// No drafts while more sequences than this run (`None`: no limit).
    pub disable_by_batch_size: Option<usize>,
}

impl SpecConfig {
    /// Reads vLLM's JSON. `method` must be `ngram`; `num_speculative_tokens` is required;
    /// the lookup bounds default as vLLM's do (both 5, or one to the other). Any other field
    /// is refused, naming it: it would change what is proposed.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let v: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(text).map_err(|e| format!("not a JSON object: {e}"))?;
        let count = |key: &str| -> Result<Option<usize>, String> {
            v.get(key)
                .map(|x| {
                    x.as_u64()
                        .filter(|&n| n >= 1)
                        .map(|n| n as usize)
                        .ok_or_else(|| format!("{key} must be an integer >= 1, got {x}"))
                })
                .transpose()
        };
        const KNOWN: [&str; 5] = [
            "method",
            "num_speculative_tokens",
            "prompt_lookup_min",
            "prompt_lookup_max",
            "disable_by_batch_size",
        ];
        if let Some(k) = v.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(format!(
                "{k} is not implemented; weir reads {}",
                KNOWN.join(", ")
            ));
        }
        match v.get("method").and_then(|m| m.as_str()) {
            Some("ngram") => {}
            m => {
                return Err(format!(
                    "method {m:?} is not implemented; weir implements \"ngram\""
                ))
            }
        }
        let num_tokens =
            count("num_speculative_tokens")?.ok_or("num_speculative_tokens is required")?;
        let (min, max) = (count("prompt_lookup_min")?, count("prompt_lookup_max")?);
        let (lookup_min, lookup_max) = match (min, max) {
            (None, None) => (5, 5),
            (Some(a), None) | (None, Some(a)) => (a, a),
            (Some(a), Some(b)) if a <= b => (a, b),
            (Some(a), Some(b)) => {
                return Err(format!("prompt_lookup_min {a} > prompt_lookup_max {b}"))
            }
        };
        Ok(Self {
            num_tokens,
            lookup_min,
            lookup_max,
            disable_by_batch_size: count("disable_by_batch_size")?,
        })
    }
}

/// Steps in a row that kept no draft before a sequence pauses.
const MISSES_TO_PAUSE: u32 = 3;
/// Steps a paused sequence proposes nothing.
const PAUSE_STEPS: u32 = 16;

/// One sequence's speculation: how many drafts it proposes next, its pause, and the share of
/// its drafts kept lately.
#[derive(Debug, Clone, Copy)]
pub struct SpecState {
    /// Drafts to propose next (0: start at the config's `num_tokens`).
    len: usize,
    misses: u32,
    paused: u32,
    rate: f64,
}

impl Default for SpecState {
    fn default() -> Self {
        Self {
            len: 0,
            misses: 0,
            paused: 0,
            // until it has proposed: as likely kept as not
            rate: 0.5,
        }
    }
}

/// Weight of a step's acceptance in `SpecState::rate`.
const RATE_WEIGHT: f64 = 0.25;

impl SpecState {
    /// Share of its drafts kept lately (decayed).
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// How many drafts to propose this step, at most `cfg.num_tokens`; 0 while paused (a call
    /// counts one paused step off).
    pub fn next_len(&mut self, cfg: &SpecConfig) -> usize {
        if self.paused > 0 {
            self.paused -= 1;
            return 0;
        }
        if self.len == 0 {
            self.len = cfg.num_tokens;
        }
        self.len.min(cfg.num_tokens)
    }

    /// A step whose lookup found nothing: counts as a miss toward the pause (so a sequence
    /// without repeats stops scanning its tokens every step).
    pub fn no_match(&mut self) {
        self.miss();
    }

    fn miss(&mut self) {
        self.misses += 1;
        if self.misses >= MISSES_TO_PAUSE {
            self.misses = 0;
            self.paused = PAUSE_STEPS;
        }
    }

    /// After a step that verified `proposed` drafts and kept `kept`.
    pub fn update(&mut self, cfg: &SpecConfig, proposed: usize, kept: usize) {
        if proposed == 0 {
            return;
        }
        let share = kept as f64 / proposed as f64;
        self.rate += RATE_WEIGHT * (share - self.rate);
        self.len = if kept == proposed {
            (proposed + 1).min(cfg.num_tokens)
        } else {
            kept + 1
        };
        match kept {
            0 => self.miss(),
            _ => self.misses = 0,
        }
    }
}

/// Up to `k` tokens that followed the most recent earlier occurrence of the longest suffix of
/// `tokens` (from `lookup_max` down to `lookup_min` tokens) that occurred before.
pub fn propose(tokens: &[u32], cfg: &SpecConfig, k: usize) -> Vec<u32> {
    let len = tokens.len();
    if k == 0 || len < 2 {
        return Vec::new();
    }
    for n in (cfg.lookup_min.max(1)..=cfg.lookup_max.min(len - 1)).rev() {
        let suffix = &tokens[len - n..];
        // starts of earlier occurrences, most recent first (each ends before the suffix does)
        if let Some(i) = (0..len - n).rev().find(|&i| &tokens[i..i + n] == suffix) {
            let from = i + n;
            return tokens[from..(from + k).min(len)].to_vec();
        }
    }
    Vec::new()
}

/// Decayed least-squares fit of a decode step's time against its tokens.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepCost {
    /// Decayed sums of 1, x, y, x², xy (x: tokens, y: seconds).
    n: f64,
    x: f64,
    y: f64,
    xx: f64,
    xy: f64,
}

/// Weight of the past in each new observation of `StepCost`.
const COST_DECAY: f64 = 0.98;

impl StepCost {
    pub fn observe(&mut self, tokens: usize, seconds: f64) {
        let x = tokens as f64;
        for (s, v) in [
            (&mut self.n, 1.0),
            (&mut self.x, x),
            (&mut self.y, seconds),
            (&mut self.xx, x * x),
            (&mut self.xy, x * seconds),
        ] {
            *s = COST_DECAY * *s + v;
        }
    }

    /// (base, per token) seconds; `None` until the steps seen differ enough in size.
    pub fn fit(&self) -> Option<(f64, f64)> {
        let var = self.xx - self.x * self.x / self.n;
        if self.n < 4.0 || var < 0.5 * self.n {
            return None;
        }
        let per_token = ((self.xy - self.x * self.y / self.n) / var).max(0.0);
        let base = ((self.y - per_token * self.x) / self.n).max(0.0);
        Some((base, per_token))
    }

    /// Whether drafts kept at `rate` raise the tokens per second of a step of `seqs` decoding
    /// sequences (true until the fit exists).
    pub fn worth_drafting(&self, rate: f64, seqs: usize) -> bool {
        let Some((base, per_token)) = self.fit() else {
            return true;
        };
        let b = seqs.max(1) as f64;
        rate * (base + per_token * b) > b * per_token
    }
}

/// Counts of the speculation since the last `take`, with vLLM's metric names in mind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecStats {
    /// Steps of a sequence that verified drafts (`spec_decode_num_drafts`).
    pub drafts: u64,
    /// Drafts verified (`spec_decode_num_draft_tokens`).
    pub draft_tokens: u64,
    /// Drafts kept (`spec_decode_num_accepted_tokens`).
    pub accepted_tokens: u64,
    /// [position] drafts kept at each position of their step (`..._per_pos`).
    pub accepted_per_pos: Vec<u64>,
}

impl SpecStats {
    pub fn record(&mut self, proposed: usize, kept: usize) {
        if proposed == 0 {
            return;
        }
        self.drafts += 1;
        self.draft_tokens += proposed as u64;
        self.accepted_tokens += kept as u64;
        if self.accepted_per_pos.len() < kept {
            self.accepted_per_pos.resize(kept, 0);
        }
        for p in &mut self.accepted_per_pos[..kept] {
            *p += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(k: usize) -> SpecConfig {
        SpecConfig {
            num_tokens: k,
            lookup_min: 1,
            lookup_max: 3,
            disable_by_batch_size: None,
        }
    }

    #[test]
    fn proposes_what_followed_the_longest_earlier_suffix() {
        // "a b c" occurred at 0, followed by d x y
        let t = [1, 2, 3, 4, 5, 6, 1, 2, 3];
        assert_eq!(propose(&t, &cfg(3), 3), vec![4, 5, 6]);
        assert_eq!(propose(&t, &cfg(3), 2), vec![4, 5]);
        // the most recent occurrence wins; a draft stops at the end of the tokens
        let t = [7, 1, 8, 1];
        assert_eq!(propose(&t, &cfg(3), 3), vec![8, 1]);
        assert!(propose(&[1, 2, 3], &cfg(3), 3).is_empty());
        assert!(propose(&[1, 1], &cfg(3), 0).is_empty());
        let two = SpecConfig {
            lookup_min: 2,
            ..cfg(3)
        };
        assert!(
            propose(&[5, 1, 6, 1], &two, 3).is_empty(),
            "one-token match"
        );
    }

    #[test]
    fn length_adapts_and_pauses_after_misses() {
        let c = cfg(4);
        let mut s = SpecState::default();
        assert_eq!(s.next_len(&c), 4);
        s.update(&c, 4, 1);
        assert_eq!(s.next_len(&c), 2);
        s.update(&c, 2, 2);
        assert_eq!(s.next_len(&c), 3);
        for _ in 0..3 {
            s.update(&c, 1, 0);
        }
        for _ in 0..PAUSE_STEPS {
            assert_eq!(s.next_len(&c), 0);
        }
        assert_eq!(s.next_len(&c), 1);
    }

    #[test]
    fn reads_vllms_json() {
        let c = SpecConfig::from_json(
            r#"{"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 3}"#,
        )
        .unwrap();
        assert_eq!((c.num_tokens, c.lookup_min, c.lookup_max), (4, 3, 3));
        let c = SpecConfig::from_json(r#"{"method": "ngram", "num_speculative_tokens": 2}"#);
        assert_eq!(c.map(|c| (c.lookup_min, c.lookup_max)), Ok((5, 5)));
        for (bad, says) in [
            (
                r#"{"method": "eagle", "num_speculative_tokens": 2}"#,
                "eagle",
            ),
            (r#"{"method": "ngram"}"#, "required"),
            (
                r#"{"method": "ngram", "num_speculative_tokens": 0}"#,
                ">= 1",
            ),
            (
                r#"{"method": "ngram", "num_speculative_tokens": 2, "model": "x"}"#,
                "model",
            ),
            (
                r#"{"method": "ngram", "num_speculative_tokens": 2, "prompt_lookup_min": 4, "prompt_lookup_max": 2}"#,
                "prompt_lookup_min 4",
            ),
            ("[1]", "JSON object"),
        ] {
            let e = SpecConfig::from_json(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn step_cost_fits_and_turns_drafts_off_when_compute_bound() {
        let mut c = StepCost::default();
        assert!(c.worth_drafting(0.1, 64), "no fit yet");
        for i in 0..50 {
            let x = 1 + (i * 7) % 40;
            c.observe(x, 0.010 + 0.001 * x as f64);
        }
        let (base, per_token) = c.fit().unwrap();
        assert!((base - 0.010).abs() < 1e-6 && (per_token - 0.001).abs() < 1e-8);
        // a lone request: T = 11 ms, threshold 0.09
        assert!(c.worth_drafting(0.5, 1) && !c.worth_drafting(0.05, 1));
        // 100 sequences: T = 110 ms, threshold 0.91
        assert!(!c.worth_drafting(0.5, 100) && c.worth_drafting(0.95, 100));
        let mut flat = StepCost::default();
        for _ in 0..10 {
            flat.observe(8, 0.02);
        }
        assert!(flat.fit().is_none(), "one step size gives no slope");
    }

    #[test]
    fn stats_count_positions() {
        let mut st = SpecStats::default();
        st.record(3, 2);
        st.record(2, 0);
        st.record(0, 0);
        assert_eq!((st.drafts, st.draft_tokens, st.accepted_tokens), (2, 5, 2));
        assert_eq!(st.accepted_per_pos, vec![1, 1]);
    }
}
