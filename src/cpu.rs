//! `CpuInfo`: which CPU this is and which of its instruction sets weir's kernels use, read at
//! run time (CPUID on x86-64), for start-up logs, `weir bench` and `/admin/models`.
//!
//! The default build targets x86-64-v3 (AVX2 + FMA), so `is_x86_feature_detected!` folds those
//! two to `true` at compile time; `require_build_features` therefore asks CPUID itself.

use serde::Serialize;

/// The CPU model and the flags that decide weir's speed on it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CpuInfo {
    /// `/proc/cpuinfo`'s "model name" (or the architecture where there is none).
    pub model: String,
    pub logical_cpus: usize,
    pub avx2: bool,
    pub fma: bool,
    pub avx512f: bool,
    pub avx512_vnni: bool,
    pub avx512_bf16: bool,
    pub amx: bool,
    pub neon: bool,
}

impl CpuInfo {
    /// This machine's, read once per process.
    pub fn get() -> &'static Self {
        static CPU: std::sync::OnceLock<CpuInfo> = std::sync::OnceLock::new();
        CPU.get_or_init(Self::detect)
    }

    fn detect() -> Self {
        let model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        let logical_cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        #[cfg(target_arch = "x86_64")]
        {
            Self {
                model,
                logical_cpus,
                avx2: std::arch::is_x86_feature_detected!("avx2"),
                fma: std::arch::is_x86_feature_detected!("fma"),
                avx512f: std::arch::is_x86_feature_detected!("avx512f"),
                avx512_vnni: std::arch::is_x86_feature_detected!("avx512vnni"),
                avx512_bf16: std::arch::is_x86_feature_detected!("avx512bf16"),
                // CPUID leaf 7: EDX bit 24 AMX-TILE (its detection macro is unstable)
                #[allow(unused_unsafe)]
                amx: unsafe { std::arch::x86_64::__cpuid_count(7, 0).edx } & (1 << 24) != 0,
                neon: false,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            Self {
                model,
                logical_cpus,
                avx2: false,
                fma: false,
                avx512f: false,
                avx512_vnni: false,
                avx512_bf16: false,
                amx: false,
                neon: cfg!(target_arch = "aarch64"),
            }
        }
    }

    /// The flags this CPU has, as /proc/cpuinfo spells them ("avx2 fma avx512f ...").
    pub fn flags(&self) -> String {
        let named = [
            (self.avx2, "avx2"),
            (self.fma, "fma"),
            (self.avx512f, "avx512f"),
            (self.avx512_vnni, "avx512_vnni"),
            (self.avx512_bf16, "avx512_bf16"),
            (self.amx, "amx"),
            (self.neon, "neon"),
        ];
        let on: Vec<&str> = named.iter().filter(|(b, _)| *b).map(|(_, n)| *n).collect();
        if on.is_empty() {
            "none of avx2, fma, avx512*, amx, neon".into()
        } else {
            on.join(" ")
        }
    }

    /// Which of weir's CPU kernels run here (the rule of `models::qgemm::Isa::best`, which
    /// also picks the attention's code path).
    pub fn kernels(&self) -> &'static str {
        #[cfg(target_arch = "x86_64")]
        let avx512bw = std::arch::is_x86_feature_detected!("avx512bw");
        #[cfg(not(target_arch = "x86_64"))]
        let avx512bw = false;
        if self.avx512f && avx512bw && self.avx512_vnni {
            "AVX-512 VNNI quantized GEMM and AVX-512 attention"
        } else if self.avx2 && self.fma {
            "AVX2 quantized GEMM, attention as compiled for the build target"
        } else {
            "portable quantized GEMM and attention"
        }
    }
}

/// Stops with one line when the CPU lacks what the binary was compiled for (x86-64-v3: AVX2
/// and FMA), instead of dying later of an illegal instruction.
pub fn require_build_features() -> Result<(), String> {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
    {
        // CPUID leaf 1: ECX bit 12 FMA; leaf 7 (subleaf 0): EBX bit 5 AVX2.
        #[allow(unused_unsafe)]
        let (l1, l7) = unsafe {
            (
                std::arch::x86_64::__cpuid(1),
                std::arch::x86_64::__cpuid_count(7, 0),
            )
        };
        let (fma, avx2) = (l1.ecx & (1 << 12) != 0, l7.ebx & (1 << 5) != 0);
        if !(fma && avx2) {
            return Err(format!(
                "this weir binary was built for x86-64-v3 (AVX2 + FMA) and this CPU ({}) lacks {}; build one for it with RUSTFLAGS=\"-C target-cpu=native\" cargo build --release",
                CpuInfo::get().model,
                if avx2 { "FMA" } else { "AVX2" }
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_running_the_tests_meets_the_build_and_names_itself() {
        require_build_features().unwrap();
        let c = CpuInfo::get();
        assert!(!c.model.is_empty() && c.logical_cpus >= 1);
        #[cfg(target_arch = "x86_64")]
        assert!(c.avx2 && c.fma, "the default build needs AVX2 + FMA");
        assert!(!c.kernels().is_empty() && !c.flags().is_empty());
    }
}
