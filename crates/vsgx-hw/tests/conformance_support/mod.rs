//! Helpers shared by the conformance suites (`conformance_paging.rs`, `conformance_enclave.rs`):
//! expected outcomes, a table runner that reports every failing case at once, and small wrappers
//! around the paging / SGX2 leaves whose operands live in scratch RAM.
//!
//! Every expected value in the suites comes from SGX.md; this module only encodes the
//! conventions of SGX.md §0 (flags), §5.3 (fault encoding) and §1 (structure layouts).
#![allow(dead_code)]

use vsgx_hw::epc::Epc;
use vsgx_isa::cpu::{Exception, Gprs, pfec, rflags};
use vsgx_isa::leaf::Encls;
use vsgx_isa::{
    ArchStruct, Attributes, AttributesFlags, PageType, Pageinfo, Pcmd, Rdinfo, SecinfoFlags, Secs, SecsHidden,
    secinfo_flags,
};

use super::common::*;

pub type Outcome = Result<Gprs, Exception>;

/// #GP(0).
pub const GP: Exception = Exception::GP0;

/// SECINFO.FLAGS values used throughout (SGX.md §1.6).
pub const REG_R: u64 = secinfo_flags(PageType::Reg, SecinfoFlags::R);
pub const REG_RW: u64 = secinfo_flags(PageType::Reg, SecinfoFlags::R.union(SecinfoFlags::W));
pub const REG_RX: u64 = secinfo_flags(PageType::Reg, SecinfoFlags::R.union(SecinfoFlags::X));
pub const REG_RWX: u64 = secinfo_flags(PageType::Reg, SecinfoFlags::RWX);
pub const TCS: u64 = secinfo_flags(PageType::Tcs, SecinfoFlags::empty());
pub const TRIM: u64 = secinfo_flags(PageType::Trim, SecinfoFlags::empty());
pub const SECS: u64 = secinfo_flags(PageType::Secs, SecinfoFlags::empty());
pub const VA: u64 = secinfo_flags(PageType::Va, SecinfoFlags::empty());
pub const PENDING: u64 = SecinfoFlags::PENDING.bits();
pub const MODIFIED: u64 = SecinfoFlags::MODIFIED.bits();
pub const PR: u64 = SecinfoFlags::PR.bits();

/// What a leaf must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// SGX.md §0 success: RAX = 0, CF/PF/AF/ZF/SF/OF all clear.
    Ok,
    /// Success of a leaf for which SGX.md documents no return code (EAUG, EMODPE, EREPORT): no
    /// fault, and neither ZF nor CF set.
    Done,
    /// SGX.md §0 error: ZF = 1 (the other status flags clear), RAX = code.
    Err(SgxError),
    /// SGX.md §0 informational outcome: CF = 1, ZF = 0, RAX = code.
    Info(SgxError),
    /// Exactly this exception.
    Fault(Exception),
    /// An operand that is mapped but not EPC: #PF with CR2 = the operand and PFEC.SGX set
    /// (SGX.md §5.3 MODEL CHOICE; the other error-code bits are not specified there).
    NonEpc(u64),
    /// An ordinary paging failure: #PF with CR2 = the operand and PFEC.SGX clear (SGX.md §5.3).
    Paging(u64),
}

/// #PF-EPCM raised by an ENCLS/ENCLV leaf (ring 0): P | W | SGX (SGX.md §5.3).
pub fn epcm(linear: u64) -> Want {
    Want::Fault(epcm_pf(linear, false))
}

/// #PF-EPCM raised by an enclave-mode ENCLU leaf (ring 3): P | W | U/S | SGX (SGX.md §5.3).
pub fn epcm_u(linear: u64) -> Want {
    Want::Fault(epcm_pf(linear, true))
}

/// Compares an outcome with what is wanted; `Err` describes the difference.
pub fn judge(got: &Outcome, want: Want) -> Result<(), String> {
    let status = |g: &Gprs| (g.rax, g.rflags & rflags::STATUS_MASK);
    let ok = match (want, got) {
        (Want::Ok, Ok(g)) => status(g) == (0, 0),
        (Want::Done, Ok(g)) => g.rflags & (rflags::ZF | rflags::CF) == 0,
        (Want::Err(e), Ok(g)) => status(g) == (e.code(), rflags::ZF),
        (Want::Info(e), Ok(g)) => status(g) == (e.code(), rflags::CF),
        (Want::Fault(x), Err(y)) => x == *y,
        (Want::NonEpc(la), Err(Exception::PageFault { linear, error_code })) => {
            *linear == la && error_code & pfec::SGX != 0
        }
        (Want::Paging(la), Err(Exception::PageFault { linear, error_code })) => {
            *linear == la && error_code & pfec::SGX == 0
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        let got = match got {
            Ok(g) => format!("rax={:#x} rflags={:#x} ({:?})", g.rax, g.rflags, g.status()),
            Err(e) => format!("{e:?}"),
        };
        Err(format!("want {want:?}, got {got}"))
    }
}

/// Asserts one outcome.
#[track_caller]
pub fn check(case: &str, got: Outcome, want: Want) {
    if let Err(msg) = judge(&got, want) {
        panic!("{case}: {msg}");
    }
}

/// One row of a table: a name and a case that runs on a fresh fixture and returns what happened
/// with what SGX.md says should happen.
pub type Case<F> = (&'static str, fn(&mut F) -> (Outcome, Want));

/// Runs a table: every case gets a fresh fixture from `setup`; all failures are reported together.
#[track_caller]
pub fn run_table<F>(setup: impl Fn() -> F, cases: &[Case<F>]) {
    let mut failures = Vec::new();
    for (name, case) in cases {
        let mut fx = setup();
        let (got, want) = case(&mut fx);
        if let Err(msg) = judge(&got, want) {
            failures.push(format!("  {name}: {msg}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

/// An address that no page table maps (canonical, outside RAM, EPC and every test ELRANGE).
pub const UNMAPPED: u64 = 0x6000_0000_0000;

/// A scratch-RAM page: mapped, ordinary memory, not EPC.
pub fn ram_page(m: &mut Machine) -> u64 {
    m.put_bytes(&[0u8; 4096], 4096)
}

/// A fresh VA page (EPA).
pub fn epa(m: &mut Machine) -> u64 {
    let page = m.epc_page();
    check("EPA setup", m.encls(Encls::Epa, PageType::Va as u64, page, 0), Want::Done);
    page
}

/// Slot `i` of a VA page.
pub fn slot(va: u64, i: u64) -> u64 {
    va + 8 * i
}

/// Advances CR_NEXT_VER past 7 (by evicting eight VA pages), so that EDBGRD of a VA slot — all-ones
/// iff `slot & !7 ≠ 0`, else 0 (SGX.md §6.6 step 6) — tells an occupied slot from an empty one.
pub fn burn_versions(m: &mut Machine) {
    let va = epa(m);
    for i in 0..8 {
        let p = epa(m);
        check("EWB VA (burn a version)", ewb(m, p, slot(va, i)).0, Want::Ok);
    }
}

/// EDBGRD of a VA slot (SGX.md §6.6 step 6): `u64::MAX` if occupied by a version ≥ 8, else 0.
pub fn read_slot(m: &mut Machine, rdx: u64) -> u64 {
    m.encls(Encls::Edbgrd, 0, rdx, 0).expect("EDBGRD of a VA slot").rbx
}

/// A setup step that must succeed (SGX.md §0 success).
#[track_caller]
pub fn ok(m: &mut Machine, leaf: Encls, rbx: u64, rcx: u64, rdx: u64) {
    check(&format!("{leaf} setup"), m.encls(leaf, rbx, rcx, rdx), Want::Ok);
}

/// ERDINFO of `rcx` into a fresh RDINFO (pre-filled with 0xA5 so that zeroing is visible).
pub fn erdinfo(m: &mut Machine, rcx: u64) -> (Outcome, Rdinfo) {
    let out = m.put_bytes(&[0xA5; 32], 32);
    let r = m.encls(Encls::Erdinfo, out, rcx, 0);
    let info = Rdinfo::from_bytes(&m.read(out, 32)).expect("32 bytes");
    (r, info)
}

/// ERDINFO that must succeed.
#[track_caller]
pub fn rdinfo(m: &mut Machine, rcx: u64) -> Rdinfo {
    let (r, info) = erdinfo(m, rcx);
    check("ERDINFO", r, Want::Ok);
    info
}

/// An evicted page as software keeps it: ciphertext, PCMD and the LINADDR EWB wrote back.
#[derive(Clone, Debug)]
pub struct Blob {
    pub page: Vec<u8>,
    pub pcmd: Pcmd,
    pub linaddr: u64,
}

/// EWB of `rcx` into VA slot `rdx` with fresh, zeroed PAGEINFO/PCMD/SRCPGE buffers; returns the
/// outcome and what EWB left in the buffers.
pub fn ewb(m: &mut Machine, rcx: u64, rdx: u64) -> (Outcome, Blob) {
    let src = m.put_bytes(&[0u8; 4096], 4096);
    let pcmd = m.put_bytes(&[0u8; 128], 128);
    let pi = m.put(&Pageinfo { linaddr: 0, srcpge: src, secinfo_or_pcmd: pcmd, secs: 0 });
    let r = m.encls(Encls::Ewb, pi, rcx, rdx);
    let blob = Blob {
        page: m.read(src, 4096),
        pcmd: Pcmd::from_bytes(&m.read(pcmd, 128)).expect("128 bytes"),
        linaddr: Pageinfo::from_bytes(&m.read(pi, 32)).expect("32 bytes").linaddr,
    };
    (r, blob)
}

/// EBLOCK + ETRACK + EWB of a child page of `secs`, all of which must succeed.
#[track_caller]
pub fn evict(m: &mut Machine, secs: u64, page: u64, rdx: u64) -> Blob {
    ok(m, Encls::Eblock, 0, page, 0);
    ok(m, Encls::Etrack, 0, secs, 0);
    let (r, blob) = ewb(m, page, rdx);
    check("EWB setup", r, Want::Ok);
    blob
}

/// ELDB/ELDU/ELDBC/ELDUC of `blob` with PAGEINFO {LINADDR = linaddr, SECS = secs}.
pub fn eld(m: &mut Machine, leaf: Encls, blob: &Blob, linaddr: u64, secs: u64, rcx: u64, rdx: u64) -> Outcome {
    let src = m.put_bytes(&blob.page, 4096);
    let pcmd = m.put(&blob.pcmd);
    let pi = m.put(&Pageinfo { linaddr, srcpge: src, secinfo_or_pcmd: pcmd, secs });
    m.encls(leaf, pi, rcx, rdx)
}

/// EAUG of a fresh EPC page at enclave offset `offset`, mapped there; must succeed.
#[track_caller]
pub fn eaug(m: &mut Machine, e: &TestEnclave, offset: u64) -> u64 {
    let page = m.epc_page();
    let pi = m.put(&Pageinfo { linaddr: e.la(offset), srcpge: 0, secinfo_or_pcmd: 0, secs: e.secs });
    check("EAUG setup", m.encls(Encls::Eaug, pi, page, 0), Want::Done);
    m.os.map_page(e.la(offset), page).expect("map");
    page
}

/// A SECINFO with raw FLAGS in scratch RAM (ENCLS operand).
pub fn secinfo(m: &mut Machine, flags: u64) -> u64 {
    m.put(&vsgx_isa::Secinfo::from_raw_flags(flags))
}

/// EMODPR/EMODT of `page` with SECINFO.FLAGS `flags`.
pub fn emod(m: &mut Machine, leaf: Encls, flags: u64, page: u64) -> Outcome {
    let si = secinfo(m, flags);
    m.encls(leaf, si, page, 0)
}

/// The SECS of a test-sized enclave at `base` (64-bit, DEBUG, XFRM 3, SSAFRAMESIZE 1).
pub fn secs_at(base: u64) -> Secs {
    let mut secs = Secs::zeroed();
    secs.size = 0x10000;
    secs.baseaddr = base;
    secs.ssaframesize = 1;
    secs.attributes = Attributes { flags: (AttributesFlags::MODE64BIT | AttributesFlags::DEBUG).bits(), xfrm: 3 };
    secs
}

/// An enclave that is created but not initialized, with one REG RW page at offset 0 (mapped).
/// Returns (SECS, base, page).
pub fn uninitialized(m: &mut Machine, base_slot: u64) -> (u64, u64, u64) {
    let base = 0x1000_0000_0000u64 + base_slot * 0x10000;
    let secs = m.ecreate(&secs_at(base)).expect("ECREATE");
    let page = m.eadd(secs, base, REG_RW, &[0x5A; 4096]).expect("EADD");
    (secs, base, page)
}

/// Writes a hidden SECS field (SGX.md §1.3 MODEL CHOICE offsets). Used only to stand in for
/// logical processors inside an enclave (TRK_CUR / TRK_PREV, §7): the model has no EENTER yet, so
/// no instruction can put an LP inside.
pub fn poke_secs(m: &Machine, secs: u64, offset: usize, value: u64) {
    let epc: &Epc = m.platform.epc();
    let page = epc.page_of(secs).expect("SECS is EPC");
    let mut slot = epc.lock(page).expect("page exists");
    slot.data_mut()[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
}

/// Reads a hidden SECS field (see [`poke_secs`]).
pub fn peek_secs(m: &Machine, secs: u64, offset: usize) -> u64 {
    let epc: &Epc = m.platform.epc();
    let page = epc.page_of(secs).expect("SECS is EPC");
    let slot = epc.lock(page).expect("page exists");
    u64::from_le_bytes(slot.data()[offset..offset + 8].try_into().expect("8 bytes"))
}

/// `n` logical processors entered the enclave in the current epoch (§7: `cur += n`).
pub fn lps_enter(m: &Machine, secs: u64, n: u64) {
    let cur = peek_secs(m, secs, SecsHidden::TRK_CUR);
    poke_secs(m, secs, SecsHidden::TRK_CUR, cur + n);
}

/// Every logical processor that entered before the last ETRACK has left (§7: `prev = 0`).
pub fn prev_lps_exit(m: &Machine, secs: u64) {
    poke_secs(m, secs, SecsHidden::TRK_PREV, 0);
}
