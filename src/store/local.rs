//! `ModelSpec` (`ID=SOURCE` from the command line) and `LocalModel`, a validated local source:
//! a `.gguf` file or a Hugging Face style directory.

use super::StoreError;
use std::path::{Path, PathBuf};

/// A model the server is asked to serve: its public id and where its files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    pub id: String,
    pub source: String,
}

impl std::str::FromStr for ModelSpec {
    type Err = String;

    /// `ID=SOURCE`, or just `SOURCE` (the id is then the file or directory name).
    fn from_str(s: &str) -> Result<Self, String> {
        let (id, source) = match s.split_once('=') {
            Some((id, src)) => (id.trim().to_string(), src.trim().to_string()),
            None => {
                let p = Path::new(s.trim_end_matches('/'));
                let id = p
                    .file_stem()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (id, s.to_string())
            }
        };
        if id.is_empty() || source.is_empty() {
            return Err(format!("expected ID=SOURCE, got {s:?}"));
        }
        Ok(Self { id, source })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalModel {
    /// A single GGUF file: weights, tokenizer and chat template.
    Gguf(PathBuf),
    /// config.json + *.safetensors + tokenizer.json (+ tokenizer_config.json,
    /// generation_config.json).
    HfDir {
        dir: PathBuf,
        safetensors: Vec<PathBuf>,
    },
    /// A config.json alone (or a directory holding one, maybe with tokenizer.json), for
    /// `--load-format dummy`.
    ConfigOnly { config: PathBuf },
}

impl LocalModel {
    /// The source of a `--load-format dummy` model: a config.json, or a directory with one.
    pub fn open_config(path: &Path) -> Result<Self, StoreError> {
        let config = if path.is_dir() {
            path.join("config.json")
        } else {
            path.to_path_buf()
        };
        if !config.is_file() {
            return Err(StoreError::BadSource {
                path: path.display().to_string(),
                reason: "--load-format dummy needs a config.json (or a directory holding one)"
                    .into(),
            });
        }
        Ok(Self::ConfigOnly { config })
    }

    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let bad = |reason: &str| StoreError::BadSource {
            path: path.display().to_string(),
            reason: reason.to_string(),
        };
        if path.is_file() {
            if path.extension().and_then(|e| e.to_str()) != Some("gguf") {
                return Err(bad("a model file must be .gguf"));
            }
            return Ok(Self::Gguf(path.to_path_buf()));
        }
        if !path.is_dir() {
            return Err(bad("no such file or directory"));
        }
        for required in ["config.json", "tokenizer.json"] {
            if !path.join(required).is_file() {
                return Err(bad(&format!("directory lacks {required}")));
            }
        }
        let mut safetensors: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| StoreError::io(path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("safetensors"))
            .collect();
        safetensors.sort();
        if safetensors.is_empty() {
            return Err(bad("directory holds no *.safetensors"));
        }
        Ok(Self::HfDir {
            dir: path.to_path_buf(),
            safetensors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_model_specs() {
        let s: ModelSpec = "smol=/m/smol.gguf".parse().unwrap();
        assert_eq!((s.id.as_str(), s.source.as_str()), ("smol", "/m/smol.gguf"));
        let s: ModelSpec = "/m/Llama-3-8B/".parse().unwrap();
        assert_eq!(s.id, "Llama-3-8B");
        assert!("=x".parse::<ModelSpec>().is_err());
    }

    #[test]
    fn rejects_bad_sources() {
        let dir = tempfile::tempdir().unwrap();
        assert!(LocalModel::open(&dir.path().join("nope")).is_err());
        let err = LocalModel::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("config.json"), "{err}");
        let f = dir.path().join("w.bin");
        std::fs::write(&f, b"x").unwrap();
        assert!(LocalModel::open(&f).is_err());
    }
}
