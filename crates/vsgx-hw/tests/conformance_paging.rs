//! Conformance of the EPC paging, tracking and virtualization leaves with SGX.md: EBLOCK (§6.8),
//! ETRACK (§6.9), EWB (§6.10), ELDB/ELDU/ELDBC/ELDUC (§6.11), ERDINFO (§6.24), ETRACKC (§6.25),
//! ENCLV (§6.26), the tracking rule (§7) and EPC loss (§10).
//!
//! One case per documented error path (plus success), table-driven where the cases share a
//! setup. Every expected value is taken from SGX.md; the section is cited per group.
//!
//! Not reachable in this model, hence not tested:
//! * every "page busy" / SGX_EPC_PAGE_CONFLICT (7) outcome, including the ELDBC/ELDUC conflict
//!   path: leaves execute atomically (§5.3 MODEL CHOICE) and the try-locks only fail under real
//!   concurrency (see `tests/stress.rs`);
//! * EBLOCK's SGX_ENTRYEPOCH_LOCKED (15) (§6.8: never returned by the model);
//! * the VMX non-root variants (VIRTCHILDCNT in EWB/ERDINFO, SGX_CONFLICT exits);
//! * logical processors inside an enclave: there is no EENTER yet, so the tracking cases stand
//!   in for them by writing TRK_CUR/TRK_PREV at their documented hidden-SECS offsets (§1.3, §7).

mod common;
mod conformance_support;

use common::*;
use conformance_support::*;
use vsgx_isa::cpu::{Cpl, Cpu, Exception, Gprs};
use vsgx_isa::leaf::{Encls, Enclv};
use vsgx_isa::status::SgxError;
use vsgx_isa::{ArchStruct, Pageinfo, Rdinfo, Secinfo, SecsHidden};

/// A machine with one initialized test enclave and one VA page.
struct Fx {
    m: Machine,
    e: TestEnclave,
    va: u64,
}

fn fx() -> Fx {
    let mut m = Machine::new();
    let e = m.enclave(&EnclaveSpec::default());
    let va = epa(&mut m);
    Fx { m, e, va }
}

/// A second enclave on the same machine.
fn other_enclave(m: &mut Machine, slot: u64) -> TestEnclave {
    m.enclave(&EnclaveSpec {
        base_slot: slot,
        data: vec![(layout::DATA, vec![slot as u8; 8])],
        ..EnclaveSpec::default()
    })
}

/// `bytes` in scratch RAM at `offset` past a 4 KiB boundary (for misaligned operands).
fn put_at(m: &mut Machine, bytes: &[u8], offset: usize) -> u64 {
    let mut v = vec![0u8; offset];
    v.extend_from_slice(bytes);
    m.put_bytes(&v, 4096) + offset as u64
}

/// Every page offset of the test enclave (SGX.md-independent: the harness layout).
const OFFSETS: [u64; 6] = [layout::DATA, layout::OPERANDS, layout::TCS, layout::SSA, layout::READ_ONLY, layout::CODE];

fn flags_of(m: &mut Machine, page: u64) -> u64 {
    rdinfo(m, page).flags
}

// ------------------------------------------------------------------------------------------------
// EBLOCK (SGX.md §6.8)
// ------------------------------------------------------------------------------------------------

/// §6.8: align(RCX,4096); epc(RCX); then the table rows in order. §5.3: ordinary paging failures
/// are ordinary #PFs.
#[test]
fn eblock_every_row() {
    run_table(
        fx,
        &[
            ("RCX not 4K aligned → #GP", |f| {
                (f.m.encls(Encls::Eblock, 0, f.e.epc(layout::DATA) + 8, 0), Want::Fault(GP))
            }),
            ("RCX not EPC → #PF(RCX)", |f| {
                let p = ram_page(&mut f.m);
                (f.m.encls(Encls::Eblock, 0, p, 0), Want::NonEpc(p))
            }),
            ("order: alignment before epc(RCX)", |f| {
                let p = ram_page(&mut f.m) + 8;
                (f.m.encls(Encls::Eblock, 0, p, 0), Want::Fault(GP))
            }),
            ("RCX unmapped → ordinary #PF", |f| (f.m.encls(Encls::Eblock, 0, UNMAPPED, 0), Want::Paging(UNMAPPED))),
            ("VALID = 0 → ZF, 6 SGX_PG_INVLD", |f| {
                let p = f.m.epc_page();
                (f.m.encls(Encls::Eblock, 0, p, 0), Want::Err(SgxError::PgInvld))
            }),
            ("PT_SECS → CF, 18 SGX_PG_IS_SECS", |f| {
                (f.m.encls(Encls::Eblock, 0, f.e.secs, 0), Want::Info(SgxError::PgIsSecs))
            }),
            ("PT_VA → CF, 5 SGX_NOTBLOCKABLE", |f| {
                (f.m.encls(Encls::Eblock, 0, f.va, 0), Want::Info(SgxError::Notblockable))
            }),
            ("already BLOCKED → CF, 3 SGX_BLKSTATE", |f| {
                ok(&mut f.m, Encls::Eblock, 0, f.e.epc(layout::DATA), 0);
                (f.m.encls(Encls::Eblock, 0, f.e.epc(layout::DATA), 0), Want::Info(SgxError::Blkstate))
            }),
            ("PT_REG → success", |f| (f.m.encls(Encls::Eblock, 0, f.e.epc(layout::DATA), 0), Want::Ok)),
            ("PT_TCS → success", |f| (f.m.encls(Encls::Eblock, 0, f.e.epc(layout::TCS), 0), Want::Ok)),
            ("PT_TRIM → success", |f| {
                let p = f.e.epc(layout::DATA);
                check("EMODT", emod(&mut f.m, Encls::Emodt, TRIM, p), Want::Ok);
                (f.m.encls(Encls::Eblock, 0, p, 0), Want::Ok)
            }),
            ("PENDING PT_REG → success", |f| {
                let e = f.e.clone();
                let p = eaug(&mut f.m, &e, 0x6000);
                (f.m.encls(Encls::Eblock, 0, p, 0), Want::Ok)
            }),
        ],
    );
}

/// §6.8 success sets BLOCKED (visible as RDINFO.FLAGS bit 63, §1.13, §6.24).
#[test]
fn eblock_sets_blocked() {
    let mut f = fx();
    let p = f.e.epc(layout::DATA);
    assert_eq!(flags_of(&mut f.m, p), REG_RW);
    ok(&mut f.m, Encls::Eblock, 0, p, 0);
    assert_eq!(flags_of(&mut f.m, p), REG_RW | Rdinfo::BLOCKED);
}

/// §6.8 "Already BLOCKED → CF, 3 (block_epoch is unchanged)". With §7: block at E = 0, ETRACK
/// (E = 1, prev = 0) → tracked(0). Had the second EBLOCK moved block_epoch to 1, EWB would be 11.
#[test]
fn eblock_again_keeps_block_epoch() {
    let mut f = fx();
    let p = f.e.epc(layout::DATA);
    ok(&mut f.m, Encls::Eblock, 0, p, 0);
    ok(&mut f.m, Encls::Etrack, 0, f.e.secs, 0);
    check("EBLOCK again", f.m.encls(Encls::Eblock, 0, p, 0), Want::Info(SgxError::Blkstate));
    check("EWB", ewb(&mut f.m, p, slot(f.va, 0)).0, Want::Ok);
}

// ------------------------------------------------------------------------------------------------
// ETRACK (SGX.md §6.9) and the tracking rule (§7)
// ------------------------------------------------------------------------------------------------

/// §6.9: align; epc; EPCM not VALID or not PT_SECS → #PF-EPCM; TRK_PREV > 0 → 17; else 0.
#[test]
fn etrack_every_check() {
    run_table(
        fx,
        &[
            ("RCX not 4K aligned → #GP", |f| (f.m.encls(Encls::Etrack, 0, f.e.secs + 64, 0), Want::Fault(GP))),
            ("RCX not EPC → #PF(RCX)", |f| {
                let p = ram_page(&mut f.m);
                (f.m.encls(Encls::Etrack, 0, p, 0), Want::NonEpc(p))
            }),
            ("EPCM not VALID → #PF-EPCM(RCX)", |f| {
                let p = f.m.epc_page();
                (f.m.encls(Encls::Etrack, 0, p, 0), epcm(p))
            }),
            ("PT_REG → #PF-EPCM(RCX)", |f| {
                let p = f.e.epc(layout::DATA);
                (f.m.encls(Encls::Etrack, 0, p, 0), epcm(p))
            }),
            ("PT_VA → #PF-EPCM(RCX)", |f| (f.m.encls(Encls::Etrack, 0, f.va, 0), epcm(f.va))),
            ("SECS → success", |f| (f.m.encls(Encls::Etrack, 0, f.e.secs, 0), Want::Ok)),
            ("two ETRACKs with nobody inside → success", |f| {
                ok(&mut f.m, Encls::Etrack, 0, f.e.secs, 0);
                (f.m.encls(Encls::Etrack, 0, f.e.secs, 0), Want::Ok)
            }),
            ("TRK_PREV > 0 → ZF, 17 SGX_PREV_TRK_INCMPL", |f| {
                lps_enter(&f.m, f.e.secs, 1);
                ok(&mut f.m, Encls::Etrack, 0, f.e.secs, 0);
                (f.m.encls(Encls::Etrack, 0, f.e.secs, 0), Want::Err(SgxError::PrevTrkIncmpl))
            }),
            ("uninitialized enclave → success", |f| {
                let (secs, _, _) = uninitialized(&mut f.m, 4);
                (f.m.encls(Encls::Etrack, 0, secs, 0), Want::Ok)
            }),
        ],
    );
}

/// §7: ETRACK does `prev = cur; cur = 0; E += 1` (visible through the documented hidden-SECS
/// offsets, §1.3).
#[test]
fn etrack_advances_the_epoch() {
    let mut f = fx();
    let s = f.e.secs;
    assert_eq!(peek_secs(&f.m, s, SecsHidden::TRK_EPOCH), 0, "§6.1: TRK_EPOCH ← 0");
    lps_enter(&f.m, s, 2);
    ok(&mut f.m, Encls::Etrack, 0, s, 0);
    assert_eq!(peek_secs(&f.m, s, SecsHidden::TRK_EPOCH), 1);
    assert_eq!(peek_secs(&f.m, s, SecsHidden::TRK_PREV), 2);
    assert_eq!(peek_secs(&f.m, s, SecsHidden::TRK_CUR), 0);
}

/// §7 "Consequences the drivers depend on", with logical processors stood in for by TRK_CUR.
#[test]
fn tracking_rule_consequences() {
    // EWB right after EBLOCK, no ETRACK in between → 11.
    let mut f = fx();
    let p = f.e.epc(layout::DATA);
    ok(&mut f.m, Encls::Eblock, 0, p, 0);
    check("EWB without ETRACK", ewb(&mut f.m, p, slot(f.va, 0)).0, Want::Err(SgxError::NotTracked));

    // An LP inside at the ETRACK: 11 until it has exited; a second ETRACK before that → 17.
    let mut f = fx();
    let p = f.e.epc(layout::DATA);
    lps_enter(&f.m, f.e.secs, 1);
    ok(&mut f.m, Encls::Eblock, 0, p, 0);
    ok(&mut f.m, Encls::Etrack, 0, f.e.secs, 0);
    check("EWB, LP still inside", ewb(&mut f.m, p, slot(f.va, 0)).0, Want::Err(SgxError::NotTracked));
    check("second ETRACK", f.m.encls(Encls::Etrack, 0, f.e.secs, 0), Want::Err(SgxError::PrevTrkIncmpl));
    prev_lps_exit(&f.m, f.e.secs);
    check("EWB after the LP left", ewb(&mut f.m, p, slot(f.va, 0)).0, Want::Ok);

    // tracked(b) also holds once E ≥ b + 2, whoever is inside now.
    let mut f = fx();
    let p = f.e.epc(layout::DATA);
    lps_enter(&f.m, f.e.secs, 1);
    ok(&mut f.m, Encls::Eblock, 0, p, 0); // b = 0
    ok(&mut f.m, Encls::Etrack, 0, f.e.secs, 0); // E = 1, prev = 1
    prev_lps_exit(&f.m, f.e.secs);
    lps_enter(&f.m, f.e.secs, 1);
    ok(&mut f.m, Encls::Etrack, 0, f.e.secs, 0); // E = 2, prev = 1
    check("EWB with E = b + 2", ewb(&mut f.m, p, slot(f.va, 0)).0, Want::Ok);
}

// ------------------------------------------------------------------------------------------------
// EWB (SGX.md §6.10)
// ------------------------------------------------------------------------------------------------

/// EWB with PAGEINFO edited by `edit` (defaults: LINADDR = SECS = 0, fresh SRCPGE and PCMD).
fn ewb_edit(m: &mut Machine, rcx: u64, rdx: u64, edit: impl FnOnce(&mut Machine, &mut Pageinfo)) -> Outcome {
    let src = m.put_bytes(&[0u8; 4096], 4096);
    let pcmd = m.put_bytes(&[0u8; 128], 128);
    let mut pi = Pageinfo { linaddr: 0, srcpge: src, secinfo_or_pcmd: pcmd, secs: 0 };
    edit(m, &mut pi);
    let rbx = m.put(&pi);
    m.encls(Encls::Ewb, rbx, rcx, rdx)
}

/// EBLOCK + ETRACK of the DATA page; returns it.
fn blocked_tracked(f: &mut Fx) -> u64 {
    let p = f.e.epc(layout::DATA);
    ok(&mut f.m, Encls::Eblock, 0, p, 0);
    ok(&mut f.m, Encls::Etrack, 0, f.e.secs, 0);
    p
}

/// §6.10 steps 1–8, in order.
#[test]
fn ewb_every_step() {
    run_table(
        fx,
        &[
            // Step 1.
            ("RBX not 32-aligned → #GP", |f| {
                let p = blocked_tracked(f);
                let src = f.m.put_bytes(&[0; 4096], 4096);
                let pcmd = f.m.put_bytes(&[0; 128], 128);
                let pi = Pageinfo { linaddr: 0, srcpge: src, secinfo_or_pcmd: pcmd, secs: 0 };
                let rbx = put_at(&mut f.m, pi.bytes(), 8);
                (f.m.encls(Encls::Ewb, rbx, p, slot(f.va, 0)), Want::Fault(GP))
            }),
            ("RCX not 4K aligned → #GP", |f| {
                let p = blocked_tracked(f);
                (ewb(&mut f.m, p + 64, slot(f.va, 0)).0, Want::Fault(GP))
            }),
            ("RCX not EPC → #PF(RCX)", |f| {
                let r = ram_page(&mut f.m);
                (ewb(&mut f.m, r, slot(f.va, 0)).0, Want::NonEpc(r))
            }),
            ("RDX not 8-aligned → #GP", |f| {
                let p = blocked_tracked(f);
                (ewb(&mut f.m, p, slot(f.va, 0) + 4).0, Want::Fault(GP))
            }),
            ("RDX not EPC → #PF(RDX)", |f| {
                let p = blocked_tracked(f);
                let r = ram_page(&mut f.m) + 16;
                (ewb(&mut f.m, p, r).0, Want::NonEpc(r))
            }),
            ("order: epc(RCX) before align(RDX)", |f| {
                let r = ram_page(&mut f.m);
                (ewb(&mut f.m, r, slot(f.va, 0) + 4).0, Want::NonEpc(r))
            }),
            ("RCX and RDX in the same page → #GP", |f| (ewb(&mut f.m, f.va, slot(f.va, 1)).0, Want::Fault(GP))),
            // Step 2.
            ("PAGEINFO.LINADDR ≠ 0 → #GP", |f| {
                let p = blocked_tracked(f);
                let la = f.e.la(layout::DATA);
                (ewb_edit(&mut f.m, p, slot(f.va, 0), |_, pi| pi.linaddr = la), Want::Fault(GP))
            }),
            ("PAGEINFO.SECS ≠ 0 → #GP", |f| {
                let p = blocked_tracked(f);
                let s = f.e.secs;
                (ewb_edit(&mut f.m, p, slot(f.va, 0), |_, pi| pi.secs = s), Want::Fault(GP))
            }),
            ("PCMD not 128-aligned → #GP", |f| {
                let p = blocked_tracked(f);
                (ewb_edit(&mut f.m, p, slot(f.va, 0), |_, pi| pi.secinfo_or_pcmd += 64), Want::Fault(GP))
            }),
            ("SRCPGE not 4K aligned → #GP", |f| {
                let p = blocked_tracked(f);
                (ewb_edit(&mut f.m, p, slot(f.va, 0), |_, pi| pi.srcpge += 512), Want::Fault(GP))
            }),
            ("order: step 2 (LINADDR) before step 4 (RCX invalid)", |f| {
                let p = f.m.epc_page();
                (ewb_edit(&mut f.m, p, slot(f.va, 0), |_, pi| pi.linaddr = 0x1000), Want::Fault(GP))
            }),
            // Step 4.
            ("EPCM(RCX).VALID = 0 → #PF-EPCM(RCX)", |f| {
                let p = f.m.epc_page();
                (ewb(&mut f.m, p, slot(f.va, 0)).0, epcm(p))
            }),
            ("VA page not VALID → #PF-EPCM(RDX)", |f| {
                let p = blocked_tracked(f);
                let rdx = f.m.epc_page() + 8;
                (ewb(&mut f.m, p, rdx).0, epcm(rdx))
            }),
            ("VA slot in a PT_REG page → #PF-EPCM(RDX)", |f| {
                let p = blocked_tracked(f);
                let rdx = f.e.epc(layout::OPERANDS) + 16;
                (ewb(&mut f.m, p, rdx).0, epcm(rdx))
            }),
            ("VA slot in a PT_SECS page → #PF-EPCM(RDX)", |f| {
                let p = blocked_tracked(f);
                let rdx = f.e.secs + 24;
                (ewb(&mut f.m, p, rdx).0, epcm(rdx))
            }),
            ("order: RCX invalid before RDX not VA", |f| {
                let p = f.m.epc_page();
                let rdx = f.e.epc(layout::OPERANDS);
                (ewb(&mut f.m, p, rdx).0, epcm(p))
            }),
            ("order: RDX not VA (step 4) before not BLOCKED (step 5)", |f| {
                let p = f.e.epc(layout::DATA);
                let rdx = f.e.epc(layout::OPERANDS);
                (ewb(&mut f.m, p, rdx).0, epcm(rdx))
            }),
            // Step 5.
            ("REG not BLOCKED → ZF, 10 SGX_PAGE_NOT_BLOCKED", |f| {
                (ewb(&mut f.m, f.e.epc(layout::DATA), slot(f.va, 0)).0, Want::Err(SgxError::PageNotBlocked))
            }),
            ("TCS not BLOCKED → ZF, 10", |f| {
                (ewb(&mut f.m, f.e.epc(layout::TCS), slot(f.va, 0)).0, Want::Err(SgxError::PageNotBlocked))
            }),
            ("BLOCKED, no ETRACK → ZF, 11 SGX_NOT_TRACKED", |f| {
                let p = f.e.epc(layout::DATA);
                ok(&mut f.m, Encls::Eblock, 0, p, 0);
                (ewb(&mut f.m, p, slot(f.va, 0)).0, Want::Err(SgxError::NotTracked))
            }),
            ("SECS with children → ZF, 13 SGX_CHILD_PRESENT", |f| {
                (ewb(&mut f.m, f.e.secs, slot(f.va, 0)).0, Want::Err(SgxError::ChildPresent))
            }),
            ("REG blocked + tracked → success", |f| {
                let p = blocked_tracked(f);
                (ewb(&mut f.m, p, slot(f.va, 0)).0, Want::Ok)
            }),
            ("TCS blocked + tracked → success", |f| {
                let p = f.e.epc(layout::TCS);
                ok(&mut f.m, Encls::Eblock, 0, p, 0);
                ok(&mut f.m, Encls::Etrack, 0, f.e.secs, 0);
                (ewb(&mut f.m, p, slot(f.va, 0)).0, Want::Ok)
            }),
            ("TRIM blocked + tracked → success", |f| {
                let p = f.e.epc(layout::DATA);
                check("EMODT", emod(&mut f.m, Encls::Emodt, TRIM, p), Want::Ok);
                ok(&mut f.m, Encls::Eblock, 0, p, 0);
                ok(&mut f.m, Encls::Etrack, 0, f.e.secs, 0);
                (ewb(&mut f.m, p, slot(f.va, 0)).0, Want::Ok)
            }),
            ("VA page: no blocking or tracking needed → success", |f| {
                let va2 = epa(&mut f.m);
                (ewb(&mut f.m, va2, slot(f.va, 0)).0, Want::Ok)
            }),
            // Step 7.
            ("occupied VA slot → CF, 12 SGX_VA_SLOT_OCCUPIED", |f| {
                let p = f.e.epc(layout::DATA);
                let q = f.e.epc(layout::OPERANDS);
                ok(&mut f.m, Encls::Eblock, 0, p, 0);
                ok(&mut f.m, Encls::Eblock, 0, q, 0);
                ok(&mut f.m, Encls::Etrack, 0, f.e.secs, 0);
                check("first EWB", ewb(&mut f.m, p, slot(f.va, 3)).0, Want::Ok);
                (ewb(&mut f.m, q, slot(f.va, 3)).0, Want::Info(SgxError::VaSlotOccupied))
            }),
            // Step 8: the page is gone.
            ("evicted page → #PF-EPCM(RCX)", |f| {
                let p = blocked_tracked(f);
                check("EWB", ewb(&mut f.m, p, slot(f.va, 0)).0, Want::Ok);
                (ewb(&mut f.m, p, slot(f.va, 1)).0, epcm(p))
            }),
        ],
    );
}

/// §6.10 step 6 and §1.8: PCMD.SECINFO = {PT, RWX, PENDING, MODIFIED, PR}, the rest of PCMD.SECINFO
/// and PCMD.reserved zero, ENCLAVEID = the parent SECS EID; PAGEINFO.LINADDR ← ENCLAVEADDRESS;
/// step 7 the slot ← VER (≠ 0, §1.8); step 8 the page is invalid.
#[test]
fn ewb_outputs() {
    let mut f = fx();
    burn_versions(&mut f.m);
    let p = f.e.epc(layout::DATA);
    ok(&mut f.m, Encls::Eblock, 0, p, 0);
    ok(&mut f.m, Encls::Etrack, 0, f.e.secs, 0);
    // Dirty output buffers: EWB must overwrite every PCMD byte it defines.
    let src = f.m.put_bytes(&[0xEE; 4096], 4096);
    let pcmd = f.m.put_bytes(&[0xEE; 128], 128);
    let pi = f.m.put(&Pageinfo { linaddr: 0, srcpge: src, secinfo_or_pcmd: pcmd, secs: 0 });
    check("EWB", f.m.encls(Encls::Ewb, pi, p, slot(f.va, 7)), Want::Ok);
    let pcmd = vsgx_isa::Pcmd::from_bytes(&f.m.read(pcmd, 128)).unwrap();
    let written = Pageinfo::from_bytes(&f.m.read(pi, 32)).unwrap();
    assert_eq!(written.linaddr, f.e.la(layout::DATA), "PAGEINFO.LINADDR ← ENCLAVEADDRESS");
    assert_eq!(pcmd.secinfo, Secinfo::from_raw_flags(REG_RW), "PCMD.SECINFO: flags, rest zero");
    assert_eq!(pcmd.reserved, [0; 40], "PCMD.reserved ← 0");
    assert_ne!(pcmd.enclaveid, 0, "ENCLAVEID = SECS.EID (EIDs come from CR_NEXT_EID)");
    assert_eq!(pcmd.enclaveid, peek_secs(&f.m, f.e.secs, SecsHidden::EID), "ENCLAVEID = SECS.EID");
    assert_ne!(f.m.read(src, 4096), vec![0xEE; 4096], "SRCPGE holds the encrypted page");
    // §6.6: EDBGRD of a VA slot returns all-ones if slot & ~7 ≠ 0 (VER ≥ 8 here).
    assert_eq!(read_slot(&mut f.m, slot(f.va, 7)), u64::MAX, "slot ← VER");
    check("evicted page is invalid", erdinfo(&mut f.m, p).0, Want::Info(SgxError::PgInvld));
}

/// §6.10 step 6: PCMD.SECINFO carries PT, RWX, PENDING, MODIFIED and PR of every page kind.
#[test]
fn ewb_pcmd_secinfo_per_page_kind() {
    type Prep = fn(&mut Fx) -> u64;
    let kinds: [(&str, Prep, u64); 6] = [
        ("REG R", |f| f.e.epc(layout::READ_ONLY), REG_R),
        ("REG RX", |f| f.e.epc(layout::CODE), REG_RX),
        ("TCS", |f| f.e.epc(layout::TCS), TCS),
        (
            "PENDING",
            |f| {
                let e = f.e.clone();
                eaug(&mut f.m, &e, 0x6000)
            },
            REG_RW | PENDING,
        ),
        (
            "TRIM (MODIFIED)",
            |f| {
                let p = f.e.epc(layout::DATA);
                check("EMODT", emod(&mut f.m, Encls::Emodt, TRIM, p), Want::Ok);
                p
            },
            TRIM | MODIFIED,
        ),
        (
            "PR",
            |f| {
                let p = f.e.epc(layout::DATA);
                check("EMODPR", emod(&mut f.m, Encls::Emodpr, REG_R, p), Want::Ok);
                p
            },
            REG_R | PR,
        ),
    ];
    for (name, prep, flags) in kinds {
        let mut f = fx();
        let p = prep(&mut f);
        let blob = evict(&mut f.m, f.e.secs, p, slot(f.va, 0));
        assert_eq!(blob.pcmd.secinfo, Secinfo::from_raw_flags(flags), "{name}");
    }
}

/// §6.10 step 5/6: PCMD.ENCLAVEID is the parent's EID for children, the SECS's own EID for a
/// SECS, 0 for a VA page; LINADDR written back is 0 for SECS and VA (ENCLAVEADDRESS 0, §2).
/// Step 8: the child count drops with each eviction (§2), so the SECS becomes evictable.
#[test]
fn ewb_enclave_ids_and_child_count() {
    let mut f = fx();
    let eid = peek_secs(&f.m, f.e.secs, SecsHidden::EID);
    let pages: Vec<u64> = OFFSETS.iter().map(|&o| f.e.epc(o)).collect();
    for &p in &pages {
        ok(&mut f.m, Encls::Eblock, 0, p, 0);
    }
    ok(&mut f.m, Encls::Etrack, 0, f.e.secs, 0);
    for (i, &p) in pages.iter().enumerate() {
        assert_eq!(rdinfo(&mut f.m, f.e.secs).status & Rdinfo::CHILDPRESENT, Rdinfo::CHILDPRESENT, "child {i} left");
        check(
            "EWB SECS while children remain",
            ewb(&mut f.m, f.e.secs, slot(f.va, 100)).0,
            Want::Err(SgxError::ChildPresent),
        );
        let (r, blob) = ewb(&mut f.m, p, slot(f.va, i as u64));
        check("EWB child", r, Want::Ok);
        assert_eq!(blob.pcmd.enclaveid, eid);
        assert_eq!(blob.linaddr, f.e.la(OFFSETS[i]));
    }
    assert_eq!(rdinfo(&mut f.m, f.e.secs).status, 0, "no children left");
    let (r, secs_blob) = ewb(&mut f.m, f.e.secs, slot(f.va, 100));
    check("EWB SECS", r, Want::Ok);
    assert_eq!(secs_blob.pcmd.enclaveid, eid, "a SECS's own EID");
    assert_eq!(secs_blob.pcmd.secinfo, Secinfo::from_raw_flags(SECS));
    assert_eq!(secs_blob.linaddr, 0);

    let va2 = epa(&mut f.m);
    let (r, va_blob) = ewb(&mut f.m, va2, slot(f.va, 101));
    check("EWB VA", r, Want::Ok);
    assert_eq!(va_blob.pcmd.enclaveid, 0);
    assert_eq!(va_blob.pcmd.secinfo, Secinfo::from_raw_flags(VA));
    assert_eq!(va_blob.linaddr, 0);

    // Another enclave has another EID.
    let g = other_enclave(&mut f.m, 1);
    let blob = evict(&mut f.m, g.secs, g.epc(layout::DATA), slot(f.va, 102));
    assert_ne!(blob.pcmd.enclaveid, eid, "EIDs are unique (CR_NEXT_EID++)");
}

/// §6.10 step 7: an occupied slot gives CF + 12, the eviction still completes and the slot holds
/// the new version, so the newer blob loads from it and the older one does not.
#[test]
fn ewb_occupied_slot_still_evicts() {
    let mut f = fx();
    let (p, q) = (f.e.epc(layout::DATA), f.e.epc(layout::OPERANDS));
    ok(&mut f.m, Encls::Eblock, 0, p, 0);
    ok(&mut f.m, Encls::Eblock, 0, q, 0);
    ok(&mut f.m, Encls::Etrack, 0, f.e.secs, 0);
    let s = slot(f.va, 9);
    let (r, first) = ewb(&mut f.m, p, s);
    check("first EWB", r, Want::Ok);
    let (r, second) = ewb(&mut f.m, q, s);
    check("second EWB", r, Want::Info(SgxError::VaSlotOccupied));
    check("the page was still evicted", erdinfo(&mut f.m, q).0, Want::Info(SgxError::PgInvld));
    assert_eq!(second.linaddr, f.e.la(layout::OPERANDS), "LINADDR still written back");
    let (secs, la_p, la_q) = (f.e.secs, first.linaddr, second.linaddr);
    check("older blob", eld(&mut f.m, Encls::Eldu, &first, la_p, secs, p, s), Want::Err(SgxError::MacCompareFail));
    check("newer blob", eld(&mut f.m, Encls::Eldu, &second, la_q, secs, q, s), Want::Ok);
}

/// §6.10 step 5 (VA: no blocking/tracking, ENCLAVEID 0) and §6.11 (VA reload with SECS = 0): the
/// evicted VA page comes back with its slots, and the page versioned in it reloads.
#[test]
fn va_page_eviction_round_trip() {
    let mut f = fx();
    burn_versions(&mut f.m);
    let va2 = epa(&mut f.m);
    let data = f.e.epc(layout::DATA);
    let child = evict(&mut f.m, f.e.secs, data, slot(va2, 5));
    let (r, va_blob) = ewb(&mut f.m, va2, slot(f.va, 0));
    check("EWB VA", r, Want::Ok);
    let va3 = f.m.epc_page();
    check("ELDU VA", eld(&mut f.m, Encls::Eldu, &va_blob, 0, 0, va3, slot(f.va, 0)), Want::Ok);
    assert_eq!(flags_of(&mut f.m, va3), VA);
    assert_eq!(read_slot(&mut f.m, slot(va3, 5)), u64::MAX, "slot 5 kept its version");
    assert_eq!(read_slot(&mut f.m, slot(va3, 4)), 0, "slot 4 still empty");
    let (secs, la) = (f.e.secs, child.linaddr);
    check(
        "ELDU child from the reloaded VA page",
        eld(&mut f.m, Encls::Eldu, &child, la, secs, data, slot(va3, 5)),
        Want::Ok,
    );
}

// ------------------------------------------------------------------------------------------------
// ELDB / ELDU / ELDBC / ELDUC (SGX.md §6.11)
// ------------------------------------------------------------------------------------------------

/// The DATA page (with a known pattern) evicted into slot 0; `page` is its old, now free, frame.
struct Ld {
    m: Machine,
    e: TestEnclave,
    va: u64,
    blob: Blob,
    page: u64,
}

fn pattern() -> Vec<u8> {
    (0..4096u32).map(|i| (i * 7 + 3) as u8).collect()
}

fn ld() -> Ld {
    let mut m = Machine::new();
    let e = m.enclave(&EnclaveSpec { data: vec![(layout::DATA, pattern())], ..EnclaveSpec::default() });
    let va = epa(&mut m);
    burn_versions(&mut m);
    let page = e.epc(layout::DATA);
    let blob = evict(&mut m, e.secs, page, slot(va, 0));
    Ld { m, e, va, blob, page }
}

impl Ld {
    /// ELD* with PAGEINFO edited by `edit` and RBX `rbx_offset` bytes past a 4 KiB boundary.
    fn run(&mut self, leaf: Encls, rcx: u64, rdx: u64, edit: impl FnOnce(&mut Pageinfo)) -> Outcome {
        let src = self.m.put_bytes(&self.blob.page, 4096);
        let pcmd = self.m.put(&self.blob.pcmd);
        let mut pi = Pageinfo { linaddr: self.blob.linaddr, srcpge: src, secinfo_or_pcmd: pcmd, secs: self.e.secs };
        edit(&mut pi);
        let rbx = self.m.put(&pi);
        self.m.encls(leaf, rbx, rcx, rdx)
    }

    fn eldu(&mut self) -> Outcome {
        let (p, s) = (self.page, slot(self.va, 0));
        self.run(Encls::Eldu, p, s, |_| {})
    }
}

/// §6.11 steps 1–6 (ELDU; the other three share the checks).
#[test]
fn eld_every_step() {
    run_table(
        ld,
        &[
            // Step 1.
            ("RBX not 32-aligned → #GP", |l| {
                let src = l.m.put_bytes(&l.blob.page, 4096);
                let pcmd = l.m.put(&l.blob.pcmd);
                let pi = Pageinfo { linaddr: l.blob.linaddr, srcpge: src, secinfo_or_pcmd: pcmd, secs: l.e.secs };
                let rbx = put_at(&mut l.m, pi.bytes(), 16);
                (l.m.encls(Encls::Eldu, rbx, l.page, slot(l.va, 0)), Want::Fault(GP))
            }),
            ("RCX not 4K aligned → #GP", |l| {
                let (p, s) = (l.page + 8, slot(l.va, 0));
                (l.run(Encls::Eldu, p, s, |_| {}), Want::Fault(GP))
            }),
            ("RCX not EPC → #PF(RCX)", |l| {
                let (p, s) = (ram_page(&mut l.m), slot(l.va, 0));
                (l.run(Encls::Eldu, p, s, |_| {}), Want::NonEpc(p))
            }),
            ("RDX not 8-aligned → #GP", |l| {
                let (p, s) = (l.page, slot(l.va, 0) + 1);
                (l.run(Encls::Eldu, p, s, |_| {}), Want::Fault(GP))
            }),
            ("RDX not EPC → #PF(RDX)", |l| {
                let (p, s) = (l.page, ram_page(&mut l.m) + 8);
                (l.run(Encls::Eldu, p, s, |_| {}), Want::NonEpc(s))
            }),
            ("PCMD not 128-aligned → #GP", |l| {
                let (p, s) = (l.page, slot(l.va, 0));
                let pcmd = put_at(&mut l.m, l.blob.pcmd.bytes(), 64);
                (l.run(Encls::Eldu, p, s, |pi| pi.secinfo_or_pcmd = pcmd), Want::Fault(GP))
            }),
            ("SRCPGE not 4K aligned → #GP", |l| {
                let (p, s) = (l.page, slot(l.va, 0));
                let src = put_at(&mut l.m, &l.blob.page, 8);
                (l.run(Encls::Eldu, p, s, |pi| pi.srcpge = src), Want::Fault(GP))
            }),
            ("order: step 1 alignment (PCMD) before step 3 (RCX valid)", |l| {
                let (p, s) = (l.e.epc(layout::OPERANDS), slot(l.va, 0));
                (l.run(Encls::Eldu, p, s, |pi| pi.secinfo_or_pcmd += 32), Want::Fault(GP))
            }),
            // Step 3.
            ("EPCM(RCX).VALID = 1 → #PF-EPCM(RCX)", |l| {
                let (p, s) = (l.e.epc(layout::OPERANDS), slot(l.va, 0));
                (l.run(Encls::Eldu, p, s, |_| {}), epcm(p))
            }),
            ("VA page not VALID → #PF-EPCM(RDX)", |l| {
                let (p, s) = (l.page, l.m.epc_page() + 8);
                (l.run(Encls::Eldu, p, s, |_| {}), epcm(s))
            }),
            ("VA slot in a PT_REG page → #PF-EPCM(RDX)", |l| {
                let (p, s) = (l.page, l.e.epc(layout::OPERANDS) + 8);
                (l.run(Encls::Eldu, p, s, |_| {}), epcm(s))
            }),
            ("order: RCX valid before RDX not VA", |l| {
                let (p, s) = (l.e.epc(layout::CODE), l.e.epc(layout::OPERANDS));
                (l.run(Encls::Eldu, p, s, |_| {}), epcm(p))
            }),
            // Step 4 (child page).
            ("PAGEINFO.SECS not 4K aligned → #GP", |l| {
                let (p, s) = (l.page, slot(l.va, 0));
                (l.run(Encls::Eldu, p, s, |pi| pi.secs += 8), Want::Fault(GP))
            }),
            ("PAGEINFO.SECS not EPC → #PF(SECS)", |l| {
                let (p, s, r) = (l.page, slot(l.va, 0), ram_page(&mut l.m));
                (l.run(Encls::Eldu, p, s, |pi| pi.secs = r), Want::NonEpc(r))
            }),
            ("PAGEINFO.SECS not VALID → #PF-EPCM(SECS)", |l| {
                let (p, s, x) = (l.page, slot(l.va, 0), l.m.epc_page());
                (l.run(Encls::Eldu, p, s, |pi| pi.secs = x), epcm(x))
            }),
            ("PAGEINFO.SECS is PT_REG → #PF-EPCM(SECS)", |l| {
                let (p, s, x) = (l.page, slot(l.va, 0), l.e.epc(layout::CODE));
                (l.run(Encls::Eldu, p, s, |pi| pi.secs = x), epcm(x))
            }),
            // Step 5: the MAC header binds SECINFO, EID, RSVD and LINADDR; the IV binds VER.
            ("wrong LINADDR → ZF, 9 SGX_MAC_COMPARE_FAIL", |l| {
                let (p, s) = (l.page, slot(l.va, 0));
                (l.run(Encls::Eldu, p, s, |pi| pi.linaddr += 0x1000), Want::Err(SgxError::MacCompareFail))
            }),
            ("another enclave's SECS → 9", |l| {
                let g = other_enclave(&mut l.m, 1);
                let (p, s) = (l.page, slot(l.va, 0));
                (l.run(Encls::Eldu, p, s, |pi| pi.secs = g.secs), Want::Err(SgxError::MacCompareFail))
            }),
            ("another (empty) VA slot → 9", |l| {
                let (p, s) = (l.page, slot(l.va, 1));
                (l.run(Encls::Eldu, p, s, |_| {}), Want::Err(SgxError::MacCompareFail))
            }),
            ("another VA slot holding another version → 9", |l| {
                let (secs, q) = (l.e.secs, l.e.epc(layout::OPERANDS));
                evict(&mut l.m, secs, q, slot(l.va, 1));
                let (p, s) = (l.page, slot(l.va, 1));
                (l.run(Encls::Eldu, p, s, |_| {}), Want::Err(SgxError::MacCompareFail))
            }),
            ("tampered ciphertext → 9", |l| {
                l.blob.page[100] ^= 1;
                (l.eldu(), Want::Err(SgxError::MacCompareFail))
            }),
            ("tampered PCMD.MAC → 9", |l| {
                l.blob.pcmd.mac[0] ^= 1;
                (l.eldu(), Want::Err(SgxError::MacCompareFail))
            }),
            ("tampered PCMD.SECINFO.FLAGS (X added) → 9", |l| {
                l.blob.pcmd.secinfo.flags |= 4;
                (l.eldu(), Want::Err(SgxError::MacCompareFail))
            }),
            ("tampered PCMD.SECINFO reserved byte → 9 (hdr.SECINFO = PCMD.SECINFO, 64 bytes)", |l| {
                l.blob.pcmd.secinfo.reserved[10] = 1;
                (l.eldu(), Want::Err(SgxError::MacCompareFail))
            }),
            ("tampered PCMD.reserved → 9 (hdr.RSVD = PCMD[72:112))", |l| {
                l.blob.pcmd.reserved[0] = 1;
                (l.eldu(), Want::Err(SgxError::MacCompareFail))
            }),
            ("PCMD.ENCLAVEID is not in the MAC header → success", |l| {
                l.blob.pcmd.enclaveid ^= 0xFFFF;
                (l.eldu(), Want::Ok)
            }),
            // Step 6.
            ("ELDU → success", |l| (l.eldu(), Want::Ok)),
            ("ELDB → success", |l| {
                let (p, s) = (l.page, slot(l.va, 0));
                (l.run(Encls::Eldb, p, s, |_| {}), Want::Ok)
            }),
            ("ELDUC → success", |l| {
                let (p, s) = (l.page, slot(l.va, 0));
                (l.run(Encls::Elduc, p, s, |_| {}), Want::Ok)
            }),
            ("ELDBC → success", |l| {
                let (p, s) = (l.page, slot(l.va, 0));
                (l.run(Encls::Eldbc, p, s, |_| {}), Want::Ok)
            }),
            ("into another free EPC page → success", |l| {
                let (p, s) = (l.m.epc_page(), slot(l.va, 0));
                (l.run(Encls::Eldu, p, s, |_| {}), Want::Ok)
            }),
            ("replay of the same blob → 9 (slot cleared)", |l| {
                check("first ELDU", l.eldu(), Want::Ok);
                let (p, s) = (l.m.epc_page(), slot(l.va, 0));
                (l.run(Encls::Eldu, p, s, |_| {}), Want::Err(SgxError::MacCompareFail))
            }),
            ("stale blob with the current slot → 9", |l| {
                check("ELDU", l.eldu(), Want::Ok);
                let (secs, p, s) = (l.e.secs, l.page, slot(l.va, 0));
                evict(&mut l.m, secs, p, s);
                (l.run(Encls::Eldu, p, s, |_| {}), Want::Err(SgxError::MacCompareFail))
            }),
        ],
    );
}

/// §6.11 step 4 for SECS and VA blobs: PAGEINFO.SECS ≠ 0 → #GP.
#[test]
fn eld_secs_and_va_blobs_need_pageinfo_secs_zero() {
    let mut f = fx();
    let va2 = epa(&mut f.m);
    let (r, va_blob) = ewb(&mut f.m, va2, slot(f.va, 200));
    check("EWB VA", r, Want::Ok);
    let secs = f.e.secs;
    check("VA blob, SECS ≠ 0", eld(&mut f.m, Encls::Eldu, &va_blob, 0, secs, va2, slot(f.va, 200)), Want::Fault(GP));

    let (_, secs_blob, _) = evict_enclave(&mut f);
    let target = f.m.epc_page();
    let other = other_enclave(&mut f.m, 1).secs;
    check(
        "SECS blob, SECS ≠ 0",
        eld(&mut f.m, Encls::Eldu, &secs_blob, 0, other, target, slot(f.va, 100)),
        Want::Fault(GP),
    );
    check("SECS blob, SECS = 0", eld(&mut f.m, Encls::Eldu, &secs_blob, 0, 0, target, slot(f.va, 100)), Want::Ok);
    check("VA blob, SECS = 0", eld(&mut f.m, Encls::Eldu, &va_blob, 0, 0, va2, slot(f.va, 200)), Want::Ok);
}

/// Evicts every child and then the SECS (slots 0..6 and 100 of `f.va`). Returns the child blobs
/// (offset, old frame, blob), the SECS blob and the old SECS frame.
fn evict_enclave(f: &mut Fx) -> (Vec<(u64, u64, Blob)>, Blob, u64) {
    for &o in &OFFSETS {
        ok(&mut f.m, Encls::Eblock, 0, f.e.epc(o), 0);
    }
    ok(&mut f.m, Encls::Etrack, 0, f.e.secs, 0);
    let mut children = Vec::new();
    for (i, &o) in OFFSETS.iter().enumerate() {
        let (r, blob) = ewb(&mut f.m, f.e.epc(o), slot(f.va, i as u64));
        check("EWB child", r, Want::Ok);
        children.push((o, f.e.epc(o), blob));
    }
    let (r, secs_blob) = ewb(&mut f.m, f.e.secs, slot(f.va, 100));
    check("EWB SECS", r, Want::Ok);
    (children, secs_blob, f.e.secs)
}

/// §6.11 step 6: the round trip keeps contents and EPCM attributes (PT, RWX, ENCLAVEADDRESS via
/// the MAC binding, the parent's ENCLAVECONTEXT); ELDU leaves the page unblocked and frees the slot.
#[test]
fn eld_round_trip_keeps_contents_and_attributes() {
    let mut m = Machine::new();
    let e = m.enclave(&EnclaveSpec { data: vec![(layout::DATA, pattern())], ..EnclaveSpec::default() });
    let va = epa(&mut m);
    let mut f = Fx { m, e, va };
    for (i, &o) in OFFSETS.iter().enumerate() {
        let old = f.e.epc(o);
        let before = rdinfo(&mut f.m, old);
        // TCS: EDBGRD stops at SGX_TCS_LIMIT = 72 (§6.6 step 4); REG pages are read whole.
        let len = if o == layout::TCS { 72 } else { 4096 };
        let read = |m: &mut Machine, page: u64| -> Vec<u8> {
            (0..len / 8)
                .flat_map(|q| m.encls(Encls::Edbgrd, 0, page + 8 * q as u64, 0).unwrap().rbx.to_le_bytes())
                .collect()
        };
        let content = read(&mut f.m, old);
        let s = slot(f.va, i as u64);
        let blob = evict(&mut f.m, f.e.secs, old, s);
        let new = f.m.epc_page();
        check("ELDU", eld(&mut f.m, Encls::Eldu, &blob, blob.linaddr, f.e.secs, new, s), Want::Ok);
        let after = rdinfo(&mut f.m, new);
        assert_eq!(after, before, "offset {o:#x}: EPCM attributes and context survive");
        assert_eq!(read(&mut f.m, new), content, "offset {o:#x}: contents survive");
        assert_eq!(read_slot(&mut f.m, s), 0, "slot ← 0 (§6.6: EDBGRD of a 0 slot is 0)");
        check("ELDU leaves it unblocked: EWB → 10", ewb(&mut f.m, new, s).0, Want::Err(SgxError::PageNotBlocked));
    }
}

/// §6.11 step 6: ELDB/ELDBC leave a child page BLOCKED, with block_epoch = None (§7), so an EWB
/// needs no new ETRACK. SECS and VA pages are never loaded blocked.
#[test]
fn eldb_leaves_the_page_blocked() {
    for leaf in [Encls::Eldb, Encls::Eldbc] {
        let mut l = ld();
        let (p, s) = (l.page, slot(l.va, 0));
        check("ELDB", l.run(leaf, p, s, |_| {}), Want::Ok);
        assert_eq!(flags_of(&mut l.m, p), REG_RW | Rdinfo::BLOCKED, "{leaf}");
        check("EBLOCK of it", l.m.encls(Encls::Eblock, 0, p, 0), Want::Info(SgxError::Blkstate));
        check("EWB without ETRACK", ewb(&mut l.m, p, s).0, Want::Ok);
    }
    for leaf in [Encls::Eldu, Encls::Elduc] {
        let mut l = ld();
        let (p, s) = (l.page, slot(l.va, 0));
        check("ELDU", l.run(leaf, p, s, |_| {}), Want::Ok);
        assert_eq!(flags_of(&mut l.m, p), REG_RW, "{leaf}");
    }
    // A VA page loaded with ELDB is not blocked.
    let mut f = fx();
    let va2 = epa(&mut f.m);
    let (_, blob) = ewb(&mut f.m, va2, slot(f.va, 0));
    check("ELDB VA", eld(&mut f.m, Encls::Eldb, &blob, 0, 0, va2, slot(f.va, 0)), Want::Ok);
    assert_eq!(flags_of(&mut f.m, va2), VA);
}

/// §6.11 step 5: a MAC failure leaves the EPCM entry invalid and the slot untouched.
#[test]
fn eld_failure_changes_nothing() {
    let mut l = ld();
    let (p, s) = (l.page, slot(l.va, 0));
    check("wrong LINADDR", l.run(Encls::Eldu, p, s, |pi| pi.linaddr = 0), Want::Err(SgxError::MacCompareFail));
    check("still invalid", erdinfo(&mut l.m, p).0, Want::Info(SgxError::PgInvld));
    assert_eq!(read_slot(&mut l.m, s), u64::MAX, "slot kept its version (VER ≥ 8 here)");
    check("the right ELDU still works", l.eldu(), Want::Ok);
}

/// §6.11: "evicting and reloading a SECS (after its children are evicted) gives ENCLAVECONTEXT =
/// new address" (ERDINFO, §6.24), also over a value set by ESETCONTEXT; the children then reload
/// under the new SECS (same EID) and report its context; the child count is restored (§2).
#[test]
fn secs_eviction_and_reload() {
    let mut f = fx();
    let old_secs = f.e.secs;
    assert_eq!(rdinfo(&mut f.m, old_secs).enclavecontext, old_secs, "§6.1: ENCLAVECONTEXT ← SECS address");
    let ctx = f.m.put_bytes(&0x1234_5000u64.to_le_bytes(), 8);
    check("ESETCONTEXT", f.m.enclv(Enclv::Esetcontext, 0, old_secs, ctx), Want::Ok);
    let (children, secs_blob, _) = evict_enclave(&mut f);
    let new_secs = f.m.epc_page();
    check("ELDU SECS", eld(&mut f.m, Encls::Eldu, &secs_blob, 0, 0, new_secs, slot(f.va, 100)), Want::Ok);
    let info = rdinfo(&mut f.m, new_secs);
    assert_eq!(info.enclavecontext, new_secs, "ENCLAVECONTEXT ← new physical address");
    assert_eq!(info.flags, SECS);
    assert_eq!(info.status, 0, "no children resident yet");
    check(
        "old blob's SECS is gone",
        eld(&mut f.m, Encls::Eldu, &children[0].2, children[0].2.linaddr, old_secs, children[0].1, slot(f.va, 0)),
        epcm(old_secs),
    );
    for (i, (o, frame, blob)) in children.iter().enumerate() {
        check(
            "ELDU child",
            eld(&mut f.m, Encls::Eldu, blob, blob.linaddr, new_secs, *frame, slot(f.va, i as u64)),
            Want::Ok,
        );
        assert_eq!(rdinfo(&mut f.m, *frame).enclavecontext, new_secs, "child {o:#x} reports the new context");
    }
    assert_eq!(rdinfo(&mut f.m, new_secs).status, Rdinfo::CHILDPRESENT);
    check("EWB SECS again", ewb(&mut f.m, new_secs, slot(f.va, 100)).0, Want::Err(SgxError::ChildPresent));
}

// ELDBC/ELDUC: their only difference from ELDB/ELDU is the conflict outcome (§6.11 step 2: ZF,
// RAX = 7 instead of #GP). Leaves are atomic in the model (§5.3), so that path needs concurrency
// and is not reachable here; their non-conflict paths are covered above.

// ------------------------------------------------------------------------------------------------
// ERDINFO (SGX.md §6.24, RDINFO layout §1.13)
// ------------------------------------------------------------------------------------------------

/// §6.24 error paths.
#[test]
fn erdinfo_every_check() {
    run_table(
        fx,
        &[
            ("RBX not 32-aligned → #GP", |f| {
                let out = f.m.put_bytes(&[0; 64], 32) + 16;
                (f.m.encls(Encls::Erdinfo, out, f.e.secs, 0), Want::Fault(GP))
            }),
            ("RCX not 4K aligned → #GP", |f| (erdinfo(&mut f.m, f.e.secs + 8).0, Want::Fault(GP))),
            ("RCX not EPC → CF, 26 SGX_PG_NONEPC", |f| {
                let p = ram_page(&mut f.m);
                (erdinfo(&mut f.m, p).0, Want::Info(SgxError::PgNonepc))
            }),
            ("VALID = 0 → CF, 6 SGX_PG_INVLD", |f| {
                let p = f.m.epc_page();
                (erdinfo(&mut f.m, p).0, Want::Info(SgxError::PgInvld))
            }),
            ("valid page → success", |f| (erdinfo(&mut f.m, f.e.epc(layout::DATA)).0, Want::Ok)),
        ],
    );
}

/// §6.24 + §1.13: FLAGS in SECINFO layout with BLOCKED in bit 63; ENCLAVECONTEXT of the parent for
/// children, of itself for a SECS, 0 for VA; STATUS.CHILDPRESENT / VIRTCHILDPRESENT for a SECS;
/// the whole RDINFO (reserved included) is rewritten.
#[test]
fn erdinfo_contents() {
    let mut f = fx();
    let secs = f.e.secs;
    let want = |status, flags, enclavecontext| Rdinfo { status, flags, enclavecontext, reserved: 0 };
    assert_eq!(rdinfo(&mut f.m, f.e.epc(layout::DATA)), want(0, REG_RW, secs));
    assert_eq!(rdinfo(&mut f.m, f.e.epc(layout::READ_ONLY)), want(0, REG_R, secs));
    assert_eq!(rdinfo(&mut f.m, f.e.epc(layout::CODE)), want(0, REG_RX, secs));
    assert_eq!(rdinfo(&mut f.m, f.e.epc(layout::TCS)), want(0, TCS, secs), "§6.2: TCS RWX forced to 0");
    assert_eq!(rdinfo(&mut f.m, secs), want(Rdinfo::CHILDPRESENT, SECS, secs));
    assert_eq!(rdinfo(&mut f.m, f.va), want(0, VA, 0));
    ok(&mut f.m, Encls::Eblock, 0, f.e.epc(layout::TCS), 0);
    assert_eq!(rdinfo(&mut f.m, f.e.epc(layout::TCS)), want(0, TCS | Rdinfo::BLOCKED, secs));
    let e = f.e.clone();
    let aug = eaug(&mut f.m, &e, 0x6000);
    assert_eq!(rdinfo(&mut f.m, aug), want(0, REG_RW | PENDING, secs));
    check("EMODT", emod(&mut f.m, Encls::Emodt, TRIM, f.e.epc(layout::DATA)), Want::Ok);
    assert_eq!(rdinfo(&mut f.m, f.e.epc(layout::DATA)), want(0, TRIM | MODIFIED, secs));
    check("EMODPR", emod(&mut f.m, Encls::Emodpr, REG_R, f.e.epc(layout::OPERANDS)), Want::Ok);
    assert_eq!(rdinfo(&mut f.m, f.e.epc(layout::OPERANDS)), want(0, REG_R | PR, secs));
    check("EINCVIRTCHILD", f.m.enclv(Enclv::Eincvirtchild, secs, secs, 0), Want::Ok);
    assert_eq!(rdinfo(&mut f.m, secs), want(Rdinfo::CHILDPRESENT | Rdinfo::VIRTCHILDPRESENT, SECS, secs));
    // An uninitialized enclave's SECS with one child.
    let (uninit, _, page) = uninitialized(&mut f.m, 5);
    assert_eq!(rdinfo(&mut f.m, uninit), want(Rdinfo::CHILDPRESENT, SECS, uninit));
    assert_eq!(rdinfo(&mut f.m, page), want(0, REG_RW, uninit));
}

// ------------------------------------------------------------------------------------------------
// ETRACKC (SGX.md §6.25)
// ------------------------------------------------------------------------------------------------

/// §6.25: align; epc → #PF-EPCM; VALID = 0 → ZF 6; VA → CF 27; resolve the SECS; TRK_PREV > 0 →
/// ZF 17; else advance the epoch.
#[test]
fn etrackc_every_check() {
    run_table(
        fx,
        &[
            ("RCX not 4K aligned → #GP", |f| (f.m.encls(Encls::Etrackc, 0, f.e.secs + 8, 0), Want::Fault(GP))),
            ("RCX not EPC → #PF-EPCM(RCX)", |f| {
                let p = ram_page(&mut f.m);
                (f.m.encls(Encls::Etrackc, 0, p, 0), epcm(p))
            }),
            ("VALID = 0 → ZF, 6 SGX_PG_INVLD", |f| {
                let p = f.m.epc_page();
                (f.m.encls(Encls::Etrackc, 0, p, 0), Want::Err(SgxError::PgInvld))
            }),
            ("PT_VA → CF, 27 SGX_TRACK_NOT_REQUIRED", |f| {
                (f.m.encls(Encls::Etrackc, 0, f.va, 0), Want::Info(SgxError::TrackNotRequired))
            }),
            ("SECS → success", |f| (f.m.encls(Encls::Etrackc, 0, f.e.secs, 0), Want::Ok)),
            ("REG child → success", |f| (f.m.encls(Encls::Etrackc, 0, f.e.epc(layout::CODE), 0), Want::Ok)),
            ("TCS child → success", |f| (f.m.encls(Encls::Etrackc, 0, f.e.epc(layout::TCS), 0), Want::Ok)),
            ("BLOCKED child → success", |f| {
                let p = f.e.epc(layout::CODE);
                ok(&mut f.m, Encls::Eblock, 0, p, 0);
                (f.m.encls(Encls::Etrackc, 0, p, 0), Want::Ok)
            }),
            ("TRIM child → success", |f| {
                let p = f.e.epc(layout::DATA);
                check("EMODT", emod(&mut f.m, Encls::Emodt, TRIM, p), Want::Ok);
                (f.m.encls(Encls::Etrackc, 0, p, 0), Want::Ok)
            }),
            ("TRK_PREV > 0 (via SECS) → ZF, 17", |f| {
                lps_enter(&f.m, f.e.secs, 1);
                ok(&mut f.m, Encls::Etrackc, 0, f.e.secs, 0);
                (f.m.encls(Encls::Etrackc, 0, f.e.secs, 0), Want::Err(SgxError::PrevTrkIncmpl))
            }),
            ("TRK_PREV > 0 (via a child: resolves to its SECS) → ZF, 17", |f| {
                lps_enter(&f.m, f.e.secs, 1);
                ok(&mut f.m, Encls::Etrack, 0, f.e.secs, 0);
                (f.m.encls(Encls::Etrackc, 0, f.e.epc(layout::CODE), 0), Want::Err(SgxError::PrevTrkIncmpl))
            }),
        ],
    );
}

/// §6.25: a child page resolves to its SECS, so ETRACKC on any page tracks the page blocked on
/// another one (§7).
#[test]
fn etrackc_on_a_child_tracks_its_enclave() {
    let mut f = fx();
    let p = f.e.epc(layout::DATA);
    ok(&mut f.m, Encls::Eblock, 0, p, 0);
    ok(&mut f.m, Encls::Etrackc, 0, f.e.epc(layout::CODE), 0);
    assert_eq!(peek_secs(&f.m, f.e.secs, SecsHidden::TRK_EPOCH), 1);
    check("EWB", ewb(&mut f.m, p, slot(f.va, 0)).0, Want::Ok);
    // Another enclave's epoch is untouched.
    let g = other_enclave(&mut f.m, 1);
    ok(&mut f.m, Encls::Etrackc, 0, f.e.epc(layout::CODE), 0);
    assert_eq!(peek_secs(&f.m, g.secs, SecsHidden::TRK_EPOCH), 0);
}

// ------------------------------------------------------------------------------------------------
// ENCLV (SGX.md §6.26, dispatch §5.1)
// ------------------------------------------------------------------------------------------------

/// §6.26 EINCVIRTCHILD / EDECVIRTCHILD / ESETCONTEXT, every documented outcome.
#[test]
fn enclv_every_check() {
    run_table(
        fx,
        &[
            ("EINC: RBX not 4K aligned → #GP", |f| {
                (f.m.enclv(Enclv::Eincvirtchild, f.e.epc(layout::DATA) + 8, f.e.secs, 0), Want::Fault(GP))
            }),
            ("EINC: RBX not EPC → #PF(RBX, SGX)", |f| {
                let p = ram_page(&mut f.m);
                (f.m.enclv(Enclv::Eincvirtchild, p, f.e.secs, 0), Want::NonEpc(p))
            }),
            ("EINC: RCX not EPC → #PF(RCX, SGX)", |f| {
                let p = ram_page(&mut f.m);
                (f.m.enclv(Enclv::Eincvirtchild, f.e.epc(layout::DATA), p, 0), Want::NonEpc(p))
            }),
            ("EINC: EPCM(RBX) invalid → #PF-EPCM(RBX)", |f| {
                let p = f.m.epc_page();
                (f.m.enclv(Enclv::Eincvirtchild, p, f.e.secs, 0), epcm(p))
            }),
            ("EINC: RBX is PT_VA → #PF-EPCM(RBX)", |f| {
                (f.m.enclv(Enclv::Eincvirtchild, f.va, f.e.secs, 0), epcm(f.va))
            }),
            ("EINC: order: EPCM(RBX) before SECS ≠ RCX", |f| {
                let p = f.m.epc_page();
                (f.m.enclv(Enclv::Eincvirtchild, p, f.e.epc(layout::CODE), 0), epcm(p))
            }),
            ("EINC: parent ≠ RCX (another enclave's SECS) → #GP", |f| {
                let g = other_enclave(&mut f.m, 1);
                (f.m.enclv(Enclv::Eincvirtchild, f.e.epc(layout::DATA), g.secs, 0), Want::Fault(GP))
            }),
            ("EINC: parent ≠ RCX (RCX is a sibling page) → #GP", |f| {
                (f.m.enclv(Enclv::Eincvirtchild, f.e.epc(layout::DATA), f.e.epc(layout::CODE), 0), Want::Fault(GP))
            }),
            ("EINC: SECS ≠ RCX (RBX is a SECS, RCX another) → #GP", |f| {
                let g = other_enclave(&mut f.m, 1);
                (f.m.enclv(Enclv::Eincvirtchild, f.e.secs, g.secs, 0), Want::Fault(GP))
            }),
            ("EINC: REG child + parent → success", |f| {
                (f.m.enclv(Enclv::Eincvirtchild, f.e.epc(layout::DATA), f.e.secs, 0), Want::Ok)
            }),
            ("EINC: TCS child + parent → success", |f| {
                (f.m.enclv(Enclv::Eincvirtchild, f.e.epc(layout::TCS), f.e.secs, 0), Want::Ok)
            }),
            ("EINC: TRIM child + parent → success", |f| {
                let p = f.e.epc(layout::DATA);
                check("EMODT", emod(&mut f.m, Encls::Emodt, TRIM, p), Want::Ok);
                (f.m.enclv(Enclv::Eincvirtchild, p, f.e.secs, 0), Want::Ok)
            }),
            ("EINC: SECS + itself → success", |f| (f.m.enclv(Enclv::Eincvirtchild, f.e.secs, f.e.secs, 0), Want::Ok)),
            ("EDEC: counter 0 → ZF, 25 SGX_INVALID_COUNTER", |f| {
                (
                    f.m.enclv(Enclv::Edecvirtchild, f.e.epc(layout::DATA), f.e.secs, 0),
                    Want::Err(SgxError::InvalidCounter),
                )
            }),
            ("EDEC: after EINC → success", |f| {
                check("EINC", f.m.enclv(Enclv::Eincvirtchild, f.e.secs, f.e.secs, 0), Want::Ok);
                (f.m.enclv(Enclv::Edecvirtchild, f.e.epc(layout::DATA), f.e.secs, 0), Want::Ok)
            }),
            ("EDEC: RBX invalid → #PF-EPCM(RBX)", |f| {
                let p = f.m.epc_page();
                (f.m.enclv(Enclv::Edecvirtchild, p, f.e.secs, 0), epcm(p))
            }),
            ("EDEC: parent ≠ RCX → #GP", |f| {
                (f.m.enclv(Enclv::Edecvirtchild, f.e.epc(layout::DATA), f.e.epc(layout::DATA), 0), Want::Fault(GP))
            }),
            ("ESETCONTEXT: RCX not 4K aligned → #GP", |f| {
                let v = f.m.put_bytes(&[0; 8], 8);
                (f.m.enclv(Enclv::Esetcontext, 0, f.e.secs + 8, v), Want::Fault(GP))
            }),
            ("ESETCONTEXT: RCX not EPC → #PF(RCX, SGX)", |f| {
                let v = f.m.put_bytes(&[0; 8], 8);
                let p = ram_page(&mut f.m);
                (f.m.enclv(Enclv::Esetcontext, 0, p, v), Want::NonEpc(p))
            }),
            ("ESETCONTEXT: RDX not 8-aligned → #GP", |f| {
                let v = f.m.put_bytes(&[0; 16], 8) + 4;
                (f.m.enclv(Enclv::Esetcontext, 0, f.e.secs, v), Want::Fault(GP))
            }),
            ("ESETCONTEXT: RCX invalid → #PF-EPCM(RCX)", |f| {
                let v = f.m.put_bytes(&[0; 8], 8);
                let p = f.m.epc_page();
                (f.m.enclv(Enclv::Esetcontext, 0, p, v), epcm(p))
            }),
            ("ESETCONTEXT: RCX is PT_REG → #PF-EPCM(RCX)", |f| {
                let v = f.m.put_bytes(&[0; 8], 8);
                let p = f.e.epc(layout::DATA);
                (f.m.enclv(Enclv::Esetcontext, 0, p, v), epcm(p))
            }),
            ("ESETCONTEXT: RCX is PT_VA → #PF-EPCM(RCX)", |f| {
                let v = f.m.put_bytes(&[0; 8], 8);
                (f.m.enclv(Enclv::Esetcontext, 0, f.va, v), epcm(f.va))
            }),
            ("ESETCONTEXT: SECS → success", |f| {
                let v = f.m.put_bytes(&[0; 8], 8);
                (f.m.enclv(Enclv::Esetcontext, 0, f.e.secs, v), Want::Ok)
            }),
        ],
    );
}

/// §6.26 step 4: the counter moves by one, underflow leaves it unchanged; ERDINFO shows
/// VIRTCHILDPRESENT (§6.24). ESETCONTEXT then ERDINFO shows the context, for the SECS and its
/// children.
#[test]
fn enclv_counter_and_context() {
    let mut f = fx();
    let (secs, data) = (f.e.secs, f.e.epc(layout::DATA));
    for _ in 0..2 {
        check("EINC", f.m.enclv(Enclv::Eincvirtchild, data, secs, 0), Want::Ok);
    }
    assert_eq!(peek_secs(&f.m, secs, SecsHidden::VIRTCHILDCNT), 2);
    assert_eq!(rdinfo(&mut f.m, secs).status, Rdinfo::CHILDPRESENT | Rdinfo::VIRTCHILDPRESENT);
    for _ in 0..2 {
        check("EDEC", f.m.enclv(Enclv::Edecvirtchild, data, secs, 0), Want::Ok);
    }
    assert_eq!(rdinfo(&mut f.m, secs).status, Rdinfo::CHILDPRESENT);
    check("EDEC at 0", f.m.enclv(Enclv::Edecvirtchild, secs, secs, 0), Want::Err(SgxError::InvalidCounter));
    assert_eq!(peek_secs(&f.m, secs, SecsHidden::VIRTCHILDCNT), 0, "unchanged by the failed decrement");

    // Increment overflow → 25, counter unchanged (VIRTCHILDCNT at its documented offset, §1.3).
    poke_secs(&f.m, secs, SecsHidden::VIRTCHILDCNT, u64::MAX);
    check("EINC at max", f.m.enclv(Enclv::Eincvirtchild, secs, secs, 0), Want::Err(SgxError::InvalidCounter));
    assert_eq!(peek_secs(&f.m, secs, SecsHidden::VIRTCHILDCNT), u64::MAX);
    poke_secs(&f.m, secs, SecsHidden::VIRTCHILDCNT, 0);

    let v = f.m.put_bytes(&0xDEAD_BEEF_0000u64.to_le_bytes(), 8);
    check("ESETCONTEXT", f.m.enclv(Enclv::Esetcontext, 0, secs, v), Want::Ok);
    assert_eq!(rdinfo(&mut f.m, secs).enclavecontext, 0xDEAD_BEEF_0000);
    assert_eq!(rdinfo(&mut f.m, data).enclavecontext, 0xDEAD_BEEF_0000, "children report the parent's context");
}

/// §6.10 step 5 / §6.24: VIRTCHILDCNT only matters in VMX non-root; on bare metal a SECS with a
/// non-zero VIRTCHILDCNT and no children is evictable.
#[test]
fn virtchildcnt_does_not_block_bare_metal_secs_eviction() {
    let mut f = fx();
    check("EINC", f.m.enclv(Enclv::Eincvirtchild, f.e.secs, f.e.secs, 0), Want::Ok);
    let (_, blob, _) = evict_enclave(&mut f);
    assert_eq!(blob.pcmd.secinfo.flags, SECS);
}

/// §5.1 ENCLV dispatch: #UD unless enumerated, outside VMX operation or at CPL > 0; #GP(0) for an
/// invalid leaf.
#[test]
fn enclv_dispatch() {
    let mut f = fx();
    let secs = f.e.secs;
    let cpu = f.m.os.cpu();
    check(
        "outside VMX root → #UD",
        cpu.enclv_leaf(Enclv::Eincvirtchild, secs, secs, 0),
        Want::Fault(Exception::InvalidOpcode),
    );
    cpu.set_vmx_root(true);
    cpu.set_cpl(Cpl::Ring3);
    check("CPL 3 → #UD", cpu.enclv_leaf(Enclv::Eincvirtchild, secs, secs, 0), Want::Fault(Exception::InvalidOpcode));
    cpu.set_cpl(Cpl::Ring0);
    let mut regs = Gprs::leaf(3, secs, secs, 0);
    check("invalid leaf 3 → #GP", cpu.enclv(&mut regs).map(|_| regs), Want::Fault(GP));
    check("in VMX root → success", cpu.enclv_leaf(Enclv::Eincvirtchild, secs, secs, 0), Want::Ok);
    cpu.set_vmx_root(false);

    let mut cfg = vsgx_hw::config::embedded_default();
    cfg.seed = Some(7);
    cfg.features.enclv = false;
    let mut m = Machine::with_config(cfg);
    let e = m.enclave(&EnclaveSpec::default());
    check(
        "not enumerated → #UD",
        m.enclv(Enclv::Eincvirtchild, e.secs, e.secs, 0),
        Want::Fault(Exception::InvalidOpcode),
    );
}

/// §5.1: without CPUID.12H.0:EAX[6] the ENCLS-C leaves are invalid (#GP(0)); §5.3: on an SGX1-only
/// part EPCM faults are #GP(0) instead of #PF, while return codes are unchanged.
#[test]
fn feature_switches() {
    let mut cfg = vsgx_hw::config::embedded_default();
    cfg.seed = Some(7);
    cfg.features.encls_c = false;
    let mut m = Machine::with_config(cfg);
    let e = m.enclave(&EnclaveSpec::default());
    check("ERDINFO", erdinfo(&mut m, e.secs).0, Want::Fault(GP));
    check("ETRACKC", m.encls(Encls::Etrackc, 0, e.secs, 0), Want::Fault(GP));
    let va = epa(&mut m);
    let blob = evict(&mut m, e.secs, e.epc(layout::DATA), slot(va, 0));
    for leaf in [Encls::Eldbc, Encls::Elduc] {
        check(
            leaf.name(),
            eld(&mut m, leaf, &blob, blob.linaddr, e.secs, e.epc(layout::DATA), slot(va, 0)),
            Want::Fault(GP),
        );
    }

    let mut cfg = vsgx_hw::config::embedded_default();
    cfg.seed = Some(7);
    cfg.features.sgx2 = false;
    let mut m = Machine::with_config(cfg);
    let e = m.enclave(&EnclaveSpec::default());
    let va = epa(&mut m);
    let free = m.epc_page();
    check("SGX1: EWB invalid page → #GP", ewb(&mut m, free, slot(va, 0)).0, Want::Fault(GP));
    check("SGX1: ETRACK on a REG page → #GP", m.encls(Encls::Etrack, 0, e.epc(layout::DATA), 0), Want::Fault(GP));
    check("SGX1: EBLOCK invalid → still ZF 6", m.encls(Encls::Eblock, 0, free, 0), Want::Err(SgxError::PgInvld));
    check("SGX1: EAUG is not enumerated → #GP", m.encls(Encls::Eaug, 0, free, 0), Want::Fault(GP));
    let blob = evict(&mut m, e.secs, e.epc(layout::DATA), slot(va, 0));
    let busy = e.epc(layout::CODE);
    check(
        "SGX1: ELDU onto a valid page → #GP",
        eld(&mut m, Encls::Eldu, &blob, blob.linaddr, e.secs, busy, slot(va, 0)),
        Want::Fault(GP),
    );
}

// ------------------------------------------------------------------------------------------------
// EPC loss (SGX.md §10)
// ------------------------------------------------------------------------------------------------

/// A machine whose EPC was lost after: an enclave was built, its OPERANDS page evicted into slot 0
/// of `va`, and a second enclave was evicted entirely (its SECS blob in slot 100 of `va2`).
struct Lost {
    m: Machine,
    e: TestEnclave,
    va: u64,
    child_blob: Blob,
    secs_blob: Blob,
}

fn lost() -> Lost {
    let mut f = fx();
    let (e, va) = (f.e.clone(), f.va);
    let child_blob = evict(&mut f.m, e.secs, e.epc(layout::OPERANDS), slot(va, 0));
    // Evict a second enclave entirely, using a second VA page.
    f.e = other_enclave(&mut f.m, 1);
    f.va = epa(&mut f.m);
    let (_, secs_blob, _) = evict_enclave(&mut f);
    f.m.platform.lose_epc();
    Lost { m: f.m, e, va, child_blob, secs_blob }
}

/// §10.2: what software observes after `lose_epc()` (all EPCM entries VALID = 0).
#[test]
fn epc_loss_observations() {
    run_table(
        lost,
        &[
            ("EBLOCK old page → ZF, 6", |l| {
                (l.m.encls(Encls::Eblock, 0, l.e.epc(layout::DATA), 0), Want::Err(SgxError::PgInvld))
            }),
            ("EREMOVE old page → 0", |l| (l.m.encls(Encls::Eremove, 0, l.e.epc(layout::DATA), 0), Want::Ok)),
            ("EREMOVE old SECS → 0", |l| (l.m.encls(Encls::Eremove, 0, l.e.secs, 0), Want::Ok)),
            ("ERDINFO old page → CF, 6", |l| {
                (erdinfo(&mut l.m, l.e.epc(layout::DATA)).0, Want::Info(SgxError::PgInvld))
            }),
            ("ERDINFO old SECS → CF, 6", |l| (erdinfo(&mut l.m, l.e.secs).0, Want::Info(SgxError::PgInvld))),
            ("ETRACKC old page → ZF, 6", |l| {
                (l.m.encls(Encls::Etrackc, 0, l.e.epc(layout::CODE), 0), Want::Err(SgxError::PgInvld))
            }),
            ("ETRACK old SECS → #PF-EPCM", |l| (l.m.encls(Encls::Etrack, 0, l.e.secs, 0), epcm(l.e.secs))),
            ("EADD naming the old SECS → #PF-EPCM(SECS)", |l| {
                let (secs, la) = (l.e.secs, l.e.la(0x8000));
                let page = l.m.epc_page();
                let src = l.m.put_bytes(&[0; 4096], 4096);
                let si = secinfo(&mut l.m, REG_RW);
                let pi = l.m.put(&Pageinfo { linaddr: la, srcpge: src, secinfo_or_pcmd: si, secs });
                (l.m.encls(Encls::Eadd, pi, page, 0), epcm(secs))
            }),
            ("EAUG naming the old SECS → #PF-EPCM(SECS)", |l| {
                let (secs, la) = (l.e.secs, l.e.la(0x8000));
                let page = l.m.epc_page();
                let pi = l.m.put(&Pageinfo { linaddr: la, srcpge: 0, secinfo_or_pcmd: 0, secs });
                (l.m.encls(Encls::Eaug, pi, page, 0), epcm(secs))
            }),
            ("EEXTEND old page → #PF-EPCM(page)", |l| {
                let p = l.e.epc(layout::DATA) + 256;
                (l.m.encls(Encls::Eextend, l.e.secs, p, 0), epcm(p))
            }),
            ("EMODPR old page → #PF-EPCM", |l| {
                let p = l.e.epc(layout::DATA);
                (emod(&mut l.m, Encls::Emodpr, REG_R, p), epcm(p))
            }),
            ("EMODT old page → #PF-EPCM", |l| {
                let p = l.e.epc(layout::DATA);
                (emod(&mut l.m, Encls::Emodt, TRIM, p), epcm(p))
            }),
            ("EDBGRD old page → #PF-EPCM", |l| {
                let p = l.e.epc(layout::DATA) + 8;
                (l.m.encls(Encls::Edbgrd, 0, p, 0), epcm(p))
            }),
            ("EDBGWR old page → #PF-EPCM", |l| {
                let p = l.e.epc(layout::DATA) + 8;
                (l.m.encls(Encls::Edbgwr, 1, p, 0), epcm(p))
            }),
            ("EWB old page (fresh VA) → #PF-EPCM(page)", |l| {
                let va = epa(&mut l.m);
                let p = l.e.epc(layout::DATA);
                (ewb(&mut l.m, p, slot(va, 0)).0, epcm(p))
            }),
            ("EINIT old SECS → #PF-EPCM(SECS) after the SIGSTRUCT checks", |l| {
                let sig = l.m.put(&l.e.sig);
                let token = l.m.put(&vsgx_isa::Einittoken::zeroed());
                (l.m.encls(Encls::Einit, sig, l.e.secs, token), epcm(l.e.secs))
            }),
            ("EINIT old SECS, broken SIGSTRUCT header → 1 (structure check first)", |l| {
                let mut bytes = l.e.sig.bytes().to_vec();
                bytes[0] ^= 1;
                let sig = l.m.put_bytes(&bytes, 4096);
                let token = l.m.put(&vsgx_isa::Einittoken::zeroed());
                (l.m.encls(Encls::Einit, sig, l.e.secs, token), Want::Err(SgxError::InvalidSigStruct))
            }),
            ("ELDU old blob with the old VA page → #PF-EPCM(RDX)", |l| {
                let (b, s) = (l.child_blob.clone(), slot(l.va, 0));
                let p = l.m.epc_page();
                (eld(&mut l.m, Encls::Eldu, &b, b.linaddr, l.e.secs, p, s), epcm(s))
            }),
            ("ELDU old child blob, fresh VA, old SECS → #PF-EPCM(SECS)", |l| {
                let b = l.child_blob.clone();
                let va = epa(&mut l.m);
                let p = l.m.epc_page();
                (eld(&mut l.m, Encls::Eldu, &b, b.linaddr, l.e.secs, p, slot(va, 0)), epcm(l.e.secs))
            }),
            ("ELDU old child blob, fresh VA, a resident SECS → 9", |l| {
                let b = l.child_blob.clone();
                let va = epa(&mut l.m);
                let p = l.m.epc_page();
                let (secs, _, _) = uninitialized(&mut l.m, 6);
                (eld(&mut l.m, Encls::Eldu, &b, b.linaddr, secs, p, slot(va, 0)), Want::Err(SgxError::MacCompareFail))
            }),
            ("ELDU old SECS blob with a fresh VA page → 9", |l| {
                let b = l.secs_blob.clone();
                let va = epa(&mut l.m);
                let p = l.m.epc_page();
                (eld(&mut l.m, Encls::Eldu, &b, 0, 0, p, slot(va, 100)), Want::Err(SgxError::MacCompareFail))
            }),
            ("the old frames are free again: EPA on the old SECS frame", |l| {
                (l.m.encls(Encls::Epa, vsgx_isa::PageType::Va as u64, l.e.secs, 0), Want::Done)
            }),
        ],
    );
}

/// §10.1: `lose_epc()` keeps K_ROOT, fuses, owner epoch, CPUSVN, CR_REPORT_KEYID and the MSRs;
/// `power_cycle()` additionally regenerates CR_REPORT_KEYID and resets the hash MSRs to Intel's
/// value (§4.4) and FEATURE_CONTROL to the firmware value (§9.2).
#[test]
fn lose_epc_versus_power_cycle() {
    use vsgx_isa::msr;
    let mut m = Machine::new();
    let e = m.enclave(&EnclaveSpec::default());
    let lehash: Vec<u64> = (0..4).map(|i| m.os.cpu().rdmsr(msr::IA32_SGXLEPUBKEYHASH[i]).unwrap()).collect();
    assert_eq!(lehash, msr::lehash_to_msrs(&e.mrsigner).to_vec(), "the OS set the hash to the signer");
    let keys = m.platform.keys();

    m.platform.lose_epc();
    let after: Vec<u64> = (0..4).map(|i| m.os.cpu().rdmsr(msr::IA32_SGXLEPUBKEYHASH[i]).unwrap()).collect();
    assert_eq!(after, lehash, "lose_epc keeps the MSRs");
    assert_eq!(m.platform.keys().report_keyid, keys.report_keyid, "lose_epc keeps CR_REPORT_KEYID");
    assert_eq!(m.platform.keys().cpusvn, keys.cpusvn);

    m.platform.power_cycle();
    let reset: Vec<u64> = (0..4).map(|i| m.os.cpu().rdmsr(msr::IA32_SGXLEPUBKEYHASH[i]).unwrap()).collect();
    assert_eq!(
        reset,
        vec![0xa6053e051270b7ac, 0x6cfbe8ba8b3b413d, 0xc4916d99f2b3735d, 0xd4f8c05909f9bb3b],
        "§4.4 reset value"
    );
    assert_eq!(m.os.cpu().rdmsr(msr::IA32_FEATURE_CONTROL).unwrap(), 0x60001, "§9.2 firmware value");
    assert_ne!(m.platform.keys().report_keyid, keys.report_keyid, "power_cycle regenerates CR_REPORT_KEYID");
    assert_eq!(m.platform.keys().cpusvn, keys.cpusvn);
    check("old SECS after the power cycle", erdinfo(&mut m, e.secs).0, Want::Info(SgxError::PgInvld));
}
