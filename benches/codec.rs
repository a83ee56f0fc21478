//! Encode and decode throughput of `socketserver::framing::Codec` for 16 B to 1 MiB frames.
//!
//! `cargo bench --bench codec` (add `-- --test` for a quick check that every case runs).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use socketserver::framing::Codec;

const SIZES: [(usize, &str); 4] = [
    (16, "16B"),
    (1024, "1KiB"),
    (64 * 1024, "64KiB"),
    (1024 * 1024, "1MiB"),
];

fn encode(c: &mut Criterion) {
    let codec = Codec::new();
    let mut group = c.benchmark_group("encode");
    for (size, name) in SIZES {
        let payload = vec![0x5a; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("encode", name), &payload, |b, payload| {
            b.iter(|| codec.encode(black_box(payload)).unwrap())
        });
        // Into a reused buffer, as a `BufWriter` over a socket would see it.
        let mut out = Vec::with_capacity(size + 4);
        group.bench_with_input(
            BenchmarkId::new("write_frame", name),
            &payload,
            |b, payload| {
                b.iter(|| {
                    out.clear();
                    codec.write_frame(&mut out, black_box(payload)).unwrap();
                })
            },
        );
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let codec = Codec::new();
    let mut group = c.benchmark_group("decode");
    for (size, name) in SIZES {
        let wire = codec.encode(&vec![0x5a; size]).unwrap();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("read_frame", name), &wire, |b, wire| {
            b.iter(|| codec.read_frame(&mut black_box(&wire[..])).unwrap())
        });
        let mut buf = Vec::new();
        group.bench_with_input(
            BenchmarkId::new("read_frame_into", name),
            &wire,
            |b, wire| {
                b.iter(|| {
                    assert!(codec
                        .read_frame_into(&mut black_box(&wire[..]), &mut buf)
                        .unwrap());
                })
            },
        );
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
}

criterion_group! {
    name = benches;
    config = config();
    targets = encode, decode
}
criterion_main!(benches);
