//! Tests of `BlockAllocator` (a file of their own to keep the allocator short).
use super::*;

/// A distinct hash per number.
fn hh(n: u64) -> BlockHash {
    chain_hash(BlockHash::root(None), &[n as u32, (n >> 32) as u32])
}
use proptest::prelude::*;
use std::collections::HashMap;

#[test]
fn basic_allocation() {
    let mut a = BlockAllocator::new(4);
    let b = a.allocate(3).unwrap();
    assert_eq!(b.len(), 3);
    assert_eq!(a.num_free(), 1);
    assert_eq!(a.num_used(), 3);
}

#[test]
fn fails_when_exhausted() {
    let mut a = BlockAllocator::new(2);
    assert!(a.allocate(3).is_none());
    assert_eq!(a.num_free(), 2, "a failed allocation takes nothing");
    let _b = a.allocate(2).unwrap();
    assert!(!a.can_allocate(1));
    assert!(a.allocate(1).is_none());
}

#[test]
fn free_returns_to_pool() {
    let mut a = BlockAllocator::new(3);
    let b = a.allocate(3).unwrap();
    a.free(&b[..1]);
    assert_eq!(a.num_free(), 1);
    a.free(&b[1..]);
    assert_eq!(a.num_free(), 3);
}

#[test]
fn shared_block_freed_by_last_owner() {
    let mut a = BlockAllocator::new(2);
    let b = a.allocate(1).unwrap();
    a.share(&b);
    a.free(&b);
    assert_eq!(a.num_free(), 1);
    a.free(&b);
    assert_eq!(a.num_free(), 2);
}

#[test]
#[should_panic(expected = "double free")]
fn double_free_panics() {
    let mut a = BlockAllocator::new(2);
    let b = a.allocate(1).unwrap();
    a.free(&b);
    a.free(&b);
}

#[test]
fn freed_blocks_stay_cached_until_evicted_lru() {
    let mut a = BlockAllocator::new(3);
    let b = a.allocate(2).unwrap();
    a.register(b[0], hh(100));
    a.register(b[1], hh(200));
    a.free(&b);
    assert_eq!((a.num_free(), a.num_cached()), (3, 2));
    // a hit takes the free block back without counting as a new allocation
    assert_eq!(a.acquire_cached(hh(200)), Some(b[1]));
    assert_eq!(a.num_free(), 2);
    // new blocks come from the least recently freed: the never-used block 2, then b[0]
    let n = a.allocate(2).unwrap();
    assert_eq!(n, vec![BlockId(2), b[0]]);
    assert_eq!(a.lookup(hh(100)), None, "b[0] was evicted");
    assert_eq!(a.lookup(hh(200)), Some(b[1]));
    a.free(&n);
    a.free(&[b[1]]);
    assert_eq!(a.num_free(), 3);
}

#[test]
fn a_hash_maps_to_one_block() {
    let mut a = BlockAllocator::new(2);
    let b = a.allocate(2).unwrap();
    a.register(b[0], hh(7));
    a.register(b[1], hh(7));
    assert_eq!(a.lookup(hh(7)), Some(b[0]));
    assert_eq!(a.acquire_cached(hh(7)), Some(b[0]));
    assert_eq!(a.ref_count(b[0]), 2);
    let root = BlockHash::root(None);
    assert_ne!(chain_hash(root, &[1, 2]), chain_hash(hh(1), &[1, 2]));
    assert_ne!(chain_hash(root, &[1, 2]), chain_hash(root, &[2, 1]));
    let salted = BlockHash::root(Some("tenant-a"));
    assert_ne!(chain_hash(root, &[1, 2]), chain_hash(salted, &[1, 2]));
    assert_ne!(salted, BlockHash::root(Some("tenant-b")));
    assert_ne!(BlockHash::root(Some("")), root);
}

#[derive(Debug, Clone)]
enum Op {
    Alloc(usize),
    Free(usize),
    Share(usize),
    /// register the first block of owner i under hash h
    Register(usize, u64),
    /// take a cached block by hash
    Hit(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..6).prop_map(Op::Alloc),
        (0usize..64).prop_map(Op::Free),
        (0usize..64).prop_map(Op::Share),
        (0usize..64, 0u64..8).prop_map(|(i, h)| Op::Register(i, h)),
        (0u64..8).prop_map(Op::Hit),
    ]
}

proptest! {
    /// Model-based test: owners are tracked in a plain map and compared after every op.
    #[test]
    fn allocator_matches_model(ops in proptest::collection::vec(op(), 1..200)) {
        let total = 16;
        let mut a = BlockAllocator::new(total);
        // owner handle -> blocks it holds
        let mut owners: Vec<Vec<BlockId>> = Vec::new();
        for op in ops {
            match op {
                Op::Alloc(n) => {
                    let ok = a.can_allocate(n);
                    match a.allocate(n) {
                        Some(b) => { prop_assert!(ok); owners.push(b); }
                        None => prop_assert!(!ok),
                    }
                }
                Op::Free(i) if !owners.is_empty() => {
                    let b = owners.swap_remove(i % owners.len());
                    a.free(&b);
                }
                Op::Share(i) if !owners.is_empty() => {
                    let b = owners[i % owners.len()].clone();
                    a.share(&b);
                    owners.push(b);
                }
                Op::Register(i, h) if !owners.is_empty() => {
                    if let Some(&b) = owners[i % owners.len()].first() {
                        a.register(b, hh(h));
                    }
                }
                Op::Hit(h) => {
                    let cached = a.lookup(hh(h));
                    let got = a.acquire_cached(hh(h));
                    prop_assert_eq!(got, cached);
                    if let Some(b) = got {
                        owners.push(vec![b]);
                    }
                }
                _ => {}
            }
            let mut expected: HashMap<BlockId, u32> = HashMap::new();
            for b in owners.iter().flatten() {
                *expected.entry(*b).or_default() += 1;
            }
            prop_assert_eq!(a.num_used(), expected.len());
            prop_assert_eq!(a.num_free() + a.num_used(), total);
            for (b, n) in &expected {
                prop_assert_eq!(a.ref_count(*b), *n);
            }
            for h in 0..8u64 {
                if let Some(b) = a.lookup(hh(h)) {
                    prop_assert_eq!(a.hashes[b.0 as usize], Some(hh(h)));
                }
            }
        }
        for b in owners.drain(..) {
            a.free(&b);
        }
        prop_assert_eq!(a.num_free(), total);
    }
}

/// Seeded stress loop: 20k rounds of random allocate/free, no block with two owners.
#[test]
fn seeded_stress_no_double_owner() {
    use rand::{rngs::StdRng, Rng, SeedableRng};
    let mut rng = StdRng::seed_from_u64(7);
    let total = 64;
    let mut a = BlockAllocator::new(total);
    let mut held: Vec<Vec<BlockId>> = Vec::new();
    for _ in 0..20_000 {
        if rng.random_bool(0.55) {
            if let Some(b) = a.allocate(rng.random_range(1..5)) {
                held.push(b);
            }
        } else if !held.is_empty() {
            let i = rng.random_range(0..held.len());
            a.free(&held.swap_remove(i));
        }
        let mut seen = std::collections::HashSet::new();
        for b in held.iter().flatten() {
            assert!(seen.insert(*b), "block {b:?} has two owners");
        }
        assert_eq!(seen.len() + a.num_free(), total);
    }
    for b in held {
        a.free(&b);
    }
    assert_eq!(a.num_free(), total);
}

#[test]
fn events_log_evictions_of_cached_blocks_only() {
    let mut a = BlockAllocator::new(2);
    a.enable_events();
    let b = a.allocate(2).unwrap();
    assert!(a.register(b[0], hh(1)));
    assert!(!a.register(b[1], hh(1)), "a hash keeps its first block");
    a.log_stored(hh(1), None, &[1, 2]);
    a.free(&b);
    // b[0] (cached) goes first: its hash is evicted and logged; b[1] was never cached
    a.allocate(2).unwrap();
    assert_eq!(
        a.take_events(),
        vec![
            KvEvent::Stored {
                block_hashes: vec![hh(1)],
                parent: None,
                token_ids: vec![1, 2],
                block_size: 2
            },
            KvEvent::Removed {
                block_hashes: vec![hh(1)]
            },
        ]
    );
    let mut off = BlockAllocator::new(1);
    let b = off.allocate(1).unwrap();
    off.register(b[0], hh(2));
    off.free(&b);
    off.allocate(1).unwrap();
    assert!(off.take_events().is_empty(), "no log unless enabled");
}

#[test]
fn unlogged_hashes_are_cached_but_never_logged() {
    let mut a = BlockAllocator::new(2);
    a.enable_events();
    let b = a.allocate(2).unwrap();
    assert!(a.register_unlogged(b[0], hh(1)));
    assert!(a.register(b[1], hh(2)));
    a.free(&b);
    assert_eq!(a.lookup(hh(1)), Some(b[0]));
    a.allocate(2).unwrap();
    assert_eq!(
        a.take_events(),
        vec![KvEvent::Removed {
            block_hashes: vec![hh(2)]
        }],
        "only the logged hash's eviction"
    );
    // the block is logged again once registered normally
    a.free(&b);
    let b = a.allocate(1).unwrap();
    assert!(a.register(b[0], hh(3)));
    a.free(&b);
    a.allocate(2).unwrap();
    assert_eq!(
        a.take_events(),
        vec![KvEvent::Removed {
            block_hashes: vec![hh(3)]
        }]
    );
}
