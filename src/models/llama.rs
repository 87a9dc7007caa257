//! Llama-family decoder (Llama 2/3, SmolLM2, Mistral without sliding window, Qwen2) over the
//! paged KV cache. The model borrows the cache for each forward and owns no per-request state.

use super::attention::{Attention, AttentionMetadata, AttentionShape};
use super::batch::ForwardBatch;
use super::config::LlamaConfig;
use super::fused;
use super::linear::Linear;
use super::rope::{Rope, RopeTables};
use super::weights::WeightSource;
use super::{CausalLm, StepInputs};
use candle_core::{DType, Device, Result, Tensor};
use candle_nn::ops::rms_norm;

/// Projections of one input. Dense weights (the GPU, bf16/f16 on the CPU) are merged into one
/// weight at load, so one GEMM computes them all; weights in weir's CPU panels or GGML blocks
/// stay apart (their kernels share one pass over the input anyway).
#[derive(Clone)]
enum Projs<const N: usize> {
    Split([Linear; N]),
    Merged(Linear),
}

impl<const N: usize> Projs<N> {
    fn new(parts: [Linear; N]) -> Result<Self> {
        Ok(match Linear::concat(&parts.each_ref())? {
            Some(merged) => Self::Merged(merged),
            None => Self::Split(parts),
        })
    }

    fn to_device(&self, device: &Device) -> Result<Self> {
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

    fn bytes(&self) -> u64 {
        match self {
            Self::Split(ls) => ls.iter().map(Linear::bytes).sum(),
            Self::Merged(l) => l.bytes(),
        }
    }
}

#[derive(Clone)]
struct Layer {
    attn_norm: Tensor,
    /// q, k, v
    qkv: Projs<3>,
    o: Linear,
    mlp_norm: Tensor,
    /// gate, up
    gate_up: Projs<2>,
    down: Linear,
}

pub struct Llama {
    cfg: LlamaConfig,
    /// [vocab, hidden]
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Linear,
    rope: Rope,
    device: Device,
    /// Activations and dense weights (f32 on CPU by default, bf16 on CUDA).
    dtype: DType,
    /// On CUDA: `kernels/fused.cu` for the residual add + RMSNorm, SiLU-mul and RoPE of the
    /// merged QKV (off: the candle ops they fuse, `--no-fused-kernels`).
    fused_kernels: bool,
    /// RoPE's inverse frequencies on `device` (the fused kernel computes the angles).
    rope_inv_freq: Tensor,
    span: tracing::Span,
}

impl Llama {
    /// Loads every weight from `w`, which places them on its device in its dtype.
    pub fn load(w: &mut dyn WeightSource, cfg: LlamaConfig) -> Result<Self> {
        let (device, dtype) = (w.device().clone(), w.dtype());
        let (h, nh, nkv, d) = (
            cfg.hidden_size,
            cfg.num_heads,
            cfg.num_kv_heads,
            cfg.head_dim,
        );
        let embed = w.dense("model.embed_tokens", &[cfg.vocab_size, h])?;
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let p = |m: &str| format!("model.layers.{i}.{m}");
            let bias = cfg.attention_bias;
            let inter = cfg.intermediate_size;
            layers.push(Layer {
                attn_norm: w.dense(&p("input_layernorm"), &[h])?,
                qkv: Projs::new([
                    w.linear(&p("self_attn.q_proj"), nh * d, h, bias)?,
                    w.linear(&p("self_attn.k_proj"), nkv * d, h, bias)?,
                    w.linear(&p("self_attn.v_proj"), nkv * d, h, bias)?,
                ])?,
                o: w.linear(&p("self_attn.o_proj"), h, nh * d, false)?,
                mlp_norm: w.dense(&p("post_attention_layernorm"), &[h])?,
                gate_up: Projs::new([
                    w.linear(&p("mlp.gate_proj"), inter, h, false)?,
                    w.linear(&p("mlp.up_proj"), inter, h, false)?,
                ])?,
                down: w.linear(&p("mlp.down_proj"), h, inter, false)?,
            });
        }
        let norm = w.dense("model.norm", &[h])?;
        let lm_head = if !cfg.tie_word_embeddings && w.contains("lm_head") {
            w.linear("lm_head", cfg.vocab_size, h, false)?
        } else {
            // Tied: the embedding matrix in the source's own format (quantized for GGUF).
            w.linear("model.embed_tokens", cfg.vocab_size, h, false)?
        };
        let rope = Rope::new(cfg.rope_inv_freq(), cfg.rope_interleaved);
        Ok(Self {
            rope_inv_freq: rope.inv_freq_on(&device)?,
            rope,
            cfg,
            embed,
            layers,
            norm,
            lm_head,
            fused_kernels: device.is_cuda(),
            device,
            dtype,
            span: tracing::span!(tracing::Level::TRACE, "llama.forward"),
        })
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// Whether q/k/v and gate/up run as one GEMM each (dense weights).
    pub fn projections_merged(&self) -> bool {
        self.layers
            .iter()
            .all(|l| matches!((&l.qkv, &l.gate_up), (Projs::Merged(_), Projs::Merged(_))))
    }

    /// Whether CUDA runs weir's fused kernels (the default) or the candle ops they replace.
    pub fn set_fused_kernels(&mut self, on: bool) {
        self.fused_kernels = on;
    }

    /// The fused kernels run on this step's device.
    fn kernels(&self) -> bool {
        self.fused_kernels && self.device.is_cuda()
    }

    /// This model on `device`: its dense weights copied there (shared where they already are).
    /// The model manager's host tier keeps an evicted GPU model this way on the CPU, and
    /// copies it back instead of reading and parsing its files again.
    pub fn to_device(&self, device: &Device) -> Result<Self> {
        let t = |x: &Tensor| x.to_device(device);
        let l = |x: &Linear| x.to_device(device);
        let layers = self
            .layers
            .iter()
            .map(|y| {
                Ok(Layer {
                    attn_norm: t(&y.attn_norm)?,
                    qkv: y.qkv.to_device(device)?,
                    o: l(&y.o)?,
                    mlp_norm: t(&y.mlp_norm)?,
                    gate_up: y.gate_up.to_device(device)?,
                    down: l(&y.down)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            cfg: self.cfg.clone(),
            embed: t(&self.embed)?,
            layers,
            norm: t(&self.norm)?,
            lm_head: l(&self.lm_head)?,
            rope: self.rope.clone(),
            rope_inv_freq: t(&self.rope_inv_freq)?,
            device: device.clone(),
            dtype: self.dtype,
            fused_kernels: self.fused_kernels,
            span: self.span.clone(),
        })
    }

    /// Bytes of every weight.
    pub fn weight_bytes(&self) -> u64 {
        let tb = super::linear::tensor_bytes;
        let layers: u64 = self
            .layers
            .iter()
            .map(|y| {
                tb(&y.attn_norm)
                    + tb(&y.mlp_norm)
                    + y.qkv.bytes()
                    + y.o.bytes()
                    + y.gate_up.bytes()
                    + y.down.bytes()
            })
            .sum();
        tb(&self.embed) + layers + tb(&self.norm) + self.lm_head.bytes()
    }

    /// Self-attention of layer `i` over the paged cache. x: [T, hidden] (normed).
    fn attention(&self, i: usize, x: &Tensor, step: &Step, attn: &mut Attention) -> Result<Tensor> {
        let layer = &self.layers[i];
        let (nh, nkv) = (self.cfg.num_heads, self.cfg.num_kv_heads);
        // [T, H*D], [T, KvH*D], [T, KvH*D]
        let (q, k, v) = match &layer.qkv {
            Projs::Merged(w) => {
                let qkv = w.forward(x)?;
                self.rope.apply_qkv(&qkv, nh, nkv, &step.rope)?
            }
            Projs::Split([q, k, v]) => {
                let [q, k, v] = Linear::forward_many([q, k, v], x)?;
                let q = self.rope.apply(&q, nh, &step.rope)?;
                (q, self.rope.apply(&k, nkv, &step.rope)?, v)
            }
        };
        attn.write_kv(i, &k, &v, step.batch, step.meta)?;
        let y = attn.attend(i, &q, step.batch, step.meta)?;
        layer.o.forward(&y)
    }

    /// The gated MLP of layer `i`. h: [T, hidden] (normed).
    fn mlp(&self, i: usize, h: &Tensor) -> Result<Tensor> {
        let layer = &self.layers[i];
        let a = match &layer.gate_up {
            Projs::Merged(w) => fused::silu_mul(&w.forward(h)?, self.kernels())?,
            Projs::Split([gate, up]) => Linear::forward_glu(gate, up, h)?,
        };
        layer.down.forward(&a)
    }
}

/// What every layer of one step shares.
struct Step<'a> {
    batch: &'a ForwardBatch,
    rope: RopeTables,
    meta: &'a AttentionMetadata,
}

impl CausalLm for Llama {
    fn upload(&self, batch: &ForwardBatch, attn: &Attention) -> Result<StepInputs> {
        let t = batch.num_tokens();
        let device_rope = self.graph_capable();
        // The logits rows are needed only when some row does not sample (prompt chunks); in a
        // decode step every row samples and there is nothing to pick.
        let every_row = batch.logits_rows.len() == t
            && (0..t)
                .zip(&batch.logits_rows)
                .all(|(i, &r)| r as usize == i);
        let pick_rows = !every_row && !batch.logits_rows.is_empty();
        // One upload of [token ids | positions (fused RoPE) | logits rows], before any layer is
        // launched: on a GPU a copy from pageable host memory waits for the stream, so a late
        // one would stall the host until every layer ran.
        let mut host = Vec::with_capacity(2 * t + batch.logits_rows.len());
        host.extend_from_slice(&batch.token_ids);
        if device_rope {
            host.extend_from_slice(&batch.positions);
        }
        if pick_rows {
            host.extend_from_slice(&batch.logits_rows);
        }
        let n = host.len();
        let all = Tensor::from_vec(host, n, &self.device)?;
        let r = batch.logits_rows.len();
        Ok(StepInputs {
            token_ids: all.narrow(0, 0, t)?,
            positions: device_rope.then(|| all.narrow(0, t, t)).transpose()?,
            logits_rows: pick_rows.then(|| all.narrow(0, n - r, r)).transpose()?,
            attention: attn.prepare(batch)?,
        })
    }

    fn forward_inputs(
        &self,
        batch: &ForwardBatch,
        inputs: &StepInputs,
        attn: &mut Attention,
    ) -> Result<Tensor> {
        let _enter = self.span.enter();
        let eps = self.cfg.rms_norm_eps as f32;
        let mut x = self.embed.index_select(&inputs.token_ids, 0)?; // [T, hidden]
                                                                    // the fused RoPE kernel computes its angles from the positions: no host trigonometry
        let rope = match &inputs.positions {
            Some(positions) => RopeTables::Device {
                positions: positions.clone(),
                inv_freq: self.rope_inv_freq.clone(),
            },
            None => self
                .rope
                .tables(&batch.positions, self.dtype, &self.device)?,
        };
        let step = Step {
            batch,
            rope,
            meta: &inputs.attention,
        };
        let k = self.kernels();
        // h: the normed input of the next sublayer; each residual add is fused with the norm
        // that follows it
        let mut h = match self.layers.first() {
            Some(first) => rms_norm(&x, &first.attn_norm, eps)?,
            None => x.clone(),
        };
        for (i, layer) in self.layers.iter().enumerate() {
            let a = self.attention(i, &h, &step, attn)?;
            let (x1, h1) = fused::add_rms_norm(&x, &a, &layer.mlp_norm, eps, k)?;
            let m = self.mlp(i, &h1)?;
            match self.layers.get(i + 1) {
                Some(next) => (x, h) = fused::add_rms_norm(&x1, &m, &next.attn_norm, eps, k)?,
                None => x = (x1 + m)?,
            }
        }
        if batch.logits_rows.is_empty() {
            return Tensor::zeros((0, self.cfg.vocab_size), DType::F32, &self.device);
        }
        let x = match &inputs.logits_rows {
            Some(rows) => x.index_select(rows, 0)?,
            None => x,
        };
        let x = rms_norm(&x, &self.norm, eps)?;
        self.lm_head.forward(&x)?.to_dtype(DType::F32) // [num_sampled, vocab]
    }

    fn graph_capable(&self) -> bool {
        self.kernels() && self.projections_merged()
    }

    fn num_layers(&self) -> usize {
        self.cfg.num_layers
    }

    fn attention_shape(&self) -> AttentionShape {
        AttentionShape {
            num_heads: self.cfg.num_heads,
            num_kv_heads: self.cfg.num_kv_heads,
            head_dim: self.cfg.head_dim,
        }
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn dtype(&self) -> DType {
        self.dtype
    }

    fn max_context_len(&self) -> usize {
        self.cfg.max_position_embeddings
    }

    fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }
}
