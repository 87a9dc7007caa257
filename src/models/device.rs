//! Where a model runs and in which dtype: `--device cpu|cuda|cuda:N` and
//! `--dtype auto|bf16|f16|f32`, resolved once at load into a candle `Device` and `DType`.

use candle_core::{DType, Device};

/// `--device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// `cuda:0` when built with the `cuda` feature and a GPU answers, else the CPU.
    Auto,
    Cpu,
    Cuda(usize),
}

impl std::str::FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(Self::Cuda(n)),
                _ => Err(format!("expected cpu, cuda or cuda:N, got {s:?}")),
            },
        }
    }
}

/// `--dtype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DTypeSpec {
    /// bf16 on CUDA; on CPU, f32 activations with quantized or f32 weights (today's formats).
    Auto,
    Bf16,
    F16,
    F32,
}

impl std::str::FromStr for DTypeSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            "f16" | "float16" | "half" => Ok(Self::F16),
            "f32" | "float32" | "float" => Ok(Self::F32),
            _ => Err(format!("expected auto, bf16, f16 or f32, got {s:?}")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("--device {0}: this weir binary was built without CUDA; rebuild with `--features cuda` (scripts/build-cuda.sh) or use --device cpu")]
    NoCudaSupport(String),
    #[error("--device cuda:{ordinal}: {message}")]
    Cuda { ordinal: usize, message: String },
}

impl DeviceSpec {
    /// Opens the device. `Auto` falls back to the CPU when no GPU answers.
    ///
    /// A CUDA device is opened without cudarc's event tracking: with it, every kernel launch
    /// waits on and records two events per buffer argument, and every allocation makes two
    /// events, a dozen driver calls per op for cross-stream safety weir does not need. A model's
    /// tensors are made on the thread that loads it and then used by its engine thread alone;
    /// `manager::loader::start_model` synchronizes the loading thread's stream before the engine
    /// starts, and an engine's steps end in a synchronizing copy of the sampled tokens.
    pub fn open(self) -> Result<Device, DeviceError> {
        let device = self.open_tracked()?;
        #[cfg(feature = "cuda")]
        if let Device::Cuda(d) = &device {
            // SAFETY: see above: one stream uses a tensor at a time, handed over after a
            // synchronize.
            unsafe { d.disable_event_tracking() };
        }
        Ok(device)
    }

    fn open_tracked(self) -> Result<Device, DeviceError> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(ordinal) if !candle_core::utils::cuda_is_available() => {
                Err(DeviceError::NoCudaSupport(format!("cuda:{ordinal}")))
            }
            Self::Cuda(ordinal) => Device::new_cuda(ordinal).map_err(|e| DeviceError::Cuda {
                ordinal,
                message: e.to_string(),
            }),
            Self::Auto if !candle_core::utils::cuda_is_available() => Ok(Device::Cpu),
            Self::Auto => match Device::new_cuda(0) {
                Ok(d) => Ok(d),
                Err(e) => {
                    tracing::warn!(error = %e, "no usable CUDA device; serving on the CPU");
                    Ok(Device::Cpu)
                }
            },
        }
    }
}

impl DTypeSpec {
    /// The activation dtype on `device`.
    pub fn resolve(self, device: &Device) -> DType {
        match (self, device) {
            (Self::Auto, Device::Cpu) => DType::F32,
            (Self::Auto, _) => DType::BF16,
            (Self::Bf16, _) => DType::BF16,
            (Self::F16, _) => DType::F16,
            (Self::F32, _) => DType::F32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices_and_dtypes() {
        assert_eq!("cpu".parse::<DeviceSpec>(), Ok(DeviceSpec::Cpu));
        assert_eq!("cuda".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("cuda:3".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(3)));
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
        assert!("tpu".parse::<DeviceSpec>().is_err());
        assert_eq!("bf16".parse::<DTypeSpec>(), Ok(DTypeSpec::Bf16));
        assert!("int4".parse::<DTypeSpec>().is_err());
        assert_eq!(DTypeSpec::Auto.resolve(&Device::Cpu), DType::F32);
        assert_eq!(DTypeSpec::Bf16.resolve(&Device::Cpu), DType::BF16);
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_in_a_cpu_build_is_a_clear_error() {
        let e = DeviceSpec::Cuda(0).open().unwrap_err().to_string();
        assert!(e.contains("built without CUDA"), "{e}");
        assert!(matches!(DeviceSpec::Auto.open(), Ok(Device::Cpu)));
    }
}
