//! Text side of a model: tokenizer, chat template, incremental detokenization and stop strings.
//! Lives outside the engine: the engine sees token ids only.

pub mod detokenizer;
pub mod error;
pub mod generation_config;
pub mod gguf_tokenizer;
pub mod grammar;
pub mod pyjson;
pub mod reasoning;
pub mod template;
pub mod tokenizer;
pub mod tools;

pub use detokenizer::{IncrementalDetokenizer, StopStringMatcher};
pub use error::TextError;
pub use generation_config::{GenerationConfigMode, GenerationDefaults};
pub use reasoning::ReasoningParser;
pub use template::{ChatMessage, ChatTemplate, TemplateKwargs};
pub use tokenizer::TextCodec;
