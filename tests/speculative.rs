//! Speculative decoding by prompt lookup (`--speculative-config`, method `ngram`) on the real
//! default model (SmolLM2-135M-Instruct Q4_1): every request's tokens and logprobs are bit for
//! bit those of the same request served alone without speculation, greedy and seeded, beside
//! requests that do not speculate (penalties) and with prompts still being prefilled, while the
//! repetitive ones keep most of their drafts.

use std::collections::BTreeMap;
use weir::engine::core::EngineCore;
use weir::scheduler::spec::{SpecConfig, SpecStats};
use weir::step::Request;
use weir::testing::{default_model_path, engine_core, greedy_request, test_limits};

fn core(spec: Option<SpecConfig>) -> EngineCore {
    let mut limits = test_limits(512, 16);
    limits.speculative = spec;
    engine_core(&default_model_path(), &limits)
}

/// Tokens with their logprobs' bits.
type Tokens = Vec<(u32, u32)>;

/// Steps `core` to the end: each request's tokens, and the speculation's counts.
fn run(core: &mut EngineCore) -> (BTreeMap<u64, Tokens>, SpecStats) {
    let mut out = BTreeMap::<u64, Tokens>::new();
    let mut spec = SpecStats::default();
    while core.has_work() {
        let (deltas, stats) = core.step();
        spec.drafts += stats.spec.drafts;
        spec.draft_tokens += stats.spec.draft_tokens;
        spec.accepted_tokens += stats.spec.accepted_tokens;
        for d in deltas {
            assert!(d
                .finish
                .as_ref()
                .is_none_or(|f| !format!("{f:?}").contains("Error")));
            assert_eq!(d.logprobs.len(), d.new_token_ids.len());
            let lps = d.logprobs.iter().map(|l| l.logprob.to_bits());
            out.entry(d.request_id.0)
                .or_default()
                .extend(d.new_token_ids.iter().copied().zip(lps));
        }
    }
    (out, spec)
}

/// The requests: repetitive token prompts (a 24-token phrase said three times), greedy and
/// seeded at temperature 0.8; a plain prompt; one with a repetition penalty (which never
/// speculates); a long prompt that is still prefilling while the others decode.
fn requests() -> Vec<Request> {
    let phrase = |salt: u32| (0..24).map(move |i| 1000 + (i * 37 + salt) % 900);
    let repeated = |salt| -> Vec<u32> { (0..3).flat_map(|_| phrase(salt)).collect() };
    let mut reqs = Vec::new();
    for (id, prompt) in [
        (1, repeated(1)),
        (2, repeated(2)),
        (3, (0..40).map(|i| 2000 + i * 13).collect()),
    ] {
        reqs.push(greedy_request(id, prompt, 48));
    }
    let mut seeded = greedy_request(4, repeated(3), 48);
    seeded.sampling.temperature = 0.8;
    seeded.sampling.seed = Some(7);
    reqs.push(seeded);
    let mut penalized = greedy_request(5, repeated(4), 24);
    penalized.sampling.repetition_penalty = 1.3;
    reqs.push(penalized);
    reqs.push(greedy_request(
        6,
        (0..700).map(|i| 3000 + i % 500).collect(),
        16,
    ));
    for r in &mut reqs {
        r.sampling.logprobs = Some(0);
    }
    reqs
}

#[test]
fn speculation_changes_no_token_and_keeps_drafts_of_repetitive_text() {
    let spec = SpecConfig {
        num_tokens: 4,
        lookup_min: 2,
        lookup_max: 5,
        disable_by_batch_size: None,
    };
    let mut alone = BTreeMap::new();
    for r in requests() {
        let mut c = core(None);
        c.add(r).unwrap();
        alone.extend(run(&mut c).0);
    }
    // each alone with speculation, then all at once
    let mut total = SpecStats::default();
    for r in requests() {
        let id = r.id.0;
        let mut c = core(Some(spec));
        c.add(r).unwrap();
        let (out, s) = run(&mut c);
        assert_eq!(out[&id], alone[&id], "request {id} alone with speculation");
        total.draft_tokens += s.draft_tokens;
        total.accepted_tokens += s.accepted_tokens;
    }
    let mut c = core(Some(spec));
    for r in requests() {
        c.add(r).unwrap();
    }
    let (together, s) = run(&mut c);
    for (id, tokens) in &alone {
        assert_eq!(
            &together[id], tokens,
            "request {id} in the batch with speculation"
        );
    }
    assert_eq!(c.scheduler().num_blocks_used(), 0, "every block back");
    println!(
        "alone: {} of {} drafts kept; together: {} of {} in {} verifications",
        total.accepted_tokens, total.draft_tokens, s.accepted_tokens, s.draft_tokens, s.drafts
    );
    assert!(
        s.accepted_tokens * 2 > s.draft_tokens && s.accepted_tokens >= 40,
        "repetitive text keeps most drafts: {s:?}"
    );
}

/// The default model served over HTTP with and without speculation: the same chat answers,
/// whole and streamed (several tokens per event where drafts were kept), with their logprobs
/// and token counts, and with a stop string inside a step's kept drafts (the answer, its
/// logprobs and its count end at the token that completes it, as without speculation); the
/// server counts the drafts.
#[tokio::test(flavor = "multi_thread")]
async fn served_answers_are_the_same_with_speculation() {
    use serde_json::json;
    use weir::testing::TestServer;
    const SMOL: &str = "SmolLM2-135M-Instruct";
    let smol = default_model_path();
    let text = "The quick brown fox jumps over the lazy dog. Pack my box with five dozen \
                liquor jugs. How vexingly quick daft zebras jump.";
    let ask = |stream: bool, stop: Option<&str>| {
        json!({"model": SMOL, "temperature": 0, "max_tokens": 60, "stream": stream,
               "stop": stop, "logprobs": !stream,
               "messages": [{"role": "user", "content": format!("Repeat this text exactly: {text}")}]})
    };
    // the text, and the logprobs and token count that came with it
    let answer = |v: &serde_json::Value| {
        let c = &v["choices"][0];
        let text = c["message"]["content"].as_str().unwrap().to_string();
        format!(
            "{text}\n{}\n{}",
            c["logprobs"], v["usage"]["completion_tokens"]
        )
    };
    let mut answers = Vec::new();
    for spec in [
        None,
        Some(
            r#"{"method": "ngram", "num_speculative_tokens": 5, "prompt_lookup_max": 4, "prompt_lookup_min": 2}"#,
        ),
    ] {
        let mut limits = test_limits(512, 16);
        limits.speculative = spec.map(|s| SpecConfig::from_json(s).unwrap());
        let server = TestServer::start(&[(SMOL, &smol)], limits);
        let (status, whole) = server
            .post_json("/v1/chat/completions", &ask(false, None))
            .await;
        assert_eq!(status, 200, "{whole}");
        let (_, stopped) = server
            .post_json("/v1/chat/completions", &ask(false, Some("five dozen")))
            .await;
        let sse = server
            .post_text("/v1/chat/completions", &ask(true, None))
            .await;
        let streamed: String = sse
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .filter_map(|d| {
                let v: serde_json::Value = serde_json::from_str(d).unwrap();
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        let metrics = server.get_text("/metrics").await;
        let accepted = weir::testing::metric(
            &metrics,
            "weir:spec_decode_num_accepted_tokens_total",
            &[("model_name", SMOL)],
        );
        answers.push((answer(&whole), answer(&stopped), streamed, accepted));
    }
    let (plain, spec) = (&answers[0], &answers[1]);
    println!("answer: {:?}; drafts accepted: {}", plain.0, spec.3);
    assert_eq!(spec.0, plain.0, "whole answer");
    assert_eq!(spec.1, plain.1, "answer cut by a stop string");
    let text = |a: &str| a.split('\n').next().unwrap().to_string();
    assert!(
        !text(&plain.1).contains("five dozen") && text(&plain.0).contains("five dozen"),
        "{plain:?}"
    );
    assert_eq!(spec.2, text(&plain.0), "streamed answer");
    assert_eq!(plain.3, 0.0);
    assert!(spec.3 >= 20.0, "the repeated text keeps drafts: {}", spec.3);
}
