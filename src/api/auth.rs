//! API keys: `/v1/*` wants `Authorization: Bearer KEY` when the server has keys, `/metrics` when
//! it has a metrics key. Keys are compared through their SHA-256 digests in constant time, so
//! neither a key's bytes nor its length leak through timing.

use super::error::ApiError;
use super::AppState;
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Digests of the accepted keys.
#[derive(Debug, Clone, Default)]
pub struct Keys(Vec<[u8; 32]>);

impl Keys {
    pub fn new<S: AsRef<str>>(keys: &[S]) -> Self {
        Self(keys.iter().map(|k| digest(k.as_ref())).collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Which key `key` is. Every key is compared, match or not.
    pub fn find(&self, key: &str) -> Option<usize> {
        use subtle::ConditionallySelectable;
        let d = digest(key);
        let (mut found, mut index) = (subtle::Choice::from(0), 0u64);
        for (i, k) in self.0.iter().enumerate() {
            let eq = k.ct_eq(&d);
            index = u64::conditional_select(&index, &(i as u64), eq);
            found |= eq;
        }
        bool::from(found).then_some(index as usize)
    }

    /// The index of the request's bearer token among the keys; `Some(None)` when no key is
    /// required, `None` when the token is missing or wrong.
    fn check(&self, req: &Request) -> Option<Option<usize>> {
        if self.is_empty() {
            return Some(None);
        }
        req.headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .and_then(|k| self.find(k.trim()))
            .map(Some)
    }
}

/// Which API key a request came with (an index into `--api-key`s), for rate limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyId(pub usize);

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Middleware of the `/v1/*` routes: the key, then its rate limit (429 with `Retry-After`).
pub async fn require_api_key(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    match state.api_keys.check(&req) {
        None => ApiError::unauthorized().into_response(),
        Some(None) => next.run(req).await,
        Some(Some(key)) => match state.limiter.admit(key) {
            Ok(()) => {
                req.extensions_mut().insert(KeyId(key));
                next.run(req).await
            }
            Err(wait) => ApiError {
                status: axum::http::StatusCode::TOO_MANY_REQUESTS,
                message: format!("Rate limit reached for this API key; retry in {wait} s."),
                param: None,
                code: Some("rate_limit_exceeded"),
                retry_after: Some(wait),
            }
            .into_response(),
        },
    }
}

/// Runs `req` when it carries one of `keys` (or none is required), else 401.
async fn pass(keys: &Keys, req: Request, next: Next) -> Response {
    if keys.check(&req).is_some() {
        next.run(req).await
    } else {
        ApiError::unauthorized().into_response()
    }
}

/// Middleware of `/metrics`.
pub async fn require_metrics_key(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    pass(&state.metrics_key, req, next).await
}

/// Middleware of `/admin/*`.
pub async fn require_admin_key(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    pass(&state.admin_key, req, next).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_its_keys() {
        let k = Keys::new(&["alpha", "beta-2"]);
        assert_eq!((k.find("alpha"), k.find("beta-2")), (Some(0), Some(1)));
        assert!(["alph", "alphaa", ""].iter().all(|b| k.find(b).is_none()));
        assert!(Keys::default().is_empty());
    }
}
