//! Every decoder a peer reaches on the way into a node's caches, fed arbitrary bytes and
//! damaged valid encodings (bits flipped, cut short, extended, bytes overwritten, length
//! prefixes raised): each returns a value or a typed error, never panics, and allocates in
//! proportion to the bytes it was given, whatever a length prefix claims. The decoded changes
//! then go through a coherence core, which must not panic either (DESIGN principle 3: nothing
//! from the network may panic a node or grow its memory unbounded).
//!
//! Property tests on the stable toolchain stand in for a coverage-guided fuzzer (cargo-fuzz
//! needs nightly): see docs/testing.md.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Instant;

use colony_actors::NodeId;
use colony_actors::caches::core::{CoherenceCore, CoreConfig};
use colony_actors::caches::msg::{Batch, Flush, FlushCache, Op, Stamp, SyncReply, SyncRequest};
use colony_runtime::wire::{
    Envelope, PROTOCOL_VERSION, Reply, WireError, decode, decode_payload, encode_payload,
};
use proptest::prelude::*;

// ---- an allocator that measures the peak of one thread's live bytes ----

/// The system allocator, counting the bytes each thread holds.
struct Metered;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn grew(bytes: usize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + bytes;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn shrank(bytes: usize) {
    // Memory freed here may have been allocated by another thread: never below zero.
    let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(bytes)));
}

// SAFETY: every call goes to `System` unchanged; the counters only observe sizes.
unsafe impl GlobalAlloc for Metered {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // Counted as if both blocks were live for a moment, as they may be.
            grew(new_size);
            shrank(layout.size());
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Metered = Metered;

/// Runs `f` and returns the most bytes this thread held at once during it, beyond what it held
/// before.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let start = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let out = f();
    (out, PEAK.with(Cell::get) - start)
}

/// The most a decoder may hold for `input` bytes: a small constant plus a multiple of the
/// input, never a multiple of what a length prefix claims. A decoded change costs about ten
/// times its smallest encoding in memory (`Vec` growth included).
fn allowed(input: usize) -> usize {
    8 * 1024 + 32 * input
}

// ---- the decoders ----

/// The envelope limit the tests decode with (the default `max_message_bytes` is larger; the
/// inputs here are small).
const LIMIT: usize = 1 << 20;

type Decoder = fn(&[u8]) -> Result<(), WireError>;

/// Every decoder a peer's bytes reach in the caches' path: the envelope and the reply around
/// each request, the `caches` service's requests (`apply`, `sync`, `flush`, `flush_cache`) and answers, their
/// parts, and the keys and values of the caches the process tests use.
const DECODERS: &[(&str, Decoder)] = &[
    ("Envelope", |b| decode::<Envelope>(b, LIMIT).map(drop)),
    ("Reply", |b| decode::<Reply>(b, LIMIT).map(drop)),
    ("Batch (apply)", |b| decode_payload::<Batch>(b).map(drop)),
    ("SyncRequest (sync)", |b| {
        decode_payload::<SyncRequest>(b).map(drop)
    }),
    ("SyncReply", |b| decode_payload::<SyncReply>(b).map(drop)),
    ("Flush (flush)", |b| decode_payload::<Flush>(b).map(drop)),
    ("FlushCache (flush_cache)", |b| {
        decode_payload::<FlushCache>(b).map(drop)
    }),
    ("usize (apply and flush answers)", |b| {
        decode_payload::<usize>(b).map(drop)
    }),
    ("Op", |b| decode_payload::<Op>(b).map(drop)),
    ("Stamp", |b| decode_payload::<Stamp>(b).map(drop)),
    ("String key", |b| decode_payload::<String>(b).map(drop)),
    ("u64 value", |b| decode_payload::<u64>(b).map(drop)),
];

/// Feeds `bytes` to every decoder: a value or a `Decode` error, within the allocation bound.
fn every_decoder_copes(bytes: &[u8]) -> Result<(), TestCaseError> {
    for (name, decoder) in DECODERS {
        let (result, peak) = peak_during(|| decoder(bytes));
        if let Err(e) = &result {
            prop_assert!(
                matches!(e, WireError::Decode { .. }),
                "{name}: {e:?} is not a decode error"
            );
        }
        prop_assert!(
            peak <= allowed(bytes.len()),
            "{name}: {peak} bytes held while decoding {} bytes",
            bytes.len()
        );
    }
    Ok(())
}

// ---- valid messages, and damage to them ----

fn stamp() -> impl Strategy<Value = Stamp> {
    (any::<u64>(), any::<u32>(), any::<[u8; 16]>()).prop_map(|(micros, logical, node)| Stamp {
        micros,
        logical,
        node,
    })
}

fn op() -> impl Strategy<Value = Op> {
    let bytes = |n| proptest::collection::vec(any::<u8>(), 0..n);
    prop_oneof![
        (bytes(24), stamp()).prop_map(|(key, stamp)| Op::Invalidate { key, stamp }),
        (bytes(24), bytes(48), stamp()).prop_map(|(key, value, stamp)| Op::Put {
            key,
            value,
            stamp
        }),
        stamp().prop_map(|stamp| Op::Clear { stamp }),
    ]
}

fn batch() -> impl Strategy<Value = Batch> {
    (
        proptest::option::of(any::<u64>()),
        any::<u64>(),
        proptest::collection::vec(("[a-z.]{0,12}", op()), 0..12),
    )
        .prop_map(|(seq, dropped, ops)| Batch { seq, dropped, ops })
}

fn sync_reply() -> impl Strategy<Value = SyncReply> {
    (any::<u64>(), stamp(), any::<u64>()).prop_map(|(mark, clock, dropped)| SyncReply {
        mark,
        clock,
        dropped,
    })
}

/// One way to damage an encoding; positions are taken modulo its length.
#[derive(Debug, Clone)]
enum Damage {
    FlipBit(usize, u8),
    Truncate(usize),
    Extend(Vec<u8>),
    Overwrite(usize, u8),
    /// Replaces the marker of the `n`th length-carrying header (array, map, string, binary)
    /// with one claiming the most its format allows (one of [`CLAIMS`]).
    Claim(usize, usize),
}

fn damage() -> impl Strategy<Value = Vec<Damage>> {
    let one = prop_oneof![
        1 => (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Damage::FlipBit(at, bit)),
        1 => any::<usize>().prop_map(Damage::Truncate),
        1 => proptest::collection::vec(any::<u8>(), 1..32).prop_map(Damage::Extend),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Damage::Overwrite(at, b)),
        // Weighted up: a claim is the damage a random position rarely makes.
        3 => (any::<usize>(), 0..CLAIMS.len()).prop_map(|(n, claim)| Damage::Claim(n, claim)),
    ];
    proptest::collection::vec(one, 1..4)
}

fn damaged(mut bytes: Vec<u8>, damage: &[Damage]) -> Vec<u8> {
    for d in damage {
        let len = bytes.len().max(1);
        match d {
            Damage::FlipBit(at, bit) => {
                if let Some(b) = bytes.get_mut(at % len) {
                    *b ^= 1 << bit;
                }
            }
            Damage::Truncate(at) => bytes.truncate(at % len),
            Damage::Extend(more) => bytes.extend_from_slice(more),
            Damage::Overwrite(at, b) => {
                if let Some(x) = bytes.get_mut(at % len) {
                    *x = *b;
                }
            }
            Damage::Claim(n, claim) => {
                // Bytes that look like such a marker; some are data, which does no harm.
                let markers: Vec<usize> = (0..bytes.len())
                    .filter(|&i| matches!(bytes[i], 0x80..=0xbf | 0xc4..=0xc6 | 0xd9..=0xdf))
                    .collect();
                let at = markers
                    .get(n % markers.len().max(1))
                    .copied()
                    .unwrap_or(n % len);
                let end = (at + 1).min(bytes.len());
                bytes.splice(at..end, CLAIMS[*claim].1.iter().copied());
            }
        }
    }
    bytes
}

/// A coherence core that takes changes from peer `from`, and the instant it started.
fn core_with_peer(from: NodeId) -> (CoherenceCore, Instant) {
    let me = NodeId::from_u128(1);
    let t0 = Instant::now();
    let mut core = CoherenceCore::new(me, CoreConfig::default());
    core.handle_view(t0, [(me, false), (from, false)]);
    while core.poll_output().is_some() {}
    (core, t0)
}

const WALL: u64 = 1_700_000_000_000_000;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn arbitrary_bytes_are_a_value_or_a_decode_error_within_the_allocation_bound(
        bytes in proptest::collection::vec(any::<u8>(), 0..1024),
    ) {
        every_decoder_copes(&bytes)?;
    }

    #[test]
    fn a_damaged_batch_is_a_value_or_a_decode_error_and_a_core_takes_what_decodes(
        batch in batch(),
        damage in damage(),
    ) {
        let bytes = encode_payload(&batch).unwrap();
        prop_assert_eq!(&decode_payload::<Batch>(&bytes).unwrap(), &batch);
        let bytes = damaged(bytes, &damage);
        every_decoder_copes(&bytes)?;
        // What still decodes is handled like any batch from that peer: no panic, and at most
        // one output per change plus the clears.
        if let Ok(batch) = decode_payload::<Batch>(&bytes) {
            let peer = NodeId::from_u128(2);
            let (mut core, t0) = core_with_peer(peer);
            let changes = batch.ops.len();
            core.handle_batch(t0, WALL, peer, batch);
            let outputs = std::iter::from_fn(|| core.poll_output()).count();
            prop_assert!(outputs <= changes + 2, "{outputs} outputs for {changes} changes");
        }
    }

    #[test]
    fn a_damaged_lease_answer_is_a_value_or_a_decode_error_and_a_core_takes_what_decodes(
        reply in sync_reply(),
        damage in damage(),
    ) {
        let bytes = encode_payload(&reply).unwrap();
        prop_assert_eq!(decode_payload::<SyncReply>(&bytes).unwrap(), reply);
        let bytes = damaged(bytes, &damage);
        every_decoder_copes(&bytes)?;
        if let Ok(reply) = decode_payload::<SyncReply>(&bytes) {
            let peer = NodeId::from_u128(2);
            let (mut core, t0) = core_with_peer(peer);
            core.handle_timeout(t0);
            let asked = std::iter::from_fn(|| core.poll_output()).count();
            // The answer to each question asked (and to one never asked).
            for id in 0..=asked as u64 + 1 {
                core.handle_sync_reply(t0, WALL, peer, id, reply);
            }
            while core.poll_output().is_some() {}
        }
    }

    #[test]
    fn a_damaged_envelope_of_a_change_is_a_value_or_a_decode_error(
        batch in batch(),
        damage in damage(),
    ) {
        let envelope = Envelope {
            version: PROTOCOL_VERSION,
            request_id: 7,
            from: NodeId::from_u128(2),
            kind: "apply".into(),
            payload: encode_payload(&batch).unwrap(),
        };
        let bytes = damaged(encode_payload(&envelope).unwrap(), &damage);
        every_decoder_copes(&bytes)?;
    }
}

/// MessagePack headers that claim the largest lengths their format allows.
const CLAIMS: &[(&str, &[u8])] = &[
    ("array32 of 2^32 - 1", &[0xdd, 0xff, 0xff, 0xff, 0xff]),
    ("map32 of 2^32 - 1", &[0xdf, 0xff, 0xff, 0xff, 0xff]),
    ("bin32 of 2^32 - 1 bytes", &[0xc6, 0xff, 0xff, 0xff, 0xff]),
    ("str32 of 2^32 - 1 bytes", &[0xdb, 0xff, 0xff, 0xff, 0xff]),
    (
        "ext32 of 2^32 - 1 bytes",
        &[0xc9, 0xff, 0xff, 0xff, 0xff, 0x01],
    ),
    ("array16 of 65535", &[0xdc, 0xff, 0xff]),
];

/// Wraps `claim` where each field of a batch, an envelope or a lease answer is read, in both
/// forms a struct may take (a map with names, an array).
fn claims_in_every_field() -> Vec<(String, Vec<u8>)> {
    let mut cases = Vec::new();
    for (what, claim) in CLAIMS {
        let named = |field: &str| {
            let mut b = vec![0x81, 0xa0 | field.len() as u8];
            b.extend_from_slice(field.as_bytes());
            b.extend_from_slice(claim);
            b
        };
        cases.push((format!("{what} alone"), claim.to_vec()));
        for field in [
            "ops", "seq", "dropped", "kind", "payload", "from", "ok", "clock",
        ] {
            cases.push((format!("{what} as `{field}`"), named(field)));
        }
        // A batch as an array: seq, dropped, then the claim as its ops.
        let mut b = vec![0x93, 0xc0, 0x00];
        b.extend_from_slice(claim);
        cases.push((format!("{what} as the ops of an array batch"), b));
        // One change whose cache name, then key, is the claim.
        let mut b = vec![0x81, 0xa3, b'o', b'p', b's', 0x91, 0x92];
        b.extend_from_slice(claim);
        cases.push((format!("{what} as a change's cache name"), b));
        let mut b = vec![0x81, 0xa3, b'o', b'p', b's', 0x91, 0x92, 0xa1, b'c', 0x81];
        b.extend_from_slice(&[0xaa]);
        b.extend_from_slice(b"Invalidate");
        b.extend_from_slice(&[0x81, 0xa3, b'k', b'e', b'y']);
        b.extend_from_slice(claim);
        cases.push((format!("{what} as an invalidation's key"), b));
    }
    cases
}

#[test]
fn a_length_prefix_claiming_billions_allocates_nothing_near_it() {
    for (what, bytes) in claims_in_every_field() {
        for (name, decoder) in DECODERS {
            let (result, peak) = peak_during(|| decoder(&bytes));
            assert!(
                matches!(result, Err(WireError::Decode { .. })),
                "{name}, {what}: {result:?}"
            );
            assert!(
                peak <= allowed(bytes.len()),
                "{name}, {what}: {peak} bytes held while decoding {} bytes",
                bytes.len()
            );
        }
    }
}

#[test]
fn the_meter_sees_an_allocation() {
    // The bound above means something only if the meter counts.
    let (v, peak) = peak_during(|| Vec::<u8>::with_capacity(1 << 20));
    drop(v);
    assert!(peak >= 1 << 20, "{peak}");
}
