//! Constrained decoding over real HTTP: tests/openai_structured.py drives SmolLM2 through the
//! official `openai` client (JSON schemas validated with `jsonschema`, json_object, guided_choice,
//! guided_regex, an invalid schema's 400).

use weir::testing::{default_model_path, test_limits, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn constrained_outputs_parse_and_validate() {
    let smol = default_model_path();
    let s = TestServer::start(&[("smol", &smol)], test_limits(2048, 16));
    weir::testing::run_python_test("openai_structured.py", &[&format!("{}/v1", s.url), "smol"])
        .await;
}
