//! `gs://BUCKET/PREFIX`: a model's files in Google Cloud Storage, downloaded into the model cache
//! (`<cache>/gcs/BUCKET/PREFIX/`) through the JSON API.
//!
//! - Endpoint: `https://storage.googleapis.com`, or `STORAGE_EMULATOR_HOST` (no credentials
//!   then). Credentials otherwise: a service-account key file (`GOOGLE_APPLICATION_CREDENTIALS`:
//!   an RS256-signed JWT exchanged at its `token_uri`), else the metadata server (GCE, GKE, Cloud
//!   Run).
//! - Each object streams into `<file>.partial`; a transient failure (connection, 408/429/5xx, a
//!   cut body) is retried with exponential backoff and jitter, resuming with `Range` from the bytes
//!   already on disk. The whole file is then checked against the object's MD5 (or CRC32C) and
//!   renamed into place: a corrupted or partial download is never loaded.
//! - A manifest (`.weir-gcs.json`: name, generation, size, hash per object) written last marks
//!   a complete copy; a later load with matching object metadata downloads nothing.
//! - A model's files download in parallel, with a progress bar.

use super::StoreError;
use base64::Engine as _;
use md5::{Digest, Md5};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How to reach GCS.
#[derive(Debug, Clone)]
pub struct GcsConfig {
    /// `https://storage.googleapis.com`, or the emulator's URL.
    pub endpoint: String,
    /// No credentials (an emulator).
    pub anonymous: bool,
    /// A service-account key file; without one, the metadata server's token.
    pub credentials: Option<PathBuf>,
    /// The model cache; objects land under `gcs/BUCKET/PREFIX`.
    pub cache_dir: PathBuf,
    /// Attempts per object before giving up.
    pub max_attempts: u32,
}

impl GcsConfig {
    /// From `STORAGE_EMULATOR_HOST` (read by `config`): `host:port` or a URL.
    pub fn new(emulator_host: Option<&str>, cache_dir: PathBuf) -> Self {
        let (endpoint, anonymous) = match emulator_host {
            Some(h) if h.starts_with("http") => (h.trim_end_matches('/').to_string(), true),
            Some(h) => (format!("http://{}", h.trim_end_matches('/')), true),
            None => ("https://storage.googleapis.com".to_string(), false),
        };
        Self {
            endpoint,
            anonymous,
            credentials: None,
            cache_dir,
            max_attempts: 8,
        }
    }
}

/// A parsed `gs://` source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcsSource {
    pub bucket: String,
    pub prefix: String,
}

impl GcsSource {
    /// `gs://BUCKET/PREFIX`; `None` when `source` is not a `gs://` source.
    pub fn parse(source: &str) -> Option<Result<Self, StoreError>> {
        let rest = source.strip_prefix("gs://")?;
        let bad = |reason: &str| StoreError::BadSource {
            path: source.to_string(),
            reason: reason.to_string(),
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_end_matches('/');
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')
            });
        if !bucket_ok {
            return Some(Err(bad("bad bucket name")));
        }
        let prefix_ok = !prefix.is_empty()
            && prefix
                .split('/')
                .all(|p| !p.is_empty() && p != "." && p != "..")
            && !prefix.chars().any(char::is_control);
        if !prefix_ok {
            return Some(Err(bad(
                "expected gs://BUCKET/PREFIX (a folder of model files)",
            )));
        }
        Some(Ok(Self {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        }))
    }

    fn local_dir(&self, cfg: &GcsConfig) -> PathBuf {
        cfg.cache_dir
            .join("gcs")
            .join(&self.bucket)
            .join(&self.prefix)
    }
}

/// One object's metadata.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Object {
    name: String,
    size: u64,
    generation: String,
    md5: Option<String>,
    crc32c: Option<String>,
}

const MANIFEST: &str = ".weir-gcs.json";

struct Client {
    http: reqwest::Client,
    cfg: GcsConfig,
    token: Option<String>,
}

/// Whether a failed attempt is worth retrying.
enum Failure {
    Transient(String),
    Fatal(String),
}

fn status_failure(status: reqwest::StatusCode, what: &str) -> Failure {
    let msg = format!("{what}: HTTP {status}");
    if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
        Failure::Transient(msg)
    } else {
        Failure::Fatal(msg)
    }
}

impl Client {
    async fn new(cfg: &GcsConfig) -> Result<Self, StoreError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| fetch_err(&cfg.endpoint, e.to_string()))?;
        let token = match (&cfg.anonymous, &cfg.credentials) {
            (true, _) => None,
            (false, Some(path)) => Some(service_account_token(&http, path).await?),
            (false, None) => Some(metadata_token(&http).await?),
        };
        Ok(Self {
            http,
            cfg: cfg.clone(),
            token,
        })
    }

    fn get(&self, url: &str) -> reqwest::RequestBuilder {
        let r = self.http.get(url);
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Every object under `prefix/` (or, `exact`, the object named `prefix` itself), with
    /// retries.
    async fn list(&self, src: &GcsSource, exact: bool) -> Result<Vec<Object>, StoreError> {
        let mut out = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let url = format!("{}/storage/v1/b/{}/o", self.cfg.endpoint, src.bucket);
            let v: serde_json::Value = retry(&self.cfg, &url, || async {
                let prefix = if exact {
                    src.prefix.clone()
                } else {
                    format!("{}/", src.prefix)
                };
                let mut q = vec![("prefix", prefix)];
                if let Some(p) = &page {
                    q.push(("pageToken", p.clone()));
                }
                let r = self
                    .get(&url)
                    .query(&q)
                    .send()
                    .await
                    .map_err(|e| Failure::Transient(e.to_string()))?;
                if !r.status().is_success() {
                    return Err(status_failure(r.status(), "listing objects"));
                }
                r.json::<serde_json::Value>()
                    .await
                    .map_err(|e| Failure::Transient(e.to_string()))
            })
            .await?;
            for item in v["items"].as_array().into_iter().flatten() {
                let name = item["name"].as_str().unwrap_or_default().to_string();
                if name.ends_with('/') || (exact && name != src.prefix) {
                    continue; // a folder placeholder, or another object sharing the name's start
                }
                out.push(Object {
                    size: item["size"]
                        .as_str()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0),
                    generation: item["generation"].as_str().unwrap_or_default().to_string(),
                    md5: item["md5Hash"].as_str().map(String::from),
                    crc32c: item["crc32c"].as_str().map(String::from),
                    name,
                });
            }
            match v["nextPageToken"].as_str() {
                Some(t) => page = Some(t.to_string()),
                None => return Ok(out),
            }
        }
    }

    /// Downloads `obj` to `dest`, resuming a cut transfer, and checks its hash.
    async fn download_from(
        &self,
        bucket: &str,
        obj: &Object,
        dest: &Path,
        bar: &indicatif::ProgressBar,
    ) -> Result<(), StoreError> {
        let partial = dest.with_extension(format!(
            "{}partial",
            dest.extension()
                .map_or(String::new(), |e| format!("{}.", e.to_string_lossy()))
        ));
        let _ = std::fs::remove_file(&partial);
        let url = format!(
            "{}/download/storage/v1/b/{}/o/{}",
            self.cfg.endpoint,
            bucket,
            urlencode(&obj.name)
        );
        retry(&self.cfg, &url, || async {
            let have = std::fs::metadata(&partial).map_or(0, |m| m.len());
            if have == obj.size && obj.size > 0 {
                return Ok(());
            }
            let mut req = self
                .get(&url)
                .query(&[("alt", "media"), ("generation", obj.generation.as_str())]);
            if have > 0 {
                req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
            }
            let mut r = req
                .send()
                .await
                .map_err(|e| Failure::Transient(e.to_string()))?;
            let status = r.status();
            if !status.is_success() {
                return Err(status_failure(status, "downloading"));
            }
            // a server that ignores Range sends the whole object: start over
            let append = have > 0 && status.as_u16() == 206;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(append)
                .write(true)
                .truncate(!append)
                .open(&partial)
                .map_err(|e| Failure::Fatal(e.to_string()))?;
            while let Some(chunk) = r
                .chunk()
                .await
                .map_err(|e| Failure::Transient(e.to_string()))?
            {
                f.write_all(&chunk)
                    .map_err(|e| Failure::Fatal(e.to_string()))?;
                bar.inc(chunk.len() as u64);
            }
            f.flush().map_err(|e| Failure::Fatal(e.to_string()))?;
            let got = std::fs::metadata(&partial).map_or(0, |m| m.len());
            if got != obj.size {
                return Err(Failure::Transient(format!(
                    "{} of {} bytes arrived",
                    got, obj.size
                )));
            }
            Ok(())
        })
        .await?;
        if let Err(reason) = verify(&partial, obj) {
            let _ = std::fs::remove_file(&partial);
            return Err(StoreError::BadSource {
                path: format!("gs://{bucket}/{}", obj.name),
                reason,
            });
        }
        std::fs::rename(&partial, dest).map_err(|e| StoreError::io(dest, e))
    }
}

/// Checks a downloaded file against the object's MD5 (or CRC32C when it has no MD5).
fn verify(path: &Path, obj: &Object) -> Result<(), String> {
    let data = std::fs::read(path).map_err(|e| e.to_string())?;
    let b64 = base64::engine::general_purpose::STANDARD;
    if let Some(want) = &obj.md5 {
        let got = b64.encode(Md5::digest(&data));
        return (&got == want).then_some(()).ok_or_else(|| {
            format!(
                "corrupted download of {}: md5 {got}, expected {want}",
                obj.name
            )
        });
    }
    if let Some(want) = &obj.crc32c {
        let got = b64.encode(crc32c(&data).to_be_bytes());
        return (&got == want).then_some(()).ok_or_else(|| {
            format!(
                "corrupted download of {}: crc32c {got}, expected {want}",
                obj.name
            )
        });
    }
    Err(format!(
        "object {} has neither md5 nor crc32c to check",
        obj.name
    ))
}

/// CRC-32C (Castagnoli), bitwise: used only for objects without an MD5 (composite objects).
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn fetch_err(url: &str, reason: String) -> StoreError {
    StoreError::Fetch {
        url: url.to_string(),
        reason,
    }
}

/// Runs `attempt` until it succeeds, fails fatally or `max_attempts` run out; waits 100 ms ×
/// 2^k (at most 5 s) with ±50% jitter between attempts.
async fn retry<T, F, Fut>(cfg: &GcsConfig, what: &str, mut attempt: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Failure>>,
{
    let mut last = String::new();
    for k in 0..cfg.max_attempts {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(Failure::Fatal(e)) => return Err(fetch_err(what, e)),
            Err(Failure::Transient(e)) => {
                tracing::warn!(url = what, attempt = k + 1, error = %e, "GCS request failed; retrying");
                last = e;
                let base = (100u64 << k.min(6)).min(5000) as f64;
                let jitter = 0.5 + rand::random::<f64>();
                tokio::time::sleep(Duration::from_millis((base * jitter) as u64)).await;
            }
        }
    }
    Err(fetch_err(
        what,
        format!("gave up after {} attempts: {last}", cfg.max_attempts),
    ))
}

#[derive(serde::Deserialize)]
struct ServiceAccount {
    client_email: String,
    private_key: String,
    token_uri: String,
}

/// An access token for a service account: a JWT signed with its key, exchanged at `token_uri`.
async fn service_account_token(http: &reqwest::Client, path: &Path) -> Result<String, StoreError> {
    let bytes = std::fs::read(path).map_err(|e| StoreError::io(path, e))?;
    let bad = |reason: String| StoreError::BadSource {
        path: path.display().to_string(),
        reason,
    };
    let sa: ServiceAccount = serde_json::from_slice(&bytes)
        .map_err(|e| bad(format!("not a service-account key file: {e}")))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let claims = serde_json::json!({
        "iss": sa.client_email,
        "scope": "https://www.googleapis.com/auth/devstorage.read_only",
        "aud": sa.token_uri,
        "iat": now,
        "exp": now + 3600,
    });
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(sa.private_key.as_bytes())
        .map_err(|e| bad(format!("private_key: {e}")))?;
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &key,
    )
    .map_err(|e| bad(format!("signing the token request: {e}")))?;
    let v: serde_json::Value = http
        .post(&sa.token_uri)
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", jwt.as_str()),
        ])
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| fetch_err(&sa.token_uri, e.to_string()))?
        .json()
        .await
        .map_err(|e| fetch_err(&sa.token_uri, e.to_string()))?;
    v["access_token"]
        .as_str()
        .map(String::from)
        .ok_or_else(|| fetch_err(&sa.token_uri, "no access_token in the answer".into()))
}

/// An access token from the metadata server.
async fn metadata_token(http: &reqwest::Client) -> Result<String, StoreError> {
    let url = "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token";
    let v: serde_json::Value = http
        .get(url)
        .header("Metadata-Flavor", "Google")
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| fetch_err(url, format!("no GCS credentials (metadata server: {e}); set STORAGE_EMULATOR_HOST for an emulator")))?
        .json()
        .await
        .map_err(|e| fetch_err(url, e.to_string()))?;
    v["access_token"]
        .as_str()
        .map(String::from)
        .ok_or_else(|| fetch_err(url, "no access_token in the answer".into()))
}

impl GcsSource {
    /// The local copy of this prefix (a folder), or of the single object it names (a file in a
    /// folder of its own), downloading what is missing or changed.
    pub async fn fetch(&self, cfg: &GcsConfig) -> Result<PathBuf, StoreError> {
        let dir = self.local_dir(cfg);
        let client = Client::new(cfg).await?;
        let mut objects = client.list(self, false).await?;
        let single = objects.is_empty();
        if single {
            objects = client.list(self, true).await?;
        }
        if objects.is_empty() {
            return Err(StoreError::BadSource {
                path: format!("gs://{}/{}", self.bucket, self.prefix),
                reason: "no object of this name, nor objects under it as a prefix".into(),
            });
        }
        let copied = self.copy(&client, &dir, &objects, single).await?;
        Ok(match single {
            true => copied.join(self.prefix.rsplit('/').next().unwrap_or(&self.prefix)),
            false => copied,
        })
    }

    /// Brings `dir` up to date with `objects` (their names relative to the prefix, or the
    /// single object's file name); the manifest is written last.
    async fn copy(
        &self,
        client: &Client,
        dir: &std::path::Path,
        objects: &[Object],
        single: bool,
    ) -> Result<PathBuf, StoreError> {
        let dir = dir.to_path_buf();
        let manifest: BTreeMap<String, Object> = std::fs::read(dir.join(MANIFEST))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let rel = |o: &Object| match single {
            true => o.name.rsplit('/').next().unwrap_or(&o.name).to_string(),
            false => o.name[self.prefix.len() + 1..].to_string(),
        };
        let wanted: Vec<&Object> = objects
            .iter()
            .filter(|o| manifest.get(&rel(o)) != Some(o) || !dir.join(rel(o)).is_file())
            .collect();
        if wanted.is_empty() {
            return Ok(dir);
        }
        // the manifest goes first: an interrupted update is never mistaken for a complete copy
        let _ = std::fs::remove_file(dir.join(MANIFEST));
        let total: u64 = wanted.iter().map(|o| o.size).sum();
        let bar = indicatif::ProgressBar::new(total);
        bar.set_message(format!("gs://{}/{}", self.bucket, self.prefix));
        let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(4));
        let mut tasks = Vec::new();
        for o in wanted {
            let dest = dir.join(rel(o));
            if let Some(p) = dest.parent() {
                std::fs::create_dir_all(p).map_err(|e| StoreError::io(p, e))?;
            }
            let (client, o, bar, sem, bucket) = (
                &client,
                o.clone(),
                bar.clone(),
                sem.clone(),
                self.bucket.clone(),
            );
            tasks.push(async move {
                let _permit = sem.acquire().await.expect("semaphore open");
                client.download_from(&bucket, &o, &dest, &bar).await
            });
        }
        for r in futures::future::join_all(tasks).await {
            r?;
        }
        bar.finish_and_clear();
        let manifest: BTreeMap<String, Object> =
            objects.iter().map(|o| (rel(o), o.clone())).collect();
        let tmp = dir.join(format!("{MANIFEST}.partial"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(&manifest).expect("json"))
            .map_err(|e| StoreError::io(&tmp, e))?;
        std::fs::rename(&tmp, dir.join(MANIFEST)).map_err(|e| StoreError::io(&dir, e))?;
        Ok(dir)
    }
}
