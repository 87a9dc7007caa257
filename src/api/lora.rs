//! vLLM's run-time LoRA endpoints, behind the admin key (`--admin-api-key` when set):
//! - `POST /v1/load_lora_adapter` `{"lora_name", "lora_path", "base_model_name"?}`: the PEFT
//!   folder at `lora_path` served as `lora_name` on its model (the one declared model unless
//!   `base_model_name` names another);
//! - `POST /v1/unload_lora_adapter` `{"lora_name"}`: new requests on it get 404 at once; its
//!   memory goes when its requests in flight are done.
//!
//! Both answer 200 with vLLM's plain-text message.

use super::error::{parse_json, ApiError};
use super::AppState;
use crate::manager::LoraAdminError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadLora {
    lora_name: String,
    lora_path: String,
    base_model_name: Option<String>,
    /// vLLM's: replace an adapter of the same name. Only false is served.
    #[serde(default)]
    load_inplace: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnloadLora {
    lora_name: String,
    /// vLLM's optional integer id, unused by weir (names are unique).
    #[allow(dead_code)]
    lora_int_id: Option<u64>,
}

fn api_error(e: LoraAdminError) -> ApiError {
    match e {
        LoraAdminError::Invalid(m) => ApiError::invalid(Some("lora_name".to_string()), m),
        LoraAdminError::NotFound(n) => ApiError::adapter_not_found(&n),
    }
}

pub async fn load_lora_adapter(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<String, ApiError> {
    let req: LoadLora = parse_json(&body?)?;
    if req.load_inplace {
        return Err(ApiError::invalid(
            Some("load_inplace".to_string()),
            "load_inplace is not supported: unload the adapter, then load it again",
        ));
    }
    state
        .models
        .load_lora(
            &req.lora_name,
            &req.lora_path,
            req.base_model_name.as_deref(),
        )
        .await
        .map_err(api_error)?;
    Ok(format!(
        "Success: LoRA adapter '{}' added successfully.",
        req.lora_name
    ))
}

pub async fn unload_lora_adapter(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<String, ApiError> {
    let req: UnloadLora = parse_json(&body?)?;
    state
        .models
        .unload_lora(&req.lora_name)
        .await
        .map_err(api_error)?;
    Ok(format!(
        "Success: LoRA adapter '{}' removed successfully.",
        req.lora_name
    ))
}
