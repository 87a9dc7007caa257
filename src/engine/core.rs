//! `EngineCore`: scheduler + model runner. `step()` is one iteration of continuous batching:
//! schedule, run one batched forward pass, sample, apply. Synchronous so tests can drive it.

use crate::runner::ModelRunner;
use crate::scheduler::Scheduler;
use crate::step::{AdmissionError, FinishReason, Request, RequestId, TokenDelta};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

pub struct EngineCore {
    scheduler: Scheduler,
    runner: ModelRunner,
}

/// What one step did, for the engine loop's gauges.
#[derive(Debug, Default, Clone)]
pub struct StepStats {
    pub num_seqs: usize,
    pub num_batched_tokens: usize,
    /// Tokens that were not plain decodes (prompt chunks, recomputation).
    pub num_prompt_tokens: usize,
    pub num_preempted: usize,
    /// The requests that ran in this step.
    pub scheduled: Vec<RequestId>,
    /// Time in schedule, forward, sample and update (`metrics::StepPhase::ALL` order).
    pub phases: [Duration; 4],
    /// Speculative decoding in this step.
    pub spec: crate::scheduler::spec::SpecStats,
}

impl EngineCore {
    pub fn new(scheduler: Scheduler, runner: ModelRunner) -> Self {
        Self { scheduler, runner }
    }

    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    pub fn add(&mut self, req: Request) -> Result<(), AdmissionError> {
        self.scheduler.add(req)
    }

    pub fn abort(&mut self, id: RequestId) -> bool {
        self.scheduler.abort(id)
    }

    /// Logs the prefix cache's stores and evictions (`take_kv_events`).
    pub fn enable_kv_events(&mut self) {
        self.scheduler.enable_kv_events();
    }

    /// The prefix cache's events since the last call.
    pub fn take_kv_events(&mut self) -> Vec<crate::kv::KvEvent> {
        self.scheduler.take_kv_events()
    }

    pub fn has_work(&self) -> bool {
        self.scheduler.has_work()
    }

    /// One step. A failing (or panicking) forward pass ends the scheduled requests with
    /// `FinishReason::Error` and frees their blocks; the engine keeps serving the rest.
    pub fn step(&mut self) -> (Vec<TokenDelta>, StepStats) {
        let started = Instant::now();
        let mut out = self.scheduler.schedule();
        let scheduled = Instant::now();
        let mut stats = StepStats {
            num_seqs: out.scheduled.len(),
            num_batched_tokens: out.num_batched_tokens,
            num_prompt_tokens: out.num_prompt_tokens,
            num_preempted: out.preempted.len(),
            scheduled: out.scheduled.iter().map(|s| s.request_id).collect(),
            phases: [
                scheduled - started,
                Duration::ZERO,
                Duration::ZERO,
                Duration::ZERO,
            ],
            spec: Default::default(),
        };
        if out.is_empty() {
            return (Vec::new(), stats);
        }
        let result = catch_unwind(AssertUnwindSafe(|| self.runner.execute(&mut out)));
        let ran = Instant::now();
        let mut forward = Duration::ZERO;
        let deltas = match result {
            Ok(Ok(runner_out)) => {
                forward = runner_out.forward_time.min(ran - scheduled);
                self.scheduler.update_from_output(&mut out, runner_out)
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "forward pass failed");
                self.scheduler
                    .fail_scheduled(&out, &format!("model execution failed: {e}"))
            }
            Err(_) => {
                tracing::error!("forward pass panicked");
                self.scheduler
                    .fail_scheduled(&out, "model execution panicked")
            }
        };
        stats.spec = self.scheduler.take_spec_stats();
        if stats.num_prompt_tokens == 0 && forward > Duration::ZERO {
            // a decode step that ran (a failed one reports no forward time)
            let took = (ran - scheduled).as_secs_f64();
            self.scheduler.observe_step(stats.num_batched_tokens, took);
        }
        stats.phases[1] = forward;
        stats.phases[2] = ran - scheduled - forward;
        stats.phases[3] = ran.elapsed();
        (deltas, stats)
    }

    /// Ends a request with `reason` (for example a client that went away).
    pub fn finish(&mut self, id: RequestId, reason: FinishReason) -> Option<TokenDelta> {
        self.scheduler.finish(id, reason)
    }
}
