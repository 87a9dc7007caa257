//! `weir bench`: a load generator for any OpenAI-compatible server. Sends streaming
//! `/v1/completions` requests with token-id prompts of a fixed length and `ignore_eos` (so
//! every request produces exactly `--output-tokens`), keeps `--concurrency` requests in flight,
//! and reports TTFT, inter-token latency and aggregate output tokens/s as JSON.

use clap::Args;
use futures::StreamExt;
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub url: String,
    /// Model id to request; a comma-separated list spreads the requests over them in turn
    /// (e.g. several LoRA adapters).
    #[arg(long, default_value = "SmolLM2-135M-Instruct")]
    pub model: String,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Requests in total (default: 4 x concurrency).
    #[arg(long)]
    pub num_requests: Option<usize>,
    /// Prompt length in tokens (random token ids).
    #[arg(long, default_value_t = 128)]
    pub prompt_tokens: usize,
    /// Output tokens per request (sent as max_tokens with ignore_eos).
    #[arg(long, default_value_t = 128)]
    pub output_tokens: usize,
    /// Tokens of a prefix every prompt starts with (a shared system prompt), before its own
    /// `--prompt-tokens` random tokens.
    #[arg(long, default_value_t = 0)]
    pub shared_prefix_tokens: usize,
    /// Prompt token ids are drawn from [100, this).
    #[arg(long, default_value_t = 10_000)]
    pub max_token_id: u32,
    /// Seed of the prompt generator.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also write the JSON summary to this file.
    #[arg(long)]
    pub output: Option<std::path::PathBuf>,
}

#[derive(Debug, Default, Clone)]
struct RequestResult {
    ttft: Option<Duration>,
    itls: Vec<Duration>,
    output_tokens: usize,
    error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

fn percentiles(mut v: Vec<f64>) -> Percentiles {
    if v.is_empty() {
        return Percentiles {
            mean: 0.0,
            p50: 0.0,
            p90: 0.0,
            p99: 0.0,
            max: 0.0,
        };
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Percentiles {
        mean: v.iter().sum::<f64>() / v.len() as f64,
        p50: at(0.5),
        p90: at(0.9),
        p99: at(0.99),
        max: v[v.len() - 1],
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchSummary {
    pub url: String,
    pub model: String,
    pub concurrency: usize,
    pub num_requests: usize,
    pub prompt_tokens: usize,
    pub shared_prefix_tokens: usize,
    pub output_tokens: usize,
    pub errors: usize,
    pub duration_s: f64,
    pub total_output_tokens: usize,
    pub output_tokens_per_s: f64,
    pub requests_per_s: f64,
    pub ttft_ms: Percentiles,
    pub itl_ms: Percentiles,
    /// The CPU `weir bench` ran on (the server's, when it is this machine).
    pub cpu: crate::cpu::CpuInfo,
}

async fn one_request(
    client: &reqwest::Client,
    args: &BenchArgs,
    (i, prompt): (usize, Vec<u32>),
) -> RequestResult {
    let models: Vec<&str> = args.model.split(',').collect();
    let body = serde_json::json!({
        "model": models[i % models.len()],
        "prompt": prompt,
        "max_tokens": args.output_tokens,
        "ignore_eos": true,
        "temperature": 0.0,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let mut r = RequestResult::default();
    let start = Instant::now();
    let resp = match client
        .post(format!("{}/v1/completions", args.url.trim_end_matches('/')))
        .json(&body)
        .send()
        .await
        .and_then(|r| r.error_for_status())
    {
        Ok(resp) => resp,
        Err(e) => {
            r.error = Some(e.to_string());
            return r;
        }
    };
    let mut last = start;
    let mut buf = String::new();
    let mut chunks = 0;
    let mut stream = resp.bytes_stream();
    while let Some(piece) = stream.next().await {
        let piece = match piece {
            Ok(p) => p,
            Err(e) => {
                r.error = Some(e.to_string());
                return r;
            }
        };
        buf.push_str(&String::from_utf8_lossy(&piece));
        while let Some(end) = buf.find("\n\n") {
            let ev: String = buf.drain(..end + 2).collect();
            let Some(data) = ev.lines().find_map(|l| l.strip_prefix("data: ")) else {
                continue;
            };
            if data == "[DONE]" {
                continue;
            }
            let Ok(v) = serde_json::from_str::<serde_json::Value>(data) else {
                continue;
            };
            if v.get("error").is_some() {
                r.error = Some(data.to_string());
                return r;
            }
            if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                r.output_tokens = n as usize;
            }
            let has_text = v["choices"][0]["text"]
                .as_str()
                .is_some_and(|t| !t.is_empty());
            if has_text {
                let now = Instant::now();
                if r.ttft.is_none() {
                    r.ttft = Some(now - start);
                } else {
                    r.itls.push(now - last);
                }
                last = now;
                chunks += 1;
            }
        }
    }
    if r.output_tokens == 0 {
        r.output_tokens = chunks;
    }
    r
}

/// Runs the benchmark and returns its summary.
pub async fn run(args: BenchArgs) -> anyhow::Result<BenchSummary> {
    let num_requests = args.num_requests.unwrap_or(4 * args.concurrency).max(1);
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut tokens = |n: usize| -> Vec<u32> {
        (0..n)
            .map(|_| rng.random_range(100..args.max_token_id))
            .collect()
    };
    let prefix = tokens(args.shared_prefix_tokens);
    let prompts: Vec<(usize, Vec<u32>)> = (0..num_requests)
        .map(|i| {
            let prompt = prefix
                .iter()
                .copied()
                .chain(tokens(args.prompt_tokens))
                .collect();
            (i, prompt)
        })
        .collect();
    let queue = Arc::new(parking_lot::Mutex::new(prompts));
    // A new connection per request: servers that close kept-alive connections after a few
    // requests (llama-server's HTTP library) would otherwise fail the requests that race the
    // close. A loopback connect costs microseconds.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let args = Arc::new(args);
    let start = Instant::now();
    let workers: Vec<_> = (0..args.concurrency.max(1))
        .map(|_| {
            let (queue, client, args) = (queue.clone(), client.clone(), args.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                loop {
                    let next = queue.lock().pop();
                    let Some(prompt) = next else { break };
                    out.push(one_request(&client, &args, prompt).await);
                }
                out
            })
        })
        .collect();
    let mut results = Vec::new();
    for w in workers {
        results.extend(w.await?);
    }
    let duration = start.elapsed().as_secs_f64();
    let ok: Vec<&RequestResult> = results.iter().filter(|r| r.error.is_none()).collect();
    if let Some(e) = results.iter().find_map(|r| r.error.as_ref()) {
        tracing::warn!(error = %e, "a request failed");
    }
    let total_output_tokens: usize = ok.iter().map(|r| r.output_tokens).sum();
    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    Ok(BenchSummary {
        url: args.url.clone(),
        model: args.model.clone(),
        concurrency: args.concurrency,
        num_requests,
        prompt_tokens: args.prompt_tokens,
        shared_prefix_tokens: args.shared_prefix_tokens,
        output_tokens: args.output_tokens,
        errors: results.len() - ok.len(),
        duration_s: duration,
        total_output_tokens,
        output_tokens_per_s: total_output_tokens as f64 / duration,
        requests_per_s: ok.len() as f64 / duration,
        ttft_ms: percentiles(ok.iter().filter_map(|r| r.ttft.as_ref()).map(ms).collect()),
        itl_ms: percentiles(ok.iter().flat_map(|r| r.itls.iter()).map(ms).collect()),
        cpu: crate::cpu::CpuInfo::get().clone(),
    })
}
