//! OpenAI API over real HTTP on loopback, with the real default model (and the tiny random model
//! as a second one): answers, SSE framing, stop strings, max_tokens, errors, and the official
//! `openai` Python client.

use serde_json::{json, Value};
use std::sync::OnceLock;
use weir::testing::{default_model_path, test_limits, write_tiny_llama, TestServer};

const SMOL: &str = "SmolLM2-135M-Instruct";

fn server() -> &'static TestServer {
    static S: OnceLock<(TestServer, tempfile::TempDir)> = OnceLock::new();
    &S.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let tiny = write_tiny_llama(&tmp.path().join("tiny"), 5);
        let smol = default_model_path();
        let limits = test_limits(512, 16);
        (
            TestServer::start(&[(SMOL, &smol), ("tiny", &tiny)], limits),
            tmp,
        )
    })
    .0
}

async fn post(path: &str, body: Value) -> (u16, Value) {
    server().post_json(path, &body).await
}

async fn post_raw(path: &str, body: &'static str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}{path}", server().url))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// `data:` payloads of an SSE response, in order.
async fn sse(path: &str, body: Value) -> Vec<String> {
    let resp = reqwest::Client::new()
        .post(format!("{}{path}", server().url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = resp.text().await.unwrap();
    assert!(text.ends_with("\n\n"), "events end with a blank line");
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data event: {e:?}"))
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn greedy_completion_continues_with_paris() {
    let (status, v) = post(
        "/v1/completions",
        json!({"model": SMOL, "prompt": "The capital of France is", "max_tokens": 6, "temperature": 0}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "text_completion");
    let text = v["choices"][0]["text"].as_str().unwrap();
    assert!(text.starts_with(" Paris"), "{text:?}");
    assert_eq!(v["usage"]["completion_tokens"], 6);
    assert_eq!(v["usage"]["prompt_tokens"], 5);
    assert_eq!(v["usage"]["total_tokens"], 11);
    assert_eq!(v["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn greedy_chat_answers_paris() {
    let (status, v) = post(
        "/v1/chat/completions",
        json!({"model": SMOL, "temperature": 0, "max_tokens": 30,
               "messages": [{"role": "user", "content": "What is the capital of France? Answer in one word."}]}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(text.contains("Paris"), "{text:?}");
    assert_eq!(
        v["choices"][0]["finish_reason"], "stop",
        "ends at <|im_end|>"
    );
}

#[tokio::test]
async fn streaming_chat_frames_chunks_usage_and_done() {
    let events = sse(
        "/v1/chat/completions",
        json!({"model": SMOL, "temperature": 0, "max_tokens": 30, "stream": true,
               "stream_options": {"include_usage": true},
               "messages": [{"role": "user", "content": "What is the capital of France? Answer in one word."}]}),
    )
    .await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(text.contains("Paris"), "{text:?}");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"].as_array().unwrap().len(), 0);
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let n = usage["usage"]["completion_tokens"].as_u64().unwrap();
    assert!((1..30).contains(&n));
    // the same request without streaming gives the same text
    let (_, v) = post(
        "/v1/chat/completions",
        json!({"model": SMOL, "temperature": 0, "max_tokens": 30,
               "messages": [{"role": "user", "content": "What is the capital of France? Answer in one word."}]}),
    )
    .await;
    assert_eq!(v["choices"][0]["message"]["content"], text);
}

#[tokio::test]
async fn streaming_completions_with_two_prompts() {
    let events = sse(
        "/v1/completions",
        json!({"model": SMOL, "temperature": 0, "max_tokens": 5, "stream": true, "ignore_eos": true,
               "prompt": ["The capital of France is", "One, two, three,"]}),
    )
    .await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let mut texts = [String::new(), String::new()];
    let mut finishes = 0;
    for c in &chunks {
        assert_eq!(c["object"], "text_completion");
        let choice = &c["choices"][0];
        let i = choice["index"].as_u64().unwrap() as usize;
        texts[i].push_str(choice["text"].as_str().unwrap());
        if choice["finish_reason"] == "length" {
            finishes += 1;
        }
    }
    assert_eq!(finishes, 2);
    assert!(texts[0].starts_with(" Paris"), "{texts:?}");
    assert!(!texts[1].is_empty());
    assert!(
        chunks.iter().all(|c| c.get("usage").is_none()),
        "no usage without include_usage"
    );
}

#[tokio::test]
async fn stop_string_ends_generation_and_is_not_emitted() {
    // Greedy text is " Paris.\n\nThe answer is: ..." (see the completion test).
    let (_, v) = post(
        "/v1/completions",
        json!({"model": SMOL, "prompt": "The capital of France is", "max_tokens": 20, "temperature": 0,
               "stop": ["\n\n", "answer"]}),
    )
    .await;
    assert_eq!(v["choices"][0]["text"], " Paris.");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    // a stop string split over tokens: "ris." spans " Paris" and "."
    let events = sse(
        "/v1/completions",
        json!({"model": SMOL, "prompt": "The capital of France is", "max_tokens": 20, "temperature": 0,
               "stop": "ris.", "stream": true}),
    )
    .await;
    let text: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter_map(|c| c["choices"][0]["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(text, " Pa");
}

#[tokio::test]
async fn max_tokens_and_ignore_eos_give_exact_counts() {
    for (field, n) in [("max_tokens", 17), ("max_completion_tokens", 9)] {
        let (status, v) = post(
            "/v1/chat/completions",
            json!({"model": SMOL, "messages": [{"role": "user", "content": "Hi"}], field: n,
                   "ignore_eos": true, "temperature": 0.8, "seed": 3}),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["usage"]["completion_tokens"], n);
        assert_eq!(v["choices"][0]["finish_reason"], "length");
    }
}

/// Two copies of a prompt in one request run in the same batches, so equal seeds must give equal
/// text. (Across different batch compositions the logits may differ in the last bits, as in vLLM.)
#[tokio::test]
async fn seeded_sampling_is_reproducible() {
    let body = json!({"model": SMOL, "prompt": ["Once upon a time", "Once upon a time"], "max_tokens": 12,
                      "temperature": 1.0, "top_p": 0.9, "top_k": 40, "seed": 1234, "ignore_eos": true});
    let (status, v) = post("/v1/completions", body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["text"], v["choices"][1]["text"]);
    assert_eq!(v["usage"]["completion_tokens"], 24);
}

#[tokio::test]
async fn models_and_health() {
    let v: Value = reqwest::get(format!("{}/v1/models", server().url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![SMOL, "tiny"]);
    let h: Value = reqwest::get(format!("{}/health", server().url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["models"][0]["kv_blocks_total"], 512);
}

#[tokio::test]
async fn tiny_model_serves_through_its_own_template() {
    let (status, v) = post(
        "/v1/chat/completions",
        json!({"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4, "ignore_eos": true}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 4);
    // "<|im_start|>user: hello\n<|im_start|>assistant: " is 1 + 12 + 1 + 11 byte tokens
    assert_eq!(v["usage"]["prompt_tokens"], 25);
}

fn assert_error(status: u16, v: &Value, want_status: u16, param: Option<&str>) {
    assert_eq!(status, want_status, "{v}");
    let e = &v["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(e["type"].is_string(), "{v}");
    assert!(e.get("code").is_some(), "{v}");
    match param {
        Some(p) => assert_eq!(e["param"], p, "{v}"),
        None => assert!(e["param"].is_null(), "{v}"),
    }
}

#[tokio::test]
async fn errors_use_the_openai_envelope() {
    let (s, v) = post_raw("/v1/chat/completions", "{\"model\": ").await;
    assert_error(s, &v, 400, None);
    let (s, v) = post_raw("/v1/chat/completions", r#"{"messages": []}"#).await;
    assert_error(s, &v, 400, Some("model"));
    // (path, body, param the error must name), each a 400
    let chat = "/v1/chat/completions";
    let completions = "/v1/completions";
    let user_x = json!([{"role": "user", "content": "x"}]);
    let bad = [
        (
            chat,
            json!({"model": SMOL, "messages": user_x, "temperature": "hot"}),
            "temperature",
        ),
        (
            chat,
            json!({"model": SMOL, "messages": [{"role": "user", "content": 5}]}),
            "messages[0].content",
        ),
        (chat, json!({"model": SMOL, "messages": "hi"}), "messages"),
        (
            chat,
            json!({"model": SMOL, "messages": [{"role": "wizard", "content": "x"}]}),
            "messages[0].role",
        ),
        (chat, json!({"model": SMOL, "messages": []}), "messages"),
        (
            completions,
            json!({"model": SMOL, "prompt": "x", "top_p": 1.5}),
            "top_p",
        ),
        (
            completions,
            json!({"model": SMOL, "prompt": "x", "max_tokens": 0}),
            "max_tokens",
        ),
        (
            completions,
            json!({"model": SMOL, "prompt": "x", "n": 3}),
            "n",
        ),
        (
            completions,
            json!({"model": SMOL, "prompt": [99999999u32]}),
            "prompt",
        ),
        (completions, json!({"model": SMOL, "prompt": ""}), "prompt"),
    ];
    for (path, body, param) in bad {
        let (s, v) = post(path, body).await;
        assert_error(s, &v, 400, Some(param));
    }
    let (s, v) = post(completions, json!({"model": "gpt-17", "prompt": "x"})).await;
    assert_error(s, &v, 404, Some("model"));
    assert_eq!(v["error"]["code"], "model_not_found");
    let (s, v) = post("/v1/nope", json!({})).await;
    assert_eq!(s, 404, "{v}");
}

#[tokio::test]
async fn context_overflow_states_both_numbers() {
    // the test server's pool holds 512 blocks of 16 = 8192 tokens
    let (s, v) = post(
        "/v1/completions",
        json!({"model": SMOL, "prompt": "The capital of France is", "max_tokens": 8190}),
    )
    .await;
    assert_error(s, &v, 400, Some("max_tokens"));
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("8192") && msg.contains("8190") && msg.contains("5 in the messages"),
        "{msg}"
    );
    let long = "word ".repeat(9000);
    let (s, v) = post(
        "/v1/chat/completions",
        json!({"model": SMOL, "messages": [{"role": "user", "content": long}]}),
    )
    .await;
    assert_error(s, &v, 400, Some("messages"));
    assert_eq!(v["error"]["code"], "context_length_exceeded");
}

#[tokio::test]
async fn official_openai_python_client_works() {
    let url = format!("{}/v1", server().url);
    weir::testing::run_python_test("openai_client.py", &[&url, SMOL]).await;
}

#[tokio::test]
async fn repeated_prompt_reports_cached_tokens() {
    let body = json!({"model": SMOL, "temperature": 0, "max_tokens": 3,
                      "messages": [{"role": "user", "content": "Name three rivers of Europe."}]});
    let (_, first) = post("/v1/chat/completions", body.clone()).await;
    let (_, second) = post("/v1/chat/completions", body).await;
    let prompt = second["usage"]["prompt_tokens"].as_u64().unwrap();
    let cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    // every full 16-token block of the prompt except the one holding its last token
    assert_eq!(cached, (prompt - 1) / 16 * 16, "{second}");
    assert_eq!(
        first["choices"][0]["message"],
        second["choices"][0]["message"]
    );
}

#[tokio::test]
async fn priority_needs_the_priority_policy() {
    let (s, v) = post(
        "/v1/completions",
        json!({"model": SMOL, "prompt": "x", "max_tokens": 1, "priority": 3}),
    )
    .await;
    assert_error(s, &v, 400, Some("priority"));
    let (s, v) = post(
        "/v1/completions",
        json!({"model": SMOL, "prompt": "x", "max_tokens": 1, "priority": 0}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test]
async fn chat_messages_carry_refusal_null_and_usage_is_null_before_the_last_chunk() {
    let (status, v) = post(
        "/v1/chat/completions",
        json!({"model": SMOL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let msg = v["choices"][0]["message"].as_object().unwrap();
    assert!(
        msg.contains_key("refusal") && msg["refusal"].is_null(),
        "{v}"
    );
    for (path, body) in [
        (
            "/v1/chat/completions",
            json!({"model": SMOL, "messages": [{"role": "user", "content": "Hi"}]}),
        ),
        ("/v1/completions", json!({"model": SMOL, "prompt": "Hi"})),
    ] {
        let mut with = body.clone();
        with["max_tokens"] = json!(3);
        with["stream"] = json!(true);
        with["stream_options"] = json!({"include_usage": true});
        let events = sse(path, with).await;
        let chunks: Vec<Value> = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        let (last, rest) = chunks.split_last().unwrap();
        assert!(
            last["usage"]["completion_tokens"].as_u64().is_some(),
            "{last}"
        );
        for c in rest {
            assert!(
                c.as_object().unwrap().contains_key("usage") && c["usage"].is_null(),
                "{path}: {c}"
            );
        }
        let mut without = body.clone();
        without["max_tokens"] = json!(3);
        without["stream"] = json!(true);
        let events = sse(path, without).await;
        for e in &events[..events.len() - 1] {
            let c: Value = serde_json::from_str(e).unwrap();
            assert!(!c.as_object().unwrap().contains_key("usage"), "{path}: {c}");
        }
    }
}

#[tokio::test]
async fn tokenize_detokenize_and_one_model_card() {
    let (status, v) = post("/tokenize", json!({"model": SMOL, "prompt": "Hello world"})).await;
    assert_eq!(status, 200, "{v}");
    let tokens = v["tokens"].as_array().unwrap().clone();
    assert_eq!(v["count"], tokens.len());
    assert!(v["max_model_len"].as_u64().unwrap() > 0);
    let (status, d) = post("/detokenize", json!({"model": SMOL, "tokens": tokens})).await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["prompt"], "Hello world");
    let (status, c) = post(
        "/tokenize",
        json!({"model": SMOL, "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    assert_eq!(status, 200, "{c}");
    assert!(
        c["count"].as_u64().unwrap() > 3,
        "the chat template adds its tokens: {c}"
    );
    let (status, e) = post("/detokenize", json!({"model": SMOL, "tokens": [999999]})).await;
    assert_eq!(
        (status, e["error"]["param"].as_str()),
        (400, Some("tokens"))
    );
    let (status, e) = post("/tokenize", json!({"model": SMOL})).await;
    assert_eq!(status, 400, "{e}");
    let card: Value = reqwest::get(format!("{}/v1/models/{SMOL}", server().url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (card["id"].as_str(), card["object"].as_str()),
        (Some(SMOL), Some("model"))
    );
    let missing = reqwest::get(format!("{}/v1/models/nope", server().url))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn stop_strings_can_be_kept_and_special_tokens_shown() {
    let (_, v) = post(
        "/v1/completions",
        json!({"model": SMOL, "prompt": "The capital of France is", "max_tokens": 20, "temperature": 0,
               "stop": ["\n\n"], "include_stop_str_in_output": true}),
    )
    .await;
    assert_eq!(v["choices"][0]["text"], " Paris.\n\n");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    // past EOS (ignore_eos) the chat's end token is text only when special tokens are kept
    let body = |skip: Option<bool>| {
        let mut b = json!({"model": SMOL, "messages": [{"role": "user", "content": "Say hi"}],
            "max_tokens": 40, "temperature": 0, "ignore_eos": true});
        if let Some(skip) = skip {
            b["skip_special_tokens"] = json!(skip);
        }
        b
    };
    let (_, shown) = post("/v1/chat/completions", body(Some(false))).await;
    let shown = shown["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(shown.contains("<|im_end|>"), "{shown:?}");
    let (_, hidden) = post("/v1/chat/completions", body(None)).await;
    let hidden = hidden["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!hidden.contains("<|im_end|>"), "{hidden:?}");
    let (status, e) = post(
        "/v1/completions",
        json!({"model": SMOL, "prompt": "Hi", "spaces_between_special_tokens": false}),
    )
    .await;
    assert_eq!(
        (status, e["error"]["param"].as_str()),
        (400, Some("spaces_between_special_tokens"))
    );
}

#[tokio::test]
async fn fields_weir_cannot_honour_yet_are_400s_not_ignored() {
    let chat = |extra: Value| {
        let mut b = json!({"model": SMOL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    for (field, value) in [("functions", json!([{"name": "f"}])), ("best_of", json!(3))] {
        let (status, v) = post("/v1/chat/completions", chat(json!({field: value}))).await;
        assert_eq!(
            (status, v["error"]["param"].as_str()),
            (400, Some(field)),
            "{v}"
        );
    }
    // neutral values change nothing and are accepted
    for (field, value) in [
        ("logit_bias", json!({})),
        ("logprobs", json!(false)),
        ("response_format", json!({"type": "text"})),
        ("tools", json!([])),
        ("min_p", json!(0.0)),
        ("repetition_penalty", json!(1.0)),
        ("tool_choice", json!("none")),
    ] {
        let (status, v) = post("/v1/chat/completions", chat(json!({field: value}))).await;
        assert_eq!(status, 200, "{field}: {v}");
    }
    let (status, v) = post(
        "/v1/completions",
        json!({"model": SMOL, "prompt": "Hi", "max_tokens": 2, "suffix": "!"}),
    )
    .await;
    assert_eq!(
        (status, v["error"]["param"].as_str()),
        (400, Some("suffix")),
        "{v}"
    );
}
