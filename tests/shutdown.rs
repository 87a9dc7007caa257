//! Graceful drain of the real `weir` binary: SIGTERM during 8 streams lets all 8 finish within
//! the grace period while new requests get 503, `/health` (liveness) says draining and `/ready`
//! answers 503; past the grace
//! period the rest end with an error event. Either way the process exits 0.

use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use weir::testing::{default_model_path, free_port};

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

async fn start(grace: &str) -> Server {
    let port = free_port();
    let model = format!("smol={}", default_model_path().display());
    let child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["--model", &model, "--port", &port.to_string()])
        .args(["--kv-cache-memory", "64MiB", "--shutdown-grace", grace])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    loop {
        if let Ok(r) = reqwest::get(format!("{url}/ready")).await {
            if r.status() == 200 {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "weir did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Server { child, url }
}

/// One streamed completion: (finish reason of the last chunk, whether an error event came).
async fn stream(
    url: String,
    max_tokens: usize,
    first: tokio::sync::mpsc::Sender<()>,
) -> (String, bool) {
    let body = json!({"model": "smol", "prompt": "Once upon a time", "max_tokens": max_tokens,
        "temperature": 0, "ignore_eos": true, "stream": true});
    let mut resp = reqwest::Client::new()
        .post(format!("{url}/v1/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (mut text, mut told) = (String::new(), false);
    while let Some(chunk) = resp.chunk().await.unwrap() {
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        if !told && text.contains("\"text\"") {
            told = true;
            let _ = first.send(()).await;
        }
    }
    let mut finish = String::new();
    let mut error = false;
    for event in text.split("\n\n").filter_map(|e| e.strip_prefix("data: ")) {
        if event == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(event).unwrap();
        if v.get("error").is_some() {
            error = true;
        } else if let Some(f) = v["choices"][0]["finish_reason"].as_str() {
            finish = f.to_string();
        }
    }
    (finish, error)
}

fn sigterm(s: &Server) {
    // SAFETY: signals a child process this test started and still owns.
    let rc = unsafe { libc::kill(s.child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
}

async fn wait_exit(s: &mut Server) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = s.child.try_wait().unwrap() {
            return status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "weir did not exit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts `n` streams and waits until each has its first token.
async fn streams(
    s: &Server,
    n: usize,
    max_tokens: usize,
) -> Vec<tokio::task::JoinHandle<(String, bool)>> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(n);
    let tasks = (0..n)
        .map(|_| tokio::spawn(stream(s.url.clone(), max_tokens, tx.clone())))
        .collect();
    drop(tx);
    for _ in 0..n {
        rx.recv().await.expect("every stream starts");
    }
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_lets_running_streams_finish_and_refuses_new_ones() {
    let mut s = start("60").await;
    let tasks = streams(&s, 8, 200).await;
    sigterm(&s);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // liveness holds (the process serves), readiness is withdrawn
    let health = reqwest::get(format!("{}/health", s.url)).await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<Value>().await.unwrap()["status"], "draining");
    let ready = reqwest::get(format!("{}/ready", s.url)).await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.json::<Value>().await.unwrap()["reason"], "draining");
    let refused = reqwest::Client::new()
        .post(format!("{}/v1/completions", s.url))
        .json(&json!({"model": "smol", "prompt": "Hi", "max_tokens": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "5");
    for t in tasks {
        assert_eq!(t.await.unwrap(), ("length".to_string(), false));
    }
    assert!(wait_exit(&mut s).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn past_the_grace_period_the_rest_end_with_an_error_event() {
    let mut s = start("0.5").await;
    // ~1000 tokens take seconds on 2 cores: far past a 0.5 s grace period
    let tasks = streams(&s, 2, 1000).await;
    sigterm(&s);
    for t in tasks {
        let (finish, error) = t.await.unwrap();
        assert!(
            error && finish.is_empty(),
            "finish {finish:?}, error {error}"
        );
    }
    assert!(wait_exit(&mut s).await.success());
}
