//! `ChatTemplate`: the model's own Jinja chat template (tokenizer_config.json `chat_template` or
//! GGUF `tokenizer.chat_template`) rendered with minijinja, configured like Hugging Face's
//! renderer: `trim_blocks`, `lstrip_blocks`, Python string methods (`.strip()`, `.startswith()`),
//! `raise_exception`, `strftime_now`, and `add_generation_prompt = true`.

use super::error::TextError;
use super::pyjson;
use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, Error, ErrorKind};
use serde::Serialize;

/// The chat format of a GGUF architecture whose files may carry no `tokenizer.chat_template`
/// (as llama.cpp falls back to its built-in ones): Gemma's turns, the system prompt at the head
/// of the first user turn, `assistant` named `model`.
pub fn builtin_template(arch: &str) -> Option<&'static str> {
    match arch {
        "gemma" | "gemma2" | "gemma3" => Some(GEMMA_TEMPLATE),
        _ => None,
    }
}

const GEMMA_TEMPLATE: &str = "{{- bos_token -}}\n\
{%- set ns = namespace(system='') -%}\n\
{%- for m in messages -%}\n\
{%- if m['role'] == 'system' -%}\n\
{%- set ns.system = ns.system + m['content'] | trim + '\\n\\n' -%}\n\
{%- else -%}\n\
{%- set role = 'model' if m['role'] == 'assistant' else m['role'] -%}\n\
{{- '<start_of_turn>' + role + '\\n' + (ns.system if role == 'user' else '') + m['content'] | trim + '<end_of_turn>\\n' -}}\n\
{%- if role == 'user' -%}{%- set ns.system = '' -%}{%- endif -%}\n\
{%- endif -%}\n\
{%- endfor -%}\n\
{%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}";

/// Variables a request passes to the chat template (vLLM's `chat_template_kwargs`).
pub type TemplateKwargs = serde_json::Map<String, serde_json::Value>;

/// One chat message, as the template sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    /// An assistant message's calls (OpenAI's shape, `function.arguments` as an object).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<serde_json::Value>,
    /// A tool message's answer to this call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

pub struct ChatTemplate {
    env: Environment<'static>,
    /// The template renders `tools` itself.
    renders_tools: bool,
    /// How this template's model writes tool calls.
    tool_format: super::tools::ToolFormat,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").finish_non_exhaustive()
    }
}

fn raise_exception(msg: String) -> Result<String, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, msg))
}

/// Days since 1970-01-01 to (year, month 1-12, day 1-31) (H. Hinnant's civil_from_days).
/// Hugging Face's `tojson`: Python's `json.dumps(x, ensure_ascii=False, indent=None,
/// separators=None, sort_keys=False)`, each argument by keyword (or `indent` by position).
fn tojson(value: Value, indent: Option<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    let bad = |what: &str| Error::new(ErrorKind::InvalidOperation, format!("tojson: {what}"));
    let indent = match indent.or(kwargs.get::<Option<Value>>("indent")?) {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => match (v.as_i64(), v.as_str()) {
            (Some(n), _) => Some(" ".repeat(n.max(0) as usize)),
            (None, Some(s)) => Some(s.to_string()),
            _ => return Err(bad("indent is an integer or a string")),
        },
    };
    let separators = match kwargs.get::<Option<Vec<String>>>("separators")? {
        None => None,
        Some(pair) => match <[String; 2]>::try_from(pair) {
            Ok([item, key]) => Some((item, key)),
            Err(_) => return Err(bad("separators is a pair of strings")),
        },
    };
    let options = pyjson::DumpOptions {
        ensure_ascii: kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false),
        indent,
        separators,
        sort_keys: kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false),
    };
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(&value).map_err(|e| bad(&e.to_string()))?;
    Ok(Value::from_safe_string(pyjson::dumps(&json, &options)))
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `strftime_now(fmt)` for the date directives chat templates use (%d %m %Y %b %B %y %%).
fn strftime_now(fmt: String) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let month = MONTHS[(m - 1) as usize];
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y % 100)),
            Some('b') => out.push_str(&month[..3]),
            Some('B') => out.push_str(month),
            Some('%') => out.push('%'),
            Some(o) => {
                out.push('%');
                out.push(o);
            }
            None => out.push('%'),
        }
    }
    out
}

impl ChatTemplate {
    pub fn new(source: &str, bos_token: String, eos_token: String) -> Result<Self, TextError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| TextError::Template(format!("invalid chat template: {e}")))?;
        Ok(Self {
            env,
            renders_tools: source.contains("tools"),
            tool_format: super::tools::ToolFormat::for_template(Some(source)),
            bos_token,
            eos_token,
        })
    }

    pub fn renders_tools(&self) -> bool {
        self.renders_tools
    }

    pub fn tool_format(&self) -> super::tools::ToolFormat {
        self.tool_format
    }

    /// Renders `messages` (and `tools`, OpenAI tool objects, when given) with the template's
    /// variables `kwargs` (vLLM's `chat_template_kwargs`: `enable_thinking`, ...; they may also
    /// set `add_generation_prompt`, `bos_token` and `eos_token`, never `messages` or `tools`).
    pub fn render(
        &self,
        messages: &[ChatMessage],
        tools: Option<&[serde_json::Value]>,
        kwargs: &TemplateKwargs,
    ) -> Result<String, TextError> {
        let tmpl = self
            .env
            .get_template("chat")
            .expect("template was added in new()");
        let mut vars = kwargs.clone();
        let err = |e: serde_json::Error| TextError::Template(e.to_string());
        vars.insert(
            "messages".into(),
            serde_json::to_value(messages).map_err(err)?,
        );
        vars.insert("tools".into(), serde_json::to_value(tools).map_err(err)?);
        for (k, v) in [
            ("add_generation_prompt", serde_json::Value::Bool(true)),
            ("bos_token", self.bos_token.clone().into()),
            ("eos_token", self.eos_token.clone().into()),
        ] {
            vars.entry(k).or_insert(v);
        }
        tmpl.render(Value::from_serialize(&vars))
            .map_err(|e| TextError::Template(format!("chat template failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are helpful.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'].strip() + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn msg(role: &str, content: &str) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
            ..ChatMessage::default()
        }
    }

    #[test]
    fn renders_chatml_with_python_methods() {
        let t = ChatTemplate::new(CHATML, "<s>".into(), "</s>".into()).unwrap();
        let out = t
            .render(&[msg("user", "  Hi!  ")], None, &TemplateKwargs::new())
            .unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn raise_exception_is_an_error() {
        let src = "{% if messages[0]['role'] == 'assistant' %}{{ raise_exception('Conversation must start with user') }}{% endif %}";
        let t = ChatTemplate::new(src, String::new(), String::new()).unwrap();
        let err = t
            .render(&[msg("assistant", "x")], None, &TemplateKwargs::new())
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("Conversation must start with user"),
            "{err}"
        );
    }

    #[test]
    fn strftime_formats_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
        let s = strftime_now("%d %b %Y".into());
        assert_eq!(s.len(), 11, "{s}");
    }
}
