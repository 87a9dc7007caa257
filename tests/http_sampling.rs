//! Sampling parameters over real HTTP: logprobs are the log-softmax of the model's own logits
//! (computed here in-process on the same tiny random weights); every parameter out of range is
//! a 400 naming it; and the official `openai` Python client drives logprobs, penalties,
//! `logit_bias`, `min_p` and seeds on SmolLM2 and the tiny model (tests/openai_sampling.py:
//! exact checks where the tiny model's logprobs predict the output).

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use serde_json::{json, Value};
use std::sync::OnceLock;
use weir::kv::KvCacheConfig;
use weir::models::attention::cpu::CpuBackend;
use weir::models::attention::Attention;
use weir::models::weights::VarBuilderWeights;
use weir::models::{CausalLm, Llama, LlamaConfig};
use weir::testing::{
    default_model_path, single_seq_batch, test_limits, tiny_llama_config_json, tiny_llama_weights,
    write_tiny_llama, TestServer,
};

const SMOL: &str = "SmolLM2-135M-Instruct";
const TINY_SEED: u64 = 5;

fn server() -> &'static TestServer {
    static S: OnceLock<(TestServer, tempfile::TempDir)> = OnceLock::new();
    &S.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let tiny = write_tiny_llama(&tmp.path().join("tiny"), TINY_SEED);
        let smol = default_model_path();
        (
            TestServer::start(&[(SMOL, &smol), ("tiny", &tiny)], test_limits(1024, 16)),
            tmp,
        )
    })
    .0
}

async fn post(path: &str, body: Value) -> (u16, Value) {
    server().post_json(path, &body).await
}

/// The tiny model's last-position logits for `prompt`, computed in-process.
fn tiny_logits(prompt: &[u32]) -> Vec<f32> {
    let vb = VarBuilder::from_tensors(tiny_llama_weights(TINY_SEED), DType::F32, &Device::Cpu);
    let cfg = LlamaConfig::from_hf(&tiny_llama_config_json()).unwrap();
    let model = Llama::load(&mut VarBuilderWeights::new(vb), cfg).unwrap();
    let block = 16;
    let blocks = prompt.len().div_ceil(block) as u32;
    let kv = KvCacheConfig {
        num_layers: model.num_layers(),
        num_kv_heads: model.attention_shape().num_kv_heads,
        head_dim: model.attention_shape().head_dim,
        block_size: block,
        num_blocks: blocks as usize,
        dtype_size: 4,
        groups: weir::kv::KvGroups::uniform(model.num_layers(), false),
    };
    let mut attn = Attention::new(Box::new(CpuBackend::new(model.attention_shape())), kv).unwrap();
    let table: Vec<u32> = (0..blocks).collect();
    let batch = single_seq_batch(prompt, 0, &table, block);
    let logits = model.forward(&batch, &mut attn).unwrap();
    logits.get(0).unwrap().to_vec1::<f32>().unwrap()
}

/// ln Σ exp(l), in f64.
fn log_sum_exp(logits: &[f32]) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    max + logits
        .iter()
        .map(|&l| (l as f64 - max).exp())
        .sum::<f64>()
        .ln()
}

#[tokio::test]
async fn logprobs_are_the_log_softmax_of_the_logits() {
    let prompt: Vec<u32> = (0..23).map(|i| (i * 37 + 11) % 256).collect();
    let logits = tiny_logits(&prompt);
    let lse = log_sum_exp(&logits);
    let mut want: Vec<(usize, f64)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i, l as f64 - lse))
        .collect();
    want.sort_by(|a, b| b.1.total_cmp(&a.1));
    // sampled (temperature 1.5): the sampled token's logprob is its raw log-softmax value too
    for temperature in [0.0, 1.5] {
        let (status, v) = post(
            "/v1/completions",
            json!({"model": "tiny", "prompt": prompt, "max_tokens": 1, "logprobs": 20,
                   "temperature": temperature, "seed": 7, "return_tokens_as_token_ids": true}),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        let lp = &v["choices"][0]["logprobs"];
        let id = |name: &str| -> usize { name.strip_prefix("token_id:").unwrap().parse().unwrap() };
        let top = lp["top_logprobs"][0].as_object().unwrap();
        assert_eq!(top.len(), 20, "{lp}");
        let mut got: Vec<(usize, f64)> = top
            .iter()
            .map(|(k, v)| (id(k), v.as_f64().unwrap()))
            .collect();
        got.sort_by(|a, b| b.1.total_cmp(&a.1));
        for ((gi, g), (wi, w)) in got.iter().zip(&want) {
            assert_eq!(gi, wi, "the same top tokens in the same order");
            assert!((g - w).abs() < 1e-5, "top logprob {g} vs log-softmax {w}");
        }
        let token = id(lp["tokens"][0].as_str().unwrap());
        let token_lp = lp["token_logprobs"][0].as_f64().unwrap();
        let exact = logits[token] as f64 - lse;
        assert!(
            (token_lp - exact).abs() < 1e-5,
            "sampled token {token}: logprob {token_lp} vs log-softmax {exact}"
        );
        if temperature == 0.0 {
            assert_eq!(token, want[0].0, "greedy takes the top token");
        }
    }
}

/// vLLM's `prompt_logprobs`: each prompt token's logprob (from the second) is the log-softmax
/// of the logits of the prefix before it, and its rank counts the tokens more likely.
#[tokio::test]
async fn prompt_logprobs_are_the_log_softmax_of_each_prefix() {
    let prompt: Vec<u32> = (0..23).map(|i| (i * 41 + 7) % 256).collect();
    let (status, v) = post(
        "/v1/completions",
        json!({"model": "tiny", "prompt": prompt, "max_tokens": 1, "prompt_logprobs": 3}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let pl = v["choices"][0]["prompt_logprobs"].as_array().unwrap();
    assert_eq!(pl.len(), prompt.len());
    assert!(pl[0].is_null());
    for p in [1, 2, 10, 22] {
        let logits = tiny_logits(&prompt[..p]);
        let lse = log_sum_exp(&logits);
        let tok = prompt[p] as usize;
        let entry = &pl[p][tok.to_string()];
        let want = logits[tok] as f64 - lse;
        let got = entry["logprob"].as_f64().unwrap();
        assert!((got - want).abs() < 1e-5, "position {p}: {got} vs {want}");
        let rank = 1 + logits.iter().filter(|&&l| l > logits[tok]).count();
        assert_eq!(entry["rank"], rank, "position {p}");
        assert!(
            pl[p].as_object().unwrap().len() >= 3,
            "top 3 listed: {}",
            pl[p]
        );
    }
}

#[tokio::test]
async fn out_of_range_parameters_are_400s_naming_them() {
    let chat = |extra: Value| {
        let mut body = json!({"model": "tiny", "max_tokens": 2,
                              "messages": [{"role": "user", "content": "hi"}]});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let cases = [
        (json!({"logprobs": 3}), "logprobs"),
        (
            json!({"logprobs": true, "top_logprobs": 21}),
            "top_logprobs",
        ),
        (json!({"top_logprobs": 2}), "top_logprobs"),
        (json!({"presence_penalty": 2.5}), "presence_penalty"),
        (json!({"frequency_penalty": -3}), "frequency_penalty"),
        (json!({"repetition_penalty": 0}), "repetition_penalty"),
        (json!({"min_p": 1.5}), "min_p"),
        (json!({"prompt_logprobs": 21}), "prompt_logprobs"),
        (json!({"guided_regex": "(unclosed"}), "guided_regex"),
        (json!({"guided_grammar": "start: x y("}), "guided_grammar"),
        (json!({"guided_choice": []}), "guided_choice"),
        (
            json!({"guided_regex": "a", "response_format": {"type": "json_object"}}),
            "guided_regex",
        ),
        (
            json!({"response_format": {"type": "xml"}}),
            "response_format",
        ),
        (
            json!({"tools": [{"type": "function", "function": {"name": "f",
                   "parameters": {"type": "objectx"}}}], "tool_choice": "required"}),
            "tool_choice",
        ),
        (json!({"logit_bias": {"5": 101}}), "logit_bias"),
        (json!({"logit_bias": {"five": 1}}), "logit_bias"),
        (json!({"logit_bias": {"100000": 1}}), "logit_bias"),
    ];
    for (extra, param) in cases {
        let (status, v) = post("/v1/chat/completions", chat(extra.clone())).await;
        assert_eq!(
            (status, v["error"]["param"].as_str()),
            (400, Some(param)),
            "{extra}: {v}"
        );
    }
    for (n, max_tokens) in [(0, 2), (129, 2), (128, 2000)] {
        let (status, v) = post(
            "/v1/completions",
            json!({"model": "tiny", "prompt": "hi", "max_tokens": max_tokens, "n": n}),
        )
        .await;
        assert_eq!(
            (status, v["error"]["param"].as_str()),
            (400, Some("n")),
            "n {n} x {max_tokens}: {v}"
        );
    }
    for logprobs in [json!(21), json!(-1), json!(true)] {
        let (status, v) = post(
            "/v1/completions",
            json!({"model": "tiny", "prompt": "hi", "max_tokens": 2, "logprobs": logprobs}),
        )
        .await;
        assert_eq!(
            (status, v["error"]["param"].as_str()),
            (400, Some("logprobs")),
            "{v}"
        );
    }
    // neutral values are accepted
    let (status, v) = post(
        "/v1/chat/completions",
        chat(
            json!({"logprobs": false, "top_logprobs": 0, "logit_bias": {}, "min_p": 0,
                    "repetition_penalty": 1, "presence_penalty": 0}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert!(v["choices"][0]["logprobs"].is_null(), "{v}");
}

#[tokio::test]
async fn official_openai_client_drives_every_sampling_parameter() {
    let url = format!("{}/v1", server().url);
    weir::testing::run_python_test("openai_sampling.py", &[&url, SMOL, "tiny"]).await;
}
