//! `GET /v1/models` and `GET /v1/models/{id}`.

use super::types::{ModelCard, ModelList};
use crate::api::error::ApiError;
use crate::api::AppState;
use axum::extract::{Path, State};
use axum::Json;

/// The card of declared model `id` (its load time and context length once loaded).
fn card(state: &AppState, id: &str) -> ModelCard {
    let loaded = state.models.get(id);
    ModelCard {
        id: id.to_string(),
        object: "model",
        created: loaded.as_ref().map_or(state.started, |m| m.created),
        owned_by: "weir",
        max_model_len: loaded.map(|m| m.engine.max_model_len()),
        parent: None,
    }
}

/// The card of adapter `name` on model `base`.
fn adapter_card(state: &AppState, name: &str, base: &str) -> ModelCard {
    ModelCard {
        id: name.to_string(),
        parent: Some(base.to_string()),
        ..card(state, base)
    }
}

/// Every declared model, loaded or not.
pub async fn list_models(State(state): State<AppState>) -> Json<ModelList> {
    Json(ModelList {
        object: "list",
        data: state
            .models
            .ids()
            .map(|id| card(&state, id))
            .chain(
                state
                    .models
                    .adapters()
                    .iter()
                    .map(|(name, base)| adapter_card(&state, name, base)),
            )
            .collect(),
    })
}

/// One declared model, or 404.
pub async fn model(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ModelCard>, ApiError> {
    if let Some((name, base)) = state.models.adapters().iter().find(|(name, _)| *name == id) {
        return Ok(Json(adapter_card(&state, name, base)));
    }
    if !state.models.ids().any(|m| m == id) {
        return Err(ApiError::model_not_found(&id));
    }
    Ok(Json(card(&state, &id)))
}
