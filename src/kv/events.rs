//! KV cache events: what the prefix cache gained and lost, in the order it happened, for a
//! KV-aware router (vLLM's `BlockStored` / `BlockRemoved` / `AllBlocksCleared`).
//!
//! `KvEventLog` is filled by the `BlockAllocator` (evictions) and the scheduler (newly cached
//! full blocks, with their tokens) and drained once per step. A store that continues the
//! previous store's chain joins it, so one step's prompt chunk is one `Stored` event, as vLLM
//! sends one per request and step; consecutive removals likewise share one `Removed`.
//!
//! A consumer never sees a store whose parent it was not told about: the scheduler logs a
//! block only when its parent is still cached (a block whose parent was evicted while its
//! sequence ran on is unreachable by prefix lookups anyway).

use super::BlockHash;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvEvent {
    /// Full blocks newly held by the prefix cache: `block_hashes[i]` holds
    /// `token_ids[i * block_size..(i + 1) * block_size]`, and `parent` is the hash of the block
    /// before the first one (`None` for a prompt's first block).
    Stored {
        block_hashes: Vec<BlockHash>,
        parent: Option<BlockHash>,
        token_ids: Vec<u32>,
        block_size: usize,
    },
    /// Blocks the cache no longer holds (their memory went to another sequence).
    Removed { block_hashes: Vec<BlockHash> },
    /// Every cached block is gone (the model was unloaded).
    AllCleared,
}

/// The events of a cache since the last `take`.
#[derive(Debug, Default)]
pub struct KvEventLog {
    events: Vec<KvEvent>,
}

impl KvEventLog {
    /// Records a newly cached block whose parent is `parent` (`None`: the chain's first block).
    pub fn stored(&mut self, hash: BlockHash, parent: Option<BlockHash>, tokens: &[u32]) {
        if let Some(KvEvent::Stored {
            block_hashes,
            token_ids,
            block_size,
            ..
        }) = self.events.last_mut()
        {
            if parent.is_some()
                && block_hashes.last() == parent.as_ref()
                && *block_size == tokens.len()
            {
                block_hashes.push(hash);
                token_ids.extend_from_slice(tokens);
                return;
            }
        }
        self.events.push(KvEvent::Stored {
            block_hashes: vec![hash],
            parent,
            token_ids: tokens.to_vec(),
            block_size: tokens.len(),
        });
    }

    /// Records that the cache forgot `hash`.
    pub fn removed(&mut self, hash: BlockHash) {
        if let Some(KvEvent::Removed { block_hashes }) = self.events.last_mut() {
            block_hashes.push(hash);
            return;
        }
        self.events.push(KvEvent::Removed {
            block_hashes: vec![hash],
        });
    }

    /// The events since the last call, oldest first.
    pub fn take(&mut self) -> Vec<KvEvent> {
        std::mem::take(&mut self.events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::chain_hash;

    #[test]
    fn a_chain_is_one_store_and_removals_coalesce() {
        let root = BlockHash::root(None);
        let a = chain_hash(root, &[1, 2]);
        let b = chain_hash(a, &[3, 4]);
        let c = chain_hash(root, &[9, 9]);
        let mut log = KvEventLog::default();
        log.stored(a, None, &[1, 2]);
        log.stored(b, Some(a), &[3, 4]);
        // another chain starts a new event
        log.stored(c, None, &[9, 9]);
        log.removed(a);
        log.removed(b);
        let got = log.take();
        assert_eq!(
            got,
            vec![
                KvEvent::Stored {
                    block_hashes: vec![a, b],
                    parent: None,
                    token_ids: vec![1, 2, 3, 4],
                    block_size: 2
                },
                KvEvent::Stored {
                    block_hashes: vec![c],
                    parent: None,
                    token_ids: vec![9, 9],
                    block_size: 2
                },
                KvEvent::Removed {
                    block_hashes: vec![a, b]
                },
            ]
        );
        assert!(log.take().is_empty());
    }
}
