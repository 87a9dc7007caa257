//! `Scheduler`: continuous batching over the paged KV cache.
//!
//! One rule for prompts and decodes (as vLLM v1): every step each running sequence is scheduled
//! for the tokens it has not computed yet, capped by the token budget `max_num_batched_tokens`.
//! Running sequences go first (decodes cost one token each), then waiting sequences are admitted
//! FCFS while blocks, `max_num_seqs` and the budget allow; a prompt longer than the remaining
//! budget is computed in chunks over several steps.
//!
//! When a running sequence needs a block and none is free, the newest running sequence is
//! preempted: its blocks are freed, it keeps its tokens (prompt and output) and goes back to the
//! head of the waiting queue to recompute them. Nothing it generated is lost or sent twice.
//!
//! Invariants: a sequence is in exactly one of `waiting`/`running`; a waiting sequence owns no
//! blocks; every block a running sequence owns is allocated in `allocator`; when all sequences
//! have ended, every block is free.

pub mod prefix;
pub mod sequence;
pub mod spec;

use crate::kv::{BlockAllocator, BlockTable, KvGroups};
use crate::step::{
    AdmissionError, FinishReason, IdMap, ModelRunnerOutput, Request, RequestId, SamplingState,
    ScheduledSeq, SchedulerOutput, SchedulingPolicy, Task, TokenDelta,
};
use sequence::{Sequence, SequenceStatus};
use std::collections::VecDeque;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    pub max_num_seqs: usize,
    pub max_num_batched_tokens: usize,
    pub block_size: usize,
    pub num_blocks: usize,
    pub max_model_len: usize,
    /// Reuse cached full blocks of earlier sequences with the same token prefix.
    pub enable_prefix_caching: bool,
    pub policy: SchedulingPolicy,
    /// The window of the sliding KV groups (`kv_groups`): blocks that fall out of it are
    /// released from their tables. `None` when no group slides.
    pub sliding_window: Option<usize>,
    /// How the model's layers share blocks: a sequence holds a block table per group.
    pub kv_groups: KvGroups,
    /// Each prompt is computed in one step, never in chunks (a bidirectional encoder, whose
    /// tokens all see each other): one that does not fit the step's budget waits for the next.
    pub whole_prompts: bool,
    /// At most this many LoRA adapters among the running sequences (`--max-loras`): a waiting
    /// sequence of another adapter is passed over until one of them is done. None: no limit.
    pub max_loras: Option<usize>,
    /// `--speculative-config`: decoding sequences propose drafts by prompt lookup (`spec`).
    pub speculative: Option<spec::SpecConfig>,
}

impl SchedulerConfig {
    /// The most blocks one sequence of `tokens` tokens holds, over all its KV groups
    /// (`KvGroups::blocks_for` with this pool's window and step budget).
    pub fn blocks_for(&self, tokens: usize) -> usize {
        self.kv_groups.blocks_for(
            tokens,
            self.block_size,
            self.sliding_window,
            self.max_num_batched_tokens,
        )
    }
}

#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    allocator: BlockAllocator,
    seqs: IdMap<Sequence>,
    waiting: VecDeque<RequestId>,
    /// In admission order: the last one is the newest (the first to be preempted).
    running: Vec<RequestId>,
    num_preemptions: u64,
    next_arrival_seq: u64,
    /// See `capacity_tokens`.
    capacity_tokens: usize,
    /// Speculation since the last `take_spec_stats`.
    spec_stats: spec::SpecStats,
    /// Decode steps' time against their tokens (`observe_step`), for speculation's cost.
    step_cost: spec::StepCost,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Self {
        let capacity_tokens = config.kv_groups.max_tokens(
            config.num_blocks,
            config.block_size,
            config.sliding_window,
            config.max_num_batched_tokens,
        );
        Self {
            allocator: BlockAllocator::new(config.num_blocks),
            capacity_tokens,
            spec_stats: spec::SpecStats::default(),
            step_cost: spec::StepCost::default(),
            config,
            seqs: IdMap::default(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            num_preemptions: 0,
            next_arrival_seq: 0,
        }
    }

    /// The LoRA adapters of the running and of the waiting sequences, each sorted.
    pub fn adapters(&self) -> (Vec<u32>, Vec<u32>) {
        let running = self.adapters_of(&self.running).into_iter().collect();
        (
            running,
            self.adapters_of(&self.waiting).into_iter().collect(),
        )
    }

    /// Logs what the prefix cache stores and evicts, for `take_kv_events`.
    pub fn enable_kv_events(&mut self) {
        self.allocator.enable_events();
    }

    /// The prefix cache's events since the last call, oldest first.
    pub fn take_kv_events(&mut self) -> Vec<crate::kv::KvEvent> {
        self.allocator.take_events()
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// The longest sequence the whole pool can hold (`usize::MAX` when every layer slides); a
    /// request larger than this could never run.
    pub fn capacity_tokens(&self) -> usize {
        self.capacity_tokens
    }

    /// Queues a request, or rejects one that could never fit.
    pub fn add(&mut self, req: Request) -> Result<(), AdmissionError> {
        if self.seqs.contains_key(&req.id) {
            return Err(AdmissionError::Duplicate(req.id));
        }
        if req.prompt_token_ids.is_empty() {
            return Err(AdmissionError::EmptyPrompt);
        }
        let prompt = req.prompt_token_ids.len();
        let needed = prompt + req.stop.max_tokens;
        let mut limit = self.config.max_model_len.min(self.capacity_tokens());
        if self.config.whole_prompts {
            // a prompt is computed in one step
            limit = limit.min(self.config.max_num_batched_tokens);
        }
        if needed > limit {
            return Err(AdmissionError::TooLong {
                needed,
                prompt,
                max_tokens: req.stop.max_tokens,
                limit,
            });
        }
        let id = req.id;
        let mut seq = Sequence::new(req);
        seq.block_tables = vec![BlockTable::default(); self.config.kv_groups.num_groups()];
        seq.arrival_seq = self.next_arrival_seq;
        self.next_arrival_seq += 1;
        let background = seq.background;
        self.seqs.insert(id, seq);
        match self.config.policy {
            // an interactive request goes before the batch lines waiting
            SchedulingPolicy::Fcfs if !background => {
                let pos = self.first_background_waiting();
                self.waiting.insert(pos, id);
            }
            SchedulingPolicy::Fcfs => self.waiting.push_back(id),
            SchedulingPolicy::Priority => self.insert_by_priority(id),
        }
        Ok(())
    }

    /// Inserts `id` into the waiting queue after every sequence that goes before it.
    fn insert_by_priority(&mut self, id: RequestId) {
        let key = self.seqs[&id].priority_key();
        let pos = self
            .waiting
            .iter()
            .position(|w| self.seqs[w].priority_key() > key)
            .unwrap_or(self.waiting.len());
        self.waiting.insert(pos, id);
    }

    /// Where the batch lines start in the waiting queue (its length when none waits).
    fn first_background_waiting(&self) -> usize {
        self.waiting
            .iter()
            .position(|w| self.seqs[w].background)
            .unwrap_or(self.waiting.len())
    }

    /// The running sequence to preempt, among those not yet scheduled this step (`from..`):
    /// the newest batch line first, then the newest (FCFS) or the lowest in priority.
    fn victim(&self, from: usize) -> RequestId {
        let candidates = &self.running[from..];
        match self.config.policy {
            SchedulingPolicy::Fcfs => candidates
                .iter()
                .rev()
                .find(|id| self.seqs[id].background)
                .or(candidates.last())
                .copied(),
            SchedulingPolicy::Priority => candidates
                .iter()
                .max_by_key(|id| self.seqs[id].priority_key())
                .copied(),
        }
        .expect("the sequence itself is running")
    }

    pub fn has_work(&self) -> bool {
        !self.seqs.is_empty()
    }

    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    pub fn num_blocks_total(&self) -> usize {
        self.allocator.num_total()
    }

    pub fn num_blocks_used(&self) -> usize {
        self.allocator.num_used()
    }

    /// Blocks registered in the prefix cache.
    pub fn num_cached_blocks(&self) -> usize {
        self.allocator.num_cached()
    }

    pub fn num_preemptions(&self) -> u64 {
        self.num_preemptions
    }

    /// A step without prompt tokens computed `tokens` tokens in `seconds` (its forward pass and
    /// sampling): what speculation weighs its extra rows against.
    pub fn observe_step(&mut self, tokens: usize, seconds: f64) {
        self.step_cost.observe(tokens, seconds);
    }

    /// The speculation's counts since the last call.
    pub fn take_spec_stats(&mut self) -> spec::SpecStats {
        std::mem::take(&mut self.spec_stats)
    }

    /// Decides the next step: which sequences run and how many tokens each computes.
    pub fn schedule(&mut self) -> SchedulerOutput {
        let mut out = SchedulerOutput::default();
        let mut budget = self.config.max_num_batched_tokens;
        self.schedule_running(&mut out, &mut budget);
        // NOTE: no admissions in a step that preempted: blocks are short, and the preempted
        // sequences are at the head of the queue anyway.
        if out.preempted.is_empty() {
            self.schedule_waiting(&mut out, &mut budget);
        }
        out.num_batched_tokens = self.config.max_num_batched_tokens - budget;
        out
    }

    fn schedule_running(&mut self, out: &mut SchedulerOutput, budget: &mut usize) {
        let bs = self.config.block_size;
        let mut i = 0;
        while i < self.running.len() && *budget > 0 {
            let id = self.running[i];
            self.release_out_of_window(id);
            let mut drafts = self.drafts(id, *budget);
            let seq = &self.seqs[&id];
            let mut n = (seq.num_uncomputed_tokens() + drafts.len()).min(*budget);
            let mut need = seq.num_missing_blocks(seq.num_computed_tokens + n, bs);
            if !drafts.is_empty() && !self.allocator.can_allocate(need) {
                // drafts never take blocks from other sequences
                n -= drafts.len();
                drafts.clear();
                need = seq.num_missing_blocks(seq.num_computed_tokens + n, bs);
            }
            let mut preempted_self = false;
            while !self.allocator.can_allocate(need) {
                let victim = self.victim(i);
                self.preempt(victim);
                out.preempted.push(victim);
                if victim == id {
                    preempted_self = true;
                    break;
                }
            }
            if preempted_self {
                break;
            }
            self.grant(id, n, need, drafts, out);
            *budget -= n;
            i += 1;
        }
    }

    fn schedule_waiting(&mut self, out: &mut SchedulerOutput, budget: &mut usize) {
        let bs = self.config.block_size;
        // choices of `n` wait (in place) for their leader's prompt; others go in queue order
        let mut at = 0;
        while *budget > 0 && self.running.len() < self.config.max_num_seqs {
            let Some(&id) = self.waiting.get(at) else {
                break;
            };
            let seq = &self.seqs[&id];
            if !self.leader_ready(seq) || !self.adapter_fits(seq) {
                at += 1;
                continue;
            }
            let hits = self.prefix_hits(seq);
            let hit_tokens = hits.num_blocks() * bs;
            let n = (seq.num_tokens() - hit_tokens).min(*budget);
            if self.config.whole_prompts && n < seq.num_tokens() - hit_tokens {
                break;
            }
            let need = seq.num_missing_blocks(hit_tokens + n, bs)
                - hits.num_blocks() * seq.block_tables.len();
            // a hit on a free cached block takes that block off the free list too
            let hits_free = hits.cached().filter(|&b| self.allocator.is_free(b)).count();
            if !self.allocator.can_allocate(need + hits_free) {
                break;
            }
            self.waiting.remove(at);
            self.running.push(id);
            let seq = self.seqs.get_mut(&id).expect("waiting id is known");
            prefix::take(&mut self.allocator, seq, hits);
            seq.num_computed_tokens = hit_tokens;
            if seq.status == SequenceStatus::Waiting {
                seq.num_cached_tokens = hit_tokens.min(seq.num_prompt_tokens);
            }
            seq.status = SequenceStatus::Running;
            // its prefix-cache hits may hold blocks it will never read
            self.release_out_of_window(id);
            self.grant(id, n, need, Vec::new(), out);
            *budget -= n;
        }
    }

    /// Whether admitting `seq` keeps the running sequences' adapters within `max_loras`.
    fn adapter_fits(&self, seq: &Sequence) -> bool {
        let (Some(max), Some(lora)) = (self.config.max_loras, seq.lora) else {
            return true;
        };
        let running = self.adapters_of(&self.running);
        running.contains(&lora.0) || running.len() < max
    }

    /// The distinct adapters of the sequences `ids`.
    fn adapters_of<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a RequestId>,
    ) -> std::collections::BTreeSet<u32> {
        ids.into_iter()
            .filter_map(|id| self.seqs[id].lora.map(|l| l.0))
            .collect()
    }

    /// Whether `seq` may be admitted: true unless it follows a request (`n`) whose full prompt
    /// blocks are not computed yet (with prefix caching on; without it nothing is shared).
    fn leader_ready(&self, seq: &Sequence) -> bool {
        let Some(leader) = seq.follows.and_then(|l| self.seqs.get(&l)) else {
            return true;
        };
        let bs = self.config.block_size;
        !self.config.enable_prefix_caching
            || seq.num_computed_tokens > 0
            || (leader.status == SequenceStatus::Running
                && leader.num_computed_tokens >= (leader.num_prompt_tokens - 1) / bs * bs)
    }

    /// Cached blocks holding a prefix of `seq`'s tokens (`prefix::find`); none for a sequence
    /// that computed tokens already or scores its prompt.
    fn prefix_hits(&self, seq: &Sequence) -> prefix::PrefixHit {
        if !self.config.enable_prefix_caching
            || seq.num_computed_tokens > 0
            || seq.sampling.prompt_logprobs.is_some()
        {
            return prefix::PrefixHit::default();
        }
        prefix::find(&self.allocator, seq, self.cache_shape())
    }

    fn cache_shape(&self) -> prefix::CacheShape {
        prefix::CacheShape {
            groups: self.config.kv_groups,
            window: self.config.sliding_window,
            block_size: self.config.block_size,
        }
    }

    /// Registers the newly completed full blocks of `id` in the prefix cache.
    fn register_full_blocks(&mut self, id: RequestId) {
        if !self.config.enable_prefix_caching {
            return;
        }
        let seq = self.seqs.get_mut(&id).expect("registered id is known");
        prefix::register(&mut self.allocator, seq, self.config.block_size);
    }

    /// Frees the blocks of `id`'s sliding groups that no query from its next token on can see:
    /// with a window W the query at position p reads keys p + 1 - W ..= p. Released blocks stay
    /// registered in the prefix cache (their K/V is still right) until the allocator hands
    /// them out again.
    fn release_out_of_window(&mut self, id: RequestId) {
        let Some(w) = self.config.sliding_window else {
            return;
        };
        let groups = self.config.kv_groups;
        let seq = self.seqs.get_mut(&id).expect("scheduled id is known");
        let first_visible = (seq.num_computed_tokens + 1).saturating_sub(w);
        for (g, table) in seq.block_tables.iter_mut().enumerate() {
            if groups.is_sliding(g) {
                let freed = table.release_before(first_visible / self.config.block_size);
                self.allocator.free(&freed);
            }
        }
    }

    /// The drafts `id` verifies this step (`spec`): none unless speculation is on, few enough
    /// sequences run, and it decodes without penalties or a grammar (which read its tokens as
    /// they are sampled); never past its `max_tokens` or the context, nor the step's `budget`.
    fn drafts(&mut self, id: RequestId, budget: usize) -> Vec<u32> {
        let Some(cfg) = self.config.speculative else {
            return Vec::new();
        };
        if cfg
            .disable_by_batch_size
            .is_some_and(|b| self.running.len() > b)
        {
            return Vec::new();
        }
        let max_len = self.config.max_model_len;
        let seq = self.seqs.get_mut(&id).expect("scheduled id is known");
        if seq.num_uncomputed_tokens() != 1
            || seq.num_output_tokens() == 0
            || seq.sampling.needs_history()
            || seq.sampling_state.constraint.is_some()
            || !self
                .step_cost
                .worth_drafting(seq.spec.rate(), self.running.len())
        {
            return Vec::new();
        }
        // the step's own token comes after the drafts
        let room = (seq.stop.max_tokens.saturating_sub(seq.num_output_tokens()))
            .min(max_len.saturating_sub(seq.num_tokens()))
            .min(budget)
            .saturating_sub(1);
        let k = seq.spec.next_len(&cfg).min(room);
        let drafts = spec::propose(&seq.token_ids, &cfg, k);
        if drafts.is_empty() && k > 0 {
            seq.spec.no_match();
        }
        drafts
    }

    /// Allocates `need` blocks to `id` and schedules `n` of its positions: tokens it has not
    /// computed, then `drafts`.
    fn grant(
        &mut self,
        id: RequestId,
        n: usize,
        need: usize,
        drafts: Vec<u32>,
        out: &mut SchedulerOutput,
    ) {
        let blocks = self
            .allocator
            .allocate(need)
            .expect("can_allocate was checked. This is a bug.");
        let seq = self.seqs.get_mut(&id).expect("scheduled id is known");
        let mut blocks = blocks.into_iter();
        let per_table = need / seq.block_tables.len().max(1);
        debug_assert_eq!(per_table * seq.block_tables.len(), need);
        for table in &mut seq.block_tables {
            table.extend(blocks.by_ref().take(per_table).collect());
        }
        let start = seq.num_computed_tokens;
        let own = n - drafts.len();
        if own > 1 || start < seq.num_prompt_tokens {
            out.num_prompt_tokens += own;
        }
        let done = start + own == seq.num_tokens();
        let pool = done && seq.task == Task::Embed;
        let sample = done && !pool;
        // prompt logprobs not computed yet whose scoring row runs this step
        let (prompt_target_start, prompt_targets) = match seq.sampling.prompt_logprobs {
            Some(_) => {
                let from = (start + 1).max(seq.num_prompt_logprobs + 1);
                let to = (start + n).min(seq.num_prompt_tokens.saturating_sub(1));
                let targets = if from <= to {
                    seq.token_ids[from..=to].to_vec()
                } else {
                    Vec::new()
                };
                (from, targets)
            }
            None => (0, Vec::new()),
        };
        out.scheduled.push(ScheduledSeq {
            request_id: id,
            num_new_tokens: n,
            sample,
            pool,
            num_computed_tokens: start,
            token_ids: [&seq.token_ids[start..start + own], &drafts].concat(),
            block_tables: seq
                .block_tables
                .iter()
                .map(BlockTable::runner_ids)
                .collect(),
            sampling: seq.sampling.clone(),
            state: if sample {
                std::mem::take(&mut seq.sampling_state)
            } else {
                SamplingState::default()
            },
            history: if sample && seq.sampling.needs_history() {
                seq.token_ids.clone()
            } else {
                Vec::new()
            },
            num_prompt_tokens: seq.num_prompt_tokens,
            prompt_targets,
            prompt_target_start,
            lora: seq.lora,
            draft_token_ids: drafts,
        });
    }

    fn preempt(&mut self, id: RequestId) {
        let pos = self
            .running
            .iter()
            .rposition(|r| *r == id)
            .expect("preempted sequence is running");
        self.running.remove(pos);
        let seq = self.seqs.get_mut(&id).expect("running id is known");
        self.allocator.free(&seq.take_blocks());
        seq.block_hashes.clear();
        seq.num_computed_tokens = 0;
        seq.status = SequenceStatus::Preempted;
        seq.num_preemptions += 1;
        match self.config.policy {
            // back to the head of its class: interactive first, then batch lines
            SchedulingPolicy::Fcfs if seq.background => {
                let pos = self.first_background_waiting();
                self.waiting.insert(pos, id);
            }
            SchedulingPolicy::Fcfs => self.waiting.push_front(id),
            SchedulingPolicy::Priority => self.insert_by_priority(id),
        }
        self.num_preemptions += 1;
    }

    /// Applies the runner's answers (by position: the n-th sampled token belongs to the n-th
    /// sampling sequence of `out`): advances computed counts, gives each sampling sequence its
    /// `SamplingState` back, appends tokens, checks stop rules and frees finished sequences.
    /// Returns one delta per sampled token.
    pub fn update_from_output(
        &mut self,
        out: &mut SchedulerOutput,
        runner: ModelRunnerOutput,
    ) -> Vec<TokenDelta> {
        let mut deltas = Vec::with_capacity(runner.sampled.len());
        let mut sampled = runner.sampled.into_iter();
        let mut prompt_logprobs = runner.prompt_logprobs.into_iter();
        let mut pooled = runner.pooled.into_iter();
        let mut accepted = runner.accepted.into_iter();
        for s in out.scheduled.iter_mut() {
            if s.pool {
                let embedding = pooled
                    .next()
                    .expect("the runner pools every pooling sequence. This is a bug.");
                deltas.extend(self.finish_pooled(s.request_id, embedding));
                continue;
            }
            let lps = prompt_logprobs.next().unwrap_or_default();
            let answer = s.sample.then(|| {
                sampled
                    .next()
                    .expect("the runner samples every sampling sequence. This is a bug.")
            });
            let kept = match s.sample {
                true => accepted.next().unwrap_or_default(),
                false => Vec::new(),
            };
            let Some(seq) = self.seqs.get_mut(&s.request_id) else {
                continue;
            };
            if !lps.is_empty() {
                seq.num_prompt_logprobs += lps.len();
                seq.prompt_logprobs.extend(lps);
            }
            // the KV of the drafts it did not keep is overwritten by later steps
            let drafts = s.draft_token_ids.len();
            seq.num_computed_tokens += s.num_new_tokens - drafts + kept.len();
            if let Some(cfg) = &self.config.speculative {
                seq.spec.update(cfg, drafts, kept.len());
                self.spec_stats.record(drafts, kept.len());
            }
            let Some(answer) = answer else {
                self.register_full_blocks(s.request_id);
                continue;
            };
            let seq = self.seqs.get_mut(&s.request_id).expect("just looked up");
            seq.sampling_state = std::mem::take(&mut s.state);
            let (mut tokens, mut logprobs, mut finish) = (Vec::new(), Vec::new(), None);
            for a in kept.into_iter().chain([answer]) {
                seq.token_ids.push(a.token);
                tokens.push(a.token);
                logprobs.extend(a.logprobs);
                finish = seq.check_stop(a.token);
                if finish.is_none() && seq.num_tokens() >= self.config.max_model_len {
                    finish = Some(FinishReason::Length);
                }
                if finish.is_some() {
                    break;
                }
            }
            // (after the kept drafts joined its tokens: their K/V is computed)
            self.register_full_blocks(s.request_id);
            let seq = self.seqs.get_mut(&s.request_id).expect("just looked up");
            deltas.push(TokenDelta {
                request_id: s.request_id,
                new_token_ids: tokens,
                logprobs,
                prompt_logprobs: std::mem::take(&mut seq.prompt_logprobs),
                finish: finish.clone(),
                num_cached_tokens: seq.num_cached_tokens,
                embedding: None,
            });
            if finish.is_some() {
                self.remove(s.request_id);
            }
        }
        deltas
    }

    /// Ends an embedding request whose prompt was computed: its vector, and its blocks freed.
    fn finish_pooled(&mut self, id: RequestId, embedding: Vec<f32>) -> Option<TokenDelta> {
        let mut delta = self.finish(id, FinishReason::Length)?;
        delta.embedding = Some(embedding);
        Some(delta)
    }

    /// Ends every sequence of a failed step with an error delta and frees its blocks.
    pub fn fail_scheduled(&mut self, out: &SchedulerOutput, message: &str) -> Vec<TokenDelta> {
        out.scheduled
            .iter()
            .filter_map(|s| self.finish(s.request_id, FinishReason::Error(message.to_string())))
            .collect()
    }

    /// Removes a request wherever it is and frees its blocks. Returns its final delta.
    pub fn finish(&mut self, id: RequestId, reason: FinishReason) -> Option<TokenDelta> {
        let seq = self.remove(id)?;
        Some(TokenDelta {
            request_id: id,
            new_token_ids: Vec::new(),
            logprobs: Vec::new(),
            prompt_logprobs: Vec::new(),
            finish: Some(reason),
            num_cached_tokens: seq.num_cached_tokens,
            embedding: None,
        })
    }

    /// Aborts a request; true when it was in the engine.
    pub fn abort(&mut self, id: RequestId) -> bool {
        self.remove(id).is_some()
    }

    fn remove(&mut self, id: RequestId) -> Option<Sequence> {
        let mut seq = self.seqs.remove(&id)?;
        match seq.status {
            SequenceStatus::Running => self.running.retain(|r| *r != id),
            SequenceStatus::Waiting | SequenceStatus::Preempted => {
                self.waiting.retain(|r| *r != id)
            }
        }
        self.allocator.free(&seq.take_blocks());
        Some(seq)
    }
}

#[cfg(test)]
mod tests;
