//! OpenAI-compatible endpoints.

pub mod chat;
pub mod completions;
pub mod models;
pub mod tokenize;
pub mod types;

use super::error::{parse_json, ApiError};
use types::GenerationFields;

/// Parses a request body; errors inside the shared generation fields name their field.
pub fn parse_request<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    parse_json::<T>(body).map_err(|e| {
        let at_root = e.param.as_deref().is_none_or(|p| p == "." || p.is_empty());
        match (at_root, parse_json::<GenerationFields>(body)) {
            (true, Err(inner)) if inner.param.is_some() => inner,
            _ => e,
        }
    })
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A response id like `chatcmpl-3f2a…`.
pub fn response_id(prefix: &str) -> String {
    format!("{prefix}-{:032x}", rand::random::<u128>())
}
