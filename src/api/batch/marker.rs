//! Whether the running task computes a batch line: the runner sets it around each line's
//! handler, and the requests the handler submits are queued as batch lines (`Request::background`).

tokio::task_local! {
    static IN_BATCH: ();
}

/// Whether the current task runs a batch line.
pub fn in_batch() -> bool {
    IN_BATCH.try_with(|_| ()).is_ok()
}

/// Runs `f` as a batch line.
pub async fn as_batch_line<F: std::future::Future>(f: F) -> F::Output {
    IN_BATCH.scope((), f).await
}
