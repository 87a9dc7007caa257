//! Paged KV cache: block bookkeeping (`block_allocator`, `block_table`) and the storage the
//! model writes into (`cache`). Only `cache.rs` knows about the memory layout of K/V.

pub mod block_allocator;
pub mod block_table;
pub mod cache;
pub mod events;
pub mod groups;

pub use block_allocator::{chain_hash, BlockAllocator, BlockHash, BlockId};
pub use block_table::{BlockTable, SlotId};
pub use cache::{KvCache, KvCacheConfig};
pub use events::{KvEvent, KvEventLog};
pub use groups::{group_key, KvGroups};
