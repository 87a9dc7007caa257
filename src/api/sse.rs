//! Server-sent events for streaming responses. Several generations (one per prompt of a
//! completions request, or the one of a chat request) are merged into one event stream of
//! OpenAI chunk objects, then the optional usage chunk, then `data: [DONE]`. An engine error
//! sends one error event and ends the stream. Dropping the body (client gone) drops every
//! `Generation`, which aborts their sequences in the engine at once.

use super::error::ApiError;
use super::generation::{GenEvent, Generation};
use super::logprobs::TokenLogprob;
use super::openai::types::Usage;
use crate::step::FinishReason;
use axum::http::HeaderValue;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, BoxStream, StreamExt};
use std::convert::Infallible;

/// How one endpoint writes its chunk objects (which know whether the stream reports usage).
pub trait ChunkFormat: Send + 'static {
    type Chunk: serde::Serialize;
    /// Chunk sent before any text of choice `index` (chat sends the role), if any.
    fn first(&self, index: usize) -> Option<Self::Chunk>;
    /// Chunks for new text of choice `index`, with its tokens' logprobs when the request asked
    /// for them (none while the text is held back, e.g. a tool call being written).
    fn text(&mut self, index: usize, text: String, logprobs: Vec<TokenLogprob>)
        -> Vec<Self::Chunk>;
    /// The prompt's logprobs of choice `index` (before its first text).
    fn prompt(
        &mut self,
        _index: usize,
        _logprobs: Vec<crate::step::TokenLogprobs>,
    ) -> Vec<Self::Chunk> {
        Vec::new()
    }
    /// The last chunks of choice `index`.
    fn finish(&mut self, index: usize, reason: &FinishReason) -> Vec<Self::Chunk>;
    /// The usage chunk that ends the stream, when the request asked for one.
    fn usage(&self, usage: Usage) -> Option<Self::Chunk>;
}

type Item = (usize, Option<Result<Vec<GenEvent>, ApiError>>);

fn event(v: &impl serde::Serialize) -> Event {
    Event::default().data(serde_json::to_string(v).expect("chunks serialize. This is a bug."))
}

struct StreamState<F> {
    merged: BoxStream<'static, Item>,
    format: F,
    usage: Usage,
    pending_first: Vec<usize>,
    ended: bool,
}

/// Streams `gens` as SSE in `format`.
pub fn stream_response<F: ChunkFormat>(gens: Vec<Generation>, format: F) -> Response {
    let n = gens.len();
    let per_gen = gens.into_iter().enumerate().map(|(i, g)| {
        stream::unfold(Some(g), move |g| async move {
            let mut g = g?;
            let next = g.next().await;
            let more = next.is_some();
            Some(((i, next), more.then_some(g)))
        })
        .boxed()
    });
    let state = StreamState {
        merged: stream::select_all(per_gen).boxed(),
        format,
        usage: Usage::default(),
        pending_first: (0..n).rev().collect(),
        ended: false,
    };
    let events = stream::unfold(state, |mut st| async move {
        if st.ended {
            return None;
        }
        if let Some(i) = st.pending_first.pop() {
            let first = st.format.first(i).map(|c| event(&c));
            return Some((first.into_iter().collect::<Vec<_>>(), st));
        }
        let out = match st.merged.next().await {
            Some((_, None)) => Vec::new(),
            Some((i, Some(Ok(evs)))) => {
                let mut out = Vec::new();
                for e in evs {
                    let chunks = match e {
                        GenEvent::Text { text, logprobs } => st.format.text(i, text, logprobs),
                        GenEvent::Prompt(p) => st.format.prompt(i, p),
                        GenEvent::Finished { reason, usage } => {
                            st.usage = st.usage.plus(usage);
                            st.format.finish(i, &reason)
                        }
                    };
                    out.extend(chunks.iter().map(event));
                }
                out
            }
            Some((_, Some(Err(e)))) => {
                st.ended = true;
                vec![event(&e.body()), Event::default().data("[DONE]")]
            }
            None => {
                st.ended = true;
                let mut v: Vec<Event> = st.format.usage(st.usage).iter().map(event).collect();
                v.push(Event::default().data("[DONE]"));
                v
            }
        };
        Some((out, st))
    })
    .flat_map(|evs| stream::iter(evs.into_iter().map(Ok::<_, Infallible>)));
    let mut resp = Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response();
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-cache"));
    resp
}
