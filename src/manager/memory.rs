//! Memory the manager measures: the device's used bytes (the GPU's on CUDA, else this process's
//! RSS), and giving freed heap pages back to the system.

use super::{loader, ModelManager};

impl ModelManager {
    /// Memory in use on the device models load on: the GPU's used bytes on CUDA, else this
    /// process's RSS.
    pub(super) fn used_bytes(&self) -> u64 {
        let device =
            self.inner
                .device
                .get_or_init(|| match self.inner.limits.engine.device.open() {
                    Ok(d) if !d.is_cpu() => Some(d),
                    _ => None,
                });
        match device.as_ref().map(loader::gpu_memory_info) {
            Some(Ok(Some((free, total)))) => total - free,
            _ => rss_bytes(),
        }
    }
}

/// Resident set size of this process (Linux; 0 elsewhere).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Gives freed heap pages back to the system (glibc keeps them otherwise).
pub(super) fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}
