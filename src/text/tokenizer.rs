//! `TextCodec`: one model's tokenizer, chat template and special ids. Send + Sync; shared by all
//! request tasks of the model.

use super::gguf_tokenizer::{gguf_bool, gguf_string, gguf_u32, tokenizer_json};
use super::template::{builtin_template, ChatMessage, ChatTemplate, TemplateKwargs};
use candle_core::quantized::gguf_file::Content;
use std::path::Path;
use std::str::FromStr;
use tokenizers::Tokenizer;

use super::error::TextError;
use super::generation_config::GenerationDefaults;

#[derive(Debug)]
pub struct TextCodec {
    /// `None`: token ids only (a dummy model without tokenizer.json). Text prompts are refused
    /// and output ids render as text `" <id>"` each, so streams still carry one chunk per token.
    tokenizer: Option<Tokenizer>,
    vocab_size: usize,
    template: Option<ChatTemplate>,
    eos_token_ids: Vec<u32>,
    bos_token_id: Option<u32>,
    /// Prepend BOS when encoding a raw prompt.
    add_bos: bool,
    /// Sampling defaults from generation_config.json (empty for GGUF and ids-only codecs).
    generation_defaults: GenerationDefaults,
    /// `--reasoning-parser`.
    reasoning_parser: Option<super::ReasoningParser>,
}

fn tok_err(e: impl std::fmt::Display) -> TextError {
    TextError::Tokenizer(e.to_string())
}

/// A special token in tokenizer_config.json: `"<s>"` or `{"content": "<s>", ...}`.
fn special_token(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// `eos_token_id` as an int or a list of ints.
pub(crate) fn id_list(v: Option<&serde_json::Value>) -> Vec<u32> {
    match v {
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().map(|x| vec![x as u32]).unwrap_or_default()
        }
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64())
            .map(|x| x as u32)
            .collect(),
        _ => Vec::new(),
    }
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// Tokens that end a turn in the chat formats GGUF models use (llama.cpp's list, less
/// `<|endoftext|>`, which ends a document, not a turn).
const END_OF_TURN: [&str; 5] = [
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<｜end▁of▁sentence｜>",
];

impl TextCodec {
    /// A codec without a tokenizer, for token-id prompts only.
    pub fn ids_only(vocab_size: usize, eos_token_ids: Vec<u32>) -> Self {
        Self {
            tokenizer: None,
            vocab_size,
            template: None,
            eos_token_ids,
            bos_token_id: None,
            add_bos: false,
            generation_defaults: GenerationDefaults::default(),
            reasoning_parser: None,
        }
    }

    /// From GGUF metadata: vocabulary, merges, special ids and `tokenizer.chat_template`.
    pub fn from_gguf(ct: &Content) -> Result<Self, TextError> {
        let tokenizer = Tokenizer::from_str(&tokenizer_json(ct)?).map_err(tok_err)?;
        let token = |id: Option<u32>| id.and_then(|i| tokenizer.id_to_token(i));
        let bos_id = gguf_u32(ct, "tokenizer.ggml.bos_token_id");
        let eos_id = gguf_u32(ct, "tokenizer.ggml.eos_token_id");
        let mut eos_token_ids: Vec<u32> = eos_id.into_iter().collect();
        let eot = gguf_u32(ct, "tokenizer.ggml.eot_token_id");
        // as llama.cpp: the end-of-turn tokens of the common chat formats also end generation
        let turn_ends = END_OF_TURN.iter().filter_map(|t| tokenizer.token_to_id(t));
        for id in eot.into_iter().chain(turn_ends) {
            if !eos_token_ids.contains(&id) {
                eos_token_ids.push(id);
            }
        }
        let arch = gguf_string(ct, "general.architecture").unwrap_or_default();
        let template = gguf_string(ct, "tokenizer.chat_template")
            .or_else(|| builtin_template(&arch).map(str::to_string))
            .map(|src| {
                ChatTemplate::new(
                    &src,
                    token(bos_id).unwrap_or_default(),
                    token(eos_id).unwrap_or_default(),
                )
            })
            .transpose()?;
        Ok(Self {
            // llama.cpp's default: SentencePiece models add BOS, byte-level BPE ones do not
            add_bos: gguf_bool(ct, "tokenizer.ggml.add_bos_token")
                .unwrap_or(gguf_string(ct, "tokenizer.ggml.model").as_deref() == Some("llama"))
                && bos_id.is_some(),
            vocab_size: tokenizer.get_vocab_size(true),
            tokenizer: Some(tokenizer),
            template,
            eos_token_ids,
            bos_token_id: bos_id,
            generation_defaults: GenerationDefaults::default(),
            reasoning_parser: None,
        })
    }

    /// From a Hugging Face directory: tokenizer.json, and when present tokenizer_config.json
    /// (chat template, special tokens), generation_config.json and config.json (EOS ids).
    pub fn from_hf_dir(dir: &Path) -> Result<Self, TextError> {
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json")).map_err(tok_err)?;
        // a file may carry the padding and truncation its trainer batched with (all-MiniLM's:
        // pad and cut every text to 128 tokens): weir never pads, and cuts nothing silently
        tokenizer.with_padding(None);
        tokenizer.with_truncation(None).map_err(tok_err)?;
        let tcfg = read_json(&dir.join("tokenizer_config.json")).unwrap_or_default();
        let bos = special_token(tcfg.get("bos_token"));
        let eos = special_token(tcfg.get("eos_token"));
        let gen_cfg = read_json(&dir.join("generation_config.json")).unwrap_or_default();
        let mut eos_token_ids = id_list(gen_cfg.get("eos_token_id"));
        eos_token_ids.extend(id_list(
            read_json(&dir.join("config.json"))
                .as_ref()
                .and_then(|c| c.get("eos_token_id")),
        ));
        if let Some(id) = eos.as_deref().and_then(|t| tokenizer.token_to_id(t)) {
            eos_token_ids.push(id);
        }
        eos_token_ids.sort_unstable();
        eos_token_ids.dedup();
        let template = hf_chat_template(dir, &tcfg)?
            .map(|src| {
                ChatTemplate::new(
                    &src,
                    bos.clone().unwrap_or_default(),
                    eos.clone().unwrap_or_default(),
                )
            })
            .transpose()?;
        Ok(Self {
            bos_token_id: bos.as_deref().and_then(|t| tokenizer.token_to_id(t)),
            add_bos: tcfg
                .get("add_bos_token")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
            vocab_size: tokenizer.get_vocab_size(true),
            tokenizer: Some(tokenizer),
            template,
            eos_token_ids,
            generation_defaults: GenerationDefaults::from_json(&gen_cfg),
            reasoning_parser: None,
        })
    }

    /// The checkpoint's sampling defaults (generation_config.json).
    pub fn generation_defaults(&self) -> &GenerationDefaults {
        &self.generation_defaults
    }

    /// Drops the checkpoint's sampling defaults (`--generation-config vllm`).
    /// How chat answers split reasoning from content (`--reasoning-parser`), if at all.
    pub fn reasoning_parser(&self) -> Option<super::ReasoningParser> {
        self.reasoning_parser
    }

    pub fn set_reasoning_parser(&mut self, parser: Option<super::ReasoningParser>) {
        self.reasoning_parser = parser;
    }

    pub fn clear_generation_defaults(&mut self) {
        self.generation_defaults = GenerationDefaults::default();
    }

    pub fn eos_token_ids(&self) -> &[u32] {
        &self.eos_token_ids
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The tokenizer in Hugging Face's tokenizer.json form (`None` for ids only).
    pub fn tokenizer_json(&self) -> Option<String> {
        self.tokenizer.as_ref()?.to_string(false).ok()
    }

    fn tokenizer(&self) -> Result<&Tokenizer, TextError> {
        self.tokenizer.as_ref().ok_or(TextError::NoTokenizer)
    }

    /// Renders the chat template with `add_generation_prompt = true`.
    pub fn apply_chat_template(&self, messages: &[ChatMessage]) -> Result<String, TextError> {
        self.apply_chat_template_with(messages, None, &TemplateKwargs::new())
    }

    /// The same, offering `tools` (OpenAI tool objects): through the template when it renders
    /// them, else as a system message in the Hermes format (`tools::tools_system_prompt`).
    /// `kwargs`: the template's own variables (`chat_template_kwargs`).
    pub fn apply_chat_template_with(
        &self,
        messages: &[ChatMessage],
        tools: Option<&[serde_json::Value]>,
        kwargs: &TemplateKwargs,
    ) -> Result<String, TextError> {
        let t = self.template.as_ref().ok_or(TextError::NoTemplate)?;
        match tools {
            Some(tools) if !t.renders_tools() => {
                let prompt = super::tools::tools_system_prompt(tools);
                let mut with = Vec::with_capacity(messages.len() + 1);
                match messages.first() {
                    Some(m) if m.role == "system" => {
                        with.push(ChatMessage {
                            content: format!("{}\n\n{prompt}", m.content),
                            ..m.clone()
                        });
                        with.extend_from_slice(&messages[1..]);
                    }
                    _ => {
                        with.push(ChatMessage {
                            role: "system".into(),
                            content: prompt,
                            ..ChatMessage::default()
                        });
                        with.extend_from_slice(messages);
                    }
                }
                t.render(&with, None, kwargs)
            }
            _ => t.render(messages, tools, kwargs),
        }
    }

    /// How this model writes tool calls (Hermes unless its template is Llama 3's).
    pub fn tool_format(&self) -> super::tools::ToolFormat {
        self.template
            .as_ref()
            .map_or(super::tools::ToolFormat::Hermes, |t| t.tool_format())
    }

    /// Encodes text. Special tokens written in the text (`<|im_start|>`) are recognized.
    /// `add_bos` prepends the model's BOS when the model asks for it and the text lacks it.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>, TextError> {
        let enc = self
            .tokenizer()?
            .encode_fast(text, false)
            .map_err(tok_err)?;
        let mut ids = enc.get_ids().to_vec();
        if let (true, true, Some(bos)) = (add_bos, self.add_bos, self.bos_token_id) {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
        Ok(ids)
    }

    /// Encodes text with the special tokens the tokenizer's post-processor adds around it
    /// (BERT's `[CLS] ... [SEP]`), as an embedding model reads it.
    pub fn encode_with_special_tokens(&self, text: &str) -> Result<Vec<u32>, TextError> {
        let enc = self.tokenizer()?.encode_fast(text, true).map_err(tok_err)?;
        Ok(enc.get_ids().to_vec())
    }

    /// Encodes a text pair as a cross-encoder reads it (BERT's `[CLS] a [SEP] b [SEP]`).
    pub fn encode_pair(&self, a: &str, b: &str) -> Result<Vec<u32>, TextError> {
        let enc = self
            .tokenizer()?
            .encode_fast((a, b), true)
            .map_err(tok_err)?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TextError> {
        match &self.tokenizer {
            Some(t) => t.decode(ids, skip_special).map_err(tok_err),
            None => Ok(ids.iter().map(|id| format!(" {id}")).collect()),
        }
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.as_ref()?.token_to_id(token)
    }
}

/// The chat template of a Hugging Face directory, as transformers reads it: `chat_template.jinja`
/// (transformers >= 4.47 saves it there), else `tokenizer_config.json`'s `chat_template` (a
/// string, or a list of named templates of which "default" is taken), else the legacy processor
/// file `chat_template.json` (`{"chat_template": ...}`).
fn hf_chat_template(
    dir: &Path,
    tokenizer_config: &serde_json::Value,
) -> Result<Option<String>, TextError> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        return std::fs::read_to_string(&jinja)
            .map(Some)
            .map_err(|e| TextError::Template(format!("{}: {e}", jinja.display())));
    }
    let named = |v: Option<&serde_json::Value>| match v {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Array(list)) => list
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .and_then(|t| t.get("template")?.as_str().map(str::to_string)),
        _ => None,
    };
    if let Some(t) = named(tokenizer_config.get("chat_template")) {
        return Ok(Some(t));
    }
    Ok(read_json(&dir.join("chat_template.json")).and_then(|j| named(j.get("chat_template"))))
}
