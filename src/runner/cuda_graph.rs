//! CUDA graphs of decode steps (`--cuda-graphs`, feature `cuda`): a decode step launches about
//! 12 kernels per layer, and each launch costs the host more than small kernels take on the
//! GPU. A graph captured once per bucket replays the whole forward pass with one launch.
//!
//! - Buckets: (sequences padded to a power of two up to 512, longest context rounded up to a
//!   power of two of at least one 512-key attention partition). The partition count and the
//!   block-table width are part of the captured launches, so they are fixed per bucket.
//! - Inputs live in one static u32 buffer per bucket, at the addresses the graph captured:
//!   `[token ids | positions | slots | token → row | token context | block tables]`. Each replay
//!   overwrites it with one copy from the host, then launches the graph; the graph's logits
//!   buffer (a graph allocation, kept at its address by `AUTO_FREE_ON_LAUNCH`) holds the result.
//! - Padding rows compute token 0 at position 0 in a scratch KV block that no sequence owns
//!   (`ModelRunner` allocates the pool one block larger); their logits are never read.
//! - Capture runs once per bucket on the engine thread: a warm-up pass with candle's parameter
//!   cache on (so the captured launches upload nothing), then the captured pass. If capture
//!   fails, the runner logs it and runs every later step without graphs.
//!
//! Only steps where every sequence decodes one token and samples it, with weir's attention
//! kernels, fused RoPE and no prompt logprobs, replay a graph; others run the normal forward.

use super::graph_inputs::{bucket, GraphInputs};
use crate::models::attention::tensor::DeviceMetadata;
use crate::models::attention::Attention;
use crate::models::batch::{BatchSeq, ForwardBatch};
use crate::models::{CausalLm, StepInputs};
use candle_core::cuda_backend::cudarc::driver::{sys, CudaGraph};
use candle_core::cuda_backend::WrapErr;
use candle_core::{CpuStorage, CudaStorage, Device, InplaceOp1, Layout, Result, Tensor};
use std::collections::HashMap;

/// A captured graph; launched only by the engine thread that owns the runner.
struct Graph(CudaGraph);

// SAFETY: the graph is captured and launched on the engine thread; the runner that holds it
// moves to that thread before its first step and never leaves it.
unsafe impl Send for Graph {}

struct Captured {
    graph: Graph,
    /// [5 B + B max_blocks] u32: the inputs the graph reads.
    inputs: Tensor,
    /// [B, vocab] f32: what each replay writes.
    logits: Tensor,
    max_blocks: usize,
}

pub struct DecodeGraphs {
    graphs: HashMap<(usize, usize), Captured>,
    /// The KV block padding rows write and read.
    scratch_block: u32,
    block_size: usize,
    max_context: usize,
    /// A capture failed: graphs are off from then on.
    failed: bool,
}

impl DecodeGraphs {
    pub fn new(scratch_block: u32, block_size: usize, max_context: usize) -> Self {
        Self {
            graphs: HashMap::new(),
            scratch_block,
            block_size,
            max_context,
            failed: false,
        }
    }

    /// This step's logits `[batch rows, vocab]` from a graph replay (capturing the bucket's
    /// graph first if needed), or `None` when the step does not fit a graph.
    pub fn run(
        &mut self,
        model: &dyn CausalLm,
        attn: &mut Attention,
        batch: &ForwardBatch,
    ) -> Result<Option<Tensor>> {
        if self.failed {
            return Ok(None);
        }
        let Some(key) = bucket(batch, self.max_context) else {
            return Ok(None);
        };
        if !self.graphs.contains_key(&key) {
            match self.capture(model, attn, key) {
                Ok(c) => {
                    tracing::info!(seqs = key.0, context = key.1, "CUDA graph captured");
                    self.graphs.insert(key, c);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "CUDA graph capture failed; decode steps run without graphs");
                    self.failed = true;
                    return Ok(None);
                }
            }
        }
        let g = &self.graphs[&key];
        let host = self.layout(key.0, g.max_blocks).fill(Some(batch));
        g.inputs.inplace_op1(&Upload(host))?;
        g.graph.0.launch().w()?;
        Ok(Some(g.logits.narrow(0, 0, batch.seqs.len())?))
    }

    fn layout(&self, rows: usize, max_blocks: usize) -> GraphInputs {
        GraphInputs {
            rows,
            max_blocks,
            scratch_block: self.scratch_block,
            block_size: self.block_size,
        }
    }

    fn capture(
        &self,
        model: &dyn CausalLm,
        attn: &mut Attention,
        (b, cap): (usize, usize),
    ) -> Result<Captured> {
        let Device::Cuda(cuda) = model.device() else {
            candle_core::bail!("CUDA graphs need a CUDA device")
        };
        let max_blocks = cap.div_ceil(self.block_size);
        let host = self.layout(b, max_blocks).fill(None);
        let len = host.len();
        let inputs = Tensor::from_vec(host, len, model.device())?;
        let step = StepInputs {
            token_ids: inputs.narrow(0, 0, b)?,
            positions: Some(inputs.narrow(0, b, b)?),
            logits_rows: None,
            attention: DeviceMetadata::for_kernels(
                inputs.narrow(0, 2 * b, b)?,
                inputs
                    .narrow(0, 5 * b, b * max_blocks)?
                    .reshape((b, max_blocks))?,
                inputs.narrow(0, 3 * b, b)?,
                inputs.narrow(0, 4 * b, b)?,
            ),
        };
        // the shapes the launches are built from: b one-token rows whose contexts reach `cap`
        let shape = ForwardBatch {
            token_ids: vec![0; b],
            positions: vec![0; b],
            slot_mapping: vec![0; b],
            seqs: (0..b)
                .map(|i| BatchSeq {
                    query_start: i,
                    query_len: 1,
                    context_len: cap,
                    blocks: 0..0,
                    sample: true,
                })
                .collect(),
            logits_rows: (0..b as u32).collect(),
            block_ids: Vec::new(),
            block_size: self.block_size,
            // graphs run steps without adapter rows only
            lora_rows: Vec::new(),
            // graphs run models of one KV group only (no windows)
            kv_groups: Vec::new(),
        };
        let _cache = cuda.enable_cuda_graph_htod_cache();
        model.forward_inputs(&shape, &step, attn)?; // warm-up: modules, cuBLAS, parameter cache
        model.device().synchronize()?;
        let stream = cuda.cuda_stream();
        stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .w()?;
        let logits = model.forward_inputs(&shape, &step, attn);
        // end the capture whatever happened, so the stream runs normally again
        let graph = stream.end_capture(
            sys::CUgraphInstantiate_flags::CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH,
        );
        let logits = logits?;
        let Some(graph) = graph.w()? else {
            candle_core::bail!("the captured graph is empty")
        };
        Ok(Captured {
            graph: Graph(graph),
            inputs,
            logits,
            max_blocks,
        })
    }
}

/// Overwrites a whole u32 tensor on the GPU with host data (one copy).
struct Upload(Vec<u32>);

impl InplaceOp1 for Upload {
    fn name(&self) -> &'static str {
        "weir-graph-inputs"
    }

    fn cpu_fwd(&self, _: &mut CpuStorage, _: &Layout) -> Result<()> {
        candle_core::bail!("graph inputs live on the GPU")
    }

    fn cuda_fwd(&self, s: &mut CudaStorage, l: &Layout) -> Result<()> {
        if l.start_offset() != 0 || l.shape().elem_count() != self.0.len() {
            candle_core::bail!(
                "weir-graph-inputs: a whole buffer of {} words",
                self.0.len()
            )
        }
        let stream = s.device.cuda_stream();
        let dst = s.as_cuda_slice_mut::<u32>()?;
        stream.memcpy_htod(&self.0, dst).w()
    }
}
