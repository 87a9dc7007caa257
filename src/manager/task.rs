//! Which task a loaded model serves (`--task`): an encoder embeds; a decoder generates, or
//! embeds when asked to or when its folder is a sentence-transformers model (a Pooling module in
//! `modules.json`, as Qwen3-Embedding ships).

use super::limits::ModelTask;
use crate::models::bert::{normalizes, Pooling};
use crate::models::config::ConfigError;
use crate::models::{EmbeddingInfo, Model};
use crate::store::LocalModel;

/// Makes `model` an embedding model where `task` (and, under `Auto`, its folder) says so, or
/// refuses a task it cannot serve.
pub fn apply_task(
    model: &mut dyn Model,
    local: &LocalModel,
    task: ModelTask,
) -> Result<(), ConfigError> {
    let dir = match local {
        LocalModel::HfDir { dir, .. } => Some(dir.as_path()),
        _ => None,
    };
    let pooling = dir
        .map(Pooling::from_sentence_transformers)
        .transpose()?
        .flatten();
    let encoder = model.embedding().is_some();
    let embed = match task {
        ModelTask::Generate if encoder => {
            return Err(ConfigError::Unsupported(
                "--task generate for an encoder (BERT), which serves embeddings only".into(),
            ))
        }
        ModelTask::Generate => false,
        ModelTask::Embed => true,
        ModelTask::Auto => pooling.is_some(),
    };
    if !embed || encoder {
        return Ok(());
    }
    if let Some(Pooling::Cls) = pooling {
        return Err(ConfigError::Unsupported(
            "modules.json pooling cls of a decoder (weir pools a decoder by its last token or the mean)".into(),
        ));
    }
    let cfg = model.config();
    let json = dir.and_then(|d| std::fs::read(d.join("config.json")).ok());
    let json: serde_json::Value = json
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let info = EmbeddingInfo {
        dims: cfg.hidden_size,
        // vLLM's default for an embedding model without a sentence-transformers config
        normalized: dir.is_none_or(|d| !d.join("modules.json").is_file() || normalizes(d)),
        matryoshka: json.get("is_matryoshka").and_then(|v| v.as_bool()) == Some(true)
            || json.get("matryoshka_dimensions").is_some(),
        scores: false,
        mean: pooling == Some(Pooling::Mean),
    };
    if !model.set_embedding(info) {
        return Err(ConfigError::Unsupported(
            "--task embed for this model's family (Gemma generates only)".into(),
        ));
    }
    Ok(())
}
