//! weir: an OpenAI-compatible LLM inference server with continuous batching on a paged KV cache.

pub mod engine;
pub mod kv;
pub mod models;
pub mod runner;
