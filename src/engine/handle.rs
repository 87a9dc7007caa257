//! `EngineHandle`: the way in to one model's engine thread (`thread.rs`). It holds what never
//! changes after load (context length, block size, pool size, scheduling policy), the live
//! `EngineStats` the thread publishes, and the admission queue that refuses a flood before the
//! engine sees it; `submit` returns the request's `DeltaStream`.
//!
//! Cancellation: dropping a `DeltaStream` before its last delta sends `Abort`; a closed delta
//! channel is also noticed before every step. Either way the sequence's blocks are freed at once.

use crate::metrics::EngineMetrics;
use crate::step::{AdmissionError, Request, RequestId, SchedulingPolicy, TokenDelta};
use crossbeam_channel::Sender;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

pub enum EngineCommand {
    Submit {
        req: Box<Request>,
        tx: mpsc::UnboundedSender<TokenDelta>,
    },
    /// The client went away, matched a stop string or timed out: free the sequence.
    Abort(RequestId),
    Shutdown,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Admission(#[from] AdmissionError),
    #[error("the engine of this model has stopped")]
    Stopped,
    #[error("the server is at capacity ({waiting} requests, {tokens} prompt tokens waiting for this model); retry later")]
    QueueFull { waiting: usize, tokens: usize },
}

/// Bounds on the requests that wait for their first step (`--max-queued-*`).
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    pub max_requests: usize,
    pub max_prompt_tokens: usize,
}

impl Default for QueueLimits {
    fn default() -> Self {
        Self {
            max_requests: usize::MAX,
            max_prompt_tokens: usize::MAX,
        }
    }
}

/// Requests submitted and not yet scheduled: counted up by `submit`, down by the engine when a
/// request first runs or ends unscheduled, so a flood is refused before the engine sees it.
#[derive(Debug, Default)]
pub(super) struct Queue {
    requests: AtomicUsize,
    prompt_tokens: AtomicUsize,
}

impl Queue {
    /// Reserves a place for a request of `tokens` prompt tokens, or says how full it is.
    fn try_enter(&self, tokens: usize, limits: QueueLimits) -> Result<(), EngineError> {
        let waiting = self.requests.fetch_add(1, Ordering::AcqRel);
        let queued = self.prompt_tokens.fetch_add(tokens, Ordering::AcqRel);
        // A lone request always enters, whatever its size.
        if waiting > 0
            && (waiting >= limits.max_requests || queued + tokens > limits.max_prompt_tokens)
        {
            self.leave(tokens);
            return Err(EngineError::QueueFull {
                waiting,
                tokens: queued,
            });
        }
        Ok(())
    }

    pub(super) fn leave(&self, tokens: usize) {
        self.requests.fetch_sub(1, Ordering::AcqRel);
        self.prompt_tokens.fetch_sub(tokens, Ordering::AcqRel);
    }
}

/// Live numbers the engine publishes after every turn (for /health). What never changes after
/// load (block size, pool size, context length) is on `EngineHandle` instead.
#[derive(Debug, Default)]
pub struct EngineStats {
    pub kv_blocks_used: AtomicUsize,
    pub sequences_running: AtomicUsize,
    pub sequences_waiting: AtomicUsize,
    pub preemptions_total: AtomicU64,
    pub steps_total: AtomicU64,
    pub alive: AtomicBool,
    /// Unix milliseconds of the engine's last progress: a step that scheduled something, or
    /// the moment work arrived at an idle engine.
    pub last_progress_ms: AtomicU64,
    /// The LoRA adapters (`LoraId`s) of the running and of the waiting requests.
    pub adapters: parking_lot::Mutex<(Vec<u32>, Vec<u32>)>,
}

/// Unix milliseconds now.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl EngineStats {
    /// How long the engine has had work without making progress (`None` while it progresses
    /// or has nothing to do).
    pub fn stalled_for(&self) -> Option<std::time::Duration> {
        use std::sync::atomic::Ordering::Relaxed;
        let work = self.sequences_running.load(Relaxed) + self.sequences_waiting.load(Relaxed);
        let since = unix_ms().saturating_sub(self.last_progress_ms.load(Relaxed));
        (work > 0).then(|| std::time::Duration::from_millis(since))
    }
}

/// Cloneable way in to one model's engine.
#[derive(Clone)]
pub struct EngineHandle {
    pub(super) tx: Sender<EngineCommand>,
    pub(super) stats: Arc<EngineStats>,
    pub(super) next_id: Arc<AtomicU64>,
    /// Most tokens (prompt + output) one request may hold.
    pub(super) max_model_len: usize,
    pub(super) block_size: usize,
    pub(super) num_kv_blocks: usize,
    /// The scheduler's shape (its KV groups, window and step budget).
    pub(super) sched_config: crate::scheduler::SchedulerConfig,
    pub(super) policy: SchedulingPolicy,
    pub(super) max_loras: Option<usize>,
    pub(super) queue: Arc<Queue>,
    pub(super) queue_limits: QueueLimits,
    pub(super) metrics: EngineMetrics,
}

/// The deltas of one request, in order; the last one has `finish` set.
pub struct DeltaStream {
    id: RequestId,
    rx: mpsc::UnboundedReceiver<TokenDelta>,
    tx: Sender<EngineCommand>,
    done: bool,
}

impl DeltaStream {
    pub async fn recv(&mut self) -> Option<TokenDelta> {
        if self.done {
            return None;
        }
        let d = self.rx.recv().await;
        match &d {
            Some(d) if d.finish.is_none() => {}
            _ => self.done = true,
        }
        d
    }
}

impl Drop for DeltaStream {
    fn drop(&mut self) {
        if !self.done {
            // The engine may already be gone; then there is nothing left to free.
            let _ = self.tx.send(EngineCommand::Abort(self.id));
        }
    }
}

impl EngineHandle {
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// The model's metric series (the API task counts finish reasons).
    pub fn metrics(&self) -> &EngineMetrics {
        &self.metrics
    }

    pub fn max_model_len(&self) -> usize {
        self.max_model_len
    }

    /// Tokens per KV block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Blocks in the model's KV pool.
    pub fn num_kv_blocks(&self) -> usize {
        self.num_kv_blocks
    }

    /// The most blocks one sequence of `tokens` tokens holds (over all its KV groups).
    pub fn blocks_for(&self, tokens: usize) -> usize {
        self.sched_config.blocks_for(tokens)
    }

    /// KV groups whose blocks hold the whole context (whose prompt blocks choices share).
    pub fn num_global_kv_groups(&self) -> usize {
        self.sched_config.kv_groups.full
    }

    /// `--max-loras` (None: no limit).
    pub fn max_loras(&self) -> Option<usize> {
        self.max_loras
    }

    pub fn scheduling_policy(&self) -> SchedulingPolicy {
        self.policy
    }

    pub fn next_request_id(&self) -> RequestId {
        RequestId(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Queues a request; its deltas arrive on the returned stream.
    pub fn submit(&self, req: Request) -> Result<DeltaStream, EngineError> {
        if !self.stats.alive.load(Ordering::Acquire) {
            return Err(EngineError::Stopped);
        }
        let needed = req.prompt_token_ids.len() + req.stop.max_tokens;
        if needed > self.max_model_len {
            return Err(AdmissionError::TooLong {
                needed,
                prompt: req.prompt_token_ids.len(),
                max_tokens: req.stop.max_tokens,
                limit: self.max_model_len,
            }
            .into());
        }
        let tokens = req.prompt_token_ids.len();
        self.queue.try_enter(tokens, self.queue_limits)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let id = req.id;
        if self
            .tx
            .send(EngineCommand::Submit {
                req: Box::new(req),
                tx,
            })
            .is_err()
        {
            self.queue.leave(tokens);
            return Err(EngineError::Stopped);
        }
        Ok(DeltaStream {
            id,
            rx,
            tx: self.tx.clone(),
            done: false,
        })
    }

    pub fn shutdown(&self) {
        let _ = self.tx.send(EngineCommand::Shutdown);
    }
}
