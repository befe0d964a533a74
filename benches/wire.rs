//! Encoding and decoding of the wire [`Envelope`], for a 64-byte and a 4 KiB payload.
//!
//! Run with `cargo bench --bench wire`. The limit is the default `max_message_bytes`, as on a
//! node; results are in `docs/benchmarks.md`.

use std::hint::black_box;

use colony_runtime::NodeId;
use colony_runtime::config::DEFAULT_MAX_MESSAGE_BYTES;
use colony_runtime::wire::{Envelope, PROTOCOL_VERSION, decode, encode};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// Payload sizes measured, in bytes.
const PAYLOADS: [usize; 2] = [64, 4096];

/// An envelope as a node sends it for an `echo` request of `size` bytes.
fn envelope(size: usize) -> Envelope {
    Envelope {
        version: PROTOCOL_VERSION,
        request_id: 123_456,
        from: NodeId::random(),
        kind: "echo".into(),
        payload: vec![0xA5; size],
    }
}

fn encode_envelope(c: &mut Criterion) {
    let mut group = c.benchmark_group("wire/encode");
    for size in PAYLOADS {
        let env = envelope(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &env, |b, env| {
            b.iter(|| encode(black_box(env), DEFAULT_MAX_MESSAGE_BYTES).expect("encode"));
        });
    }
    group.finish();
}

fn decode_envelope(c: &mut Criterion) {
    let mut group = c.benchmark_group("wire/decode");
    for size in PAYLOADS {
        let bytes = encode(&envelope(size), DEFAULT_MAX_MESSAGE_BYTES).expect("encode");
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &bytes, |b, bytes| {
            b.iter(|| {
                decode::<Envelope>(black_box(bytes), DEFAULT_MAX_MESSAGE_BYTES).expect("decode")
            });
        });
    }
    group.finish();
}

criterion_group!(benches, encode_envelope, decode_envelope);
criterion_main!(benches);
