//! Readiness and load for routers and kubelets: `/ready` is 200 on a ready server and 503 with
//! the reason while an engine has work but no step progress past `--engine-stall-timeout`
//! (forced here with a timeout shorter than a step), ready again once it is idle; `/load` counts
//! what runs; `/health` stays 200 throughout.

use serde_json::{json, Value};
use std::time::Duration;
use weir::testing::{default_model_path, test_limits, TestServer};

async fn get(url: &str) -> (u16, Value) {
    let r = reqwest::get(url).await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ready_load_and_a_stalled_engine() {
    let smol = default_model_path();
    let options = weir::api::ServerOptions {
        engine_stall_timeout: Duration::from_micros(100),
        ..Default::default()
    };
    let s = TestServer::start_with(&[("smol", smol.as_path())], test_limits(256, 16), options);
    assert_eq!(
        get(&format!("{}/ready", s.url)).await,
        (200, json!({"status": "ready"}))
    );
    let (status, load) = get(&format!("{}/load", s.url)).await;
    assert_eq!(
        (status, load["server_load"].as_u64()),
        (200, Some(0)),
        "{load}"
    );
    let long = {
        let url = s.url.clone();
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{url}/v1/completions"))
                .json(
                    &json!({"model": "smol", "prompt": "Once", "max_tokens": 300,
                    "ignore_eos": true, "temperature": 0}),
                )
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    // while it generates, every step is longer than the timeout: not ready, and busy
    let (mut stalled, mut busy) = (None, false);
    for _ in 0..400 {
        let (status, body) = get(&format!("{}/ready", s.url)).await;
        if status == 503 {
            stalled = Some(body["reason"].as_str().unwrap().to_string());
        }
        let (_, load) = get(&format!("{}/load", s.url)).await;
        busy |= load["models"][0]["num_requests_running"] == 1 && load["server_load"] == 1;
        assert_eq!(get(&format!("{}/health", s.url)).await.0, 200);
        if stalled.is_some() && busy {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let reason = stalled.expect("/ready never saw the stall");
    assert!(reason.contains("no progress"), "{reason}");
    assert!(busy, "/load never showed the running request");
    assert_eq!(long.await.unwrap(), 200);
    // idle again: ready
    assert_eq!(get(&format!("{}/ready", s.url)).await.0, 200);
}
