//! Concurrency stress: logical processors on threads build enclaves in parallel, fight over the
//! pages of one shared enclave with EBLOCK/ETRACK/EWB/ELDU/EDBGRD, and tear everything down in
//! parallel. Every outcome must be an architectural answer, and afterwards the EPCM invariants
//! hold, no page is lost and every page's content survived its round trips.

mod common;

use std::sync::Arc;

use common::*;
use vsgx_hw::platform::Platform;
use vsgx_isa::cpu::{Exception, LeafStatus};
use vsgx_isa::leaf::Encls;
use vsgx_isa::{ArchStruct, PageType, Pageinfo};

const THREADS: usize = 4;
const ENCLAVES_PER_THREAD: u64 = 6;
const ROUNDS: usize = 400;
const WINDOW: u64 = 8 << 20;

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn machine(platform: &Arc<Platform>, thread: usize) -> Machine {
    let mut m = Machine::on_cpu(Arc::clone(platform), thread as u64);
    let base = platform.epc().sections()[0].base;
    m.os.limit_epc(base + thread as u64 * WINDOW, WINDOW);
    m
}

fn pattern(offset: u64) -> Vec<u8> {
    (0..4096u64).map(|i| (i.wrapping_mul(31) ^ offset >> 12) as u8).collect()
}

/// Pages of the shared enclave the threads fight over.
const CONTESTED: [u64; 5] = [layout::DATA, layout::OPERANDS, layout::SSA, layout::READ_ONLY, layout::CODE];

fn is_epcm_fault(r: &Result<LeafStatus, Exception>) -> bool {
    matches!(r, Err(e) if e.is_epcm_fault())
}

#[test]
fn concurrent_builds_conflicts_and_teardown_keep_the_epcm_consistent() {
    let platform = Machine::new().platform;

    // The shared enclave, built before the threads start.
    let mut m0 = machine(&platform, THREADS);
    let spec = EnclaveSpec { data: vec![(layout::DATA, pattern(layout::DATA))], ..EnclaveSpec::default() };
    let shared = m0.enclave(&spec);
    let expected: Vec<Vec<u8>> = CONTESTED.iter().map(|&o| m0.debug_read(shared.la(o), 4096)).collect();
    let mut machines: Vec<Machine> = (0..THREADS).map(|t| machine(&platform, t)).collect();

    // Phase 1: parallel builds, one logical processor per thread.
    let built: Vec<Vec<TestEnclave>> = std::thread::scope(|s| {
        let handles: Vec<_> = machines
            .iter_mut()
            .map(|m| {
                s.spawn(move || {
                    (0..ENCLAVES_PER_THREAD)
                        .map(|i| m.enclave(&EnclaveSpec { base_slot: 1 + i, ..EnclaveSpec::default() }))
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("builder thread")).collect()
    });
    let census = platform.census().expect("EPCM invariants after parallel builds");
    assert_eq!(census.secs, 1 + THREADS as u64 * ENCLAVES_PER_THREAD);

    // Phase 2: every thread fights over the shared enclave's pages.
    let evictions: usize = std::thread::scope(|s| {
        let handles: Vec<_> = machines
            .iter_mut()
            .enumerate()
            .map(|(t, m)| {
                let (shared, expected) = (&shared, &expected);
                s.spawn(move || contend(m, t, shared, expected))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("contending thread")).sum()
    });
    assert!(evictions > 0, "the contested pages were actually evicted");
    platform.census().expect("EPCM invariants after contention");
    for (j, &offset) in CONTESTED.iter().enumerate() {
        assert_eq!(m0.debug_read(shared.la(offset), 4096), expected[j], "page {offset:#x} survived its round trips");
    }

    // Phase 3: parallel teardown; everyone also races to remove the shared enclave (two passes:
    // its SECS answers SGX_CHILD_PRESENT until the children are gone).
    std::thread::scope(|s| {
        for (m, mine) in machines.iter_mut().zip(&built) {
            let shared = &shared;
            s.spawn(move || teardown(m, mine, shared));
        }
    });
    let census = platform.census().expect("EPCM invariants after teardown");
    assert_eq!(census.valid, 0, "every page returned: {census:?}");
}

/// Random EBLOCK/ETRACK/EWB/ELDU/EDBGRD on the shared enclave; returns the number of evictions.
fn contend(m: &mut Machine, t: usize, shared: &TestEnclave, expected: &[Vec<u8>]) -> usize {
    let va = m.epc_page();
    assert!(m.encls(Encls::Epa, PageType::Va as u64, va, 0).is_ok(), "EPA");
    let bufs: Vec<(u64, u64, u64)> = CONTESTED
        .iter()
        .map(|_| (m.put_bytes(&[0; 4096], 4096), m.put_bytes(&[0; 128], 128), m.put_bytes(&[0; 32], 32)))
        .collect();
    let mut held = [false; CONTESTED.len()];
    let mut rng = Lcg(t as u64 + 1);
    let mut evictions = 0;
    for _ in 0..ROUNDS {
        let j = (rng.next() % CONTESTED.len() as u64) as usize;
        let epc = shared.epc(CONTESTED[j]);
        let (blob, pcmd, pi) = bufs[j];
        let slot = va + 8 * j as u64;
        match rng.next() % 5 {
            0 => {
                let r = m.status(Encls::Eblock, 0, epc, 0);
                assert!(
                    matches!(
                        r,
                        Ok(LeafStatus::Success
                            | LeafStatus::Info(SgxError::Blkstate)
                            | LeafStatus::Error(SgxError::EpcPageConflict | SgxError::PgInvld))
                    ),
                    "EBLOCK: {r:?}"
                );
            }
            1 => {
                let r = m.status(Encls::Etrack, 0, shared.secs, 0);
                assert!(
                    matches!(
                        r,
                        Ok(LeafStatus::Success | LeafStatus::Error(SgxError::PrevTrkIncmpl))
                            | Err(Exception::GeneralProtection(0))
                    ),
                    "ETRACK: {r:?}"
                );
            }
            2 if !held[j] => {
                let info = Pageinfo { linaddr: 0, srcpge: blob, secinfo_or_pcmd: pcmd, secs: 0 };
                write(m, pi, info.bytes());
                let r = m.status(Encls::Ewb, pi, epc, slot);
                match r {
                    Ok(LeafStatus::Success) => {
                        held[j] = true;
                        evictions += 1;
                    }
                    Ok(LeafStatus::Error(SgxError::PageNotBlocked | SgxError::NotTracked))
                    | Err(Exception::GeneralProtection(0)) => {}
                    ref other if is_epcm_fault(other) => {}
                    other => panic!("EWB: {other:?}"),
                }
            }
            3 if held[j] => reload(m, shared, j, bufs[j], slot, &mut held),
            _ => match m.encls(Encls::Edbgrd, 0, epc, 0) {
                Ok(regs) => {
                    assert_eq!(regs.status(), LeafStatus::Success);
                    assert_eq!(regs.rbx.to_le_bytes(), expected[j][..8], "content intact");
                }
                Err(Exception::GeneralProtection(0)) => {}
                Err(e) if e.is_epcm_fault() => {}
                Err(e) => panic!("EDBGRD: {e:?}"),
            },
        }
    }
    for j in 0..CONTESTED.len() {
        while held[j] {
            reload(m, shared, j, bufs[j], va + 8 * j as u64, &mut held);
        }
    }
    assert_eq!(m.status(Encls::Eremove, 0, va, 0), Ok(LeafStatus::Success));
    evictions
}

fn teardown(m: &mut Machine, mine: &[TestEnclave], shared: &TestEnclave) {
    for e in mine {
        for &epc in e.pages.values() {
            assert_eq!(m.status(Encls::Eremove, 0, epc, 0), Ok(LeafStatus::Success));
        }
        assert_eq!(m.status(Encls::Eremove, 0, e.secs, 0), Ok(LeafStatus::Success));
    }
    loop {
        let r = m.status(Encls::Eremove, 0, shared.secs, 0);
        assert!(
            matches!(
                r,
                Ok(LeafStatus::Success | LeafStatus::Error(SgxError::ChildPresent))
                    | Err(Exception::GeneralProtection(0))
            ),
            "EREMOVE SECS: {r:?}"
        );
        if r == Ok(LeafStatus::Success) {
            break;
        }
        for &epc in shared.pages.values() {
            let r = m.status(Encls::Eremove, 0, epc, 0);
            assert!(matches!(r, Ok(LeafStatus::Success) | Err(Exception::GeneralProtection(0))), "EREMOVE: {r:?}");
        }
    }
}

fn write(m: &mut Machine, la: u64, bytes: &[u8]) {
    use vsgx_isa::cpu::Cpu;
    m.os.cpu().write(la, bytes).expect("RAM write");
}

/// ELDU of this thread's blob for contested page `j`; conflicts leave it held for a retry.
fn reload(m: &mut Machine, shared: &TestEnclave, j: usize, bufs: (u64, u64, u64), slot: u64, held: &mut [bool]) {
    let (blob, pcmd, pi) = bufs;
    let info = Pageinfo { linaddr: shared.la(CONTESTED[j]), srcpge: blob, secinfo_or_pcmd: pcmd, secs: shared.secs };
    write(m, pi, info.bytes());
    let r = m.status(Encls::Eldu, pi, shared.epc(CONTESTED[j]), slot);
    match r {
        Ok(LeafStatus::Success) => held[j] = false,
        Err(Exception::GeneralProtection(0)) => std::thread::yield_now(),
        other => panic!("ELDU of our own blob: {other:?}"),
    }
}

#[test]
fn census_catches_nothing_on_a_quiet_platform_and_counts_pages() {
    let mut m = Machine::new();
    let e = m.enclave(&EnclaveSpec::default());
    let census = m.platform.census().unwrap();
    assert_eq!((census.secs, census.children, census.va), (1, e.pages.len() as u64, 0));
    assert_eq!(census.total, 2 * 128 * 256);
}
