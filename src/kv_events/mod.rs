//! KV cache events published over ZeroMQ, as vLLM's `--kv-events-config` publishes them, so a
//! KV-aware router (vllm-router's `kv_aware`, llm-d, Dynamo) can send a prompt to the replica
//! that already holds its prefix.
//!
//! - A PUB socket sends each batch as three frames: the topic, the batch's sequence number (8
//!   bytes big-endian, from 0) and the msgpack batch (`wire.rs`).
//! - An optional ROUTER socket replays: a request `[start (8 bytes big-endian)]` (from a DEALER
//!   or REQ, so `[identity, "", start]` here) is answered with every batch still buffered from
//!   `start` on, `[identity, "", topic, seq, payload]` each, then `[identity, "", "", -1, ""]`.
//!   The last `buffer_steps` batches are kept.
//!
//! The engine threads hand their step's events to `KvEventSink::publish` (non-blocking: a full
//! queue drops the batch and counts it, as vLLM's publisher does); one thread with its own small
//! tokio runtime owns the sockets. `flush` at shutdown sends what is queued (an unloaded
//! model's `AllBlocksCleared`) before the process exits.
//!
//! weir binds both sockets: an endpoint must name a wildcard host (`tcp://*:5557`, `::`), a local
//! address or an `ipc://` path. vLLM would connect to other addresses (an XSUB proxy); the
//! `zeromq` crate's PUB socket does not reconnect after its peer restarts, so weir refuses them
//! rather than lose events silently.

pub mod wire;

use crate::kv::KvEvent;
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use zeromq::{Socket, SocketRecv, SocketSend, ZmqMessage};

/// `--kv-events-config`: vLLM's `KVEventsConfig` fields weir honours.
#[derive(Debug, Clone, PartialEq)]
pub struct KvEventsConfig {
    pub endpoint: String,
    pub replay_endpoint: Option<String>,
    /// Batches kept for replay.
    pub buffer_steps: usize,
    /// Batches waiting for the socket thread before new ones are dropped.
    pub max_queue_size: usize,
    pub topic: String,
}

impl Default for KvEventsConfig {
    /// vLLM's defaults.
    fn default() -> Self {
        Self {
            endpoint: "tcp://*:5557".into(),
            replay_endpoint: None,
            buffer_steps: 10_000,
            max_queue_size: 100_000,
            topic: String::new(),
        }
    }
}

/// What the socket thread is sent: one engine step's events, or a flush to acknowledge once
/// everything before it is sent.
enum Msg {
    Batch { ts: f64, events: Vec<KvEvent> },
    Flush(std::sync::mpsc::Sender<()>),
}

/// Where engine threads send their events; cloned into each engine.
#[derive(Clone)]
pub struct KvEventSink {
    tx: tokio::sync::mpsc::Sender<Msg>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for KvEventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvEventSink").finish_non_exhaustive()
    }
}

impl KvEventSink {
    /// Queues one step's events (nothing when there are none).
    pub fn publish(&self, events: Vec<KvEvent>) {
        if events.is_empty() {
            return;
        }
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        if self.tx.try_send(Msg::Batch { ts, events }).is_err()
            && self.dropped.fetch_add(1, Ordering::Relaxed) == 0
        {
            tracing::warn!("KV event queue full (or its thread gone): dropping event batches");
        }
    }
}

impl KvEventSink {
    /// Waits (at most `timeout`) until every batch queued before this call is sent.
    pub fn flush(&self, timeout: std::time::Duration) {
        let (ack_tx, ack_rx) = std::sync::mpsc::channel();
        if self.tx.try_send(Msg::Flush(ack_tx)).is_ok() {
            let _ = ack_rx.recv_timeout(timeout);
        }
    }
}

/// Binds the sockets of `cfg` and starts the publishing thread. Fails when an endpoint cannot
/// be bound (the error names it).
pub fn start(cfg: KvEventsConfig) -> Result<KvEventSink, String> {
    for ep in std::iter::once(&cfg.endpoint).chain(&cfg.replay_endpoint) {
        if !can_bind(ep) {
            return Err(format!(
                "KV events endpoint {ep}: weir binds its sockets; give a wildcard or local address \
                 (tcp://*:5557, tcp://0.0.0.0:5557, tcp://127.0.0.1:5557) or an ipc:// path"
            ));
        }
    }
    let (tx, rx) = tokio::sync::mpsc::channel(cfg.max_queue_size.max(1));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("kv-events".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            rt.block_on(async move {
                match open(&cfg).await {
                    Ok((publisher, replay)) => {
                        let _ = ready_tx.send(Ok(()));
                        run(cfg, publisher, replay, rx).await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            });
        })
        .map_err(|e| format!("cannot start the KV event thread: {e}"))?;
    ready_rx
        .recv()
        .map_err(|_| "the KV event thread ended at start".to_string())??;
    Ok(KvEventSink {
        tx,
        dropped: Arc::new(AtomicU64::new(0)),
    })
}

/// The address zeromq understands: vLLM's `*` wildcard host is every interface.
fn local_address(endpoint: &str) -> String {
    endpoint.replacen("://*:", "://0.0.0.0:", 1)
}

/// Whether weir can bind `endpoint`: vLLM binds a wildcard or an `ipc://` endpoint; weir also
/// binds a local address (see the module doc).
fn can_bind(endpoint: &str) -> bool {
    endpoint.contains('*')
        || endpoint.contains("::")
        || endpoint.starts_with("ipc://")
        || endpoint.starts_with("tcp://0.0.0.0:")
        || endpoint.starts_with("tcp://127.")
        || endpoint.starts_with("tcp://localhost:")
}

async fn open(
    cfg: &KvEventsConfig,
) -> Result<(zeromq::PubSocket, Option<zeromq::RouterSocket>), String> {
    let mut publisher = zeromq::PubSocket::new();
    publisher
        .bind(&local_address(&cfg.endpoint))
        .await
        .map_err(|e| format!("KV events endpoint {}: {e}", cfg.endpoint))?;
    let replay = match &cfg.replay_endpoint {
        Some(ep) => {
            let mut r = zeromq::RouterSocket::new();
            r.bind(&local_address(ep))
                .await
                .map_err(|e| format!("KV events replay endpoint {ep}: {e}"))?;
            Some(r)
        }
        None => None,
    };
    tracing::info!(endpoint = %cfg.endpoint, replay = ?cfg.replay_endpoint, topic = %cfg.topic, "publishing KV cache events");
    Ok((publisher, replay))
}

type Buffer = Arc<parking_lot::Mutex<VecDeque<(u64, Bytes)>>>;

async fn run(
    cfg: KvEventsConfig,
    mut publisher: zeromq::PubSocket,
    replay: Option<zeromq::RouterSocket>,
    mut rx: tokio::sync::mpsc::Receiver<Msg>,
) {
    let topic = Bytes::from(cfg.topic.clone().into_bytes());
    let buffer: Buffer = Arc::default();
    if let Some(socket) = replay {
        tokio::spawn(serve_replay(socket, buffer.clone(), topic.clone()));
    }
    let mut seq: u64 = 0;
    while let Some(msg) = rx.recv().await {
        let (ts, events) = match msg {
            Msg::Batch { ts, events } => (ts, events),
            Msg::Flush(ack) => {
                // NOTE: a PUB send only queues; give the writers a moment to put it on the wire
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                let _ = ack.send(());
                continue;
            }
        };
        let payload = Bytes::from(wire::encode_batch(ts, &events));
        let frames = vec![
            topic.clone(),
            Bytes::copy_from_slice(&seq.to_be_bytes()),
            payload.clone(),
        ];
        let msg = ZmqMessage::try_from(frames).expect("three frames");
        // NOTE: a PUB send drops for slow subscribers and never fails
        let _ = publisher.send(msg).await;
        {
            let mut b = buffer.lock();
            if b.len() == cfg.buffer_steps.max(1) {
                b.pop_front();
            }
            b.push_back((seq, payload));
        }
        seq += 1;
    }
}

/// Answers replay requests from `buffer` (see the module doc).
async fn serve_replay(mut socket: zeromq::RouterSocket, buffer: Buffer, topic: Bytes) {
    loop {
        let req = match socket.recv().await {
            Ok(m) => m.into_vec(),
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let start = match req.as_slice() {
            [_, empty, start] if empty.is_empty() && start.len() == 8 => {
                u64::from_be_bytes(start[..].try_into().expect("8 bytes"))
            }
            _ => {
                tracing::warn!(frames = req.len(), "malformed KV event replay request");
                continue;
            }
        };
        let identity = req[0].clone();
        let replies: Vec<(u64, Bytes)> = buffer
            .lock()
            .iter()
            .filter(|(s, _)| *s >= start)
            .cloned()
            .collect();
        let end = (u64::MAX, Bytes::new());
        for (seq, payload) in replies.into_iter().chain(std::iter::once(end)) {
            let frame_topic = if payload.is_empty() {
                Bytes::new()
            } else {
                topic.clone()
            };
            let frames = vec![
                identity.clone(),
                Bytes::new(),
                frame_topic,
                Bytes::copy_from_slice(&seq.to_be_bytes()),
                payload,
            ];
            let msg = ZmqMessage::try_from(frames).expect("five frames");
            // a client that stops reading does not hold up the others' replays
            let sent = tokio::time::timeout(std::time::Duration::from_secs(2), socket.send(msg));
            if !matches!(sent.await, Ok(Ok(()))) {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_and_local_endpoints_bind() {
        assert!(can_bind("tcp://*:5557"));
        assert!(can_bind("ipc:///tmp/kv"));
        assert!(can_bind("tcp://127.0.0.1:5557"));
        assert!(!can_bind("tcp://10.0.0.1:5557"));
        assert!(start(KvEventsConfig {
            endpoint: "tcp://10.0.0.1:5557".into(),
            ..Default::default()
        })
        .is_err());
        assert_eq!(local_address("tcp://*:5557"), "tcp://0.0.0.0:5557");
    }
}
