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
pub mod elementwise;
pub mod pack;
mod portable;
#[cfg(target_arch = "x86_64")]
mod x86;

use super::pool::ComputePool;
use activations::QuantRows;
pub use pack::QuantKind;
use pack::PANEL;
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

    /// Bytes the panels hold.
    pub fn bytes(&self) -> u64 {
        match &self.panels {
            Panels::Quant(_, b) => b.len() as u64,
            Panels::F32(v) => (v.len() * 4) as u64,
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

    /// Rows `r0..r0 + rt` of panel `p` into `buf` ([rt][16]).
    #[allow(clippy::too_many_arguments)]
    fn tile(
        &self,
        isa: Isa,
        x: &[f32],
        xq: Option<&QuantRows>,
        r0: usize,
        rt: usize,
        p: usize,
        buf: &mut [f32],
    ) {
        let o = &mut buf[..rt * PANEL];
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

/// Largest tile height of any path.
const MAX_TILE: usize = 8;

/// Calls `f(p, r0, rt)` for every tile of panels `panels` over `rows` rows: row blocks of
/// `ROW_BLOCK` outside, panels inside, so a panel stays in cache across a row block.
fn for_tiles(
    isa: Isa,
    rows: usize,
    panels: std::ops::Range<usize>,
    mut f: impl FnMut(usize, usize, usize),
) {
    let tile = isa.tile();
    for rb in (0..rows).step_by(ROW_BLOCK) {
        let rb_end = rows.min(rb + ROW_BLOCK);
        for p in panels.clone() {
            for r0 in (rb..rb_end).step_by(tile) {
                f(p, r0, tile.min(rb_end - r0));
            }
        }
    }
}

/// A row-major `[rows, cols]` output that several tasks fill at once, each its own panels
/// (16-column stripes).
struct Columns<'a> {
    ptr: *mut f32,
    rows: usize,
    cols: usize,
    _y: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: tasks write disjoint column stripes (see `write`).
unsafe impl Sync for Columns<'_> {}

impl<'a> Columns<'a> {
    fn new(y: &'a mut [f32], rows: usize, cols: usize) -> Self {
        assert_eq!(y.len(), rows * cols);
        Self {
            ptr: y.as_mut_ptr(),
            rows,
            cols,
            _y: std::marker::PhantomData,
        }
    }

    /// Rows `r0..r0 + rt` of panel `p` from `buf` ([rt][16]).
    ///
    /// # Safety
    /// No other thread writes panel `p` during the call.
    unsafe fn write(&self, p: usize, r0: usize, rt: usize, buf: &[f32]) {
        let c0 = p * PANEL;
        let n = PANEL.min(self.cols - c0);
        assert!(r0 + rt <= self.rows && buf.len() >= rt * PANEL);
        for t in 0..rt {
            let dst = self.ptr.add((r0 + t) * self.cols + c0);
            std::ptr::copy_nonoverlapping(buf.as_ptr().add(t * PANEL), dst, n);
        }
    }
}

/// Tasks of about `1 / (4 · threads)` of `total` panels each.
fn panels_per_task(total: usize) -> usize {
    total
        .div_ceil(ComputePool::global().num_threads() * 4)
        .max(1)
}

/// Shared checks of the matmul entry points; quantizes the rows when a weight needs it.
fn prepare(isa: Isa, weights: &[&PackedWeight], x: &[f32], rows: usize) -> Option<QuantRows> {
    assert!(
        Isa::available().contains(&isa),
        "{isa:?} is not supported by this CPU"
    );
    let in_dim = weights.first().map_or(0, |w| w.in_dim);
    assert!(
        weights.iter().all(|w| w.in_dim == in_dim) && x.len() == rows * in_dim,
        "activation shape. This is a bug."
    );
    let any_quant = weights
        .iter()
        .any(|w| matches!(w.panels, Panels::Quant(..)));
    (any_quant && rows > 0).then(|| QuantRows::quantize_on(isa, x, rows, in_dim))
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
    let xq = prepare(isa, weights, x, rows);
    let mut ys: Vec<Vec<f32>> = weights
        .iter()
        .map(|w| vec![0f32; rows * w.out_dim])
        .collect();
    if rows == 0 {
        return ys;
    }
    let outs: Vec<Columns> = ys
        .iter_mut()
        .zip(weights)
        .map(|(y, w)| Columns::new(y, rows, w.out_dim))
        .collect();
    let total: usize = weights.iter().map(|w| w.num_panels).sum();
    let per_task = panels_per_task(total);
    // (weight, first panel, end panel): tasks own whole panels of one weight
    let tasks: Vec<(usize, usize, usize)> = weights
        .iter()
        .enumerate()
        .flat_map(|(i, w)| {
            (0..w.num_panels)
                .step_by(per_task)
                .map(move |p| (i, p, w.num_panels.min(p + per_task)))
        })
        .collect();
    ComputePool::global().run(tasks.len(), &|t| {
        let (i, p0, p1) = tasks[t];
        let (w, out) = (weights[i], &outs[i]);
        let mut buf = [0f32; MAX_TILE * PANEL];
        for_tiles(isa, rows, p0..p1, |p, r0, rt| {
            w.tile(isa, x, xq.as_ref(), r0, rt, p, &mut buf);
            // SAFETY: this task alone owns panels p0..p1 of weight i.
            unsafe { out.write(p, r0, rt, &buf) };
        });
    });
    drop(outs); // ends the borrow of `ys`
    ys
}

/// `silu(x Gᵀ) ⊙ (x Uᵀ)`, the gated MLP's hidden activations, in one pass: each tile of the
/// gate and up projections is combined while it is in L1. Equals `matmul_many` of
/// both followed by `silu_mul`, bit for bit.
pub fn matmul_glu(gate: &PackedWeight, up: &PackedWeight, x: &[f32], rows: usize) -> Vec<f32> {
    matmul_glu_on(Isa::best(), gate, up, x, rows)
}

/// `matmul_glu` on a given path.
pub fn matmul_glu_on(
    isa: Isa,
    gate: &PackedWeight,
    up: &PackedWeight,
    x: &[f32],
    rows: usize,
) -> Vec<f32> {
    assert_eq!(gate.out_dim, up.out_dim, "gate and up shapes");
    let xq = prepare(isa, &[gate, up], x, rows);
    let mut y = vec![0f32; rows * gate.out_dim];
    if rows == 0 {
        return y;
    }
    {
        let out = Columns::new(&mut y, rows, gate.out_dim);
        let per_task = panels_per_task(gate.num_panels);
        let tasks: Vec<usize> = (0..gate.num_panels).step_by(per_task).collect();
        ComputePool::global().run(tasks.len(), &|t| {
            let p0 = tasks[t];
            let p1 = gate.num_panels.min(p0 + per_task);
            let mut g = [0f32; MAX_TILE * PANEL];
            let mut u = [0f32; MAX_TILE * PANEL];
            for_tiles(isa, rows, p0..p1, |p, r0, rt| {
                gate.tile(isa, x, xq.as_ref(), r0, rt, p, &mut g);
                up.tile(isa, x, xq.as_ref(), r0, rt, p, &mut u);
                elementwise::silu_mul(&mut g[..rt * PANEL], &u[..rt * PANEL]);
                // SAFETY: this task alone owns panels p0..p1.
                unsafe { out.write(p, r0, rt, &g) };
            });
        });
    }
    y
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
