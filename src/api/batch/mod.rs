//! The OpenAI Batch API: uploaded files (`files.rs`), batches (`job.rs`) and their runner. A
//! batch's lines run through the same handlers as HTTP requests (so validation, errors, keys,
//! limits and metrics are the same), marked as batch lines (`marker`): the scheduler queues
//! them behind every interactive request and preempts them first. State lives under the data
//! dir (`files/`, `batches/`); a restarted server resumes unfinished batches from their
//! journals.

pub mod files;
pub mod handlers;
pub mod job;
pub mod marker;

use crate::api::error::ApiError;
use crate::api::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use parking_lot::Mutex;
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Lines of one batch in flight at once.
const CONCURRENCY: usize = 8;

/// Files and batches, and the batches' state.
pub struct Batches {
    pub files: files::FileStore,
    dir: PathBuf,
    /// Every batch object, by id (persisted in `dir` on each change).
    batches: Mutex<HashMap<String, Value>>,
    /// API key of each batch's creator (its lines are charged to it).
    keys: Mutex<HashMap<String, Option<usize>>>,
}

impl Batches {
    /// The store under `data_dir` with the batches an earlier run left there.
    pub fn open(data_dir: PathBuf) -> std::io::Result<Self> {
        let dir = data_dir.join("batches");
        std::fs::create_dir_all(&dir)?;
        let mut batches = HashMap::new();
        let mut keys = HashMap::new();
        for e in std::fs::read_dir(&dir)?.flatten() {
            let name = e.file_name().into_string().unwrap_or_default();
            let Some(id) = name.strip_suffix(".json").filter(|id| job::valid_id(id)) else {
                continue;
            };
            let Some(v) = std::fs::read(e.path())
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            else {
                continue;
            };
            keys.insert(id.to_string(), v["weir_key"].as_u64().map(|k| k as usize));
            batches.insert(id.to_string(), v);
        }
        Ok(Self {
            files: files::FileStore::open(data_dir.join("files"))?,
            dir,
            batches: Mutex::new(batches),
            keys: Mutex::new(keys),
        })
    }

    /// The batch object as clients see it.
    pub fn get(&self, id: &str) -> Option<Value> {
        let mut v = self.batches.lock().get(id)?.clone();
        v.as_object_mut()?.remove("weir_key");
        Some(v)
    }

    pub fn list(&self) -> Vec<Value> {
        let ids: Vec<String> = self.batches.lock().keys().cloned().collect();
        let mut all: Vec<Value> = ids.iter().filter_map(|id| self.get(id)).collect();
        all.sort_by(|a, b| {
            (b["created_at"].as_u64(), b["id"].as_str())
                .cmp(&(a["created_at"].as_u64(), a["id"].as_str()))
        });
        all
    }

    /// Applies `change` to batch `id` and persists it.
    fn update(&self, id: &str, change: impl FnOnce(&mut Value)) -> Option<Value> {
        let mut map = self.batches.lock();
        let v = map.get_mut(id)?;
        change(v);
        if let Ok(text) = serde_json::to_vec(v) {
            if let Err(e) = files::write_atomic(&job::batch_path(&self.dir, id), &text) {
                tracing::warn!(batch = id, error = %e, "batch state not saved");
            }
        }
        Some(v.clone())
    }

    pub fn insert(&self, batch: Value, key: Option<usize>) {
        let id = batch["id"].as_str().unwrap_or_default().to_string();
        let mut stored = batch;
        stored["weir_key"] = key.map_or(Value::Null, Value::from);
        self.batches.lock().insert(id.clone(), stored.clone());
        self.keys.lock().insert(id.clone(), key);
        self.update(&id, |_| {});
    }

    /// Asks batch `id` to stop; the batch as it is then.
    pub fn cancel(&self, id: &str) -> Option<Value> {
        let now = crate::api::openai::ids::unix_now();
        self.update(id, |v| {
            if job::is_active(v["status"].as_str().unwrap_or_default())
                && v["status"] != "finalizing"
            {
                v["status"] = "cancelling".into();
                v["cancelling_at"] = now.into();
            }
        })?;
        self.get(id)
    }

    /// The ids of batches still to run (after a restart).
    pub fn active(&self) -> Vec<String> {
        let map = self.batches.lock();
        map.iter()
            .filter(|(_, v)| job::is_active(v["status"].as_str().unwrap_or_default()))
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// Starts (or resumes) the runner of batch `id`.
pub fn spawn(state: AppState, id: String) {
    tokio::spawn(async move {
        if let Err(e) = run(&state, &id).await {
            tracing::error!(batch = %id, error = %e, "batch failed");
            let now = crate::api::openai::ids::unix_now();
            state.batches.update(&id, |v| {
                v["status"] = "failed".into();
                v["failed_at"] = now.into();
                v["errors"] = serde_json::json!({"object": "list", "data": [{"code": "server_error", "message": e, "param": null, "line": null}]});
            });
        }
    });
}

/// Runs batch `id`'s lines not yet in its journal, then writes its output and error files.
async fn run(state: &AppState, id: &str) -> Result<(), String> {
    let b = &state.batches;
    let batch = b.get(id).ok_or("no such batch")?;
    let endpoint = batch["endpoint"].as_str().unwrap_or_default().to_string();
    let input = batch["input_file_id"].as_str().unwrap_or_default();
    let content = b.files.content(input).ok_or("the input file is gone")?;
    let lines = job::parse_lines(&String::from_utf8_lossy(&content), &endpoint);
    let journal = job::journal_path(&b.dir, id);
    let done = job::read_journal(&journal);
    let counts = |done: &std::collections::BTreeMap<usize, (bool, Value)>| {
        let ok = done.values().filter(|(ok, _)| *ok).count();
        serde_json::json!({"total": lines.len(), "completed": ok, "failed": done.len() - ok})
    };
    let now = crate::api::openai::ids::unix_now;
    b.update(id, |v| {
        if v["status"] == "validating" {
            v["status"] = "in_progress".into();
            v["in_progress_at"] = now().into();
        }
        v["request_counts"] = counts(&done);
    });
    let key = b.keys.lock().get(id).copied().flatten();
    let journal_lock = Arc::new(tokio::sync::Mutex::new(done));
    let todo: Vec<_> = {
        let done = journal_lock.lock().await;
        lines
            .iter()
            .filter(|(n, _)| !done.contains_key(n))
            .cloned()
            .collect()
    };
    futures::stream::iter(todo)
        .map(|(n, parsed)| {
            let (state, endpoint, journal, journal_lock) = (
                state.clone(),
                endpoint.clone(),
                journal.clone(),
                journal_lock.clone(),
            );
            async move {
                if b.get(id).is_some_and(|v| v["status"] == "cancelling") {
                    return;
                }
                let (ok, record) = match parsed {
                    Ok(line) => execute(&state, &endpoint, key, line).await,
                    Err((custom_id, message)) => (false, job::error_record(custom_id, &message)),
                };
                let mut done = journal_lock.lock().await;
                if let Err(e) = job::append_journal(&journal, n, ok, &record) {
                    tracing::warn!(batch = id, line = n, error = %e, "journal write failed");
                }
                done.insert(n, (ok, record));
                let c = counts(&done);
                b.update(id, |v| v["request_counts"] = c);
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
    let done = journal_lock.lock().await;
    finalize(state, id, &done)
}

/// Writes the output and error files (records in line order) and ends the batch.
fn finalize(
    state: &AppState,
    id: &str,
    done: &std::collections::BTreeMap<usize, (bool, Value)>,
) -> Result<(), String> {
    let b = &state.batches;
    let now = crate::api::openai::ids::unix_now;
    let cancelled = b.get(id).is_some_and(|v| v["status"] == "cancelling");
    b.update(id, |v| {
        v["finalizing_at"] = now().into();
        if !cancelled {
            v["status"] = "finalizing".into();
        }
    });
    let write = |ok: bool, name: &str| -> Result<Option<String>, String> {
        let text: String = done
            .values()
            .filter(|(o, _)| *o == ok)
            .map(|(_, r)| format!("{r}\n"))
            .collect();
        if text.is_empty() {
            return Ok(None);
        }
        let f = b
            .files
            .create(
                &format!("{id}_{name}.jsonl"),
                "batch_output",
                text.as_bytes(),
            )
            .map_err(|e| e.to_string())?;
        Ok(Some(f.id))
    };
    let (output, errors) = (write(true, "output")?, write(false, "error")?);
    b.update(id, |v| {
        v["output_file_id"] = output.into();
        v["error_file_id"] = errors.into();
        if cancelled {
            v["status"] = "cancelled".into();
            v["cancelled_at"] = now().into();
        } else {
            v["status"] = "completed".into();
            v["completed_at"] = now().into();
        }
    });
    let _ = std::fs::remove_file(job::journal_path(&b.dir, id));
    Ok(())
}

/// Runs one line through its endpoint's handler, as a batch line: (2xx, its record).
async fn execute(
    state: &AppState,
    endpoint: &str,
    key: Option<usize>,
    line: Value,
) -> (bool, Value) {
    let custom_id = line["custom_id"].clone();
    let body = Bytes::from(serde_json::to_vec(&line["body"]).expect("JSON serializes"));
    let key = key.map(|k| axum::Extension(crate::api::auth::KeyId(k)));
    let st = State(state.clone());
    let run = async {
        use crate::api::openai as o;
        let response: Result<Response, ApiError> = match endpoint {
            "/v1/chat/completions" => o::chat::chat_completions(st, key, Ok(body)).await,
            "/v1/completions" => o::completions::completions(st, key, Ok(body)).await,
            "/v1/embeddings" => o::embeddings::embeddings(st, key, Ok(body))
                .await
                .map(IntoResponse::into_response),
            "/v1/responses" => o::responses::create(st, key, Ok(body)).await,
            _ => Err(ApiError::invalid(
                Some("endpoint".into()),
                "unsupported endpoint",
            )),
        };
        response.unwrap_or_else(IntoResponse::into_response)
    };
    let response = marker::as_batch_line(run).await;
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (
        (200..300).contains(&status),
        job::response_record(custom_id, status, body),
    )
}
