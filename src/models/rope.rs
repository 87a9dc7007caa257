//! Rotary position embeddings over packed tokens. cos/sin of every token's own position are
//! computed on the host once per step and uploaded; each layer rotates Q and K with candle's
//! rope ops, treating every token as its own batch entry so positions may differ per row, or,
//! from a merged QKV projection on CUDA, with one `kernels/fused.cu` launch that also splits
//! off V (`apply_qkv`, f32 tables).
//!
//! ```text
//! interleaved (GGUF llama): pairs (x0,x1) (x2,x3) ...     neox (HF): pairs (x0,x32) (x1,x33) ...
//! ```

use candle_core::{DType, Device, Result, Tensor};

#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f32>,
    interleaved: bool,
    /// LongRoPE: other frequencies from a position on (`RopeParams::long_inv_freq`).
    long: Option<(Vec<f32>, u32)>,
}

/// What one step's layers rotate with.
pub enum RopeTables {
    /// cos/sin of each token's position, computed on the host: [num_tokens, 1, head_dim / 2].
    Host { cos: Tensor, sin: Tensor },
    /// For the fused kernel (`apply_qkv` on CUDA), which computes the angles itself:
    /// positions [num_tokens] u32 and inv_freq [head_dim / 2] f32, on the device.
    Device { positions: Tensor, inv_freq: Tensor },
}

impl Rope {
    pub fn new(inv_freq: Vec<f32>, interleaved: bool) -> Self {
        Self {
            inv_freq,
            interleaved,
            long: None,
        }
    }

    /// LongRoPE: positions from `from` on rotate by `inv_freq` instead. The choice is the
    /// position's own (as vLLM makes it), so a token's K/V never depends on the batch, the
    /// chunking or the sequence it is cached for.
    pub fn with_long(self, long: Option<(Vec<f32>, u32)>) -> Self {
        Self { long, ..self }
    }

    /// Whether the fused CUDA kernel can rotate with one `inv_freq` (not with LongRoPE's two).
    pub fn device_capable(&self) -> bool {
        self.long.is_none()
    }

    pub fn tables(&self, positions: &[u32], dtype: DType, device: &Device) -> Result<RopeTables> {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for &p in positions {
            let inv_freq = match &self.long {
                Some((long, from)) if p >= *from => long,
                _ => &self.inv_freq,
            };
            for &f in inv_freq {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        let shape = (positions.len(), 1, half);
        Ok(RopeTables::Host {
            cos: Tensor::from_vec(cos, shape, device)?.to_dtype(dtype)?,
            sin: Tensor::from_vec(sin, shape, device)?.to_dtype(dtype)?,
        })
    }

    /// `inv_freq` as a [head_dim / 2] f32 tensor on `device` (kept by the model for
    /// `RopeTables::Device`).
    pub fn inv_freq_on(&self, device: &Device) -> Result<Tensor> {
        Tensor::new(self.inv_freq.as_slice(), device)
    }

    /// Rotates x: [num_tokens, num_heads * head_dim].
    pub fn apply(&self, x: &Tensor, num_heads: usize, tables: &RopeTables) -> Result<Tensor> {
        let (t, width) = x.dims2()?;
        let RopeTables::Host { cos, sin } = tables else {
            candle_core::bail!("device RoPE tables serve the fused kernel (apply_qkv) only")
        };
        let (cos, sin) = (cos.to_dtype(x.dtype())?, sin.to_dtype(x.dtype())?);
        // [T, H, 1, D]: token t is batch entry t, whose cos/sin row is its own position's
        let x4 = x
            .contiguous()?
            .reshape((t, num_heads, 1, width / num_heads))?;
        let y = if self.interleaved {
            candle_nn::rotary_emb::rope_i(&x4, &cos, &sin)?
        } else {
            candle_nn::rotary_emb::rope(&x4, &cos, &sin)?
        };
        y.reshape((t, width))
    }

    /// (q, k, v), q and k rotated, each contiguous, from one merged projection's rows
    /// qkv: [num_tokens, (num_heads + 2 * num_kv_heads) * head_dim]. With device tables on
    /// CUDA one launch of `weir_rope_qkv`; with host tables narrow + `apply`.
    pub fn apply_qkv(
        &self,
        qkv: &Tensor,
        num_heads: usize,
        num_kv_heads: usize,
        tables: &RopeTables,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (t, width) = qkv.dims2()?;
        let d = width / (num_heads + 2 * num_kv_heads);
        let (q_w, kv_w) = (num_heads * d, num_kv_heads * d);
        #[cfg(feature = "cuda")]
        if let RopeTables::Device {
            positions,
            inv_freq,
        } = tables
        {
            if t == 0 {
                return Ok((
                    qkv.narrow(1, 0, q_w)?,
                    qkv.narrow(1, q_w, kv_w)?,
                    qkv.narrow(1, q_w + kv_w, kv_w)?,
                ));
            }
            let op = super::fused::cuda::RopeQkv {
                positions: positions.clone(),
                inv_freq: inv_freq.clone(),
                num_heads,
                num_kv_heads,
                interleaved: self.interleaved,
            };
            let out = qkv.contiguous()?.apply_op1_no_bwd(&op)?;
            let part = |start: usize, w: usize| out.narrow(0, start * t, w * t)?.reshape((t, w));
            return Ok((part(0, q_w)?, part(q_w, kv_w)?, part(q_w + kv_w, kv_w)?));
        }
        let _ = t;
        let q = self.apply(&qkv.narrow(1, 0, q_w)?, num_heads, tables)?;
        let k = self.apply(&qkv.narrow(1, q_w, kv_w)?, num_kv_heads, tables)?;
        let v = qkv.narrow(1, q_w + kv_w, kv_w)?.contiguous()?;
        Ok((q, k, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rotate(interleaved: bool, positions: &[u32], x: Vec<f32>) -> Vec<f32> {
        let rope = Rope::new(vec![1.0, 0.5], interleaved);
        let t = rope.tables(positions, DType::F32, &Device::Cpu).unwrap();
        let x = Tensor::from_vec(x, (positions.len(), 4), &Device::Cpu).unwrap();
        rope.apply(&x, 1, &t)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn rope_rotates_pairs_by_position() {
        // head_dim 4, one head, inv_freq [1, 0.5]; position 1 rotates pair 0 by 1 rad, pair 1 by 0.5
        let x = rotate(true, &[0, 1], vec![1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]);
        assert_eq!(&x[..4], &[1.0, 0.0, 1.0, 0.0], "position 0 is the identity");
        let expect = [1f32.cos(), 1f32.sin(), 0.5f32.cos(), 0.5f32.sin()];
        for (a, b) in x[4..].iter().zip(expect) {
            assert!((a - b).abs() < 1e-6);
        }
        // neox pairs element i with i + 2
        let x = rotate(false, &[1], vec![1.0, 1.0, 0.0, 0.0]);
        let expect = [1f32.cos(), 0.5f32.cos(), 1f32.sin(), 0.5f32.sin()];
        for (a, b) in x.iter().zip(expect) {
            assert!((a - b).abs() < 1e-6);
        }
    }
}
