//! `ConfigError`: why a checkpoint's hyper-parameters cannot be served.

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Something weir does not implement (a family, a field that changes the math).
    #[error("unsupported model: {0}")]
    Unsupported(String),
    /// A config that is malformed or inconsistent.
    #[error("invalid model config: {0}")]
    Invalid(String),
}
