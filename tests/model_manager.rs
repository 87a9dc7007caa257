//! The model manager over real HTTP: SmolLM2 and two tiny random models under a budget that fits
//! one model: interleaved concurrent requests to all of them succeed with the outputs each model
//! gives when it is always loaded; loads are single flight; loads and evictions are counted; RSS
//! returns after an unload; bad ids are 400s.

use serde_json::{json, Value};
use std::time::Duration;
use weir::api::ServerOptions;
use weir::testing::{
    default_model_path, manager_limits, test_limits, write_tiny_llama, TestServer,
};

async fn complete(url: &str, model: &str, prompt: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{url}/v1/completions"))
        .json(&json!({"model": model, "prompt": prompt, "max_tokens": 8, "temperature": 0}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn admin(url: &str, method: &str, path: &str) -> (u16, Value) {
    let c = reqwest::Client::new();
    let req = match method {
        "POST" => c.post(format!("{url}{path}")),
        _ => c.get(format!("{url}{path}")),
    };
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Model `id` in a list answer: `/admin/stats` (`models`), `/admin/models` or `/v1/models`
/// (`data`).
fn model<'a>(list: &'a Value, id: &str) -> &'a Value {
    list.get("models")
        .unwrap_or(&list["data"])
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn models_swap_under_a_one_model_budget_without_losing_a_request() {
    let tmp = tempfile::tempdir().unwrap();
    let a = write_tiny_llama(&tmp.path().join("tiny-a"), 5);
    let b = write_tiny_llama(&tmp.path().join("tiny-b"), 7);
    let smol = default_model_path();
    let models = [
        ("tiny-a", a.as_path()),
        ("tiny-b", b.as_path()),
        ("smol", smol.as_path()),
    ];
    let prompts = ["The capital of France is", "Once upon a time", "1, 2, 3,"];

    // what each model answers when it is always loaded
    let reference = TestServer::start(&models, test_limits(256, 16));
    let mut want = std::collections::HashMap::new();
    for (id, _) in &models {
        for p in prompts {
            let (status, v) = complete(&reference.url, id, p).await;
            assert_eq!(status, 200, "{v}");
            want.insert((id.to_string(), p), v["choices"][0]["text"].clone());
        }
    }
    reference.models.shutdown();
    drop(reference);

    let limits = manager_limits(test_limits(256, 16), Some(1), 120);
    let s = TestServer::start_managed(&models, limits, ServerOptions::default(), false);
    let (_, list) = admin(&s.url, "GET", "/v1/models").await;
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        3,
        "declared models are listed"
    );
    let (_, m) = admin(&s.url, "GET", "/admin/models").await;
    assert!(m["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["state"] == "unloaded"));

    // 8 concurrent first requests to one model: one load
    let first: Vec<_> = (0..8)
        .map(|_| {
            let url = s.url.clone();
            tokio::spawn(async move { complete(&url, "tiny-a", "Once upon a time").await })
        })
        .collect();
    for t in first {
        let (status, v) = t.await.unwrap();
        assert_eq!(status, 200, "{v}");
        assert_eq!(
            v["choices"][0]["text"],
            want[&("tiny-a".to_string(), "Once upon a time")]
        );
    }
    let (_, stats) = admin(&s.url, "GET", "/admin/stats").await;
    assert_eq!(model(&stats, "tiny-a")["loads"], 1, "single flight");

    // interleaved concurrent requests to all three models, three rounds
    for round in 0..3 {
        let tasks: Vec<_> = models
            .iter()
            .flat_map(|(id, _)| prompts.iter().map(move |p| (id.to_string(), *p)))
            .map(|(id, p)| {
                let url = s.url.clone();
                tokio::spawn(async move { (id.clone(), p, complete(&url, &id, p).await) })
            })
            .collect();
        for t in tasks {
            let (id, p, (status, v)) = t.await.unwrap();
            assert_eq!(status, 200, "round {round} {id}: {v}");
            assert_eq!(
                v["choices"][0]["text"],
                want[&(id.clone(), p)],
                "round {round} {id} {p:?}"
            );
        }
    }
    let (_, stats) = admin(&s.url, "GET", "/admin/stats").await;
    let (mut loads, mut evictions) = (0, 0);
    for (id, _) in &models {
        let m = model(&stats, id);
        assert!(m["loads"].as_u64().unwrap() >= 1, "{m}");
        assert!(m["requests"].as_u64().unwrap() >= 9, "{m}");
        loads += m["loads"].as_u64().unwrap();
        evictions += m["evictions"].as_u64().unwrap();
    }
    let (_, listed) = admin(&s.url, "GET", "/admin/models").await;
    let loaded = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["state"] == "loaded")
        .count() as u64;
    assert_eq!(loaded, 1, "the budget holds one model");
    assert_eq!(
        loads,
        evictions + loaded,
        "every load but the resident one was evicted"
    );
    assert!(evictions >= 2, "models swapped: {evictions} evictions");

    // RSS returns after unload: load SmolLM2 alone, unload it
    for (id, _) in &models {
        admin(&s.url, "POST", &format!("/admin/models/{id}/unload")).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let empty = weir::manager::rss_bytes();
    let (status, loaded) = admin(&s.url, "POST", "/admin/models/smol/load").await;
    assert_eq!(
        (status, loaded["state"].as_str()),
        (200, Some("loaded")),
        "{loaded}"
    );
    let bytes = loaded["bytes"].as_u64().unwrap();
    assert!(
        bytes > 50 << 20,
        "SmolLM2's weights and KV are measured: {bytes}"
    );
    let (status, v) = admin(&s.url, "POST", "/admin/models/smol/unload").await;
    assert_eq!((status, v["unloaded"].as_bool()), (200, Some(true)));
    let after = weir::manager::rss_bytes();
    eprintln!(
        "RSS: {} MiB empty, SmolLM2 measured {} MiB, {} MiB after unload",
        empty >> 20,
        bytes >> 20,
        after >> 20
    );
    assert!(
        after < empty + bytes / 4,
        "RSS {} MiB after unload, {} MiB before load, model {} MiB",
        after >> 20,
        empty >> 20,
        bytes >> 20
    );
    let (_, m) = admin(&s.url, "GET", "/admin/models").await;
    assert!(m["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["state"] == "unloaded"));
}

#[tokio::test]
async fn bad_model_ids_are_400s_and_unknown_ones_404s() {
    let tmp = tempfile::tempdir().unwrap();
    let a = write_tiny_llama(&tmp.path().join("tiny-a"), 5);
    let limits = manager_limits(test_limits(64, 16), Some(1), 60);
    let s = TestServer::start_managed(&[("tiny-a", &a)], limits, ServerOptions::default(), false);
    for bad in ["../tiny-a", "a/b", ".hidden", "x\u{7}"] {
        let (status, v) = complete(&s.url, bad, "hi").await;
        assert_eq!(
            (status, v["error"]["param"].as_str()),
            (400, Some("model")),
            "{bad}: {v}"
        );
    }
    let (status, _) = admin(&s.url, "POST", "/admin/models/..%2Fetc/load").await;
    assert_eq!(status, 400);
    let (status, v) = complete(&s.url, "nope", "hi").await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("model_not_found"))
    );
    let (status, _) = admin(&s.url, "POST", "/admin/models/nope/unload").await;
    assert_eq!(status, 404);
    assert!(weir::manager::validate_model_id("SmolLM2-135M-Instruct").is_ok());
}

/// A model in the Hugging Face cache layout, served offline from `hf://`, with its own settings.
#[tokio::test]
async fn hf_sources_resolve_in_the_hub_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let hub_dir = tmp.path().join("hub");
    let repo = hub_dir.join("models--test-org--tiny");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    write_tiny_llama(&repo.join("snapshots").join(commit), 5);
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    // a GGUF repository with two quantizations: `hf://.../FILE` names one
    let ggufs = hub_dir.join("models--test-org--tiny-GGUF");
    let snap = ggufs.join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).unwrap();
    for name in ["tiny-Q4_1.gguf", "tiny-copy.gguf"] {
        std::os::unix::fs::symlink(weir::testing::default_model_path(), snap.join(name)).unwrap();
    }
    std::fs::create_dir_all(ggufs.join("refs")).unwrap();
    std::fs::write(ggufs.join("refs/main"), commit).unwrap();
    let direct = write_tiny_llama(&tmp.path().join("direct"), 5);
    let decls = weir::config::parse::parse_models_config(&format!(
        r#"
        [[models]]
        id = "from-hub"
        source = "hf://test-org/tiny"
        max_model_len = 100

        [[models]]
        id = "by-commit"
        source = "hf://test-org/tiny@{commit}"

        [[models]]
        id = "direct"
        source = "{}"

        [[models]]
        id = "missing"
        source = "hf://test-org/not-cached"

        [[models]]
        id = "one-gguf"
        source = "hf://test-org/tiny-GGUF/tiny-Q4_1.gguf"
        "#,
        direct.display()
    ))
    .unwrap();
    let sources = weir::testing::offline_sources(
        hub_dir,
        weir::store::gcs::GcsConfig::new(None, tmp.path().join("cache")),
        tmp.path().join("cache"),
    );
    let limits = manager_limits(test_limits(64, 16), None, 60);
    let s = TestServer::start_decls(decls, limits, sources, ServerOptions::default(), false);
    let (status, want) = complete(&s.url, "direct", "Hello").await;
    assert_eq!(status, 200, "{want}");
    for id in ["from-hub", "by-commit"] {
        let (status, v) = complete(&s.url, id, "Hello").await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["choices"][0]["text"], want["choices"][0]["text"], "{id}");
    }
    let (_, models) = admin(&s.url, "GET", "/v1/models").await;
    assert_eq!(
        model(&models, "from-hub")["max_model_len"],
        100,
        "the model's own max_model_len"
    );
    let (status, v) = complete(&s.url, "one-gguf", "Hello").await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = complete(&s.url, "missing", "Hello").await;
    assert_eq!(status, 503, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("HF_HUB_OFFLINE"),
        "{v}"
    );
    let (_, m) = admin(&s.url, "GET", "/admin/models").await;
    assert!(model(&m, "missing")["last_error"]
        .as_str()
        .unwrap()
        .contains("HF_HUB_OFFLINE"));
}

fn state(models: &Value, id: &str) -> String {
    model(models, id)["state"].as_str().unwrap().to_string()
}

/// `--host-memory-budget`: an evicted model keeps its weights in host memory (state `host`)
/// and comes back from there, with the same outputs; the host tier drops its least recently
/// used copy when the next one does not fit; an unload by hand frees both tiers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn evicted_models_wait_in_host_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let a = write_tiny_llama(&tmp.path().join("tiny-a"), 5);
    let b = write_tiny_llama(&tmp.path().join("tiny-b"), 7);
    let c = write_tiny_llama(&tmp.path().join("tiny-c"), 9);
    let models = [
        ("tiny-a", a.as_path()),
        ("tiny-b", b.as_path()),
        ("tiny-c", c.as_path()),
    ];
    let mut limits = manager_limits(test_limits(64, 16), Some(1), 60);
    // the tiny model's weights: room for one copy, not two
    let one = weir::testing::tiny_llama_weights(5)
        .values()
        .map(|t| (t.elem_count() * t.dtype().size_in_bytes()) as u64)
        .sum::<u64>();
    limits.host_budget = Some(one * 3 / 2);
    let s = TestServer::start_managed(&models, limits, ServerOptions::default(), false);
    let (status, first) = complete(&s.url, "tiny-a", "Once upon a time").await;
    assert_eq!(status, 200, "{first}");
    let (status, v) = complete(&s.url, "tiny-b", "Once upon a time").await;
    assert_eq!(status, 200, "{v}");
    let (_, m) = admin(&s.url, "GET", "/admin/models").await;
    assert_eq!(state(&m, "tiny-a"), "host", "{m}");
    assert_eq!(state(&m, "tiny-b"), "loaded", "{m}");
    // back from host memory, same text
    let (status, again) = complete(&s.url, "tiny-a", "Once upon a time").await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["choices"][0]["text"], first["choices"][0]["text"]);
    let (_, stats) = admin(&s.url, "GET", "/admin/stats").await;
    let ma = model(&stats, "tiny-a");
    assert_eq!(
        (ma["loads"].as_u64(), ma["host_loads"].as_u64()),
        (Some(2), Some(1)),
        "{ma}"
    );
    assert_eq!(ma["host_bytes"], 0, "the copy left the host tier: {ma}");
    assert!(model(&stats, "tiny-b")["host_bytes"].as_u64().unwrap() > 0);
    // a third model: tiny-a goes to host memory, tiny-b's older copy makes room for it
    let (status, _) = complete(&s.url, "tiny-c", "Once upon a time").await;
    assert_eq!(status, 200);
    let (_, m) = admin(&s.url, "GET", "/admin/models").await;
    assert_eq!(
        [
            state(&m, "tiny-a"),
            state(&m, "tiny-b"),
            state(&m, "tiny-c")
        ],
        ["host", "unloaded", "loaded"],
        "{m}"
    );
    // an unload by hand frees the host copy too
    let (status, v) = admin(&s.url, "POST", "/admin/models/tiny-a/unload").await;
    assert_eq!(
        (status, v["state"].as_str()),
        (200, Some("unloaded")),
        "{v}"
    );
    assert_eq!(v["unloaded"], true);
}
