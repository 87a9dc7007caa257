//! Tool calling: the two output formats weir parses (Hermes/Qwen `<tool_call>{json}</tool_call>`
//! blocks, and Llama 3's bare JSON `{"name": ..., "parameters": ...}` calls separated by `;`),
//! a system prompt that describes the tools for chat templates that do not render them, the
//! grammar that forces a call (`tool_choice` "required" or a named function), and a streaming
//! splitter that passes text through until a call starts.

use super::grammar::GrammarSpec;
use serde_json::{json, Value};

/// How a model writes its tool calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolFormat {
    /// `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>` (Hermes, Qwen, SmolLM).
    Hermes,
    /// `{"name": ..., "parameters": {...}}`, optionally after `<|python_tag|>`, calls separated
    /// by `;` (Llama 3.1+).
    Llama3Json,
}

const HERMES_OPEN: &str = "<tool_call>";
const HERMES_CLOSE: &str = "</tool_call>";
const PYTHON_TAG: &str = "<|python_tag|>";

impl ToolFormat {
    /// The format a chat template's model writes: Llama 3's when the template knows its
    /// `<|python_tag|>` or its `ipython` role, else Hermes.
    pub fn for_template(source: Option<&str>) -> Self {
        match source {
            Some(s) if s.contains(PYTHON_TAG) || s.contains("ipython") => Self::Llama3Json,
            _ => Self::Hermes,
        }
    }

    /// The name of the arguments field in this format.
    fn arguments_key(self) -> &'static str {
        match self {
            Self::Hermes => "arguments",
            Self::Llama3Json => "parameters",
        }
    }

    /// The grammar of one call to one of `tools` (OpenAI tool objects).
    pub fn forced_call(self, tools: &[&Value]) -> GrammarSpec {
        let args = self.arguments_key();
        let calls: Vec<Value> = tools
            .iter()
            .map(|t| {
                let f = &t["function"];
                let params = match &f["parameters"] {
                    Value::Object(o) if !o.is_empty() => Value::Object(o.clone()),
                    _ => json!({"type": "object"}),
                };
                json!({
                    "type": "object",
                    "properties": {"name": {"const": f["name"]}, args: params},
                    "required": ["name", args],
                    "additionalProperties": false,
                })
            })
            .collect();
        let schema = json!({
            "anyOf": calls,
            "x-guidance": {"whitespace_flexible": false, "item_separator": ", ",
                           "key_separator": ": "},
        });
        match self {
            Self::Llama3Json => GrammarSpec::JsonSchema(schema),
            Self::Hermes => GrammarSpec::Lark(format!(
                "start: \"{HERMES_OPEN}\\n\" call \"\\n{HERMES_CLOSE}\"\ncall: %json {schema}\n"
            )),
        }
    }

    /// Splits a finished output into its text and its tool calls. Output that does not hold
    /// well-formed calls is all text (no calls).
    pub fn parse(self, text: &str) -> Parsed {
        let plain = || Parsed {
            content: Some(text.to_string()).filter(|t| !t.is_empty()),
            calls: Vec::new(),
        };
        let calls = match self {
            Self::Hermes => {
                let Some(start) = text.find(HERMES_OPEN) else {
                    return plain();
                };
                let mut calls = Vec::new();
                let mut rest = &text[start..];
                while let Some(body) = rest.strip_prefix(HERMES_OPEN) {
                    let (inner, after) = match body.find(HERMES_CLOSE) {
                        Some(end) => (&body[..end], &body[end + HERMES_CLOSE.len()..]),
                        None => (body, ""),
                    };
                    match call_of(inner.trim(), self) {
                        Some(c) => calls.push(c),
                        None => return plain(),
                    }
                    rest = after.trim_start();
                }
                if !rest.is_empty() {
                    return plain();
                }
                let before = text[..start].trim();
                return Parsed {
                    content: Some(before.to_string()).filter(|t| !t.is_empty()),
                    calls,
                };
            }
            Self::Llama3Json => {
                let body = text.trim_start();
                let body = body.strip_prefix(PYTHON_TAG).unwrap_or(body).trim();
                if !body.starts_with('{') {
                    return plain();
                }
                let mut calls = Vec::new();
                let mut rest = body;
                while !rest.is_empty() {
                    let mut values = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
                    let Some(call) = values
                        .next()
                        .and_then(Result::ok)
                        .and_then(|v| call_of_value(&v, self))
                    else {
                        return plain();
                    };
                    calls.push(call);
                    rest = rest[values.byte_offset()..].trim_start();
                    if let Some(r) = rest.strip_prefix(';') {
                        rest = r.trim_start();
                    } else if !rest.is_empty() {
                        return plain();
                    }
                }
                calls
            }
        };
        Parsed {
            content: None,
            calls,
        }
    }
}

fn call_of(text: &str, format: ToolFormat) -> Option<ToolCall> {
    call_of_value(&serde_json::from_str(text).ok()?, format)
}

fn call_of_value(v: &Value, format: ToolFormat) -> Option<ToolCall> {
    let name = v["name"].as_str()?.to_string();
    let args = v
        .get(format.arguments_key())
        .or_else(|| v.get("arguments"))
        .or_else(|| v.get("parameters"))
        .cloned()
        .unwrap_or(json!({}));
    let arguments = match args {
        Value::String(s) => s,
        other => other.to_string(),
    };
    Some(ToolCall { name, arguments })
}

/// One parsed call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub name: String,
    /// The arguments as JSON text (OpenAI's `function.arguments`).
    pub arguments: String,
}

/// A finished output: its text (if any) and its calls.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Parsed {
    pub content: Option<String>,
    pub calls: Vec<ToolCall>,
}

/// A system message describing `tools` in the Hermes format, for chat templates that do not
/// render tools themselves.
pub fn tools_system_prompt(tools: &[Value]) -> String {
    let mut s = String::from(
        "You can call functions to answer. The functions you can call are listed inside \
         <tools></tools>, one JSON signature per line:\n<tools>\n",
    );
    for t in tools {
        s.push_str(&t.to_string());
        s.push('\n');
    }
    s.push_str(
        "</tools>\nTo call a function, answer with one JSON object per call inside \
         <tool_call></tool_call> tags:\n<tool_call>\n{\"name\": \"function name\", \
         \"arguments\": {arguments as a JSON object}}\n</tool_call>",
    );
    s
}

/// What a streamed output turns into: text, the start of a call (its name), or a piece of a
/// call's arguments (JSON text; the pieces of one call put together are its arguments).
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Text(String),
    Call { index: usize, name: String },
    Args { index: usize, text: String },
}

/// Characters held back at the end of a streamed Hermes call: they may be the call's closing
/// brace and `</tool_call>`.
const HOLD: usize = HERMES_CLOSE.len() + 8;

/// Where a streamed Hermes call is.
#[derive(Debug)]
enum InCall {
    /// Text after `<tool_call>`, until its name and the start of its arguments are known.
    Head(String),
    /// Streaming the arguments: the text from their start, and how much of it went out.
    Args { text: String, sent: usize },
}

/// Streaming: passes text through until a tool call may have started. Hermes calls then stream
/// as they are written (name first, arguments in pieces); Llama 3 calls, which start the
/// output, are parsed at the end.
#[derive(Debug)]
pub struct ToolStream {
    format: ToolFormat,
    /// Text not yet passed on (a possible start of a call).
    held: String,
    /// Hermes: the call being written.
    call: Option<InCall>,
    /// Calls started so far.
    calls: usize,
    /// A call just ended: whitespace before the next one is not text.
    after_call: bool,
    /// Llama 3: everything from the start of the calls.
    llama: Option<String>,
    /// Whether any text has been seen (Llama 3 calls start the output).
    started: bool,
}

/// `{"name": "NAME", "arguments": ` at the start of `s` (after whitespace): the name and where
/// the arguments begin; `Err(true)` when more text may still make it match, `Err(false)` never.
fn hermes_head(s: &str) -> Result<(String, usize), bool> {
    let t = s.trim_start();
    let skipped = s.len() - t.len();
    let mut rest = t;
    for token in ["{", "\"name\"", ":"] {
        let r = rest.trim_start();
        if r.len() < token.len() {
            return Err(token.starts_with(r));
        }
        rest = r.strip_prefix(token).ok_or(false)?;
    }
    // the name, a JSON string
    let r = rest.trim_start();
    let mut de = serde_json::Deserializer::from_str(r).into_iter::<String>();
    let name = match de.next() {
        Some(Ok(n)) => n,
        Some(Err(e)) if e.is_eof() => return Err(true),
        None => return Err(true),
        Some(Err(_)) => return Err(false),
    };
    rest = &r[de.byte_offset()..];
    for token in [",", "\"arguments\"", ":"] {
        let r = rest.trim_start();
        if r.len() < token.len() {
            return Err(token.starts_with(r));
        }
        rest = r.strip_prefix(token).ok_or(false)?;
    }
    let r = rest.trim_start();
    if r.is_empty() {
        return Err(true);
    }
    Ok((name, skipped + (t.len() - r.len())))
}

impl ToolStream {
    pub fn new(format: ToolFormat) -> Self {
        Self {
            format,
            held: String::new(),
            call: None,
            calls: 0,
            after_call: false,
            llama: None,
            started: false,
        }
    }

    /// New output text in; what can be passed on out.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        let mut out = Vec::new();
        match self.format {
            ToolFormat::Hermes => self.push_hermes(text, &mut out),
            ToolFormat::Llama3Json => {
                if let Some(c) = &mut self.llama {
                    c.push_str(text);
                } else {
                    let t = self.push_llama(text);
                    if !t.is_empty() {
                        out.push(Piece::Text(t));
                    }
                }
            }
        }
        out
    }

    fn push_hermes(&mut self, text: &str, out: &mut Vec<Piece>) {
        let mut text = text.to_string();
        loop {
            match self.call.take() {
                None => {
                    if self.after_call {
                        let t = text.trim_start();
                        if t.is_empty() {
                            return;
                        }
                        text = t.to_string();
                        self.after_call = false;
                    }
                    self.held.push_str(&text);
                    if let Some(i) = self.held.find(HERMES_OPEN) {
                        let before = self.held[..i].to_string();
                        let after = self.held[i + HERMES_OPEN.len()..].to_string();
                        self.held.clear();
                        if !before.is_empty() {
                            out.push(Piece::Text(before));
                        }
                        self.call = Some(InCall::Head(String::new()));
                        text = after;
                        continue;
                    }
                    // keep a tail that could still become "<tool_call>"
                    let keep = (1..HERMES_OPEN.len())
                        .rev()
                        .find(|&k| self.held.ends_with(&HERMES_OPEN[..k]))
                        .unwrap_or(0);
                    let cut = self.held.len() - keep;
                    if cut > 0 {
                        out.push(Piece::Text(self.held[..cut].to_string()));
                        self.held.drain(..cut);
                    }
                    return;
                }
                Some(InCall::Head(mut head)) => {
                    head.push_str(&text);
                    match hermes_head(&head) {
                        Ok((name, start)) => {
                            out.push(Piece::Call {
                                index: self.calls,
                                name,
                            });
                            self.calls += 1;
                            self.call = Some(InCall::Args {
                                text: String::new(),
                                sent: 0,
                            });
                            text = head[start..].to_string();
                            continue;
                        }
                        // not a call we can stream: keep it whole, parse it at its end
                        Err(more) if more || !head.contains(HERMES_CLOSE) => {
                            self.call = Some(InCall::Head(head));
                            return;
                        }
                        Err(_) => {
                            let end = head.find(HERMES_CLOSE).expect("checked");
                            let body = &head[..end];
                            match call_of(body.trim(), self.format) {
                                Some(c) => {
                                    out.push(Piece::Call {
                                        index: self.calls,
                                        name: c.name,
                                    });
                                    out.push(Piece::Args {
                                        index: self.calls,
                                        text: c.arguments,
                                    });
                                    self.calls += 1;
                                }
                                None => out.push(Piece::Text(format!(
                                    "{HERMES_OPEN}{body}{HERMES_CLOSE}"
                                ))),
                            }
                            text = head[end + HERMES_CLOSE.len()..].to_string();
                            self.after_call = true;
                            continue;
                        }
                    }
                }
                Some(InCall::Args {
                    text: mut args,
                    mut sent,
                }) => {
                    args.push_str(&text);
                    let index = self.calls - 1;
                    if let Some(end) = args.find(HERMES_CLOSE) {
                        // the arguments end before the call object's closing brace
                        let body = args[..end].trim_end();
                        let body = body.strip_suffix('}').unwrap_or(body).trim_end();
                        if body.len() > sent {
                            out.push(Piece::Args {
                                index,
                                text: body[sent..].to_string(),
                            });
                        }
                        text = args[end + HERMES_CLOSE.len()..].to_string();
                        self.after_call = true;
                        continue;
                    }
                    let mut safe = args.len().saturating_sub(HOLD);
                    // a '}' followed only by what may become the close could be the call's own
                    if let Some(b) = args.rfind('}') {
                        let tail = args[b + 1..].trim_start();
                        if HERMES_CLOSE.starts_with(tail) {
                            safe = safe.min(b);
                        }
                    }
                    while !args.is_char_boundary(safe) {
                        safe -= 1;
                    }
                    if safe > sent {
                        out.push(Piece::Args {
                            index,
                            text: args[sent..safe].to_string(),
                        });
                        sent = safe;
                    }
                    self.call = Some(InCall::Args { text: args, sent });
                    return;
                }
            }
        }
    }

    fn push_llama(&mut self, text: &str) -> String {
        self.held.push_str(text);
        let trimmed = self.held.trim_start();
        if !self.started {
            if trimmed.is_empty() {
                return String::new();
            }
            if trimmed.starts_with('{')
                || trimmed.starts_with(PYTHON_TAG)
                || PYTHON_TAG.starts_with(trimmed)
            {
                if PYTHON_TAG.starts_with(trimmed) && trimmed != PYTHON_TAG {
                    return String::new(); // may still become the tag
                }
                self.llama = Some(std::mem::take(&mut self.held));
                return String::new();
            }
            self.started = true;
        }
        std::mem::take(&mut self.held)
    }

    /// The end of the output: what was held back, and whether the output held calls.
    pub fn finish(&mut self) -> (Vec<Piece>, bool) {
        let mut out = Vec::new();
        if let Some(text) = self.llama.take() {
            let parsed = self.format.parse(&text);
            if parsed.calls.is_empty() {
                out.push(Piece::Text(std::mem::take(&mut self.held) + &text));
            } else {
                for (index, c) in parsed.calls.into_iter().enumerate() {
                    out.push(Piece::Call {
                        index,
                        name: c.name,
                    });
                    out.push(Piece::Args {
                        index,
                        text: c.arguments,
                    });
                    self.calls += 1;
                }
            }
        }
        match self.call.take() {
            // cut off while streaming arguments (`length`): the rest of what was written
            Some(InCall::Args { text, sent }) if text.len() > sent => out.push(Piece::Args {
                index: self.calls - 1,
                text: text[sent..].to_string(),
            }),
            Some(InCall::Head(head)) => {
                out.push(Piece::Text(format!("{HERMES_OPEN}{head}")));
            }
            _ => {}
        }
        if !self.held.is_empty() {
            out.push(Piece::Text(std::mem::take(&mut self.held)));
        }
        (out, self.calls > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hermes_calls_are_parsed_with_their_text() {
        let out = "Let me check.\n<tool_call>\n{\"name\": \"weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"time\", \"arguments\": {}}\n</tool_call>";
        let p = ToolFormat::Hermes.parse(out);
        assert_eq!(p.content.as_deref(), Some("Let me check."));
        assert_eq!(
            p.calls,
            vec![
                ToolCall {
                    name: "weather".into(),
                    arguments: r#"{"city":"Paris"}"#.into()
                },
                ToolCall {
                    name: "time".into(),
                    arguments: "{}".into()
                },
            ]
        );
        // malformed: all text
        let bad = "<tool_call>{\"name\": \"weather\", \"argu";
        assert_eq!(ToolFormat::Hermes.parse(bad).calls, vec![]);
        assert_eq!(ToolFormat::Hermes.parse(bad).content.as_deref(), Some(bad));
        assert_eq!(
            ToolFormat::Hermes.parse("plain").content.as_deref(),
            Some("plain")
        );
    }

    #[test]
    fn llama3_json_calls_are_parsed() {
        let out = "<|python_tag|>{\"name\": \"weather\", \"parameters\": {\"city\": \"Oslo\"}}; {\"name\": \"time\", \"parameters\": {\"tz\": \"UTC\"}}";
        let p = ToolFormat::Llama3Json.parse(out);
        assert_eq!(p.content, None);
        assert_eq!(p.calls.len(), 2);
        assert_eq!(p.calls[0].arguments, r#"{"city":"Oslo"}"#);
        assert_eq!(p.calls[1].name, "time");
        let p = ToolFormat::Llama3Json.parse(" {\"name\": \"x\", \"parameters\": {}}");
        assert_eq!(p.calls.len(), 1);
        assert_eq!(ToolFormat::Llama3Json.parse("Hello {").calls, vec![]);
    }

    /// Text and calls of `pieces`, put together as a client would.
    fn assemble(pieces: &[Piece]) -> (String, Vec<(String, String)>) {
        let (mut text, mut calls) = (String::new(), Vec::<(String, String)>::new());
        for p in pieces {
            match p {
                Piece::Text(t) => text.push_str(t),
                Piece::Call { index, name } => {
                    assert_eq!(*index, calls.len());
                    calls.push((name.clone(), String::new()));
                }
                Piece::Args { index, text } => calls[*index].1.push_str(text),
            }
        }
        (text, calls)
    }

    fn stream(format: ToolFormat, parts: &[&str]) -> (Vec<Piece>, bool) {
        let mut s = ToolStream::new(format);
        let mut out: Vec<Piece> = parts.iter().flat_map(|p| s.push(p)).collect();
        let (rest, calls) = s.finish();
        out.extend(rest);
        (out, calls)
    }

    #[test]
    fn hermes_calls_stream_name_first_then_arguments_in_pieces() {
        let whole = "Sure, <tool_call>\n{\"name\": \"weather\", \"arguments\": {\"city\": \"Paris\", \"days\": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}}\n</tool_call>\n<tool_call>\n{\"name\": \"time\", \"arguments\": {}}\n</tool_call>";
        // one character at a time: the worst split
        let chars: Vec<String> = whole.chars().map(String::from).collect();
        let parts: Vec<&str> = chars.iter().map(String::as_str).collect();
        let (pieces, calls) = stream(ToolFormat::Hermes, &parts);
        assert!(calls);
        let (text, got) = assemble(&pieces);
        assert_eq!(text, "Sure, ");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, "weather");
        let args: serde_json::Value = serde_json::from_str(&got[0].1).unwrap();
        assert_eq!(args["days"][9], 10);
        assert_eq!(got[1], ("time".to_string(), "{}".to_string()));
        // much whitespace before the close: the call's own brace is not sent as an argument
        let spaced = "<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": 1}}                    \n</tool_call>";
        let chars: Vec<String> = spaced.chars().map(String::from).collect();
        let parts: Vec<&str> = chars.iter().map(String::as_str).collect();
        let (pieces, _) = stream(ToolFormat::Hermes, &parts);
        assert_eq!(
            assemble(&pieces).1,
            vec![("f".into(), r#"{"a": 1}"#.into())]
        );
        // the arguments arrived in several pieces, before the call ended
        let arg_pieces = pieces
            .iter()
            .filter(|p| matches!(p, Piece::Args { index: 0, .. }))
            .count();
        assert!(arg_pieces > 5, "{arg_pieces} pieces");
    }

    #[test]
    fn the_stream_passes_plain_text_and_odd_calls() {
        let (pieces, calls) = stream(ToolFormat::Hermes, &["a <", "b"]);
        assert!(!calls);
        assert_eq!(assemble(&pieces).0, "a <b");
        // arguments before the name: parsed whole at the end of the call
        let (pieces, calls) = stream(
            ToolFormat::Hermes,
            &[
                "<tool_call>{\"arguments\": {\"x\": 1}, ",
                "\"name\": \"f\"}</tool_call>",
            ],
        );
        assert!(calls);
        assert_eq!(assemble(&pieces).1, vec![("f".into(), r#"{"x":1}"#.into())]);
        // not JSON: text
        let (pieces, calls) = stream(ToolFormat::Hermes, &["<tool_call>oops</tool_call>"]);
        assert!(!calls);
        assert_eq!(assemble(&pieces).0, "<tool_call>oops</tool_call>");
        // Llama 3: whole at the end
        let (pieces, calls) = stream(
            ToolFormat::Llama3Json,
            &[" {\"name\": \"f\",", " \"parameters\": {}}"],
        );
        assert!(calls);
        assert_eq!(assemble(&pieces).1, vec![("f".into(), "{}".into())]);
        let (pieces, calls) = stream(ToolFormat::Llama3Json, &["Hi {"]);
        assert!(!calls);
        assert_eq!(assemble(&pieces).0, "Hi {");
    }
}
