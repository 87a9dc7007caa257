//! `KvCache`: the K and V storage of every layer, one pool of `num_blocks` blocks per storage
//! slot, allocated once on the model's device. A model with one KV group (`KvGroups`) has a
//! slot per layer; a hybrid one has `group_size` slots, each shared by one layer of every group
//! (a block id means the same rows in every slot; which group holds it is the allocator's).
//!
//! Layout per slot, row-major: `[num_blocks * block_size, num_kv_heads * head_dim]`, so the K
//! row of a token is row `slot` with `slot = block * block_size + offset`. New K/V are written
//! in place by slot; nothing is copied when a sequence grows. Block bookkeeping lives in
//! `BlockAllocator`; this file only holds memory. Two storages share the layout:
//! - `Host`: f32 `Vec`s, read by the CPU attention backend (the reference);
//! - `Device`: candle tensors in the model's dtype on any device (CUDA in production, CPU in
//!   the tests that check the tensor backend against the reference).

use super::groups::KvGroups;
use candle_core::{DType, Device, Result, Tensor};

/// Shape of the cache, derived from the model and the memory budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvCacheConfig {
    pub num_layers: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub block_size: usize,
    pub num_blocks: usize,
    /// Bytes per cached element (4 for f32, 2 for bf16/f16).
    pub dtype_size: usize,
    /// How the layers share blocks (`KvGroups::uniform(num_layers, ..)` for most models).
    pub groups: KvGroups,
}

impl KvCacheConfig {
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// Bytes one block takes across all storage slots, K and V.
    pub fn bytes_per_block(&self) -> usize {
        2 * self.num_storage_slots() * self.block_size * self.kv_dim() * self.dtype_size
    }

    /// Layers stored per block: every layer, or one group's.
    pub fn num_storage_slots(&self) -> usize {
        self.groups.group_size
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
pub enum LayerKv {
    /// [num_slots, kv_dim] f32 each, in host memory.
    Host { k: Vec<f32>, v: Vec<f32> },
    /// [num_slots, kv_dim] each, in the model's dtype on its device.
    Device { k: Tensor, v: Tensor },
}

pub struct KvCache {
    config: KvCacheConfig,
    layers: Vec<LayerKv>,
}

impl KvCache {
    /// Host f32 pools (the CPU backend).
    pub fn new_host(config: KvCacheConfig) -> Self {
        debug_assert_eq!(config.dtype_size, 4);
        let n = config.num_slots() * config.kv_dim();
        let layers = (0..config.num_storage_slots())
            .map(|_| LayerKv::Host {
                k: vec![0.0; n],
                v: vec![0.0; n],
            })
            .collect();
        Self { config, layers }
    }

    /// Tensor pools in `dtype` on `device` (the tensor and CUDA backends).
    pub fn new_device(config: KvCacheConfig, dtype: DType, device: &Device) -> Result<Self> {
        debug_assert_eq!(config.dtype_size, dtype.size_in_bytes());
        let shape = (config.num_slots(), config.kv_dim());
        let layers = (0..config.num_storage_slots())
            .map(|_| {
                Ok(LayerKv::Device {
                    k: Tensor::zeros(shape, dtype, device)?,
                    v: Tensor::zeros(shape, dtype, device)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self { config, layers })
    }

    pub fn config(&self) -> &KvCacheConfig {
        &self.config
    }

    /// Storage slot `slot` (a layer's, by `KvGroups::places`).
    pub fn layer(&self, slot: usize) -> &LayerKv {
        &self.layers[slot]
    }

    pub fn layer_mut(&mut self, slot: usize) -> &mut LayerKv {
        &mut self.layers[slot]
    }
}
