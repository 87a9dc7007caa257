//! A chat request's `tools` and `tool_choice`, checked: which tools the template offers and
//! which calls a choice forces.

use crate::api::error::ApiError;
use serde_json::Value;

/// The request's tools as the template and parser see them: `None` when there are none or
/// `tool_choice` is "none"; with the tools a call is forced to (all for "required", one named).
pub struct ToolPlan {
    pub tools: Vec<Value>,
    pub forced: Option<Vec<Value>>,
}

pub fn tool_plan(
    tools: Option<Value>,
    choice: Option<Value>,
) -> Result<Option<ToolPlan>, ApiError> {
    let bad = |param: &str, msg: String| ApiError::invalid(Some(param.to_string()), msg);
    let tools = match tools {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(t)) => t,
        Some(_) => return Err(bad("tools", "tools must be a list".into())),
    };
    for (i, t) in tools.iter().enumerate() {
        let name = t["function"]["name"].as_str().unwrap_or("");
        if t["type"] != "function" || name.is_empty() {
            return Err(bad(
                &format!("tools[{i}]"),
                "each tool must be {\"type\": \"function\", \"function\": {\"name\": ...}}".into(),
            ));
        }
        let params = &t["function"]["parameters"];
        if !(params.is_null() || params.is_object()) {
            return Err(bad(
                &format!("tools[{i}].function.parameters"),
                "parameters must be a JSON schema object".into(),
            ));
        }
    }
    let choice = choice.filter(|c| !c.is_null());
    if tools.is_empty() {
        return match choice {
            None => Ok(None),
            Some(c) if c == "none" => Ok(None),
            Some(_) => Err(bad("tool_choice", "tool_choice needs tools".into())),
        };
    }
    let forced = match ToolChoice::parse(choice.as_ref())? {
        ToolChoice::Auto => None,
        ToolChoice::None => return Ok(None),
        ToolChoice::Required => Some(tools.clone()),
        ToolChoice::Function(name) => {
            let named: Vec<Value> = tools
                .iter()
                .filter(|t| t["function"]["name"] == name.as_str())
                .cloned()
                .collect();
            if named.is_empty() {
                return Err(bad(
                    "tool_choice",
                    format!("tool_choice names {name:?}, which is not among the tools"),
                ));
            }
            Some(named)
        }
    };
    Ok(Some(ToolPlan { tools, forced }))
}

/// `tool_choice`, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    None,
    /// The default: the model decides.
    Auto,
    /// Some call is forced.
    Required,
    /// A call of this function is forced.
    Function(String),
}

impl ToolChoice {
    /// "none", "auto", "required" or `{"type": "function", "function": {"name": ...}}`
    /// (absent: auto).
    pub fn parse(v: Option<&Value>) -> Result<Self, ApiError> {
        match v {
            None => Ok(Self::Auto),
            Some(Value::String(s)) if s == "none" => Ok(Self::None),
            Some(Value::String(s)) if s == "auto" => Ok(Self::Auto),
            Some(Value::String(s)) if s == "required" => Ok(Self::Required),
            Some(c) if c["type"] == "function" => Ok(Self::Function(
                c["function"]["name"].as_str().unwrap_or("").to_string(),
            )),
            Some(c) => Err(ApiError::invalid(
                Some("tool_choice".into()),
                format!("tool_choice must be none, auto, required or a named function, got {c}"),
            )),
        }
    }
}
