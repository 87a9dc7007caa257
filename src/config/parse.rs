//! Single flag values: sizes (`2GiB`, `512MiB`), KV memory (a size or a share), the scheduling
//! policy, the weight format, and the `--models-config` TOML file.

use crate::manager::limits::KvMemory;
use crate::models::WeightFormat;
use crate::step::SchedulingPolicy;
use crate::store::ModelSpec;

pub fn parse_policy(s: &str) -> Result<SchedulingPolicy, String> {
    match s {
        "fcfs" => Ok(SchedulingPolicy::Fcfs),
        "priority" => Ok(SchedulingPolicy::Priority),
        _ => Err(format!("expected fcfs or priority, got {s:?}")),
    }
}

pub fn parse_weight_format(s: &str) -> Result<WeightFormat, String> {
    match s {
        "auto" | "quantized" => Ok(WeightFormat::Quantized),
        "dense" => Ok(WeightFormat::Dense),
        _ => Err(format!("expected auto, dense or quantized, got {s:?}")),
    }
}

/// "50%" or "0.5" (a share of available memory), else a size for `parse_bytes`.
pub fn parse_kv_memory(s: &str) -> Result<KvMemory, String> {
    let s = s.trim();
    let fraction = match s.strip_suffix('%') {
        Some(p) => Some(
            p.trim()
                .parse::<f64>()
                .map_err(|_| format!("bad percentage {s:?}"))?
                / 100.0,
        ),
        None if s.contains('.') && s.parse::<f64>().is_ok() => s.parse::<f64>().ok(),
        None => None,
    };
    match fraction {
        Some(f) if f > 0.0 && f <= 1.0 => Ok(KvMemory::FractionOfAvailable(f)),
        Some(_) => Err(format!("a share of memory must be in (0, 1], got {s:?}")),
        None => parse_bytes(s).map(KvMemory::Bytes),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelsFile {
    #[serde(default)]
    models: Vec<ModelToml>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelToml {
    id: String,
    source: String,
    #[serde(default)]
    pinned: bool,
    max_model_len: Option<usize>,
    kv_cache_memory: Option<String>,
    dtype: Option<String>,
    reasoning_parser: Option<String>,
    task: Option<String>,
    /// LoRA adapters served on this model.
    #[serde(default)]
    loras: Vec<LoraToml>,
}

/// `{ name = "NAME", path = "PEFT folder" }`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LoraToml {
    name: String,
    path: String,
}

/// The models of a `--models-config` file.
pub fn parse_models_config(text: &str) -> Result<Vec<crate::manager::ModelDecl>, String> {
    let file: ModelsFile = toml::from_str(text).map_err(|e| e.to_string())?;
    file.models
        .into_iter()
        .map(|m| {
            let at = |e: String| format!("model {:?}: {e}", m.id);
            Ok(crate::manager::ModelDecl {
                spec: ModelSpec {
                    id: m.id.clone(),
                    source: m.source.clone(),
                },
                pinned: m.pinned,
                loras: m
                    .loras
                    .iter()
                    .map(|l| ModelSpec {
                        id: l.name.clone(),
                        source: l.path.clone(),
                    })
                    .collect(),
                overrides: crate::manager::EngineOverrides {
                    max_model_len: m.max_model_len,
                    kv_cache_memory: m
                        .kv_cache_memory
                        .as_deref()
                        .map(parse_kv_memory)
                        .transpose()
                        .map_err(at)?,
                    dtype: m.dtype.as_deref().map(str::parse).transpose().map_err(at)?,
                    reasoning_parser: m
                        .reasoning_parser
                        .as_deref()
                        .map(str::parse)
                        .transpose()
                        .map_err(at)?,
                    task: m.task.as_deref().map(str::parse).transpose().map_err(at)?,
                },
            })
        })
        .collect()
}

/// "2GiB", "512MiB", "1.5GB", "4096".
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("bad size {s:?}"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        u => return Err(format!("unknown size unit {u:?} in {s:?}")),
    };
    Ok((n * mult) as u64)
}

/// vLLM's `KVEventsConfig` JSON: `None` when events are off. Unknown fields are errors.
pub fn parse_kv_events_config(
    json: &str,
) -> Result<Option<crate::kv_events::KvEventsConfig>, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Wire {
        #[serde(default)]
        enable_kv_cache_events: bool,
        publisher: Option<String>,
        endpoint: Option<String>,
        replay_endpoint: Option<String>,
        buffer_steps: Option<usize>,
        /// ZeroMQ's high-water mark: zeromq drops for a slow subscriber on its own queue
        /// bound; accepted for compatibility.
        #[allow(dead_code)]
        hwm: Option<u64>,
        max_queue_size: Option<usize>,
        topic: Option<String>,
    }
    let w: Wire = serde_json::from_str(json).map_err(|e| format!("--kv-events-config: {e}"))?;
    match w.publisher.as_deref() {
        None | Some("zmq") => {}
        Some("null") => return Ok(None),
        Some(p) => {
            return Err(format!(
                "--kv-events-config: publisher {p:?}: expected zmq or null"
            ))
        }
    }
    if !w.enable_kv_cache_events {
        return Ok(None);
    }
    let d = crate::kv_events::KvEventsConfig::default();
    Ok(Some(crate::kv_events::KvEventsConfig {
        endpoint: w.endpoint.unwrap_or(d.endpoint),
        replay_endpoint: w.replay_endpoint,
        buffer_steps: w.buffer_steps.unwrap_or(d.buffer_steps),
        max_queue_size: w.max_queue_size.unwrap_or(d.max_queue_size),
        topic: w.topic.unwrap_or(d.topic),
    }))
}
