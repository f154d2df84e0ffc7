//! Enclave execution end to end: WebAssembly enclaves built by the image builder, launched on a
//! bare-metal processor, entered with EENTER, interrupted, faulted, resumed.

mod common;

use std::sync::Arc;

use common::wasm::*;
use common::*;
use vsgx_hw::exec::image::{ImageParams, build_image};
use vsgx_isa::cpu::{AexCause, Cpl, Cpu, EnclaveExit, Exception, Gprs, LeafStatus, pfec};
use vsgx_isa::leaf::{Encls, Enclu};
use vsgx_isa::{ArchStruct, PageType, Pageinfo};

const ECHO: &str = r#"(module
  (import "vsgx" "copy_in" (func $copy_in (param i32 i64 i32)))
  (import "vsgx" "copy_out" (func $copy_out (param i64 i32 i32)))
  (import "env" "memory" (memory 1))
  ;; Uppercases the input.
  (func (export "ecall_upper") (param $in i64) (param $len i64) (param $out i64) (param $cap i64) (result i64)
    (local $i i32)
    (call $copy_in (i32.const 4096) (local.get $in) (i32.wrap_i64 (local.get $len)))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (i32.wrap_i64 (local.get $len))))
      (if (i32.and (i32.ge_u (i32.load8_u offset=4096 (local.get $i)) (i32.const 97))
                   (i32.le_u (i32.load8_u offset=4096 (local.get $i)) (i32.const 122)))
        (then (i32.store8 offset=4096 (local.get $i) (i32.sub (i32.load8_u offset=4096 (local.get $i)) (i32.const 32)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    (call $copy_out (local.get $out) (i32.const 4096) (i32.wrap_i64 (local.get $len)))
    (local.get $len))
  ;; Sums 4-byte words over the heap after filling them: touches every heap page.
  (func (export "ecall_sum") (param i64 i64 i64 i64) (result i64)
    (local $i i32) (local $s i64)
    (block $done (loop $fill
      (br_if $done (i32.ge_u (local.get $i) (i32.const 262144)))
      (i32.store (local.get $i) (local.get $i))
      (local.set $i (i32.add (local.get $i) (i32.const 4)))
      (br $fill)))
    (local.set $i (i32.const 0))
    (block $done2 (loop $add
      (br_if $done2 (i32.ge_u (local.get $i) (i32.const 262144)))
      (local.set $s (i64.add (local.get $s) (i64.extend_i32_u (i32.load (local.get $i)))))
      (local.set $i (i32.add (local.get $i) (i32.const 4)))
      (br $add)))
    (local.get $s))
  (func (export "ecall_trap") (param i64 i64 i64 i64) (result i64) unreachable))"#;

/// Σ i for i = 0, 4, …, 262140.
const SUM: i64 = 2 * 65_535 * 65_536;

fn heap_params() -> ImageParams {
    ImageParams { heap_bytes: 256 * 1024, ..ImageParams::default() }
}

#[test]
fn an_ecall_runs_and_returns_its_output() {
    let mut m = Machine::new();
    let w = launch(&mut m, &wat(ECHO), &heap_params(), 0);
    assert_eq!(call(&mut m, &w, "upper", b"hello, enclave"), (14, b"HELLO, ENCLAVE".to_vec()));
    assert_eq!(call(&mut m, &w, "sum", b"").0, SUM);
    assert_eq!(m.platform.executor().cached_modules(), 1, "compiled once per MRENCLAVE");
}

#[test]
fn budget_driven_aexs_resume_to_the_same_result() {
    let mut m = Machine::new();
    let w = launch(&mut m, &wat(ECHO), &heap_params(), 0);
    m.os.cpu().set_enclave_budget(Some(20_000));
    let (r, _, aexs) = call_with(&mut m, &w, "sum", b"", |_, e| panic!("{e}")).unwrap();
    assert_eq!(r, SUM);
    assert!(aexs > 5, "the call was interrupted ({aexs} AEXs)");
}

#[test]
fn an_ipi_forces_an_aex() {
    let mut m = Machine::new();
    let w = launch(&mut m, &wat(ECHO), &heap_params(), 0);
    m.os.cpu().interrupt_line().raise();
    let (r, _, aexs) = call_with(&mut m, &w, "sum", b"", |_, e| panic!("{e}")).unwrap();
    assert_eq!((r, aexs), (SUM, 1));
}

#[test]
fn a_page_evicted_mid_call_faults_and_the_call_completes_after_eldu() {
    let mut m = Machine::new();
    let w = launch(&mut m, &wat(ECHO), &heap_params(), 0);
    let heap = w.header.heap_offset;
    let victim_offset = heap + 40 * 4096;
    let victim = w.epc_of(victim_offset);
    // Evict the page at the first interrupt, reload it when the enclave faults on it.
    let va = m.epc_page();
    assert!(m.encls(Encls::Epa, PageType::Va as u64, va, 0).is_ok());
    let blob = m.put_bytes(&[0; 4096], 4096);
    let pcmd = m.put_bytes(&[0; 128], 128);
    let pi = m.put_bytes(&[0; 32], 32);
    m.os.cpu().set_enclave_budget(Some(20_000));
    // Evict the page at the first interrupt; reload it when the enclave faults on it.
    let mut evicted = false;
    let mut faults = 0;
    let interrupted = std::cell::Cell::new(0);
    let result = {
        let w = &w;
        let index = w.header.ecall("sum").unwrap() as u64;
        m.os.cpu().set_cpl(Cpl::Ring3);
        let mut regs = Gprs { rbx: w.tcs(), rcx: AEP, rdi: index, rip: RIP, ..Gprs::default() };
        let mut exit = m.os.cpu().enclu_leaf(Enclu::Eenter, &mut regs);
        loop {
            match exit {
                Ok(EnclaveExit::Eexit) => break regs.rdi as i64,
                Ok(EnclaveExit::Aex(AexCause::Interrupt)) => {
                    interrupted.set(interrupted.get() + 1);
                    if !evicted {
                        m.os.cpu().set_cpl(Cpl::Ring0);
                        assert_eq!(m.status(Encls::Eblock, 0, victim, 0), Ok(LeafStatus::Success));
                        assert_eq!(m.status(Encls::Etrack, 0, w.secs, 0), Ok(LeafStatus::Success));
                        let info = Pageinfo { linaddr: 0, srcpge: blob, secinfo_or_pcmd: pcmd, secs: 0 };
                        m.os.cpu().write(pi, info.bytes()).unwrap();
                        assert_eq!(m.status(Encls::Ewb, pi, victim, va), Ok(LeafStatus::Success));
                        m.os.cpu().set_cpl(Cpl::Ring3);
                        evicted = true;
                    }
                }
                Ok(EnclaveExit::Aex(AexCause::Exception(Exception::PageFault { linear, error_code }))) => {
                    faults += 1;
                    assert_eq!(linear, w.base + victim_offset);
                    assert_ne!(error_code & pfec::SGX, 0);
                    m.os.cpu().set_cpl(Cpl::Ring0);
                    let info = Pageinfo { linaddr: linear, srcpge: blob, secinfo_or_pcmd: pcmd, secs: w.secs };
                    m.os.cpu().write(pi, info.bytes()).unwrap();
                    assert_eq!(m.status(Encls::Eldu, pi, victim, va), Ok(LeafStatus::Success));
                    m.os.cpu().set_cpl(Cpl::Ring3);
                }
                other => panic!("{other:?}"),
            }
            regs.rbx = w.tcs();
            regs.rcx = AEP;
            exit = m.os.cpu().enclu_leaf(Enclu::Eresume, &mut regs);
        }
    };
    m.os.cpu().set_cpl(Cpl::Ring0);
    assert!(evicted && interrupted.get() > 0);
    assert_eq!(faults, 1, "exactly one #PF, on the evicted page");
    assert_eq!(result, SUM, "the call completed with the right result");
}

#[test]
fn a_trap_exits_with_ud_and_the_thread_reports_it() {
    let mut m = Machine::new();
    let w = launch(&mut m, &wat(ECHO), &heap_params(), 0);
    let e = call_with(&mut m, &w, "trap", b"", |_, _| false).unwrap_err();
    assert_eq!(e, Exception::InvalidOpcode);
    let tcs_page = m.platform.epc().page_of(w.epc_of(0x1000)).unwrap();
    let msg = m.platform.executor().last_trap(tcs_page).unwrap();
    assert!(msg.contains("unreachable"), "{msg}");
}

#[test]
fn the_enclave_cannot_touch_another_enclaves_pages() {
    let mut m = Machine::new();
    let a = launch(&mut m, &wat(ECHO), &heap_params(), 0);
    let b = launch(&mut m, &wat(ECHO), &heap_params(), 1);
    // B's heap page, read and written by A with copy_in/copy_out: a non-enclave access to EPC.
    let b_page = b.base + b.header.heap_offset;
    let b_epc = b.epc_of(b.header.heap_offset);
    let before = m.encls(Encls::Edbgrd, 0, b_epc, 0);
    // A's `upper` copies the input from outside linear memory: point it at B's page.
    m.os.cpu().set_cpl(Cpl::Ring3);
    let out_la = m.put_bytes(&[0; 4096], 4096);
    let mut regs = Gprs {
        rbx: a.tcs(),
        rcx: AEP,
        rdi: a.header.ecall("upper").unwrap() as u64,
        rsi: b_page,
        rdx: 16,
        rip: RIP,
        ..Gprs::default()
    };
    regs.r8_r15[0] = out_la;
    regs.r8_r15[1] = 4096;
    assert_eq!(m.os.cpu().enclu_leaf(Enclu::Eenter, &mut regs), Ok(EnclaveExit::Eexit));
    m.os.cpu().set_cpl(Cpl::Ring0);
    assert_eq!(m.read(out_la, 16), vec![0xFF; 16], "abort-page semantics: reads are all ones");
    let _ = before;
    let _ = Arc::clone(&m.platform);
}

#[test]
fn one_changed_module_byte_changes_mrenclave_and_the_old_sigstruct_fails() {
    let mut m = Machine::new();
    let module = wat(ECHO);
    let (sgxs, sig) = signed(&module, &heap_params());
    let mut changed = module.clone();
    // Flip a byte inside a function body (near the end, past the type/import sections).
    let at = changed.len() - 10;
    changed[at] ^= 0x01;
    if let Ok(img) = build_image(&changed, &heap_params()) {
        assert_ne!(img.mrenclave, sig.enclavehash);
        assert_eq!(
            launch_image(&mut m, &img.sgxs, &sig, 0).err(),
            Some(LeafStatus::Error(SgxError::InvalidMeasurement))
        );
    }
    // Even a byte the builder accepts unchanged in meaning changes MRENCLAVE (the name section).
    let mut renamed = wat(&ECHO.replace("ecall_trap", "ecall_trip"));
    renamed.truncate(renamed.len());
    let img = build_image(&renamed, &heap_params()).unwrap();
    assert_ne!(img.mrenclave, sig.enclavehash);
    assert_eq!(launch_image(&mut m, &img.sgxs, &sig, 1).err(), Some(LeafStatus::Error(SgxError::InvalidMeasurement)));
    assert!(launch_image(&mut m, &sgxs, &sig, 2).is_ok());
}

#[test]
fn cssa_and_nssa_rules_hold_across_aexs() {
    let mut m = Machine::new();
    // NSSA = 2: two AEXs fill both frames.
    let w = launch(&mut m, &wat(ECHO), &ImageParams { ssa_frames: 2, ..heap_params() }, 0);
    let index = w.header.ecall("sum").unwrap() as u64;
    m.os.cpu().set_enclave_budget(Some(20_000));
    m.os.cpu().set_cpl(Cpl::Ring3);
    let enter = |m: &mut Machine, leaf: Enclu| {
        let mut regs = Gprs { rbx: w.tcs(), rcx: AEP, rdi: index, rip: RIP, ..Gprs::default() };
        m.os.cpu().enclu_leaf(leaf, &mut regs)
    };
    // ERESUME with CSSA = 0 is #GP.
    assert_eq!(enter(&mut m, Enclu::Eresume), Err(Exception::GP0));
    // EENTER → AEX (CSSA 1), EENTER again on the next frame → AEX (CSSA 2 = NSSA).
    assert_eq!(enter(&mut m, Enclu::Eenter), Ok(EnclaveExit::Aex(AexCause::Interrupt)));
    assert_eq!(enter(&mut m, Enclu::Eenter), Ok(EnclaveExit::Aex(AexCause::Interrupt)));
    // No free SSA frame: EENTER is #GP.
    assert_eq!(enter(&mut m, Enclu::Eenter), Err(Exception::GP0));
    // Resuming unwinds the frames one by one; each resumed call still completes correctly.
    m.os.cpu().set_enclave_budget(None);
    assert_eq!(enter(&mut m, Enclu::Eresume), Ok(EnclaveExit::Eexit));
    assert_eq!(enter(&mut m, Enclu::Eresume), Ok(EnclaveExit::Eexit));
    assert_eq!(enter(&mut m, Enclu::Eresume), Err(Exception::GP0), "CSSA is back to 0");
    m.os.cpu().set_cpl(Cpl::Ring0);
    // A TCS page that is not a TCS of an initialized enclave faults EENTER itself.
    m.os.cpu().set_cpl(Cpl::Ring3);
    let mut regs = Gprs { rbx: w.base + w.header.heap_offset, rcx: AEP, rip: RIP, ..Gprs::default() };
    let e = m.os.cpu().enclu_leaf(Enclu::Eenter, &mut regs).unwrap_err();
    assert!(e.is_epcm_fault(), "{e}");
    m.os.cpu().set_cpl(Cpl::Ring0);
}

#[test]
fn after_epc_loss_eenter_faults_and_the_enclave_can_be_rebuilt() {
    let mut m = Machine::new();
    let w = launch(&mut m, &wat(ECHO), &heap_params(), 0);
    assert_eq!(call(&mut m, &w, "upper", b"before").1, b"BEFORE");
    m.platform.lose_epc();
    m.os.cpu().set_cpl(Cpl::Ring3);
    let mut regs = Gprs { rbx: w.tcs(), rcx: AEP, rip: RIP, ..Gprs::default() };
    let e = m.os.cpu().enclu_leaf(Enclu::Eenter, &mut regs).unwrap_err();
    m.os.cpu().set_cpl(Cpl::Ring0);
    assert!(e.is_epcm_fault(), "EENTER on a lost TCS is an EPCM #PF (SGX.md §10.2): {e}");
    // The OS rebuilds it (its EPC allocator hands out fresh pages) and it works again.
    let w2 = launch(&mut m, &wat(ECHO), &heap_params(), 1);
    assert_eq!(call(&mut m, &w2, "upper", b"after").1, b"AFTER");
}
