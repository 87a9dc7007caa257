//! Constrained decoding over real HTTP: tests/openai_structured.py drives SmolLM2 through the
//! official `openai` client (JSON schemas validated with `jsonschema`, json_object, guided_choice,
//! guided_regex, an invalid schema's 400).

use weir::testing::{default_model_path, test_limits, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn constrained_outputs_parse_and_validate() {
    let smol = default_model_path();
    let s = TestServer::start(&[("smol", &smol)], test_limits(2048, 16));
    let out = tokio::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/openai_structured.py"
        ))
        .arg(format!("{}/v1", s.url))
        .arg("smol")
        .output()
        .await
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "tests/openai_structured.py failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
