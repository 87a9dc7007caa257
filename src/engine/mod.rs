//! The engine: one thread per model runs continuous batching. `EngineHandle` is the only way in.

pub mod core;
pub mod handle;
pub mod output;
pub mod request;
pub mod scheduler;
pub mod sequence;

pub use handle::{spawn_engine, DeltaStream, EngineError, EngineHandle, EngineStats, QueueLimits};
pub use output::{TokenDelta, TokenLogprobs};
pub use request::{Request, RequestId, SamplingParams, StopConditions};
pub use sequence::FinishReason;
