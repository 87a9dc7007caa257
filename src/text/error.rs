//! `TextError`: what the text side of a model (tokenizer, GGUF vocabulary, chat template) fails
//! with.

/// A failure of tokenization, detokenization or the chat template.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TextError {
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("{0}")]
    Template(String),
    #[error("this model has no chat template; use /v1/completions")]
    NoTemplate,
    #[error("this model is served without a tokenizer (--load-format dummy); send the prompt as token ids")]
    NoTokenizer,
}
