//! xl.cfg parsing must be linear in the file size: a config is untrusted input, and a parser that
//! slows quadratically turns a large file into a denial of service.
//!
//! `cargo bench -p vsgx-toolstack` runs the criterion groups and then prints the time per byte of a
//! 100 000-line file over that of a 1 000-line file (goal ≤ 2: linear, allowing for caches), the
//! yardstick being the same parser on the small file, in the same process. SPECIFICATION.md S-TS-4.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use vsgx_toolstack::config::XlConfig;

/// `lines` lines of typical xl text: scalars, strings, a multi-line list, comments, `+=`.
fn config(lines: usize) -> String {
    let mut text = String::from("name = \"bench\"\nmemory = 512\n");
    let (mut i, mut n) = (0, 2);
    while n < lines {
        n += 7;
        text.push_str(&format!(
            "# key {i}\nkey{i} = \"value {i}\"\nnum{i} = {i}\nlist{i} = [ \"a\",\n  'b', # c\n  {i} ]\nlist{i} += \"d\"\n"
        ));
        i += 1;
    }
    text
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
    let small = config(1_000);
    let large = config(100_000);
    for (name, text) in [("1k_lines", &small), ("100k_lines", &large)] {
        let mut group = c.benchmark_group(format!("xl_parse_{name}"));
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.sample_size(10);
        group.bench_function("parse", |b| b.iter(|| XlConfig::parse("bench.cfg", black_box(text)).unwrap()));
        group.finish();
    }
    c.final_summary();

    let per_byte = |text: &str, rounds| {
        fastest(|| drop(black_box(XlConfig::parse("bench.cfg", black_box(text)).unwrap())), rounds).as_secs_f64()
            / text.len() as f64
    };
    let small_t = per_byte(&small, 50);
    let large_t = per_byte(&large, 5);
    println!(
        "xl parse: {:.1} MiB/s on 1k lines, {:.1} MiB/s on 100k lines ({} bytes); per-byte ratio large/small = {:.2} (goal <= 2)",
        1.0 / small_t / 1048576.0,
        1.0 / large_t / 1048576.0,
        large.len(),
        large_t / small_t
    );
}
