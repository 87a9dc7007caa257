//! weir: an OpenAI-compatible LLM inference server with continuous batching on a paged KV cache.

pub mod api;
pub mod bench;
pub mod config;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod engine;
pub mod kv;
pub mod kv_events;
pub mod manager;
pub mod metrics;
pub mod models;
pub mod runner;
pub mod scheduler;
pub mod step;
pub mod store;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
pub mod text;
