//! Repacking of GGML weight blocks into column panels, the layout the micro-kernels read.
//!
//! A panel is 16 output features (columns of `y`). For each block `b` of 32 inputs it stores the
//! 16 features' quants interleaved so that one 64-byte load holds 4 consecutive inputs of all
//! 16 features: byte `4c + j` of group `g` is feature `c`'s input `4g + j` of the block. An
//! integer dot-product instruction (`vpdpbusd`) then multiplies them by 4 broadcast activation
//! bytes and leaves 16 per-feature sums in 16 lanes: no horizontal reduction anywhere.
//!
//! ```text
//! Q4_0 / Q4_1 block (16 features × 32 inputs):
//!   qs: 4 × 64 bytes; low nibbles = group 2i, high nibbles = group 2i+1      256 bytes
//!   d:  16 × f16                                                              32 bytes
//!   m:  16 × f16 (Q4_1 only)                                                  32 bytes
//! Q8_0 block: qs: 8 × 64 bytes, each quant stored as u8 (q + 128); d: 16 × f16     544 bytes
//! ```
//! Quants stay unsigned (Q4: 0..15, Q8: q + 128) so every type uses the same u8 × i8 product; the
//! offsets (8 for Q4_0, 128 for Q8_0) come back out exactly through the activation block's Σq.
//! Same bytes as the GGML blocks (Q4_1: 20 bytes per 32 weights); features past `out_dim` are
//! zero padding.

use super::activations::QK;
use half::f16;

/// Features per panel.
pub const PANEL: usize = 16;

/// The GGML types weir's integer kernels read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantKind {
    Q4_0,
    Q4_1,
    Q8_0,
}

impl QuantKind {
    /// Bytes of one GGML block of 32 weights.
    pub fn ggml_block_bytes(self) -> usize {
        match self {
            QuantKind::Q4_0 => 18,
            QuantKind::Q4_1 => 20,
            QuantKind::Q8_0 => 34,
        }
    }

    /// Bytes of quants per panel block.
    pub const fn qs_bytes(self) -> usize {
        match self {
            QuantKind::Q4_0 | QuantKind::Q4_1 => 256,
            QuantKind::Q8_0 => 512,
        }
    }

    /// Bytes of one panel block (16 features × 32 inputs).
    pub const fn panel_block_bytes(self) -> usize {
        match self {
            QuantKind::Q4_0 => 256 + 32,
            QuantKind::Q4_1 => 256 + 64,
            QuantKind::Q8_0 => 512 + 32,
        }
    }

    /// What the kernel subtracts, times the activation block's Σq, from the integer sum.
    pub const fn zero_point(self) -> i32 {
        match self {
            QuantKind::Q4_0 => 8,
            QuantKind::Q4_1 => 0,
            QuantKind::Q8_0 => 128,
        }
    }
}

/// One GGML block decoded: scale, min (Q4_1) and 32 unsigned quants in input order.
fn decode_block(kind: QuantKind, blk: &[u8]) -> (f16, f16, [u8; QK]) {
    let d = f16::from_le_bytes([blk[0], blk[1]]);
    let mut q = [0u8; QK];
    let (m, nibbles) = match kind {
        QuantKind::Q4_0 => (f16::ZERO, &blk[2..18]),
        QuantKind::Q4_1 => (f16::from_le_bytes([blk[2], blk[3]]), &blk[4..20]),
        QuantKind::Q8_0 => {
            for (qi, &b) in q.iter_mut().zip(&blk[2..34]) {
                *qi = (b as i8 as i16 + 128) as u8;
            }
            return (d, f16::ZERO, q);
        }
    };
    for j in 0..16 {
        q[j] = nibbles[j] & 0x0F;
        q[j + 16] = nibbles[j] >> 4;
    }
    (d, m, q)
}

/// Repacks `out_dim` GGML rows of `in_dim / 32` blocks each into `⌈out_dim / 16⌉` panels.
pub fn pack(kind: QuantKind, blocks: &[u8], out_dim: usize, in_dim: usize) -> Vec<u8> {
    let nb = in_dim / QK;
    let gb = kind.ggml_block_bytes();
    assert_eq!(
        blocks.len(),
        out_dim * nb * gb,
        "GGML data size. This is a bug."
    );
    let num_panels = out_dim.div_ceil(PANEL);
    let pbb = kind.panel_block_bytes();
    let mut out = vec![0u8; num_panels * nb * pbb];
    for o in 0..out_dim {
        let (p, c) = (o / PANEL, o % PANEL);
        for b in 0..nb {
            let (d, m, q) = decode_block(kind, &blocks[(o * nb + b) * gb..][..gb]);
            let dst = &mut out[(p * nb + b) * pbb..][..pbb];
            place_quants(kind, &q, c, dst);
            let qs = kind.qs_bytes();
            dst[qs + 2 * c..qs + 2 * c + 2].copy_from_slice(&d.to_le_bytes());
            if kind == QuantKind::Q4_1 {
                dst[qs + 32 + 2 * c..qs + 32 + 2 * c + 2].copy_from_slice(&m.to_le_bytes());
            }
        }
    }
    out
}

fn place_quants(kind: QuantKind, q: &[u8; QK], c: usize, dst: &mut [u8]) {
    match kind {
        QuantKind::Q8_0 => {
            for g in 0..8 {
                dst[64 * g + 4 * c..][..4].copy_from_slice(&q[4 * g..4 * g + 4]);
            }
        }
        QuantKind::Q4_0 | QuantKind::Q4_1 => {
            for i in 0..4 {
                for j in 0..4 {
                    dst[64 * i + 4 * c + j] = q[8 * i + j] | (q[8 * i + 4 + j] << 4);
                }
            }
        }
    }
}

/// Dense f32 weights [out_dim, in_dim] as panels [num_panels][in_dim][16].
pub fn pack_f32(w: &[f32], out_dim: usize, in_dim: usize) -> Vec<f32> {
    assert_eq!(w.len(), out_dim * in_dim, "weight size. This is a bug.");
    let num_panels = out_dim.div_ceil(PANEL);
    let mut out = vec![0f32; num_panels * in_dim * PANEL];
    for o in 0..out_dim {
        let (p, c) = (o / PANEL, o % PANEL);
        for k in 0..in_dim {
            out[(p * in_dim + k) * PANEL + c] = w[o * in_dim + k];
        }
    }
    out
}
