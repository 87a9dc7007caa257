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

/// Streaming: passes text through until a tool call may have started, then keeps the rest for
/// `ToolFormat::parse` at the end.
#[derive(Debug)]
pub struct ToolStream {
    format: ToolFormat,
    /// Text not yet passed on (a possible start of a call).
    held: String,
    /// Everything after the start of the first call.
    calls: Option<String>,
    /// Whether any text has been seen (Llama 3 calls start the output).
    started: bool,
}

impl ToolStream {
    pub fn new(format: ToolFormat) -> Self {
        Self {
            format,
            held: String::new(),
            calls: None,
            started: false,
        }
    }

    /// New output text in; the text that is surely not part of a call out.
    pub fn push(&mut self, text: &str) -> String {
        if let Some(c) = &mut self.calls {
            c.push_str(text);
            return String::new();
        }
        self.held.push_str(text);
        match self.format {
            ToolFormat::Hermes => {
                if let Some(i) = self.held.find(HERMES_OPEN) {
                    let out = self.held[..i].to_string();
                    self.calls = Some(self.held[i..].to_string());
                    self.held.clear();
                    return out;
                }
                // keep a tail that could still become "<tool_call>"
                let keep = (1..HERMES_OPEN.len())
                    .rev()
                    .find(|&k| self.held.ends_with(&HERMES_OPEN[..k]))
                    .unwrap_or(0);
                let cut = self.held.len() - keep;
                let out = self.held[..cut].to_string();
                self.held.drain(..cut);
                out
            }
            ToolFormat::Llama3Json => {
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
                        self.calls = Some(std::mem::take(&mut self.held));
                        return String::new();
                    }
                    self.started = true;
                }
                std::mem::take(&mut self.held)
            }
        }
    }

    /// The end of the output: held text, and the calls (if the held part parses as calls).
    pub fn finish(&mut self) -> Parsed {
        match self.calls.take() {
            Some(text) => {
                let parsed = self.format.parse(&text);
                if parsed.calls.is_empty() {
                    Parsed {
                        content: Some(std::mem::take(&mut self.held) + &text),
                        calls: Vec::new(),
                    }
                } else {
                    Parsed {
                        content: parsed.content,
                        calls: parsed.calls,
                    }
                }
            }
            None => Parsed {
                content: Some(std::mem::take(&mut self.held)).filter(|t| !t.is_empty()),
                calls: Vec::new(),
            },
        }
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

    #[test]
    fn the_stream_splitter_holds_back_calls_only() {
        let mut s = ToolStream::new(ToolFormat::Hermes);
        let mut text = String::new();
        for piece in [
            "Sure",
            ", <tool",
            "_call>\n{\"name\": \"f\", ",
            "\"arguments\": {}}\n</tool_call>",
        ] {
            text.push_str(&s.push(piece));
        }
        assert_eq!(text, "Sure, ");
        let p = s.finish();
        assert_eq!(p.calls.len(), 1);
        // a '<' that is not a call comes out
        let mut s = ToolStream::new(ToolFormat::Hermes);
        assert_eq!(s.push("a <"), "a ");
        assert_eq!(s.push("b"), "<b");
        assert_eq!(s.finish().calls.len(), 0);

        let mut s = ToolStream::new(ToolFormat::Llama3Json);
        assert_eq!(s.push(" {\"name\": \"f\","), "");
        assert_eq!(s.push(" \"parameters\": {}}"), "");
        assert_eq!(s.finish().calls[0].name, "f");
        let mut s = ToolStream::new(ToolFormat::Llama3Json);
        assert_eq!(s.push("Hi {"), "Hi {");
        assert_eq!(s.finish().calls.len(), 0);
    }
}
