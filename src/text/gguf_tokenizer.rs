//! Builds a `tokenizers::Tokenizer` from GGUF metadata (`tokenizer.ggml.*`), as llama.cpp does:
//! the `gpt2` (byte-level BPE) family, with the pre-tokenizer named by `tokenizer.ggml.pre`, and
//! the `llama` family (SentencePiece BPE with byte fallback: Llama 2, Mistral, TinyLlama), whose
//! merges are derived from the pieces' scores: a pair merges in the order of the score of the
//! piece it makes, which is SentencePiece's own rule. The tokenizer is assembled as
//! tokenizer.json text so the `tokenizers` crate validates it.

use super::error::TextError;
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

/// A token matched whole, before the model's own splitting (`special`: dropped from decoded
/// text when special tokens are skipped).
fn added_token(id: usize, content: &str, special: bool) -> serde_json::Value {
    json!({"id": id, "content": content, "single_word": false, "lstrip": false,
           "rstrip": false, "normalized": false, "special": special})
}

/// tokenizer.json text for the GGUF's vocabulary.
pub fn tokenizer_json(ct: &Content) -> Result<String, TextError> {
    let model = gguf_string(ct, "tokenizer.ggml.model").unwrap_or_default();
    if model == "llama" {
        return sentencepiece_json(ct);
    }
    if model != "gpt2" {
        return Err(TextError::Tokenizer(format!(
            "GGUF tokenizer model {model:?} is not supported yet (byte-level BPE \"gpt2\" and SentencePiece \"llama\" are)"
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
            added.push(added_token(id, tok, ty == 3));
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

fn scores(ct: &Content, n: usize) -> Result<Vec<f32>, TextError> {
    let err = || TextError::Tokenizer("GGUF metadata lacks tokenizer.ggml.scores".into());
    let v = ct.metadata.get("tokenizer.ggml.scores").ok_or_else(err)?;
    let s: Vec<f32> = v
        .to_vec()
        .map_err(|_| err())?
        .iter()
        .map(|x| x.to_f32().map_err(|_| err()))
        .collect::<Result<_, _>>()?;
    if s.len() != n {
        return Err(err());
    }
    Ok(s)
}

/// SentencePiece BPE (`tokenizer.ggml.model = "llama"`) as tokenizer.json: a leading "▁" (unless
/// `tokenizer.ggml.add_space_prefix` is false, as in Gemma) and spaces as "▁", BPE over pieces with byte fallback (`<0xNN>` pieces), merges ranked by the
/// score of the piece each makes (ties: lower id first).
fn sentencepiece_json(ct: &Content) -> Result<String, TextError> {
    let tokens = strings(ct, "tokenizer.ggml.tokens")?;
    let scores = scores(ct, tokens.len())?;
    let types = token_types(ct, tokens.len());
    let unk = gguf_u32(ct, "tokenizer.ggml.unknown_token_id")
        .and_then(|i| tokens.get(i as usize))
        .cloned();
    let ids: std::collections::HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let mut vocab = Map::new();
    let mut added = Vec::new();
    let mut merges: Vec<(f32, usize, usize, &str, &str)> = Vec::new();
    for (id, tok) in tokens.iter().enumerate() {
        vocab.insert(tok.clone(), json!(id));
        // 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte
        let ty = types.get(id).copied().unwrap_or(1);
        if ty == 2 || ty == 3 || ty == 4 {
            added.push(added_token(id, tok, ty != 4));
            continue;
        }
        if ty != 1 {
            continue;
        }
        for (k, _) in tok.char_indices().skip(1) {
            let (l, r) = tok.split_at(k);
            if let (Some(&li), true) = (ids.get(l), ids.contains_key(r)) {
                merges.push((scores[id], id, li, l, r));
            }
        }
    }
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let merges: Vec<serde_json::Value> = merges.iter().map(|m| json!([m.3, m.4])).collect();
    let space = json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"});
    let prefix = gguf_bool(ct, "tokenizer.ggml.add_space_prefix").unwrap_or(true);
    let (normalizers, decoders) = if prefix {
        (
            vec![json!({"type": "Prepend", "prepend": "\u{2581}"}), space],
            vec![json!({"type": "Strip", "content": " ", "start": 1, "stop": 0})],
        )
    } else {
        (vec![space], vec![])
    };
    let mut decoders_all = vec![
        json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    decoders_all.extend(decoders);
    let doc = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": normalizers},
        "pre_tokenizer": null,
        "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": decoders_all},
        "model": {"type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
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
