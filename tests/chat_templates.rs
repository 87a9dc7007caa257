//! The chat templates of the families weir serves, rendered by weir (minijinja) and by
//! transformers' own renderer (`tests/chat_templates.py`), must give the same text.
//!
//! The templates are the models' own, as llama.cpp keeps copies of them (`models/templates/`
//! in its sources, fetched by scripts/llamacpp-src.sh): Qwen3 (with and without
//! `enable_thinking`, its think blocks in the history), Qwen2.5 and Llama 3.x with tools,
//! Phi-3.5, Gemma 2 (Gemma 3's turns; its refusal of a system role), DeepSeek-R1 distills,
//! Mistral Nemo and SmolLM3. A case where transformers' renderer raises must fail in weir too.

use serde_json::{json, Value};
use weir::testing::{llama_cpp_dir, run_python_test};
use weir::text::{ChatMessage, ChatTemplate, TemplateKwargs};

/// Each template with the bos/eos tokens of its model.
const TEMPLATES: &[(&str, &str, &str)] = &[
    ("Qwen-Qwen3-0.6B.jinja", "", "<|im_end|>"),
    ("Qwen-Qwen2.5-7B-Instruct.jinja", "", "<|im_end|>"),
    ("Qwen-QwQ-32B.jinja", "", "<|im_end|>"),
    (
        "microsoft-Phi-3.5-mini-instruct.jinja",
        "<s>",
        "<|endoftext|>",
    ),
    ("google-gemma-2-2b-it.jinja", "<bos>", "<eos>"),
    (
        "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
        "<｜begin▁of▁sentence｜>",
        "<｜end▁of▁sentence｜>",
    ),
    (
        "meta-llama-Llama-3.1-8B-Instruct.jinja",
        "<|begin_of_text|>",
        "<|eot_id|>",
    ),
    (
        "meta-llama-Llama-3.2-3B-Instruct.jinja",
        "<|begin_of_text|>",
        "<|eot_id|>",
    ),
    ("mistralai-Mistral-Nemo-Instruct-2407.jinja", "<s>", "</s>"),
    ("HuggingFaceTB-SmolLM3-3B.jinja", "", "<|im_end|>"),
];

fn msg(role: &str, content: &str) -> ChatMessage {
    ChatMessage {
        role: role.into(),
        content: content.into(),
        ..ChatMessage::default()
    }
}

fn weather_tool() -> Value {
    json!({"type": "function", "function": {
        "name": "get_weather",
        "description": "The weather in a city (°C or °F) & <now>.",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "The city"},
            "unit": {"type": "string", "enum": ["c", "f"]}
        }, "required": ["city"]}
    }})
}

/// (messages, tools, template kwargs) of each conversation.
fn conversations() -> Vec<(Vec<ChatMessage>, Option<Vec<Value>>, TemplateKwargs)> {
    let kwargs = |v: Value| v.as_object().cloned().unwrap_or_default();
    let call = ChatMessage {
        tool_calls: Some(json!([{"id": "call_9aZ", "type": "function", "function": {
            "name": "get_weather", "arguments": {"city": "Oslo", "unit": "c"}}}])),
        ..msg("assistant", "")
    };
    let answer = ChatMessage {
        tool_call_id: Some("call_9aZ".into()),
        name: Some("get_weather".into()),
        ..msg("tool", "{\"temperature\": -3}")
    };
    let history = vec![
        msg("system", "You are terse."),
        msg("user", "What is 2 + 2?"),
        msg("assistant", "<think>\nAdd them.\n</think>\n\n4"),
        msg("user", "  And 3 + 3?  "),
    ];
    vec![
        (vec![msg("user", "Hello there")], None, kwargs(json!({}))),
        (history.clone(), None, kwargs(json!({}))),
        (
            history.clone(),
            None,
            kwargs(json!({"enable_thinking": false})),
        ),
        (
            history[1..].to_vec(),
            None,
            kwargs(json!({"add_generation_prompt": false, "date_string": "07 Dec 2026"})),
        ),
        (
            vec![msg("user", "Weather in Oslo?")],
            Some(vec![weather_tool()]),
            kwargs(json!({"date_string": "07 Dec 2026"})),
        ),
        (
            vec![
                msg("system", "Use tools."),
                msg("user", "Weather in Oslo?"),
                call,
                answer,
            ],
            Some(vec![weather_tool()]),
            kwargs(json!({"date_string": "07 Dec 2026"})),
        ),
    ]
}

#[tokio::test]
async fn weir_renders_family_templates_as_transformers() {
    let dir = llama_cpp_dir().join("models/templates");
    let runs: Vec<_> = TEMPLATES
        .iter()
        .flat_map(|t| conversations().into_iter().map(move |c| (*t, c)))
        .collect();
    let cases: Vec<Value> = runs
        .iter()
        .map(|((file, bos, eos), (messages, tools, kwargs))| {
            json!({
                "template": file, "messages": messages, "tools": tools, "kwargs": kwargs,
                "bos_token": bos, "eos_token": eos,
            })
        })
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let (cases_path, out_path) = (tmp.path().join("cases.json"), tmp.path().join("out.json"));
    std::fs::write(&cases_path, serde_json::to_vec(&cases).unwrap()).unwrap();
    run_python_test(
        "chat_templates.py",
        &[
            &dir.display().to_string(),
            &cases_path.display().to_string(),
            &out_path.display().to_string(),
        ],
    )
    .await;
    let expected: Vec<Value> = serde_json::from_slice(&std::fs::read(&out_path).unwrap()).unwrap();

    let (mut rendered, mut raised) = (0, 0);
    for (((file, bos, eos), (messages, tools, kwargs)), want) in runs.iter().zip(&expected) {
        let source = std::fs::read_to_string(dir.join(file)).unwrap();
        let template = ChatTemplate::new(&source, bos.to_string(), eos.to_string())
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let got = template.render(messages, tools.as_deref(), kwargs);
        match (&got, want.get("text")) {
            (Ok(text), Some(Value::String(reference))) => {
                assert_eq!(text, reference, "{file} on {messages:?}");
                rendered += 1;
            }
            (Err(_), None) => raised += 1,
            _ => panic!("{file} on {messages:?}: weir {got:?}, transformers {want}"),
        }
    }
    eprintln!("{rendered} rendered alike, {raised} refused by both");
    // the cases exercise rendering, not only refusals (Gemma refuses a system role)
    assert!(
        rendered >= cases.len() * 3 / 4,
        "{rendered} rendered, {raised} raised"
    );
}
