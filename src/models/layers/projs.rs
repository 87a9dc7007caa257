//! `Projs`: several projections of one input (q/k/v, gate/up). Dense weights (the GPU, bf16/f16
//! on the CPU) are merged into one weight at load, so one GEMM computes them all; weights in
//! weir's CPU panels or GGML blocks stay apart (their kernels share one pass over the input
//! anyway).

use crate::models::linear::Linear;
use candle_core::{Device, Result};

#[derive(Clone)]
pub enum Projs<const N: usize> {
    Split([Linear; N]),
    Merged(Linear),
}

impl<const N: usize> Projs<N> {
    pub fn new(parts: [Linear; N]) -> Result<Self> {
        Ok(match Linear::concat(&parts.each_ref())? {
            Some(merged) => Self::Merged(merged),
            None => Self::Split(parts),
        })
    }

    pub fn is_merged(&self) -> bool {
        matches!(self, Self::Merged(_))
    }

    pub fn to_device(&self, device: &Device) -> Result<Self> {
        Ok(match self {
            Self::Split(ls) => Self::Split(
                ls.iter()
                    .map(|l| l.to_device(device))
                    .collect::<Result<Vec<_>>>()?
                    .try_into()
                    .unwrap_or_else(|_| unreachable!("N projections in, N out")),
            ),
            Self::Merged(l) => Self::Merged(l.to_device(device)?),
        })
    }

    pub fn bytes(&self) -> u64 {
        match self {
            Self::Split(ls) => ls.iter().map(Linear::bytes).sum(),
            Self::Merged(l) => l.bytes(),
        }
    }
}
