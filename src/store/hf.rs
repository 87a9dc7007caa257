//! `hf://ORG/NAME[/FILE][@REV]`: a model in the Hugging Face cache layout
//! (`<hub>/models--ORG--NAME/{refs/REV, snapshots/COMMIT/...}`), the layout `huggingface_hub`,
//! transformers and vLLM share. A cached snapshot is used as is; otherwise, unless offline
//! (`HF_HUB_OFFLINE`), the model's files are downloaded into that cache with the `hf-hub` crate.
//! The snapshot directory then opens like any local model (config.json + safetensors +
//! tokenizer.json, or a single .gguf); with a FILE (one .gguf of a repository holding several
//! quantizations) only that file is fetched and opened.

use super::{LocalModel, StoreError};
use std::path::{Path, PathBuf};

/// Where the cache is and whether the Hub may be reached.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// The hub cache directory (`HF_HUB_CACHE`, else `HF_HOME/hub`, else
    /// `~/.cache/huggingface/hub`).
    pub cache: PathBuf,
    pub offline: bool,
}

/// A parsed `hf://` source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfSource {
    pub repo: String,
    pub revision: String,
    /// One file of the repository (its path in it), instead of the whole model.
    pub file: Option<String>,
}

impl HfSource {
    /// `hf://ORG/NAME[@REV]`; `None` when `source` is not an `hf://` source.
    pub fn parse(source: &str) -> Option<Result<Self, StoreError>> {
        let rest = source.strip_prefix("hf://")?;
        let bad = |reason: &str| StoreError::BadSource {
            path: source.to_string(),
            reason: reason.to_string(),
        };
        let (repo, revision) = match rest.split_once('@') {
            Some((r, rev)) => (r, rev),
            None => (rest, "main"),
        };
        let name_ok = |s: &str| {
            !s.is_empty()
                && !s.starts_with('.')
                && !s.contains("..")
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        let parts: Vec<&str> = repo.split('/').collect();
        if parts.len() < 2 || !parts.iter().all(|p| name_ok(p)) {
            return Some(Err(bad("expected hf://ORG/NAME[/FILE][@REVISION]")));
        }
        let file = (parts.len() > 2).then(|| parts[2..].join("/"));
        if revision.is_empty()
            || revision.contains("..")
            || !revision
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        {
            return Some(Err(bad("bad revision")));
        }
        Some(Ok(Self {
            repo: parts[..2].join("/"),
            revision: revision.to_string(),
            file,
        }))
    }

    fn repo_dir(&self, hub: &HubConfig) -> PathBuf {
        hub.cache
            .join(format!("models--{}", self.repo.replace('/', "--")))
    }

    /// The cached snapshot of this revision, if any: `refs/REV` names a commit, or REV is a
    /// commit with a snapshot.
    pub fn cached_snapshot(&self, hub: &HubConfig) -> Option<PathBuf> {
        let dir = self.repo_dir(hub);
        let commit = std::fs::read_to_string(dir.join("refs").join(&self.revision))
            .map(|c| c.trim().to_string())
            .unwrap_or_else(|_| self.revision.clone());
        let snap = dir.join("snapshots").join(commit);
        snap.is_dir().then_some(snap)
    }

    /// The snapshot directory (or the one file asked for), downloading what is not cached.
    pub fn fetch(&self, hub: &HubConfig) -> Result<PathBuf, StoreError> {
        let cached = self.cached_snapshot(hub);
        match (&self.file, cached) {
            (None, Some(s)) => return Ok(s),
            (Some(f), Some(s)) if s.join(f).is_file() => return Ok(s.join(f)),
            _ => {}
        }
        let source = format!("hf://{}@{}", self.repo, self.revision);
        if hub.offline {
            return Err(StoreError::BadSource {
                path: source,
                reason: format!(
                    "not in the Hugging Face cache {} and HF_HUB_OFFLINE is set",
                    hub.cache.display()
                ),
            });
        }
        let fetch_err = |e: hf_hub::api::sync::ApiError| StoreError::Fetch {
            url: source.clone(),
            reason: e.to_string(),
        };
        let api = hf_hub::api::sync::ApiBuilder::new()
            .with_cache_dir(hub.cache.clone())
            .with_progress(true)
            .build()
            .map_err(fetch_err)?;
        let repo = api.repo(hf_hub::Repo::with_revision(
            self.repo.clone(),
            hf_hub::RepoType::Model,
            self.revision.clone(),
        ));
        if let Some(f) = &self.file {
            return repo.get(f).map_err(fetch_err);
        }
        let info = repo.info().map_err(fetch_err)?;
        // the repository's top level only (a PEFT repository's checkpoint-*/ folders are not read)
        let wanted = |f: &str| {
            let named = matches!(
                f,
                "config.json"
                    | "adapter_config.json"
                    | "tokenizer.json"
                    | "tokenizer_config.json"
                    | "generation_config.json"
            );
            !f.contains('/')
                && (named || f.ends_with(".safetensors") || f.ends_with(".safetensors.index.json"))
        };
        let mut snapshot = None;
        for s in info.siblings.iter().filter(|s| wanted(&s.rfilename)) {
            let path = repo.get(&s.rfilename).map_err(fetch_err)?;
            snapshot = path.parent().map(Path::to_path_buf);
        }
        snapshot.ok_or_else(|| StoreError::BadSource {
            path: source,
            reason: "the repository has no config.json / safetensors to serve".into(),
        })
    }
}

/// Opens a snapshot directory: an HF-style directory, or the single .gguf it holds.
pub fn open_snapshot(dir: &Path) -> Result<LocalModel, StoreError> {
    if dir.join("config.json").is_file() {
        return LocalModel::open(dir);
    }
    let ggufs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| StoreError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    match ggufs.as_slice() {
        [one] => LocalModel::open(one),
        _ => Err(StoreError::BadSource {
            path: dir.display().to_string(),
            reason: "a snapshot needs config.json or exactly one .gguf".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources() {
        let s = HfSource::parse("hf://HuggingFaceTB/SmolLM2-135M-Instruct@v1.0")
            .unwrap()
            .unwrap();
        assert_eq!(
            (s.repo.as_str(), s.revision.as_str()),
            ("HuggingFaceTB/SmolLM2-135M-Instruct", "v1.0")
        );
        assert_eq!(
            HfSource::parse("hf://a/b").unwrap().unwrap().revision,
            "main"
        );
        assert!(HfSource::parse("/models/x.gguf").is_none());
        let f = HfSource::parse("hf://org/m-GGUF/q4/m-Q4_K_M.gguf@v2")
            .unwrap()
            .unwrap();
        assert_eq!(
            (f.repo.as_str(), f.file.as_deref(), f.revision.as_str()),
            ("org/m-GGUF", Some("q4/m-Q4_K_M.gguf"), "v2")
        );
        for bad in [
            "hf://a",
            "hf://a/b/../c",
            "hf://../b",
            "hf://a/..",
            "hf://a/b@../x",
            "hf://a/b@",
        ] {
            assert!(HfSource::parse(bad).unwrap().is_err(), "{bad}");
        }
    }

    #[test]
    fn finds_a_cached_snapshot_by_ref_or_commit() {
        let tmp = tempfile::tempdir().unwrap();
        let hub = HubConfig {
            cache: tmp.path().to_path_buf(),
            offline: true,
        };
        let repo = tmp.path().join("models--org--m");
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::create_dir_all(repo.join("snapshots/abc123")).unwrap();
        std::fs::write(repo.join("refs/main"), "abc123\n").unwrap();
        let by_ref = HfSource::parse("hf://org/m").unwrap().unwrap();
        assert_eq!(by_ref.fetch(&hub).unwrap(), repo.join("snapshots/abc123"));
        let by_commit = HfSource::parse("hf://org/m@abc123").unwrap().unwrap();
        assert_eq!(
            by_commit.cached_snapshot(&hub),
            Some(repo.join("snapshots/abc123"))
        );
        let missing = HfSource::parse("hf://org/other").unwrap().unwrap();
        let err = missing.fetch(&hub).unwrap_err().to_string();
        assert!(err.contains("HF_HUB_OFFLINE"), "{err}");
    }
}
