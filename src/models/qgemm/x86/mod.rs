//! x86-64 micro-kernels: AVX-512 VNNI (`vpdpbusd`, 16 features per register) and AVX2
//! (`vpmaddubsw` + `vpmaddwd`, 8 features per register, two halves per panel).
//!
//! Every lane is one `(row, feature)` pair and performs exactly the portable kernel's
//! operations in the same order: an exact integer block sum, the zero-point correction, one
//! convert, `fma(isum, d_w · d_x, acc)` and (Q4_1, Q4_K) `fma(m_w, d_x · Σq, acc)`. So every path gives the
//! same bits as `portable`, whatever the tile height.

#![allow(clippy::needless_range_loop)] // tile loops index several per-row register arrays

use super::activations::{QuantRows, QK};
use super::pack::{QuantKind, PANEL};
use std::arch::x86_64::*;

/// Pointers to rows `r0..` of the quantized activations.
struct RowPtrs {
    qs: *const i8,
    d: *const f32,
    s: *const i32,
    s16: *const i32,
    ds: *const f32,
    in_dim: usize,
    nb: usize,
}

impl RowPtrs {
    fn new(x: &QuantRows, r0: usize) -> Self {
        let nb = x.num_blocks();
        Self {
            qs: x.qs[r0 * x.in_dim..].as_ptr(),
            d: x.d[r0 * nb..].as_ptr(),
            s: x.s[r0 * nb..].as_ptr(),
            s16: x.s16[r0 * nb..].as_ptr(),
            ds: x.ds[r0 * nb..].as_ptr(),
            in_dim: x.in_dim,
            nb,
        }
    }

    /// 4 quantized inputs of row `t` starting at input `k`, as one i32.
    #[inline(always)]
    unsafe fn quad(&self, t: usize, k: usize) -> i32 {
        std::ptr::read_unaligned(self.qs.add(t * self.in_dim + k) as *const i32)
    }

    #[inline(always)]
    unsafe fn block(&self, t: usize, b: usize) -> (f32, i32, f32) {
        let i = t * self.nb + b;
        (*self.d.add(i), *self.s.add(i), *self.ds.add(i))
    }

    /// Zero-point corrections of Q6_K's two 16-input halves of block `b`.
    #[inline(always)]
    unsafe fn q6_halves(&self, t: usize, b: usize) -> (i32, i32) {
        let i = t * self.nb + b;
        let (s, s16) = (*self.s.add(i), *self.s16.add(i));
        (32 * s16, 32 * (s - s16))
    }
}

/// Kinds as const-generic tags (`QuantKind` is `repr(u8)`), so each kernel is compiled per
/// weight type.
const Q4_0: u8 = QuantKind::Q4_0 as u8;
const Q4_1: u8 = QuantKind::Q4_1 as u8;
const Q8_0: u8 = QuantKind::Q8_0 as u8;
const Q4K: u8 = QuantKind::Q4K as u8;
const Q6K: u8 = QuantKind::Q6K as u8;

fn kind_of(k: u8) -> QuantKind {
    match k {
        Q4_0 => QuantKind::Q4_0,
        Q4_1 => QuantKind::Q4_1,
        Q8_0 => QuantKind::Q8_0,
        Q4K => QuantKind::Q4K,
        _ => QuantKind::Q6K,
    }
}

/// Calls `$f::<R, K>(args)` for the runtime row count and kind.
macro_rules! dispatch {
    ($f:ident, $rows:expr, $kind:expr, [$($r:literal),*], $($arg:expr),*) => {{
        let k = $kind as u8;
        macro_rules! by_kind {
            ($rr:literal) => {
                match k {
                    Q4_0 => $f::<$rr, Q4_0>($($arg),*),
                    Q4_1 => $f::<$rr, Q4_1>($($arg),*),
                    Q8_0 => $f::<$rr, Q8_0>($($arg),*),
                    Q4K => $f::<$rr, Q4K>($($arg),*),
                    _ => $f::<$rr, Q6K>($($arg),*),
                }
            };
        }
        match $rows {
            $($r => by_kind!($r),)*
            _ => by_kind!(1),
        }
    }};
}

pub mod avx2;
pub mod avx512;
