//! The engine thread and its handle. One `std::thread` per model (`engine-{model}`), no async
//! runtime inside: it drains `EngineCommand`s, runs `EngineCore::step()`, routes each
//! `TokenDelta` to its request's channel and publishes `EngineStats`. When idle it blocks on the
//! command channel.
//!
//! Cancellation: dropping a `DeltaStream` before its last delta sends `Abort`; a closed delta
//! channel is also noticed before every step. Either way the sequence's blocks are freed at once.

use super::core::{EngineCore, StepStats};
use crate::metrics::{EngineMetrics, StepKind};
use crate::step::{
    AdmissionError, FinishReason, IdMap, Request, RequestId, SchedulingPolicy, TokenDelta,
};
use crossbeam_channel::{Receiver, Sender};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
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
struct Queue {
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

    fn leave(&self, tokens: usize) {
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
}

/// Cloneable way in to one model's engine.
#[derive(Clone)]
pub struct EngineHandle {
    tx: Sender<EngineCommand>,
    stats: Arc<EngineStats>,
    next_id: Arc<AtomicU64>,
    /// Most tokens (prompt + output) one request may hold.
    max_model_len: usize,
    block_size: usize,
    num_kv_blocks: usize,
    policy: SchedulingPolicy,
    queue: Arc<Queue>,
    queue_limits: QueueLimits,
    metrics: EngineMetrics,
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

/// Starts the engine thread of `model_id`.
pub fn spawn_engine(
    model_id: &str,
    core: EngineCore,
    metrics: EngineMetrics,
    queue_limits: QueueLimits,
) -> std::io::Result<(EngineHandle, std::thread::JoinHandle<()>)> {
    let queue = Arc::new(Queue::default());
    let handle_metrics = metrics.clone();
    let loop_queue = queue.clone();
    let (tx, rx) = crossbeam_channel::unbounded();
    let stats = Arc::new(EngineStats::default());
    let s = core.scheduler();
    let max_model_len = s.config().max_model_len.min(s.capacity_tokens());
    let (policy, block_size, num_kv_blocks) = (
        s.config().policy,
        s.config().block_size,
        s.num_blocks_total(),
    );
    stats.alive.store(true, Ordering::Release);
    let thread_stats = stats.clone();
    let join = std::thread::Builder::new()
        .name(format!("engine-{model_id}"))
        .spawn(move || {
            // Marks the engine stopped however the loop ends, a panic included.
            struct Alive(Arc<EngineStats>);
            impl Drop for Alive {
                fn drop(&mut self) {
                    self.0.alive.store(false, Ordering::Release);
                }
            }
            let _alive = Alive(thread_stats.clone());
            EngineLoop {
                core,
                rx,
                in_flight: IdMap::default(),
                stats: thread_stats,
                metrics,
                queue: loop_queue,
            }
            .run();
        })?;
    Ok((
        EngineHandle {
            tx,
            stats,
            next_id: Arc::new(AtomicU64::new(1)),
            max_model_len,
            block_size,
            num_kv_blocks,
            policy,
            queue,
            queue_limits,
            metrics: handle_metrics,
        },
        join,
    ))
}

struct EngineLoop {
    core: EngineCore,
    rx: Receiver<EngineCommand>,
    in_flight: IdMap<InFlight>,
    stats: Arc<EngineStats>,
    metrics: EngineMetrics,
    queue: Arc<Queue>,
}

/// A request's channel and the timestamps its latency metrics come from.
struct InFlight {
    tx: mpsc::UnboundedSender<TokenDelta>,
    arrival: Instant,
    num_prompt_tokens: usize,
    scheduled: bool,
    last_token: Option<Instant>,
    num_generated: usize,
}

impl InFlight {
    /// Records `d`'s tokens (the first one ends the prefill).
    fn on_delta(&mut self, d: &TokenDelta, now: Instant, m: &EngineMetrics) {
        let n = d.new_token_ids.len();
        if n == 0 {
            return;
        }
        m.generation_tokens.inc_by(n as u64);
        match self.last_token {
            None => {
                m.ttft.observe((now - self.arrival).as_secs_f64());
                m.prompt_tokens.inc_by(self.num_prompt_tokens as u64);
                m.prefix_queries.inc_by(self.num_prompt_tokens as u64);
                m.prefix_hits.inc_by(d.num_cached_tokens as u64);
            }
            Some(last) => {
                let gap = (now - last).as_secs_f64() / n as f64;
                for _ in 0..n {
                    m.itl.observe(gap);
                }
            }
        }
        self.last_token = Some(now);
        self.num_generated += n;
    }

    /// Records the end of the request (its finish reason is the API task's to count: a stop
    /// string may end it after the engine finished it by length).
    fn on_finish(&self, now: Instant, m: &EngineMetrics) {
        m.e2e.observe((now - self.arrival).as_secs_f64());
        m.req_prompt_tokens.observe(self.num_prompt_tokens as f64);
        m.req_generation_tokens.observe(self.num_generated as f64);
    }
}

impl EngineLoop {
    fn run(mut self) {
        self.publish();
        loop {
            if !self.core.has_work() {
                match self.rx.recv() {
                    Ok(cmd) => {
                        if !self.handle(cmd) {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
            while let Ok(cmd) = self.rx.try_recv() {
                if !self.handle(cmd) {
                    return;
                }
            }
            self.drop_closed();
            let started = Instant::now();
            let (deltas, step) = self.core.step();
            self.record_step(&step, started);
            // NOTE: publish before routing, so whoever sees a token also sees stats at least as
            // new as the step that made it; again after, for sequences routing aborted.
            self.publish();
            for d in deltas {
                self.route(d);
            }
            self.publish();
            if step.num_seqs > 0 {
                self.stats.steps_total.fetch_add(1, Ordering::Relaxed);
            } else if self.core.has_work() {
                // NOTE: nothing could be scheduled (should not happen: a lone request always
                // fits); wait for a command instead of spinning.
                if let Ok(cmd) = self.rx.recv_timeout(std::time::Duration::from_millis(10)) {
                    if !self.handle(cmd) {
                        return;
                    }
                }
            }
        }
    }

    /// Applies one command; false on shutdown.
    fn handle(&mut self, cmd: EngineCommand) -> bool {
        match cmd {
            EngineCommand::Submit { req, tx } => {
                let (id, arrival, num_prompt_tokens) =
                    (req.id, req.arrival, req.prompt_token_ids.len());
                let added = self.core.add(*req);
                if added.is_err() {
                    self.queue.leave(num_prompt_tokens);
                }
                match added {
                    Ok(()) => {
                        let f = InFlight {
                            tx,
                            arrival,
                            num_prompt_tokens,
                            scheduled: false,
                            last_token: None,
                            num_generated: 0,
                        };
                        self.in_flight.insert(id, f);
                    }
                    Err(e) => {
                        // The receiver may be gone already; nothing to tell then.
                        let _ = tx.send(TokenDelta {
                            request_id: id,
                            new_token_ids: Vec::new(),
                            logprobs: Vec::new(),
                            prompt_logprobs: Vec::new(),
                            finish: Some(FinishReason::Error(e.to_string())),
                            num_cached_tokens: 0,
                        });
                    }
                }
            }
            EngineCommand::Abort(id) => self.end(id),
            EngineCommand::Shutdown => {
                let now = Instant::now();
                for (id, f) in std::mem::take(&mut self.in_flight) {
                    if let Some(d) = self
                        .core
                        .finish(id, FinishReason::Error("the model was unloaded (or the server shut down) before the request finished".into()))
                    {
                        self.finish(&f, now);
                        let _ = f.tx.send(d);
                    }
                }
                return false;
            }
        }
        true
    }

    /// Ends request `id` before its last delta (the client went away or stopped it).
    fn end(&mut self, id: RequestId) {
        if let Some(f) = self.in_flight.remove(&id) {
            self.finish(&f, Instant::now());
        }
        self.core.abort(id);
    }

    /// Records the end of `f` and gives back its queue place if it never ran.
    fn finish(&self, f: &InFlight, now: Instant) {
        if !f.scheduled {
            self.queue.leave(f.num_prompt_tokens);
        }
        f.on_finish(now, &self.metrics);
    }

    fn drop_closed(&mut self) {
        let closed: Vec<RequestId> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.tx.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for id in closed {
            self.end(id);
        }
    }

    fn record_step(&mut self, step: &StepStats, started: Instant) {
        if step.num_seqs == 0 {
            return;
        }
        let m = &self.metrics;
        let kind = if step.num_prompt_tokens > 0 {
            StepKind::Prompt
        } else {
            StepKind::Decode
        };
        m.step(kind, step.num_batched_tokens, started.elapsed());
        m.step_phases(&step.phases);
        m.preemptions.inc_by(step.num_preempted as u64);
        for id in &step.scheduled {
            if let Some(f) = self.in_flight.get_mut(id).filter(|f| !f.scheduled) {
                f.scheduled = true;
                self.queue.leave(f.num_prompt_tokens);
                m.queue.observe((started - f.arrival).as_secs_f64());
            }
        }
    }

    fn route(&mut self, d: TokenDelta) {
        let id = d.request_id;
        let now = Instant::now();
        let Some(f) = self.in_flight.get_mut(&id) else {
            if d.finish.is_none() {
                self.core.abort(id);
            }
            return;
        };
        f.on_delta(&d, now, &self.metrics);
        if d.finish.is_some() {
            let f = self.in_flight.remove(&id).expect("present");
            self.finish(&f, now);
            let _ = f.tx.send(d);
        } else if f.tx.send(d).is_err() {
            self.end(id);
        }
    }

    fn publish(&self) {
        let s = self.core.scheduler();
        let st = &self.stats;
        st.kv_blocks_used
            .store(s.num_blocks_used(), Ordering::Relaxed);
        st.sequences_running
            .store(s.num_running(), Ordering::Relaxed);
        st.sequences_waiting
            .store(s.num_waiting(), Ordering::Relaxed);
        st.preemptions_total
            .store(s.num_preemptions(), Ordering::Relaxed);
        let m = &self.metrics;
        m.running.set(s.num_running() as f64);
        m.waiting.set(s.num_waiting() as f64);
        m.kv_blocks.set(s.num_blocks_total() as f64);
        m.kv_usage
            .set(s.num_blocks_used() as f64 / s.num_blocks_total().max(1) as f64);
    }
}
