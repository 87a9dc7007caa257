//! GGUF files whose tokenizer is SentencePiece (`tokenizer.ggml.model = "llama"`: Llama 2,
//! Mistral) load: a SentencePiece BPE model trained by the `sentencepiece` package
//! (tests/sentencepiece_fixture.py) is written into GGUF metadata as llama.cpp stores it
//! (pieces, scores, token types), and weir's tokenizer built from it encodes every test text to
//! the ids `sentencepiece` gives (spaces, unseen words, byte fallback for unseen characters) and
//! decodes them back.

use candle_core::quantized::gguf_file::{self, Value};
use serde_json::Value as Json;
use weir::text::TextCodec;

#[test]
fn sentencepiece_gguf_tokenizes_like_sentencepiece() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = tmp.path().join("sp.json");
    let ok = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/sentencepiece_fixture.py"
        ))
        .arg(&fixture)
        .status()
        .expect("python3 runs")
        .success();
    assert!(
        ok,
        "sentencepiece fixture (run the tests through scripts/test.sh, which installs tests/requirements.txt)"
    );
    let fx: Json = serde_json::from_str(&std::fs::read_to_string(&fixture).unwrap()).unwrap();
    let pieces = fx["pieces"].as_array().unwrap();
    let arr = |f: &dyn Fn(&Json) -> Value| Value::Array(pieces.iter().map(f).collect());
    let tokens = arr(&|p| Value::String(p["piece"].as_str().unwrap().to_string()));
    let scores = arr(&|p| Value::F32(p["score"].as_f64().unwrap() as f32));
    let types = arr(&|p| Value::I32(p["type"].as_i64().unwrap() as i32));
    let model = Value::String("llama".into());
    let (unk, bos, eos) = (Value::U32(0), Value::U32(1), Value::U32(2));
    let metadata = [
        ("tokenizer.ggml.model", &model),
        ("tokenizer.ggml.tokens", &tokens),
        ("tokenizer.ggml.scores", &scores),
        ("tokenizer.ggml.token_type", &types),
        ("tokenizer.ggml.unknown_token_id", &unk),
        ("tokenizer.ggml.bos_token_id", &bos),
        ("tokenizer.ggml.eos_token_id", &eos),
    ];
    let mut file = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut file, &metadata, &[]).unwrap();
    file.set_position(0);
    let content = gguf_file::Content::read(&mut file).unwrap();
    let codec = TextCodec::from_gguf(&content).unwrap();
    assert_eq!(codec.eos_token_ids(), &[2]);
    for case in fx["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_u64().unwrap() as u32)
            .collect();
        let got = codec.encode(text, false).unwrap();
        assert_eq!(got, want, "{text:?}");
        assert_eq!(
            codec.decode(&got, true).unwrap(),
            text,
            "{text:?} round trip"
        );
        // llama.cpp's default for SentencePiece models: BOS first
        assert_eq!(codec.encode(text, true).unwrap()[0], 1);
    }
}
