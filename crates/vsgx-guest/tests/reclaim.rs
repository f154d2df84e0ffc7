//! In-guest EPC reclaim inside a domain: a 24 MiB working set in 8 MiB of vEPC, SECS-last
//! eviction across enclaves, EPC loss between ECALLs and between an eviction and its reload, and
//! teardown returning every page to the guest allocator and the host.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use vsgx_guest::GuestError;
use vsgx_guest::driver::{Driver, EnclaveId};
use vsgx_guest::kernel::{BootInfo, Kernel};
use vsgx_guest::sdk::{ManagedEnclave, Reprovision};
use vsgx_hv::domain::{Domain, DomainSpec};
use vsgx_hv::epc::{DomainId, EpcManager};
use vsgx_hv::policy::{LaunchControl, SgxFeatures, VepcSection};
use vsgx_hv::vcpu::Vcpu;
use vsgx_hw::config;
use vsgx_hw::exec::image::{ImageParams, build_image};
use vsgx_hw::platform::Platform;
use vsgx_isa::ArchStruct;
use vsgx_isa::cpu::{AexCause, Cpl, Cpu, EnclaveExit, Gprs};
use vsgx_isa::leaf::Enclu;
use vsgx_isa::signing::SigningKey;

const KEY: &str = include_str!("../../vsgx-isa/tests/data/test-key.pem");
const HEAP_WALK: &str = include_str!("data/heap_walk.wat");
const RAM: u64 = 256 << 20;
const EPC_GPA: u64 = 0x1_0000_0000;
const VEPC_MIB: u64 = 8;
const HEAP: u64 = 24 << 20;
const K: u64 = 0x9E37_79B9_7F4A_7C15;

struct Image {
    sgxs: Vec<u8>,
    sig: Vec<u8>,
    fill: u64,
}

fn sign(module: &[u8], params: &ImageParams) -> (vsgx_hw::exec::image::Image, Vec<u8>) {
    let img = build_image(module, params).unwrap();
    let key = SigningKey::from_pem(KEY).unwrap();
    let mut body = img.body;
    body.date = 0x2026_0101;
    let sig = key.sign(&body, img.mrenclave).unwrap().bytes().to_vec();
    (img, sig)
}

fn heap_walk(heap: u64) -> Image {
    heap_walk_with(&ImageParams { heap_bytes: heap, ..ImageParams::default() })
}

fn heap_walk_with(params: &ImageParams) -> Image {
    let (img, sig) = sign(&wat::parse_str(HEAP_WALK).unwrap(), params);
    let fill = img.header.ecall("fill").unwrap() as u64;
    Image { fill, sgxs: img.sgxs, sig }
}

fn example(name: &str) -> (Vec<u8>, Vec<u8>) {
    let path = format!("{}/../../examples/enclaves/{name}.wat", env!("CARGO_MANIFEST_DIR"));
    let (img, sig) = sign(&wat::parse_file(path).unwrap(), &ImageParams::default());
    (img.sgxs, sig)
}

/// The wrapping sum `heap_walk` computes over a heap of `heap` bytes filled with `seed`.
fn expected(seed: u64, heap: u64) -> u64 {
    (4096..heap).step_by(8).fold(0u64, |s, a| s.wrapping_add(a.wrapping_mul(K).wrapping_add(seed)))
}

struct Guest {
    domain: Domain,
    driver: Driver<Vcpu>,
}

fn manager(seed: u64) -> Arc<EpcManager> {
    let mut cfg = config::embedded_default();
    cfg.seed = Some(seed);
    Arc::new(EpcManager::new(Platform::new(cfg)))
}

fn in_domain(epc: &Arc<EpcManager>, id: u32, epc_mib: u64) -> Guest {
    in_domain_bytes(epc, id, epc_mib << 20)
}

fn in_domain_bytes(epc: &Arc<EpcManager>, id: u32, epc_bytes: u64) -> Guest {
    in_domain_with(epc, id, epc_bytes, 1)
}

fn in_domain_with(epc: &Arc<EpcManager>, id: u32, epc_bytes: u64, vcpus: u32) -> Guest {
    let spec = DomainSpec {
        name: format!("r{id}"),
        uuid: [0; 16],
        vcpus,
        ram: vec![(0, RAM)],
        epc: vec![VepcSection { gpa: EPC_GPA, size: epc_bytes, node: 0 }],
        features: SgxFeatures::default(),
        launch: LaunchControl::default(),
        provision: false,
    };
    let domain = Domain::create(DomainId(id), spec, Arc::clone(epc)).unwrap();
    let info = BootInfo { ram: vec![(0, RAM)], reserved: vec![(EPC_GPA, epc_bytes)] };
    let driver = Driver::new(Kernel::boot(domain.vcpu(0).unwrap(), &info).unwrap());
    Guest { domain, driver }
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

/// Every guest EPC page is free, resident in an enclave or a VA page.
fn assert_accounted(driver: &Driver<Vcpu>) {
    let s = driver.epc_stats();
    assert_eq!(s.accounted(), s.total, "{s:?}");
}

/// Destroys every enclave, then checks the guest allocator and the host got every page back.
fn teardown(mut g: Guest, epc: &Arc<EpcManager>, ids: &[EnclaveId]) {
    for &id in ids {
        g.driver.destroy(id).unwrap();
    }
    let total = g.driver.kernel().total_epc_pages();
    assert_eq!(g.driver.kernel().free_epc_pages(), total, "teardown returns every page to the guest allocator");
    let s = g.driver.epc_stats();
    assert!(s.per_enclave.is_empty() && s.resident == 0 && s.va_pages == 0 && s.evicted == 0, "{s:?}");
    let host = epc.stats();
    assert_eq!(host.per_domain[&DomainId(g.domain.shared().id.0)].resident, total);
    assert_eq!(host.quarantined, 0);
    let Guest { domain, .. } = g;
    domain.destroy().unwrap();
    let host = epc.stats();
    assert_eq!((host.free, host.quarantined), (host.total, 0), "the host got every EPC page back");
    epc.check_conservation().unwrap();
    epc.audit().unwrap();
}

#[test]
fn a_24_mib_working_set_runs_in_8_mib_of_vepc() {
    let epc = manager(11);
    let mut g = in_domain(&epc, 1, VEPC_MIB);
    let img = heap_walk(HEAP);
    let heap_pages = HEAP / 4096;
    let total = g.driver.kernel().total_epc_pages();
    assert_eq!(total, VEPC_MIB << 8);

    // Loading an enclave three times the vEPC evicts its own measured pages as it goes.
    let mut walk = ManagedEnclave::load(&mut g.driver, &img.sgxs, &img.sig, None).unwrap();
    let id = walk.id();
    let loaded = g.driver.epc_stats();
    assert!(loaded.evictions >= heap_pages - total, "{loaded:?}");
    assert_eq!(loaded.reloads, 0);
    assert_accounted(&g.driver);
    assert_eq!(loaded.per_enclave[&id].resident + loaded.per_enclave[&id].evicted, 1 + heap_pages + 5);

    // fill + sum twice over the whole 24 MiB heap, in one ECALL.
    let out = walk.call(&mut g.driver, "run", &42u64.to_le_bytes(), 16).unwrap();
    assert_eq!(out.result, 16);
    assert_eq!((u64_at(&out.output, 0), u64_at(&out.output, 8)), (expected(42, HEAP), expected(43, HEAP)));
    let ran = g.driver.epc_stats();
    let (evicted, reloaded) = (ran.evictions - loaded.evictions, ran.reloads - loaded.reloads);
    // Each of the four passes faults in at least the part of the heap that was not resident.
    assert!(reloaded >= 4 * (heap_pages - total), "{ran:?}");
    assert!(evicted + total >= reloaded, "{ran:?}");
    let mine = ran.per_enclave[&id];
    assert!(mine.resident <= total && mine.reloads == ran.reloads && mine.evictions == ran.evictions, "{mine:?}");
    assert!(mine.secs_resident);
    assert_eq!(mine.va_pages, (heap_pages + 6u64).div_ceil(512));
    assert_accounted(&g.driver);

    // The heap keeps its contents across ECALLs, through evictions.
    let out = walk.call(&mut g.driver, "sum", b"", 8).unwrap();
    assert_eq!(u64_at(&out.output, 0), expected(43, HEAP));
    assert_eq!(walk.rebuilds(), 0);
    println!("{:?}", g.driver.epc_stats());
    teardown(g, &epc, &[id]);
}

#[test]
fn secs_goes_last_and_comes_back_first() {
    let epc = manager(12);
    let mut g = in_domain(&epc, 2, VEPC_MIB);
    let (sgxs, sig) = example("counter");
    let mut counter = ManagedEnclave::load(&mut g.driver, &sgxs, &sig, None).unwrap();
    assert_eq!(counter.call(&mut g.driver, "increment", b"", 8).unwrap().output, 1u64.to_le_bytes());

    // A big enclave pushes every page of the counter out, its SECS after its last child.
    let img = heap_walk(HEAP);
    let mut walk = ManagedEnclave::load(&mut g.driver, &img.sgxs, &img.sig, None).unwrap();
    let s = g.driver.epc_stats();
    let c = s.per_enclave[&counter.id()];
    assert_eq!((c.resident, c.secs_resident, c.va_pages), (0, false, 1), "{c:?}");
    assert_eq!(c.evicted, g.driver.enclave(counter.id()).unwrap().page_offsets().count() as u64 + 1);
    assert_accounted(&g.driver);

    // Calling it reloads the SECS first, then what the entry needs, then the page it touches.
    assert_eq!(counter.call(&mut g.driver, "increment", b"", 8).unwrap().output, 2u64.to_le_bytes());
    let c = g.driver.epc_stats().per_enclave[&counter.id()];
    // SECS + TCS, two SSA frames, header and code page + the heap page holding the counter.
    assert!(c.secs_resident && c.reloads >= 7, "{c:?}");

    // Both run, alternately, and each keeps its state.
    let out = walk.call(&mut g.driver, "run", &7u64.to_le_bytes(), 16).unwrap();
    assert_eq!(u64_at(&out.output, 0), expected(7, HEAP));
    assert_eq!(counter.call(&mut g.driver, "increment", b"", 8).unwrap().output, 3u64.to_le_bytes());
    assert_eq!(counter.call(&mut g.driver, "get", b"", 8).unwrap().output, 3u64.to_le_bytes());
    assert_accounted(&g.driver);
    let ids = [counter.id(), walk.id()];
    teardown(g, &epc, &ids);
}

/// A re-provisioning hook that restores the workload's state (fills the heap with `seed` again)
/// and counts its calls.
fn refill(fill: u64, seed: u64, calls: &Arc<AtomicU32>) -> Reprovision<Vcpu> {
    let calls = Arc::clone(calls);
    Box::new(move |driver: &mut Driver<Vcpu>, id| {
        calls.fetch_add(1, Ordering::SeqCst);
        driver.call(id, fill, &seed.to_le_bytes(), 8).map(drop)
    })
}

#[test]
fn epc_loss_between_ecalls_is_enclave_lost_and_recovery_rebuilds() {
    let epc = manager(13);
    let mut g = in_domain(&epc, 3, VEPC_MIB);
    let img = heap_walk(HEAP);

    // Without a recovery policy: EnclaveLost, and the lost enclave holds no EPC any more.
    let mut plain = ManagedEnclave::load(&mut g.driver, &img.sgxs, &img.sig, None).unwrap();
    plain.call(&mut g.driver, "fill", &5u64.to_le_bytes(), 8).unwrap();
    g.domain.reset_epc().unwrap();
    let err = plain.call(&mut g.driver, "sum", b"", 8).unwrap_err();
    assert_eq!(err, GuestError::EnclaveLost(plain.id().0));
    assert!(matches!(plain.call(&mut g.driver, "sum", b"", 8), Err(GuestError::EnclaveLost(_))));
    let lost = g.driver.epc_stats().per_enclave[&plain.id()];
    assert_eq!((lost.resident, lost.evicted, lost.va_pages), (0, 0, 0), "{lost:?}");
    assert_eq!(g.driver.kernel().free_epc_pages(), g.driver.kernel().total_epc_pages());
    g.driver.destroy(plain.id()).unwrap();

    // With one: the workload (fill, then sums) continues across the loss.
    let calls = Arc::new(AtomicU32::new(0));
    let mut managed =
        ManagedEnclave::load(&mut g.driver, &img.sgxs, &img.sig, Some(refill(img.fill, 9, &calls))).unwrap();
    g.driver.call(managed.id(), img.fill, &9u64.to_le_bytes(), 8).unwrap();
    assert_eq!(u64_at(&managed.call(&mut g.driver, "sum", b"", 8).unwrap().output, 0), expected(9, HEAP));
    g.domain.reset_epc().unwrap();
    let before = managed.id();
    assert_eq!(u64_at(&managed.call(&mut g.driver, "sum", b"", 8).unwrap().output, 0), expected(9, HEAP));
    assert_ne!(managed.id(), before);
    assert_eq!((managed.rebuilds(), calls.load(Ordering::SeqCst)), (1, 1));
    assert!(g.driver.enclave(before).is_none(), "the lost instance was torn down");
    assert_accounted(&g.driver);
    let ids = [managed.id()];
    teardown(g, &epc, &ids);
}

#[test]
fn epc_loss_between_eviction_and_reload_is_enclave_lost_and_recovery_rebuilds() {
    let epc = manager(14);
    let mut g = in_domain(&epc, 4, VEPC_MIB);
    let img = heap_walk(HEAP);

    // Loading evicted the enclave's first pages (FIFO): its TCS, SSA frames and code are in
    // guest RAM, and so is most of the heap.
    let mut plain = ManagedEnclave::load(&mut g.driver, &img.sgxs, &img.sig, None).unwrap();
    let e = g.driver.enclave(plain.id()).unwrap();
    let tcs = e.tcs[0];
    assert!(e.evicted_offsets().any(|o| o == tcs), "the TCS was evicted while loading");
    g.domain.reset_epc().unwrap();
    // ELDU now fails (the VA page is gone): EnclaveLost, no crash, nothing leaked.
    assert_eq!(
        plain.call(&mut g.driver, "run", &1u64.to_le_bytes(), 16).unwrap_err(),
        GuestError::EnclaveLost(plain.id().0)
    );
    assert_eq!(g.driver.kernel().free_epc_pages(), g.driver.kernel().total_epc_pages());
    g.driver.destroy(plain.id()).unwrap();

    // Mid-workload: pages evicted during one ECALL, the EPC lost, the next ECALL must reload them.
    let calls = Arc::new(AtomicU32::new(0));
    let mut managed =
        ManagedEnclave::load(&mut g.driver, &img.sgxs, &img.sig, Some(refill(img.fill, 3, &calls))).unwrap();
    managed.call(&mut g.driver, "fill", &3u64.to_le_bytes(), 8).unwrap();
    let id = managed.id();
    assert!(g.driver.epc_stats().per_enclave[&id].evicted > 0);
    g.domain.reset_epc().unwrap();
    let out = managed.call(&mut g.driver, "run", &3u64.to_le_bytes(), 16).unwrap();
    assert_eq!((u64_at(&out.output, 0), u64_at(&out.output, 8)), (expected(3, HEAP), expected(4, HEAP)));
    assert_eq!((managed.rebuilds(), calls.load(Ordering::SeqCst)), (1, 1));
    assert_accounted(&g.driver);
    let ids = [managed.id()];
    teardown(g, &epc, &ids);
}

#[test]
fn a_vepc_too_small_for_the_entry_pages_is_refused_up_front_and_a_small_one_pages() {
    let epc = manager(15);
    let img = heap_walk(1 << 20);
    // 8 pages: the SECS, a VA page, the five entry pages and two pages for the accesses do not fit.
    let mut tiny = in_domain_bytes(&epc, 5, 8 << 12);
    let err = ManagedEnclave::load(&mut tiny.driver, &img.sgxs, &img.sig, None).unwrap_err();
    assert_eq!(err, GuestError::EpcShort { needed: 9, free: 8 });
    assert_eq!(tiny.driver.kernel().free_epc_pages(), 8);
    tiny.domain.destroy().unwrap();

    // 16 pages run a 1 MiB heap (256 pages) by paging it through.
    let mut g = in_domain_bytes(&epc, 6, 16 << 12);
    let mut walk = ManagedEnclave::load(&mut g.driver, &img.sgxs, &img.sig, None).unwrap();
    let out = walk.call(&mut g.driver, "run", &11u64.to_le_bytes(), 16).unwrap();
    assert_eq!((u64_at(&out.output, 0), u64_at(&out.output, 8)), (expected(11, 1 << 20), expected(12, 1 << 20)));
    assert_accounted(&g.driver);
    let ids = [walk.id()];
    teardown(g, &epc, &ids);
}

#[test]
fn a_thread_inside_the_enclave_delays_tracking_and_blocked_pages_are_finished_later() {
    let epc = manager(16);
    let mut g = in_domain_with(&epc, 7, 2 << 20, 2);
    let small = heap_walk_with(&ImageParams { heap_bytes: 1 << 20, tcs: 2, ..ImageParams::default() });
    let mut walk = ManagedEnclave::load(&mut g.driver, &small.sgxs, &small.sig, None).unwrap();
    walk.call(&mut g.driver, "fill", &21u64.to_le_bytes(), 8).unwrap();
    let (id, base, tcs1) = {
        let e = g.driver.enclave(walk.id()).unwrap();
        (walk.id(), e.base, e.tcs[1])
    };

    // Another vCPU of the guest enters the enclave on its second TCS and stays inside.
    let mut other = g.domain.vcpu(1).unwrap();
    other.set_cr3(g.driver.kernel().cpu().cr3());
    other.set_paging(true);
    other.set_cpl(Cpl::Ring3);
    let line = other.interrupt_line();
    let spin = u64::from(walk.ecalls().iter().position(|n| n == "spin").unwrap() as u32);
    // The enclave writes 1 to this (identity-mapped) RAM page once it runs.
    let flag = g.driver.kernel().alloc_ram_page().unwrap();
    let thread = std::thread::spawn(move || {
        let mut regs =
            Gprs { rbx: base + tcs1, rcx: 0x7FFF_0000_1000, rdi: spin, rip: 0x7FFF_0000_2000, ..Gprs::default() };
        regs.r8_r15[0] = flag;
        regs.r8_r15[1] = 1;
        other.enclu_leaf(Enclu::Eenter, &mut regs)
    });
    let ram = &g.domain.shared().ram;
    let mut seen = [0u8; 1];
    while seen[0] != 1 {
        assert!(!thread.is_finished(), "the spinning thread left the enclave early");
        std::thread::yield_now();
        ram.read(flag, &mut seen).unwrap();
    }

    // Loading a second enclave needs the first one's pages: they get blocked, but ETRACK answers
    // SGX_PREV_TRK_INCMPL and EWB SGX_NOT_TRACKED while the other thread is inside, so they stay
    // blocked and the reclaimer takes other victims.
    let big = heap_walk(2 << 20);
    let mut second = ManagedEnclave::load(&mut g.driver, &big.sgxs, &big.sig, None).unwrap();
    let s = g.driver.epc_stats();
    println!("while another thread is inside: {s:?}");
    assert!(s.not_tracked > 0 && s.prev_trk_incmpl > 0, "{s:?}");
    assert!(s.per_enclave[&id].blocked > 0, "{s:?}");
    assert_accounted(&g.driver);

    // The other thread is interrupted out (AEX); the blocked pages are written back and reloaded
    // when they are needed again.
    line.raise();
    let exit = thread.join().unwrap();
    assert_eq!(exit, Ok(EnclaveExit::Aex(AexCause::Interrupt)));
    let out = walk.call(&mut g.driver, "sum", b"", 8).unwrap();
    assert_eq!(u64_at(&out.output, 0), expected(21, 1 << 20));
    let out = second.call(&mut g.driver, "run", &2u64.to_le_bytes(), 16).unwrap();
    assert_eq!(u64_at(&out.output, 8), expected(3, 2 << 20));
    let out = walk.call(&mut g.driver, "run", &5u64.to_le_bytes(), 16).unwrap();
    assert_eq!(u64_at(&out.output, 0), expected(5, 1 << 20));
    assert_accounted(&g.driver);
    let ids = [walk.id(), second.id()];
    teardown(g, &epc, &ids);
}
