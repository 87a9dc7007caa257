//! `--reasoning-parser` and `chat_template_kwargs` over real HTTP, through the official `openai`
//! Python client (tests/openai_reasoning.py): SmolLM2 held by guided_regex to a
//! `<think>...</think>` answer, split into `reasoning_content` and `content` by the qwen3 and
//! deepseek_r1 parsers, whole and streamed, and untouched without a parser; a tiny model whose
//! template reads `enable_thinking`; and structured output that holds only after the think
//! block (a tiny model with a `</think>` token).

use std::path::Path;
use weir::testing::{default_model_path, test_limits, write_tiny_llama, TestServer};
use weir::text::ReasoningParser;

/// The tiny model with a template that writes an empty think block when thinking is off.
fn write_thinker(dir: &Path) {
    write_tiny_llama(dir, 4);
    let template = "{% for m in messages %}<|im_start|>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}\
        {% if add_generation_prompt %}<|im_start|>assistant: \
        {% if enable_thinking is defined and not enable_thinking %}<think></think>{% endif %}{% endif %}";
    let config = serde_json::json!({"eos_token": "<|endoftext|>", "chat_template": template});
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
}

/// The tiny model whose token 257 is `</think>` (an ordinary added token, as in Qwen3), with a
/// template that closes the think block in the prompt when thinking is off.
fn write_closer(dir: &Path) {
    write_tiny_llama(dir, 4);
    let mut tok = weir::testing::tiny_tokenizer_json();
    tok["added_tokens"][1]["content"] = "</think>".into();
    tok["added_tokens"][1]["special"] = false.into();
    let vocab = tok["model"]["vocab"].as_object_mut().unwrap();
    vocab.remove("<|im_start|>");
    vocab.insert("</think>".into(), 257.into());
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
    let template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}\
        {% if add_generation_prompt %}assistant: \
        {% if enable_thinking is defined and not enable_thinking %}</think>{% endif %}{% endif %}";
    let config = serde_json::json!({"eos_token": "<|endoftext|>", "chat_template": template});
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reasoning_is_split_and_template_kwargs_reach_the_template() {
    let tmp = tempfile::tempdir().unwrap();
    let thinker = tmp.path().join("thinker");
    write_thinker(&thinker);
    let closer = tmp.path().join("closer");
    write_closer(&closer);
    let smol = default_model_path();
    let models = [
        ("smol", smol.as_path()),
        ("thinker", thinker.as_path()),
        ("closer", closer.as_path()),
    ];
    let server = |parser: Option<ReasoningParser>| {
        let mut limits = test_limits(512, 16);
        limits.reasoning_parser = parser;
        TestServer::start(&models, limits)
    };
    let qwen3 = server(Some(ReasoningParser::Qwen3));
    let r1 = server(Some(ReasoningParser::DeepSeekR1));
    let plain = server(None);
    let v1 = |s: &TestServer| format!("{}/v1", s.url);
    weir::testing::run_python_test("openai_reasoning.py", &[&v1(&qwen3), &v1(&r1), &v1(&plain)])
        .await;
}

/// `/v1/responses` with a reasoning parser: SmolLM2 under `deepseek_r1` (whose template opens
/// the think block, so an answer that never closes it is all reasoning) answers with a
/// `reasoning` output item, whole and streamed as `response.reasoning_text.delta` events whose
/// text is the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn responses_carry_reasoning_items() {
    let smol = default_model_path();
    let mut limits = test_limits(256, 16);
    limits.reasoning_parser = Some(ReasoningParser::DeepSeekR1);
    let server = TestServer::start(&[("smol", smol.as_path())], limits);
    let body = serde_json::json!({"model": "smol", "input": "Is 7 prime?", "temperature": 0,
        "max_output_tokens": 12});
    let (status, whole) = server.post_json("/v1/responses", &body).await;
    assert_eq!(status, 200, "{whole}");
    let item = &whole["output"][0];
    assert_eq!(item["type"], "reasoning", "{whole}");
    let text = item["content"][0]["text"].as_str().unwrap().to_string();
    assert!(!text.is_empty(), "{whole}");
    let mut streamed = body.clone();
    streamed["stream"] = true.into();
    let sse = server.post_text("/v1/responses", &streamed).await;
    let events: Vec<serde_json::Value> = sse
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let deltas: String = events
        .iter()
        .filter(|e| e["type"] == "response.reasoning_text.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, text);
    let last = events.last().unwrap();
    assert_eq!(
        last["response"]["output"][0]["content"][0]["text"],
        text.as_str()
    );
}
