//! How models are declared (`--model ID=SOURCE`, `--models-config`): `ModelDecl`, its
//! per-model `EngineOverrides`, and the rule for model ids.

use super::limits::{EngineLimits, KvMemory};
use crate::models::device::DTypeSpec;
use crate::store::ModelSpec;

/// A model id is a name, never a path: no `/`, `\`, `..`, control characters or leading dot.
pub fn validate_model_id(id: &str) -> Result<(), String> {
    let bad = id.is_empty()
        || id.len() > 128
        || id.contains(['/', '\\'])
        || id.contains("..")
        || id.starts_with('.')
        || id.chars().any(char::is_control);
    if bad {
        Err(format!(
            "invalid model id {id:?}: 1-128 characters, no '/', '\\', '..', leading '.' or control characters"
        ))
    } else {
        Ok(())
    }
}

/// How a model is declared.
#[derive(Debug, Clone)]
pub struct ModelDecl {
    pub spec: ModelSpec,
    /// Never evicted.
    pub pinned: bool,
    /// This model's own engine settings (`--models-config`), over the server's.
    pub overrides: EngineOverrides,
    /// LoRA adapters served on it (`--lora-modules NAME=PATH`): name and PEFT folder.
    pub loras: Vec<ModelSpec>,
}

impl ModelDecl {
    /// A model with the server's settings.
    pub fn new(spec: ModelSpec) -> Self {
        Self {
            spec,
            pinned: false,
            overrides: EngineOverrides::default(),
            loras: Vec::new(),
        }
    }
}

/// Per-model engine settings.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EngineOverrides {
    pub max_model_len: Option<usize>,
    pub kv_cache_memory: Option<KvMemory>,
    pub dtype: Option<DTypeSpec>,
    pub reasoning_parser: Option<crate::text::ReasoningParser>,
    pub task: Option<super::limits::ModelTask>,
}

impl EngineOverrides {
    pub fn apply(&self, mut limits: EngineLimits) -> EngineLimits {
        if let Some(m) = self.max_model_len {
            limits.max_model_len = Some(m);
        }
        if let Some(kv) = self.kv_cache_memory {
            limits.kv_cache_memory = kv;
            limits.num_kv_blocks = None;
        }
        if let Some(d) = self.dtype {
            limits.dtype = d;
        }
        if let Some(p) = self.reasoning_parser {
            limits.reasoning_parser = Some(p);
        }
        if let Some(t) = self.task {
            limits.task = t;
        }
        limits
    }
}
