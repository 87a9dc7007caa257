//! Python's `json.dumps`, byte for byte: the `tojson` of Hugging Face's chat-template renderer
//! (`ensure_ascii=False`, `", "` and `": "` separators, keys in their given order, `indent`),
//! so a tool schema reaches the model as transformers (and vLLM) would write it. minijinja's
//! own `tojson` writes compact, HTML-escaped JSON: another prompt.

use serde_json::Value;

/// `json.dumps`'s formatting arguments.
#[derive(Debug, Clone, Default)]
pub struct DumpOptions {
    pub ensure_ascii: bool,
    /// Spaces (or the string) before each item, one more per level; `None`: one line.
    pub indent: Option<String>,
    /// (item separator, key separator); `None`: `(", ", ": ")`, or `(",", ": ")` with an indent.
    pub separators: Option<(String, String)>,
    pub sort_keys: bool,
}

/// `value` as `json.dumps(value, **options)` writes it.
pub fn dumps(value: &Value, options: &DumpOptions) -> String {
    let (item, key) = match &options.separators {
        Some((i, k)) => (i.as_str(), k.as_str()),
        None if options.indent.is_some() => (",", ": "),
        None => (", ", ": "),
    };
    let mut out = String::new();
    Writer {
        options,
        item,
        key,
        out: &mut out,
    }
    .value(value, 0);
    out
}

struct Writer<'a> {
    options: &'a DumpOptions,
    item: &'a str,
    key: &'a str,
    out: &'a mut String,
}

impl Writer<'_> {
    fn value(&mut self, value: &Value, level: usize) {
        match value {
            Value::Null => self.out.push_str("null"),
            Value::Bool(b) => self.out.push_str(if *b { "true" } else { "false" }),
            Value::Number(n) => match n.as_f64().filter(|_| n.is_f64()) {
                Some(f) => self.out.push_str(&python_float(f)),
                None => self.out.push_str(&n.to_string()),
            },
            Value::String(s) => self.string(s),
            Value::Array(items) => {
                let items: Vec<_> = items.iter().map(|v| (None, v)).collect();
                self.container(('[', ']'), &items, level);
            }
            Value::Object(map) => {
                let mut items: Vec<_> = map.iter().map(|(k, v)| (Some(k.as_str()), v)).collect();
                if self.options.sort_keys {
                    items.sort_by_key(|(k, _)| *k);
                }
                self.container(('{', '}'), &items, level);
            }
        }
    }

    fn container(
        &mut self,
        (open, close): (char, char),
        items: &[(Option<&str>, &Value)],
        level: usize,
    ) {
        self.out.push(open);
        if items.is_empty() {
            self.out.push(close);
            return;
        }
        for (i, (key, value)) in items.iter().enumerate() {
            if i > 0 {
                self.out.push_str(self.item);
            }
            self.newline(level + 1);
            if let Some(key) = key {
                self.string(key);
                self.out.push_str(self.key);
            }
            self.value(value, level + 1);
        }
        self.newline(level);
        self.out.push(close);
    }

    fn newline(&mut self, level: usize) {
        if let Some(indent) = &self.options.indent {
            self.out.push('\n');
            for _ in 0..level {
                self.out.push_str(indent);
            }
        }
    }

    fn string(&mut self, s: &str) {
        self.out.push('"');
        for c in s.chars() {
            match c {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                '\r' => self.out.push_str("\\r"),
                '\t' => self.out.push_str("\\t"),
                '\u{8}' => self.out.push_str("\\b"),
                '\u{c}' => self.out.push_str("\\f"),
                c if (c as u32) < 0x20 || (self.options.ensure_ascii && !c.is_ascii()) => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        self.out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }
}

/// Python's `repr` of a float: the shortest digits that round-trip, positional from 1e-4 up to
/// 1e16 (with `.0` when integral), else `d.ddde+XX`.
fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    // Rust's `{:e}`: the shortest round-tripping digits, as "-1.25e-7"
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("exponent");
    if (-4..16).contains(&exp) {
        let positional = format!("{f}");
        return if positional.contains('.') {
            positional
        } else {
            positional + ".0"
        };
    }
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.abs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn writes_as_python() {
        let v = json!({"b": [1, 2.5, "x\"\n\u{1}é"], "a": {}, "c": [], "d": null, "e": true});
        assert_eq!(
            dumps(&v, &DumpOptions::default()),
            "{\"b\": [1, 2.5, \"x\\\"\\n\\u0001é\"], \"a\": {}, \"c\": [], \"d\": null, \"e\": true}"
        );
        let opts = DumpOptions {
            indent: Some("  ".into()),
            sort_keys: true,
            ensure_ascii: true,
            ..DumpOptions::default()
        };
        assert_eq!(
            dumps(&json!({"z": 1, "a": ["é😀"]}), &opts),
            "{\n  \"a\": [\n    \"\\u00e9\\ud83d\\ude00\"\n  ],\n  \"z\": 1\n}"
        );
    }

    #[test]
    fn floats_as_python_repr() {
        for (f, want) in [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (-2.5e-5, "-2.5e-05"),
            (1e16, "1e+16"),
            (123456789012345.6, "123456789012345.6"),
            (0.0001, "0.0001"),
        ] {
            assert_eq!(python_float(f), want);
        }
    }
}
