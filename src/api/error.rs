//! `ApiError`: every failure the HTTP layer reports, in OpenAI's envelope
//! `{"error": {"message", "type", "param", "code"}}` with the matching status code. The one place
//! where errors become status codes.

use crate::engine::EngineError;
use crate::manager::LoadError;
use crate::step::AdmissionError;
use crate::text::TextError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    /// Seconds sent as `Retry-After` (429 and 503 answers).
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    param: Option<&'a str>,
    code: Option<&'static str>,
}

impl ApiError {
    /// 400 about one request field.
    pub fn invalid(param: impl Into<Option<String>>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            param: param.into(),
            code: None,
            retry_after: None,
        }
    }

    pub fn model_not_found(model: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: format!("The model `{model}` does not exist."),
            param: Some("model".into()),
            code: Some("model_not_found"),
            retry_after: None,
        }
    }

    /// 401 in OpenAI's words.
    /// 404 for a LoRA adapter no one declared or loaded (vLLM's answer).
    pub fn adapter_not_found(name: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: format!("The LoRA adapter `{name}` does not exist."),
            param: Some("lora_name".into()),
            code: Some("model_not_found"),
            retry_after: None,
        }
    }

    pub fn unauthorized() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            message: "Incorrect API key provided. Send it as `Authorization: Bearer KEY`.".into(),
            param: None,
            code: Some("invalid_api_key"),
            retry_after: None,
        }
    }

    /// The request ran past `--request-timeout`.
    pub fn timed_out(limit: std::time::Duration) -> Self {
        Self {
            status: StatusCode::REQUEST_TIMEOUT,
            message: format!(
                "the request ran past the server's request timeout of {:.1} s and was aborted",
                limit.as_secs_f64()
            ),
            param: None,
            code: Some("request_timeout"),
            retry_after: None,
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            param: None,
            code: None,
            retry_after: None,
        }
    }

    fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            400 | 404 | 408 | 413 | 422 => "invalid_request_error",
            401 => "authentication_error",
            429 => "rate_limit_exceeded",
            503 => "service_unavailable",
            _ => "server_error",
        }
    }

    /// The JSON body (also sent as the error event of a stream).
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "error": ErrorBody {
            message: &self.message,
            kind: self.kind(),
            param: self.param.as_deref(),
            code: self.code,
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            r.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        r
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Admission(AdmissionError::TooLong { .. }) => Self {
                status: StatusCode::BAD_REQUEST,
                message: e.to_string(),
                param: Some("max_tokens".into()),
                code: Some("context_length_exceeded"),
                retry_after: None,
            },
            EngineError::Admission(_) => Self::invalid(None, e.to_string()),
            EngineError::QueueFull { .. } => Self {
                status: StatusCode::TOO_MANY_REQUESTS,
                message: e.to_string(),
                param: None,
                code: Some("rate_limit_exceeded"),
                retry_after: Some(1),
            },
            EngineError::Stopped => Self {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: e.to_string(),
                param: None,
                code: None,
                retry_after: None,
            },
        }
    }
}

/// A body that could not be read: 413 past `--max-body-bytes`, else 400.
impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(e: axum::extract::rejection::BytesRejection) -> Self {
        Self {
            status: e.status(),
            message: format!("request body: {}", e.body_text()),
            param: None,
            code: None,
            retry_after: None,
        }
    }
}

impl From<LoadError> for ApiError {
    fn from(e: LoadError) -> Self {
        let unavailable = |retry| Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: e.to_string(),
            param: None,
            code: None,
            retry_after: retry,
        };
        match &e {
            LoadError::NotFound(id) => Self::model_not_found(id),
            LoadError::InvalidId(msg) => Self::invalid(Some("model".to_string()), msg.clone()),
            LoadError::Failed { .. } => unavailable(None),
            LoadError::Busy(_) | LoadError::Timeout(_) => unavailable(Some(5)),
            LoadError::TooLarge(_) => Self {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: e.to_string(),
                param: Some("model".into()),
                code: None,
                retry_after: None,
            },
        }
    }
}

impl From<TextError> for ApiError {
    fn from(e: TextError) -> Self {
        match e {
            TextError::Template(_) | TextError::NoTemplate => {
                Self::invalid(Some("messages".into()), e.to_string())
            }
            TextError::NoTokenizer => Self::invalid(Some("prompt".into()), e.to_string()),
            TextError::Tokenizer(_) => Self::internal(e.to_string()),
        }
    }
}

/// Turns a JSON body into `T`, naming the offending field in `param` on failure.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let inner = e.inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::invalid(None, format!("malformed JSON body: {inner}"));
        }
        let path = e.path().to_string();
        let msg = inner.to_string();
        // "missing field `model`" is reported at the parent; name the field itself.
        let missing = msg
            .strip_prefix("missing field `")
            .and_then(|r| r.split('`').next())
            .map(|f| {
                if path == "." {
                    f.to_string()
                } else {
                    format!("{path}.{f}")
                }
            });
        let param = missing.unwrap_or(path);
        ApiError::invalid(
            Some(param.clone()),
            format!("invalid request: {param}: {msg}"),
        )
    })
}
