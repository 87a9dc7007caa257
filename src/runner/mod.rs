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

use crate::engine::output::{ModelRunnerOutput, SchedulerOutput};
use crate::engine::request::RequestId;
use crate::kv::KvCacheConfig;
use crate::models::attention::{backend_for, Attention, BackendKind};
use crate::models::batch::{ForwardBatch, SeqInput};
use crate::models::CausalLm;
use sampler::Sampler;

/// The step's `ForwardBatch`: every scheduled sequence's tokens, in batch order.
pub fn pack(out: &SchedulerOutput, block_size: usize) -> ForwardBatch {
    let inputs: Vec<SeqInput> = out
        .scheduled
        .iter()
        .map(|s| SeqInput {
            token_ids: &s.token_ids,
            start: s.num_computed_tokens,
            block_table: &s.block_ids,
            sample: s.sample,
        })
        .collect();
    ForwardBatch::build(&inputs, block_size)
}

/// Threads that compute a step's grammar masks (each takes a run of rows).
const MASK_THREADS: usize = 4;

pub struct ModelRunner {
    model: Box<dyn CausalLm>,
    attn: Attention,
    sampler: Sampler,
    /// Host time of the last step's packing and forward call (on a GPU: launching its
    /// kernels); the rest of `execute` is sampling, which waits for the GPU.
    last_forward: std::time::Duration,
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
        let attn = Attention::new(backend, pool)?;
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
            last_forward: std::time::Duration::ZERO,
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
            let fits =
                !with_prompt && self.model.graph_capable() && self.attn.backend_name() == "cuda";
            if fits {
                if let Some(logits) = graphs.run(self.model.as_ref(), &mut self.attn, batch)? {
                    return Ok(logits);
                }
            }
        }
        let _ = with_prompt;
        self.model.forward(batch, &mut self.attn)
    }

    /// See `last_forward`.
    pub fn last_forward_time(&self) -> std::time::Duration {
        self.last_forward
    }

    /// The attention backend in use (for logs).
    pub fn backend_name(&self) -> &'static str {
        self.attn.backend_name()
    }

    pub fn execute(&mut self, out: &SchedulerOutput) -> candle_core::Result<ModelRunnerOutput> {
        let started = std::time::Instant::now();
        self.last_forward = std::time::Duration::ZERO;
        let mut batch = pack(out, self.attn.cache().config().block_size);
        // prompt logprobs: each sequence's scoring rows come before its sampling row
        let with_prompt = out.scheduled.iter().any(|s| !s.prompt_targets.is_empty());
        let mut sample_rows = Vec::new();
        if with_prompt {
            batch.logits_rows.clear();
            for (s, b) in out.scheduled.iter().zip(&batch.seqs) {
                if !s.prompt_targets.is_empty() {
                    let first = b.query_start + (s.prompt_target_start - 1 - s.num_computed_tokens);
                    batch
                        .logits_rows
                        .extend((first..first + s.prompt_targets.len()).map(|r| r as u32));
                }
                if s.sample {
                    sample_rows.push(batch.logits_rows.len() as u32);
                    batch
                        .logits_rows
                        .push((b.query_start + b.query_len - 1) as u32);
                }
            }
        }
        #[cfg(feature = "cuda")]
        if self.model.device().is_cuda() {
            let rows = out.scheduled.iter().filter(|s| s.sample);
            self.sampler.prepare_kernel_rows(
                rows.map(|s| (s.request_id, &s.sampling)),
                self.model.device(),
            )?;
        }
        // constrained rows' token masks, computed on their own thread during the forward pass
        let constrained: Vec<_> = out
            .scheduled
            .iter()
            .filter(|s| s.sample)
            .map(|s| s.sampling.constraint.as_ref())
            .collect();
        let vocab = self.model.vocab_size();
        let (logits, masks) = std::thread::scope(|scope| {
            // up to MASK_THREADS threads, each a contiguous run of rows
            let n = constrained.iter().filter(|c| c.is_some()).count();
            let threads = n.min(MASK_THREADS);
            let handles: Vec<_> = if threads == 0 {
                Vec::new()
            } else {
                constrained
                    .chunks(constrained.len().div_ceil(threads))
                    .map(|rows| {
                        scope.spawn(move || {
                            rows.iter()
                                .map(|c| c.map(|c| c.mask(vocab)))
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect()
            };
            let logits = self.forward(&batch, with_prompt); // [num_sampled, vocab]
            self.last_forward = started.elapsed();
            let masks: Vec<_> = handles
                .into_iter()
                .flat_map(|h| h.join().expect("a mask thread panicked"))
                .collect();
            (logits, masks)
        });
        let mut logits = logits?;
        let mut prompt_logprobs = Vec::new();
        if with_prompt {
            let mut row = 0;
            for s in &out.scheduled {
                let n = s.prompt_targets.len();
                if n > 0 {
                    let k = s.sampling.prompt_logprobs.unwrap_or(0);
                    let rows = logits
                        .narrow(0, row, n)?
                        .to_device(&candle_core::Device::Cpu)?;
                    let lps = (0..n)
                        .map(|j| {
                            let raw = rows.get(j)?.to_vec1::<f32>()?;
                            Ok(sampler::token_logprobs(&raw, s.prompt_targets[j], k))
                        })
                        .collect::<candle_core::Result<Vec<_>>>()?;
                    prompt_logprobs.push((s.request_id, lps));
                }
                row += n + usize::from(s.sample);
            }
            logits = if sample_rows.is_empty() {
                logits.narrow(0, 0, 0)?
            } else {
                let idx = candle_core::Tensor::new(sample_rows.as_slice(), logits.device())?;
                logits.index_select(&idx, 0)?
            };
        }
        let rows: Vec<_> = out
            .scheduled
            .iter()
            .filter(|s| s.sample)
            .enumerate()
            .map(|(i, s)| sampler::Row {
                id: s.request_id,
                params: &s.sampling,
                history: &s.history,
                num_prompt_tokens: s.num_prompt_tokens,
                mask: masks.get(i).and_then(Option::as_ref),
            })
            .collect();
        let mut result = ModelRunnerOutput {
            prompt_logprobs,
            ..ModelRunnerOutput::default()
        };
        for (row, s) in rows.iter().zip(self.sampler.sample_rows(&logits, &rows)?) {
            result.sampled.push((row.id, s.token));
            if let Some(lp) = s.logprobs {
                result.logprobs.push((row.id, lp));
            }
        }
        Ok(result)
    }

    /// Drops per-request state (the sampling RNG) of a request that ended.
    pub fn forget(&mut self, id: RequestId) {
        self.sampler.remove(id);
    }
}
