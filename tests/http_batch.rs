//! The Batch API: 500 lines over four endpoints through the official `openai` client
//! (tests/openai_batch.py), and a batch that survives a SIGKILL of the real binary: restarted
//! on the same cache dir, it finishes with every line answered exactly once.

use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use weir::testing::{
    default_model_path, free_port, minilm_model_path, run_python_test, test_limits, TestServer,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_through_the_openai_client() {
    let tmp = tempfile::tempdir().unwrap();
    let (smol, minilm) = (default_model_path(), minilm_model_path());
    let options = weir::api::ServerOptions {
        data_dir: Some(tmp.path().to_path_buf()),
        ..Default::default()
    };
    let server = TestServer::start_with(
        &[("smol", smol.as_path()), ("minilm", minilm.as_path())],
        test_limits(512, 16),
        options,
    );
    run_python_test(
        "openai_batch.py",
        &[&format!("{}/v1", server.url), "smol", "minilm"],
    )
    .await;
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
    }
}

async fn start(cache: &std::path::Path, port: u16) -> Server {
    let model = format!("smol={}", default_model_path().display());
    let child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "--model",
            &model,
            "--port",
            &port.to_string(),
            "--kv-cache-memory",
            "64MiB",
        ])
        .arg("--cache-dir")
        .arg(cache)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while reqwest::get(format!("http://127.0.0.1:{port}/health"))
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "weir did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Server(child)
}

async fn get(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_survives_sigkill_and_answers_each_line_once() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}/v1");
    let lines: String = (0..60)
        .map(|i| {
            let body = json!({"model": "smol", "prompt": format!("Count {i}:"), "max_tokens": 12,
                "temperature": 0, "ignore_eos": true});
            format!(
                "{}\n",
                json!({"custom_id": format!("c{i}"), "method": "POST",
                "url": "/v1/completions", "body": body})
            )
        })
        .collect();
    let mut server = start(tmp.path(), port).await;
    let boundary = "weirtestboundary";
    let form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n{lines}\r\n--{boundary}--\r\n"
    );
    let http = reqwest::Client::new();
    let file: Value = http
        .post(format!("{base}/files"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let batch: Value = http
        .post(format!("{base}/batches"))
        .json(
            &json!({"input_file_id": file["id"], "endpoint": "/v1/completions",
            "completion_window": "24h"}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = format!("{base}/batches/{}", batch["id"].as_str().unwrap());
    // kill -9 once some lines are done and others are not
    let started = Instant::now();
    loop {
        let b = get(&url).await;
        let done = b["request_counts"]["completed"].as_u64().unwrap_or(0);
        if done >= 10 {
            assert!(
                done < 60,
                "the batch finished before the kill: make it longer"
            );
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "{b}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.0.kill().unwrap(); // SIGKILL
    server.0.wait().unwrap();
    let _server = start(tmp.path(), port).await;
    let b = loop {
        let b = get(&url).await;
        if b["status"] == "completed" {
            break b;
        }
        assert!(started.elapsed() < Duration::from_secs(300), "{b}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        b["request_counts"],
        json!({"total": 60, "completed": 60, "failed": 0})
    );
    let out = reqwest::get(format!(
        "{base}/files/{}/content",
        b["output_file_id"].as_str().unwrap()
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    let mut ids: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["custom_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    ids.sort();
    let mut want: Vec<String> = (0..60).map(|i| format!("c{i}")).collect();
    want.sort();
    assert_eq!(ids, want, "each line answered exactly once");
}
