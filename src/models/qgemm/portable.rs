//! The portable micro-kernels: plain Rust, the reference every SIMD path must equal bit for
//! bit. Each output `(row, feature)` sums its blocks in input order: the integer dot product of
//! a block is exact, then one `mul_add` per block (and one more for Q4_1's min), the same
//! operations the SIMD kernels do per lane.

use super::activations::{QuantRows, QK};
use super::pack::{QuantKind, PANEL};
use half::f16;

/// Feature `c`'s unsigned quant for input `j` (0..32) of one panel block.
#[inline(always)]
fn quant(kind: QuantKind, blk: &[u8], c: usize, j: usize) -> i32 {
    if kind.nibbles() {
        let (i, jj) = (j / 8, j % 8);
        let byte = blk[64 * i + 4 * c + jj % 4];
        i32::from(if jj < 4 { byte & 0x0F } else { byte >> 4 })
    } else {
        i32::from(blk[64 * (j / 4) + 4 * c + j % 4])
    }
}

#[inline(always)]
fn f32_at(blk: &[u8], off: usize) -> f32 {
    f32::from_le_bytes(blk[off..off + 4].try_into().expect("4 bytes"))
}

#[inline(always)]
fn f16_at(blk: &[u8], off: usize) -> f32 {
    f16::from_le_bytes([blk[off], blk[off + 1]]).to_f32()
}

/// Rows `r0..r0 + out.len() / 16` of `x` against one quantized panel; `out` is [rows][16].
pub fn quant_tile(kind: QuantKind, panel: &[u8], x: &QuantRows, r0: usize, out: &mut [f32]) {
    let nb = x.num_blocks();
    let pbb = kind.panel_block_bytes();
    let qs = kind.qs_bytes();
    for (t, acc) in out.chunks_exact_mut(PANEL).enumerate() {
        let r = r0 + t;
        let xr = x.row(r);
        acc.fill(0.0);
        for b in 0..nb {
            let blk = &panel[b * pbb..(b + 1) * pbb];
            let xb = &xr[b * QK..(b + 1) * QK];
            let (dx, sx, ds) = (x.d[r * nb + b], x.s[r * nb + b], x.ds[r * nb + b]);
            let s16 = x.s16[r * nb + b];
            for (c, a) in acc.iter_mut().enumerate() {
                let dot = |js: std::ops::Range<usize>| -> i32 {
                    js.map(|j| quant(kind, blk, c, j) * i32::from(xb[j])).sum()
                };
                let sc = &blk[qs..];
                match kind {
                    QuantKind::Q6K => {
                        let lo = dot(0..16) - 32 * s16;
                        let hi = dot(16..32) - 32 * (sx - s16);
                        let isum =
                            lo * i32::from(sc[32 + c] as i8) + hi * i32::from(sc[48 + c] as i8);
                        *a = (isum as f32).mul_add(f16_at(sc, 2 * c) * dx, *a);
                    }
                    QuantKind::Q4K => {
                        let isum = dot(0..QK);
                        *a = (isum as f32).mul_add(f32_at(sc, 4 * c) * dx, *a);
                        *a = f32_at(sc, 64 + 4 * c).mul_add(ds, *a);
                    }
                    _ => {
                        let isum = dot(0..QK) - kind.zero_point() * sx;
                        *a = (isum as f32).mul_add(f16_at(sc, 2 * c) * dx, *a);
                        if kind == QuantKind::Q4_1 {
                            *a = f16_at(sc, 32 + 2 * c).mul_add(ds, *a);
                        }
                    }
                }
            }
        }
    }
}

/// Rows `r0..` of `x` ([rows, in_dim] f32) against one f32 panel [in_dim][16]; `out` is [rows][16].
pub fn f32_tile(panel: &[f32], x: &[f32], in_dim: usize, r0: usize, out: &mut [f32]) {
    for (t, acc) in out.chunks_exact_mut(PANEL).enumerate() {
        let xr = &x[(r0 + t) * in_dim..(r0 + t + 1) * in_dim];
        acc.fill(0.0);
        for (k, &xk) in xr.iter().enumerate() {
            let w = &panel[k * PANEL..(k + 1) * PANEL];
            for (a, &wc) in acc.iter_mut().zip(w) {
                *a = wc.mul_add(xk, *a);
            }
        }
    }
}
