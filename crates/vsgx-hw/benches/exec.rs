//! Enclave execution benchmarks (SPECIFICATION.md S-EXEC-1/2), as ratios to the same WebAssembly
//! run by the same engine (wasmi) outside the model, in the same process:
//!
//! 1. EENTER + EEXIT of an empty ECALL vs instantiating and calling the same module directly;
//! 2. a memory-heavy compute loop inside the enclave (every access EPCM-checked on first touch
//!    per page and entry) vs the uninstrumented module outside.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use vsgx_hw::config;
use vsgx_hw::cpu::BareMetalCpu;
use vsgx_hw::exec::image::{ImageParams, build_image};
use vsgx_hw::os::{SimpleOs, default_base};
use vsgx_hw::platform::Platform;
use vsgx_isa::cpu::{Cpl, Cpu, EnclaveExit, Gprs};
use vsgx_isa::leaf::Enclu;
use vsgx_isa::sgxs::LoadPlan;
use vsgx_isa::signing::SigningKey;
use wasmi::{Engine, Linker, Memory, MemoryType, Module, Store};

const KEY: &str = include_str!("../../vsgx-isa/tests/data/test-key.pem");

const MODULE: &str = r#"(module
  (import "env" "memory" (memory 16))
  (func (export "ecall_empty") (param i64 i64 i64 i64) (result i64) (i64.const 0))
  ;; 8 passes over 1 MiB of the heap: store then load-and-add every word.
  (func (export "ecall_compute") (param i64 i64 i64 i64) (result i64)
    (local $i i32) (local $pass i32) (local $s i64)
    (block $end (loop $passes
      (br_if $end (i32.ge_u (local.get $pass) (i32.const 8)))
      (local.set $i (i32.const 0))
      (block $done (loop $next
        (br_if $done (i32.ge_u (local.get $i) (i32.const 1048576)))
        (i32.store (local.get $i) (i32.add (local.get $i) (local.get $pass)))
        (local.set $s (i64.add (local.get $s) (i64.extend_i32_u (i32.load (local.get $i)))))
        (local.set $i (i32.add (local.get $i) (i32.const 4)))
        (br $next)))
      (local.set $pass (i32.add (local.get $pass) (i32.const 1)))
      (br $passes)))
    (local.get $s)))"#;

struct Enclave {
    os: SimpleOs<BareMetalCpu>,
    tcs: u64,
    ecalls: Vec<String>,
}

fn enclave() -> Enclave {
    let module = wat::parse_str(MODULE).unwrap();
    let img = build_image(&module, &ImageParams { heap_bytes: 1 << 20, ..ImageParams::default() }).unwrap();
    let key = SigningKey::from_pem(KEY).unwrap();
    let sig = key.sign(&img.body, img.mrenclave).unwrap();
    let mut cfg = config::embedded_default();
    cfg.seed = Some(9);
    let platform = Platform::new(cfg);
    let mut os = SimpleOs::boot(BareMetalCpu::new(Arc::clone(&platform)), platform.ram().size()).unwrap();
    let plan = LoadPlan::from_sgxs(&img.sgxs).unwrap();
    let base = default_base(plan.size, true);
    let built = os.build(&plan, &sig, base).unwrap();
    os.einit(built.secs, &sig).unwrap();
    os.cpu().set_cpl(Cpl::Ring3);
    Enclave { os, tcs: base + 0x1000, ecalls: img.header.ecalls }
}

impl Enclave {
    fn call(&mut self, name: &str) -> i64 {
        let index = self.ecalls.iter().position(|e| e == name).unwrap() as u64;
        let mut regs = Gprs { rbx: self.tcs, rcx: 0x40_2000, rdi: index, rip: 0x40_1000, ..Gprs::default() };
        assert_eq!(self.os.cpu().enclu_leaf(Enclu::Eenter, &mut regs), Ok(EnclaveExit::Eexit));
        regs.rdi as i64
    }
}

/// The same module run by wasmi directly: no instrumentation, no EPC.
fn direct(engine: &Engine, module: &Module, name: &str) -> i64 {
    let mut store = Store::new(engine, ());
    let memory = Memory::new(&mut store, MemoryType::new(16, Some(16))).unwrap();
    let mut linker = Linker::new(engine);
    linker.define("env", "memory", memory).unwrap();
    let instance = linker.instantiate_and_start(&mut store, module).unwrap();
    let f = instance.get_typed_func::<(i64, i64, i64, i64), i64>(&store, &format!("ecall_{name}")).unwrap();
    f.call(&mut store, (0, 0, 0, 0)).unwrap()
}

fn fastest(rounds: usize, mut f: impl FnMut()) -> Duration {
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
    let mut e = enclave();
    let engine = Engine::default();
    let module = Module::new(&engine, &wat::parse_str(MODULE).unwrap()[..]).unwrap();
    assert_eq!(e.call("compute"), direct(&engine, &module, "compute"), "same result inside and outside");

    let mut g = c.benchmark_group("enclave_exec");
    g.bench_function("eenter_eexit_empty", |b| b.iter(|| black_box(e.call("empty"))));
    g.bench_function("direct_wasmi_empty", |b| b.iter(|| black_box(direct(&engine, &module, "empty"))));
    g.sample_size(20);
    g.bench_function("enclave_compute_8MiB", |b| b.iter(|| black_box(e.call("compute"))));
    g.bench_function("direct_wasmi_compute_8MiB", |b| b.iter(|| black_box(direct(&engine, &module, "compute"))));
    g.finish();
    c.final_summary();

    let rt = fastest(300, || {
        black_box(e.call("empty"));
    });
    let rt_direct = fastest(300, || {
        black_box(direct(&engine, &module, "empty"));
    });
    let inside = fastest(7, || {
        black_box(e.call("compute"));
    });
    let outside = fastest(7, || {
        black_box(direct(&engine, &module, "compute"));
    });
    println!(
        "EENTER+EEXIT of an empty ECALL: {:.1} µs (wasmi instantiate+call outside: {:.1} µs, {:.1}x)",
        rt.as_secs_f64() * 1e6,
        rt_direct.as_secs_f64() * 1e6,
        rt.as_secs_f64() / rt_direct.as_secs_f64()
    );
    println!(
        "compute loop (8 passes over 1 MiB): {:.2} ms in the enclave, {:.2} ms outside: overhead {:.2}x",
        inside.as_secs_f64() * 1e3,
        outside.as_secs_f64() * 1e3,
        inside.as_secs_f64() / outside.as_secs_f64()
    );
}
