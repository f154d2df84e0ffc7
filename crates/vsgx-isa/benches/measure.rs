//! MRENCLAVE over an N-MiB enclave vs raw SHA-256 over the same measured bytes, in one process.
//!
//! `cargo bench -p vsgx-isa` runs the criterion groups and then prints the throughput ratio
//! `SHA-256 time / MRENCLAVE time` (goal ≥ 0.9: stream validation and record handling cost less than
//! a tenth of the hashing). SPECIFICATION.md promise S-ISA-1.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use sha2::{Digest, Sha256};
use vsgx_isa::sgxs::{self, ChunkMeasurement, LoadPlan, SgxsWriter};

/// A fully measured enclave of `mib` MiB of pages with varied content.
fn enclave_stream(mib: u64) -> Vec<u8> {
    let pages = mib * 256;
    let mut writer = SgxsWriter::new(1, (pages * 4096).next_power_of_two().max(8192)).expect("valid ECREATE");
    let mut page = [0u8; 4096];
    for i in 0..pages {
        for (j, b) in page.iter_mut().enumerate() {
            *b = (i as usize * 31 + j * 7) as u8;
        }
        writer.add_page(i * 4096, 0x203, &page, ChunkMeasurement::All).expect("canonical page");
    }
    writer.finish()
}

fn fastest(mut f: impl FnMut(), rounds: usize) -> Duration {
    (0..rounds)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    for mib in [1u64, 16] {
        let stream = enclave_stream(mib);
        let mut group = c.benchmark_group(format!("mrenclave_{mib}MiB"));
        group.throughput(Throughput::Bytes(stream.len() as u64));
        group.bench_function("sgxs_measure", |b| b.iter(|| sgxs::measure(black_box(&stream)).unwrap()));
        group.bench_function("raw_sha256", |b| b.iter(|| Sha256::digest(black_box(&stream))));
        group.bench_function("validate_only", |b| {
            b.iter(|| {
                let mut v = sgxs::Validator::new();
                for at in sgxs::Reader::new(black_box(&stream)) {
                    v.check(&at.unwrap()).unwrap();
                }
                v.pages()
            })
        });
        if mib == 1 {
            let plan = LoadPlan::from_sgxs(&stream).unwrap();
            group.bench_function("load_plan_eextend_path", |b| b.iter(|| black_box(&plan).mrenclave()));
        }
        group.finish();
    }
    c.final_summary();

    // The ratio the specification promises, measured in this process on the same bytes.
    let stream = enclave_stream(16);
    assert_eq!(sgxs::measure(&stream).unwrap().mrenclave, <[u8; 32]>::from(Sha256::digest(&stream)));
    let measure = fastest(
        || {
            black_box(sgxs::measure(black_box(&stream)).ok());
        },
        15,
    );
    let sha = fastest(
        || {
            black_box(Sha256::digest(black_box(&stream)));
        },
        15,
    );
    let mib = stream.len() as f64 / (1 << 20) as f64;
    println!(
        "MRENCLAVE over a 16 MiB enclave ({mib:.1} MiB measured): {:.0} MiB/s; raw SHA-256: {:.0} MiB/s; ratio {:.3} (goal >= 0.9)",
        mib / measure.as_secs_f64(),
        mib / sha.as_secs_f64(),
        sha.as_secs_f64() / measure.as_secs_f64()
    );
}
