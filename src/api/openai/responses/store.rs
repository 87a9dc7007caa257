//! `ResponseStore`: responses created with `store: true`, kept for `GET /v1/responses/{id}` and
//! `previous_response_id`. Each is one JSON file under the store's folder (the model cache's
//! `responses/`), written atomically; the least recently used go first once their bytes pass
//! the budget. File times carry the use order across restarts; without a folder the store
//! lives in memory only.

use parking_lot::Mutex;
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// What a stored response keeps: the response object as answered, and the conversation up to
/// and including its output as chat messages (what a follow-up continues).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StoredResponse {
    pub response: Value,
    pub messages: Vec<Value>,
}

#[derive(Debug, Clone, Default)]
pub struct StoreConfig {
    /// Where the files live; `None`: memory only.
    pub dir: Option<PathBuf>,
    pub max_bytes: u64,
}

struct Entry {
    record: Arc<StoredResponse>,
    bytes: u64,
    last_use: u64,
}

#[derive(Default)]
struct Index {
    entries: HashMap<String, Entry>,
    bytes: u64,
    clock: u64,
}

pub struct ResponseStore {
    config: StoreConfig,
    index: Mutex<Index>,
    /// Background responses still running, by id.
    running: Mutex<HashMap<String, tokio::task::AbortHandle>>,
}

/// Response ids weir makes and accepts: `resp_` and hex digits (never a path).
pub fn valid_id(id: &str) -> bool {
    id.strip_prefix("resp_")
        .is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl ResponseStore {
    /// The store over `config.dir`, with what an earlier run left there (oldest use first).
    pub fn open(config: StoreConfig) -> Self {
        let store = Self {
            config,
            index: Mutex::new(Index::default()),
            running: Mutex::new(HashMap::new()),
        };
        let Some(dir) = store.config.dir.clone() else {
            return store;
        };
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "response store: cannot create its folder");
        }
        let mut found: Vec<(std::time::SystemTime, String, StoredResponse, u64)> = Vec::new();
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let Some(id) = path.file_stem().and_then(|s| s.to_str()).map(String::from) else {
                continue;
            };
            let ok = path.extension().is_some_and(|e| e == "json") && valid_id(&id);
            let text = ok.then(|| std::fs::read(&path).ok()).flatten();
            match text.and_then(|t| serde_json::from_slice(&t).ok().map(|r| (r, t.len()))) {
                Some((record, len)) => {
                    let used = entry.metadata().and_then(|m| m.modified());
                    found.push((
                        used.unwrap_or(std::time::UNIX_EPOCH),
                        id,
                        record,
                        len as u64,
                    ));
                }
                None if ok => {
                    let _ = std::fs::remove_file(&path);
                }
                None => {}
            }
        }
        found.sort_by_key(|f| f.0);
        let mut interrupted = Vec::new();
        for (_, id, record, bytes) in found {
            if matches!(
                record.response["status"].as_str(),
                Some("queued" | "in_progress")
            ) {
                interrupted.push((id.clone(), record.clone()));
            }
            store.insert(id, Arc::new(record), bytes);
        }
        // background responses a previous run did not finish
        for (id, mut record) in interrupted {
            record.response["status"] = "failed".into();
            record.response["error"] = serde_json::json!({"code": "server_error",
                "message": "the server restarted before this background response finished"});
            store.put(&id, record);
        }
        store.evict();
        store
    }

    /// Registers the task computing background response `id` (until `finish_background`).
    pub fn start_background(&self, id: &str, task: tokio::task::AbortHandle) {
        self.running.lock().insert(id.to_string(), task);
    }

    pub fn finish_background(&self, id: &str) {
        self.running.lock().remove(id);
    }

    /// Stops background response `id` if it is still running (its sequence is aborted with
    /// the task); true when it was.
    pub fn cancel(&self, id: &str) -> bool {
        match self.running.lock().remove(id) {
            Some(task) => {
                task.abort();
                true
            }
            None => false,
        }
    }

    /// Stores `record` under `id` (replacing one there).
    pub fn put(&self, id: &str, record: StoredResponse) {
        let text = serde_json::to_vec(&record).expect("a stored response serializes");
        if let Some(dir) = &self.config.dir {
            let path = dir.join(format!("{id}.json"));
            if let Err(e) = crate::api::batch::files::write_atomic(&path, &text) {
                tracing::warn!(id, error = %e, "response store: write failed");
                return;
            }
        }
        self.insert(id.to_string(), Arc::new(record), text.len() as u64);
        self.evict();
    }

    /// The stored response `id`, now the most recently used.
    pub fn get(&self, id: &str) -> Option<Arc<StoredResponse>> {
        let mut index = self.index.lock();
        index.clock += 1;
        let clock = index.clock;
        let entry = index.entries.get_mut(id)?;
        entry.last_use = clock;
        let record = entry.record.clone();
        drop(index);
        if let Some(dir) = &self.config.dir {
            let touched = std::fs::File::options()
                .write(true)
                .open(dir.join(format!("{id}.json")))
                .and_then(|f| f.set_modified(std::time::SystemTime::now()));
            if let Err(e) = touched {
                tracing::debug!(id, error = %e, "response store: touch failed");
            }
        }
        Some(record)
    }

    /// Removes `id`; true when it was stored.
    pub fn delete(&self, id: &str) -> bool {
        let removed = {
            let mut index = self.index.lock();
            let entry = index.entries.remove(id);
            if let Some(e) = &entry {
                index.bytes -= e.bytes;
            }
            entry.is_some()
        };
        if let (true, Some(dir)) = (removed, &self.config.dir) {
            let _ = std::fs::remove_file(dir.join(format!("{id}.json")));
        }
        removed
    }

    fn insert(&self, id: String, record: Arc<StoredResponse>, bytes: u64) {
        let mut index = self.index.lock();
        index.clock += 1;
        let last_use = index.clock;
        if let Some(old) = index.entries.insert(
            id,
            Entry {
                record,
                bytes,
                last_use,
            },
        ) {
            index.bytes -= old.bytes;
        }
        index.bytes += bytes;
    }

    /// Drops the least recently used until the bytes fit the budget.
    fn evict(&self) {
        loop {
            let victim = {
                let index = self.index.lock();
                if index.bytes <= self.config.max_bytes {
                    return;
                }
                index
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.last_use)
                    .map(|(id, _)| id.clone())
            };
            match victim {
                Some(id) => {
                    self.delete(&id);
                }
                None => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(n: usize) -> StoredResponse {
        StoredResponse {
            response: json!({"id": format!("resp_{n:x}"), "pad": "x".repeat(100)}),
            messages: vec![json!({"role": "user", "content": "hi"})],
        }
    }

    #[test]
    fn keeps_the_recently_used_within_its_bytes_and_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            dir: Some(dir.path().to_path_buf()),
            max_bytes: 600,
        };
        let store = ResponseStore::open(config.clone());
        for n in 1..=3 {
            store.put(&format!("resp_{n:x}"), record(n));
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(store.get("resp_1").is_some()); // 1 is now newer than 2
        std::thread::sleep(std::time::Duration::from_millis(20));
        for n in 4..=6 {
            store.put(&format!("resp_{n:x}"), record(n));
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let kept: Vec<bool> = (1..=6)
            .map(|n| store.get(&format!("resp_{n:x}")).is_some())
            .collect();
        assert!(!kept[1] && kept[5], "{kept:?}"); // 2 went first; the newest stays
        drop(store);
        let again = ResponseStore::open(config);
        for n in 1..=6 {
            assert_eq!(
                again.get(&format!("resp_{n:x}")).is_some(),
                kept[n - 1],
                "{n}"
            );
        }
        assert!(again.delete("resp_6") && again.get("resp_6").is_none());
        assert!(!dir.path().join("resp_6.json").exists());
    }

    #[test]
    fn ids_are_never_paths() {
        assert!(valid_id("resp_0af3"));
        for bad in ["resp_", "resp_../x", "../resp_1", "resp_1/2", "msg_12"] {
            assert!(!valid_id(bad), "{bad}");
        }
    }
}
