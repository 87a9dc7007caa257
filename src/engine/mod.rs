//! The engine: one thread per model runs continuous batching (`EngineCore`: the scheduler and
//! the model runner, which know nothing of each other). `EngineHandle` is the only way in.

pub mod core;
pub mod handle;
pub mod thread;

pub use handle::{DeltaStream, EngineError, EngineHandle, EngineStats, QueueLimits};
pub use thread::spawn_engine;
