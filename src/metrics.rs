//! Prometheus metrics: one `Registry`, every series' name, help and buckets in this file.
//!
//! Names mirror vLLM's (`vllm:` → `weir:`), so dashboards and alerts written for vLLM carry
//! over; every engine series has the label `model_name`. The engine thread records through
//! `EngineMetrics`, whose label values are resolved once per model: recording is an atomic add,
//! no lock and no map lookup on the hot path. `GET /metrics` renders the registry in the text
//! format.

use prometheus::{
    Counter, CounterVec, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec,
    IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::time::Duration;

/// Latency buckets (seconds) for time to first token and queue time: 1 ms to 5 min.
const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 320.0,
];
/// Inter-token latency buckets (seconds): 1 ms to 80 s.
const ITL_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3,
    0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
];
/// End-to-end latency buckets (seconds): 0.3 s to 2 h.
const E2E_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];
/// Step duration buckets (seconds): 1 ms to 60 s.
const STEP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5,
    0.75, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
];
/// Model load buckets (seconds).
const LOAD_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// 1, 2, 5, 10, 20, 50, ... up to `max` (token-count buckets, as vLLM builds them).
fn one_two_five(max: f64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut scale = 1.0;
    loop {
        for m in [1.0, 2.0, 5.0] {
            let v = m * scale;
            if v > max {
                return out;
            }
            out.push(v);
        }
        scale *= 10.0;
    }
}

/// Why a request ended, as the `finished_reason` label (vLLM's values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishedLabel {
    Stop,
    Length,
    Abort,
    Error,
}

impl FinishedLabel {
    /// The label of an engine finish reason (EOS, stop tokens and stop strings are "stop").
    pub fn of(reason: &crate::step::FinishReason) -> Self {
        use crate::step::FinishReason as R;
        match reason {
            R::Eos | R::StopToken(_) | R::StopString(_) => Self::Stop,
            R::Length => Self::Length,
            R::Aborted => Self::Abort,
            R::Error(_) => Self::Error,
        }
    }

    const ALL: [FinishedLabel; 4] = [Self::Stop, Self::Length, Self::Abort, Self::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::Abort => "abort",
            Self::Error => "error",
        }
    }
}

/// A forward step's kind, as the `kind` label of the step series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// Carries prompt tokens (a prompt chunk or a recompute), maybe with decodes.
    Prompt,
    /// One new token per sequence, nothing else.
    Decode,
}

/// The parts of an engine step, as the `phase` label of `weir:step_phase_seconds_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepPhase {
    /// `Scheduler::schedule`.
    Schedule,
    /// Packing the batch and running the model; on a GPU, the host's time to launch the step's
    /// kernels (they run asynchronously).
    Forward,
    /// Sampling; on a GPU this waits for the step's kernels to finish.
    Sample,
    /// `Scheduler::update_from_output`.
    Update,
}

impl StepPhase {
    pub const ALL: [StepPhase; 4] = [Self::Schedule, Self::Forward, Self::Sample, Self::Update];

    fn as_str(self) -> &'static str {
        match self {
            Self::Schedule => "schedule",
            Self::Forward => "forward",
            Self::Sample => "sample",
            Self::Update => "update",
        }
    }
}

/// The whole process's metrics.
pub struct Metrics {
    registry: Registry,
    engine: EngineFamilies,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    models_loaded: IntGauge,
    model_load_seconds: Histogram,
    model_evictions: IntCounter,
    model_memory_bytes: IntGaugeVec,
    lora_info: GaugeVec,
    lora_loads: IntCounterVec,
    lora_evictions: IntCounterVec,
}

struct EngineFamilies {
    running: GaugeVec,
    waiting: GaugeVec,
    kv_usage: GaugeVec,
    kv_blocks: GaugeVec,
    prompt_tokens: IntCounterVec,
    generation_tokens: IntCounterVec,
    preemptions: IntCounterVec,
    success: IntCounterVec,
    prefix_queries: IntCounterVec,
    prefix_hits: IntCounterVec,
    ttft: HistogramVec,
    itl: HistogramVec,
    e2e: HistogramVec,
    queue: HistogramVec,
    req_prompt_tokens: HistogramVec,
    req_generation_tokens: HistogramVec,
    step_tokens: HistogramVec,
    step_duration: HistogramVec,
    step_phase: CounterVec,
    spec_drafts: IntCounterVec,
    spec_draft_tokens: IntCounterVec,
    spec_accepted: IntCounterVec,
    spec_accepted_per_pos: IntCounterVec,
}

fn register<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
    r.register(Box::new(c.clone()))
        .expect("metric names are unique. This is a bug.");
    c
}

fn hist(name: &str, help: &str, buckets: Vec<f64>) -> HistogramOpts {
    HistogramOpts::new(name, help).buckets(buckets)
}

impl EngineFamilies {
    fn new(r: &Registry) -> Self {
        let m = &["model_name"];
        let gauge = |n: &str, h: &str| register(r, GaugeVec::new(Opts::new(n, h), m).unwrap());
        let counter =
            |n: &str, h: &str| register(r, IntCounterVec::new(Opts::new(n, h), m).unwrap());
        let histo = |n: &str, h: &str, b: Vec<f64>, labels: &[&str]| {
            register(r, HistogramVec::new(hist(n, h, b), labels).unwrap())
        };
        let tokens = one_two_five(1e6);
        Self {
            running: gauge(
                "weir:num_requests_running",
                "Requests in the running batch.",
            ),
            waiting: gauge(
                "weir:num_requests_waiting",
                "Requests waiting to be scheduled (preempted ones included).",
            ),
            kv_usage: gauge(
                "weir:kv_cache_usage_perc",
                "Fraction of KV cache blocks in use (0-1).",
            ),
            kv_blocks: gauge("weir:kv_cache_blocks_total", "KV cache blocks in the pool."),
            prompt_tokens: counter(
                "weir:prompt_tokens_total",
                "Prompt tokens of requests whose prefill finished.",
            ),
            generation_tokens: counter("weir:generation_tokens_total", "Generated tokens."),
            preemptions: counter(
                "weir:num_preemptions_total",
                "Sequences preempted (their KV blocks taken back).",
            ),
            success: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "weir:request_success_total",
                        "Finished requests by finish reason.",
                    ),
                    &["model_name", "finished_reason"],
                )
                .unwrap(),
            ),
            spec_drafts: counter(
                "weir:spec_decode_num_drafts_total",
                "Speculative decoding: sequence steps that verified drafts.",
            ),
            spec_draft_tokens: counter(
                "weir:spec_decode_num_draft_tokens_total",
                "Speculative decoding: draft tokens verified.",
            ),
            spec_accepted: counter(
                "weir:spec_decode_num_accepted_tokens_total",
                "Speculative decoding: draft tokens accepted.",
            ),
            spec_accepted_per_pos: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "weir:spec_decode_num_accepted_tokens_per_pos_total",
                        "Speculative decoding: drafts accepted at each position of their step (0: the first).",
                    ),
                    &["model_name", "position"],
                )
                .unwrap(),
            ),
            prefix_queries: counter(
                "weir:prefix_cache_queries_total",
                "Prompt tokens looked up in the prefix cache.",
            ),
            prefix_hits: counter(
                "weir:prefix_cache_hits_total",
                "Prompt tokens found in the prefix cache.",
            ),
            ttft: histo(
                "weir:time_to_first_token_seconds",
                "Time from arrival to the first generated token.",
                TTFT_BUCKETS.to_vec(),
                m,
            ),
            itl: histo(
                "weir:inter_token_latency_seconds",
                "Time between consecutive generated tokens of a request.",
                ITL_BUCKETS.to_vec(),
                m,
            ),
            e2e: histo(
                "weir:e2e_request_latency_seconds",
                "Time from arrival to the last token.",
                E2E_BUCKETS.to_vec(),
                m,
            ),
            queue: histo(
                "weir:request_queue_time_seconds",
                "Time from arrival to the first scheduled step.",
                TTFT_BUCKETS.to_vec(),
                m,
            ),
            req_prompt_tokens: histo(
                "weir:request_prompt_tokens",
                "Prompt tokens per finished request.",
                tokens.clone(),
                m,
            ),
            req_generation_tokens: histo(
                "weir:request_generation_tokens",
                "Generated tokens per finished request.",
                tokens.clone(),
                m,
            ),
            step_tokens: histo(
                "weir:iteration_tokens_total",
                "Tokens computed per forward step.",
                one_two_five(65536.0),
                &["model_name", "kind"],
            ),
            step_duration: histo(
                "weir:step_duration_seconds",
                "Duration of one engine step (schedule, forward, sample).",
                STEP_BUCKETS.to_vec(),
                &["model_name", "kind"],
            ),
            step_phase: register(
                r,
                CounterVec::new(
                    Opts::new(
                        "weir:step_phase_seconds_total",
                        "Engine time by step phase: schedule, forward (on a GPU the host's \
                         kernel launches), sample (on a GPU, waiting for the kernels), update.",
                    ),
                    &["model_name", "phase"],
                )
                .unwrap(),
            ),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let engine = EngineFamilies::new(&r);
        let build = register(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "weir:build_info",
                    "Always 1; the labels describe the build.",
                ),
                &["version", "cuda"],
            )
            .unwrap(),
        );
        build
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                &cfg!(feature = "cuda").to_string(),
            ])
            .set(1);
        Self {
            http_requests: register(
                &r,
                IntCounterVec::new(
                    Opts::new("weir:http_requests_total", "HTTP requests by route and status."),
                    &["method", "route", "status"],
                )
                .unwrap(),
            ),
            http_duration: register(
                &r,
                HistogramVec::new(
                    hist("weir:http_request_duration_seconds", "HTTP request handling time until the response head (streams: until the first byte).", TTFT_BUCKETS.to_vec()),
                    &["method", "route"],
                )
                .unwrap(),
            ),
            models_loaded: register(&r, IntGauge::new("weir:models_loaded", "Models loaded and serving.").unwrap()),
            model_load_seconds: register(&r, Histogram::with_opts(hist("weir:model_load_seconds", "Time to load a model and start its engine.", LOAD_BUCKETS.to_vec())).unwrap()),
            model_evictions: register(&r, IntCounter::new("weir:model_evictions_total", "Models unloaded to make room.").unwrap()),
            model_memory_bytes: register(
                &r,
                IntGaugeVec::new(
                    Opts::new("weir:model_memory_bytes", "Bytes a loaded model holds, measured at load (process RSS growth: weights, KV cache, buffers)."),
                    &["model_name"],
                )
                .unwrap(),
            ),
            lora_info: register(
                &r,
                GaugeVec::new(
                    Opts::new("weir:lora_requests_info", "LoRA adapters of a model's running and waiting requests (vLLM's lora_requests_info); the value is the Unix time of the reading."),
                    &["model_name", "max_lora", "running_lora_adapters", "waiting_lora_adapters"],
                )
                .unwrap(),
            ),
            lora_loads: register(
                &r,
                IntCounterVec::new(
                    Opts::new("weir:lora_loads_total", "LoRA adapters read into a loaded model (at its load, by /v1/load_lora_adapter, or on demand under --max-cpu-loras)."),
                    &["model_name"],
                )
                .unwrap(),
            ),
            lora_evictions: register(
                &r,
                IntCounterVec::new(
                    Opts::new("weir:lora_evictions_total", "LoRA adapters dropped from a loaded model to make room for another (--max-cpu-loras)."),
                    &["model_name"],
                )
                .unwrap(),
            ),
            registry: r,
            engine,
        }
    }

    /// The series of one model's engine, labels resolved.
    pub fn engine(&self, model: &str) -> EngineMetrics {
        let f = &self.engine;
        let l = &[model];
        let step = |h: &HistogramVec| {
            [StepKind::Prompt, StepKind::Decode]
                .map(|k| h.with_label_values(&[model, step_label(k)]))
        };
        EngineMetrics {
            running: f.running.with_label_values(l),
            waiting: f.waiting.with_label_values(l),
            kv_usage: f.kv_usage.with_label_values(l),
            kv_blocks: f.kv_blocks.with_label_values(l),
            prompt_tokens: f.prompt_tokens.with_label_values(l),
            generation_tokens: f.generation_tokens.with_label_values(l),
            preemptions: f.preemptions.with_label_values(l),
            success: FinishedLabel::ALL.map(|r| f.success.with_label_values(&[model, r.as_str()])),
            prefix_queries: f.prefix_queries.with_label_values(l),
            prefix_hits: f.prefix_hits.with_label_values(l),
            ttft: f.ttft.with_label_values(l),
            itl: f.itl.with_label_values(l),
            e2e: f.e2e.with_label_values(l),
            queue: f.queue.with_label_values(l),
            req_prompt_tokens: f.req_prompt_tokens.with_label_values(l),
            req_generation_tokens: f.req_generation_tokens.with_label_values(l),
            step_tokens: step(&f.step_tokens),
            step_duration: step(&f.step_duration),
            step_phase: StepPhase::ALL
                .map(|p| f.step_phase.with_label_values(&[model, p.as_str()])),
            spec_drafts: f.spec_drafts.with_label_values(l),
            spec_draft_tokens: f.spec_draft_tokens.with_label_values(l),
            spec_accepted: f.spec_accepted.with_label_values(l),
            spec_accepted_per_pos: f.spec_accepted_per_pos.clone(),
            model: model.into(),
        }
    }

    /// A model finished loading in `took`, holding `bytes`.
    pub fn model_loaded(&self, model: &str, took: Duration, bytes: u64) {
        self.models_loaded.inc();
        self.model_load_seconds.observe(took.as_secs_f64());
        self.model_memory_bytes
            .with_label_values(&[model])
            .set(bytes as i64);
    }

    /// A model was unloaded (`evicted`: to make room, not by request).
    pub fn model_unloaded(&self, model: &str, evicted: bool) {
        self.models_loaded.dec();
        if evicted {
            self.model_evictions.inc();
        }
        let _ = self.model_memory_bytes.remove_label_values(&[model]);
    }

    /// (finished requests, prompt tokens, generated tokens) of `model` so far.
    pub fn model_totals(&self, model: &str) -> (u64, u64, u64) {
        let f = &self.engine;
        let requests = FinishedLabel::ALL
            .iter()
            .map(|r| {
                f.success
                    .get_metric_with_label_values(&[model, r.as_str()])
                    .map_or(0, |c| c.get())
            })
            .sum();
        let get = |c: &IntCounterVec| {
            c.get_metric_with_label_values(&[model])
                .map_or(0, |c| c.get())
        };
        (requests, get(&f.prompt_tokens), get(&f.generation_tokens))
    }

    /// One HTTP request answered.
    pub fn http_request(&self, method: &str, route: &str, status: u16, took: Duration) {
        self.http_requests
            .with_label_values(&[method, route, &status.to_string()])
            .inc();
        self.http_duration
            .with_label_values(&[method, route])
            .observe(took.as_secs_f64());
    }

    /// An adapter of `model` was read into it (`loaded`) or evicted from it.
    pub fn lora_swapped(&self, model: &str, loaded: bool) {
        let c = if loaded {
            &self.lora_loads
        } else {
            &self.lora_evictions
        };
        c.with_label_values(&[model]).inc();
    }

    /// vLLM's `lora_requests_info`, one series per model with adapters (set at each scrape):
    /// `(model, max_lora, running adapters, waiting adapters)`, the adapters comma-separated.
    pub fn set_lora_requests(&self, rows: &[(String, String, String, String)]) {
        self.lora_info.reset();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        for (model, max, running, waiting) in rows {
            self.lora_info
                .with_label_values(&[model.as_str(), max, running, waiting])
                .set(now);
        }
    }

    /// The registry in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding into memory");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }
}

fn step_label(k: StepKind) -> &'static str {
    match k {
        StepKind::Prompt => "prompt",
        StepKind::Decode => "decode",
    }
}

/// One model's engine series. Cloning shares the series.
#[derive(Clone)]
pub struct EngineMetrics {
    pub running: Gauge,
    pub waiting: Gauge,
    pub kv_usage: Gauge,
    pub kv_blocks: Gauge,
    pub prompt_tokens: IntCounter,
    pub generation_tokens: IntCounter,
    pub preemptions: IntCounter,
    success: [IntCounter; 4],
    pub prefix_queries: IntCounter,
    pub prefix_hits: IntCounter,
    pub ttft: Histogram,
    pub itl: Histogram,
    pub e2e: Histogram,
    pub queue: Histogram,
    pub req_prompt_tokens: Histogram,
    pub req_generation_tokens: Histogram,
    step_tokens: [Histogram; 2],
    step_duration: [Histogram; 2],
    step_phase: [Counter; 4],
    spec_drafts: IntCounter,
    spec_draft_tokens: IntCounter,
    spec_accepted: IntCounter,
    spec_accepted_per_pos: IntCounterVec,
    model: std::sync::Arc<str>,
}

impl EngineMetrics {
    /// Adds a step's speculative decoding: drafts verified (sequence steps and tokens),
    /// tokens accepted, and accepted at each position.
    pub fn speculation(&self, drafts: u64, draft_tokens: u64, accepted: u64, per_pos: &[u64]) {
        self.spec_drafts.inc_by(drafts);
        self.spec_draft_tokens.inc_by(draft_tokens);
        self.spec_accepted.inc_by(accepted);
        for (p, &n) in per_pos.iter().enumerate() {
            self.spec_accepted_per_pos
                .with_label_values(&[&*self.model, &p.to_string()])
                .inc_by(n);
        }
    }

    pub fn finished(&self, reason: FinishedLabel) {
        // `ALL` lists the labels in declaration order
        self.success[reason as usize].inc();
    }

    pub fn step(&self, kind: StepKind, tokens: usize, took: Duration) {
        let i = kind as usize;
        self.step_tokens[i].observe(tokens as f64);
        self.step_duration[i].observe(took.as_secs_f64());
    }

    /// Adds one step's time in each phase (in `StepPhase::ALL` order).
    pub fn step_phases(&self, phases: &[Duration; 4]) {
        for (c, d) in self.step_phase.iter().zip(phases) {
            c.inc_by(d.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_render_with_their_labels() {
        let m = Metrics::new();
        let e = m.engine("tiny");
        e.generation_tokens.inc_by(3);
        e.finished(FinishedLabel::Length);
        e.step(StepKind::Decode, 4, Duration::from_millis(5));
        m.http_request("POST", "/v1/completions", 200, Duration::from_millis(7));
        let text = m.render();
        for want in [
            "weir:generation_tokens_total{model_name=\"tiny\"} 3",
            "weir:request_success_total{finished_reason=\"length\",model_name=\"tiny\"} 1",
            "weir:iteration_tokens_total_count{kind=\"decode\",model_name=\"tiny\"} 1",
            "weir:http_requests_total{method=\"POST\",route=\"/v1/completions\",status=\"200\"} 1",
            "weir:build_info{cuda=",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
        assert_eq!(one_two_five(60.0), vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0]);
    }
}
