//! A client that goes away (streaming or not) frees its sequence and KV blocks at once.

use futures::StreamExt;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use weir::testing::{default_model_path, test_limits, TestServer};

const SMOL: &str = "SmolLM2-135M-Instruct";

fn start() -> TestServer {
    TestServer::start(&[(SMOL, &default_model_path())], test_limits(256, 16))
}

async fn health(url: &str) -> Value {
    let h: Value = reqwest::get(format!("{url}/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    h["models"][0].clone()
}

/// Waits until `pred` holds for the model's health entry.
async fn wait_for(url: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let h = health(url).await;
        if pred(&h) {
            return h;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {h}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn long_request(stream: bool) -> Value {
    json!({"model": SMOL, "prompt": "Tell me a very long story.", "max_tokens": 3000,
           "ignore_eos": true, "stream": stream})
}

fn idle(h: &Value) -> bool {
    h["kv_blocks_used"] == 0 && h["sequences_running"] == 0 && h["sequences_waiting"] == 0
}

#[tokio::test]
async fn dropped_stream_frees_blocks() {
    let s = start();
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/completions", s.url))
        .json(&long_request(true))
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    let h = health(&s.url).await;
    assert!(h["kv_blocks_used"].as_u64().unwrap() > 0, "{h}");
    drop(body);
    wait_for(&s.url, "blocks freed after the stream was dropped", idle).await;
}

#[tokio::test]
async fn closed_connection_frees_blocks_of_a_non_streaming_request() {
    let s = start();
    let addr = s.url.trim_start_matches("http://").to_string();
    let body = long_request(false).to_string();
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let req = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    wait_for(&s.url, "the request to run", |h| {
        h["sequences_running"] == 1
    })
    .await;
    drop(sock);
    wait_for(&s.url, "blocks freed after the connection closed", idle).await;
}

#[tokio::test]
async fn many_aborted_streams_leave_the_pool_full() {
    let s = start();
    let client = reqwest::Client::new();
    let mut handles = Vec::new();
    for i in 0..12 {
        let (client, url) = (client.clone(), s.url.clone());
        handles.push(tokio::spawn(async move {
            let resp = client
                .post(format!("{url}/v1/completions"))
                .json(&long_request(true))
                .send()
                .await
                .unwrap();
            let mut body = resp.bytes_stream();
            for _ in 0..(i % 4) {
                body.next().await;
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let h = wait_for(&s.url, "every block back", idle).await;
    assert_eq!(h["kv_blocks_total"], 256);
}
