//! Reasoning parsers (`--reasoning-parser`, vLLM's names): split a reasoning model's
//! `<think>...</think>` from its answer, into `reasoning_content` and `content`.
//!
//! - `deepseek_r1`: the output is reasoning up to `</think>` (DeepSeek-R1's template opens
//!   `<think>` in the prompt, so the output may start inside it; a leading `<think>` is dropped);
//!   without `</think>` all of it is reasoning.
//! - `qwen3`: an output that opens with `<think>` is reasoning up to `</think>` (all of it when
//!   unclosed); any other output is the answer (thinking switched off with
//!   `chat_template_kwargs: {"enable_thinking": false}`, whose template writes an empty think
//!   block into the prompt).
//!
//! `split` and `ReasoningStream` give the same split, whole or streamed in any pieces.

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasoningParser {
    DeepSeekR1,
    Qwen3,
}

impl std::str::FromStr for ReasoningParser {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "deepseek_r1" => Ok(Self::DeepSeekR1),
            "qwen3" => Ok(Self::Qwen3),
            _ => Err(format!("expected deepseek_r1 or qwen3, got {s:?}")),
        }
    }
}

impl ReasoningParser {
    /// The token a structured output waits for before its grammar holds: the model's
    /// `</think>` token, unless `prompt` already closed the think block (Qwen3 with thinking
    /// off) or the vocabulary has no such token (then the grammar holds from the start).
    pub fn grammar_start(self, codec: &super::TextCodec, prompt: &[u32]) -> Option<u32> {
        let close = codec.token_to_id(CLOSE)?;
        let open = codec.token_to_id(OPEN);
        let last = |t: u32| prompt.iter().rposition(|&x| x == t);
        match (last(close), open.and_then(last)) {
            (Some(c), Some(o)) if c > o => None,
            (Some(_), None) => None,
            _ => Some(close),
        }
    }
}

/// An output split in two; `None` for a part with no text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Split {
    pub reasoning: Option<String>,
    pub content: Option<String>,
}

fn some(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

impl ReasoningParser {
    /// The reasoning and the answer of a whole output.
    pub fn split(self, text: &str) -> Split {
        let body = match (self, text.strip_prefix(OPEN)) {
            (_, Some(rest)) => rest,
            (Self::DeepSeekR1, None) => text,
            (Self::Qwen3, None) => {
                return Split {
                    reasoning: None,
                    content: some(text),
                }
            }
        };
        match body.split_once(CLOSE) {
            Some((reasoning, answer)) => Split {
                reasoning: some(reasoning),
                content: some(answer),
            },
            None => Split {
                reasoning: some(body),
                content: None,
            },
        }
    }
}

/// A piece of streamed output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Reasoning(String),
    Content(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing decided yet: the output may still open with `<think>`.
    Start,
    Reasoning,
    Content,
}

/// `split` over text arriving in pieces: text that may be the start of a tag is held back
/// until the next piece (or `finish`) decides it.
#[derive(Debug, Clone)]
pub struct ReasoningStream {
    parser: ReasoningParser,
    state: State,
    held: String,
}

impl ReasoningStream {
    pub fn new(parser: ReasoningParser) -> Self {
        Self {
            parser,
            state: State::Start,
            held: String::new(),
        }
    }

    /// The parts `text` completes, in order.
    pub fn push(&mut self, text: &str) -> Vec<Part> {
        self.held.push_str(text);
        let mut out = Vec::new();
        loop {
            match self.state {
                State::Start => {
                    if let Some(rest) = self.held.strip_prefix(OPEN) {
                        self.held = rest.to_string();
                        self.state = State::Reasoning;
                    } else if OPEN.starts_with(self.held.as_str()) {
                        return out; // maybe `<think>`: wait for more
                    } else {
                        self.state = match self.parser {
                            ReasoningParser::DeepSeekR1 => State::Reasoning,
                            ReasoningParser::Qwen3 => State::Content,
                        };
                    }
                }
                State::Reasoning => {
                    if let Some((reasoning, rest)) = self.held.split_once(CLOSE) {
                        push(&mut out, Part::Reasoning(reasoning.to_string()));
                        self.held = rest.to_string();
                        self.state = State::Content;
                        continue;
                    }
                    // hold back a tail that could begin `</think>`
                    let keep = partial_suffix(&self.held, CLOSE);
                    let emit = self.held.len() - keep;
                    push(&mut out, Part::Reasoning(self.held[..emit].to_string()));
                    self.held.drain(..emit);
                    return out;
                }
                State::Content => {
                    push(&mut out, Part::Content(std::mem::take(&mut self.held)));
                    return out;
                }
            }
        }
    }

    /// What is still held back, at the end of the output.
    pub fn finish(&mut self) -> Vec<Part> {
        let held = std::mem::take(&mut self.held);
        let mut out = Vec::new();
        match self.state {
            // a bare `<thi` at the very end: too short to be a tag
            State::Start => match self.parser {
                ReasoningParser::DeepSeekR1 => push(&mut out, Part::Reasoning(held)),
                ReasoningParser::Qwen3 => push(&mut out, Part::Content(held)),
            },
            State::Reasoning => push(&mut out, Part::Reasoning(held)),
            State::Content => push(&mut out, Part::Content(held)),
        }
        out
    }
}

fn push(out: &mut Vec<Part>, part: Part) {
    let empty = match &part {
        Part::Reasoning(t) | Part::Content(t) => t.is_empty(),
    };
    if !empty {
        out.push(part);
    }
}

/// The length of the longest proper prefix of `tag` that `text` ends with.
fn partial_suffix(text: &str, tag: &str) -> usize {
    (1..tag.len())
        .rev()
        .find(|&n| text.ends_with(&tag[..n]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ReasoningParser::*;

    fn split(p: ReasoningParser, text: &str) -> (Option<&str>, Option<&str>) {
        let s = p.split(text);
        let r = s.reasoning.map(|x| &*x.leak());
        let c = s.content.map(|x| &*x.leak());
        (r, c)
    }

    #[test]
    fn splits_whole_outputs() {
        let t = "<think>weigh it</think>42";
        assert_eq!(split(DeepSeekR1, t), (Some("weigh it"), Some("42")));
        assert_eq!(split(Qwen3, t), (Some("weigh it"), Some("42")));
        // R1's template opens the block in the prompt
        assert_eq!(
            split(DeepSeekR1, "weigh it</think>42"),
            (Some("weigh it"), Some("42"))
        );
        assert_eq!(
            split(Qwen3, "weigh it</think>42"),
            (None, Some("weigh it</think>42"))
        );
        assert_eq!(
            split(DeepSeekR1, "still thinking"),
            (Some("still thinking"), None)
        );
        assert_eq!(split(Qwen3, "<think>still"), (Some("still"), None));
        assert_eq!(split(Qwen3, "42"), (None, Some("42")));
        assert_eq!(split(Qwen3, "<think></think>"), (None, None));
    }

    /// Every way of cutting the text into two or three pieces streams to the whole split.
    #[test]
    fn streams_match_whole_splits_at_every_cut() {
        let texts = [
            "<think>a < b </thin k</think>yes </think>",
            "weigh</think>",
            "<thi",
            "<think>x</",
            "plain answer",
            "<",
        ];
        for p in [DeepSeekR1, Qwen3] {
            for t in texts {
                let want = p.split(t);
                for i in 0..=t.len() {
                    for j in i..=t.len() {
                        let mut s = ReasoningStream::new(p);
                        let mut parts = s.push(&t[..i]);
                        parts.extend(s.push(&t[i..j]));
                        parts.extend(s.push(&t[j..]));
                        parts.extend(s.finish());
                        let (mut r, mut c) = (String::new(), String::new());
                        for part in parts {
                            match part {
                                Part::Reasoning(x) => r.push_str(&x),
                                Part::Content(x) => c.push_str(&x),
                            }
                        }
                        let got = Split {
                            reasoning: some(&r),
                            content: some(&c),
                        };
                        assert_eq!(got, want, "{p:?} {t:?} cut at {i}, {j}");
                    }
                }
            }
        }
    }
}
