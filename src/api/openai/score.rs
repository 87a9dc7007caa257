//! `POST /score` and `/rerank` (vLLM's shapes; `/rerank` is also Jina's and Cohere's): how well
//! texts match. A cross-encoder (BERT sequence classifier) scores each pair read together; an
//! embedding model scores the cosine similarity of the two texts' vectors, as vLLM does.

use super::embeddings::{charge, check_prompts, run, texts_to_ids};
use super::ids::{response_id, unix_now};
use crate::api::error::{parse_json, ApiError};
use crate::api::AppState;
use crate::manager::ModelLease;
use crate::metrics::FinishedLabel;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
#[serde(untagged)]
enum Texts {
    One(String),
    Many(Vec<String>),
}

impl Texts {
    fn into_vec(self) -> Vec<String> {
        match self {
            Texts::One(t) => vec![t],
            Texts::Many(t) => t,
        }
    }
}

#[derive(Deserialize)]
struct ScoreRequest {
    model: String,
    text_1: Texts,
    text_2: Texts,
    #[serde(default)]
    priority: i32,
}

/// A document to rerank: its text, or Cohere's `{"text": ...}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Document {
    Text(String),
    Object { text: String },
}

#[derive(Deserialize)]
struct RerankRequest {
    model: String,
    query: String,
    documents: Vec<Document>,
    top_n: Option<usize>,
    #[serde(default = "yes")]
    return_documents: bool,
    #[serde(default)]
    priority: i32,
}

fn yes() -> bool {
    true
}

/// `{"model", "text_1", "text_2"}`: one score per pair, `text_1` a string or a list (paired with
/// `text_2` one to one, or one against every `text_2`).
pub async fn score(
    State(state): State<AppState>,
    key: Option<axum::Extension<crate::api::auth::KeyId>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let req: ScoreRequest = parse_json(&body?)?;
    let (left, right) = (req.text_1.into_vec(), req.text_2.into_vec());
    let left = match (left.len(), right.len()) {
        (1, n) => vec![left[0].clone(); n],
        (a, b) if a == b => left,
        (a, b) => {
            return Err(ApiError::invalid(
                Some("text_1".into()),
                format!(
                    "text_1 holds {a} texts and text_2 {b}: send one text_1, or as many as text_2"
                ),
            ))
        }
    };
    let model = state.models.get_or_load(&req.model).await?;
    let (scores, tokens) = pair_scores(&state, &model, left, right, req.priority).await?;
    charge(&state, key, tokens);
    let data: Vec<Value> = scores
        .iter()
        .enumerate()
        .map(|(index, s)| json!({"index": index, "object": "score", "score": s}))
        .collect();
    Ok(Json(json!({
        "id": response_id("score"),
        "object": "list",
        "created": unix_now(),
        "model": req.model,
        "data": data,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })))
}

/// `{"model", "query", "documents", "top_n"?}`: the documents by relevance to the query, best
/// first.
pub async fn rerank(
    State(state): State<AppState>,
    key: Option<axum::Extension<crate::api::auth::KeyId>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let req: RerankRequest = parse_json(&body?)?;
    let docs: Vec<String> = req
        .documents
        .into_iter()
        .map(|d| match d {
            Document::Text(t) | Document::Object { text: t } => t,
        })
        .collect();
    if docs.is_empty() {
        return Err(ApiError::invalid(
            Some("documents".into()),
            "documents is empty",
        ));
    }
    let model = state.models.get_or_load(&req.model).await?;
    let queries = vec![req.query.clone(); docs.len()];
    let (scores, tokens) = pair_scores(&state, &model, queries, docs.clone(), req.priority).await?;
    charge(&state, key, tokens);
    let mut order: Vec<usize> = (0..docs.len()).collect();
    // best first; equal scores keep the documents' order
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let results: Vec<Value> = order
        .into_iter()
        .take(req.top_n.unwrap_or(docs.len()))
        .map(|i| {
            let mut r = json!({"index": i, "relevance_score": scores[i]});
            if req.return_documents {
                r["document"] = json!({"text": docs[i]});
            }
            r
        })
        .collect();
    Ok(Json(json!({
        "id": response_id("rerank"),
        "model": req.model,
        "results": results,
        "usage": {"total_tokens": tokens},
    })))
}

/// Each pair's score and the tokens computed: a cross-encoder's score of the pair read
/// together, or the cosine of an embedding model's two vectors.
async fn pair_scores(
    state: &AppState,
    model: &ModelLease,
    left: Vec<String>,
    right: Vec<String>,
    priority: i32,
) -> Result<(Vec<f32>, usize), ApiError> {
    let info = model.model.embedding().ok_or_else(|| {
        ApiError::invalid(
            Some("model".into()),
            "this model generates text; scoring needs a cross-encoder or an embedding model",
        )
    })?;
    let timeout = state.options.request_timeout;
    let result = if info.scores {
        if info.dims != 1 {
            return Err(ApiError::invalid(
                Some("model".into()),
                format!(
                    "this classifier has {} labels; a score needs one",
                    info.dims
                ),
            ));
        }
        let codec = model.codec.clone();
        let prompts = tokio::task::spawn_blocking(move || {
            left.iter()
                .zip(&right)
                .map(|(a, b)| codec.encode_pair(a, b))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| ApiError::internal(format!("tokenizer task failed: {e}")))??;
        check_prompts(model, &prompts, "text_2")?;
        let tokens = prompts.iter().map(Vec::len).sum();
        run(model, prompts, priority, timeout)
            .await
            .map(|v| (v.into_iter().map(|s| s[0]).collect(), tokens))
    } else {
        let n = left.len();
        let mut texts = left;
        texts.extend(right);
        let prompts = texts_to_ids(model, texts).await?;
        check_prompts(model, &prompts, "text_2")?;
        let tokens = prompts.iter().map(Vec::len).sum();
        run(model, prompts, priority, timeout).await.map(|v| {
            let scores = (0..n).map(|i| cosine(&v[i], &v[n + i])).collect();
            (scores, tokens)
        })
    };
    model.engine.metrics().finished(match &result {
        Ok(_) => FinishedLabel::Length,
        Err(_) => FinishedLabel::Error,
    });
    result
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    (dot / (norm(a) * norm(b)).max(1e-12)) as f32
}
