//! `--load-format dummy`: random weights from a config.json alone, served without a tokenizer
//! (token-id prompts in, ids as text out), over real HTTP on loopback.

use serde_json::{json, Value};
use weir::models::weights::LoadFormat;
use weir::testing::{test_limits, tiny_llama_config_json, TestServer};

fn post(server: &TestServer, path: &str, body: Value) -> (u16, Value) {
    let resp = reqwest::blocking::Client::new()
        .post(format!("{}{path}", server.url))
        .json(&body)
        .send()
        .unwrap();
    (resp.status().as_u16(), resp.json().unwrap())
}

#[test]
fn dummy_model_serves_token_id_prompts_without_a_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(&config, tiny_llama_config_json().to_string()).unwrap();
    let mut limits = test_limits(64, 16);
    limits.load_format = LoadFormat::Dummy;
    let server = TestServer::start(&[("dummy", &config)], limits);

    let (status, v) = post(
        &server,
        "/v1/completions",
        json!({"model": "dummy", "prompt": [5, 17, 200, 3], "max_tokens": 6, "ignore_eos": true, "temperature": 0}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 6);
    let ids: Vec<u32> = v["choices"][0]["text"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .map(|t| t.parse().expect("ids as text"))
        .collect();
    assert_eq!(ids.len(), 6, "{v}");
    assert!(ids
        .iter()
        .all(|&t| (t as usize) < weir::testing::TINY_VOCAB));

    let (status, v) = post(
        &server,
        "/v1/completions",
        json!({"model": "dummy", "prompt": "hello", "max_tokens": 2}),
    );
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["param"], "prompt");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("without a tokenizer"));

    let (status, v) = post(
        &server,
        "/v1/chat/completions",
        json!({"model": "dummy", "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["param"], "messages");
}

#[cfg(not(feature = "cuda"))]
#[test]
fn engine_on_a_device_this_build_lacks_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = weir::testing::write_tiny_llama(dir.path(), 3);
    let mut limits = test_limits(16, 16);
    limits.device = weir::models::device::DeviceSpec::Cuda(0);
    let local = weir::store::LocalModel::open(&path).unwrap();
    let err = weir::manager::load_model(
        "tiny",
        &local,
        &limits,
        &weir::metrics::Metrics::new(),
        None,
    )
    .err()
    .expect("no CUDA device in this test build");
    let msg = err.to_string();
    assert!(msg.contains("cuda"), "{msg}");
}
