//! A step's LoRA deltas: the rows of each adapter in the batch run through its A and scaled B
//! and added to the base projection's output (see `lora.rs` for the adapters themselves).

use super::lora::{LoraAdapter, LoraPair, Target};
use candle_core::{DType, Device, Result as CResult, Tensor};

/// One step's adapter rows: each adapter with rows in the batch and those rows' indices.
pub struct LoraStep<'a> {
    /// Each adapter, its rows as a device tensor and on the host.
    groups: Vec<(&'a LoraAdapter, Tensor, Vec<u32>)>,
}

/// The step of a model without adapters.
pub static NO_ADAPTERS: LoraStep<'static> = LoraStep { groups: Vec::new() };

impl<'a> LoraStep<'a> {
    /// `rows`: (index into `adapters`, the batch rows of that adapter), from
    /// `ForwardBatch::lora_rows`.
    pub fn new(
        adapters: &'a [Option<LoraAdapter>],
        rows: &[(u32, Vec<u32>)],
        device: &Device,
    ) -> CResult<Self> {
        let groups = rows
            .iter()
            .map(|(i, rows)| {
                let slot = adapters.get(*i as usize).and_then(Option::as_ref);
                let adapter = slot.ok_or_else(|| {
                    candle_core::Error::Msg(format!("adapter {i} is not loaded. This is a bug."))
                })?;
                Ok((adapter, Tensor::new(rows.as_slice(), device)?, rows.clone()))
            })
            .collect::<CResult<_>>()?;
        Ok(Self { groups })
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Layer `i`'s view.
    pub fn layer(&self, i: usize) -> LayerLoras<'_> {
        LayerLoras {
            step: self,
            layer: i,
        }
    }
}

/// The adapters of one step at one layer.
pub struct LayerLoras<'s> {
    step: &'s LoraStep<'s>,
    layer: usize,
}

impl LayerLoras<'_> {
    fn pairs(&self, t: Target) -> impl Iterator<Item = (&LoraPair, &Tensor, &[u32])> {
        self.step.groups.iter().filter_map(move |(a, rows, host)| {
            let p = a.layers.get(self.layer)?[t.index()].as_ref()?;
            Some((p, rows, host.as_slice()))
        })
    }

    /// Whether any of the step's adapters adapts `t` at this layer.
    pub fn touches(&self, t: Target) -> bool {
        self.pairs(t).next().is_some()
    }

    /// `y` (the projection `t` of `x`, [rows, out]) plus each adapter's delta on its rows.
    pub fn add(&self, t: Target, x: &Tensor, mut y: Tensor) -> CResult<Tensor> {
        if !self.touches(t) {
            return Ok(y);
        }
        if let Some(out) = self.add_on_host(t, x, &y)? {
            return Ok(out);
        }
        for (p, rows, _) in self.pairs(t) {
            let d = p.b.forward(&p.a.forward(&x.index_select(rows, 0)?)?)?;
            y = y.index_add(rows, &d.to_dtype(y.dtype())?, 0)?;
        }
        Ok(y)
    }

    /// `add` on the CPU with every matrix in weir's panels and `y` in f32: `x` and `y` read
    /// once, each adapter's rows through its A and B with no tensor op between, each delta
    /// added in place (the same bits as the tensor path, without its per-op cost, which
    /// dominates at a few rows per adapter). None when that does not apply.
    fn add_on_host(&self, t: Target, x: &Tensor, y: &Tensor) -> CResult<Option<Tensor>> {
        let host = y.device().is_cpu() && y.dtype() == DType::F32;
        if !host
            || !self
                .pairs(t)
                .all(|(p, _, _)| p.a.is_packed() && p.b.is_packed())
        {
            return Ok(None);
        }
        let ((n, in_dim), (_, out_dim)) = (x.dims2()?, y.dims2()?);
        let xs = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let mut ys = y.flatten_all()?.to_vec1::<f32>()?;
        for (p, _, rows) in self.pairs(t) {
            let mut xr = Vec::with_capacity(rows.len() * in_dim);
            for &r in rows {
                xr.extend_from_slice(&xs[r as usize * in_dim..][..in_dim]);
            }
            let a = p.a.packed_rows(&xr, rows.len()).expect("checked packed");
            let d = p.b.packed_rows(&a, rows.len()).expect("checked packed");
            for (&r, delta) in rows.iter().zip(d.chunks_exact(out_dim)) {
                let dst = &mut ys[r as usize * out_dim..][..out_dim];
                dst.iter_mut().zip(delta).for_each(|(o, v)| *o += v);
            }
        }
        Ok(Some(Tensor::from_vec(ys, (n, out_dim), y.device())?))
    }

    /// `y`: the outputs of `targets` side by side (a merged projection), `widths` theirs; each
    /// adapter's deltas (zeros for a target it lacks) added on its rows.
    pub fn add_merged(
        &self,
        targets: &[Target],
        widths: &[usize],
        x: &Tensor,
        mut y: Tensor,
    ) -> CResult<Tensor> {
        for (adapter, rows, _) in &self.step.groups {
            let Some(slots) = adapter.layers.get(self.layer) else {
                continue;
            };
            if targets.iter().all(|t| slots[t.index()].is_none()) {
                continue;
            }
            let xr = x.index_select(rows, 0)?;
            let n = xr.dim(0)?;
            let parts = targets
                .iter()
                .zip(widths)
                .map(|(t, &w)| match &slots[t.index()] {
                    Some(p) => p.b.forward(&p.a.forward(&xr)?)?.to_dtype(y.dtype()),
                    None => Tensor::zeros((n, w), y.dtype(), y.device()),
                })
                .collect::<CResult<Vec<_>>>()?;
            y = y.index_add(rows, &Tensor::cat(&parts, 1)?, 0)?;
        }
        Ok(y)
    }
}
