//! The engine thread: one `std::thread` per model (`engine-{model}`), no async runtime inside.
//! Each turn it drains `EngineCommand`s, runs `EngineCore::step()`, routes each `TokenDelta` to
//! its request's channel, records the request's latency metrics and publishes `EngineStats`.
//! When idle it blocks on the command channel. With KV events on, each step's prefix-cache
//! events go to the `KvEventSink`, and a stopped engine reports its cache cleared.

use super::core::{EngineCore, StepStats};
use super::handle::{EngineCommand, EngineHandle, EngineStats, Queue, QueueLimits};
use crate::kv::KvEvent;
use crate::kv_events::KvEventSink;
use crate::metrics::{EngineMetrics, StepKind};
use crate::step::{FinishReason, IdMap, RequestId, TokenDelta};
use crossbeam_channel::Receiver;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// Starts the engine thread of `model_id` (publishing its KV events to `kv_events`, if any).
pub fn spawn_engine(
    model_id: &str,
    mut core: EngineCore,
    metrics: EngineMetrics,
    queue_limits: QueueLimits,
    kv_events: Option<KvEventSink>,
) -> std::io::Result<(EngineHandle, std::thread::JoinHandle<()>)> {
    // events describe the prefix cache: an engine without one (an encoder) publishes nothing
    let kv_events = kv_events.filter(|_| {
        let cached = core.scheduler().config().enable_prefix_caching;
        if !cached {
            tracing::warn!(
                model = model_id,
                "prefix caching is off: no KV cache events"
            );
        }
        cached
    });
    if kv_events.is_some() {
        core.enable_kv_events();
    }
    let queue = Arc::new(Queue::default());
    let handle_metrics = metrics.clone();
    let loop_queue = queue.clone();
    let (tx, rx) = crossbeam_channel::unbounded();
    let stats = Arc::new(EngineStats::default());
    let s = core.scheduler();
    let max_model_len = s.config().max_model_len.min(s.capacity_tokens());
    let max_loras = s.config().max_loras;
    let sched_config = *s.config();
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
                kv_events,
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
            sched_config,
            policy,
            max_loras,
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
    kv_events: Option<KvEventSink>,
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
        self.serve();
        // the KV pool goes with the engine
        if let Some(sink) = &self.kv_events {
            sink.publish(vec![KvEvent::AllCleared]);
        }
    }

    fn serve(&mut self) {
        self.publish();
        loop {
            if !self.core.has_work() {
                match self.rx.recv() {
                    Ok(cmd) => {
                        // an idle engine that gets work starts its progress clock now
                        self.stats
                            .last_progress_ms
                            .store(super::handle::unix_ms(), Ordering::Relaxed);
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
            if let Some(sink) = &self.kv_events {
                sink.publish(self.core.take_kv_events());
            }
            // NOTE: publish before routing, so whoever sees a token also sees stats at least as
            // new as the step that made it; again after, for sequences routing aborted.
            self.publish();
            for d in deltas {
                self.route(d);
            }
            self.publish();
            if step.num_seqs > 0 {
                self.stats.steps_total.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .last_progress_ms
                    .store(super::handle::unix_ms(), Ordering::Relaxed);
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
                            embedding: None,
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
        let s = &step.spec;
        if s.drafts > 0 {
            m.speculation(
                s.drafts,
                s.draft_tokens,
                s.accepted_tokens,
                &s.accepted_per_pos,
            );
        }
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
        *st.adapters.lock() = s.adapters();
        let m = &self.metrics;
        m.running.set(s.num_running() as f64);
        m.waiting.set(s.num_waiting() as f64);
        m.kv_blocks.set(s.num_blocks_total() as f64);
        m.kv_usage
            .set(s.num_blocks_used() as f64 / s.num_blocks_total().max(1) as f64);
    }
}
