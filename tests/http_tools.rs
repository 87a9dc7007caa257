//! Tool calling over real HTTP: tests/openai_tools.py drives SmolLM2 (tools described by weir
//! in a system message) and two tiny models whose templates render tools themselves, one in the
//! Hermes format and one in Llama 3's, through the official `openai` client.

use std::path::Path;
use weir::testing::{default_model_path, test_limits, write_tiny_llama, TestServer};

/// A tiny model whose chat template renders `tools` and names `format`'s markers.
fn tiny_with_template(dir: &Path, template: &str) {
    write_tiny_llama(dir, 5);
    std::fs::write(
        dir.join("tokenizer_config.json"),
        serde_json::json!({"eos_token": "<|endoftext|>", "chat_template": template}).to_string(),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tool_calls_round_trip_through_the_openai_client() {
    let tmp = tempfile::tempdir().unwrap();
    let hermes = tmp.path().join("hermes");
    tiny_with_template(
        &hermes,
        "{% if tools %}<|im_start|>system: tools <tools>{% for t in tools %}{{ t['function']['name'] }} {% endfor %}</tools> answer in <tool_call></tool_call>\n{% endif %}{% for m in messages %}<|im_start|>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant: {% endif %}",
    );
    let llama3 = tmp.path().join("llama3");
    tiny_with_template(
        &llama3,
        "{% if tools %}<|im_start|>system: call with JSON or <|python_tag|>: {% for t in tools %}{{ t['function']['name'] }} {% endfor %}\n{% endif %}{% for m in messages %}<|im_start|>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant: {% endif %}",
    );
    let smol = default_model_path();
    let s = TestServer::start(
        &[("smol", &smol), ("hermes", &hermes), ("llama3", &llama3)],
        test_limits(2048, 16),
    );
    weir::testing::run_python_test(
        "openai_tools.py",
        &[&format!("{}/v1", s.url), "smol", "hermes", "llama3"],
    )
    .await;
}
