//! The host EPC manager against the platform model: NUMA placement, all-or-nothing shortage,
//! sparse 64 GiB sections, the two-pass EREMOVE protocol on real enclaves, quarantine, concurrency
//! and conservation.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, mpsc};
use std::time::Instant;

use proptest::prelude::*;
use vsgx_hv::epc::{
    Category, DomainEpc, DomainId, EpcError, EpcManager, FailedPage, Owner, PageState, Placement, QuarantinedPage,
    RemoveFailure, ShortageScope,
};
use vsgx_hw::config;
use vsgx_hw::cpu::BareMetalCpu;
use vsgx_hw::os::SimpleOs;
use vsgx_hw::platform::Platform;
use vsgx_isa::cpu::Exception;
use vsgx_isa::leaf::Encls;
use vsgx_isa::status::SgxError;
use vsgx_isa::{
    ArchStruct, Attributes, AttributesFlags, PageType, Pageinfo, Secinfo, SecinfoFlags, Secs, secinfo_flags,
};

const PAGE: u64 = 4096;
const MIB: u64 = 1 << 20;

fn dom(d: u32) -> Owner {
    Owner::Domain(DomainId(d))
}

/// The embedded two-node platform (128 MiB on node 0, 128 MiB on node 1), seeded.
fn embedded() -> Arc<Platform> {
    let mut cfg = config::embedded_default();
    cfg.seed = Some(1);
    Platform::new(cfg)
}

fn small(toml: &str) -> Arc<Platform> {
    let mut cfg = config::from_toml(toml).expect("valid platform");
    cfg.seed = Some(1);
    Platform::new(cfg)
}

/// 1 MiB on node 0, 2 MiB on node 1, 1 MiB on node 0: 1024 pages.
fn tiny() -> Arc<Platform> {
    small(
        "memory_mib = 64\n[[epc]]\nsize_mib = 1\nnode = 0\n[[epc]]\nsize_mib = 2\nnode = 1\n[[epc]]\nsize_mib = 1\nnode = 0\n",
    )
}

fn boot(platform: &Arc<Platform>, cpu: u64) -> SimpleOs<BareMetalCpu> {
    let ram = platform.ram().size();
    let window = cpu * 64 * MIB..(cpu + 1) * 64 * MIB;
    SimpleOs::boot_in(BareMetalCpu::new(Arc::clone(platform)), ram, window).expect("boot")
}

fn in_section(m: &EpcManager, section: usize, hpa: u64) -> bool {
    let s = m.stats().per_section[section];
    hpa >= s.base && hpa < s.base + s.size
}

/// Builds an enclave into EPC pages the manager handed out: ECREATE into `pages[0]`, EADD (and one
/// EEXTEND) of a REG page into each of the others. SimpleOs identity-maps EPC, so HPA = linear.
fn build_enclave(os: &mut SimpleOs<BareMetalCpu>, pages: &[u64]) {
    let children = pages.len() as u64 - 1;
    let size = (children.max(2) * PAGE).next_power_of_two();
    let base = 0x1000_0000_0000u64;
    let mut secs = Secs::zeroed();
    secs.size = size;
    secs.baseaddr = base;
    secs.ssaframesize = 1;
    secs.attributes = Attributes { flags: (AttributesFlags::MODE64BIT | AttributesFlags::DEBUG).bits(), xfrm: 3 };
    let src = os.scratch(secs.bytes(), 4096).expect("scratch");
    let secinfo = os.scratch(Secinfo::new(PageType::Secs, SecinfoFlags::empty()).bytes(), 64).expect("scratch");
    let pi = Pageinfo { linaddr: 0, srcpge: src, secinfo_or_pcmd: secinfo, secs: 0 };
    let pageinfo = os.scratch(pi.bytes(), 32).expect("scratch");
    os.encls(Encls::Ecreate, pageinfo, pages[0], 0).expect("ECREATE");
    os.reset_scratch();
    let rw = secinfo_flags(PageType::Reg, SecinfoFlags::R.union(SecinfoFlags::W));
    for (k, &epc) in pages[1..].iter().enumerate() {
        let src = os.scratch(&[0x5a; 4096], 4096).expect("scratch");
        let secinfo = os.scratch(Secinfo::from_raw_flags(rw).bytes(), 64).expect("scratch");
        let pi = Pageinfo { linaddr: base + k as u64 * PAGE, srcpge: src, secinfo_or_pcmd: secinfo, secs: pages[0] };
        let pageinfo = os.scratch(pi.bytes(), 32).expect("scratch");
        os.encls(Encls::Eadd, pageinfo, epc, 0).expect("EADD");
        // EEXTEND reports failure only by faulting (RAX is left as it was).
        os.encls(Encls::Eextend, pages[0], epc, 0).expect("EEXTEND");
        os.reset_scratch();
    }
}

#[test]
fn numa_preference_and_fallback_on_the_embedded_platform() {
    let m = EpcManager::new(embedded());
    let stats = m.stats();
    assert_eq!(stats.total, 65536);
    assert_eq!(stats.per_section.iter().map(|s| s.node).collect::<Vec<_>>(), vec![0, 1]);
    let on1 = m.alloc(dom(1), 1000, Placement::node(1)).expect("fits");
    assert!(on1.iter().all(|&p| in_section(&m, 1, p)), "node 1 first");
    let on0 = m.alloc(dom(2), 1000, Placement::node(0)).expect("fits");
    assert!(on0.iter().all(|&p| in_section(&m, 0, p)));
    let any = m.alloc(dom(3), 10, Placement::ANY).expect("fits");
    assert!(any.iter().all(|&p| in_section(&m, 0, p)), "no preference: section order");
    let unknown = m.alloc(dom(3), 10, Placement::node(9)).expect("a node without EPC falls back");
    assert!(unknown.iter().all(|&p| in_section(&m, 0, p)));
    // Node 1 has 31768 left: a request for 32000 spills 232 pages onto node 0.
    let spill = m.alloc(dom(4), 32000, Placement::node(1)).expect("fits with fallback");
    assert_eq!(spill.iter().filter(|&&p| in_section(&m, 1, p)).count(), 31768);
    assert_eq!(spill.iter().filter(|&&p| in_section(&m, 0, p)).count(), 232);
    assert!(spill[..31768].iter().all(|&p| in_section(&m, 1, p)), "preferred node's pages come first");
    let all: HashSet<u64> = [&on1, &on0, &any, &unknown, &spill].into_iter().flatten().copied().collect();
    assert_eq!(all.len(), 1000 + 1000 + 10 + 10 + 32000, "no page handed out twice");
    let s = m.stats();
    assert_eq!(s.per_section[1].free, 0);
    assert_eq!(s.per_domain[&DomainId(4)], DomainEpc { resident: 32000, evicted: 0, ballooned: 0 });
    m.check_conservation().expect("conserved");
    m.audit().expect("audit");
}

#[test]
fn shortage_is_all_or_nothing_and_names_node_and_shortage() {
    let m = EpcManager::new(embedded());
    let _a = m.alloc(dom(1), 2768, Placement::node(1)).expect("fits");
    let _b = m.alloc(dom(2), 200, Placement::node(0)).expect("fits");
    let before = m.stats();
    let e = m.alloc(dom(3), 64000, Placement::node(1)).expect_err("62568 free");
    assert_eq!(
        e.to_string(),
        "EPC short by 1432 pages: 64000 requested on node 1, 62568 free (node 1: 30000, node 0: 32568)"
    );
    match &e {
        EpcError::Short(s) => {
            assert_eq!((s.requested, s.free, s.short_by()), (64000, 62568, 1432));
            assert_eq!(s.scope, ShortageScope::Node(1));
            assert_eq!(s.free_by_node, vec![(1, 30000), (0, 32568)]);
        }
        other => panic!("expected a shortage, got {other:?}"),
    }
    assert_eq!(m.stats(), before, "nothing stays allocated");
    let e = m.alloc_on_section(dom(3), 0, 32569).expect_err("one short");
    assert_eq!(e.to_string(), "EPC short by 1 page: 32569 requested on section 0 (node 0), 32568 free");
    assert_eq!(m.stats(), before);
    assert_eq!(m.platform().census().map(|c| c.valid), Ok(0));
    m.audit().expect("audit");
}

#[test]
fn a_64_gib_section_costs_nothing_until_used_and_1_gib_is_fast() {
    let platform = small("memory_mib = 256\n[[epc]]\nsize_mib = 65536\nnode = 0\n");
    let m = EpcManager::new(Arc::clone(&platform));
    let idle = platform.epc().host_bytes();
    assert!(idle < MIB as usize, "idle 64 GiB EPC costs {idle} bytes");
    assert_eq!(m.stats().total, 16 << 20);
    let pages = (1u64 << 30) / PAGE;
    let t = Instant::now();
    let got = m.alloc(dom(1), pages, Placement::node(0)).expect("1 GiB");
    let alloc = t.elapsed();
    assert_eq!(got.len() as u64, pages);
    m.check_conservation().expect("conserved");
    let t = Instant::now();
    let report = m.release(dom(1), &got).expect("release");
    let release = t.elapsed();
    assert_eq!((report.removed, report.quarantined.len()), (pages, 0));
    let host = platform.epc().host_bytes();
    eprintln!("64 GiB section: alloc 1 GiB {alloc:?}, release {release:?}, EPC model host bytes {idle} → {host}");
    // EREMOVE materializes the model's EPCM slots of the pages it visits (≤ 48 bytes each): about
    // 12 MiB for 1 GiB, never anything in proportion to the 64 GiB section.
    assert!(host < 16 * MIB as usize, "host bytes {host}");
    assert!(alloc.as_secs() < 5 && release.as_secs() < 30, "alloc {alloc:?}, release {release:?}");
    assert_eq!(m.stats().free, 16 << 20);
    assert_eq!(platform.census().map(|c| c.valid), Ok(0));
    m.audit().expect("audit");
}

/// Release-mode measurement: `cargo test --release -p vsgx-hv --test epc_manager -- --ignored`.
#[test]
#[ignore = "allocates and releases all of a 64 GiB section (about 1 GiB of host memory); run in release mode"]
fn whole_64_gib_section_timing() {
    let platform = small("memory_mib = 256\n[[epc]]\nsize_mib = 65536\nnode = 0\n");
    let m = EpcManager::new(Arc::clone(&platform));
    for gib in [1u64, 64] {
        let pages = (gib << 30) / PAGE;
        let t = Instant::now();
        let got = m.alloc(dom(1), pages, Placement::ANY).expect("fits");
        let alloc = t.elapsed();
        let t = Instant::now();
        let report = m.release(dom(1), &got).expect("release");
        let release = t.elapsed();
        assert_eq!(report.removed, pages);
        eprintln!(
            "{gib} GiB: alloc {alloc:?}, release {release:?}, EPC model host bytes {} MiB",
            platform.epc().host_bytes() >> 20
        );
    }
    m.audit().expect("audit");
}

#[test]
fn two_pass_release_of_a_real_enclave() {
    let platform = embedded();
    let m = EpcManager::new(Arc::clone(&platform));
    let mut os = boot(&platform, 0);
    let pages = m.alloc(dom(1), 6, Placement::node(1)).expect("fits");
    build_enclave(&mut os, &pages);
    let census = platform.census().expect("EPCM consistent");
    assert_eq!((census.valid, census.secs, census.children), (6, 1, 5));
    // The SECS comes first: it answers SGX_CHILD_PRESENT in pass one and goes in pass two.
    let report = m.release(dom(1), &pages).expect("release");
    assert_eq!(report.removed, 6);
    assert_eq!(report.child_present, 1);
    assert_eq!(report.second_pass, 1);
    assert!(report.quarantined.is_empty());
    assert_eq!(platform.census().map(|c| c.valid), Ok(0));
    let s = m.stats();
    assert_eq!((s.free, s.quarantined), (s.total, 0));
    assert!(s.per_domain.is_empty());
    // Children listed first: one pass suffices.
    let pages = m.alloc(dom(1), 4, Placement::ANY).expect("fits");
    build_enclave(&mut os, &pages);
    let mut order = pages.clone();
    order.rotate_left(1);
    let report = m.release(dom(1), &order).expect("release");
    assert_eq!((report.removed, report.child_present, report.second_pass), (4, 0, 0));
    assert_eq!(platform.census().map(|c| c.valid), Ok(0));
    m.audit().expect("audit");
}

#[test]
fn a_secs_released_without_its_children_is_quarantined() {
    let platform = embedded();
    let m = EpcManager::new(Arc::clone(&platform));
    let mut os = boot(&platform, 0);
    let pages = m.alloc(dom(5), 3, Placement::ANY).expect("fits");
    build_enclave(&mut os, &pages);
    let report = m.release(dom(5), &pages[..1]).expect("release");
    assert_eq!(report.removed, 0);
    assert_eq!(
        report.quarantined,
        vec![FailedPage { hpa: pages[0], failure: RemoveFailure::Error(SgxError::ChildPresent) }]
    );
    assert_eq!(m.page_state(pages[0]), Ok(PageState::Quarantined));
    let report = m.release(dom(5), &pages[1..]).expect("children go");
    assert_eq!((report.removed, report.quarantined.len()), (2, 0));
    let census = platform.census().expect("EPCM consistent");
    assert_eq!((census.valid, census.secs, census.children), (1, 1, 0), "only the quarantined SECS");
    let s = m.stats();
    assert_eq!((s.quarantined, s.free), (1, s.total - 1));
    let log = m.quarantined_pages();
    assert_eq!(log.len(), 1);
    assert_eq!((log[0].hpa, log[0].owner), (pages[0], dom(5)));
    m.audit().expect("audit");
}

#[test]
fn sanitize_removes_every_page_and_keeps_ownership() {
    let platform = embedded();
    let m = EpcManager::new(Arc::clone(&platform));
    let mut os = boot(&platform, 0);
    let pages = m.alloc(dom(2), 5, Placement::ANY).expect("fits");
    build_enclave(&mut os, &pages);
    let before = m.stats();
    let report = m.sanitize(dom(2), &pages).expect("sanitize");
    assert_eq!((report.removed, report.child_present, report.second_pass), (5, 1, 1));
    assert!(report.failed.is_empty());
    assert_eq!(platform.census().map(|c| c.valid), Ok(0));
    assert_eq!(m.stats(), before, "ownership and accounting unchanged");
    for &p in &pages {
        assert_eq!(m.page_state(p), Ok(PageState::Owned(dom(2))));
    }
    // The guest rebuilds in the same pages after its reboot.
    build_enclave(&mut os, &pages);
    assert_eq!(platform.census().map(|c| c.valid), Ok(5));
    assert_eq!(m.release(dom(2), &pages).map(|r| r.removed), Ok(5));
    assert_eq!(platform.census().map(|c| c.valid), Ok(0));
    m.audit().expect("audit");
}

#[test]
fn a_page_whose_eremove_keeps_failing_is_quarantined_and_never_reused() {
    let platform = tiny();
    let m = EpcManager::new(Arc::clone(&platform));
    let pages = m.alloc(dom(1), 4, Placement::ANY).expect("fits");
    let victim = pages[2];
    let id = platform.epc().page_of(victim).expect("EPC");
    let (locked_tx, locked_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let report = std::thread::scope(|s| {
        let platform = &platform;
        let holder = s.spawn(move || {
            let _guard = platform.epc().lock(id).expect("page exists");
            locked_tx.send(()).expect("send");
            done_rx.recv().ok();
        });
        locked_rx.recv().expect("holder locked the page");
        let report = m.release(dom(1), &pages);
        done_tx.send(()).expect("send");
        holder.join().expect("holder");
        report
    });
    let report = report.expect("release runs");
    assert_eq!(report.removed, 3);
    assert_eq!(report.quarantined, vec![FailedPage { hpa: victim, failure: RemoveFailure::Fault(Exception::GP0) }]);
    assert_eq!(report.quarantined[0].failure.to_string(), "EREMOVE faulted with #GP(0)");
    assert_eq!(m.page_state(victim), Ok(PageState::Quarantined));
    let s = m.stats();
    assert_eq!((s.quarantined, s.free), (1, 1023));
    m.check_conservation().expect("conserved");
    // Everything else can be allocated; the quarantined page never is.
    let rest = m.alloc(dom(2), 1023, Placement::ANY).expect("all free pages");
    assert!(!rest.contains(&victim));
    assert!(matches!(m.alloc(dom(3), 1, Placement::ANY), Err(EpcError::Short(s)) if s.free == 0));
    assert!(matches!(m.release(dom(1), &[victim]), Err(EpcError::NotOwned { state: PageState::Quarantined, .. })));
    m.release(dom(2), &rest).expect("release");
    let again = m.alloc(dom(2), 1023, Placement::ANY).expect("all free pages again");
    assert!(!again.contains(&victim));
    m.release(dom(2), &again).expect("release");
    let s = m.stats();
    assert_eq!((s.free, s.quarantined, s.total), (1023, 1, 1024));
    m.audit().expect("audit");
}

/// A tiny deterministic generator (no shared state between threads).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound.max(1)
    }
}

#[test]
fn four_threads_build_enclaves_in_allocated_epc_and_release_them() {
    let platform = embedded();
    let m = EpcManager::new(Arc::clone(&platform));
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let (m, platform) = (&m, &platform);
            s.spawn(move || {
                let mut os = boot(platform, u64::from(t));
                let mut rng = Lcg(u64::from(t) + 11);
                let owner = dom(t);
                for round in 0..12 {
                    let n = 2 + rng.next(7);
                    let pages = m.alloc(owner, n, Placement::node(t % 2)).expect("plenty of EPC");
                    build_enclave(&mut os, &pages);
                    let spare = m.alloc(Owner::Hypervisor, rng.next(20), Placement::ANY).expect("plenty");
                    m.check_conservation().expect("conserved at any moment");
                    let mut order = pages.clone();
                    order.rotate_left(rng.next(n) as usize);
                    let report = m.release(owner, &order).expect("release");
                    assert_eq!((report.removed, report.quarantined.len()), (n, 0), "thread {t} round {round}");
                    m.release(Owner::Hypervisor, &spare).expect("release");
                }
            });
        }
    });
    let s = m.stats();
    assert_eq!((s.free, s.hypervisor, s.quarantined), (s.total, 0, 0));
    assert!(s.per_domain.is_empty());
    let census = platform.census().expect("EPCM consistent");
    assert_eq!(census.valid, 0, "no valid page after releasing everything");
    m.audit().expect("audit");
}

#[test]
fn four_threads_contend_for_scarce_epc() {
    let platform = tiny();
    let m = EpcManager::new(Arc::clone(&platform));
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let m = &m;
            s.spawn(move || {
                let mut rng = Lcg(u64::from(t) * 977 + 5);
                let owner = if t == 3 { Owner::Hypervisor } else { dom(t) };
                let mut held: Vec<u64> = Vec::new();
                for _ in 0..300 {
                    if rng.next(3) > 0 {
                        let placement = match rng.next(3) {
                            0 => Placement::ANY,
                            n => Placement::node(n as u32 - 1),
                        };
                        match m.alloc(owner, rng.next(200), placement) {
                            Ok(p) => held.extend(p),
                            Err(EpcError::Short(s)) => assert!(s.requested > s.free),
                            Err(e) => panic!("unexpected {e}"),
                        }
                    } else {
                        let k = rng.next(held.len() as u64 + 1) as usize;
                        let gone: Vec<u64> = held.drain(..k).collect();
                        let report = m.release(owner, &gone).expect("own pages");
                        assert_eq!(report.removed, gone.len() as u64);
                    }
                    if rng.next(10) == 0 {
                        m.check_conservation().expect("conserved at any moment");
                    }
                }
                m.release(owner, &held).expect("own pages");
            });
        }
    });
    m.check_conservation().expect("conserved");
    m.audit().expect("audit");
    let s = m.stats();
    assert_eq!(s.free, s.total);
    assert_eq!(platform.census().map(|c| c.valid), Ok(0));
}

#[derive(Clone, Debug)]
enum Op {
    Alloc { owner: u8, pages: u16, node: Option<u8> },
    AllocOnSection { owner: u8, section: u8, pages: u16 },
    Release { owner: u8, take: u16, rotate: u16 },
    Sanitize { owner: u8 },
    Evict { owner: u8, take: u16 },
    Reload { owner: u8, pages: u16 },
    Balloon { owner: u8, n: u16 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..4u8, 0..400u16, proptest::option::of(0..3u8)).prop_map(|(owner, pages, node)| Op::Alloc { owner, pages, node }),
        1 => (0..4u8, 0..4u8, 0..300u16).prop_map(|(owner, section, pages)| Op::AllocOnSection { owner, section, pages }),
        3 => (0..4u8, 0..500u16, any::<u16>()).prop_map(|(owner, take, rotate)| Op::Release { owner, take, rotate }),
        1 => (0..4u8).prop_map(|owner| Op::Sanitize { owner }),
        1 => (0..3u8, 0..100u16).prop_map(|(owner, take)| Op::Evict { owner, take }),
        1 => (0..3u8, 0..100u16).prop_map(|(owner, pages)| Op::Reload { owner, pages }),
        1 => (0..3u8, 0..100u16).prop_map(|(owner, n)| Op::Balloon { owner, n }),
    ]
}

fn owner_of(o: u8) -> Owner {
    if o == 3 { Owner::Hypervisor } else { dom(u32::from(o)) }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Random allocate/release/sanitize/evict/reload sequences against a model: every page is
    /// accounted for after every step, refusals change nothing, shortages happen exactly when the
    /// model says so.
    #[test]
    fn conservation_after_random_sequences(ops in proptest::collection::vec(op(), 1..40)) {
        let platform = tiny();
        let m = EpcManager::new(Arc::clone(&platform));
        let mut held: BTreeMap<Owner, Vec<u64>> = BTreeMap::new();
        let mut evicted: BTreeMap<Owner, u64> = BTreeMap::new();
        let mut ballooned: BTreeMap<Owner, u64> = BTreeMap::new();
        for op in ops {
            let in_use: u64 = held.values().map(|v| v.len() as u64).sum();
            let free = 1024 - in_use;
            match op {
                Op::Alloc { owner, pages, node } => {
                    let o = owner_of(owner);
                    let r = m.alloc(o, u64::from(pages), Placement { node: node.map(u32::from) });
                    match r {
                        Ok(p) => {
                            prop_assert!(u64::from(pages) <= free);
                            prop_assert_eq!(p.len(), usize::from(pages));
                            held.entry(o).or_default().extend(p);
                        }
                        Err(EpcError::Short(s)) => {
                            prop_assert!(u64::from(pages) > free);
                            prop_assert_eq!(s.free, free);
                        }
                        Err(e) => prop_assert!(false, "unexpected {}", e),
                    }
                }
                Op::AllocOnSection { owner, section, pages } => {
                    let o = owner_of(owner);
                    let section_free = m.stats().per_section.get(usize::from(section)).map(|s| s.free);
                    match (m.alloc_on_section(o, usize::from(section), u64::from(pages)), section_free) {
                        (Ok(p), Some(f)) => {
                            prop_assert!(u64::from(pages) <= f);
                            prop_assert!(p.iter().all(|&hpa| in_section(&m, usize::from(section), hpa)));
                            held.entry(o).or_default().extend(p);
                        }
                        (Err(EpcError::Short(s)), Some(f)) => prop_assert!(u64::from(pages) > f && s.free == f),
                        (Err(EpcError::NoSuchSection { .. }), None) => {}
                        (r, f) => prop_assert!(false, "unexpected {:?} with section free {:?}", r, f),
                    }
                }
                Op::Release { owner, take, rotate } => {
                    let o = owner_of(owner);
                    let mine = held.entry(o).or_default();
                    if !mine.is_empty() {
                        let r = usize::from(rotate) % mine.len();
                        mine.rotate_left(r);
                    }
                    let k = usize::from(take).min(mine.len());
                    let gone: Vec<u64> = mine.drain(..k).collect();
                    // Someone else's page is refused and changes nothing.
                    if let Some((&other, theirs)) = held.iter().find(|(w, v)| **w != o && !v.is_empty()) {
                        let before = m.stats();
                        let mut bad = gone.clone();
                        bad.push(theirs[0]);
                        let refused = m.release(o, &bad);
                        prop_assert_eq!(
                            refused,
                            Err(EpcError::NotOwned { hpa: theirs[0], owner: o, state: PageState::Owned(other) })
                        );
                        prop_assert_eq!(m.stats(), before);
                    }
                    let report = m.release(o, &gone).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(report.removed, k as u64);
                }
                Op::Sanitize { owner } => {
                    let o = owner_of(owner);
                    let mine = held.get(&o).cloned().unwrap_or_default();
                    let before = m.stats();
                    let report = m.sanitize(o, &mine).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(report.removed, mine.len() as u64);
                    prop_assert_eq!(m.stats(), before);
                }
                Op::Evict { owner, take } => {
                    let o = owner_of(owner);
                    let mine = held.entry(o).or_default();
                    let k = usize::from(take).min(mine.len());
                    let gone: Vec<u64> = mine.drain(..k).collect();
                    let report = m.release_to(o, &gone, Category::Evicted).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(report.removed, k as u64);
                    *evicted.entry(o).or_default() += k as u64;
                }
                Op::Reload { owner, pages } => {
                    let o = owner_of(owner);
                    let have = evicted.get(&o).copied().unwrap_or(0);
                    match m.alloc_from(o, Category::Evicted, u64::from(pages), Placement::ANY) {
                        Ok(p) => {
                            prop_assert!(u64::from(pages) <= have && u64::from(pages) <= free);
                            held.entry(o).or_default().extend(p);
                            *evicted.entry(o).or_default() -= u64::from(pages);
                        }
                        Err(EpcError::Short(_)) => prop_assert!(u64::from(pages) > free),
                        Err(EpcError::NotEnough { have: h, .. }) => prop_assert!(u64::from(pages) > have && h == have),
                        Err(e) => prop_assert!(false, "unexpected {}", e),
                    }
                }
                Op::Balloon { owner, n } => {
                    let o = owner_of(owner);
                    let have = evicted.get(&o).copied().unwrap_or(0);
                    match m.move_pages(o, Category::Evicted, Category::Ballooned, u64::from(n)) {
                        Ok(()) => {
                            *evicted.entry(o).or_default() -= u64::from(n);
                            *ballooned.entry(o).or_default() += u64::from(n);
                        }
                        Err(EpcError::NotEnough { .. }) => prop_assert!(u64::from(n) > have),
                        Err(e) => prop_assert!(false, "unexpected {}", e),
                    }
                }
            }
            m.check_conservation().map_err(|e| TestCaseError::fail(e.to_string()))?;
            m.audit().map_err(|e| TestCaseError::fail(e.to_string()))?;
            let s = m.stats();
            prop_assert_eq!(s.hypervisor, held.get(&Owner::Hypervisor).map_or(0, |v| v.len() as u64));
            for d in 0..3u32 {
                let o = dom(d);
                let want = DomainEpc {
                    resident: held.get(&o).map_or(0, |v| v.len() as u64),
                    evicted: evicted.get(&o).copied().unwrap_or(0),
                    ballooned: ballooned.get(&o).copied().unwrap_or(0),
                };
                prop_assert_eq!(s.per_domain.get(&DomainId(d)).copied().unwrap_or_default(), want);
            }
        }
        for (o, pages) in &held {
            m.release(*o, pages).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        let s = m.stats();
        prop_assert_eq!(s.free, s.total);
        prop_assert_eq!(platform.census().map(|c| c.valid), Ok(0));
    }
}

#[test]
fn pages_quarantined_by_an_earlier_run_are_taken_out_of_service_again() {
    let m = EpcManager::new(tiny());
    let base = m.stats().per_section[0].base;
    let record = |hpa| QuarantinedPage { hpa, owner: dom(3), failure: RemoveFailure::Error(SgxError::ChildPresent) };
    // One page beyond anything handed out yet and one below the bump index once it moved.
    m.retire(record(base + 10 * PAGE)).unwrap();
    m.retire(record(base + 2 * PAGE)).unwrap();
    assert_eq!(m.free_pages(), m.total_pages() - 2);
    assert_eq!(m.stats().quarantined, 2);
    assert_eq!(m.quarantined_pages(), vec![record(base + 10 * PAGE), record(base + 2 * PAGE)]);
    assert_eq!(m.page_state(base + 10 * PAGE).unwrap(), PageState::Quarantined);
    m.audit().unwrap();
    // Never handed out: the whole section (256 pages) minus the two goes to one owner, and the
    // retired pages are not among them.
    let pages = m.alloc_on_section(dom(1), 0, 254).unwrap();
    assert!(!pages.contains(&(base + 10 * PAGE)) && !pages.contains(&(base + 2 * PAGE)));
    assert!(matches!(m.alloc_on_section(dom(1), 0, 1), Err(EpcError::Short(_))));
    // Refusals change nothing: a page in use, a quarantined page, an address outside the EPC.
    let before = m.stats();
    assert!(matches!(m.retire(record(pages[0])), Err(EpcError::NotFree { state: PageState::Owned(_), .. })));
    assert!(matches!(m.retire(record(base + 2 * PAGE)), Err(EpcError::NotFree { .. })));
    assert!(matches!(m.retire(record(0x1000)), Err(EpcError::NotEpc { .. })));
    assert!(matches!(m.retire(record(base + 1)), Err(EpcError::Unaligned { .. })));
    assert_eq!(m.stats(), before);
    m.release(dom(1), &pages).unwrap();
    assert_eq!(m.free_pages(), m.total_pages() - 2);
    m.audit().unwrap();
}
