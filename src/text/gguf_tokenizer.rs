//! Builds a `tokenizers::Tokenizer` from GGUF metadata (`tokenizer.ggml.*`), as llama.cpp does:
//! the `gpt2` (byte-level BPE) family, with the pre-tokenizer named by `tokenizer.ggml.pre`.
//! The tokenizer is assembled as tokenizer.json text so the `tokenizers` crate validates it.

use super::tokenizer::TextError;
use candle_core::quantized::gguf_file::{Content, Value};
use serde_json::{json, Map};

fn strings(ct: &Content, key: &str) -> Result<Vec<String>, TextError> {
    let err = || TextError::Tokenizer(format!("GGUF metadata lacks string array {key}"));
    let v = ct.metadata.get(key).ok_or_else(err)?;
    let arr = v.to_vec().map_err(|_| err())?;
    arr.iter()
        .map(|x| x.to_string().cloned().map_err(|_| err()))
        .collect()
}

fn token_types(ct: &Content, n: usize) -> Vec<i32> {
    match ct
        .metadata
        .get("tokenizer.ggml.token_type")
        .map(|v| v.to_vec())
    {
        Some(Ok(a)) => a.iter().map(|x| x.to_i32().unwrap_or(1)).collect(),
        _ => vec![1; n],
    }
}

/// Pre-tokenizer for llama.cpp's `tokenizer.ggml.pre` names (byte-level BPE models).
fn pre_tokenizer(pre: &str) -> serde_json::Value {
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    match pre {
        // SmolLM / StarCoder split every digit, then GPT-2's byte-level regex.
        "smollm" | "starcoder" | "refact" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level]}),
        "llama3" | "llama-bpe" | "qwen2" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"},
             "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}),
        _ => byte_level,
    }
}

/// tokenizer.json text for the GGUF's vocabulary.
pub fn tokenizer_json(ct: &Content) -> Result<String, TextError> {
    let model = ct
        .metadata
        .get("tokenizer.ggml.model")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_default();
    if model != "gpt2" {
        return Err(TextError::Tokenizer(format!(
            "GGUF tokenizer model {model:?} is not supported yet (byte-level BPE \"gpt2\" is)"
        )));
    }
    let tokens = strings(ct, "tokenizer.ggml.tokens")?;
    let merges = strings(ct, "tokenizer.ggml.merges")?;
    let types = token_types(ct, tokens.len());
    let pre = match ct.metadata.get("tokenizer.ggml.pre") {
        Some(Value::String(s)) => s.as_str(),
        _ => "default",
    };
    let mut vocab = Map::new();
    let mut added = Vec::new();
    for (id, tok) in tokens.iter().enumerate() {
        vocab.insert(tok.clone(), json!(id));
        // 3 = control (special), 4 = user-defined: both match as whole added tokens.
        let ty = types.get(id).copied().unwrap_or(1);
        if ty == 3 || ty == 4 {
            added.push(
                json!({"id": id, "content": tok, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": ty == 3}),
            );
        }
    }
    let doc = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer(pre),
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges},
    });
    Ok(doc.to_string())
}

/// A `u32` GGUF metadata value.
pub fn gguf_u32(ct: &Content, key: &str) -> Option<u32> {
    ct.metadata.get(key).and_then(|v| v.to_u32().ok())
}

/// A string GGUF metadata value.
pub fn gguf_string(ct: &Content, key: &str) -> Option<String> {
    ct.metadata
        .get(key)
        .and_then(|v| v.to_string().ok())
        .cloned()
}

/// A bool GGUF metadata value.
pub fn gguf_bool(ct: &Content, key: &str) -> Option<bool> {
    ct.metadata.get(key).and_then(|v| v.to_bool().ok())
}
