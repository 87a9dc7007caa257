//! `Bert`: a BERT encoder for sentence embeddings (all-MiniLM-L6-v2 and the like), post-LN,
//! absolute positions, bidirectional attention.
//!
//! **Batch invariance.** `hidden_states` takes packed sequences; every projection is a weir
//! `Linear` (row-invariant on the CPU), embeddings, norms and activations are per row, and each
//! sequence attends on its own slice of q/k/v, so a sequence's rows are bit-identical alone or
//! packed with others. `pool` reduces each sequence's rows on the host in order.

use crate::models::attention::bidirectional::bidirectional_attention;
use crate::models::config::ConfigError;
use crate::models::linear::{tensor_bytes, Linear};
use candle_core::{bail, DType, Device, Module, Result, Tensor};
use candle_nn::{LayerNorm, VarBuilder};
use serde::Deserialize;
use std::ops::Range;
use std::path::Path;

/// The feed-forward activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BertAct {
    /// `gelu`: the exact (erf) GELU.
    Gelu,
    /// `gelu_new`, `gelu_pytorch_tanh`: the tanh approximation.
    GeluTanh,
}

/// The `config.json` of a BERT checkpoint (`model_type` "bert"), validated.
#[derive(Debug, Clone, PartialEq)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    pub act: BertAct,
}

/// The fields of a BERT `config.json` weir reads (absent ones: transformers' defaults).
#[derive(Deserialize)]
struct HfBertConfig {
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    max_position_embeddings: Option<usize>,
    type_vocab_size: Option<usize>,
    layer_norm_eps: Option<f64>,
    hidden_act: Option<String>,
    position_embedding_type: Option<String>,
    is_decoder: Option<bool>,
    quantization_config: Option<serde_json::Value>,
}

type ConfigResult<T> = std::result::Result<T, ConfigError>;

impl HfBertConfig {
    /// The activation; an error for every field that changes the math and that weir does not
    /// implement.
    fn check_implemented(&self) -> ConfigResult<BertAct> {
        let unsupported = |m: String| Err(ConfigError::Unsupported(m));
        match self.model_type.as_deref() {
            None | Some("bert") => {}
            Some(t) => return unsupported(format!("model_type {t:?} (this encoder runs bert)")),
        }
        match self.position_embedding_type.as_deref() {
            None | Some("absolute") => {}
            Some(p) => return unsupported(format!("position_embedding_type {p:?}")),
        }
        if self.is_decoder == Some(true) {
            return unsupported("is_decoder true (weir runs BERT as an encoder)".into());
        }
        if self.quantization_config.is_some() {
            return unsupported("quantization_config".into());
        }
        match self.hidden_act.as_deref().unwrap_or("gelu") {
            "gelu" => Ok(BertAct::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" => Ok(BertAct::GeluTanh),
            a => unsupported(format!("hidden_act {a:?} (bert runs gelu, gelu_new)")),
        }
    }
}

impl BertConfig {
    /// From a `config.json`: missing shape fields, fields weir does not implement and
    /// inconsistent shapes are errors naming them.
    pub fn from_hf(cfg: &serde_json::Value) -> ConfigResult<Self> {
        let hf = HfBertConfig::deserialize(cfg)
            .map_err(|e| ConfigError::Invalid(format!("config.json: {e}")))?;
        let act = hf.check_implemented()?;
        let (h, n) = (hf.hidden_size, hf.num_attention_heads);
        let type_vocab_size = hf.type_vocab_size.unwrap_or(2);
        if n == 0 || !h.is_multiple_of(n) || type_vocab_size == 0 {
            return Err(ConfigError::Invalid(format!(
                "hidden_size {h}, num_attention_heads {n}, type_vocab_size {type_vocab_size}"
            )));
        }
        Ok(Self {
            vocab_size: hf.vocab_size,
            hidden_size: h,
            num_layers: hf.num_hidden_layers,
            num_heads: n,
            intermediate_size: hf.intermediate_size,
            max_position_embeddings: hf.max_position_embeddings.unwrap_or(512),
            type_vocab_size,
            layer_norm_eps: hf.layer_norm_eps.unwrap_or(1e-12),
            act,
        })
    }
}

/// `{name}.weight` [out, in] and `{name}.bias` [out] as a weir projection.
fn linear(vb: &VarBuilder, name: &str, out_dim: usize, in_dim: usize) -> Result<Linear> {
    let vb = vb.pp(name);
    let w = vb.get((out_dim, in_dim), "weight")?;
    Linear::from_dense(w, Some(vb.get(out_dim, "bias")?))
}

fn norm(vb: &VarBuilder, name: &str, cfg: &BertConfig) -> Result<LayerNorm> {
    candle_nn::layer_norm(cfg.hidden_size, cfg.layer_norm_eps, vb.pp(name))
}

fn norm_bytes(n: &LayerNorm) -> u64 {
    tensor_bytes(n.weight()) + n.bias().map_or(0, tensor_bytes)
}

/// One encoder layer: x = LN(x + attn(x)); x = LN(x + ffn(x)).
struct BertLayer {
    qkv: [Linear; 3],
    attn_out: Linear,
    attn_norm: LayerNorm,
    up: Linear,
    down: Linear,
    ffn_norm: LayerNorm,
}

impl BertLayer {
    fn load(vb: &VarBuilder, cfg: &BertConfig) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let qkv = |n: &str| linear(vb, &format!("attention.self.{n}"), h, h);
        Ok(Self {
            qkv: [qkv("query")?, qkv("key")?, qkv("value")?],
            attn_out: linear(vb, "attention.output.dense", h, h)?,
            attn_norm: norm(vb, "attention.output.LayerNorm", cfg)?,
            up: linear(vb, "intermediate.dense", i, h)?,
            down: linear(vb, "output.dense", h, i)?,
            ffn_norm: norm(vb, "output.LayerNorm", cfg)?,
        })
    }

    fn forward(&self, x: &Tensor, seqs: &[Range<usize>], cfg: &BertConfig) -> Result<Tensor> {
        let [q, k, v] = &self.qkv;
        let [q, k, v] = Linear::forward_many([q, k, v], x)?;
        let ctx = if q.device().is_cpu() && q.dtype() == DType::F32 {
            attend_on_host(&q, &k, &v, seqs, cfg.num_heads)?
        } else {
            let ctx = seqs
                .iter()
                .map(|r| attend(&q, &k, &v, r, cfg.num_heads))
                .collect::<Result<Vec<_>>>()?;
            Tensor::cat(&ctx, 0)?
        };
        let attn = self.attn_out.forward(&ctx)?;
        let x = self.attn_norm.forward(&(attn + x)?)?;
        let up = self.up.forward(&x)?;
        let up = match cfg.act {
            BertAct::Gelu => up.gelu_erf()?,
            BertAct::GeluTanh => up.gelu()?,
        };
        self.ffn_norm.forward(&(self.down.forward(&up)? + x)?)
    }

    fn bytes(&self) -> u64 {
        let [q, k, v] = &self.qkv;
        let projs = [q, k, v, &self.attn_out, &self.up, &self.down].map(Linear::bytes);
        projs.iter().sum::<u64>() + norm_bytes(&self.attn_norm) + norm_bytes(&self.ffn_norm)
    }
}

/// Every sequence's attention on weir's CPU threads (`bidirectional_attention`): [tokens, hidden].
fn attend_on_host(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    seqs: &[Range<usize>],
    heads: usize,
) -> Result<Tensor> {
    let host = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
    let d = q.dim(1)? / heads;
    let out = bidirectional_attention(
        &host(q)?,
        &host(k)?,
        &host(v)?,
        seqs,
        heads,
        (d as f32).powf(-0.5),
    );
    Tensor::from_vec(out, q.shape(), q.device())
}

/// softmax(q kᵀ / √d) v per head over the rows `r` only: [r.len(), hidden].
fn attend(q: &Tensor, k: &Tensor, v: &Tensor, r: &Range<usize>, heads: usize) -> Result<Tensor> {
    let (n, hidden) = (r.len(), q.dim(1)?);
    let d = hidden / heads;
    let split = |t: &Tensor| {
        t.narrow(0, r.start, n)?
            .reshape((n, heads, d))?
            .transpose(0, 1)?
            .contiguous()
    };
    let (q, k, v) = (split(q)?, split(k)?, split(v)?);
    let scores = (q.matmul(&k.t()?)? / (d as f64).sqrt())?;
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    probs.matmul(&v)?.transpose(0, 1)?.reshape((n, hidden))
}

/// A BERT encoder: embeddings and post-LN layers, without the pooler.
pub struct Bert {
    cfg: BertConfig,
    /// [vocab, hidden], [max_pos, hidden], [type_vocab, hidden]
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    emb_norm: LayerNorm,
    layers: Vec<BertLayer>,
    device: Device,
    /// `[SEP]`: a sequence's tokens after its first one are the second segment (token type 1)
    /// of a text pair (`with_pair_separator`).
    sep_token_id: Option<u32>,
}

impl Bert {
    /// Weights by their Hugging Face names (`embeddings.word_embeddings.weight`,
    /// `encoder.layer.N.attention.self.query.weight`, ...; under `bert.` when the plain names are
    /// absent; `LayerNorm.gamma`/`beta` accepted), in `vb`'s dtype on its device. f32 on the
    /// CPU puts the projections in weir's batch-invariant panels.
    pub fn load(vb: VarBuilder, cfg: BertConfig) -> Result<Self> {
        let vb = if !vb.contains_tensor("embeddings.word_embeddings.weight")
            && vb.contains_tensor("bert.embeddings.word_embeddings.weight")
        {
            vb.pp("bert")
        } else {
            vb
        };
        let (emb, h) = (vb.pp("embeddings"), cfg.hidden_size);
        let table = |name: &str, rows: usize| emb.pp(name).get((rows, h), "weight");
        let layers = (0..cfg.num_layers)
            .map(|l| BertLayer::load(&vb.pp(format!("encoder.layer.{l}")), &cfg))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            word: table("word_embeddings", cfg.vocab_size)?,
            position: table("position_embeddings", cfg.max_position_embeddings)?,
            token_type: table("token_type_embeddings", cfg.type_vocab_size)?,
            emb_norm: norm(&emb, "LayerNorm", &cfg)?,
            layers,
            device: vb.device().clone(),
            sep_token_id: None,
            cfg,
        })
    }

    /// Reads a sequence as a text pair: `[CLS] a [SEP] b [SEP]`, the tokens after its first
    /// `sep` of token type 1 (as the tokenizer's pair encoding types them).
    pub fn with_pair_separator(mut self, sep: u32) -> Self {
        self.sep_token_id = Some(sep).filter(|_| self.cfg.type_vocab_size > 1);
        self
    }

    /// Each token's type, where some sequence has a second segment.
    fn token_types(&self, token_ids: &[u32], seqs: &[Range<usize>]) -> Option<Vec<u32>> {
        let sep = self.sep_token_id?;
        let types: Vec<u32> = seqs
            .iter()
            .flat_map(|r| {
                let ids = &token_ids[r.clone()];
                let first = ids.iter().position(|&t| t == sep).unwrap_or(ids.len());
                (0..ids.len()).map(move |i| u32::from(i > first))
            })
            .collect();
        types.contains(&1).then_some(types)
    }

    pub fn config(&self) -> &BertConfig {
        &self.cfg
    }

    /// The last hidden states [num_tokens, hidden] (f32) of packed sequences: `token_ids` holds
    /// every sequence's tokens back to back and `seqs` (in order, non-empty, covering all of
    /// `token_ids`) their ranges. Each token attends to its own sequence only; positions start at
    /// 0 in each sequence; token types are 0, and 1 after the first `[SEP]` of a text pair
    /// (`with_pair_separator`).
    pub fn hidden_states(&self, token_ids: &[u32], seqs: &[Range<usize>]) -> Result<Tensor> {
        let positions = self.check_inputs(token_ids, seqs)?;
        if seqs.is_empty() {
            return Tensor::zeros((0, self.cfg.hidden_size), DType::F32, &self.device);
        }
        let ids = Tensor::new(token_ids, &self.device)?;
        let positions = Tensor::new(positions.as_slice(), &self.device)?;
        let word = self.word.index_select(&ids, 0)?;
        let x = match self.token_types(token_ids, seqs) {
            Some(types) => {
                let types = Tensor::new(types.as_slice(), &self.device)?;
                (word + self.token_type.index_select(&types, 0)?)?
            }
            None => word.broadcast_add(&self.token_type.narrow(0, 0, 1)?)?,
        };
        let x = (x + self.position.index_select(&positions, 0)?)?;
        let mut x = self.emb_norm.forward(&x)?;
        for layer in &self.layers {
            x = layer.forward(&x, seqs, &self.cfg)?;
        }
        x.to_dtype(DType::F32)
    }

    /// The position of every token; errors for ranges that do not tile `token_ids`, a sequence
    /// longer than the position table or an id outside the vocabulary.
    fn check_inputs(&self, token_ids: &[u32], seqs: &[Range<usize>]) -> Result<Vec<u32>> {
        let (max_len, vocab) = (self.cfg.max_position_embeddings, self.cfg.vocab_size);
        let mut end = 0;
        for r in seqs {
            if r.start != end || r.is_empty() || r.len() > max_len {
                bail!("sequence {r:?} after {end}: not the next range of 1 to {max_len} tokens");
            }
            end = r.end;
        }
        if end != token_ids.len() {
            bail!("sequences cover {end} of {} tokens", token_ids.len());
        }
        if let Some(id) = token_ids.iter().find(|&&t| t as usize >= vocab) {
            bail!("token id {id} outside the vocabulary of {vocab}");
        }
        Ok(seqs.iter().flat_map(|r| 0..r.len() as u32).collect())
    }

    /// Bytes of every weight.
    pub fn weight_bytes(&self) -> u64 {
        let tables = [&self.word, &self.position, &self.token_type].map(tensor_bytes);
        let layers: u64 = self.layers.iter().map(BertLayer::bytes).sum();
        tables.iter().sum::<u64>() + norm_bytes(&self.emb_norm) + layers
    }

    pub fn device(&self) -> &Device {
        &self.device
    }
}

/// How a sequence's hidden states become one vector (sentence-transformers' pooling modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The mean of the sequence's rows.
    Mean,
    /// The first row ([CLS]).
    Cls,
    /// The last row.
    Last,
}

/// One entry of a sentence-transformers `modules.json`.
#[derive(Deserialize)]
struct StModule {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

impl StModule {
    /// The class name, lower case (`sentence_transformers.models.Pooling` → `pooling`).
    fn class(&self) -> String {
        let class = self.kind.rsplit('.').next().unwrap_or_default();
        class.to_ascii_lowercase()
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> ConfigResult<T> {
    let invalid =
        |e: &dyn std::fmt::Display| ConfigError::Invalid(format!("{}: {e}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| invalid(&e))?;
    serde_json::from_str(&text).map_err(|e| invalid(&e))
}

/// The modules of `dir/modules.json`; `None` without one (not a sentence-transformers folder).
fn st_modules(dir: &Path) -> ConfigResult<Option<Vec<StModule>>> {
    let path = dir.join("modules.json");
    path.is_file().then(|| read_json(&path)).transpose()
}

/// sentence-transformers' pooling flags, and the mode each is in weir (`None`: not run).
const MODES: [(&str, Option<Pooling>); 6] = [
    ("pooling_mode_mean_tokens", Some(Pooling::Mean)),
    ("pooling_mode_cls_token", Some(Pooling::Cls)),
    ("pooling_mode_lasttoken", Some(Pooling::Last)),
    ("pooling_mode_max_tokens", None),
    ("pooling_mode_mean_sqrt_len_tokens", None),
    ("pooling_mode_weightedmean_tokens", None),
];

impl Pooling {
    /// The pooling of the sentence-transformers checkpoint in `dir`: `None` without a
    /// `modules.json` or without a Pooling module in it. Errors name what weir does not run: a
    /// module other than Transformer, Pooling and Normalize (Dense, ...), a mode other than
    /// mean, cls and lasttoken (max, mean_sqrt_len, weightedmean), several modes at once,
    /// `include_prompt` false.
    pub fn from_sentence_transformers(dir: &Path) -> ConfigResult<Option<Self>> {
        let Some(modules) = st_modules(dir)? else {
            return Ok(None);
        };
        let unsupported = |m: String| Err(ConfigError::Unsupported(m));
        let known = ["transformer", "pooling", "normalize"];
        if let Some(m) = modules
            .iter()
            .find(|m| !known.contains(&m.class().as_str()))
        {
            return unsupported(format!(
                "sentence-transformers module {} ({:?})",
                m.kind, m.path
            ));
        }
        let Some(m) = modules.iter().find(|m| m.class() == "pooling") else {
            return Ok(None);
        };
        let cfg: serde_json::Value = read_json(&dir.join(&m.path).join("config.json"))?;
        let flag = |key: &str| cfg.get(key).and_then(|v| v.as_bool());
        if flag("include_prompt") == Some(false) {
            return unsupported("pooling include_prompt false".into());
        }
        let set: Vec<_> = MODES.iter().filter(|m| flag(m.0) == Some(true)).collect();
        match set.as_slice() {
            [(_, Some(p))] => Ok(Some(*p)),
            [(k, None)] => unsupported(format!("pooling mode {k}")),
            [] => Err(ConfigError::Invalid(format!("{}: no pooling mode", m.path))),
            many => {
                let keys: Vec<_> = many.iter().map(|m| m.0).collect();
                unsupported(format!("pooling modes {keys:?} at once"))
            }
        }
    }
}

/// Whether the sentence-transformers checkpoint in `dir` L2-normalizes its embeddings (a
/// Normalize module in `modules.json`); false without one or when it cannot be read.
pub fn normalizes(dir: &Path) -> bool {
    st_modules(dir)
        .ok()
        .flatten()
        .is_some_and(|ms| ms.iter().any(|m| m.class() == "normalize"))
}

/// One vector per sequence (not normalized) from `hidden` [num_tokens, hidden], reduced on the
/// host in row order.
pub fn pool(hidden: &Tensor, seqs: &[Range<usize>], pooling: Pooling) -> Result<Vec<Vec<f32>>> {
    let rows = hidden.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    seqs.iter()
        .map(|r| {
            if r.is_empty() || r.end > rows.len() {
                bail!("sequence {r:?} outside the {} rows", rows.len());
            }
            Ok(match pooling {
                Pooling::Cls => rows[r.start].clone(),
                Pooling::Last => rows[r.end - 1].clone(),
                Pooling::Mean => {
                    let mut sum = vec![0f32; rows[r.start].len()];
                    for row in &rows[r.clone()] {
                        sum.iter_mut().zip(row).for_each(|(s, x)| *s += x);
                    }
                    sum.iter().map(|s| s / r.len() as f32).collect()
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
