//! `KvCache`: the K and V storage of every layer, one pool of `num_blocks` blocks per layer.
//!
//! Layout per layer, row-major: `[num_blocks, block_size, num_kv_heads, head_dim]`, f32, so the
//! K row of a token is the contiguous range `slot * kv_dim .. (slot + 1) * kv_dim` with
//! `kv_dim = num_kv_heads * head_dim`. New K/V are written in place by slot; nothing is copied
//! when a sequence grows. Block bookkeeping lives in `BlockAllocator`; this file only holds memory.

/// Shape of the cache, derived from the model and the memory budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvCacheConfig {
    pub num_layers: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub block_size: usize,
    pub num_blocks: usize,
}

impl KvCacheConfig {
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// Bytes one block takes across all layers, K and V.
    pub fn bytes_per_block(&self) -> usize {
        2 * self.num_layers * self.block_size * self.kv_dim() * std::mem::size_of::<f32>()
    }

    /// Number of blocks that fit in `bytes` (at least 1).
    pub fn blocks_for_bytes(&self, bytes: usize) -> usize {
        (bytes / self.bytes_per_block()).max(1)
    }

    pub fn num_slots(&self) -> usize {
        self.num_blocks * self.block_size
    }
}

/// K and V pools of one layer.
pub struct LayerKv {
    /// [num_blocks * block_size, kv_dim]
    pub k: Vec<f32>,
    /// [num_blocks * block_size, kv_dim]
    pub v: Vec<f32>,
}

pub struct KvCache {
    config: KvCacheConfig,
    layers: Vec<LayerKv>,
}

impl KvCache {
    pub fn new(config: KvCacheConfig) -> Self {
        let n = config.num_slots() * config.kv_dim();
        let layers = (0..config.num_layers)
            .map(|_| LayerKv {
                k: vec![0.0; n],
                v: vec![0.0; n],
            })
            .collect();
        Self { config, layers }
    }

    pub fn config(&self) -> &KvCacheConfig {
        &self.config
    }

    pub fn layer_mut(&mut self, layer: usize) -> &mut LayerKv {
        &mut self.layers[layer]
    }
}
