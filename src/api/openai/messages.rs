//! Chat messages as the template sees them: roles checked, text parts joined, an assistant's
//! tool calls with their arguments parsed.

use super::types::{ChatMessageIn, MessageContent};
use crate::api::error::ApiError;
use crate::text::ChatMessage;
use serde_json::Value;

const ROLES: [&str; 5] = ["system", "user", "assistant", "tool", "developer"];

pub fn to_chat_messages(msgs: &[ChatMessageIn]) -> Result<Vec<ChatMessage>, ApiError> {
    if msgs.is_empty() {
        return Err(ApiError::invalid(
            Some("messages".into()),
            "messages must not be empty",
        ));
    }
    msgs.iter()
        .enumerate()
        .map(|(i, m)| {
            if !ROLES.contains(&m.role.as_str()) {
                return Err(ApiError::invalid(
                    Some(format!("messages[{i}].role")),
                    format!("unknown role {:?}; expected one of {ROLES:?}", m.role),
                ));
            }
            let content = match &m.content {
                None => String::new(),
                Some(MessageContent::Text(t)) => t.clone(),
                Some(MessageContent::Parts(parts)) => {
                    let mut s = String::new();
                    for (j, p) in parts.iter().enumerate() {
                        match (p.kind.as_str(), &p.text) {
                            ("text", Some(t)) => s.push_str(t),
                            _ => {
                                return Err(ApiError::invalid(
                                    Some(format!("messages[{i}].content[{j}]")),
                                    format!(
                                        "content part type {:?} is not supported (text only)",
                                        p.kind
                                    ),
                                ))
                            }
                        }
                    }
                    s
                }
            };
            Ok(ChatMessage {
                role: m.role.clone(),
                content,
                tool_calls: m.tool_calls.as_ref().map(|calls| template_calls(calls)),
                tool_call_id: m.tool_call_id.clone(),
                name: m.name.clone(),
            })
        })
        .collect()
}

/// An assistant message's calls as chat templates expect them: `function.arguments` parsed
/// into an object when it is JSON text (as vLLM hands them to templates).
fn template_calls(calls: &[Value]) -> Value {
    Value::Array(
        calls
            .iter()
            .map(|c| {
                let mut c = c.clone();
                if let Some(args) = c["function"]["arguments"].as_str() {
                    if let Ok(v) = serde_json::from_str::<Value>(args) {
                        c["function"]["arguments"] = v;
                    }
                }
                c
            })
            .collect(),
    )
}
