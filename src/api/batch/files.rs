//! `FileStore`: uploaded files (`POST /v1/files`, purpose `batch`) and the output and error
//! files batches write, under the cache dir's `files/`: the content in `{id}`, OpenAI's file
//! object in `{id}.json` (written last, atomically: a file without it does not exist).

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// OpenAI's file object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileObject {
    pub id: String,
    pub object: String,
    pub bytes: u64,
    pub created_at: u64,
    pub filename: String,
    pub purpose: String,
    pub status: String,
}

pub struct FileStore {
    dir: PathBuf,
}

/// File ids weir makes and accepts: `file-` and hex digits (never a path).
pub fn valid_id(id: &str) -> bool {
    id.strip_prefix("file-")
        .is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn now() -> u64 {
    crate::api::openai::ids::unix_now()
}

impl FileStore {
    pub fn open(dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    fn content_path(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    fn meta_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Stores `content` as a new file.
    pub fn create(
        &self,
        filename: &str,
        purpose: &str,
        content: &[u8],
    ) -> std::io::Result<FileObject> {
        let id = format!("file-{:024x}", rand::random::<u128>() >> 32);
        write_atomic(&self.content_path(&id), content)?;
        let file = FileObject {
            id: id.clone(),
            object: "file".into(),
            bytes: content.len() as u64,
            created_at: now(),
            filename: filename.into(),
            purpose: purpose.into(),
            status: "processed".into(),
        };
        write_atomic(&self.meta_path(&id), &serde_json::to_vec(&file)?)?;
        Ok(file)
    }

    pub fn get(&self, id: &str) -> Option<FileObject> {
        if !valid_id(id) {
            return None;
        }
        let meta = std::fs::read(self.meta_path(id)).ok()?;
        serde_json::from_slice(&meta).ok()
    }

    pub fn content(&self, id: &str) -> Option<Vec<u8>> {
        self.get(id)?;
        std::fs::read(self.content_path(id)).ok()
    }

    /// Every file, newest first.
    pub fn list(&self) -> Vec<FileObject> {
        let mut files: Vec<FileObject> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                self.get(name.strip_suffix(".json")?)
            })
            .collect();
        files.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        files
    }

    pub fn delete(&self, id: &str) -> bool {
        if self.get(id).is_none() {
            return false;
        }
        let _ = std::fs::remove_file(self.meta_path(id));
        let _ = std::fs::remove_file(self.content_path(id));
        true
    }
}

/// Writes `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, content: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.{:x}.partial", rand::random::<u64>()));
    std::fs::write(&tmp, content)
        .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|_| std::fs::rename(&tmp, path))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_round_trip_and_ids_are_not_paths() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path().to_path_buf()).unwrap();
        let f = store.create("in.jsonl", "batch", b"{}\n").unwrap();
        assert!(valid_id(&f.id));
        assert_eq!(store.get(&f.id), Some(f.clone()));
        assert_eq!(store.content(&f.id).unwrap(), b"{}\n");
        assert_eq!(store.list(), vec![f.clone()]);
        assert!(store.delete(&f.id) && store.get(&f.id).is_none() && !store.delete(&f.id));
        for bad in ["file-", "file-../x", "../file-1", "x"] {
            assert!(!valid_id(bad) && store.get(bad).is_none(), "{bad}");
        }
    }
}
