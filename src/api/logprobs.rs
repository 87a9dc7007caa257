//! Logprobs as responses carry them: the engine's `TokenLogprobs` rendered with token texts
//! (`TokenLogprob`), and those written as chat's and completions' wire shapes and as vLLM's
//! `prompt_logprobs`.

use super::openai::types::{ChatLogprobs, ChatTokenLogprob, CompletionLogprobs, TopLogprob};
use crate::step::TokenLogprobs;
use crate::text::TextCodec;

/// One output token's logprobs, its text and its alternatives' rendered.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f32,
    /// The most likely tokens, most likely first.
    pub top: Vec<(String, f32)>,
}

/// vLLM's `prompt_logprobs`: `null` for the first prompt token, then per token a map from token
/// id to `{logprob, rank, decoded_token}` holding the prompt's token and the top alternatives.
pub fn vllm_prompt_logprobs(codec: &TextCodec, lps: &[TokenLogprobs]) -> serde_json::Value {
    let entry = |l: f32, rank: u32, id: u32| {
        serde_json::json!({"logprob": l, "rank": rank,
                           "decoded_token": token_text(codec, id, false)})
    };
    let mut out = vec![serde_json::Value::Null];
    for lp in lps {
        let mut m = serde_json::Map::new();
        m.insert(lp.token.to_string(), entry(lp.logprob, lp.rank, lp.token));
        for (i, &(id, l)) in lp.top.iter().enumerate() {
            m.entry(id.to_string())
                .or_insert_with(|| entry(l, i as u32 + 1, id));
        }
        out.push(serde_json::Value::Object(m));
    }
    serde_json::Value::Array(out)
}

/// Renders engine logprobs as the response writers see them.
pub fn render_all(codec: &TextCodec, lps: &[TokenLogprobs], as_ids: bool) -> Vec<TokenLogprob> {
    lps.iter()
        .map(|l| render_logprobs(codec, l, as_ids))
        .collect()
}

/// How logprobs name a token: its piece decoded alone (special tokens included), or
/// `token_id:ID` (vLLM's `return_tokens_as_token_ids`).
pub fn token_text(codec: &TextCodec, id: u32, as_id: bool) -> String {
    if as_id {
        format!("token_id:{id}")
    } else {
        codec.decode(&[id], false).unwrap_or_default()
    }
}

pub fn render_logprobs(codec: &TextCodec, lp: &TokenLogprobs, as_ids: bool) -> TokenLogprob {
    TokenLogprob {
        token: token_text(codec, lp.token, as_ids),
        logprob: lp.logprob,
        top: lp
            .top
            .iter()
            .map(|&(id, l)| (token_text(codec, id, as_ids), l))
            .collect(),
    }
}

/// An f32 as the f64 nearest its shortest decimal form, so that logprobs read the same short
/// number whether a response body, a stream chunk or a `serde_json::Value` carries them.
fn short(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

impl ChatLogprobs {
    pub fn of(entries: &[TokenLogprob]) -> Self {
        let top = |t: &str, l: f32| TopLogprob {
            token: t.to_string(),
            logprob: short(l),
            bytes: t.as_bytes().to_vec(),
        };
        Self {
            content: entries
                .iter()
                .map(|e| ChatTokenLogprob {
                    token: e.token.clone(),
                    logprob: short(e.logprob),
                    bytes: e.token.as_bytes().to_vec(),
                    top_logprobs: e.top.iter().map(|(t, l)| top(t, *l)).collect(),
                })
                .collect(),
            refusal: None,
        }
    }
}

impl CompletionLogprobs {
    /// An echoed prompt: its first token (no logprob), then one entry per later token.
    pub fn of_prompt(first: &str, entries: &[TokenLogprob], offset: &mut usize) -> Self {
        let mut out = Self {
            tokens: vec![first.to_string()],
            token_logprobs: vec![None],
            top_logprobs: vec![None],
            text_offset: vec![*offset],
        };
        *offset += first.chars().count();
        let rest = Self::of(entries, offset);
        out.tokens.extend(rest.tokens);
        out.token_logprobs.extend(rest.token_logprobs);
        out.top_logprobs.extend(rest.top_logprobs);
        out.text_offset.extend(rest.text_offset);
        out
    }

    /// This followed by `more`.
    pub fn extend(&mut self, more: Self) {
        self.tokens.extend(more.tokens);
        self.token_logprobs.extend(more.token_logprobs);
        self.top_logprobs.extend(more.top_logprobs);
        self.text_offset.extend(more.text_offset);
    }

    /// `entries` continuing a text of `*offset` characters (advanced past them).
    pub fn of(entries: &[TokenLogprob], offset: &mut usize) -> Self {
        let mut out = Self::default();
        for e in entries {
            out.tokens.push(e.token.clone());
            out.token_logprobs.push(Some(short(e.logprob)));
            out.top_logprobs.push(Some(
                e.top
                    .iter()
                    .map(|(t, l)| (t.clone(), serde_json::json!(short(*l))))
                    .collect(),
            ));
            out.text_offset.push(*offset);
            *offset += e.token.chars().count();
        }
        out
    }
}
