//! `GET /v1/models`.

use super::types::{ModelCard, ModelList};
use crate::api::AppState;
use axum::extract::State;
use axum::Json;

pub async fn list_models(State(state): State<AppState>) -> Json<ModelList> {
    Json(ModelList {
        object: "list",
        data: state
            .models
            .list()
            .map(|m| ModelCard {
                id: m.id.clone(),
                object: "model",
                created: m.created,
                owned_by: "weir",
                max_model_len: m.engine.max_model_len(),
            })
            .collect(),
    })
}
