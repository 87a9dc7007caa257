//! One step's data: what the HTTP layer hands the engine (`Request`, `SamplingParams`,
//! `StopConditions`), what the scheduler hands the model runner (`SchedulerOutput`), what the
//! runner answers (`ModelRunnerOutput`) and what the engine sends back per request
//! (`TokenDelta`, `FinishReason`, `TokenLogprobs`).
//!
//! Plain data at the bottom of the crate: this module imports nothing of the engine, the
//! scheduler, the runner, the API or the metrics, so every layer above can name these types
//! without naming each other.

pub mod output;
pub mod request;

pub use output::{
    FinishReason, ModelRunnerOutput, Sampled, ScheduledSeq, SchedulerOutput, TokenDelta,
    TokenLogprobs,
};
pub use request::{
    AdmissionError, BuildIdHasher, IdHasher, IdMap, LoraId, Request, RequestId, SamplingParams,
    SamplingState, SchedulingPolicy, StopConditions, Task,
};
