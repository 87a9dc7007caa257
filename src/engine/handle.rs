//! The engine thread and its handle. One `std::thread` per model (`engine-{model}`), no async
//! runtime inside: it drains `EngineCommand`s, runs `EngineCore::step()`, routes each
//! `TokenDelta` to its request's channel and publishes `EngineStats`. When idle it blocks on the
//! command channel.
//!
//! Cancellation: dropping a `DeltaStream` before its last delta sends `Abort`; a closed delta
//! channel is also noticed before every step. Either way the sequence's blocks are freed at once.

use super::core::EngineCore;
use super::output::TokenDelta;
use super::request::{Request, RequestId};
use super::scheduler::{AdmissionError, SchedulingPolicy};
use super::sequence::FinishReason;
use crossbeam_channel::{Receiver, Sender};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

pub enum EngineCommand {
    Submit {
        req: Request,
        tx: mpsc::UnboundedSender<TokenDelta>,
    },
    Abort(RequestId),
    Shutdown,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Admission(#[from] AdmissionError),
    #[error("the engine of this model has stopped")]
    Stopped,
}

/// Live numbers the engine publishes after every turn (for /health and metrics).
#[derive(Debug, Default)]
pub struct EngineStats {
    pub kv_blocks_total: AtomicUsize,
    pub kv_blocks_used: AtomicUsize,
    pub block_size: AtomicUsize,
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
    policy: SchedulingPolicy,
}

/// The deltas of one request, in order; the last one has `finish` set.
pub struct DeltaStream {
    id: RequestId,
    rx: mpsc::UnboundedReceiver<TokenDelta>,
    tx: Sender<EngineCommand>,
    done: bool,
}

impl DeltaStream {
    pub fn request_id(&self) -> RequestId {
        self.id
    }

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

    pub fn max_model_len(&self) -> usize {
        self.max_model_len
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
        let (tx, rx) = mpsc::unbounded_channel();
        let id = req.id;
        self.tx
            .send(EngineCommand::Submit { req, tx })
            .map_err(|_| EngineError::Stopped)?;
        Ok(DeltaStream {
            id,
            rx,
            tx: self.tx.clone(),
            done: false,
        })
    }

    pub fn abort(&self, id: RequestId) {
        let _ = self.tx.send(EngineCommand::Abort(id));
    }

    pub fn shutdown(&self) {
        let _ = self.tx.send(EngineCommand::Shutdown);
    }
}

/// Starts the engine thread of `model_id`.
pub fn spawn_engine(
    model_id: &str,
    core: EngineCore,
) -> std::io::Result<(EngineHandle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let stats = Arc::new(EngineStats::default());
    let s = core.scheduler();
    let max_model_len = s.config().max_model_len.min(s.capacity_tokens());
    let policy = s.config().policy;
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
                senders: HashMap::new(),
                stats: thread_stats,
            }
            .run();
        })?;
    Ok((
        EngineHandle {
            tx,
            stats,
            next_id: Arc::new(AtomicU64::new(1)),
            max_model_len,
            policy,
        },
        join,
    ))
}

struct EngineLoop {
    core: EngineCore,
    rx: Receiver<EngineCommand>,
    senders: HashMap<RequestId, mpsc::UnboundedSender<TokenDelta>>,
    stats: Arc<EngineStats>,
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
            let (deltas, step) = self.core.step();
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
                let id = req.id;
                match self.core.add(req) {
                    Ok(()) => {
                        self.senders.insert(id, tx);
                    }
                    Err(e) => {
                        // The receiver may be gone already; nothing to tell then.
                        let _ = tx.send(TokenDelta {
                            request_id: id,
                            new_token_ids: Vec::new(),
                            finish: Some(FinishReason::Error(e.to_string())),
                            num_cached_tokens: 0,
                        });
                    }
                }
            }
            EngineCommand::Abort(id) => {
                self.senders.remove(&id);
                self.core.abort(id);
            }
            EngineCommand::Shutdown => {
                for (id, tx) in self.senders.drain() {
                    if let Some(d) = self
                        .core
                        .finish(id, FinishReason::Error("model unloaded".into()))
                    {
                        let _ = tx.send(d);
                    }
                }
                return false;
            }
        }
        true
    }

    fn drop_closed(&mut self) {
        let closed: Vec<RequestId> = self
            .senders
            .iter()
            .filter(|(_, tx)| tx.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for id in closed {
            self.senders.remove(&id);
            self.core.abort(id);
        }
    }

    fn route(&mut self, d: TokenDelta) {
        let id = d.request_id;
        let last = d.finish.is_some();
        let gone = match self.senders.get(&id) {
            Some(tx) => tx.send(d).is_err(),
            None => true,
        };
        if last {
            self.senders.remove(&id);
        } else if gone {
            self.senders.remove(&id);
            self.core.abort(id);
        }
    }

    fn publish(&self) {
        let s = self.core.scheduler();
        let st = &self.stats;
        st.kv_blocks_total
            .store(s.num_blocks_total(), Ordering::Relaxed);
        st.kv_blocks_used
            .store(s.num_blocks_used(), Ordering::Relaxed);
        st.block_size
            .store(s.config().block_size, Ordering::Relaxed);
        st.sequences_running
            .store(s.num_running(), Ordering::Relaxed);
        st.sequences_waiting
            .store(s.num_waiting(), Ordering::Relaxed);
        st.preemptions_total
            .store(s.num_preemptions(), Ordering::Relaxed);
    }
}
