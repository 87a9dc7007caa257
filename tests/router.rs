//! A rolling restart behind vllm-router (PyPI `vllm-router`, from the test venv) with no failed
//! request: 3 replicas of the real binary on loopback, steady load through the router, each
//! replica in turn SIGTERM'd (it drains: `/ready` 503, in-flight requests finish), replaced by a
//! new one on its port, and the next one only once that is ready. Every request gets a 2xx.

use serde_json::json;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir::testing::process::{wait_ready, Proc};
use weir::testing::{default_model_path, free_port};

fn replica(port: u16) -> Proc {
    let model = format!("smol={}", default_model_path().display());
    let args = [
        "--model",
        &model,
        "--port",
        &port.to_string(),
        "--preload",
        "smol",
        "--kv-cache-memory",
        "64MiB",
        "--shutdown-grace",
        "20",
    ];
    Proc::spawn(env!("CARGO_BIN_EXE_weir"), &args.map(String::from))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_restart_behind_the_router_fails_no_request() {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let urls: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let mut replicas: Vec<Proc> = ports.iter().map(|&p| replica(p)).collect();
    for u in &urls {
        wait_ready(u).await;
    }
    let router_port = free_port();
    let log = tempfile::NamedTempFile::new().unwrap();
    let _router = Proc(
        Command::new(weir::testing::venv_bin("vllm-router"))
            .args(["--host", "127.0.0.1", "--port", &router_port.to_string()])
            .args([
                "--policy",
                "round_robin",
                "--health-check-endpoint",
                "/ready",
            ])
            .args(["--health-check-interval-secs", "1"])
            .args([
                "--prometheus-port",
                &free_port().to_string(),
                "--worker-urls",
            ])
            .args(&urls)
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("vllm-router from tests/requirements.txt"),
    );
    let router = format!("http://127.0.0.1:{router_port}");
    let started = Instant::now();
    while reqwest::get(format!("{router}/health")).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the router did not start:\n{}",
            std::fs::read_to_string(log.path()).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // steady load: 4 clients, one completion after another
    let (ok, failed, stop) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (ok, failed, stop, router) =
                (ok.clone(), failed.clone(), stop.clone(), router.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let body = json!({"model": "smol", "prompt": format!("Client {c} asks {i}:"),
                        "max_tokens": 16, "temperature": 0});
                    let r = http
                        .post(format!("{router}/v1/completions"))
                        .json(&body)
                        .send()
                        .await;
                    match r.map(|r| r.status().is_success()) {
                        Ok(true) => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                    i += 1;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (i, &port) in ports.iter().enumerate() {
        let pid = replicas[i].0.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        replicas[i].0.wait().unwrap(); // drained and exited
        replicas[i] = replica(port);
        wait_ready(&urls[i]).await;
        tokio::time::sleep(Duration::from_secs(2)).await; // the router sees it healthy again
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("rolling restart: {ok} requests answered, {failed} failed");
    assert!(ok > 20, "{ok}");
    assert_eq!(failed, 0, "{ok} answered, {failed} failed");
}
