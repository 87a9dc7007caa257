//! The Grafana dashboard against a real Prometheus: Prometheus (Debian's package, fetched into
//! ~/.cache/weir when it is not installed) scrapes a live weir under load with
//! `scripts/prometheus.yml`; then every PromQL expression of `scripts/grafana/weir.json` must
//! return data through Prometheus' HTTP API, and the counters must equal what the test sent.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use weir::testing::{test_limits, write_tiny_llama, TestServer};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// `prometheus` from PATH, `WEIR_PROMETHEUS`, or Debian's package unpacked into the cache
/// (`apt-get download` needs no root).
fn prometheus_binary() -> PathBuf {
    if let Ok(p) = std::env::var("WEIR_PROMETHEUS") {
        return PathBuf::from(p);
    }
    if Command::new("prometheus")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return PathBuf::from("prometheus");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    let dir = home.join(".cache/weir/prometheus");
    let bin = dir.join("usr/bin/prometheus");
    if !bin.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let ok = Command::new("apt-get")
            .args(["download", "prometheus"])
            .current_dir(&dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "no prometheus: install Debian's `prometheus` package (scripts/test.sh does as root) or set WEIR_PROMETHEUS");
        let deb = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .expect("downloaded .deb");
        let ok = Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(&dir)
            .status()
            .unwrap();
        assert!(ok.success() && bin.exists(), "unpacking {}", deb.display());
    }
    bin
}

struct Prometheus {
    child: Child,
    url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts Prometheus with the repository's config, retargeted at `target` (host:port) and
/// scraping every second.
fn start_prometheus(target: &str, dir: &Path) -> Prometheus {
    let config = std::fs::read_to_string(Path::new(ROOT).join("scripts/prometheus.yml")).unwrap();
    assert!(config.contains("localhost:8000"));
    let config = config
        .replace("localhost:8000", target)
        .replace("scrape_interval: 5s", "scrape_interval: 1s");
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let port = weir::testing::free_port();
    let child = Command::new(prometheus_binary())
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    Prometheus {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

/// Instant query: the result vector.
async fn query(prom: &str, q: &str) -> Vec<Value> {
    let v: Value = reqwest::Client::new()
        .get(format!("{prom}/api/v1/query"))
        .query(&[("query", q)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["status"], "success", "{q}: {v}");
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

async fn scalar(prom: &str, q: &str) -> f64 {
    let r = query(prom, q).await;
    r.first().map_or(f64::NAN, |s| {
        s["value"][1].as_str().unwrap().parse().unwrap()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_dashboard_query_returns_data_and_counters_match() {
    let tmp = tempfile::tempdir().unwrap();
    let tiny = write_tiny_llama(&tmp.path().join("tiny"), 5);
    let s = TestServer::start(&[("tiny", &tiny)], test_limits(256, 16));
    let target = s.url.trim_start_matches("http://").to_string();
    let prom = start_prometheus(&target, tmp.path());
    // Prometheus up and scraping weir
    let started = Instant::now();
    loop {
        let up = reqwest::get(format!("{}/api/v1/query?query=up", prom.url)).await;
        if let Ok(r) = up {
            if let Ok(v) = r.json::<Value>().await {
                if v["data"]["result"][0]["value"][1] == "1" {
                    break;
                }
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "prometheus never scraped weir"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // load for a few seconds: 4 workers, prompts of 20 tokens sharing 16, 12 tokens out
    let client = reqwest::Client::new();
    let (mut requests, mut gen_tokens, mut prompt_tokens) = (0u64, 0u64, 0u64);
    let load_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < load_until {
        let batch: Vec<_> = (0..4)
            .map(|i| {
                let prompt: Vec<u32> = (0..20)
                    .map(|t| if t < 16 { 3 + t } else { 100 + t + i * 7 })
                    .collect();
                let body = json!({"model": "tiny", "prompt": prompt, "max_tokens": 12,
                    "temperature": 0, "ignore_eos": true, "stream": i % 2 == 0});
                let (client, url) = (client.clone(), s.url.clone());
                tokio::spawn(async move {
                    let r = client
                        .post(format!("{url}/v1/completions"))
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                    r.text().await.unwrap();
                })
            })
            .collect();
        for t in batch {
            t.await.unwrap();
        }
        requests += 4;
        gen_tokens += 4 * 12;
        prompt_tokens += 4 * 20;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // one request of each error class the dashboard shows
    let bad = client
        .post(format!("{}/v1/completions", s.url))
        .json(&json!({"model": "tiny", "prompt": [1], "temperature": 9}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    // let Prometheus take the final values
    tokio::time::sleep(Duration::from_secs(3)).await;

    let p = &prom.url;
    let m = r#"{model_name="tiny"}"#;
    assert_eq!(
        scalar(p, &format!("weir:generation_tokens_total{m}")).await,
        gen_tokens as f64
    );
    assert_eq!(
        scalar(p, &format!("weir:prompt_tokens_total{m}")).await,
        prompt_tokens as f64
    );
    assert_eq!(
        scalar(p, &format!("sum(weir:request_success_total{m})")).await,
        requests as f64
    );
    let ok = r#"weir:http_requests_total{route="/v1/completions",status="200"}"#;
    assert_eq!(scalar(p, ok).await, requests as f64);
    let hits = scalar(p, &format!("weir:prefix_cache_hits_total{m}")).await;
    assert!(
        hits >= 16.0 * (requests - 4) as f64,
        "shared 16-token prefix cached: {hits}"
    );

    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(ROOT).join("scripts/grafana/weir.json")).unwrap(),
    )
    .unwrap();
    let vars: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert!(
        vars.contains(&"model_name"),
        "the dashboard has a model_name variable"
    );
    let models = query(p, "group by (model_name) (weir:num_requests_running)").await;
    assert_eq!(models.len(), 1, "the variable's query finds the model");
    let mut checked = 0;
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$model_name", "tiny")
                .replace("$__rate_interval", "1m");
            let result = query(p, &expr).await;
            assert!(
                !result.is_empty(),
                "panel {:?}: no data for {expr}",
                panel["title"]
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "{checked} queries");
}
