//! Constrained decoding (`response_format`, vLLM's `guided_*`) with llguidance: a
//! `GrammarCompiler` per model turns the tokenizer's vocabulary into llguidance's token trie
//! once; each constrained choice gets its own `Constraint` (an llguidance `Matcher`), which the
//! model runner asks for the step's token mask (on a thread of its own, during the forward pass)
//! and advances with every sampled token.

use super::TextCodec;
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{ApproximateTokEnv, SimpleVob, TokRxInfo, TokTrie};
use llguidance::{Matcher, ParserFactory};
use std::sync::Arc;

/// What a constrained request's output must match.
#[derive(Debug, Clone, PartialEq)]
pub enum GrammarSpec {
    /// A JSON schema (`{"type": "object"}` for `json_object`).
    JsonSchema(serde_json::Value),
    Regex(String),
    /// One of these strings exactly.
    Choice(Vec<String>),
    /// A Lark grammar (llguidance's dialect).
    Lark(String),
}

impl GrammarSpec {
    fn to_grammar(&self) -> TopLevelGrammar {
        match self {
            Self::JsonSchema(schema) => {
                let mut schema = schema.clone();
                // compact separators and no free whitespace unless the schema asks otherwise:
                // a small model given free whitespace may loop on it
                if let Some(o) = schema.as_object_mut() {
                    o.entry("x-guidance").or_insert_with(|| {
                        serde_json::json!({"whitespace_flexible": false,
                                           "item_separator": ", ", "key_separator": ": "})
                    });
                }
                TopLevelGrammar::from_json_schema(schema)
            }
            Self::Regex(rx) => TopLevelGrammar::from_regex(rx),
            Self::Choice(options) => {
                let alts: Vec<String> = options.iter().map(|o| regex_escape(o)).collect();
                TopLevelGrammar::from_regex(&format!("({})", alts.join("|")))
            }
            Self::Lark(g) => TopLevelGrammar::from_lark(g.clone()),
        }
    }
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One model's vocabulary, ready to compile grammars against.
pub struct GrammarCompiler {
    factory: ParserFactory,
    eos: u32,
}

impl GrammarCompiler {
    /// From the model's tokenizer (about 0.1 s for a 50k vocabulary; build once per model).
    pub fn new(codec: &TextCodec) -> Result<Self, String> {
        let json = codec
            .tokenizer_json()
            .ok_or("this model has no tokenizer, so its output cannot be constrained")?;
        let json: serde_json::Value = serde_json::from_str(&json).map_err(|e| e.to_string())?;
        let mut words =
            llguidance::token_bytes_from_tokenizer_json(&json).map_err(|e| e.to_string())?;
        // the model's vocabulary may be padded past the tokenizer's
        if words.len() < codec.vocab_size() {
            words.resize(codec.vocab_size(), Vec::new());
        }
        let eos = *codec
            .eos_token_ids()
            .first()
            .ok_or("the model has no end-of-sequence token")?;
        let info = TokRxInfo::new(words.len() as u32, eos);
        let trie = TokTrie::from(&info, &words);
        let env: llguidance::toktrie::TokEnv = Arc::new(ApproximateTokEnv::new(trie));
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| e.to_string())?;
        factory.quiet();
        Ok(Self { factory, eos })
    }

    /// A fresh constraint for one output of `spec`; a grammar that does not compile is `Err`
    /// with llguidance's message.
    pub fn constraint(&self, spec: &GrammarSpec) -> Result<Constraint, String> {
        let parser = self
            .factory
            .create_parser(spec.to_grammar())
            .map_err(|e| e.to_string())?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(e);
        }
        Ok(Constraint {
            matcher,
            eos: self.eos,
            waits_for: None,
        })
    }
}

/// The grammar state of one constrained output, owned by its sequence's sampling state.
pub struct Constraint {
    matcher: Matcher,
    eos: u32,
    /// A reasoning model's end-of-thinking token: the grammar holds only after it (vLLM's
    /// structured output with a reasoning parser); until then the output is free.
    waits_for: Option<u32>,
}

/// A copy with its own state (a request's `n` choices each clone the unstarted one).
impl Clone for Constraint {
    fn clone(&self) -> Self {
        Self {
            matcher: self.matcher.deep_clone(),
            eos: self.eos,
            waits_for: self.waits_for,
        }
    }
}

impl Constraint {
    /// The grammar starts after `token` is sampled (`None`: at once).
    pub fn after_token(self, token: Option<u32>) -> Self {
        Self {
            waits_for: token,
            ..self
        }
    }

    /// The tokens allowed next: only EOS once the grammar is complete, or when it failed;
    /// `None` while it waits for its start token.
    pub fn mask(&mut self, vocab_size: usize) -> Option<SimpleVob> {
        if self.waits_for.is_some() {
            return None;
        }
        Some(match self.matcher.compute_mask_or_eos() {
            Ok(mask) => mask,
            Err(e) => {
                tracing::warn!(error = %e, "grammar failed; ending the output");
                let mut only_eos = SimpleVob::alloc(vocab_size.max(self.eos as usize + 1));
                only_eos.allow_token(self.eos);
                only_eos
            }
        })
    }

    /// Advances past a sampled token (a failure shows in the next mask).
    pub fn consume(&mut self, token: u32) {
        if let Some(start) = self.waits_for {
            if token == start {
                self.waits_for = None;
            }
            return;
        }
        if !self.matcher.is_stopped() {
            let _ = self.matcher.consume_token(token);
        }
    }
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Constraint")
    }
}
