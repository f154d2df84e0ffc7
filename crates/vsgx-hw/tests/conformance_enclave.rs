//! Conformance of the SGX2 page leaves and the enclave-mode ENCLU leaves with SGX.md: EAUG
//! (§6.12), EMODPR (§6.13), EMODT (§6.14), EACCEPT (§6.15), EACCEPTCOPY (§6.16), EMODPE (§6.17),
//! EREPORT (§6.18), EGETKEY (§6.19), with the key rules of §8 and the platform differences of §10.
//!
//! One case per documented error path (plus success). Enclave-mode leaves run through
//! `Machine::enclu` at ring 3, so their EPCM faults carry U/S (§5.3). Every expected value is
//! taken from SGX.md; the section is cited per group.
//!
//! Not reachable in this model, hence not tested: every "busy" / SGX_EPC_PAGE_CONFLICT (7) outcome
//! (leaves are atomic, §5.3 MODEL CHOICE); the EACCEPT rule for the executing LP itself (§7: no
//! EENTER yet — other LPs are stood in for via TRK_PREV at its documented offset, §1.3).

mod common;
mod conformance_support;

use common::*;
use conformance_support::*;
use vsgx_hw::crypto::aes_cmac;
use vsgx_isa::leaf::{Encls, Enclu, Enclv};
use vsgx_isa::status::SgxError;
use vsgx_isa::{
    ArchStruct, AttributesFlags, Keyname, Keypolicy, Keyrequest, Pageinfo, Rdinfo, Report, Secinfo, Targetinfo, Tcs,
};

/// A machine with one initialized (DEBUG) test enclave.
struct Ex {
    m: Machine,
    e: TestEnclave,
}

fn ex() -> Ex {
    let mut m = Machine::new();
    let e = m.enclave(&EnclaveSpec::default());
    Ex { m, e }
}

// Operand locations inside the enclave (OPERANDS page, §1.1 alignments).
const SI: u64 = layout::OPERANDS;
const TI: u64 = layout::OPERANDS + 0x200;
const RD: u64 = layout::OPERANDS + 0x400;
const REP: u64 = layout::OPERANDS + 0x600;
const KR: u64 = layout::OPERANDS + 0x800;
const KEY: u64 = layout::OPERANDS + 0xA00;

// Free ELRANGE offsets (the enclave is 64 KiB, its pages end at 0x6000).
const AUG: u64 = 0x6000;
const AUG2: u64 = 0x7000;
const ALIAS: u64 = 0x8000;
const NONEPC: u64 = 0x9000;
const HOLE: u64 = 0xA000;
const FOREIGN: u64 = 0xB000;
const FREE: u64 = 0xC000;
const VAPG: u64 = 0xD000;
const SECSPG: u64 = 0xE000;

impl Ex {
    fn la(&self, offset: u64) -> u64 {
        self.e.la(offset)
    }

    fn epc(&self, offset: u64) -> u64 {
        self.e.epc(offset)
    }

    /// Maps the enclave page at `offset` to physical `pa` (as an OS maps ELRANGE).
    fn map(&mut self, offset: u64, pa: u64) -> u64 {
        let la = self.la(offset);
        self.m.os.map_page(la, pa).expect("map");
        la
    }

    /// `offset` mapped to ordinary RAM.
    fn nonepc(&mut self) -> u64 {
        let r = ram_page(&mut self.m);
        self.map(NONEPC, r)
    }

    /// `offset` mapped to a page of another enclave (its DATA page, or `page` if given).
    fn foreign(&mut self, page: Option<u64>) -> u64 {
        let other = self.m.enclave(&EnclaveSpec { base_slot: 1, data: vec![(0, vec![9])], ..EnclaveSpec::default() });
        let pa = page.unwrap_or(other.epc(layout::DATA));
        self.map(FOREIGN, pa)
    }

    fn aug(&mut self, offset: u64) -> u64 {
        let e = self.e.clone();
        eaug(&mut self.m, &e, offset);
        self.la(offset)
    }

    fn write(&mut self, offset: u64, bytes: &[u8]) {
        let la = self.la(offset);
        self.m.debug_write(la, bytes);
    }

    /// SECINFO with raw FLAGS at SI; returns its linear address.
    fn secinfo(&mut self, flags: u64) -> u64 {
        self.write(SI, Secinfo::from_raw_flags(flags).bytes());
        self.la(SI)
    }

    fn enclu(&mut self, leaf: Enclu, rbx: u64, rcx: u64, rdx: u64) -> Outcome {
        self.m.enclu(&self.e, leaf, rbx, rcx, rdx)
    }

    fn eaccept(&mut self, flags: u64, rcx: u64) -> Outcome {
        let si = self.secinfo(flags);
        self.enclu(Enclu::Eaccept, si, rcx, 0)
    }

    fn flags(&mut self, offset: u64) -> u64 {
        let pa = self.m.physical(self.la(offset));
        rdinfo(&mut self.m, pa).flags
    }

    fn encls(&mut self, leaf: Encls, rbx: u64, rcx: u64) -> Outcome {
        self.m.encls(leaf, rbx, rcx, 0)
    }
}

// ------------------------------------------------------------------------------------------------
// EAUG (SGX.md §6.12)
// ------------------------------------------------------------------------------------------------

/// EAUG of a fresh page with PAGEINFO {LINADDR = la(AUG), SRCPGE = 0, SECINFO = 0, SECS} edited.
fn eaug_edit(x: &mut Ex, rcx: Option<u64>, edit: impl FnOnce(&mut Pageinfo)) -> (Outcome, u64) {
    let rcx = rcx.unwrap_or_else(|| x.m.epc_page());
    let mut pi = Pageinfo { linaddr: x.la(AUG), srcpge: 0, secinfo_or_pcmd: 0, secs: x.e.secs };
    edit(&mut pi);
    let rbx = x.m.put(&pi);
    (x.m.encls(Encls::Eaug, rbx, rcx, 0), rcx)
}

/// §6.12 steps 1–4 in order.
#[test]
fn eaug_every_step() {
    run_table(
        ex,
        &[
            ("RBX not 32-aligned → #GP", |x| {
                let p = x.m.epc_page();
                let pi = Pageinfo { linaddr: x.la(AUG), srcpge: 0, secinfo_or_pcmd: 0, secs: x.e.secs };
                let rbx = x.m.put_bytes(&[[0u8; 16].as_slice(), pi.bytes()].concat(), 32) + 16;
                (x.m.encls(Encls::Eaug, rbx, p, 0), Want::Fault(GP))
            }),
            ("RCX not 4K aligned → #GP", |x| {
                let p = x.m.epc_page() + 64;
                (eaug_edit(x, Some(p), |_| {}).0, Want::Fault(GP))
            }),
            ("RCX not EPC → #PF(RCX)", |x| {
                let p = ram_page(&mut x.m);
                (eaug_edit(x, Some(p), |_| {}).0, Want::NonEpc(p))
            }),
            ("SECINFO ≠ 0 → #GP (model)", |x| {
                let si = secinfo(&mut x.m, REG_RW | PENDING);
                (eaug_edit(x, None, |pi| pi.secinfo_or_pcmd = si).0, Want::Fault(GP))
            }),
            ("order: epc(RCX) before SECINFO ≠ 0", |x| {
                let p = ram_page(&mut x.m);
                (eaug_edit(x, Some(p), |pi| pi.secinfo_or_pcmd = 64).0, Want::NonEpc(p))
            }),
            ("SECS not 4K aligned → #GP", |x| (eaug_edit(x, None, |pi| pi.secs += 8).0, Want::Fault(GP))),
            ("LINADDR not 4K aligned → #GP", |x| (eaug_edit(x, None, |pi| pi.linaddr += 8).0, Want::Fault(GP))),
            ("SRCPGE ≠ 0 → #GP", |x| (eaug_edit(x, None, |pi| pi.srcpge = 0x40_0000).0, Want::Fault(GP))),
            ("SECS not EPC → #PF(SECS)", |x| {
                let r = ram_page(&mut x.m);
                (eaug_edit(x, None, |pi| pi.secs = r).0, Want::NonEpc(r))
            }),
            ("order: SRCPGE ≠ 0 before epc(SECS)", |x| {
                let r = ram_page(&mut x.m);
                (eaug_edit(x, None, |pi| (pi.secs, pi.srcpge) = (r, 0x40_0000)).0, Want::Fault(GP))
            }),
            ("EPCM(RCX).VALID → #PF-EPCM(RCX)", |x| {
                let p = x.epc(layout::DATA);
                (eaug_edit(x, Some(p), |_| {}).0, epcm(p))
            }),
            ("order: epc(SECS) before EPCM(RCX)", |x| {
                let (p, r) = (x.epc(layout::DATA), ram_page(&mut x.m));
                (eaug_edit(x, Some(p), |pi| pi.secs = r).0, Want::NonEpc(r))
            }),
            ("EPCM(SECS) not VALID → #PF-EPCM(SECS)", |x| {
                let s = x.m.epc_page();
                (eaug_edit(x, None, |pi| pi.secs = s).0, epcm(s))
            }),
            ("EPCM(SECS) is PT_REG → #PF-EPCM(SECS)", |x| {
                let s = x.epc(layout::CODE);
                (eaug_edit(x, None, |pi| pi.secs = s).0, epcm(s))
            }),
            ("order: EPCM(RCX) before EPCM(SECS)", |x| {
                let (p, s) = (x.epc(layout::DATA), x.m.epc_page());
                (eaug_edit(x, Some(p), |pi| pi.secs = s).0, epcm(p))
            }),
            ("enclave not initialized → #GP", |x| {
                let (secs, base, _) = uninitialized(&mut x.m, 3);
                (eaug_edit(x, None, |pi| (pi.secs, pi.linaddr) = (secs, base + 0x1000)).0, Want::Fault(GP))
            }),
            ("order: EPCM(RCX) before not initialized", |x| {
                let (secs, base, page) = uninitialized(&mut x.m, 3);
                (eaug_edit(x, Some(page), |pi| (pi.secs, pi.linaddr) = (secs, base + 0x1000)).0, epcm(page))
            }),
            ("LINADDR = BASEADDR + SIZE → #GP", |x| {
                let la = x.e.base + x.e.size;
                (eaug_edit(x, None, |pi| pi.linaddr = la).0, Want::Fault(GP))
            }),
            ("LINADDR below BASEADDR → #GP", |x| {
                let la = x.e.base - 0x1000;
                (eaug_edit(x, None, |pi| pi.linaddr = la).0, Want::Fault(GP))
            }),
            ("success (last ELRANGE page)", |x| {
                let la = x.e.base + x.e.size - 0x1000;
                (eaug_edit(x, None, |pi| pi.linaddr = la).0, Want::Done)
            }),
        ],
    );
}

/// §6.12 step 4: the page is zeroed, EPCM {R, W, PT_REG, PENDING, at LINADDR} (ERDINFO), counted
/// as a child (§2), unmeasured (§3.1: EREPORT's MRENCLAVE unchanged); PENDING pages are not
/// debuggable (§6.6 step 3: EDBGRD/EDBGWR → 21) nor accessible in enclave mode (§2).
#[test]
fn eaug_effects() {
    let mut x = ex();
    let mr_before = report(&mut x, &Targetinfo::zeroed()).mrenclave;
    let page = x.m.epc_page();
    let pi = x.m.put(&Pageinfo { linaddr: x.la(AUG), srcpge: 0, secinfo_or_pcmd: 0, secs: x.e.secs });
    check("EAUG", x.m.encls(Encls::Eaug, pi, page, 0), Want::Done);
    x.map(AUG, page);
    let info = rdinfo(&mut x.m, page);
    assert_eq!(info, Rdinfo { status: 0, flags: REG_RW | PENDING, enclavecontext: x.e.secs, reserved: 0 });
    check("EDBGRD of a PENDING page", x.m.encls(Encls::Edbgrd, 0, page, 0), Want::Err(SgxError::PageNotDebuggable));
    check("EDBGWR of a PENDING page", x.m.encls(Encls::Edbgwr, 1, page, 0), Want::Err(SgxError::PageNotDebuggable));
    let la = x.la(AUG);
    check(
        "enclave read of a PENDING page (EREPORT's REPORTDATA)",
        x.enclu(Enclu::Ereport, x.la(TI), la, x.la(REP)),
        epcm_u(la),
    );
    check("EACCEPT", x.eaccept(REG_RW | PENDING, la), Want::Ok);
    assert_eq!(x.m.debug_read(la, 4096), vec![0u8; 4096], "zeroed");
    assert_eq!(report(&mut x, &Targetinfo::zeroed()).mrenclave, mr_before, "EAUG is not measured");

    // The child count: with every other child evicted, the EAUGed page still blocks the SECS.
    let va = epa(&mut x.m);
    let offsets = [layout::DATA, layout::OPERANDS, layout::TCS, layout::SSA, layout::READ_ONLY, layout::CODE];
    for (i, &o) in offsets.iter().enumerate() {
        let (secs, p) = (x.e.secs, x.epc(o));
        evict(&mut x.m, secs, p, slot(va, i as u64));
    }
    assert_eq!(rdinfo(&mut x.m, x.e.secs).status, Rdinfo::CHILDPRESENT);
    check("EWB SECS", ewb(&mut x.m, x.e.secs, slot(va, 10)).0, Want::Err(SgxError::ChildPresent));
    let secs = x.e.secs;
    evict(&mut x.m, secs, page, slot(va, 11));
    assert_eq!(rdinfo(&mut x.m, x.e.secs).status, 0);
}

// ------------------------------------------------------------------------------------------------
// EMODPR (SGX.md §6.13)
// ------------------------------------------------------------------------------------------------

/// §6.13 in order.
#[test]
fn emodpr_every_check() {
    run_table(
        ex,
        &[
            ("RBX not 64-aligned → #GP", |x| {
                let si =
                    x.m.put_bytes(&[[0u8; 32].as_slice(), Secinfo::from_raw_flags(REG_R).bytes()].concat(), 64) + 32;
                (x.encls(Encls::Emodpr, si, x.epc(layout::DATA)), Want::Fault(GP))
            }),
            ("RCX not 4K aligned → #GP", |x| {
                let p = x.epc(layout::DATA) + 8;
                (emod(&mut x.m, Encls::Emodpr, REG_R, p), Want::Fault(GP))
            }),
            ("RCX not EPC → #PF(RCX)", |x| {
                let p = ram_page(&mut x.m);
                (emod(&mut x.m, Encls::Emodpr, REG_R, p), Want::NonEpc(p))
            }),
            ("SECINFO reserved FLAGS bit 6 → #GP", |x| {
                let p = x.epc(layout::DATA);
                (emod(&mut x.m, Encls::Emodpr, REG_R | 0x40, p), Want::Fault(GP))
            }),
            ("SECINFO reserved FLAGS bit 16 → #GP", |x| {
                let p = x.epc(layout::DATA);
                (emod(&mut x.m, Encls::Emodpr, REG_R | 1 << 16, p), Want::Fault(GP))
            }),
            ("SECINFO reserved byte 8 → #GP", |x| {
                let mut s = Secinfo::from_raw_flags(REG_R);
                s.reserved[0] = 1;
                let si = x.m.put(&s);
                (x.encls(Encls::Emodpr, si, x.epc(layout::DATA)), Want::Fault(GP))
            }),
            ("W without R → #GP", |x| {
                let p = x.epc(layout::DATA);
                (emod(&mut x.m, Encls::Emodpr, REG_RW & !1, p), Want::Fault(GP))
            }),
            ("order: epc(RCX) before SECINFO checks", |x| {
                let p = ram_page(&mut x.m);
                (emod(&mut x.m, Encls::Emodpr, REG_RW & !1, p), Want::NonEpc(p))
            }),
            ("VALID = 0 → #PF-EPCM(RCX)", |x| {
                let p = x.m.epc_page();
                (emod(&mut x.m, Encls::Emodpr, REG_R, p), epcm(p))
            }),
            ("order: W without R before VALID = 0", |x| {
                let p = x.m.epc_page();
                (emod(&mut x.m, Encls::Emodpr, REG_RW & !1, p), Want::Fault(GP))
            }),
            ("PENDING → ZF, 20 SGX_PAGE_NOT_MODIFIABLE", |x| {
                let e = x.e.clone();
                let p = eaug(&mut x.m, &e, AUG);
                (emod(&mut x.m, Encls::Emodpr, REG_R, p), Want::Err(SgxError::PageNotModifiable))
            }),
            ("MODIFIED (TRIM, not accepted) → 20, before the PT check", |x| {
                let p = x.epc(layout::DATA);
                check("EMODT", emod(&mut x.m, Encls::Emodt, TRIM, p), Want::Ok);
                (emod(&mut x.m, Encls::Emodpr, REG_R, p), Want::Err(SgxError::PageNotModifiable))
            }),
            ("MODIFIED (REG → TCS, not accepted) → 20", |x| {
                let p = x.epc(layout::DATA);
                check("EMODT", emod(&mut x.m, Encls::Emodt, TCS, p), Want::Ok);
                (emod(&mut x.m, Encls::Emodpr, REG_R, p), Want::Err(SgxError::PageNotModifiable))
            }),
            ("accepted TRIM → #PF-EPCM (PT ≠ REG)", |x| {
                let p = x.epc(layout::DATA);
                check("EMODT", emod(&mut x.m, Encls::Emodt, TRIM, p), Want::Ok);
                ok(&mut x.m, Encls::Etrack, 0, x.e.secs, 0);
                let la = x.la(layout::DATA);
                check("EACCEPT", x.eaccept(TRIM | MODIFIED, la), Want::Ok);
                (emod(&mut x.m, Encls::Emodpr, REG_R, p), epcm(p))
            }),
            ("PT_TCS → #PF-EPCM", |x| {
                let p = x.epc(layout::TCS);
                (emod(&mut x.m, Encls::Emodpr, REG_R, p), epcm(p))
            }),
            ("PT_SECS → #PF-EPCM", |x| {
                let p = x.e.secs;
                (emod(&mut x.m, Encls::Emodpr, REG_R, p), epcm(p))
            }),
            ("PT_VA → #PF-EPCM", |x| {
                let p = epa(&mut x.m);
                (emod(&mut x.m, Encls::Emodpr, REG_R, p), epcm(p))
            }),
            ("enclave not initialized → #GP", |x| {
                let (_, _, p) = uninitialized(&mut x.m, 3);
                (emod(&mut x.m, Encls::Emodpr, REG_R, p), Want::Fault(GP))
            }),
            ("REG → success", |x| {
                let p = x.epc(layout::DATA);
                (emod(&mut x.m, Encls::Emodpr, REG_R, p), Want::Ok)
            }),
            ("SECINFO PAGE_TYPE is not checked (not reserved) → success", |x| {
                let p = x.epc(layout::DATA);
                (emod(&mut x.m, Encls::Emodpr, TCS | 1, p), Want::Ok)
            }),
        ],
    );
}

/// §6.13 effects: PR ← 1; R &= s.R; W &= s.W; X &= s.X (permissions only shrink).
#[test]
fn emodpr_effects() {
    let cases = [
        (layout::DATA, REG_R, REG_R | PR),
        (layout::DATA, REG_RW, REG_RW | PR),
        (layout::DATA, REG_RWX, REG_RW | PR),
        (layout::DATA, secinfo_none(), secinfo_none() | PR),
        (layout::READ_ONLY, REG_RW, REG_R | PR),
        (layout::CODE, REG_RW, REG_R | PR),
        (layout::CODE, REG_RX, REG_RX | PR),
    ];
    for (offset, request, want) in cases {
        let mut x = ex();
        let p = x.epc(offset);
        check("EMODPR", emod(&mut x.m, Encls::Emodpr, request, p), Want::Ok);
        assert_eq!(x.flags(offset), want, "offset {offset:#x}, SECINFO {request:#x}");
    }
}

/// SECINFO.FLAGS of a PT_REG request with no permissions.
const fn secinfo_none() -> u64 {
    REG_R & !1
}

// ------------------------------------------------------------------------------------------------
// EMODT (SGX.md §6.14)
// ------------------------------------------------------------------------------------------------

/// §6.14 in order, with every legal and illegal transition.
#[test]
fn emodt_every_check() {
    run_table(
        ex,
        &[
            ("RBX not 64-aligned → #GP", |x| {
                let si =
                    x.m.put_bytes(&[[0u8; 16].as_slice(), Secinfo::from_raw_flags(TRIM).bytes()].concat(), 64) + 16;
                (x.encls(Encls::Emodt, si, x.epc(layout::DATA)), Want::Fault(GP))
            }),
            ("RCX not 4K aligned → #GP", |x| {
                let p = x.epc(layout::DATA) + 8;
                (emod(&mut x.m, Encls::Emodt, TRIM, p), Want::Fault(GP))
            }),
            ("RCX not EPC → #PF(RCX)", |x| {
                let p = ram_page(&mut x.m);
                (emod(&mut x.m, Encls::Emodt, TRIM, p), Want::NonEpc(p))
            }),
            ("SECINFO reserved → #GP", |x| {
                let p = x.epc(layout::DATA);
                (emod(&mut x.m, Encls::Emodt, TRIM | 0x80, p), Want::Fault(GP))
            }),
            ("new PT = REG → #GP", |x| {
                let p = x.epc(layout::DATA);
                (emod(&mut x.m, Encls::Emodt, REG_RW, p), Want::Fault(GP))
            }),
            ("new PT = SECS → #GP", |x| {
                let p = x.epc(layout::DATA);
                (emod(&mut x.m, Encls::Emodt, SECS, p), Want::Fault(GP))
            }),
            ("new PT = VA → #GP", |x| {
                let p = x.epc(layout::DATA);
                (emod(&mut x.m, Encls::Emodt, VA, p), Want::Fault(GP))
            }),
            ("new PT = 5 (shadow stack, not modelled) → #GP", |x| {
                let p = x.epc(layout::DATA);
                (emod(&mut x.m, Encls::Emodt, 0x500, p), Want::Fault(GP))
            }),
            ("VALID = 0 → #PF-EPCM(RCX)", |x| {
                let p = x.m.epc_page();
                (emod(&mut x.m, Encls::Emodt, TRIM, p), epcm(p))
            }),
            ("order: new PT illegal before VALID = 0", |x| {
                let p = x.m.epc_page();
                (emod(&mut x.m, Encls::Emodt, REG_RW, p), Want::Fault(GP))
            }),
            ("TCS → TCS → #PF-EPCM", |x| {
                let p = x.epc(layout::TCS);
                (emod(&mut x.m, Encls::Emodt, TCS, p), epcm(p))
            }),
            ("TRIM → TRIM → #PF-EPCM", |x| {
                let p = x.epc(layout::DATA);
                check("EMODT", emod(&mut x.m, Encls::Emodt, TRIM, p), Want::Ok);
                (emod(&mut x.m, Encls::Emodt, TRIM, p), epcm(p))
            }),
            ("TRIM → TCS → #PF-EPCM", |x| {
                let p = x.epc(layout::DATA);
                check("EMODT", emod(&mut x.m, Encls::Emodt, TRIM, p), Want::Ok);
                (emod(&mut x.m, Encls::Emodt, TCS, p), epcm(p))
            }),
            ("SECS → TRIM → #PF-EPCM", |x| {
                let p = x.e.secs;
                (emod(&mut x.m, Encls::Emodt, TRIM, p), epcm(p))
            }),
            ("VA → TRIM → #PF-EPCM", |x| {
                let p = epa(&mut x.m);
                (emod(&mut x.m, Encls::Emodt, TRIM, p), epcm(p))
            }),
            ("PENDING REG → TRIM → 20", |x| {
                let e = x.e.clone();
                let p = eaug(&mut x.m, &e, AUG);
                (emod(&mut x.m, Encls::Emodt, TRIM, p), Want::Err(SgxError::PageNotModifiable))
            }),
            ("MODIFIED TCS → TRIM → 20", |x| {
                let p = x.epc(layout::DATA);
                check("EMODT", emod(&mut x.m, Encls::Emodt, TCS, p), Want::Ok);
                (emod(&mut x.m, Encls::Emodt, TRIM, p), Want::Err(SgxError::PageNotModifiable))
            }),
            ("enclave not initialized → #GP", |x| {
                let (_, _, p) = uninitialized(&mut x.m, 3);
                (emod(&mut x.m, Encls::Emodt, TRIM, p), Want::Fault(GP))
            }),
            ("REG → TRIM → success", |x| {
                let p = x.epc(layout::DATA);
                (emod(&mut x.m, Encls::Emodt, TRIM, p), Want::Ok)
            }),
            ("REG → TCS → success", |x| {
                let p = x.epc(layout::DATA);
                (emod(&mut x.m, Encls::Emodt, TCS, p), Want::Ok)
            }),
            ("TCS → TRIM → success", |x| {
                let p = x.epc(layout::TCS);
                (emod(&mut x.m, Encls::Emodt, TRIM, p), Want::Ok)
            }),
            ("REG with PR (not in the 20 list) → TRIM → success", |x| {
                let p = x.epc(layout::DATA);
                check("EMODPR", emod(&mut x.m, Encls::Emodpr, REG_R, p), Want::Ok);
                (emod(&mut x.m, Encls::Emodt, TRIM, p), Want::Ok)
            }),
        ],
    );
}

/// §6.14 effects: PR ← 0, MODIFIED ← 1, RWX ← 0 (whatever SECINFO says), PT ← new.
#[test]
fn emodt_effects() {
    let cases = [
        (layout::DATA, TRIM, TRIM | MODIFIED),
        (layout::DATA, TRIM | 7, TRIM | MODIFIED),
        (layout::CODE, TCS | 5, TCS | MODIFIED),
        (layout::TCS, TRIM, TRIM | MODIFIED),
    ];
    for (offset, request, want) in cases {
        let mut x = ex();
        let p = x.epc(offset);
        check("EMODT", emod(&mut x.m, Encls::Emodt, request, p), Want::Ok);
        assert_eq!(x.flags(offset), want, "offset {offset:#x}, SECINFO {request:#x}");
    }
    let mut x = ex();
    let p = x.epc(layout::DATA);
    check("EMODPR", emod(&mut x.m, Encls::Emodpr, REG_R, p), Want::Ok);
    check("EMODT", emod(&mut x.m, Encls::Emodt, TRIM, p), Want::Ok);
    assert_eq!(x.flags(layout::DATA), TRIM | MODIFIED, "PR ← 0");
}

// ------------------------------------------------------------------------------------------------
// EACCEPT (SGX.md §6.15, tracking §7)
// ------------------------------------------------------------------------------------------------

/// A valid TCS for the test enclave (§1.4), with `edit` applied.
fn tcs_bytes(edit: impl FnOnce(&mut Tcs)) -> Vec<u8> {
    let mut t = Tcs::zeroed();
    t.ossa = layout::SSA;
    t.nssa = 1;
    t.oentry = layout::CODE;
    t.fslimit = 0xFFF;
    t.gslimit = 0xFFF;
    edit(&mut t);
    t.bytes().to_vec()
}

/// AUG page accepted, filled with `content`, converted to TCS (EMODT) and, if `track`, tracked
/// (ETRACK); returns its linear address.
fn tcs_candidate_tracked(x: &mut Ex, content: &[u8], track: bool) -> u64 {
    let la = x.aug(AUG);
    check("EACCEPT aug", x.eaccept(REG_RW | PENDING, la), Want::Ok);
    x.write(AUG, content);
    let p = x.epc_of(AUG);
    check("EMODT TCS", emod(&mut x.m, Encls::Emodt, TCS, p), Want::Ok);
    if track {
        ok(&mut x.m, Encls::Etrack, 0, x.e.secs, 0);
    }
    la
}

fn tcs_candidate(x: &mut Ex, content: &[u8]) -> u64 {
    tcs_candidate_tracked(x, content, true)
}

impl Ex {
    fn epc_of(&mut self, offset: u64) -> u64 {
        self.m.physical(self.la(offset))
    }
}

/// §6.15 steps 1–8 in order.
#[test]
fn eaccept_every_step() {
    run_table(
        ex,
        &[
            // Step 1: the SECINFO operand.
            ("RBX not 64-aligned → #GP", |x| {
                let (si, rcx) = (x.la(SI) + 32, x.aug(AUG));
                (x.enclu(Enclu::Eaccept, si, rcx, 0), Want::Fault(GP))
            }),
            ("RBX outside ELRANGE → #GP", |x| {
                let si = Secinfo::from_raw_flags(REG_RW | PENDING);
                let rbx = x.m.put(&si);
                let rcx = x.aug(AUG);
                (x.enclu(Enclu::Eaccept, rbx, rcx, 0), Want::Fault(GP))
            }),
            ("RBX in ELRANGE, not EPC → #PF(RBX)", |x| {
                let (rbx, rcx) = (x.nonepc(), x.aug(AUG));
                (x.enclu(Enclu::Eaccept, rbx, rcx, 0), Want::NonEpc(rbx))
            }),
            ("RBX in ELRANGE, unmapped → ordinary #PF", |x| {
                let (rbx, rcx) = (x.la(HOLE), x.aug(AUG));
                (x.enclu(Enclu::Eaccept, rbx, rcx, 0), Want::Paging(rbx))
            }),
            ("SECINFO page PENDING → #PF-EPCM(RBX)", |x| {
                let (rbx, rcx) = (x.aug(AUG2), x.aug(AUG));
                (x.enclu(Enclu::Eaccept, rbx, rcx, 0), epcm_u(rbx))
            }),
            ("SECINFO page BLOCKED → #PF-EPCM(RBX)", |x| {
                let si = x.secinfo(REG_RW | PENDING);
                ok(&mut x.m, Encls::Eblock, 0, x.e.epc(SI), 0);
                let rcx = x.aug(AUG);
                (x.enclu(Enclu::Eaccept, si, rcx, 0), epcm_u(si))
            }),
            ("SECINFO page MODIFIED (TRIM) → #PF-EPCM(RBX)", |x| {
                let si = x.secinfo(REG_RW | PENDING);
                check("EMODT", emod(&mut x.m, Encls::Emodt, TRIM, x.e.epc(SI)), Want::Ok);
                let rcx = x.aug(AUG);
                (x.enclu(Enclu::Eaccept, si, rcx, 0), epcm_u(si))
            }),
            ("SECINFO page not readable → #PF-EPCM(RBX)", |x| {
                let si = x.secinfo(REG_RW | PENDING);
                check("EMODPR", emod(&mut x.m, Encls::Emodpr, secinfo_none(), x.e.epc(SI)), Want::Ok);
                let rcx = x.aug(AUG);
                (x.enclu(Enclu::Eaccept, si, rcx, 0), epcm_u(si))
            }),
            ("SECINFO page is the TCS → #PF-EPCM(RBX)", |x| {
                let (rbx, rcx) = (x.la(layout::TCS), x.aug(AUG));
                (x.enclu(Enclu::Eaccept, rbx, rcx, 0), epcm_u(rbx))
            }),
            ("SECINFO page of another enclave → #PF-EPCM(RBX)", |x| {
                let (rbx, rcx) = (x.foreign(None), x.aug(AUG));
                (x.enclu(Enclu::Eaccept, rbx, rcx, 0), epcm_u(rbx))
            }),
            ("SECINFO page mapped at another address (ENCLAVEADDRESS ≠ RBX) → #PF-EPCM(RBX)", |x| {
                x.secinfo(REG_RW | PENDING);
                let rbx = x.map(ALIAS, x.e.epc(SI));
                let rcx = x.aug(AUG);
                (x.enclu(Enclu::Eaccept, rbx, rcx, 0), epcm_u(rbx))
            }),
            ("SECINFO in a read-only page → fine (R suffices)", |x| {
                let la = x.aug(AUG);
                // READ_ONLY holds 0x11 bytes: reserved ≠ 0, so the next check (#GP) is reached.
                (x.enclu(Enclu::Eaccept, x.la(layout::READ_ONLY), la, 0), Want::Fault(GP))
            }),
            ("SECINFO reserved FLAGS bit → #GP", |x| {
                let la = x.aug(AUG);
                (x.eaccept(REG_RW | PENDING | 1 << 20, la), Want::Fault(GP))
            }),
            ("SECINFO reserved byte → #GP", |x| {
                let la = x.aug(AUG);
                let mut s = Secinfo::from_raw_flags(REG_RW | PENDING);
                s.reserved[55] = 1;
                x.write(SI, s.bytes());
                (x.enclu(Enclu::Eaccept, x.la(SI), la, 0), Want::Fault(GP))
            }),
            // Step 2: the target operand.
            ("RCX not 4K aligned → #GP", |x| {
                let la = x.aug(AUG) + 64;
                (x.eaccept(REG_RW | PENDING, la), Want::Fault(GP))
            }),
            ("RCX outside ELRANGE → #GP", |x| {
                let la = x.e.base + x.e.size;
                (x.eaccept(REG_RW | PENDING, la), Want::Fault(GP))
            }),
            ("RCX in ELRANGE, not EPC → #PF(RCX)", |x| {
                let la = x.nonepc();
                (x.eaccept(REG_RW | PENDING, la), Want::NonEpc(la))
            }),
            ("order: SECINFO reserved (step 1) before RCX outside ELRANGE (step 2)", |x| {
                let la = x.e.base - 0x1000;
                let si = x.secinfo(REG_RW | PENDING | 0x40);
                (x.enclu(Enclu::Eaccept, si, la, 0), Want::Fault(GP))
            }),
            ("order: SECINFO page PENDING (step 1) before RCX not EPC (step 2)", |x| {
                let (rbx, rcx) = (x.aug(AUG2), x.nonepc());
                (x.enclu(Enclu::Eaccept, rbx, rcx, 0), epcm_u(rbx))
            }),
            // Step 3: legal requests.
            ("REG without PR or PENDING → #GP", |x| {
                let la = x.aug(AUG);
                (x.eaccept(REG_RW, la), Want::Fault(GP))
            }),
            ("REG with PENDING and MODIFIED → #GP", |x| {
                let la = x.aug(AUG);
                (x.eaccept(REG_RW | PENDING | MODIFIED, la), Want::Fault(GP))
            }),
            ("TRIM without MODIFIED → #GP", |x| {
                let la = x.la(layout::DATA);
                (x.eaccept(TRIM, la), Want::Fault(GP))
            }),
            ("TRIM with MODIFIED and PENDING → #GP", |x| {
                let la = x.la(layout::DATA);
                (x.eaccept(TRIM | MODIFIED | PENDING, la), Want::Fault(GP))
            }),
            ("TCS with MODIFIED and PR → #GP", |x| {
                let la = x.la(layout::DATA);
                (x.eaccept(TCS | MODIFIED | PR, la), Want::Fault(GP))
            }),
            ("PT_SECS → #GP", |x| {
                let la = x.la(layout::DATA);
                (x.eaccept(SECS | MODIFIED, la), Want::Fault(GP))
            }),
            ("PT_VA → #GP", |x| {
                let la = x.la(layout::DATA);
                (x.eaccept(VA | MODIFIED, la), Want::Fault(GP))
            }),
            ("order: illegal request (step 3) before target invalid (step 4)", |x| {
                let p = x.m.epc_page();
                let la = x.map(FREE, p);
                (x.eaccept(REG_RW, la), Want::Fault(GP))
            }),
            // Step 4: the target page.
            ("target not VALID → #PF-EPCM(RCX)", |x| {
                let p = x.m.epc_page();
                let la = x.map(FREE, p);
                (x.eaccept(REG_RW | PENDING, la), epcm_u(la))
            }),
            ("target BLOCKED → #PF-EPCM(RCX)", |x| {
                let la = x.aug(AUG);
                let p = x.m.physical(la);
                ok(&mut x.m, Encls::Eblock, 0, p, 0);
                (x.eaccept(REG_RW | PENDING, la), epcm_u(la))
            }),
            ("target PT_VA → #PF-EPCM(RCX)", |x| {
                let p = epa(&mut x.m);
                let la = x.map(VAPG, p);
                (x.eaccept(REG_RW | PENDING, la), epcm_u(la))
            }),
            ("target PT_SECS → #PF-EPCM(RCX)", |x| {
                let la = x.map(SECSPG, x.e.secs);
                (x.eaccept(REG_RW | PENDING, la), epcm_u(la))
            }),
            ("target of another enclave → #PF-EPCM(RCX)", |x| {
                let la = x.foreign(None);
                (x.eaccept(REG_RW | PENDING, la), epcm_u(la))
            }),
            // Step 5: mismatches.
            ("ENCLAVEADDRESS ≠ RCX → ZF, 19", |x| {
                let p = eaug(&mut x.m, &x.e.clone(), AUG);
                let la = x.map(ALIAS, p);
                (x.eaccept(REG_RW | PENDING, la), Want::Err(SgxError::PageAttributesMismatch))
            }),
            ("PENDING requested, page not PENDING → 19", |x| {
                let la = x.la(layout::DATA);
                (x.eaccept(REG_RW | PENDING, la), Want::Err(SgxError::PageAttributesMismatch))
            }),
            ("RWX differ (R only requested for an RW page) → 19", |x| {
                let la = x.aug(AUG);
                (x.eaccept(REG_R | PENDING, la), Want::Err(SgxError::PageAttributesMismatch))
            }),
            ("X requested for an RW page → 19", |x| {
                let la = x.aug(AUG);
                (x.eaccept(REG_RWX | PENDING, la), Want::Err(SgxError::PageAttributesMismatch))
            }),
            ("PT differs (TRIM requested for a REG page) → 19", |x| {
                let la = x.la(layout::DATA);
                (x.eaccept(TRIM | MODIFIED, la), Want::Err(SgxError::PageAttributesMismatch))
            }),
            ("PT differs (TCS requested for a TRIM page) → 19", |x| {
                let la = x.la(layout::DATA);
                check("EMODT", emod(&mut x.m, Encls::Emodt, TRIM, x.e.epc(layout::DATA)), Want::Ok);
                ok(&mut x.m, Encls::Etrack, 0, x.e.secs, 0);
                (x.eaccept(TCS | MODIFIED, la), Want::Err(SgxError::PageAttributesMismatch))
            }),
            ("order: mismatch (step 5) before not tracked (step 6)", |x| {
                let la = x.la(layout::DATA);
                check("EMODPR", emod(&mut x.m, Encls::Emodpr, REG_R, x.e.epc(layout::DATA)), Want::Ok);
                (x.eaccept(REG_RW | PR, la), Want::Err(SgxError::PageAttributesMismatch))
            }),
            // Step 6: tracking.
            ("after EMODPR, no ETRACK → ZF, 11", |x| {
                let la = x.la(layout::DATA);
                check("EMODPR", emod(&mut x.m, Encls::Emodpr, REG_R, x.e.epc(layout::DATA)), Want::Ok);
                (x.eaccept(REG_R | PR, la), Want::Err(SgxError::NotTracked))
            }),
            ("after EMODT TRIM, no ETRACK → 11", |x| {
                let la = x.la(layout::DATA);
                check("EMODT", emod(&mut x.m, Encls::Emodt, TRIM, x.e.epc(layout::DATA)), Want::Ok);
                (x.eaccept(TRIM | MODIFIED, la), Want::Err(SgxError::NotTracked))
            }),
            ("after EMODPR + ETRACK, an LP from before the ETRACK still inside → 11", |x| {
                let la = x.la(layout::DATA);
                lps_enter(&x.m, x.e.secs, 1);
                check("EMODPR", emod(&mut x.m, Encls::Emodpr, REG_R, x.e.epc(layout::DATA)), Want::Ok);
                ok(&mut x.m, Encls::Etrack, 0, x.e.secs, 0);
                (x.eaccept(REG_R | PR, la), Want::Err(SgxError::NotTracked))
            }),
            ("after EMODPR + ETRACK → success", |x| {
                let la = x.la(layout::DATA);
                check("EMODPR", emod(&mut x.m, Encls::Emodpr, REG_R, x.e.epc(layout::DATA)), Want::Ok);
                ok(&mut x.m, Encls::Etrack, 0, x.e.secs, 0);
                (x.eaccept(REG_R | PR, la), Want::Ok)
            }),
            ("after EMODT TRIM + ETRACK → success", |x| {
                let la = x.la(layout::DATA);
                check("EMODT", emod(&mut x.m, Encls::Emodt, TRIM, x.e.epc(layout::DATA)), Want::Ok);
                ok(&mut x.m, Encls::Etrack, 0, x.e.secs, 0);
                (x.eaccept(TRIM | MODIFIED, la), Want::Ok)
            }),
            ("after EAUG, no ETRACK needed → success", |x| {
                let la = x.aug(AUG);
                (x.eaccept(REG_RW | PENDING, la), Want::Ok)
            }),
            ("accepting twice → 19 (no longer PENDING)", |x| {
                let la = x.aug(AUG);
                check("first EACCEPT", x.eaccept(REG_RW | PENDING, la), Want::Ok);
                (x.eaccept(REG_RW | PENDING, la), Want::Err(SgxError::PageAttributesMismatch))
            }),
            // Step 7: a new TCS.
            ("TCS with valid content → success", |x| {
                let la = tcs_candidate(x, &tcs_bytes(|_| {}));
                (x.eaccept(TCS | MODIFIED, la), Want::Ok)
            }),
            ("TCS reserved byte ≠ 0 → #GP", |x| {
                let la = tcs_candidate(x, &tcs_bytes(|t| t.reserved[100] = 1));
                (x.eaccept(TCS | MODIFIED, la), Want::Fault(GP))
            }),
            ("TCS DBGOPTIN → #GP", |x| {
                let la = tcs_candidate(x, &tcs_bytes(|t| t.flags = 1));
                (x.eaccept(TCS | MODIFIED, la), Want::Fault(GP))
            }),
            ("TCS CSSA ≥ NSSA → #GP", |x| {
                let la = tcs_candidate(x, &tcs_bytes(|t| t.nssa = 0));
                (x.eaccept(TCS | MODIFIED, la), Want::Fault(GP))
            }),
            ("TCS AEP ≠ 0 → #GP", |x| {
                let la = tcs_candidate(x, &tcs_bytes(|t| t.aep = 0x1234));
                (x.eaccept(TCS | MODIFIED, la), Want::Fault(GP))
            }),
            ("TCS STATE ≠ 0 → #GP", |x| {
                let la = tcs_candidate(x, &tcs_bytes(|t| t.state = 1));
                (x.eaccept(TCS | MODIFIED, la), Want::Fault(GP))
            }),
            ("order: not tracked (step 6) before TCS content (step 7)", |x| {
                let la = tcs_candidate_tracked(x, &tcs_bytes(|t| t.nssa = 0), false);
                (x.eaccept(TCS | MODIFIED, la), Want::Err(SgxError::NotTracked))
            }),
        ],
    );
}

/// §6.15 step 8 and §6.13/§6.5: the end states of the three SGX2 flows. The Linux probe of §6.13:
/// EMODPR on a trimmed page is 20 before EACCEPT and #PF after; the accepted TRIM page is freed by
/// EREMOVE.
#[test]
fn eaccept_flows() {
    // EAUG → EACCEPT: an ordinary RW page, usable in enclave mode.
    let mut x = ex();
    let la = x.aug(AUG);
    check("EACCEPT", x.eaccept(REG_RW | PENDING, la), Want::Ok);
    assert_eq!(x.flags(AUG), REG_RW);
    check("EREPORT into it", x.enclu(Enclu::Ereport, x.la(TI), x.la(RD), la), Want::Done);

    // EMODPR → ETRACK → EACCEPT: restricted, PR cleared.
    let mut x = ex();
    let la = x.la(layout::DATA);
    check("EMODPR", emod(&mut x.m, Encls::Emodpr, REG_R, x.e.epc(layout::DATA)), Want::Ok);
    ok(&mut x.m, Encls::Etrack, 0, x.e.secs, 0);
    check("EACCEPT", x.eaccept(REG_R | PR, la), Want::Ok);
    assert_eq!(x.flags(layout::DATA), REG_R);
    check("now read-only", x.enclu(Enclu::Ereport, x.la(TI), x.la(RD), la), epcm_u(la));

    // EMODT TRIM → ETRACK → EACCEPT → EREMOVE.
    let mut x = ex();
    let (la, p) = (x.la(layout::DATA), x.epc(layout::DATA));
    check("EMODT", emod(&mut x.m, Encls::Emodt, TRIM, p), Want::Ok);
    check("EMODPR before EACCEPT", emod(&mut x.m, Encls::Emodpr, REG_R, p), Want::Err(SgxError::PageNotModifiable));
    ok(&mut x.m, Encls::Etrack, 0, x.e.secs, 0);
    check("EACCEPT", x.eaccept(TRIM | MODIFIED, la), Want::Ok);
    assert_eq!(x.flags(layout::DATA), TRIM);
    check("EMODPR after EACCEPT", emod(&mut x.m, Encls::Emodpr, REG_R, p), epcm(p));
    check("EREMOVE", x.m.encls(Encls::Eremove, 0, p, 0), Want::Ok);
    check("freed", erdinfo(&mut x.m, p).0, Want::Info(SgxError::PgInvld));

    // EMODT TCS → ETRACK → EACCEPT: a TCS, no longer modified.
    let mut x = ex();
    let la = tcs_candidate(&mut x, &tcs_bytes(|_| {}));
    check("EACCEPT", x.eaccept(TCS | MODIFIED, la), Want::Ok);
    assert_eq!(x.flags(AUG), TCS);
}

// ------------------------------------------------------------------------------------------------
// EMODPE (SGX.md §6.17)
// ------------------------------------------------------------------------------------------------

impl Ex {
    fn emodpe(&mut self, flags: u64, rcx: u64) -> Outcome {
        let si = self.secinfo(flags);
        self.enclu(Enclu::Emodpe, si, rcx, 0)
    }
}

/// §6.17 in order.
#[test]
fn emodpe_every_check() {
    run_table(
        ex,
        &[
            ("RBX not 64-aligned → #GP", |x| {
                let rcx = x.la(layout::READ_ONLY);
                (x.enclu(Enclu::Emodpe, x.la(SI) + 8, rcx, 0), Want::Fault(GP))
            }),
            ("RCX not 4K aligned → #GP", |x| {
                let rcx = x.la(layout::READ_ONLY) + 8;
                (x.emodpe(REG_RW, rcx), Want::Fault(GP))
            }),
            ("RBX outside ELRANGE → #GP", |x| {
                let rbx = x.m.put(&Secinfo::from_raw_flags(REG_RW));
                let rcx = x.la(layout::READ_ONLY);
                (x.enclu(Enclu::Emodpe, rbx, rcx, 0), Want::Fault(GP))
            }),
            ("RCX outside ELRANGE → #GP", |x| {
                let rcx = x.e.base + x.e.size;
                (x.emodpe(REG_RW, rcx), Want::Fault(GP))
            }),
            ("RBX not EPC → #PF(RBX)", |x| {
                let (rbx, rcx) = (x.nonepc(), x.la(layout::READ_ONLY));
                (x.enclu(Enclu::Emodpe, rbx, rcx, 0), Want::NonEpc(rbx))
            }),
            ("RCX not EPC → #PF(RCX)", |x| {
                let rcx = x.nonepc();
                (x.emodpe(REG_RW, rcx), Want::NonEpc(rcx))
            }),
            ("order: RCX outside ELRANGE before RBX not EPC", |x| {
                let (rbx, rcx) = (x.nonepc(), x.e.base + x.e.size);
                (x.enclu(Enclu::Emodpe, rbx, rcx, 0), Want::Fault(GP))
            }),
            ("order: RCX not EPC before the SECINFO page check", |x| {
                let (rbx, rcx) = (x.aug(AUG), x.nonepc());
                (x.enclu(Enclu::Emodpe, rbx, rcx, 0), Want::NonEpc(rcx))
            }),
            ("order: RCX not EPC before SECINFO reserved", |x| {
                let rcx = x.nonepc();
                (x.emodpe(REG_RW | 0x40, rcx), Want::NonEpc(rcx))
            }),
            ("SECINFO page PENDING → #PF-EPCM(RBX)", |x| {
                let (rbx, rcx) = (x.aug(AUG), x.la(layout::READ_ONLY));
                (x.enclu(Enclu::Emodpe, rbx, rcx, 0), epcm_u(rbx))
            }),
            ("SECINFO page of another enclave → #PF-EPCM(RBX)", |x| {
                let (rbx, rcx) = (x.foreign(None), x.la(layout::READ_ONLY));
                (x.enclu(Enclu::Emodpe, rbx, rcx, 0), epcm_u(rbx))
            }),
            ("SECINFO reserved → #GP", |x| {
                let rcx = x.la(layout::READ_ONLY);
                (x.emodpe(REG_RW | 1 << 40, rcx), Want::Fault(GP))
            }),
            ("target PENDING → #PF-EPCM(RCX)", |x| {
                let rcx = x.aug(AUG);
                (x.emodpe(REG_RWX, rcx), epcm_u(rcx))
            }),
            ("target MODIFIED (TRIM) → #PF-EPCM(RCX)", |x| {
                let rcx = x.la(layout::DATA);
                check("EMODT", emod(&mut x.m, Encls::Emodt, TRIM, x.e.epc(layout::DATA)), Want::Ok);
                (x.emodpe(REG_RWX, rcx), epcm_u(rcx))
            }),
            ("target BLOCKED → #PF-EPCM(RCX)", |x| {
                let rcx = x.la(layout::READ_ONLY);
                ok(&mut x.m, Encls::Eblock, 0, x.e.epc(layout::READ_ONLY), 0);
                (x.emodpe(REG_RW, rcx), epcm_u(rcx))
            }),
            ("target PT_TCS → #PF-EPCM(RCX)", |x| {
                let rcx = x.la(layout::TCS);
                (x.emodpe(REG_RW, rcx), epcm_u(rcx))
            }),
            ("target not VALID → #PF-EPCM(RCX)", |x| {
                let p = x.m.epc_page();
                let rcx = x.map(FREE, p);
                (x.emodpe(REG_RW, rcx), epcm_u(rcx))
            }),
            ("target of another enclave → #PF-EPCM(RCX)", |x| {
                let rcx = x.foreign(None);
                (x.emodpe(REG_RW, rcx), epcm_u(rcx))
            }),
            ("target at another address (ENCLAVEADDRESS ≠ RCX) → #PF-EPCM(RCX)", |x| {
                let rcx = x.map(ALIAS, x.e.epc(layout::READ_ONLY));
                (x.emodpe(REG_RW, rcx), epcm_u(rcx))
            }),
            ("result W without R → #GP", |x| {
                let rcx = x.la(layout::DATA);
                check("EMODPR to none", emod(&mut x.m, Encls::Emodpr, secinfo_none(), x.e.epc(layout::DATA)), Want::Ok);
                (x.emodpe(REG_RW & !1, rcx), Want::Fault(GP))
            }),
            ("R → RW, no tracking needed → success", |x| {
                let rcx = x.la(layout::READ_ONLY);
                (x.emodpe(REG_RW, rcx), Want::Done)
            }),
            ("on a PR page (PR is not checked) → success", |x| {
                let rcx = x.la(layout::DATA);
                check("EMODPR", emod(&mut x.m, Encls::Emodpr, REG_R, x.e.epc(layout::DATA)), Want::Ok);
                (x.emodpe(REG_RW, rcx), Want::Done)
            }),
        ],
    );
}

/// §6.17 effects: R |= s.R, W |= s.W, X |= s.X (only extends), effective immediately.
#[test]
fn emodpe_effects() {
    let cases = [
        (layout::READ_ONLY, REG_RW, REG_RW),
        (layout::READ_ONLY, REG_RWX, REG_RWX),
        (layout::READ_ONLY, secinfo_none() | 4, REG_RX),
        (layout::DATA, REG_R, REG_RW),
        (layout::DATA, secinfo_none(), REG_RW),
        (layout::CODE, REG_RW, REG_RWX),
    ];
    for (offset, request, want) in cases {
        let mut x = ex();
        let rcx = x.la(offset);
        check("EMODPE", x.emodpe(request, rcx), Want::Done);
        assert_eq!(x.flags(offset), want, "offset {offset:#x}, SECINFO {request:#x}");
    }
    // W now allowed: EREPORT can write its output into the formerly read-only page.
    let mut x = ex();
    let rcx = x.la(layout::READ_ONLY);
    check("EREPORT before", x.enclu(Enclu::Ereport, x.la(TI), x.la(RD), rcx), epcm_u(rcx));
    check("EMODPE", x.emodpe(REG_RW, rcx), Want::Done);
    x.write(TI, &[0u8; 512]);
    check("EREPORT after", x.enclu(Enclu::Ereport, x.la(TI), x.la(RD), rcx), Want::Done);
}

// ------------------------------------------------------------------------------------------------
// EACCEPTCOPY (SGX.md §6.16)
// ------------------------------------------------------------------------------------------------

impl Ex {
    fn eacceptcopy(&mut self, flags: u64, rcx: u64, rdx: u64) -> Outcome {
        let si = self.secinfo(flags);
        self.enclu(Enclu::Eacceptcopy, si, rcx, rdx)
    }
}

/// §6.16 in order.
#[test]
fn eacceptcopy_every_check() {
    run_table(
        ex,
        &[
            ("RBX not 64-aligned → #GP", |x| {
                let (rcx, rdx) = (x.aug(AUG), x.la(layout::DATA));
                (x.enclu(Enclu::Eacceptcopy, x.la(SI) + 16, rcx, rdx), Want::Fault(GP))
            }),
            ("RCX not 4K aligned → #GP", |x| {
                let (rcx, rdx) = (x.aug(AUG) + 16, x.la(layout::DATA));
                (x.eacceptcopy(REG_RW, rcx, rdx), Want::Fault(GP))
            }),
            ("RDX not 4K aligned → #GP", |x| {
                let (rcx, rdx) = (x.aug(AUG), x.la(layout::DATA) + 16);
                (x.eacceptcopy(REG_RW, rcx, rdx), Want::Fault(GP))
            }),
            ("RBX outside ELRANGE → #GP", |x| {
                let rbx = x.m.put(&Secinfo::from_raw_flags(REG_RW));
                let (rcx, rdx) = (x.aug(AUG), x.la(layout::DATA));
                (x.enclu(Enclu::Eacceptcopy, rbx, rcx, rdx), Want::Fault(GP))
            }),
            ("RCX outside ELRANGE → #GP", |x| {
                let (rcx, rdx) = (x.e.base - 0x1000, x.la(layout::DATA));
                (x.eacceptcopy(REG_RW, rcx, rdx), Want::Fault(GP))
            }),
            ("RDX outside ELRANGE → #GP", |x| {
                let (rcx, rdx) = (x.aug(AUG), x.e.base + x.e.size);
                (x.eacceptcopy(REG_RW, rcx, rdx), Want::Fault(GP))
            }),
            ("RBX not EPC → #PF(RBX)", |x| {
                let (rbx, rcx, rdx) = (x.nonepc(), x.aug(AUG), x.la(layout::DATA));
                (x.enclu(Enclu::Eacceptcopy, rbx, rcx, rdx), Want::NonEpc(rbx))
            }),
            ("RCX not EPC → #PF(RCX)", |x| {
                let (rcx, rdx) = (x.nonepc(), x.la(layout::DATA));
                (x.eacceptcopy(REG_RW, rcx, rdx), Want::NonEpc(rcx))
            }),
            ("RDX not EPC → #PF(RDX)", |x| {
                let (rcx, rdx) = (x.aug(AUG), x.nonepc());
                (x.eacceptcopy(REG_RW, rcx, rdx), Want::NonEpc(rdx))
            }),
            ("order: RCX not EPC before the SECINFO page check", |x| {
                let (rbx, rcx, rdx) = (x.aug(AUG2), x.nonepc(), x.la(layout::DATA));
                (x.enclu(Enclu::Eacceptcopy, rbx, rcx, rdx), Want::NonEpc(rcx))
            }),
            ("order: RCX not EPC before SECINFO PT ≠ REG", |x| {
                let (rcx, rdx) = (x.nonepc(), x.la(layout::DATA));
                (x.eacceptcopy(TCS, rcx, rdx), Want::NonEpc(rcx))
            }),
            ("order: RDX not EPC before SECINFO reserved", |x| {
                let (rcx, rdx) = (x.aug(AUG), x.nonepc());
                (x.eacceptcopy(REG_RW | 0x80, rcx, rdx), Want::NonEpc(rdx))
            }),
            ("SECINFO page PENDING → #PF-EPCM(RBX)", |x| {
                let (rbx, rcx, rdx) = (x.aug(AUG2), x.aug(AUG), x.la(layout::DATA));
                (x.enclu(Enclu::Eacceptcopy, rbx, rcx, rdx), epcm_u(rbx))
            }),
            ("SECINFO reserved → #GP", |x| {
                let (rcx, rdx) = (x.aug(AUG), x.la(layout::DATA));
                (x.eacceptcopy(REG_RW | 0x80, rcx, rdx), Want::Fault(GP))
            }),
            ("SECINFO W without R → #GP", |x| {
                let (rcx, rdx) = (x.aug(AUG), x.la(layout::DATA));
                (x.eacceptcopy(REG_RW & !1, rcx, rdx), Want::Fault(GP))
            }),
            ("SECINFO PT ≠ REG → #GP", |x| {
                let (rcx, rdx) = (x.aug(AUG), x.la(layout::DATA));
                (x.eacceptcopy(TCS, rcx, rdx), Want::Fault(GP))
            }),
            ("source PENDING → #PF-EPCM(RDX)", |x| {
                let (rcx, rdx) = (x.aug(AUG), x.aug(AUG2));
                (x.eacceptcopy(REG_RW, rcx, rdx), epcm_u(rdx))
            }),
            ("source BLOCKED → #PF-EPCM(RDX)", |x| {
                let (rcx, rdx) = (x.aug(AUG), x.la(layout::DATA));
                ok(&mut x.m, Encls::Eblock, 0, x.e.epc(layout::DATA), 0);
                (x.eacceptcopy(REG_RW, rcx, rdx), epcm_u(rdx))
            }),
            ("source not readable → #PF-EPCM(RDX)", |x| {
                let (rcx, rdx) = (x.aug(AUG), x.la(layout::DATA));
                check("EMODPR", emod(&mut x.m, Encls::Emodpr, secinfo_none(), x.e.epc(layout::DATA)), Want::Ok);
                (x.eacceptcopy(REG_RW, rcx, rdx), epcm_u(rdx))
            }),
            ("source PT_TCS → #PF-EPCM(RDX)", |x| {
                let (rcx, rdx) = (x.aug(AUG), x.la(layout::TCS));
                (x.eacceptcopy(REG_RW, rcx, rdx), epcm_u(rdx))
            }),
            ("source of another enclave → #PF-EPCM(RDX)", |x| {
                let (rcx, rdx) = (x.aug(AUG), x.foreign(None));
                (x.eacceptcopy(REG_RW, rcx, rdx), epcm_u(rdx))
            }),
            ("order: source (#PF-EPCM) before destination (19)", |x| {
                let (rcx, rdx) = (x.la(layout::CODE), x.la(layout::TCS));
                (x.eacceptcopy(REG_RW, rcx, rdx), epcm_u(rdx))
            }),
            ("destination not PENDING → ZF, 19", |x| {
                let (rcx, rdx) = (x.la(layout::OPERANDS), x.la(layout::DATA));
                (x.eacceptcopy(REG_RW, rcx, rdx), Want::Err(SgxError::PageAttributesMismatch))
            }),
            ("destination not VALID → 19", |x| {
                let p = x.m.epc_page();
                let (rcx, rdx) = (x.map(FREE, p), x.la(layout::DATA));
                (x.eacceptcopy(REG_RW, rcx, rdx), Want::Err(SgxError::PageAttributesMismatch))
            }),
            ("destination PT_TCS → 19", |x| {
                let (rcx, rdx) = (x.la(layout::TCS), x.la(layout::DATA));
                (x.eacceptcopy(REG_RW, rcx, rdx), Want::Err(SgxError::PageAttributesMismatch))
            }),
            ("destination of another enclave (PENDING there) → 19", |x| {
                let other = x.m.enclave(&EnclaveSpec { base_slot: 1, ..EnclaveSpec::default() });
                let p = eaug(&mut x.m, &other, AUG);
                let (rcx, rdx) = (x.map(FOREIGN, p), x.la(layout::DATA));
                (x.eacceptcopy(REG_RW, rcx, rdx), Want::Err(SgxError::PageAttributesMismatch))
            }),
            ("destination at another address (ENCLAVEADDRESS ≠ RCX) → 19", |x| {
                let p = eaug(&mut x.m, &x.e.clone(), AUG);
                let (rcx, rdx) = (x.map(ALIAS, p), x.la(layout::DATA));
                (x.eacceptcopy(REG_RW, rcx, rdx), Want::Err(SgxError::PageAttributesMismatch))
            }),
            ("PENDING destination → success", |x| {
                let (rcx, rdx) = (x.aug(AUG), x.la(layout::DATA));
                (x.eacceptcopy(REG_RX, rcx, rdx), Want::Ok)
            }),
        ],
    );
}

/// §6.16 effects: 4096 bytes copied, RWX ← SECINFO.RWX, PENDING ← 0; the source is untouched.
#[test]
fn eacceptcopy_effects() {
    let mut x = ex();
    let content: Vec<u8> = (0..4096u32).map(|i| (i * 13 + 1) as u8).collect();
    x.write(layout::DATA, &content);
    let (rcx, rdx) = (x.aug(AUG), x.la(layout::DATA));
    check("EACCEPTCOPY", x.eacceptcopy(REG_RX, rcx, rdx), Want::Ok);
    assert_eq!(x.flags(AUG), REG_RX);
    assert_eq!(x.m.debug_read(rcx, 4096), content);
    assert_eq!(x.m.debug_read(rdx, 4096), content);
    assert_eq!(x.flags(layout::DATA), REG_RW);
}

// ------------------------------------------------------------------------------------------------
// EREPORT (SGX.md §6.18, §1.11, §8.2)
// ------------------------------------------------------------------------------------------------

/// EREPORT in `x` for `target` with REPORTDATA `data`; returns the REPORT (must succeed).
fn report_with(x: &mut Ex, target: &Targetinfo, data: &[u8; 64]) -> Report {
    x.write(TI, target.bytes());
    x.write(RD, data);
    let r = x.enclu(Enclu::Ereport, x.la(TI), x.la(RD), x.la(REP));
    check("EREPORT", r, Want::Done);
    Report::from_bytes(&x.m.debug_read(x.la(REP), Report::SIZE)).expect("432 bytes")
}

fn report(x: &mut Ex, target: &Targetinfo) -> Report {
    report_with(x, target, &[0; 64])
}

/// The target's report key: EGETKEY(REPORT_KEY, KEYID = keyid) inside `x` (§8.2).
fn report_key(x: &mut Ex, keyid: [u8; 32]) -> [u8; 16] {
    let mut req = Keyrequest::zeroed();
    req.keyname = Keyname::Report as u16;
    req.keyid = keyid;
    let (r, key) = egetkey(x, &req);
    check("EGETKEY(REPORT)", r, Want::Ok);
    key
}

/// §6.18 + §8.2 local attestation: A reports to TARGETINFO(B); B's report key verifies the MAC
/// over REPORT[0:384) (§1.11, §13.21), a third enclave's does not; tampering REPORTDATA breaks it.
#[test]
fn ereport_local_attestation() {
    let mut m = Machine::new();
    let spec =
        |slot: u64| EnclaveSpec { base_slot: slot, data: vec![(0, vec![slot as u8 + 1; 8])], ..EnclaveSpec::default() };
    let a = m.enclave(&spec(0));
    let b = m.enclave(&spec(1));
    let c = m.enclave(&spec(2));
    // One machine, three enclaves: `x.e` selects the enclave the ENCLU runs in.
    let mut x = Ex { m, e: b.clone() };
    let rb = report(&mut x, &Targetinfo::zeroed());
    x.e = a.clone();
    let data: [u8; 64] = std::array::from_fn(|i| i as u8);
    let ra = report_with(&mut x, &Targetinfo::from_report(&rb), &data);
    assert_eq!(ra.reportdata, data);
    assert_eq!(ra.keyid, x.m.platform.keys().report_keyid, "KEYID ← CR_REPORT_KEYID");

    x.e = b;
    let kb = report_key(&mut x, ra.keyid);
    assert_eq!(aes_cmac(&kb, &ra.bytes()[Report::MACED]), ra.mac, "B verifies A's report");
    let mut tampered = ra.clone();
    tampered.reportdata[0] ^= 1;
    assert_ne!(aes_cmac(&kb, &tampered.bytes()[Report::MACED]), ra.mac, "REPORTDATA is MACed");
    let mut tampered = ra.clone();
    tampered.keyid[0] ^= 1;
    assert_eq!(aes_cmac(&kb, &tampered.bytes()[Report::MACED]), ra.mac, "KEYID is not MACed");
    x.e = c;
    let kc = report_key(&mut x, ra.keyid);
    assert_ne!(aes_cmac(&kc, &ra.bytes()[Report::MACED]), ra.mac, "C's key does not verify it");

    // The TARGETINFO must carry INIT = 1 to match the target (§13.21).
    x.e = a;
    let mut ti = Targetinfo::from_report(&rb);
    ti.attributes.flags &= !AttributesFlags::INIT.bits();
    let r2 = report(&mut x, &ti);
    assert_ne!(aes_cmac(&kb, &r2.bytes()[Report::MACED]), r2.mac, "INIT = 0 names another target");
}

/// §6.18 step 4: the REPORT body comes from the current SECS and the platform.
#[test]
fn ereport_body() {
    let mut x = ex();
    let r = report(&mut x, &Targetinfo::zeroed());
    let keys = x.m.platform.keys();
    assert_eq!(r.cpusvn, keys.cpusvn, "CPUSVN ← CR_CPUSVN");
    assert_eq!(r.mrenclave, x.e.sig.enclavehash, "MRENCLAVE (= SIGSTRUCT.ENCLAVEHASH after EINIT)");
    assert_eq!(r.mrsigner, x.e.mrsigner);
    assert_eq!((r.isvprodid, r.isvsvn), (1, 1));
    let flags = AttributesFlags::INIT | AttributesFlags::DEBUG | AttributesFlags::MODE64BIT;
    assert_eq!((r.attributes.flags, r.attributes.xfrm), (flags.bits(), 3));
    assert_eq!(r.miscselect, 0);
    assert_eq!(r.keyid, keys.report_keyid);
    assert_eq!((r.reserved0, r.reserved1, r.reserved2, r.reserved3), ([0; 12], [0; 32], [0; 32], [0; 42]));
    // REPORTDATA needs only R: a read-only page works.
    x.write(TI, Targetinfo::zeroed().bytes());
    let r = x.enclu(Enclu::Ereport, x.la(TI), x.la(layout::READ_ONLY), x.la(REP));
    check("REPORTDATA in a read-only page", r, Want::Done);
    let rep = Report::from_bytes(&x.m.debug_read(x.la(REP), Report::SIZE)).unwrap();
    assert_eq!(rep.reportdata, [0x11; 64]);
}

/// [`ex`] with an all-zero TARGETINFO at TI.
fn ex_ti() -> Ex {
    let mut x = ex();
    x.write(TI, Targetinfo::zeroed().bytes());
    x
}

/// §6.18 steps 1–3 in order (and the §1.1 operand alignments).
#[test]
fn ereport_every_check() {
    run_table(
        ex_ti,
        &[
            ("RBX not 512-aligned → #GP", |x| {
                (x.enclu(Enclu::Ereport, x.la(TI) + 64, x.la(RD), x.la(REP)), Want::Fault(GP))
            }),
            ("RCX not 128-aligned → #GP", |x| {
                (x.enclu(Enclu::Ereport, x.la(TI), x.la(RD) + 64, x.la(REP)), Want::Fault(GP))
            }),
            ("RDX not 512-aligned → #GP", |x| {
                (x.enclu(Enclu::Ereport, x.la(TI), x.la(RD), x.la(REP) + 128), Want::Fault(GP))
            }),
            ("RBX outside ELRANGE → #GP", |x| {
                let rbx = x.m.put(&Targetinfo::zeroed());
                (x.enclu(Enclu::Ereport, rbx, x.la(RD), x.la(REP)), Want::Fault(GP))
            }),
            ("RCX outside ELRANGE → #GP", |x| {
                let rcx = x.m.put_bytes(&[0; 64], 128);
                (x.enclu(Enclu::Ereport, x.la(TI), rcx, x.la(REP)), Want::Fault(GP))
            }),
            ("RDX outside ELRANGE → #GP", |x| {
                let rdx = x.e.base + x.e.size;
                (x.enclu(Enclu::Ereport, x.la(TI), x.la(RD), rdx), Want::Fault(GP))
            }),
            ("RBX not EPC → #PF(RBX)", |x| {
                let rbx = x.nonepc();
                (x.enclu(Enclu::Ereport, rbx, x.la(RD), x.la(REP)), Want::NonEpc(rbx))
            }),
            ("RDX not EPC → #PF(RDX)", |x| {
                let rdx = x.nonepc();
                (x.enclu(Enclu::Ereport, x.la(TI), x.la(RD), rdx), Want::NonEpc(rdx))
            }),
            ("order: RDX outside ELRANGE (step 1) before EPCM(RBX) (step 2)", |x| {
                let rbx = x.aug(AUG);
                let rdx = x.e.base + x.e.size;
                (x.enclu(Enclu::Ereport, rbx, x.la(RD), rdx), Want::Fault(GP))
            }),
            ("order: RDX not EPC (step 1) before EPCM(RBX) (step 2)", |x| {
                let rbx = x.aug(AUG);
                let rdx = x.nonepc();
                (x.enclu(Enclu::Ereport, rbx, x.la(RD), rdx), Want::NonEpc(rdx))
            }),
            ("TARGETINFO page PENDING → #PF-EPCM(RBX)", |x| {
                let rbx = x.aug(AUG);
                (x.enclu(Enclu::Ereport, rbx, x.la(RD), x.la(REP)), epcm_u(rbx))
            }),
            ("TARGETINFO page of another enclave → #PF-EPCM(RBX)", |x| {
                let rbx = x.foreign(None);
                (x.enclu(Enclu::Ereport, rbx, x.la(RD), x.la(REP)), epcm_u(rbx))
            }),
            ("TARGETINFO page not readable → #PF-EPCM(RBX)", |x| {
                check("EMODPR", emod(&mut x.m, Encls::Emodpr, secinfo_none(), x.e.epc(layout::OPERANDS)), Want::Ok);
                (x.enclu(Enclu::Ereport, x.la(TI), x.la(RD), x.la(layout::DATA)), epcm_u(x.la(TI)))
            }),
            ("REPORTDATA page PENDING → #PF-EPCM(RCX)", |x| {
                let rcx = x.aug(AUG);
                (x.enclu(Enclu::Ereport, x.la(TI), rcx, x.la(REP)), epcm_u(rcx))
            }),
            ("REPORTDATA page BLOCKED → #PF-EPCM(RCX)", |x| {
                ok(&mut x.m, Encls::Eblock, 0, x.e.epc(layout::DATA), 0);
                let rcx = x.la(layout::DATA);
                (x.enclu(Enclu::Ereport, x.la(TI), rcx, x.la(REP)), epcm_u(rcx))
            }),
            ("REPORTDATA page is the TCS → #PF-EPCM(RCX)", |x| {
                let rcx = x.la(layout::TCS);
                (x.enclu(Enclu::Ereport, x.la(TI), rcx, x.la(REP)), epcm_u(rcx))
            }),
            ("output page read-only → #PF-EPCM(RDX)", |x| {
                let rdx = x.la(layout::READ_ONLY);
                (x.enclu(Enclu::Ereport, x.la(TI), x.la(RD), rdx), epcm_u(rdx))
            }),
            ("output page R+X → #PF-EPCM(RDX)", |x| {
                let rdx = x.la(layout::CODE);
                (x.enclu(Enclu::Ereport, x.la(TI), x.la(RD), rdx), epcm_u(rdx))
            }),
            ("output page PENDING → #PF-EPCM(RDX)", |x| {
                let rdx = x.aug(AUG);
                (x.enclu(Enclu::Ereport, x.la(TI), x.la(RD), rdx), epcm_u(rdx))
            }),
            ("output page MODIFIED → #PF-EPCM(RDX)", |x| {
                check("EMODT", emod(&mut x.m, Encls::Emodt, TRIM, x.e.epc(layout::DATA)), Want::Ok);
                let rdx = x.la(layout::DATA);
                (x.enclu(Enclu::Ereport, x.la(TI), x.la(RD), rdx), epcm_u(rdx))
            }),
            ("output page at another address (alias) → #PF-EPCM(RDX)", |x| {
                let rdx = x.map(ALIAS, x.e.epc(layout::DATA));
                (x.enclu(Enclu::Ereport, x.la(TI), x.la(RD), rdx), epcm_u(rdx))
            }),
            ("TARGETINFO reserved byte 48 → #GP", |x| {
                let mut ti = Targetinfo::zeroed();
                ti.reserved0[0] = 1;
                x.write(TI, ti.bytes());
                (x.enclu(Enclu::Ereport, x.la(TI), x.la(RD), x.la(REP)), Want::Fault(GP))
            }),
            ("TARGETINFO reserved byte 63 → #GP", |x| {
                let mut ti = Targetinfo::zeroed();
                ti.reserved1[7] = 1;
                x.write(TI, ti.bytes());
                (x.enclu(Enclu::Ereport, x.la(TI), x.la(RD), x.la(REP)), Want::Fault(GP))
            }),
            ("TARGETINFO reserved byte 128 → #GP", |x| {
                let mut ti = Targetinfo::zeroed();
                ti.reserved2[0] = 1;
                x.write(TI, ti.bytes());
                (x.enclu(Enclu::Ereport, x.la(TI), x.la(RD), x.la(REP)), Want::Fault(GP))
            }),
            ("TARGETINFO reserved byte 511 → #GP", |x| {
                let mut ti = Targetinfo::zeroed();
                ti.reserved2[383] = 1;
                x.write(TI, ti.bytes());
                (x.enclu(Enclu::Ereport, x.la(TI), x.la(RD), x.la(REP)), Want::Fault(GP))
            }),
            ("order: output read-only (step 2) before TARGETINFO reserved (step 3)", |x| {
                let mut ti = Targetinfo::zeroed();
                ti.reserved2[0] = 1;
                x.write(TI, ti.bytes());
                let rdx = x.la(layout::READ_ONLY);
                (x.enclu(Enclu::Ereport, x.la(TI), x.la(RD), rdx), epcm_u(rdx))
            }),
            ("success", |x| (x.enclu(Enclu::Ereport, x.la(TI), x.la(RD), x.la(REP)), Want::Done)),
        ],
    );
}

// ------------------------------------------------------------------------------------------------
// EGETKEY (SGX.md §6.19, §8)
// ------------------------------------------------------------------------------------------------

/// EGETKEY in `x` with the raw 512-byte KEYREQUEST `bytes`; the output is pre-filled with 0xAB.
fn egetkey_bytes(x: &mut Ex, bytes: &[u8]) -> (Outcome, [u8; 16]) {
    x.write(KEY, &[0xAB; 16]);
    x.write(KR, bytes);
    let r = x.enclu(Enclu::Egetkey, x.la(KR), x.la(KEY), 0);
    let key = x.m.debug_read(x.la(KEY), 16).try_into().expect("16 bytes");
    (r, key)
}

fn egetkey(x: &mut Ex, req: &Keyrequest) -> (Outcome, [u8; 16]) {
    egetkey_bytes(x, req.bytes())
}

fn req(name: Keyname, policy: u16) -> Keyrequest {
    let mut r = Keyrequest::zeroed();
    r.keyname = name as u16;
    r.keypolicy = policy;
    r
}

fn seal(policy: Keypolicy) -> Keyrequest {
    req(Keyname::Seal, policy.bits())
}

/// A KEYREQUEST with byte `at` set to `value` (for reserved-byte cases).
fn req_with_byte(base: &Keyrequest, at: usize, value: u8) -> Vec<u8> {
    let mut b = base.bytes().to_vec();
    b[at] = value;
    b
}

/// CPUSVN with one byte above / below the platform's (§8.4: "beyond" = some byte greater).
fn cpusvn_beyond(x: &Ex) -> [u8; 16] {
    let mut c = x.m.platform.keys().cpusvn;
    let i = c.iter().position(|&b| b < 0xFF).expect("a byte below 0xFF");
    c[i] += 1;
    c
}

fn cpusvn_below(x: &Ex) -> [u8; 16] {
    let mut c = x.m.platform.keys().cpusvn;
    let i = c.iter().position(|&b| b > 0).expect("a non-zero byte");
    c[i] -= 1;
    c
}

fn ex_with(flags: AttributesFlags) -> Ex {
    let mut m = Machine::new();
    let e = m.enclave(&EnclaveSpec { extra_flags: flags, ..EnclaveSpec::default() });
    Ex { m, e }
}

/// §6.19 steps 1–5 in order.
#[test]
fn egetkey_every_check() {
    run_table(
        ex,
        &[
            // Step 1: operands.
            ("RBX not 512-aligned → #GP", |x| {
                x.write(KR, seal(Keypolicy::MRENCLAVE).bytes());
                (x.enclu(Enclu::Egetkey, x.la(KR) + 64, x.la(KEY), 0), Want::Fault(GP))
            }),
            ("RCX not 16-aligned → #GP", |x| {
                x.write(KR, seal(Keypolicy::MRENCLAVE).bytes());
                (x.enclu(Enclu::Egetkey, x.la(KR), x.la(KEY) + 8, 0), Want::Fault(GP))
            }),
            ("RBX outside ELRANGE → #GP", |x| {
                let rbx = x.m.put(&seal(Keypolicy::MRENCLAVE));
                (x.enclu(Enclu::Egetkey, rbx, x.la(KEY), 0), Want::Fault(GP))
            }),
            ("RCX outside ELRANGE → #GP (inside, not outside: §13.6)", |x| {
                x.write(KR, seal(Keypolicy::MRENCLAVE).bytes());
                let rcx = x.m.put_bytes(&[0; 16], 16);
                (x.enclu(Enclu::Egetkey, x.la(KR), rcx, 0), Want::Fault(GP))
            }),
            ("RBX not EPC → #PF(RBX)", |x| {
                let rbx = x.nonepc();
                (x.enclu(Enclu::Egetkey, rbx, x.la(KEY), 0), Want::NonEpc(rbx))
            }),
            ("RCX not EPC → #PF(RCX)", |x| {
                x.write(KR, seal(Keypolicy::MRENCLAVE).bytes());
                let rcx = x.nonepc();
                (x.enclu(Enclu::Egetkey, x.la(KR), rcx, 0), Want::NonEpc(rcx))
            }),
            ("KEYREQUEST page PENDING → #PF-EPCM(RBX)", |x| {
                let rbx = x.aug(AUG);
                (x.enclu(Enclu::Egetkey, rbx, x.la(KEY), 0), epcm_u(rbx))
            }),
            ("KEYREQUEST page of another enclave → #PF-EPCM(RBX)", |x| {
                let rbx = x.foreign(None);
                (x.enclu(Enclu::Egetkey, rbx, x.la(KEY), 0), epcm_u(rbx))
            }),
            ("output page read-only → #PF-EPCM(RCX)", |x| {
                x.write(KR, seal(Keypolicy::MRENCLAVE).bytes());
                let rcx = x.la(layout::READ_ONLY);
                (x.enclu(Enclu::Egetkey, x.la(KR), rcx, 0), epcm_u(rcx))
            }),
            ("output page R+X → #PF-EPCM(RCX)", |x| {
                x.write(KR, seal(Keypolicy::MRENCLAVE).bytes());
                let rcx = x.la(layout::CODE) + 16;
                (x.enclu(Enclu::Egetkey, x.la(KR), rcx, 0), epcm_u(rcx))
            }),
            ("output page PENDING → #PF-EPCM(RCX)", |x| {
                x.write(KR, seal(Keypolicy::MRENCLAVE).bytes());
                let rcx = x.aug(AUG);
                (x.enclu(Enclu::Egetkey, x.la(KR), rcx, 0), epcm_u(rcx))
            }),
            ("KEYREQUEST in a read-only page → fine (R suffices)", |x| {
                // READ_ONLY is 0x11 bytes: KEYNAME 0x1111 with reserved ≠ 0 → the step-2 #GP.
                (x.enclu(Enclu::Egetkey, x.la(layout::READ_ONLY), x.la(KEY), 0), Want::Fault(GP))
            }),
            ("order: output read-only (step 1) before reserved ≠ 0 (step 2)", |x| {
                x.write(KR, &req_with_byte(&seal(Keypolicy::MRENCLAVE), 6, 1));
                let rcx = x.la(layout::READ_ONLY);
                (x.enclu(Enclu::Egetkey, x.la(KR), rcx, 0), epcm_u(rcx))
            }),
            ("order: output read-only (step 1) before KEYNAME > 4 (step 3)", |x| {
                x.write(KR, req(Keyname::Seal, 0).bytes());
                x.write(KR, &5u16.to_le_bytes());
                let rcx = x.la(layout::READ_ONLY);
                (x.enclu(Enclu::Egetkey, x.la(KR), rcx, 0), epcm_u(rcx))
            }),
            // Step 2: reserved fields and KSS-only fields.
            ("reserved bytes 6–7 → #GP", |x| {
                (egetkey_bytes(x, &req_with_byte(&seal(Keypolicy::MRENCLAVE), 6, 1)).0, Want::Fault(GP))
            }),
            ("reserved byte 78 → #GP", |x| {
                (egetkey_bytes(x, &req_with_byte(&seal(Keypolicy::MRENCLAVE), 78, 1)).0, Want::Fault(GP))
            }),
            ("reserved byte 511 → #GP", |x| {
                (egetkey_bytes(x, &req_with_byte(&seal(Keypolicy::MRENCLAVE), 511, 1)).0, Want::Fault(GP))
            }),
            ("KEYPOLICY bit 6 → #GP", |x| (egetkey(x, &req(Keyname::Seal, 1 << 6)).0, Want::Fault(GP))),
            ("KEYPOLICY bit 15 → #GP", |x| (egetkey(x, &req(Keyname::Seal, 1 << 15)).0, Want::Fault(GP))),
            ("no KSS: KEYPOLICY NOISVPRODID → #GP", |x| {
                (egetkey(x, &seal(Keypolicy::NOISVPRODID)).0, Want::Fault(GP))
            }),
            ("no KSS: KEYPOLICY CONFIGID → #GP", |x| (egetkey(x, &seal(Keypolicy::CONFIGID)).0, Want::Fault(GP))),
            ("no KSS: KEYPOLICY ISVFAMILYID → #GP", |x| {
                (egetkey(x, &seal(Keypolicy::ISVFAMILYID)).0, Want::Fault(GP))
            }),
            ("no KSS: KEYPOLICY ISVEXTPRODID → #GP", |x| {
                (egetkey(x, &seal(Keypolicy::ISVEXTPRODID)).0, Want::Fault(GP))
            }),
            ("no KSS: CONFIGSVN > 0 → #GP", |x| {
                let mut r = seal(Keypolicy::MRENCLAVE);
                r.configsvn = 1;
                (egetkey(x, &r).0, Want::Fault(GP))
            }),
            ("no KSS: CONFIGSVN > 0 on a REPORT request → #GP", |x| {
                let mut r = req(Keyname::Report, 0);
                r.configsvn = 1;
                (egetkey(x, &r).0, Want::Fault(GP))
            }),
            ("order: reserved (step 2) before KEYNAME > 4 (step 3)", |x| {
                (egetkey_bytes(x, &req_with_byte(&req_from(5), 100, 1)).0, Want::Fault(GP))
            }),
            ("order: KSS bits (step 2) before KEYNAME > 4 (step 3)", |x| {
                let mut r = seal(Keypolicy::CONFIGID);
                r.keyname = 5;
                (egetkey(x, &r).0, Want::Fault(GP))
            }),
            // Step 3: per-key checks.
            ("KEYNAME 5 → ZF, 256 SGX_INVALID_KEYNAME", |x| {
                (egetkey(x, &req_from(5)).0, Want::Err(SgxError::InvalidKeyname))
            }),
            ("KEYNAME 0xFFFF → 256", |x| (egetkey(x, &req_from(0xFFFF)).0, Want::Err(SgxError::InvalidKeyname))),
            ("order: KEYNAME > 4 before CPUSVN beyond", |x| {
                let mut r = req_from(7);
                r.cpusvn = cpusvn_beyond(x);
                (egetkey(x, &r).0, Want::Err(SgxError::InvalidKeyname))
            }),
            ("EINITTOKEN_KEY without ATTRIBUTES bit 5 → 2", |x| {
                (egetkey(x, &req(Keyname::Einittoken, 0)).0, Want::Err(SgxError::InvalidAttribute))
            }),
            ("PROVISION_KEY without ATTRIBUTES bit 4 → 2", |x| {
                (egetkey(x, &req(Keyname::Provision, 0)).0, Want::Err(SgxError::InvalidAttribute))
            }),
            ("PROVISION_SEAL_KEY without bit 4 → 2", |x| {
                (egetkey(x, &req(Keyname::ProvisionSeal, 0)).0, Want::Err(SgxError::InvalidAttribute))
            }),
            ("order: missing attribute before CPUSVN beyond", |x| {
                let mut r = req(Keyname::Provision, 0);
                r.cpusvn = cpusvn_beyond(x);
                (egetkey(x, &r).0, Want::Err(SgxError::InvalidAttribute))
            }),
            ("order: missing attribute before ISVSVN beyond", |x| {
                let mut r = req(Keyname::Einittoken, 0);
                r.isvsvn = 2;
                (egetkey(x, &r).0, Want::Err(SgxError::InvalidAttribute))
            }),
            ("SEAL: CPUSVN beyond → ZF, 32 SGX_INVALID_CPUSVN", |x| {
                let mut r = seal(Keypolicy::MRENCLAVE);
                r.cpusvn = cpusvn_beyond(x);
                (egetkey(x, &r).0, Want::Err(SgxError::InvalidCpusvn))
            }),
            ("order: CPUSVN beyond before ISVSVN beyond", |x| {
                let mut r = seal(Keypolicy::MRENCLAVE);
                r.cpusvn = cpusvn_beyond(x);
                r.isvsvn = 2;
                (egetkey(x, &r).0, Want::Err(SgxError::InvalidCpusvn))
            }),
            ("SEAL: ISVSVN > SECS.ISVSVN → ZF, 64 SGX_INVALID_ISVSVN", |x| {
                let mut r = seal(Keypolicy::MRENCLAVE);
                r.isvsvn = 2;
                (egetkey(x, &r).0, Want::Err(SgxError::InvalidIsvsvn))
            }),
            ("REPORT: no SVN checks (CPUSVN and ISVSVN beyond) → success", |x| {
                let mut r = req(Keyname::Report, 0);
                r.cpusvn = cpusvn_beyond(x);
                r.isvsvn = 0xFFFF;
                (egetkey(x, &r).0, Want::Ok)
            }),
            ("SEAL, ISVSVN = SECS.ISVSVN, CPUSVN = current → success", |x| {
                let mut r = seal(Keypolicy::MRSIGNER);
                r.isvsvn = 1;
                r.cpusvn = x.m.platform.keys().cpusvn;
                (egetkey(x, &r).0, Want::Ok)
            }),
        ],
    );
}

fn req_from(keyname: u16) -> Keyrequest {
    let mut r = Keyrequest::zeroed();
    r.keyname = keyname;
    r
}

/// §6.19 step 3 with the attributes granted, and the KSS-enclave checks (CONFIGSVN → 64 for SEAL
/// only; KSS policy bits allowed).
#[test]
fn egetkey_gated_keys_and_kss() {
    let mut x = ex_with(AttributesFlags::PROVISIONKEY | AttributesFlags::EINITTOKEN_KEY);
    for name in [Keyname::Einittoken, Keyname::Provision, Keyname::ProvisionSeal] {
        check(&format!("{name:?} granted"), egetkey(&mut x, &req(name, 0)).0, Want::Ok);
        let mut r = req(name, 0);
        r.cpusvn = cpusvn_beyond(&x);
        check(&format!("{name:?} CPUSVN beyond"), egetkey(&mut x, &r).0, Want::Err(SgxError::InvalidCpusvn));
        let mut r = req(name, 0);
        r.isvsvn = 2;
        check(&format!("{name:?} ISVSVN beyond"), egetkey(&mut x, &r).0, Want::Err(SgxError::InvalidIsvsvn));
    }

    let mut x = ex_with(AttributesFlags::KSS);
    let mut r = seal(Keypolicy::MRENCLAVE);
    r.configsvn = 1;
    check("KSS SEAL CONFIGSVN > SECS.CONFIGSVN → 64", egetkey(&mut x, &r).0, Want::Err(SgxError::InvalidIsvsvn));
    let mut r = req(Keyname::Report, 0);
    r.configsvn = 1;
    check("KSS REPORT CONFIGSVN → no check", egetkey(&mut x, &r).0, Want::Ok);
    let all = Keypolicy::MRENCLAVE
        | Keypolicy::NOISVPRODID
        | Keypolicy::CONFIGID
        | Keypolicy::ISVFAMILYID
        | Keypolicy::ISVEXTPRODID;
    check("KSS policy bits allowed", egetkey(&mut x, &seal(all)).0, Want::Ok);
    let mut r = seal(Keypolicy::MRENCLAVE);
    r.configsvn = 1;
    r.isvsvn = 2;
    check("KSS: ISVSVN checked before CONFIGSVN (both 64)", egetkey(&mut x, &r).0, Want::Err(SgxError::InvalidIsvsvn));
}

/// §6.19 step 4: on an error code the output is untouched; step 5 writes the key.
#[test]
fn egetkey_output() {
    let mut x = ex();
    let (r, key) = egetkey(&mut x, &req_from(5));
    check("KEYNAME 5", r, Want::Err(SgxError::InvalidKeyname));
    assert_eq!(key, [0xAB; 16], "output untouched on error");
    let mut bad = seal(Keypolicy::MRENCLAVE);
    bad.isvsvn = 2;
    let (r, key) = egetkey(&mut x, &bad);
    check("ISVSVN", r, Want::Err(SgxError::InvalidIsvsvn));
    assert_eq!(key, [0xAB; 16], "output untouched on error");
    let (r, key) = egetkey(&mut x, &seal(Keypolicy::MRENCLAVE));
    check("SEAL", r, Want::Ok);
    assert_ne!(key, [0xAB; 16]);
    assert_eq!(egetkey(&mut x, &seal(Keypolicy::MRENCLAVE)).1, key, "deterministic");
}

/// §8.1: which request and enclave fields a key depends on.
#[test]
fn egetkey_key_dependencies() {
    let mut x = ex();
    let key = |x: &mut Ex, r: &Keyrequest| {
        let (o, k) = egetkey(x, r);
        check("EGETKEY", o, Want::Ok);
        k
    };
    let base = seal(Keypolicy::MRENCLAVE);
    let k0 = key(&mut x, &base);
    let mut r = base.clone();
    r.isvsvn = 1;
    assert_ne!(key(&mut x, &r), k0, "SEAL depends on req.ISVSVN");
    let mut r = base.clone();
    r.cpusvn = cpusvn_below(&x);
    assert_ne!(key(&mut x, &r), k0, "SEAL depends on req.CPUSVN");
    let mut r = base.clone();
    r.keyid[31] = 1;
    assert_ne!(key(&mut x, &r), k0, "SEAL depends on KEYID");
    let mut r = base.clone();
    r.attributemask.flags = AttributesFlags::MODE64BIT.bits();
    assert_ne!(key(&mut x, &r), k0, "SEAL depends on ATTRIBUTEMASK");
    let mut r = base.clone();
    r.miscmask = 1;
    assert_ne!(key(&mut x, &r), k0, "SEAL depends on ~MISCMASK");
    assert_ne!(key(&mut x, &seal(Keypolicy::MRSIGNER)), k0, "KEYPOLICY is an input");

    // REPORT: ISVSVN and CPUSVN of the request are not inputs (CPUSVN = CR_CPUSVN), KEYID is.
    let rk = key(&mut x, &req(Keyname::Report, 0));
    let mut r = req(Keyname::Report, 0);
    r.isvsvn = 7;
    r.cpusvn = cpusvn_below(&x);
    r.attributemask.flags = !0;
    r.miscmask = !0;
    assert_eq!(key(&mut x, &r), rk, "REPORT ignores ISVSVN, CPUSVN, ATTRIBUTEMASK, MISCMASK");
    let mut r = req(Keyname::Report, 0);
    r.keyid[0] = 1;
    assert_ne!(key(&mut x, &r), rk, "REPORT depends on KEYID");
}

/// §8.1 SEAL policy across two enclaves of the same signer: MRSIGNER keys are shared,
/// MRENCLAVE keys are not; two instances of one enclave (BASEADDR is not measured, §3.1) share
/// both.
#[test]
fn seal_policy_across_enclaves() {
    let mut m = Machine::new();
    let spec =
        |slot: u64, tag: u8| EnclaveSpec { base_slot: slot, data: vec![(0, vec![tag; 8])], ..EnclaveSpec::default() };
    let enclaves = [m.enclave(&spec(0, 1)), m.enclave(&spec(1, 1)), m.enclave(&spec(2, 2))];
    let mut x = Ex { m, e: enclaves[0].clone() };
    let mut keys = Vec::new();
    for e in enclaves {
        x.e = e;
        let ke = egetkey(&mut x, &seal(Keypolicy::MRENCLAVE));
        let ks = egetkey(&mut x, &seal(Keypolicy::MRSIGNER));
        check("MRENCLAVE", ke.0, Want::Ok);
        check("MRSIGNER", ks.0, Want::Ok);
        keys.push((ke.1, ks.1));
    }
    assert_eq!(keys[0], keys[1], "same enclave at another base: same keys");
    assert_ne!(keys[0].0, keys[2].0, "MRENCLAVE policy: different enclaves, different keys");
    assert_eq!(keys[0].1, keys[2].1, "MRSIGNER policy: same signer, same key");
}

/// §10.1/§8.4: seal keys are per platform (K_ROOT, fuses): `seeded(1)` vs `seeded(2)` differ,
/// the same seed reproduces them; EPC loss and power cycles keep them.
#[test]
fn seal_keys_follow_the_platform() {
    let seal_key = |m: Machine| -> ([u8; 16], Machine) {
        let mut m = m;
        let e = m.enclave(&EnclaveSpec::default());
        let mut x = Ex { m, e };
        let (r, k) = egetkey(&mut x, &seal(Keypolicy::MRSIGNER));
        check("EGETKEY", r, Want::Ok);
        (k, x.m)
    };
    let (k1, m1) = seal_key(Machine::seeded(1));
    let (k2, _) = seal_key(Machine::seeded(2));
    let (k1b, _) = seal_key(Machine::seeded(1));
    assert_ne!(k1, k2, "another platform, another seal key");
    assert_eq!(k1, k1b, "same seed, same key");

    m1.platform.lose_epc();
    let (after_loss, m1) = seal_key(m1);
    assert_eq!(after_loss, k1, "lose_epc keeps K_ROOT and fuses");
    m1.platform.power_cycle();
    let (after_cycle, _) = seal_key(m1);
    assert_eq!(after_cycle, k1, "power_cycle keeps K_ROOT and fuses");
}

/// §10.1: `power_cycle()` changes CR_REPORT_KEYID, which REPORT.KEYID shows; `lose_epc()` does not.
#[test]
fn power_cycle_changes_report_keyid() {
    let mut x = ex();
    let k0 = report(&mut x, &Targetinfo::zeroed()).keyid;
    x.m.platform.lose_epc();
    x.e = x.m.enclave(&EnclaveSpec::default());
    assert_eq!(report(&mut x, &Targetinfo::zeroed()).keyid, k0, "lose_epc keeps CR_REPORT_KEYID");
    x.m.platform.power_cycle();
    x.e = x.m.enclave(&EnclaveSpec::default());
    let k1 = report(&mut x, &Targetinfo::zeroed()).keyid;
    assert_ne!(k1, k0, "power_cycle regenerates CR_REPORT_KEYID");
    assert_eq!(k1, x.m.platform.keys().report_keyid);
}

/// ENCLV leaves are not reachable from enclave mode (they are not ENCLU leaves); this only
/// documents that EINCVIRTCHILD does not disturb an enclave's keys (§8.1 has no VIRTCHILDCNT).
#[test]
fn virtchild_count_is_not_a_key_input() {
    let mut x = ex();
    let k = egetkey(&mut x, &seal(Keypolicy::MRENCLAVE)).1;
    check("EINC", x.m.enclv(Enclv::Eincvirtchild, x.e.secs, x.e.secs, 0), Want::Ok);
    assert_eq!(egetkey(&mut x, &seal(Keypolicy::MRENCLAVE)).1, k);
}
