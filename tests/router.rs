//! A rolling restart behind vllm-router (PyPI `vllm-router`, from the test venv) with no failed
//! request: 3 replicas of the real binary on loopback, steady load through the router, each
//! replica in turn SIGTERM'd (it drains: `/ready` 503, in-flight requests finish), replaced by a
//! new one on its port, and the next one only once that is ready. Every request gets a 2xx.
//! And `kv_aware` routing on weir's KV cache events (`--kv-events-endpoint`).

use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir::testing::process::{wait_ready, Proc};
use weir::testing::{default_model_path, free_port};

fn replica(port: u16) -> Proc {
    replica_with(port, &[])
}

fn replica_with(port: u16, extra: &[&str]) -> Proc {
    let model = format!("smol={}", default_model_path().display());
    let mut args: Vec<String> = [
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
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|a| a.to_string()));
    Proc::spawn(env!("CARGO_BIN_EXE_weir"), &args)
}

/// vllm-router in front of `urls` with `args`: the process, its URL, its log, and the port of
/// its Prometheus metrics. `tokenizer`: the folder its KV-aware policy tokenizes with.
async fn start_router(
    urls: &[String],
    args: &[&str],
    tokenizer: Option<&Path>,
) -> (Proc, String, tempfile::NamedTempFile, u16) {
    let (port, metrics_port) = (free_port(), free_port());
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = Command::new(weir::testing::venv_bin("vllm-router"));
    cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(args)
        .args(["--health-check-interval-secs", "1"])
        .args(["--prometheus-port", &metrics_port.to_string()])
        .arg("--worker-urls")
        .args(urls)
        .stdout(log.reopen().unwrap())
        .stderr(log.reopen().unwrap());
    if let Some(t) = tokenizer {
        cmd.env("VLLM_ROUTER_TOKENIZER", t);
    }
    let proc = Proc(
        cmd.spawn()
            .expect("vllm-router from tests/requirements.txt"),
    );
    let router = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while reqwest::get(format!("{router}/health")).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the router did not start:\n{}",
            std::fs::read_to_string(log.path()).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (proc, router, log, metrics_port)
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
    let (_router, router, _log, _) = start_router(
        &urls,
        &[
            "--policy",
            "round_robin",
            "--health-check-endpoint",
            "/ready",
        ],
        None,
    )
    .await;
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

/// vllm-router's `kv_aware` policy follows weir's KV cache events: two replicas publish them,
/// the router tokenizes each chat prompt itself (a tokenizer folder transformers writes from the
/// GGUF) and finds its blocks in what the events said each replica holds. The repeated system
/// prompts must be found (placement hits), and each prompt's repeats go to the replica that
/// served it first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kv_aware_routing_follows_weirs_kv_events() {
    let tokenizer = tempfile::tempdir().unwrap();
    write_tokenizer_folder(tokenizer.path());
    let ports: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let urls: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let zmq: Vec<(u16, u16)> = (0..2).map(|_| (free_port(), free_port())).collect();
    let _replicas: Vec<Proc> = (0..2)
        .map(|i| {
            let cfg = format!(
                r#"{{"enable_kv_cache_events": true, "endpoint": "tcp://*:{}", "replay_endpoint": "tcp://*:{}"}}"#,
                zmq[i].0, zmq[i].1
            );
            replica_with(ports[i], &["--kv-events-config", &cfg])
        })
        .collect();
    for u in &urls {
        wait_ready(u).await;
    }
    let mut args: Vec<String> = ["--policy", "kv_aware", "--kv-event-model", "smol"]
        .map(String::from)
        .to_vec();
    for (u, (events, replay)) in urls.iter().zip(&zmq) {
        args.push("--kv-event-source".into());
        args.push(format!("{u}=tcp://127.0.0.1:{events}"));
        args.push("--kv-event-replay-source".into());
        args.push(format!("{u}=tcp://127.0.0.1:{replay}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (_router, router, log, metrics_port) =
        start_router(&urls, &args, Some(tokenizer.path())).await;
    let served_by = send_system_prompts(&router, &urls).await;
    let metrics = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let hits = sum_of(
        &metrics,
        "vllm_router_kv_placement_lookups_total{result=\"hit\"}",
    );
    println!("kv_aware: served by {served_by:?}, {hits} placement hits");
    assert!(
        hits >= 3.0,
        "the router found few prefixes in weir's events ({hits} hits):\n{metrics}\n{}",
        std::fs::read_to_string(log.path()).unwrap_or_default()
    );
    for served in &served_by {
        assert!(served[1..].iter().all(|&r| r == served[0]), "{served_by:?}");
    }
}

/// The default model's tokenizer as a Hugging Face folder (scripts/tokenizer_folder.py).
fn write_tokenizer_folder(dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/tokenizer_folder.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(default_model_path())
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two system prompts, three rounds each, through the router: for each prompt, the replica
/// (index in `urls`) that served each round.
async fn send_system_prompts(router: &str, urls: &[String]) -> Vec<Vec<usize>> {
    let http = reqwest::Client::new();
    let system = |s: usize| {
        let words: Vec<String> = (0..200)
            .map(|w| format!("note{}", (w * 7 + s * 13) % 97))
            .collect();
        format!("You are assistant {s}. Notes: {}", words.join(" "))
    };
    let mut served_by = vec![Vec::new(); 2];
    for round in 0..3 {
        for (s, served) in served_by.iter_mut().enumerate() {
            let before = queries(urls, &http).await;
            let body = json!({"model": "smol", "max_tokens": 2, "temperature": 0, "messages": [
                {"role": "system", "content": system(s)},
                {"role": "user", "content": format!("question {round}")}]});
            let r = http
                .post(format!("{router}/v1/chat/completions"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{}", r.text().await.unwrap());
            let after = queries(urls, &http).await;
            served.push(
                (0..urls.len())
                    .find(|&i| after[i] > before[i])
                    .expect("served"),
            );
            // the replica's events reach the router before the next request
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    served_by
}

/// The sum of the samples of the series whose lines start with `prefix`.
fn sum_of(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

/// Each replica's `weir:prefix_cache_queries_total`.
async fn queries(urls: &[String], http: &reqwest::Client) -> Vec<f64> {
    let mut out = Vec::new();
    for u in urls {
        let r = http.get(format!("{u}/metrics")).send().await.unwrap();
        out.push(sum_of(
            &r.text().await.unwrap(),
            "weir:prefix_cache_queries_total",
        ));
    }
    out
}
