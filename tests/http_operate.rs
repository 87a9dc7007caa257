//! Operating weir over real HTTP on loopback: `/metrics` values move exactly as the requests
//! sent, API keys, 429 at the queue bound (a flood of 2,000 requests all answered, memory
//! bounded), and `--request-timeout` freeing the sequence's blocks.

use serde_json::{json, Value};
use std::time::Duration;
use weir::api::ServerOptions;
use weir::testing::{default_model_path, metric, test_limits, write_tiny_llama, TestServer};

async fn get_text(url: &str, key: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn complete(client: &reqwest::Client, url: &str, body: &Value) -> (u16, Value, String) {
    let resp = client
        .post(format!("{url}/v1/completions"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, resp.json().await.unwrap(), retry)
}

fn tiny_server(
    limits: weir::manager::EngineLimits,
    options: ServerOptions,
) -> (TestServer, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let tiny = write_tiny_llama(&tmp.path().join("tiny"), 5);
    (
        TestServer::start_with(&[("tiny", &tiny)], limits, options),
        tmp,
    )
}

#[tokio::test]
async fn metrics_count_exactly_what_was_served() {
    let (s, _tmp) = tiny_server(test_limits(256, 16), ServerOptions::default());
    let client = reqwest::Client::new();
    // (prompt tokens, output tokens): streamed and not, all to max_tokens
    let reqs = [
        (5usize, 7usize, false),
        (12, 3, true),
        (30, 10, false),
        (5, 1, true),
    ];
    for (i, &(p, n, stream)) in reqs.iter().enumerate() {
        let prompt: Vec<u32> = (0..p as u32)
            .map(|t| 3 + (t * 7 + i as u32) % 250)
            .collect();
        let body = json!({"model": "tiny", "prompt": prompt, "max_tokens": n,
            "temperature": 0, "ignore_eos": true, "stream": stream});
        let resp = client
            .post(format!("{}/v1/completions", s.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.text().await.unwrap();
    }
    // the engine records a request's end before its last delta reaches the client
    let (status, text) = get_text(&format!("{}/metrics", s.url), None).await;
    assert_eq!(status, 200);
    let m = |name: &str, labels: &[(&str, &str)]| metric(&text, name, labels);
    let tiny = ("model_name", "tiny");
    let prompt: usize = reqs.iter().map(|r| r.0).sum();
    let generated: usize = reqs.iter().map(|r| r.1).sum();
    assert_eq!(
        m("weir:prompt_tokens_total", &[tiny]),
        prompt as f64,
        "{text}"
    );
    assert_eq!(m("weir:generation_tokens_total", &[tiny]), generated as f64);
    assert_eq!(
        m(
            "weir:request_success_total",
            &[tiny, ("finished_reason", "length")]
        ),
        4.0
    );
    assert_eq!(m("weir:request_success_total", &[tiny]), 4.0);
    for h in [
        "weir:time_to_first_token_seconds_count",
        "weir:e2e_request_latency_seconds_count",
        "weir:request_queue_time_seconds_count",
        "weir:request_prompt_tokens_count",
    ] {
        assert_eq!(m(h, &[tiny]), 4.0, "{h}");
    }
    assert_eq!(m("weir:request_prompt_tokens_sum", &[tiny]), prompt as f64);
    assert_eq!(
        m("weir:request_generation_tokens_sum", &[tiny]),
        generated as f64
    );
    // one inter-token gap per token after the first
    assert_eq!(
        m("weir:inter_token_latency_seconds_count", &[tiny]),
        (generated - 4) as f64
    );
    assert_eq!(m("weir:prefix_cache_queries_total", &[tiny]), prompt as f64);
    assert_eq!(m("weir:num_requests_running", &[tiny]), 0.0);
    assert_eq!(m("weir:kv_cache_usage_perc", &[tiny]), 0.0);
    assert_eq!(m("weir:kv_cache_blocks_total", &[tiny]), 256.0);
    let steps = m("weir:step_duration_seconds_count", &[tiny]);
    assert!(
        steps >= 10.0,
        "at least one step per output token after the first: {steps}"
    );
    assert!(
        m(
            "weir:step_duration_seconds_count",
            &[tiny, ("kind", "prompt")]
        ) >= 4.0
    );
    // the step's phases are parts of its duration
    let phase = |p: &str| m("weir:step_phase_seconds_total", &[tiny, ("phase", p)]);
    let phases: f64 = ["schedule", "forward", "sample", "update"]
        .iter()
        .map(|p| phase(p))
        .sum();
    let step_seconds = m("weir:step_duration_seconds_sum", &[tiny]);
    assert!(phase("forward") > 0.0 && phase("sample") > 0.0, "{phases}");
    assert!(
        phases <= step_seconds * 1.0001 && phases > step_seconds * 0.5,
        "phases {phases} s within steps {step_seconds} s"
    );
    let route = [("route", "/v1/completions"), ("status", "200")];
    assert_eq!(m("weir:http_requests_total", &route), 4.0);
    assert_eq!(m("weir:models_loaded", &[]), 1.0);
    assert_eq!(m("weir:build_info", &[]), 1.0);
    // a stop string ends the request as "stop", counted once
    let body = json!({"model": "tiny", "prompt": [5, 6, 7], "max_tokens": 40,
        "temperature": 0, "ignore_eos": true});
    let (_, v, _) = complete(&client, &s.url, &body).await;
    let text_out = v["choices"][0]["text"].as_str().unwrap().to_string();
    // a character the greedy text reaches after its first one
    let stop = text_out
        .chars()
        .skip(1)
        .find(|c| !c.is_whitespace() && *c != '\u{fffd}')
        .expect("the tiny model's greedy text has a visible character")
        .to_string();
    let mut body = body.clone();
    body["stop"] = json!([stop]);
    let (status, v, _) = complete(&client, &s.url, &body).await;
    assert_eq!(
        (status, v["choices"][0]["finish_reason"].as_str()),
        (200, Some("stop")),
        "{v}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, text) = get_text(&format!("{}/metrics", s.url), None).await;
    let stops = metric(
        &text,
        "weir:request_success_total",
        &[tiny, ("finished_reason", "stop")],
    );
    assert_eq!(stops, 1.0, "{text}");
    assert_eq!(
        metric(
            &text,
            "weir:request_success_total",
            &[tiny, ("finished_reason", "abort")]
        ),
        0.0
    );
}

#[tokio::test]
async fn api_keys_guard_the_api_and_metrics() {
    let options = ServerOptions {
        api_keys: vec!["key-one".into(), "key-two".into()],
        metrics_api_key: Some("scrape".into()),
        ..ServerOptions::default()
    };
    let (s, _tmp) = tiny_server(test_limits(64, 16), options);
    let client = reqwest::Client::new();
    let body = json!({"model": "tiny", "prompt": [1, 2, 3], "max_tokens": 2});
    let send = |key: Option<&'static str>| {
        let mut req = client.post(format!("{}/v1/completions", s.url)).json(&body);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, v) = send(None).await;
    assert_eq!(status, 401);
    assert_eq!(v["error"]["code"], "invalid_api_key");
    assert_eq!(v["error"]["type"], "authentication_error");
    assert_eq!(send(Some("key-three")).await.0, 401);
    assert_eq!(
        send(Some("key-one ")).await.0,
        200,
        "surrounding spaces are trimmed"
    );
    assert_eq!(send(Some("key-two")).await.0, 200);
    let (status, _) = get_text(&format!("{}/v1/models", s.url), None).await;
    assert_eq!(status, 401);
    assert_eq!(get_text(&format!("{}/health", s.url), None).await.0, 200);
    assert_eq!(get_text(&format!("{}/metrics", s.url), None).await.0, 401);
    assert_eq!(
        get_text(&format!("{}/metrics", s.url), Some("key-one"))
            .await
            .0,
        401
    );
    let (status, text) = get_text(&format!("{}/metrics", s.url), Some("scrape")).await;
    assert_eq!(status, 200);
    let route = [("route", "/v1/completions"), ("status", "401")];
    assert_eq!(metric(&text, "weir:http_requests_total", &route), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_is_answered_200_or_429_and_memory_stays_bounded() {
    let mut limits = test_limits(64, 16);
    limits.max_num_seqs = Some(2);
    limits.max_queued_requests = 4;
    let (s, _tmp) = tiny_server(limits, ServerOptions::default());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    let body = json!({"model": "tiny", "prompt": [9, 8, 7, 6, 5], "max_tokens": 24,
        "temperature": 0, "ignore_eos": true});
    let before = weir::manager::rss_bytes();
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(256));
    let tasks: Vec<_> = (0..2000)
        .map(|_| {
            let (client, url, body, gate) =
                (client.clone(), s.url.clone(), body.clone(), gate.clone());
            tokio::spawn(async move {
                let _permit = gate.acquire().await.unwrap();
                tokio::time::timeout(Duration::from_secs(120), complete(&client, &url, &body))
                    .await
                    .expect("every request is answered")
            })
        })
        .collect();
    let (mut ok, mut limited) = (0, 0);
    for t in tasks {
        let (status, v, retry) = t.await.unwrap();
        match status {
            200 => {
                ok += 1;
                assert_eq!(v["usage"]["completion_tokens"], 24);
            }
            429 => {
                limited += 1;
                assert_eq!(v["error"]["type"], "rate_limit_exceeded");
                assert_eq!(retry, "1");
            }
            _ => panic!("unexpected {status}: {v}"),
        }
    }
    assert!(ok > 0 && limited > 0, "ok {ok}, limited {limited}");
    let grown = weir::manager::rss_bytes().saturating_sub(before);
    assert!(grown < 256 << 20, "RSS grew by {} MiB", grown >> 20);
    // still serving, nothing left queued or holding blocks
    let (status, _, _) = complete(&client, &s.url, &body).await;
    assert_eq!(status, 200);
    let (_, health) = get_text(&format!("{}/health", s.url), None).await;
    let h: Value = serde_json::from_str(&health).unwrap();
    assert_eq!(h["models"][0]["kv_blocks_used"], 0);
    assert_eq!(h["models"][0]["sequences_waiting"], 0);
}

#[tokio::test]
async fn a_request_past_the_timeout_is_aborted_and_frees_its_blocks() {
    let options = ServerOptions {
        request_timeout: Some(Duration::from_millis(300)),
        ..ServerOptions::default()
    };
    let smol = default_model_path();
    let s = TestServer::start_with(&[("smol", &smol)], test_limits(256, 16), options);
    let client = reqwest::Client::new();
    // ~5 ms per token on 2 cores: 1000 tokens cannot finish in 0.3 s
    let body = json!({"model": "smol", "prompt": "Count to a thousand:", "max_tokens": 1000,
        "temperature": 0, "ignore_eos": true});
    let (status, v, _) = complete(&client, &s.url, &body).await;
    assert_eq!(status, 408, "{v}");
    assert_eq!(v["error"]["code"], "request_timeout");
    // streamed: the error arrives as an event, then the stream ends
    let mut body = body.clone();
    body["stream"] = json!(true);
    let resp = client
        .post(format!("{}/v1/completions", s.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    let text = resp.text().await.unwrap();
    assert!(text.contains("request_timeout"), "{text}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, health) = get_text(&format!("{}/health", s.url), None).await;
    let h: Value = serde_json::from_str(&health).unwrap();
    assert_eq!(h["models"][0]["kv_blocks_used"], 0, "{h}");
    assert_eq!(h["models"][0]["sequences_running"], 0, "{h}");
    let (_, text) = get_text(&format!("{}/metrics", s.url), None).await;
    let aborted = metric(
        &text,
        "weir:request_success_total",
        &[("finished_reason", "abort")],
    );
    assert_eq!(aborted, 2.0);
    // a short request still fits
    let body = json!({"model": "smol", "prompt": "Hi", "max_tokens": 3});
    assert_eq!(complete(&client, &s.url, &body).await.0, 200);
}

#[tokio::test]
async fn cache_salt_keeps_prefix_cache_blocks_apart() {
    let (s, _tmp) = tiny_server(test_limits(256, 16), ServerOptions::default());
    let client = reqwest::Client::new();
    let prompt: Vec<u32> = (0..70).map(|t| 3 + (t * 11) % 250).collect();
    let cached = |salt: Option<&'static str>| {
        let mut body = json!({"model": "tiny", "prompt": prompt, "max_tokens": 2});
        if let Some(salt) = salt {
            body["cache_salt"] = json!(salt);
        }
        let (client, url) = (client.clone(), s.url.clone());
        async move {
            let (status, v, _) = complete(&client, &url, &body).await;
            assert_eq!(status, 200, "{v}");
            v["usage"]["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .unwrap_or(0)
        }
    };
    assert_eq!(cached(Some("tenant-a")).await, 0, "first sight");
    assert_eq!(
        cached(Some("tenant-a")).await,
        64,
        "same salt: four full blocks"
    );
    assert_eq!(cached(Some("tenant-b")).await, 0, "another salt");
    assert_eq!(cached(None).await, 0, "no salt is a salt of its own");
    assert_eq!(cached(None).await, 64);
    let body = json!({"model": "tiny", "prompt": [1, 2], "cache_salt": ""});
    let (status, v, _) = complete(&client, &s.url, &body).await;
    assert_eq!(
        (status, v["error"]["param"].as_str()),
        (400, Some("cache_salt"))
    );
}

#[tokio::test]
async fn request_ids_are_echoed_and_cors_follows_the_allowed_origins() {
    let options = ServerOptions {
        allowed_origins: vec!["https://app.example".into()],
        ..ServerOptions::default()
    };
    let (s, _tmp) = tiny_server(test_limits(64, 16), options);
    let client = reqwest::Client::new();
    let body = json!({"model": "tiny", "prompt": [1, 2, 3], "max_tokens": 2});
    let resp = client
        .post(format!("{}/v1/completions", s.url))
        .header("x-request-id", "trace-42")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "trace-42");
    // none sent (or an unusable one): a fresh random id
    let resp = client
        .get(format!("{}/health", s.url))
        .send()
        .await
        .unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 32);
    let resp = client
        .get(format!("{}/health", s.url))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    assert_ne!(resp.headers()["x-request-id"], "bad id with spaces");
    // CORS: the allowed origin gets its header and a preflight answer; another origin does not
    let preflight = client
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/v1/completions", s.url),
        )
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 200);
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let other = client
        .get(format!("{}/v1/models", s.url))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn each_api_key_has_its_own_rate_limits() {
    let options = ServerOptions {
        api_keys: vec!["a".into(), "b".into()],
        rate_limits: weir::api::ratelimit::RateLimits {
            requests_per_minute: Some(3.0),
            tokens_per_minute: Some(60.0),
        },
        ..ServerOptions::default()
    };
    let (s, _tmp) = tiny_server(test_limits(64, 16), options);
    let client = reqwest::Client::new();
    let send = |key: &'static str, max_tokens: usize| {
        let req = client
            .post(format!("{}/v1/completions", s.url))
            .bearer_auth(key)
            .json(
                &json!({"model": "tiny", "prompt": [1, 2, 3], "max_tokens": max_tokens,
                "ignore_eos": true}),
            );
        async move {
            let r = req.send().await.unwrap();
            let retry = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            (r.status().as_u16(), retry)
        }
    };
    // requests: 3 a minute for key a
    for _ in 0..3 {
        assert_eq!(send("a", 1).await.0, 200);
    }
    let (status, retry) = send("a", 1).await;
    assert_eq!(status, 429);
    let wait: u64 = retry.unwrap().parse().unwrap();
    assert!((1..=20).contains(&wait), "{wait}");
    // tokens: key b spends 3 + 50 of its 60, then 3 + 50 more (allowed: the bucket was
    // positive), and is refused until it refills
    assert_eq!(send("b", 50).await.0, 200);
    assert_eq!(send("b", 50).await.0, 200);
    let (status, retry) = send("b", 1).await;
    assert_eq!(status, 429);
    let wait: u64 = retry.unwrap().parse().unwrap();
    assert!(
        (40..=50).contains(&wait),
        "46 tokens short at 1 per second: {wait}"
    );
}

#[tokio::test]
async fn request_size_limits_are_explicit() {
    let options = ServerOptions {
        max_prompts_per_request: 4,
        max_body_bytes: 4096,
        ..ServerOptions::default()
    };
    let (s, _tmp) = tiny_server(test_limits(64, 16), options);
    let client = reqwest::Client::new();
    let prompts: Vec<Vec<u32>> = (0..5).map(|i| vec![1, 2, i]).collect();
    let body = json!({"model": "tiny", "prompt": prompts, "max_tokens": 1});
    let (status, v, _) = complete(&client, &s.url, &body).await;
    assert_eq!(
        (status, v["error"]["param"].as_str()),
        (400, Some("prompt")),
        "{v}"
    );
    let body = json!({"model": "tiny", "prompt": &prompts[..4], "max_tokens": 1});
    assert_eq!(complete(&client, &s.url, &body).await.0, 200);
    let big = json!({"model": "tiny", "prompt": "x".repeat(5000), "max_tokens": 1});
    let resp = client
        .post(format!("{}/v1/completions", s.url))
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
}
