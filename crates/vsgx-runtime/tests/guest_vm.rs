//! A guest booted by the runtime: the agent answers through the mailbox from its own vCPU thread;
//! a guest stuck in an endless ECALL is still stopped promptly; a bad mailbox is refused.

use std::sync::Arc;
use std::time::Duration;

use vsgx_hv::domain::{Domain, DomainSpec};
use vsgx_hv::epc::{DomainId, EpcManager};
use vsgx_hv::policy::{LaunchControl, SgxFeatures, VepcSection};
use vsgx_hw::exec::image::{ImageParams, build_image};
use vsgx_hw::platform::Platform;
use vsgx_isa::ArchStruct;
use vsgx_isa::signing::SigningKey;
use vsgx_runtime::{AgentError, BootInfo, GuestVm, RuntimeError, Status};

const KEY: &str = include_str!("../../vsgx-isa/tests/data/test-key.pem");
const RAM: u64 = 64 << 20;
const MAILBOX: u64 = 0xF000_0000;
const EPC_GPA: u64 = 0x1_0000_0000;
const EPC: u64 = 8 << 20;

fn domain(epc: &Arc<EpcManager>, id: u32) -> Domain {
    let spec = DomainSpec {
        name: format!("g{id}"),
        uuid: [0; 16],
        vcpus: 1,
        ram: vec![(0, RAM), (MAILBOX, 2 << 20)],
        epc: vec![VepcSection { gpa: EPC_GPA, size: EPC, node: 0 }],
        features: SgxFeatures::default(),
        launch: LaunchControl::default(),
        provision: false,
    };
    Domain::create(DomainId(id), spec, Arc::clone(epc)).unwrap()
}

fn boot_info() -> BootInfo {
    BootInfo { ram: vec![(0, RAM)], reserved: vec![(MAILBOX, 2 << 20), (EPC_GPA, EPC)] }
}

fn image(wat: &str) -> (Vec<u8>, Vec<u8>) {
    let module = wat::parse_str(wat).unwrap();
    let img = build_image(&module, &ImageParams::default()).unwrap();
    let sig = SigningKey::from_pem(KEY).unwrap().sign(&img.body, img.mrenclave).unwrap();
    (img.sgxs, sig.bytes().to_vec())
}

fn hello() -> (Vec<u8>, Vec<u8>) {
    image(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/enclaves/hello.wat")).unwrap())
}

const SPIN: &str = r#"(module
  (import "env" "memory" (memory 1))
  (func (export "ecall_spin") (param i64 i64 i64 i64) (result i64)
    (loop $forever (br $forever))
    (i64.const 0)))"#;

#[test]
fn the_agent_serves_from_its_own_vcpu_thread() {
    let epc = Arc::new(EpcManager::new(Platform::new(vsgx_hw::config::embedded_default())));
    let dom = domain(&epc, 1);
    let vm = GuestVm::boot(&dom, boot_info(), MAILBOX).unwrap();
    let agent = vm.agent();
    let mut agent = agent.lock().unwrap();
    let (sgxs, sig) = hello();
    let loaded = agent.load(&sgxs, &sig).unwrap();
    assert_eq!(loaded.ecalls, ["hello"]);
    let out = agent.call(loaded.enclave, "hello", b"runtime", 64).unwrap();
    assert_eq!((out.result, out.output.as_slice()), (14, b"Hello, RUNTIME".as_slice()));
    let stats = agent.stats().unwrap();
    assert_eq!((stats.total_pages, stats.enclaves), (EPC / 4096, 1));
    assert_eq!(agent.list().unwrap().len(), 1);
    // The guest's refusals come back as such, and the guest keeps serving.
    let Err(AgentError::Refused(f)) = agent.call(loaded.enclave, "nope", b"", 0) else { panic!("no such ECALL") };
    assert_eq!(f.status, Status::NO_SUCH_ECALL);
    let Err(AgentError::Refused(f)) = agent.load(&sgxs, &sig[..100]) else { panic!("short SIGSTRUCT") };
    assert!(!f.message.is_empty());
    let (released, free) = agent.destroy(loaded.enclave).unwrap();
    assert!(released > 0);
    assert_eq!(free, EPC / 4096);
    drop(agent);
    vm.shutdown();
    dom.destroy().unwrap();
    assert_eq!(epc.free_pages(), epc.total_pages(), "every EPC page is back");
}

#[test]
fn an_endless_ecall_does_not_keep_the_guest_from_stopping() {
    let epc = Arc::new(EpcManager::new(Platform::new(vsgx_hw::config::embedded_default())));
    let dom = domain(&epc, 2);
    let vm = GuestVm::boot(&dom, boot_info(), MAILBOX).unwrap();
    let (sgxs, sig) = image(SPIN);
    let link = vm.agent();
    let id = link.lock().unwrap().load(&sgxs, &sig).unwrap().enclave;
    let caller = std::thread::spawn(move || link.lock().unwrap().call(id, "spin", b"", 0));
    // Let the call get going (nothing to wait for: it never ends on its own).
    std::thread::sleep(Duration::from_millis(200));
    assert!(!caller.is_finished(), "the ECALL spins");
    vm.shutdown();
    let outcome = caller.join().unwrap();
    let Err(AgentError::Down(why)) = outcome else { panic!("a call interrupted by shutdown fails: {outcome:?}") };
    // On a loaded machine the vCPU may not have taken the doorbell within the sleep: then the
    // request never started, which is the other way for it to fail.
    assert!(why.contains("stopped during the request") || why.contains("vCPU has stopped"), "{why}");
    dom.destroy().unwrap();
    assert_eq!(epc.free_pages(), epc.total_pages());
}

#[test]
fn a_mailbox_outside_the_domain_memory_is_refused() {
    let epc = Arc::new(EpcManager::new(Platform::new(vsgx_hw::config::embedded_default())));
    let dom = domain(&epc, 3);
    let err = GuestVm::boot(&dom, boot_info(), MAILBOX + (2 << 20)).unwrap_err();
    assert!(matches!(err, RuntimeError::Mailbox { .. }), "{err}");
    // A memory map that hides the vEPC from the guest: the kernel refuses to boot.
    let bad = BootInfo { ram: vec![(0, RAM)], reserved: vec![(MAILBOX, 2 << 20)] };
    let err = GuestVm::boot(&dom, bad, MAILBOX).unwrap_err();
    assert!(matches!(err, RuntimeError::Boot(_)), "{err}");
}

/// The split API an async host uses: send, get woken by the hook, poll the answer; the hook also
/// runs when the vCPU stops, and the answer then says so.
#[test]
fn the_answer_hook_wakes_an_async_host() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use vsgx_runtime::{Request, Response};

    let epc = Arc::new(EpcManager::new(Platform::new(vsgx_hw::config::embedded_default())));
    let dom = domain(&epc, 4);
    let woken = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&woken);
    let hook: vsgx_runtime::AnswerHook = Arc::new(move || {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    let vm = GuestVm::boot_with_hook(&dom, boot_info(), MAILBOX, Some(hook)).unwrap();
    let link = vm.agent();
    let pending = link.lock().unwrap().send(&Request::Stats).unwrap();
    let answer = loop {
        if let Some(answer) = link.lock().unwrap().poll(&pending) {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    assert!(matches!(answer, Ok(Response::Stats(s)) if s.total_pages == EPC / 4096), "{answer:?}");
    assert_eq!(woken.load(Ordering::SeqCst), 1, "one answer, one wake-up");
    // A request the vCPU never answers: stopping it wakes the host, and the answer says why.
    let pending = link.lock().unwrap().send(&Request::List);
    vm.shutdown();
    assert!(woken.load(Ordering::SeqCst) >= 2, "the stop woke the host");
    if let Ok(pending) = pending {
        let answer = link.lock().unwrap().poll(&pending);
        assert!(matches!(answer, Some(Err(AgentError::Down(_))) | Some(Ok(_))), "{answer:?}");
    }
    dom.destroy().unwrap();
}
