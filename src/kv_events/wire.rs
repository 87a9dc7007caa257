//! vLLM's KV event wire format (`vllm/distributed/kv_events.py`), written with `rmp`:
//!
//! - a batch is a msgpack array `[ts (float64, Unix seconds), [event, ...], data_parallel_rank]`
//!   (msgspec `array_like`);
//! - an event is a map tagged by `"type"` (the struct's name), then its fields in declaration
//!   order; fields without a default are always written (nil when unset), defaulted ones left
//!   out (`omit_defaults`);
//! - a block hash is an unsigned integer: the low 64 bits of the digest read big-endian, as vLLM
//!   sends with `VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES` (its default).
//!
//! `medium` is `"GPU"`: vLLM's name for the engine's own KV pool on every platform (its CPU
//! build says `"GPU"` too); `"CPU"` there means an offload tier, which routers score lower.

use crate::kv::{BlockHash, KvEvent};
use rmp::encode;

/// The medium weir's KV pool reports (see the module doc).
pub const MEDIUM: &str = "GPU";

/// A block hash as vLLM's integer wire hash.
pub fn wire_hash(h: &BlockHash) -> u64 {
    u64::from_be_bytes(h.0[24..].try_into().expect("32-byte digest"))
}

/// One published batch: `ts` in Unix seconds, the events, and the data-parallel rank (always 0:
/// one weir process is one rank).
pub fn encode_batch(ts: f64, events: &[KvEvent]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64 + 8 * events.len());
    // NOTE: writes into a Vec never fail.
    let _ = encode::write_array_len(&mut buf, 3);
    let _ = encode::write_f64(&mut buf, ts);
    let _ = encode::write_array_len(&mut buf, events.len() as u32);
    for e in events {
        write_event(&mut buf, e);
    }
    let _ = encode::write_uint(&mut buf, 0);
    buf
}

fn write_event(buf: &mut Vec<u8>, e: &KvEvent) {
    match e {
        KvEvent::Stored {
            block_hashes,
            parent,
            token_ids,
            block_size,
        } => {
            tagged(buf, "BlockStored", 7);
            field(buf, "block_hashes");
            hashes(buf, block_hashes);
            field(buf, "parent_block_hash");
            match parent {
                Some(p) => {
                    let _ = encode::write_uint(buf, wire_hash(p));
                }
                None => {
                    let _ = encode::write_nil(buf);
                }
            }
            field(buf, "token_ids");
            let _ = encode::write_array_len(buf, token_ids.len() as u32);
            for &t in token_ids {
                let _ = encode::write_uint(buf, t as u64);
            }
            field(buf, "block_size");
            let _ = encode::write_uint(buf, *block_size as u64);
            field(buf, "lora_id");
            let _ = encode::write_nil(buf);
            medium(buf);
            field(buf, "lora_name");
            let _ = encode::write_nil(buf);
        }
        KvEvent::Removed { block_hashes } => {
            tagged(buf, "BlockRemoved", 2);
            field(buf, "block_hashes");
            hashes(buf, block_hashes);
            medium(buf);
        }
        KvEvent::AllCleared => {
            tagged(buf, "AllBlocksCleared", 0);
        }
    }
}

/// An event's map header: its `fields` and msgspec's `"type"` tag first.
fn tagged(buf: &mut Vec<u8>, tag: &str, fields: u32) {
    let _ = encode::write_map_len(buf, fields + 1);
    field(buf, "type");
    let _ = encode::write_str(buf, tag);
}

fn medium(buf: &mut Vec<u8>) {
    field(buf, "medium");
    let _ = encode::write_str(buf, MEDIUM);
}

fn field(buf: &mut Vec<u8>, name: &str) {
    let _ = encode::write_str(buf, name);
}

fn hashes(buf: &mut Vec<u8>, hs: &[BlockHash]) {
    let _ = encode::write_array_len(buf, hs.len() as u32);
    for h in hs {
        let _ = encode::write_uint(buf, wire_hash(h));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_vllms_msgpack() {
        let mut digest = [0u8; 32];
        digest[31] = 7;
        let h = BlockHash(digest);
        assert_eq!(wire_hash(&h), 7);
        let removed = encode_batch(
            1.5,
            &[KvEvent::Removed {
                block_hashes: vec![h],
            }],
        );
        let mut want = vec![0x93, 0xcb];
        want.extend_from_slice(&1.5f64.to_be_bytes());
        want.push(0x91); // one event
        want.push(0x83); // a map of three
        want.extend_from_slice(b"\xa4type\xacBlockRemoved");
        want.extend_from_slice(b"\xacblock_hashes\x91\x07");
        want.extend_from_slice(b"\xa6medium\xa3GPU");
        want.push(0x00); // rank 0
        assert_eq!(removed, want);
        let stored = encode_batch(
            0.0,
            &[KvEvent::Stored {
                block_hashes: vec![h],
                parent: None,
                token_ids: vec![1, 300],
                block_size: 2,
            }],
        );
        let text = String::from_utf8_lossy(&stored);
        for key in [
            "BlockStored",
            "parent_block_hash\u{fffd}",
            "token_ids",
            "lora_name",
        ] {
            assert!(text.contains(key), "{key} in {text:?}");
        }
        // token 300 is a uint16: 0xcd 0x01 0x2c
        assert!(stored
            .windows(5)
            .any(|w| w == [0x92, 0x01, 0xcd, 0x01, 0x2c]));
    }
}
