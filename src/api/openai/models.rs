//! `GET /v1/models`.

use super::types::{ModelCard, ModelList};
use crate::api::AppState;
use axum::extract::State;
use axum::Json;

/// Every declared model, loaded or not.
pub async fn list_models(State(state): State<AppState>) -> Json<ModelList> {
    Json(ModelList {
        object: "list",
        data: state
            .models
            .ids()
            .map(|id| {
                let loaded = state.models.get(id);
                ModelCard {
                    id: id.to_string(),
                    object: "model",
                    created: loaded.as_ref().map_or(state.started, |m| m.created),
                    owned_by: "weir",
                    max_model_len: loaded.map(|m| m.engine.max_model_len()),
                }
            })
            .collect(),
    })
}
