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

    /// True when `key` is one of the keys. Every key is compared, match or not.
    pub fn accepts(&self, key: &str) -> bool {
        let d = digest(key);
        self.0
            .iter()
            .fold(subtle::Choice::from(0), |any, k| any | k.ct_eq(&d))
            .into()
    }

    /// The request's bearer token is accepted (or no key is required).
    fn allows(&self, req: &Request) -> bool {
        if self.is_empty() {
            return true;
        }
        req.headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|k| self.accepts(k.trim()))
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Middleware of the `/v1/*` routes.
pub async fn require_api_key(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if state.api_keys.allows(&req) {
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
    if state.metrics_key.allows(&req) {
        next.run(req).await
    } else {
        ApiError::unauthorized().into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_its_keys() {
        let k = Keys::new(&["alpha", "beta-2"]);
        assert!(k.accepts("alpha") && k.accepts("beta-2"));
        assert!(!k.accepts("alph") && !k.accepts("alphaa") && !k.accepts(""));
        assert!(Keys::default().is_empty());
    }
}
