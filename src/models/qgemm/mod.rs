//! `PackedWeight`: weir's batch-invariant CPU matmul `y = x Wᵀ`.
//!
//! Quantized weights (GGML Q4_0, Q4_1, Q8_0, Q4_K, Q6_K) are repacked at load into 16-feature
//! panels (`pack`); each call quantizes every activation row once to Q8 blocks (`activations`)
//! and multiplies with integer dot products (AVX-512 VNNI, AVX2 or portable Rust), reading each
//! weight block once per tile of rows. Dense f32 weights use the same panels in f32.
//!
//! **Batch invariance.** Every output `(row, feature)` is computed by one lane of one tile,
//! which sums that row's blocks in input order with the same operations whatever the tile
//! height, the number of rows in the call or the thread that runs it; work is split between
//! threads (`models::pool`) by output panels, never along the reduction. So a row's result is
//! bit-identical alone, in any batch and at any position in it. All SIMD paths also equal the portable one
//! bit for bit (the integer block sums are exact), so the result depends only on the inputs.

pub mod activations;
pub mod pack;
mod portable;
#[cfg(target_arch = "x86_64")]
mod x86;

use super::pool::ComputePool;
use activations::QuantRows;
pub use pack::QuantKind;
use pack::PANEL;
use parking_lot::Mutex;
use std::sync::OnceLock;

/// The instruction set a kernel runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512 F/BW/VNNI (`vpdpbusd`).
    Avx512Vnni,
    /// AVX2 + FMA + F16C.
    Avx2,
    Portable,
}

impl Isa {
    /// The fastest path this CPU supports (detected once).
    pub fn best() -> Self {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| Self::available()[0])
    }

    /// Every path this CPU can run, fastest first (detected once).
    pub fn available() -> &'static [Self] {
        static AVAILABLE: OnceLock<Vec<Isa>> = OnceLock::new();
        AVAILABLE.get_or_init(Self::detect)
    }

    fn detect() -> Vec<Self> {
        let mut v = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if x86::avx512::available() {
                v.push(Isa::Avx512Vnni);
            }
            if x86::avx2::available() {
                v.push(Isa::Avx2);
            }
        }
        v.push(Isa::Portable);
        v
    }

    /// Rows per micro-kernel tile (a speed choice only: results do not depend on it).
    fn tile(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => x86::avx512::TILE,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => x86::avx2::TILE,
            _ => 8,
        }
    }
}

#[derive(Debug, Clone)]
enum Panels {
    Quant(QuantKind, Vec<u8>),
    F32(Vec<f32>),
}

/// Rows per cache block: the tile loop walks this many activation rows across a task's panels
/// before moving on (a speed choice only).
const ROW_BLOCK: usize = 64;

/// A weight `[out_dim, in_dim]` in panels, ready for `matmul`.
#[derive(Debug, Clone)]
pub struct PackedWeight {
    out_dim: usize,
    in_dim: usize,
    num_panels: usize,
    panels: Panels,
}

impl PackedWeight {
    /// From GGML blocks (row-major, `in_dim / 32` blocks per row); `in_dim % 32 == 0`.
    pub fn from_ggml(kind: QuantKind, blocks: &[u8], out_dim: usize, in_dim: usize) -> Self {
        assert!(
            in_dim.is_multiple_of(activations::QK),
            "in_dim {in_dim} is not whole blocks"
        );
        Self {
            out_dim,
            in_dim,
            num_panels: out_dim.div_ceil(PANEL),
            panels: Panels::Quant(kind, pack::pack(kind, blocks, out_dim, in_dim)),
        }
    }

    /// From dense f32 weights [out_dim, in_dim], row-major.
    pub fn from_f32(w: &[f32], out_dim: usize, in_dim: usize) -> Self {
        Self {
            out_dim,
            in_dim,
            num_panels: out_dim.div_ceil(PANEL),
            panels: Panels::F32(pack::pack_f32(w, out_dim, in_dim)),
        }
    }

    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// y = x Wᵀ for x: [rows, in_dim] (row-major) → [rows, out_dim], on the fastest path.
    pub fn matmul(&self, x: &[f32], rows: usize) -> Vec<f32> {
        self.matmul_on(Isa::best(), x, rows)
    }

    /// `matmul` on a given path (tests compare paths; `isa` must be in `Isa::available()`).
    pub fn matmul_on(&self, isa: Isa, x: &[f32], rows: usize) -> Vec<f32> {
        matmul_many_on(isa, &[self], x, rows)
            .pop()
            .expect("one output per weight")
    }

    /// Columns of the panel-major result `yp` ([num_panels][rows][16]) into [rows][out_dim].
    fn unpanel(&self, yp: &[f32], rows: usize) -> Vec<f32> {
        let mut y = vec![0f32; rows * self.out_dim];
        for (p, panel_out) in yp.chunks_exact(rows * PANEL).enumerate() {
            let cols = PANEL.min(self.out_dim - p * PANEL);
            for (r, row) in panel_out.chunks_exact(PANEL).enumerate() {
                y[r * self.out_dim + p * PANEL..][..cols].copy_from_slice(&row[..cols]);
            }
        }
        y
    }

    /// Panels `p0..` (as many as `out` holds) for every row, in row blocks of `ROW_BLOCK`.
    fn run_panels(
        &self,
        isa: Isa,
        x: &[f32],
        xq: Option<&QuantRows>,
        rows: usize,
        p0: usize,
        out: &mut [f32],
    ) {
        let tile = isa.tile();
        for rb in (0..rows).step_by(ROW_BLOCK) {
            let rb_end = rows.min(rb + ROW_BLOCK);
            for (i, panel_out) in out.chunks_exact_mut(rows * PANEL).enumerate() {
                let p = p0 + i;
                for r0 in (rb..rb_end).step_by(tile) {
                    let rt = tile.min(rb_end - r0);
                    let o = &mut panel_out[r0 * PANEL..(r0 + rt) * PANEL];
                    match (&self.panels, xq) {
                        (Panels::Quant(kind, v), Some(xq)) => {
                            let pb = self.in_dim / activations::QK * kind.panel_block_bytes();
                            quant_tile(isa, *kind, &v[p * pb..(p + 1) * pb], xq, r0, o);
                        }
                        (Panels::F32(v), _) => {
                            let pb = self.in_dim * PANEL;
                            f32_tile(isa, &v[p * pb..(p + 1) * pb], x, self.in_dim, r0, o);
                        }
                        _ => unreachable!("quantized panels come with quantized rows"),
                    }
                }
            }
        }
    }
}

/// `y_i = x W_iᵀ` for several weights of the same `in_dim` (q/k/v, gate/up): the rows are
/// quantized once and all weights' panels share one parallel pass. Each output is what
/// `matmul` of that weight alone gives, bit for bit.
pub fn matmul_many(weights: &[&PackedWeight], x: &[f32], rows: usize) -> Vec<Vec<f32>> {
    matmul_many_on(Isa::best(), weights, x, rows)
}

/// `matmul_many` on a given path.
pub fn matmul_many_on(
    isa: Isa,
    weights: &[&PackedWeight],
    x: &[f32],
    rows: usize,
) -> Vec<Vec<f32>> {
    assert!(
        Isa::available().contains(&isa),
        "{isa:?} is not supported by this CPU"
    );
    let in_dim = weights.first().map_or(0, |w| w.in_dim);
    assert!(
        weights.iter().all(|w| w.in_dim == in_dim) && x.len() == rows * in_dim,
        "activation shape. This is a bug."
    );
    if rows == 0 {
        return weights.iter().map(|_| Vec::new()).collect();
    }
    let any_quant = weights
        .iter()
        .any(|w| matches!(w.panels, Panels::Quant(..)));
    let xq = any_quant.then(|| QuantRows::quantize(x, rows, in_dim));
    // per weight [num_panels][rows][16]; tasks own whole panels of one weight
    let mut yps: Vec<Vec<f32>> = weights
        .iter()
        .map(|w| vec![0f32; w.num_panels * rows * PANEL])
        .collect();
    let pool = ComputePool::global();
    let total_panels: usize = weights.iter().map(|w| w.num_panels).sum();
    let panels_per_task = total_panels.div_ceil(pool.num_threads() * 4).max(1);
    let tasks: Vec<Mutex<(&PackedWeight, usize, &mut [f32])>> = weights
        .iter()
        .zip(yps.iter_mut())
        .flat_map(|(w, yp)| {
            yp.chunks_mut(panels_per_task * rows * PANEL)
                .enumerate()
                .map(move |(i, out)| Mutex::new((*w, i * panels_per_task, out)))
        })
        .collect();
    pool.run(tasks.len(), &|i| {
        let mut task = tasks[i].lock();
        let (w, p0, out) = &mut *task;
        w.run_panels(isa, x, xq.as_ref(), rows, *p0, out);
    });
    weights
        .iter()
        .zip(&yps)
        .map(|(w, yp)| w.unpanel(yp, rows))
        .collect()
}

fn quant_tile(isa: Isa, kind: QuantKind, panel: &[u8], x: &QuantRows, r0: usize, out: &mut [f32]) {
    match isa {
        // SAFETY: `matmul_on` checked that the CPU supports `isa`; the tile is in bounds.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => unsafe { x86::avx512::quant_tile(kind, panel, x, r0, out) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::avx2::quant_tile(kind, panel, x, r0, out) },
        _ => portable::quant_tile(kind, panel, x, r0, out),
    }
}

fn f32_tile(isa: Isa, panel: &[f32], x: &[f32], in_dim: usize, r0: usize, out: &mut [f32]) {
    match isa {
        // SAFETY: `matmul_on` checked that the CPU supports `isa`; the tile is in bounds.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => unsafe { x86::avx512::f32_tile(panel, x, in_dim, r0, out) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::avx2::f32_tile(panel, x, in_dim, r0, out) },
        _ => portable::f32_tile(panel, x, in_dim, r0, out),
    }
}
