//! `ModelRunner`: turns a `SchedulerOutput` into sampled tokens. It takes data, not the
//! scheduler: each `ScheduledSeq` carries the tokens to compute, the block table and the
//! sampling parameters. It packs the `ForwardBatch`, runs the model over the attention backend
//! and KV pool it owns, and samples one token per sampling sequence where the logits are.

#[cfg(feature = "cuda")]
pub mod cuda_graph;
#[cfg(feature = "cuda")]
pub mod cuda_sampler;
pub mod graph_inputs;
pub mod sampler;

use crate::kv::KvCacheConfig;
use crate::models::attention::{backend_for, Attention, BackendKind};
use crate::models::batch::{ForwardBatch, SeqInput};
use crate::models::CausalLm;
use crate::step::{ModelRunnerOutput, SchedulerOutput};
use sampler::Sampler;

/// The step's `ForwardBatch`: every scheduled sequence's tokens, in batch order, with the
/// batches of a hybrid model's other KV groups.
pub fn pack(out: &SchedulerOutput, block_size: usize) -> ForwardBatch {
    let group = |g: usize| {
        let inputs: Vec<SeqInput> = out
            .scheduled
            .iter()
            .map(|s| SeqInput {
                token_ids: &s.token_ids,
                start: s.num_computed_tokens,
                block_table: &s.block_tables[g],
                // an embedding's last prompt step returns its row too (pooled, not sampled)
                sample: s.sample || s.pool,
            })
            .collect();
        ForwardBatch::build(&inputs, block_size)
    };
    let groups = out.scheduled.first().map_or(1, |s| s.block_tables.len());
    let mut batch = group(0);
    batch.kv_groups = (1..groups).map(group).collect();
    batch.set_loras(out.scheduled.iter().map(|s| s.lora.map(|l| l.0)));
    batch
}

/// Threads that compute a step's grammar masks (each takes a run of rows).
const MASK_THREADS: usize = 4;

pub struct ModelRunner {
    model: Box<dyn CausalLm>,
    attn: Attention,
    sampler: Sampler,
    /// `--cuda-graphs`: decode steps replayed from captured graphs.
    #[cfg(feature = "cuda")]
    graphs: Option<cuda_graph::DecodeGraphs>,
}

impl ModelRunner {
    /// Allocates the KV pool on the model's device in its dtype, with the backend that serves
    /// them (`attention::backend_for`).
    /// With `cuda_graphs` on a CUDA device the pool gets one block more than `kv_config` says
    /// (the scheduler's blocks): the scratch block of graph padding rows.
    pub fn new(
        model: Box<dyn CausalLm>,
        kv_config: KvCacheConfig,
        kind: BackendKind,
        cuda_graphs: bool,
    ) -> candle_core::Result<Self> {
        let shape = model.attention_shape();
        assert_eq!(
            (
                kv_config.num_layers,
                kv_config.num_kv_heads,
                kv_config.head_dim
            ),
            (model.num_layers(), shape.num_kv_heads, shape.head_dim),
            "KV cache shape must match the model. This is a bug."
        );
        let backend = backend_for(kind, shape, model.dtype(), model.device())?;
        let graphs = cuda_graphs && model.device().is_cuda();
        let pool = KvCacheConfig {
            num_blocks: kv_config.num_blocks + usize::from(graphs),
            ..kv_config
        };
        let attn = Attention::with_layers(backend, pool, &model.sliding_layers())?;
        Ok(Self {
            #[cfg(feature = "cuda")]
            graphs: graphs.then(|| {
                cuda_graph::DecodeGraphs::new(
                    kv_config.num_blocks as u32,
                    kv_config.block_size,
                    model.max_context_len(),
                )
            }),
            model,
            attn,
            sampler: Sampler::default(),
        })
    }

    /// The step's logits: a CUDA graph replay where one fits, else the model's forward pass.
    fn forward(
        &mut self,
        batch: &ForwardBatch,
        with_prompt: bool,
    ) -> candle_core::Result<candle_core::Tensor> {
        #[cfg(feature = "cuda")]
        if let Some(graphs) = self.graphs.as_mut() {
            let fits = !with_prompt
                && batch.lora_rows.is_empty()
                && batch.kv_groups.is_empty()
                && self.model.graph_capable()
                && self.attn.backend_kind() == BackendKind::Cuda;
            if fits {
                if let Some(logits) = graphs.run(self.model.as_ref(), &mut self.attn, batch)? {
                    return Ok(logits);
                }
            }
        }
        let _ = with_prompt;
        self.model.forward(batch, &mut self.attn)
    }

    /// The attention backend in use.
    pub fn backend_kind(&self) -> BackendKind {
        self.attn.backend_kind()
    }

    /// Runs one step: packs the batch, runs the model and samples one token per sampling
    /// sequence, advancing each one's `SamplingState` (lent in `out`) as it goes. Answers by
    /// position, in batch order.
    pub fn execute(&mut self, out: &mut SchedulerOutput) -> candle_core::Result<ModelRunnerOutput> {
        let started = std::time::Instant::now();
        let mut batch = pack(out, self.attn.cache().config().block_size);
        if out.scheduled.iter().any(|s| s.pool) {
            return self.embed(out, &batch, started);
        }
        // prompt logprobs: each sequence's scoring rows come before its sampling rows; drafts:
        // a row for each, before the last
        let with_prompt = out.scheduled.iter().any(|s| !s.prompt_targets.is_empty());
        let with_drafts = out.scheduled.iter().any(|s| !s.draft_token_ids.is_empty());
        let sample_rows = if with_prompt || with_drafts {
            arrange_rows(out, &mut batch)
        } else {
            Vec::new()
        };
        // (a step with drafts samples row by row, each drawing its own kernel seed)
        #[cfg(feature = "cuda")]
        if self.model.device().is_cuda() && !with_drafts {
            let rows = out.scheduled.iter_mut().filter(|s| s.sample);
            self.sampler.prepare_kernel_rows(
                rows.map(|s| (&s.sampling, &mut s.state)),
                self.model.device(),
            )?;
        }
        let vocab = self.model.vocab_size();
        let mut constraints: Vec<_> = out
            .scheduled
            .iter_mut()
            .filter(|s| s.sample)
            .map(|s| s.state.constraint.as_deref_mut())
            .collect();
        // constrained rows' token masks, computed on their own threads during the forward pass
        let (logits, masks) = std::thread::scope(|scope| {
            let masking = spawn_masks(scope, &mut constraints, vocab);
            let logits = self.forward(&batch, with_prompt || with_drafts); // [rows, vocab]
            let forward_time = started.elapsed();
            let masks: Vec<_> = masking
                .into_iter()
                .flat_map(|h| h.join().expect("a mask thread panicked"))
                .collect();
            (logits.map(|l| (l, forward_time)), masks)
        });
        let (mut logits, forward_time) = logits?;
        let mut prompt_logprobs = Vec::new();
        if with_prompt {
            prompt_logprobs = score_prompts(out, &logits)?;
        }
        if with_prompt || with_drafts {
            logits = if sample_rows.is_empty() {
                logits.narrow(0, 0, 0)?
            } else {
                let idx = candle_core::Tensor::new(sample_rows.as_slice(), logits.device())?;
                logits.index_select(&idx, 0)?
            };
        }
        if with_drafts {
            // (the kernel rows of an earlier step that failed must not be taken for these)
            #[cfg(feature = "cuda")]
            self.sampler.forget_prepared();
            let (sampled, accepted) = self.sample_drafted(out, &logits, masks)?;
            return Ok(ModelRunnerOutput {
                sampled,
                accepted,
                prompt_logprobs,
                pooled: Vec::new(),
                forward_time,
            });
        }
        let mut masks = masks.into_iter();
        let mut rows: Vec<_> = out
            .scheduled
            .iter_mut()
            .filter(|s| s.sample)
            .map(|s| sampler::Row {
                params: &s.sampling,
                state: &mut s.state,
                history: &s.history,
                num_prompt_tokens: s.num_prompt_tokens,
                mask: masks.next().flatten(),
            })
            .collect();
        Ok(ModelRunnerOutput {
            sampled: self.sampler.sample_rows(&logits, &mut rows)?,
            accepted: Vec::new(),
            prompt_logprobs,
            pooled: Vec::new(),
            forward_time,
        })
    }
}

impl ModelRunner {
    /// Samples a step with drafts row by row (`logits`: each sampling sequence's rows, one
    /// per draft and the last, in order): a sequence keeps its drafts while each equals the
    /// token sampled before it, and its own token is the first sample that differs, or the
    /// one after its last draft (`scheduler::spec`). Returns (own tokens, kept drafts).
    fn sample_drafted(
        &mut self,
        out: &mut SchedulerOutput,
        logits: &candle_core::Tensor,
        masks: Vec<Option<llguidance::toktrie::SimpleVob>>,
    ) -> candle_core::Result<(Vec<crate::step::Sampled>, Vec<Vec<crate::step::Sampled>>)> {
        let mut masks = masks.into_iter();
        let (mut sampled, mut accepted) = (Vec::new(), Vec::new());
        let mut first = 0;
        for s in out.scheduled.iter_mut().filter(|s| s.sample) {
            let mut row = sampler::Row {
                params: &s.sampling,
                state: &mut s.state,
                history: &s.history,
                num_prompt_tokens: s.num_prompt_tokens,
                mask: masks.next().flatten(),
            };
            let mut kept = Vec::new();
            let own = loop {
                let one = logits.narrow(0, first + kept.len(), 1)?;
                let token = self
                    .sampler
                    .sample_rows(&one, std::slice::from_mut(&mut row))?
                    .pop()
                    .expect("one row, one token");
                match s.draft_token_ids.get(kept.len()) {
                    Some(&d) if d == token.token => kept.push(token),
                    _ => break token,
                }
            };
            first += s.num_sample_rows();
            sampled.push(own);
            accepted.push(kept);
        }
        Ok((sampled, accepted))
    }

    /// A step of an embedding model: each pooling sequence's vector (an embedding model's
    /// engine runs embedding requests only; a decoder's earlier prompt chunks ride along).
    fn embed(
        &mut self,
        out: &SchedulerOutput,
        batch: &ForwardBatch,
        started: std::time::Instant,
    ) -> candle_core::Result<ModelRunnerOutput> {
        if out.scheduled.iter().any(|s| s.sample) {
            candle_core::bail!("a step mixes embedding requests with sampling ones");
        }
        let pooled = self.model.embed(batch, &mut self.attn)?;
        let expected = out.scheduled.iter().filter(|s| s.pool).count();
        if pooled.len() != expected {
            candle_core::bail!("{} vectors for {expected} embeddings", pooled.len());
        }
        Ok(ModelRunnerOutput {
            pooled,
            forward_time: started.elapsed(),
            ..ModelRunnerOutput::default()
        })
    }
}

/// Puts each sequence's prompt-scoring rows ahead of its sampling rows (a row per draft, then
/// its last) in `batch.logits_rows`; returns the sampling rows' indices among them.
fn arrange_rows(out: &SchedulerOutput, batch: &mut ForwardBatch) -> Vec<u32> {
    let mut sample_rows = Vec::new();
    batch.logits_rows.clear();
    for (s, b) in out.scheduled.iter().zip(&batch.seqs) {
        if !s.prompt_targets.is_empty() {
            let first = b.query_start + (s.prompt_target_start - 1 - s.num_computed_tokens);
            batch
                .logits_rows
                .extend((first..first + s.prompt_targets.len()).map(|r| r as u32));
        }
        let end = b.query_start + b.query_len;
        for r in end - s.num_sample_rows()..end {
            sample_rows.push(batch.logits_rows.len() as u32);
            batch.logits_rows.push(r as u32);
        }
    }
    sample_rows
}

/// Each scheduled sequence's prompt logprobs from its scoring rows of `logits` (laid out by
/// `arrange_rows`), in batch order.
fn score_prompts(
    out: &SchedulerOutput,
    logits: &candle_core::Tensor,
) -> candle_core::Result<Vec<Vec<crate::step::TokenLogprobs>>> {
    let mut row = 0;
    let mut all = Vec::with_capacity(out.scheduled.len());
    for s in &out.scheduled {
        let n = s.prompt_targets.len();
        let mut lps = Vec::with_capacity(n);
        if n > 0 {
            let k = s.sampling.prompt_logprobs.unwrap_or(0);
            let rows = logits
                .narrow(0, row, n)?
                .to_device(&candle_core::Device::Cpu)?;
            for (j, &target) in s.prompt_targets.iter().enumerate() {
                let raw = rows.get(j)?.to_vec1::<f32>()?;
                lps.push(sampler::token_logprobs(&raw, target, k));
            }
        }
        all.push(lps);
        row += n + s.num_sample_rows();
    }
    Ok(all)
}

/// Starts the mask threads of a step's constrained rows (up to `MASK_THREADS`, each a run of
/// rows); joined, they give one entry per row, in order (`None`: unconstrained).
fn spawn_masks<'scope, 'env>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    constraints: &'env mut [Option<&mut crate::text::grammar::Constraint>],
    vocab: usize,
) -> Vec<std::thread::ScopedJoinHandle<'scope, Vec<Option<llguidance::toktrie::SimpleVob>>>> {
    let n = constraints.iter().filter(|c| c.is_some()).count();
    let threads = n.min(MASK_THREADS);
    if threads == 0 {
        return Vec::new();
    }
    let per_thread = constraints.len().div_ceil(threads);
    constraints
        .chunks_mut(per_thread)
        .map(|rows| {
            scope.spawn(move || {
                rows.iter_mut()
                    .map(|c| c.as_mut().and_then(|c| c.mask(vocab)))
                    .collect::<Vec<_>>()
            })
        })
        .collect()
}
