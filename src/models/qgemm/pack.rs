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
//! Q4_K sub-block (32 of a 256-weight super-block): qs as Q4; d·scale: 16 × f32;
//!   −dmin·min: 16 × f32 (both exact in f32: f16 × 6-bit integer)                  384 bytes
//! Q6_K sub-block: qs: 8 × 64 bytes of 6-bit quants (0..63); d: 16 × f16;
//!   scale of inputs 0..16: 16 × i8; scale of inputs 16..32: 16 × i8               576 bytes
//! ```
//! Quants stay unsigned (Q4: 0..15, Q6: 0..63, Q8: q + 128) so every type uses the same u8 × i8
//! product; the offsets (8 for Q4_0, 32 for Q6_K, 128 for Q8_0) come back out exactly through
//! the activation block's Σq. Q4_0/Q4_1/Q8_0 keep the GGML blocks' bytes (Q4_1: 20 bytes per 32
//! weights); K-quants unpack their super-block scales (Q4_K: 6 bits per weight instead of 4.5,
//! Q6_K: 9 instead of 6.56). Features past `out_dim` are zero padding.

use super::activations::QK;
use half::f16;

/// Features per panel.
pub const PANEL: usize = 16;

/// The GGML types weir's integer kernels read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum QuantKind {
    Q4_0,
    Q4_1,
    Q8_0,
    Q4K,
    Q6K,
}

impl QuantKind {
    /// Bytes of one GGML block.
    pub fn ggml_block_bytes(self) -> usize {
        match self {
            QuantKind::Q4_0 => 18,
            QuantKind::Q4_1 => 20,
            QuantKind::Q8_0 => 34,
            QuantKind::Q4K => 144,
            QuantKind::Q6K => 210,
        }
    }

    /// Weights in one GGML block.
    pub fn ggml_block_len(self) -> usize {
        match self {
            QuantKind::Q4K | QuantKind::Q6K => 256,
            _ => QK,
        }
    }

    /// Bytes of quants per panel block.
    pub const fn qs_bytes(self) -> usize {
        match self {
            QuantKind::Q4_0 | QuantKind::Q4_1 | QuantKind::Q4K => 256,
            QuantKind::Q8_0 | QuantKind::Q6K => 512,
        }
    }

    /// Bytes of one panel block (16 features × 32 inputs).
    pub const fn panel_block_bytes(self) -> usize {
        match self {
            QuantKind::Q4_0 => 256 + 32,
            QuantKind::Q4_1 => 256 + 64,
            QuantKind::Q8_0 => 512 + 32,
            QuantKind::Q4K => 256 + 128,
            QuantKind::Q6K => 512 + 64,
        }
    }

    /// What the kernel subtracts, times the activation block's Σq, from the integer sum.
    pub const fn zero_point(self) -> i32 {
        match self {
            QuantKind::Q4_0 => 8,
            QuantKind::Q4_1 | QuantKind::Q4K => 0,
            QuantKind::Q8_0 => 128,
            QuantKind::Q6K => 32,
        }
    }

    /// Whether the quants are nibbles (two per byte) rather than bytes.
    pub const fn nibbles(self) -> bool {
        matches!(self, QuantKind::Q4_0 | QuantKind::Q4_1 | QuantKind::Q4K)
    }
}

/// Per-feature scales of one sub-block of 32 inputs, as the panel stores them.
#[derive(Clone, Copy)]
enum Scales {
    /// Q4_0 / Q8_0: d; Q4_1: d and m (f16).
    Half(f16, f16),
    /// Q4_K: d·scale and −dmin·min (f32, exact).
    Full(f32, f32),
    /// Q6_K: d and the two 16-input scales.
    Q6(f16, i8, i8),
}

/// One sub-block: its scales and 32 unsigned quants in input order.
struct SubBlock {
    scales: Scales,
    q: [u8; QK],
}

/// The sub-blocks of one GGML block (1 for Q4_0/Q4_1/Q8_0, 8 for K-quants), in input order.
fn decode_block(kind: QuantKind, blk: &[u8]) -> Vec<SubBlock> {
    let f16_at = |o: usize| f16::from_le_bytes([blk[o], blk[o + 1]]);
    let mut q = [0u8; QK];
    match kind {
        QuantKind::Q8_0 => {
            for (qi, &b) in q.iter_mut().zip(&blk[2..34]) {
                *qi = (b as i8 as i16 + 128) as u8;
            }
            vec![SubBlock {
                scales: Scales::Half(f16_at(0), f16::ZERO),
                q,
            }]
        }
        QuantKind::Q4_0 | QuantKind::Q4_1 => {
            let (m, nibbles) = match kind {
                QuantKind::Q4_1 => (f16_at(2), &blk[4..20]),
                _ => (f16::ZERO, &blk[2..18]),
            };
            for j in 0..16 {
                q[j] = nibbles[j] & 0x0F;
                q[j + 16] = nibbles[j] >> 4;
            }
            vec![SubBlock {
                scales: Scales::Half(f16_at(0), m),
                q,
            }]
        }
        QuantKind::Q4K => decode_q4k(blk),
        QuantKind::Q6K => decode_q6k(blk),
    }
}

/// GGML's 6-bit scale and min of sub-block `j` of a Q4_K super-block.
fn q4k_scale_min(j: usize, sc: &[u8]) -> (u8, u8) {
    if j < 4 {
        (sc[j] & 63, sc[j + 4] & 63)
    } else {
        (
            (sc[j + 4] & 0x0F) | ((sc[j - 4] >> 6) << 4),
            (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4),
        )
    }
}

/// Q4_K: d: f16 | dmin: f16 | scales: [u8; 12] | qs: [u8; 128]; sub-block 2i holds the low
/// nibbles of qs[32i..32i + 32], sub-block 2i + 1 their high nibbles;
/// weight = d·scale·q − dmin·min.
fn decode_q4k(blk: &[u8]) -> Vec<SubBlock> {
    let d = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
    let dmin = f16::from_le_bytes([blk[2], blk[3]]).to_f32();
    let (sc, qs) = (&blk[4..16], &blk[16..144]);
    (0..8)
        .map(|j| {
            let (scale, min) = q4k_scale_min(j, sc);
            let bytes = &qs[32 * (j / 2)..32 * (j / 2) + 32];
            let mut q = [0u8; QK];
            for (qi, &b) in q.iter_mut().zip(bytes) {
                *qi = if j % 2 == 0 { b & 0x0F } else { b >> 4 };
            }
            SubBlock {
                scales: Scales::Full(d * f32::from(scale), -(dmin * f32::from(min))),
                q,
            }
        })
        .collect()
}

/// Q6_K: ql: [u8; 128] | qh: [u8; 64] | scales: [i8; 16] | d: f16. Weight i (0..256) of half
/// n = i / 128, part p = (i % 128) / 32, lane l = i % 32: low 4 bits from ql[64n + l + 32(p % 2)]
/// (high nibble when p >= 2), high 2 bits from qh[32n + l] >> 2p; weight = d·scales[i / 16]·(q − 32).
fn decode_q6k(blk: &[u8]) -> Vec<SubBlock> {
    let (ql, qh, sc) = (&blk[0..128], &blk[128..192], &blk[192..208]);
    let d = f16::from_le_bytes([blk[208], blk[209]]);
    (0..8)
        .map(|b| {
            let mut q = [0u8; QK];
            for (j, qi) in q.iter_mut().enumerate() {
                let i = 32 * b + j;
                let (n, p, l) = (i / 128, (i % 128) / 32, i % 32);
                let lo = ql[64 * n + l + 32 * (p % 2)];
                let lo = if p >= 2 { lo >> 4 } else { lo & 0x0F };
                let hi = (qh[32 * n + l] >> (2 * p)) & 3;
                *qi = lo | (hi << 4);
            }
            SubBlock {
                scales: Scales::Q6(d, sc[2 * b] as i8, sc[2 * b + 1] as i8),
                q,
            }
        })
        .collect()
}

/// Repacks `out_dim` GGML rows of `in_dim` weights each into `⌈out_dim / 16⌉` panels.
pub fn pack(kind: QuantKind, blocks: &[u8], out_dim: usize, in_dim: usize) -> Vec<u8> {
    let (gb, gl) = (kind.ggml_block_bytes(), kind.ggml_block_len());
    let ngb = in_dim / gl;
    assert_eq!(
        blocks.len(),
        out_dim * ngb * gb,
        "GGML data size. This is a bug."
    );
    let nb = in_dim / QK;
    let num_panels = out_dim.div_ceil(PANEL);
    let pbb = kind.panel_block_bytes();
    let qs = kind.qs_bytes();
    let mut out = vec![0u8; num_panels * nb * pbb];
    for o in 0..out_dim {
        let (p, c) = (o / PANEL, o % PANEL);
        for g in 0..ngb {
            let subs = decode_block(kind, &blocks[(o * ngb + g) * gb..][..gb]);
            for (i, sub) in subs.iter().enumerate() {
                let b = g * gl / QK + i;
                let dst = &mut out[(p * nb + b) * pbb..][..pbb];
                place_quants(kind, &sub.q, c, dst);
                let sc = &mut dst[qs..];
                match sub.scales {
                    Scales::Half(d, m) => {
                        sc[2 * c..2 * c + 2].copy_from_slice(&d.to_le_bytes());
                        if kind == QuantKind::Q4_1 {
                            sc[32 + 2 * c..32 + 2 * c + 2].copy_from_slice(&m.to_le_bytes());
                        }
                    }
                    Scales::Full(d, m) => {
                        sc[4 * c..4 * c + 4].copy_from_slice(&d.to_le_bytes());
                        sc[64 + 4 * c..64 + 4 * c + 4].copy_from_slice(&m.to_le_bytes());
                    }
                    Scales::Q6(d, a, b) => {
                        sc[2 * c..2 * c + 2].copy_from_slice(&d.to_le_bytes());
                        sc[32 + c] = a as u8;
                        sc[48 + c] = b as u8;
                    }
                }
            }
        }
    }
    out
}

fn place_quants(kind: QuantKind, q: &[u8; QK], c: usize, dst: &mut [u8]) {
    if kind.nibbles() {
        for i in 0..4 {
            for j in 0..4 {
                dst[64 * i + 4 * c + j] = q[8 * i + j] | (q[8 * i + 4 + j] << 4);
            }
        }
    } else {
        for g in 0..8 {
            dst[64 * g + 4 * c..][..4].copy_from_slice(&q[4 * g..4 * g + 4]);
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
