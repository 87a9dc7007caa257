//! Processes a test starts on loopback (weir's own binary, vllm-router): killed when dropped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process, killed and reaped on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// Starts `program` with `args`, its output discarded.
    pub fn spawn(program: impl AsRef<std::ffi::OsStr>, args: &[String]) -> Self {
        let program = program.as_ref();
        Proc(
            Command::new(program)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("starting {program:?}: {e}")),
        )
    }
}

/// Waits until `GET {url}/ready` answers 200 (at most a minute).
pub async fn wait_ready(url: &str) {
    let started = Instant::now();
    loop {
        if let Ok(r) = reqwest::get(format!("{url}/ready")).await {
            if r.status() == 200 {
                return;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{url} not ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
