//! Conformance of the enclave-build and debug leaves to `shared/docs/SGX.md`: ECREATE (§6.1),
//! EADD (§6.2), EEXTEND (§6.3), EINIT (§4.2), EREMOVE (§6.5), EDBGRD/EDBGWR (§6.6) and EPA (§6.7),
//! plus the ENCLS dispatch checks (§5.1), the fault encodings (§5.3) and the register conventions
//! (§0, §11) as they apply to these leaves.
//!
//! The tests are tables: one case per documented error path, in the documented check order, plus
//! "order" cases that break two checks at once to show which one runs first, plus the success path
//! and its effects. Every expected value comes from SGX.md; the section is cited per group. Where a
//! test looks at model-internal state (EPCM entries, hidden SECS fields) it goes through the public
//! `vsgx_hw::epc` API and names the MODEL CHOICE it relies on.
//!
//! Conventions checked on *every* call (see [`run`]): the leaf runs with RAX[63:32] set to junk
//! (ignored in 64-bit mode, §5.1) and all RFLAGS status bits set. A fault leaves every register
//! unchanged; a leaf with no return code leaves RAX and RFLAGS unchanged (§11); a code-returning
//! leaf writes RAX and clears CF/PF/AF/OF/SF, setting ZF on error (§0).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use sha2::{Digest, Sha256};
use vsgx_hw::config;
use vsgx_hw::epc::Epcm;
use vsgx_hw::keys;
use vsgx_isa::cpu::{Cpl, Cpu, Exception, Gprs, LeafStatus, pfec, rflags};
use vsgx_isa::leaf::{Encls, Enclu, Enclv};
use vsgx_isa::signing::{HARDCODED_PKCS1_5_PADDING, SigningKey, SigstructBody};
use vsgx_isa::{
    ArchStruct, Attributes, AttributesFlags, Einittoken, PageType, Pageinfo, Secinfo, SecinfoFlags, Secs, SecsHidden,
    Sigstruct, Tcs,
};

// ---------------------------------------------------------------------------------------------
// Machinery
// ---------------------------------------------------------------------------------------------

/// BASEADDR of the enclaves these tests ECREATE (never mapped: EADD does not access LINADDR).
const BASE: u64 = 0x2000_0000_0000;
/// SIZE of those enclaves.
const SIZE: u64 = 0x10000;
/// A linear address SimpleOs leaves unmapped (it maps RAM at 0 and the EPC at 256 GiB).
const UNMAPPED: u64 = 0x3000_0000_0000;
/// Junk in RAX[63:32]: ignored in 64-bit mode (§5.1), handed back unchanged by the no-code leaves (§11).
const RAX_HIGH: u64 = 0x5A5A_5A5A_0000_0000;
/// RFLAGS before every leaf: the six status flags of §0, plus bit 1, IF and DF (which no leaf touches).
const FLAGS_IN: u64 = rflags::STATUS_MASK | 1 << 1 | 1 << 9 | 1 << 10;
/// Intel's launch-enclave hash, the MSR reset value (§4.4).
const INTEL_LE_MSRS: [u64; 4] = [0xa6053e051270b7ac, 0x6cfbe8ba8b3b413d, 0xc4916d99f2b3735d, 0xd4f8c05909f9bb3b];

const R: u64 = 1;
const W: u64 = 2;
const X: u64 = 4;
const PENDING: u64 = 8;
const MODIFIED: u64 = 16;
const PR: u64 = 32;

const INIT: u64 = AttributesFlags::INIT.bits();
const DEBUG: u64 = AttributesFlags::DEBUG.bits();
const MODE64: u64 = AttributesFlags::MODE64BIT.bits();
const KSS: u64 = AttributesFlags::KSS.bits();
const EINITTOKEN_KEY: u64 = AttributesFlags::EINITTOKEN_KEY.bits();

/// SECINFO.FLAGS for a page type and R/W/X/PENDING/MODIFIED/PR bits (§1.6).
const fn si(pt: PageType, bits: u64) -> u64 {
    (pt as u64) << 8 | bits
}

/// What a leaf is expected to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// A fault; registers unchanged.
    Fault(Exception),
    /// An ordinary paging #PF at this address: no PFEC.SGX, page not present (§5.3).
    PagingPf(u64),
    /// A leaf with no return code completed: RAX and RFLAGS unchanged (§11).
    Done,
    /// A code-returning leaf completed with this RAX/ZF/CF outcome (§0).
    Status(LeafStatus),
}

use Expect::{Done, PagingPf};

const GP: Expect = Expect::Fault(Exception::GP0);
const UD: Expect = Expect::Fault(Exception::InvalidOpcode);
const OK: Expect = Expect::Status(LeafStatus::Success);

/// ZF = 1, RAX = code (§0).
const fn code(e: SgxError) -> Expect {
    Expect::Status(LeafStatus::Error(e))
}

/// #PF-EPCM on an SGX2 platform at ring 0: P | W | SGX, CR2 = the operand (§5.3).
fn epcm(la: u64) -> Expect {
    Expect::Fault(epcm_pf(la, false))
}

/// An operand that is mapped but not EPC: #PF(operand) with PFEC.SGX (§5.3 MODEL CHOICE). SGX.md
/// fixes the SGX bit; P follows from "fine at the paging level"; the rest (no W) is the model's
/// choice in `leaves::Ctx::epc`.
fn not_epc(la: u64) -> Expect {
    Expect::Fault(Exception::PageFault { linear: la, error_code: pfec::P | pfec::SGX })
}

/// Runs ENCLS with EAX = `rax` (RAX[63:32] = junk) and checks the outcome and the register
/// conventions; returns the registers afterwards.
fn run_rax(m: &mut Machine, what: &str, rax: u32, rbx: u64, rcx: u64, rdx: u64, want: Expect) -> Gprs {
    let before = Gprs {
        rax: RAX_HIGH | rax as u64,
        rbx,
        rcx,
        rdx,
        rsi: 0x5151,
        rdi: 0xD1D1,
        rflags: FLAGS_IN,
        ..Gprs::default()
    };
    let mut regs = before;
    let result = m.os.cpu().encls(&mut regs);
    match want {
        Expect::Fault(e) => {
            assert_eq!(result, Err(e), "{what}");
            assert_eq!(regs, before, "{what}: a fault leaves the registers unchanged");
        }
        PagingPf(la) => {
            match result {
                Err(Exception::PageFault { linear, error_code }) => {
                    assert_eq!(linear, la, "{what}: CR2");
                    assert_eq!(error_code & (pfec::P | pfec::SGX), 0, "{what}: an ordinary not-present #PF (§5.3)");
                }
                other => panic!("{what}: expected an ordinary #PF at {la:#x}, got {other:?}"),
            }
            assert_eq!(regs, before, "{what}: a fault leaves the registers unchanged");
        }
        Done => {
            assert_eq!(result, Ok(()), "{what}");
            assert_eq!(regs, before, "{what}: no return code, RAX and RFLAGS unchanged (§11)");
        }
        Expect::Status(status) => {
            assert_eq!(result, Ok(()), "{what}");
            let (rax, flags) = match status {
                LeafStatus::Success => (0, 0),
                LeafStatus::Error(e) => (e.code(), rflags::ZF),
                LeafStatus::Info(e) => (e.code(), rflags::CF),
                LeafStatus::Unknown(v) => panic!("{what}: no leaf returns {v}"),
            };
            assert_eq!(regs.status(), status, "{what}");
            assert_eq!(regs.rax, rax, "{what}: RAX (§0)");
            assert_eq!(regs.rflags, (FLAGS_IN & !rflags::STATUS_MASK) | flags, "{what}: RFLAGS (§0)");
            let mut rest = regs;
            rest.rax = before.rax;
            rest.rflags = before.rflags;
            if rax == 0 && rax_leaf(before.rax) == Some(Encls::Edbgrd) {
                rest.rbx = before.rbx; // EDBGRD's output
            }
            assert_eq!(rest, before, "{what}: no other register changes");
        }
    }
    regs
}

fn rax_leaf(rax: u64) -> Option<Encls> {
    Encls::from_u32(rax as u32)
}

fn run(m: &mut Machine, what: &str, leaf: Encls, rbx: u64, rcx: u64, rdx: u64, want: Expect) -> Gprs {
    run_rax(m, what, leaf as u32, rbx, rcx, rdx, want)
}

/// A deterministic embedded-default machine.
fn machine() -> Machine {
    Machine::seeded(0x5EED)
}

/// A deterministic machine on a platform with changed features.
fn machine_with(f: impl FnOnce(&mut config::Features)) -> Machine {
    let mut cfg = config::embedded_default();
    cfg.seed = Some(0x5EED);
    f(&mut cfg.features);
    cfg.validate().expect("valid platform configuration");
    Machine::with_config(cfg)
}

/// Copies `bytes` into scratch RAM at an address that is `misalign` past an `align` boundary.
fn put_at(m: &mut Machine, bytes: &[u8], align: u64, misalign: u64) -> u64 {
    let la = m.put_bytes(&vec![0u8; bytes.len() + misalign as usize], align) + misalign;
    m.os.cpu().write(la, bytes).expect("scratch write");
    la
}

/// A 4 KiB page of ordinary RAM (mapped, not EPC).
fn ram_page(m: &mut Machine) -> u64 {
    m.put_bytes(&[0u8; 4096], 4096)
}

/// The EPCM entry and content of the EPC page holding `la` (EPC is identity-mapped).
fn snapshot(m: &Machine, la: u64) -> (Epcm, Box<[u8; 4096]>) {
    let epc = m.platform.epc();
    let page = epc.page_of(la).expect("an EPC address");
    let slot = epc.lock(page).expect("an EPC page");
    (slot.epcm, Box::new(*slot.data()))
}

fn u64_at(page: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(page[off..off + 8].try_into().expect("8 bytes"))
}

/// Runs `f` while the EPC page at `la` is held, as another logical processor inside a leaf on it
/// would: the leaf sees the page busy.
fn busy<T>(m: &mut Machine, la: u64, f: impl FnOnce(&mut Machine) -> T) -> T {
    let p = Arc::clone(&m.platform);
    let page = p.epc().page_of(la).expect("an EPC address");
    let _held = p.epc().lock(page).expect("an EPC page");
    f(m)
}

/// IA32_SGXLEPUBKEYHASH0–3 ← `hash` (§4.4: MSR 0x8C+i = LE64(hash[8i..8i+8])).
fn set_lehash(m: &mut Machine, hash: &[u8; 32]) {
    for i in 0..4 {
        let v = u64::from_le_bytes(hash[8 * i..8 * i + 8].try_into().expect("8 bytes"));
        m.os.cpu().wrmsr(0x8C + i as u32, v).expect("hash MSRs writable");
    }
}

/// LEHASH as EINIT reads it from the executing LP (§4.2).
fn lehash(m: &mut Machine) -> [u8; 32] {
    let mut h = [0u8; 32];
    for i in 0..4 {
        let v = m.os.cpu().rdmsr(0x8C + i as u32).expect("hash MSRs readable");
        h[8 * i..8 * i + 8].copy_from_slice(&v.to_le_bytes());
    }
    h
}

fn intel_lehash() -> [u8; 32] {
    let mut h = [0u8; 32];
    for (i, v) in INTEL_LE_MSRS.iter().enumerate() {
        h[8 * i..8 * i + 8].copy_from_slice(&v.to_le_bytes());
    }
    h
}

// ---------------------------------------------------------------------------------------------
// Building enclaves by hand, with an independent reference measurement (§3.1)
// ---------------------------------------------------------------------------------------------

/// The 64-bit debug SECS most tests ECREATE: SIZE 64 KiB at [`BASE`], one SSA page, XFRM x87|SSE.
fn good_secs() -> Secs {
    let mut s = Secs::zeroed();
    s.size = SIZE;
    s.baseaddr = BASE;
    s.ssaframesize = 1;
    s.attributes = Attributes { flags: MODE64 | DEBUG, xfrm: 3 };
    s
}

fn secs_secinfo() -> Secinfo {
    Secinfo::new(PageType::Secs, SecinfoFlags::empty())
}

/// Stages ECREATE operands (SECS source, SECINFO, PAGEINFO) in scratch RAM; returns RBX.
fn ecreate_ops(m: &mut Machine, secs: &[u8], secinfo: &[u8], tweak: impl FnOnce(&mut Pageinfo)) -> u64 {
    let src = m.put_bytes(secs, 4096);
    let secinfo = m.put_bytes(secinfo, 64);
    let mut pi = Pageinfo { linaddr: 0, srcpge: src, secinfo_or_pcmd: secinfo, secs: 0 };
    tweak(&mut pi);
    m.put(&pi)
}

/// ECREATE of `secs` into a fresh EPC page (which it returns).
fn ecreate(m: &mut Machine, secs: &Secs) -> u64 {
    let rcx = m.epc_page();
    let rbx = ecreate_ops(m, secs.bytes(), secs_secinfo().bytes(), |_| {});
    run(m, "ECREATE", Encls::Ecreate, rbx, rcx, 0, Done);
    rcx
}

/// Stages EADD operands; returns RBX.
fn eadd_ops(m: &mut Machine, linaddr: u64, secs: u64, flags: u64, content: &[u8; 4096]) -> u64 {
    let src = m.put_bytes(content, 4096);
    let secinfo = m.put(&Secinfo::from_raw_flags(flags));
    m.put(&Pageinfo { linaddr, srcpge: src, secinfo_or_pcmd: secinfo, secs })
}

/// EADD into a fresh EPC page (which it returns).
fn eadd(m: &mut Machine, secs: u64, linaddr: u64, flags: u64, content: &[u8; 4096]) -> u64 {
    let rcx = m.epc_page();
    let rbx = eadd_ops(m, linaddr, secs, flags, content);
    run(m, "EADD", Encls::Eadd, rbx, rcx, 0, Done);
    rcx
}

/// EPA of a fresh EPC page (which it returns).
fn epa(m: &mut Machine) -> u64 {
    let rcx = m.epc_page();
    run(m, "EPA", Encls::Epa, PageType::Va as u64, rcx, 0, Done);
    rcx
}

/// One page of a hand-built enclave.
#[derive(Clone)]
struct Page {
    offset: u64,
    flags: u64,
    content: Box<[u8; 4096]>,
    /// Offsets of the 256-byte chunks to EEXTEND, in order.
    chunks: Vec<u64>,
}

fn all_chunks() -> Vec<u64> {
    (0..16).map(|c| c * 256).collect()
}

fn tcs_bytes(tcs: &Tcs) -> Box<[u8; 4096]> {
    Box::new(tcs.bytes().try_into().expect("4096 bytes"))
}

/// A valid TCS for the standard layout: OSSA 0x3000, NSSA 1, OENTRY 0x2000, FS/GS limits 0xFFF.
fn std_tcs() -> Tcs {
    let mut t = Tcs::zeroed();
    t.ossa = 0x3000;
    t.nssa = 1;
    t.oentry = 0x2000;
    t.fslimit = 0xFFF;
    t.gslimit = 0xFFF;
    t
}

/// The standard enclave: REG RW data, TCS, REG RX code, REG RW SSA; every chunk measured.
fn std_pages() -> Vec<Page> {
    let mut data = Box::new([0u8; 4096]);
    for (i, b) in data.iter_mut().enumerate() {
        *b = (i * 7) as u8;
    }
    vec![
        Page { offset: 0x0000, flags: si(PageType::Reg, R | W), content: data, chunks: all_chunks() },
        Page { offset: 0x1000, flags: si(PageType::Tcs, 0), content: tcs_bytes(&std_tcs()), chunks: all_chunks() },
        Page { offset: 0x2000, flags: si(PageType::Reg, R | X), content: Box::new([0x90; 4096]), chunks: all_chunks() },
        Page { offset: 0x3000, flags: si(PageType::Reg, R | W), content: Box::new([0; 4096]), chunks: all_chunks() },
    ]
}

/// The standard SECS for launch tests (64-bit, XFRM 3, at [`BASE`]), debug or not.
fn std_secs(debug: bool) -> Secs {
    let mut s = good_secs();
    s.attributes.flags = MODE64 | if debug { DEBUG } else { 0 };
    s
}

/// An enclave built (ECREATE + EADD + EEXTEND) but not initialized.
struct Built {
    secs: u64,
    /// EPC page by enclave offset.
    pages: BTreeMap<u64, u64>,
    /// The MRENCLAVE SGX.md §3.1 predicts for the build.
    mrenclave: [u8; 32],
}

fn build(m: &mut Machine, secs: &Secs, pages: &[Page]) -> Built {
    let secs_epc = ecreate(m, secs);
    let mut map = BTreeMap::new();
    for p in pages {
        let epc = eadd(m, secs_epc, secs.baseaddr + p.offset, p.flags, &p.content);
        for &c in &p.chunks {
            run(m, "EEXTEND", Encls::Eextend, secs_epc, epc + c, 0, Done);
        }
        map.insert(p.offset, epc);
        m.os.reset_scratch();
    }
    Built { secs: secs_epc, pages: map, mrenclave: reference_mrenclave(secs, pages) }
}

fn block(tag: u64) -> [u8; 64] {
    let mut b = [0u8; 64];
    b[0..8].copy_from_slice(&tag.to_le_bytes());
    b
}

/// §3.1 ECREATE block.
fn ecreate_block(ssaframesize: u32, size: u64) -> [u8; 64] {
    let mut b = block(0x0045544145524345);
    b[8..12].copy_from_slice(&ssaframesize.to_le_bytes());
    b[12..20].copy_from_slice(&size.to_le_bytes());
    b
}

/// The TCS as EADD stores it in EPC (§6.2 step 7): STATE, DBGOPTIN, CSSA and AEP cleared.
fn stored(p: &Page) -> Box<[u8; 4096]> {
    let mut c = p.content.clone();
    if p.flags >> 8 & 0xFF == PageType::Tcs as u64 {
        c[0..8].fill(0);
        c[8] &= !1;
        c[24..28].fill(0);
        c[40..48].fill(0);
    }
    c
}

/// MRENCLAVE per SGX.md §3.1, written from the text (no model code involved).
fn reference_mrenclave(secs: &Secs, pages: &[Page]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(ecreate_block(secs.ssaframesize, secs.size));
    for p in pages {
        // "Effective SECINFO": a TCS is measured with R = W = X = 0.
        let flags = if p.flags >> 8 & 0xFF == PageType::Tcs as u64 { p.flags & !7 } else { p.flags };
        let mut b = block(0x0000000044444145);
        b[8..16].copy_from_slice(&p.offset.to_le_bytes());
        b[16..24].copy_from_slice(&flags.to_le_bytes());
        h.update(b);
        let content = stored(p);
        for &c in &p.chunks {
            let mut b = block(0x00444E4554584545);
            b[8..16].copy_from_slice(&(p.offset + c).to_le_bytes());
            h.update(b);
            h.update(&content[c as usize..c as usize + 256]);
        }
    }
    h.finalize().into()
}

fn signing_key() -> SigningKey {
    SigningKey::from_pem(KEY_PEM).expect("test key")
}

/// MRSIGNER = SHA-256 of the 384 stored modulus bytes (§3.2).
fn mrsigner_of(sig: &Sigstruct) -> [u8; 32] {
    Sha256::digest(sig.modulus).into()
}

/// A SIGSTRUCT body that binds everything about `secs`: every ATTRIBUTES and MISCSELECT bit enforced.
fn body_for(secs: &Secs) -> SigstructBody {
    SigstructBody {
        date: 0x2026_0101,
        attributes: secs.attributes,
        attributemask: Attributes { flags: !0, xfrm: !0 },
        miscselect: secs.miscselect,
        miscmask: !0,
        isvprodid: 0x1234,
        isvsvn: 7,
        ..SigstructBody::default()
    }
}

fn sign(body: &SigstructBody, enclavehash: [u8; 32]) -> Sigstruct {
    signing_key().sign(body, enclavehash).expect("sign")
}

/// EINIT with the SIGSTRUCT at a 4 KiB boundary and the token at a 512-byte boundary.
fn einit(m: &mut Machine, what: &str, sig: &Sigstruct, secs: u64, token: &Einittoken, want: Expect) -> Gprs {
    let sig_la = put_at(m, sig.bytes(), 4096, 0);
    let token_la = put_at(m, token.bytes(), 512, 0);
    let r = run(m, what, Encls::Einit, sig_la, secs, token_la, want);
    m.os.reset_scratch();
    r
}

/// Launches `b` Linux-style (§4.4): hash MSRs = MRSIGNER, all-zero token.
fn launch(m: &mut Machine, b: &Built, sig: &Sigstruct) {
    set_lehash(m, &mrsigner_of(sig));
    einit(m, "EINIT (launch)", sig, b.secs, &Einittoken::zeroed(), OK);
}

// ---------------------------------------------------------------------------------------------
// ECREATE (§6.1)
// ---------------------------------------------------------------------------------------------

type SecsTweak = fn(&mut Secs);

/// Runs ECREATE of `good_secs()` tweaked by each case into a fresh page, expecting `want`; after a
/// fault, checks the page was left free (a valid SECS ECREATEs into it).
fn ecreate_table(m: &mut Machine, cases: &[(&str, SecsTweak, Expect)]) {
    for &(name, tweak, want) in cases {
        let mut secs = good_secs();
        tweak(&mut secs);
        let rcx = m.epc_page();
        let rbx = ecreate_ops(m, secs.bytes(), secs_secinfo().bytes(), |_| {});
        run(m, &format!("ECREATE: {name}"), Encls::Ecreate, rbx, rcx, 0, want);
        if want != Done {
            let rbx = ecreate_ops(m, good_secs().bytes(), secs_secinfo().bytes(), |_| {});
            run(
                m,
                &format!("ECREATE after '{name}' faulted: the page is still free"),
                Encls::Ecreate,
                rbx,
                rcx,
                0,
                Done,
            );
        }
        m.os.reset_scratch();
    }
}

fn set_32bit(s: &mut Secs) {
    s.attributes.flags &= !MODE64;
}

/// §6.1 step 4 on the embedded default platform: every #GP check of the SECS source individually,
/// each next to a passing case at the boundary.
#[test]
fn ecreate_secs_checks() {
    let mut m = machine();
    // The platform the expectations below are written for (§9.1): CPUID.(12H,0) EBX = 1 (EXINFO),
    // EDX = 0x241F; CPUID.(12H,1) EAX = 0x4B6 (0x36 + KSS + AEXNOTIFY), XFRM mask ECX:EDX = 0x7.
    let l0 = m.platform.cpuid(0x12, 0);
    let l1 = m.platform.cpuid(0x12, 1);
    assert_eq!((l0.ebx, l0.edx), (0x1, 0x241F));
    assert_eq!((l1.eax, l1.ebx, l1.ecx, l1.edx), (0x4B6, 0, 0x7, 0));
    let cases: &[(&str, SecsTweak, Expect)] = &[
        ("the reference SECS", |_| {}, Done),
        // XFRM & 3 ≠ 3 (§1.2, §6.1).
        ("XFRM 0x1: SSE missing", |s| s.attributes.xfrm = 0x1, GP),
        ("XFRM 0x2: x87 missing", |s| s.attributes.xfrm = 0x2, GP),
        ("XFRM 0", |s| s.attributes.xfrm = 0, GP),
        ("XFRM 0x6: AVX with SSE but no x87", |s| s.attributes.xfrm = 0x6, GP),
        // XFRM outside CPUID.(12H,1):ECX:EDX = 0x7.
        ("XFRM 0xE7: legal AVX-512 but outside the mask", |s| s.attributes.xfrm = 0xE7, GP),
        ("XFRM 0x203: PKRU outside the mask", |s| s.attributes.xfrm = 0x203, GP),
        ("XFRM bit 32 (EDX half of the mask is 0)", |s| s.attributes.xfrm = 1 << 32 | 3, GP),
        ("XFRM bit 63: illegal and outside the mask", |s| s.attributes.xfrm = 1 << 63 | 3, GP),
        ("XFRM 0x7 (AVX is in the mask)", |s| s.attributes.xfrm = 0x7, Done),
        // MISCSELECT ⊆ CPUID.(12H,0):EBX = 0x1.
        ("MISCSELECT bit 1", |s| s.miscselect = 0x2, GP),
        ("MISCSELECT bit 31 with EXINFO", |s| s.miscselect = 1 << 31 | 1, GP),
        ("MISCSELECT EXINFO", |s| s.miscselect = 1, Done),
        // 4096·SSAFRAMESIZE ≥ XS(XFRM) + 184 + MISC: XS(0x7) + 184 + 16 = 1032 fits one page.
        ("SSAFRAMESIZE 0", |s| s.ssaframesize = 0, GP),
        (
            "SSAFRAMESIZE 0 with EXINFO and AVX",
            |s| {
                s.ssaframesize = 0;
                s.miscselect = 1;
                s.attributes.xfrm = 7;
            },
            GP,
        ),
        (
            "SSAFRAMESIZE 1 with EXINFO and AVX",
            |s| {
                s.miscselect = 1;
                s.attributes.xfrm = 7;
            },
            Done,
        ),
        // BASEADDR canonical (64-bit) / below 4 GiB (32-bit).
        ("64-bit: BASEADDR 0x0000_8000_0000_0000 non-canonical", |s| s.baseaddr = 0x0000_8000_0000_0000, GP),
        ("64-bit: BASEADDR 0xFFFF_0000_0000_0000 non-canonical", |s| s.baseaddr = 0xFFFF_0000_0000_0000, GP),
        ("64-bit: BASEADDR 0x0000_7FFF_FFFF_0000 canonical", |s| s.baseaddr = 0x0000_7FFF_FFFF_0000, Done),
        ("64-bit: BASEADDR 0xFFFF_8000_0000_0000 canonical", |s| s.baseaddr = 0xFFFF_8000_0000_0000, Done),
        (
            "32-bit: BASEADDR 2^32",
            |s| {
                set_32bit(s);
                s.baseaddr = 1 << 32;
            },
            GP,
        ),
        (
            "32-bit: BASEADDR 0x0000_8000_0000_0000",
            |s| {
                set_32bit(s);
                s.baseaddr = 0x0000_8000_0000_0000;
            },
            GP,
        ),
        (
            "32-bit: BASEADDR 0xFFFF_0000",
            |s| {
                set_32bit(s);
                s.baseaddr = 0xFFFF_0000;
            },
            Done,
        ),
        // SIZE < 2^EDX[15:8] = 2^36 (64-bit) or 2^EDX[7:0] = 2^31 (32-bit) (§13.19).
        (
            "64-bit: SIZE 2^36",
            |s| {
                s.size = 1 << 36;
                s.baseaddr = 1 << 44;
            },
            GP,
        ),
        (
            "64-bit: SIZE 2^37",
            |s| {
                s.size = 1 << 37;
                s.baseaddr = 1 << 44;
            },
            GP,
        ),
        (
            "64-bit: SIZE 2^35",
            |s| {
                s.size = 1 << 35;
                s.baseaddr = 1 << 44;
            },
            Done,
        ),
        (
            "32-bit: SIZE 2^31",
            |s| {
                set_32bit(s);
                s.size = 1 << 31;
                s.baseaddr = 1 << 31;
            },
            GP,
        ),
        (
            "32-bit: SIZE 2^30",
            |s| {
                set_32bit(s);
                s.size = 1 << 30;
                s.baseaddr = 1 << 30;
            },
            Done,
        ),
        (
            "64-bit: SIZE 2^31 is fine for a 64-bit enclave",
            |s| {
                s.size = 1 << 31;
                s.baseaddr = 1 << 44;
            },
            Done,
        ),
        // SIZE ≥ 8192 and a power of two.
        ("SIZE 4096", |s| s.size = 4096, GP),
        ("SIZE 0", |s| s.size = 0, GP),
        ("SIZE 8192", |s| s.size = 8192, Done),
        ("SIZE 0x3000", |s| s.size = 0x3000, GP),
        ("SIZE 0x18000", |s| s.size = 0x18000, GP),
        // BASEADDR & (SIZE − 1) = 0.
        ("BASEADDR + 0x1000", |s| s.baseaddr = BASE + 0x1000, GP),
        ("BASEADDR 32 KiB-aligned, SIZE 64 KiB", |s| s.baseaddr = BASE + 0x8000, GP),
        ("BASEADDR + 1", |s| s.baseaddr = BASE + 1, GP),
        // ATTRIBUTES ⊆ CPUID.(12H,1):EAX:EBX = 0x4B6 (INIT included).
        ("ATTRIBUTES.INIT", |s| s.attributes.flags |= INIT, GP),
        ("ATTRIBUTES bit 3 (reserved)", |s| s.attributes.flags |= 1 << 3, GP),
        ("ATTRIBUTES bit 6 (CET, not modelled)", |s| s.attributes.flags |= 1 << 6, GP),
        ("ATTRIBUTES bit 8", |s| s.attributes.flags |= 1 << 8, GP),
        ("ATTRIBUTES bit 9", |s| s.attributes.flags |= 1 << 9, GP),
        ("ATTRIBUTES bit 11", |s| s.attributes.flags |= 1 << 11, GP),
        ("ATTRIBUTES bit 32 (EBX half of the mask is 0)", |s| s.attributes.flags |= 1 << 32, GP),
        ("ATTRIBUTES bit 63", |s| s.attributes.flags |= 1 << 63, GP),
        ("ATTRIBUTES PROVISIONKEY | EINITTOKEN_KEY | KSS | AEXNOTIFY", |s| s.attributes.flags |= 0x4B0, Done),
        (
            "ATTRIBUTES 0 (32-bit, not debug)",
            |s| {
                s.attributes.flags = 0;
                s.baseaddr = 0x8000_0000;
            },
            Done,
        ),
        // SECS reserved bytes (§1.3): [24,48), [96,128), [160,192), [262,4096).
        ("reserved byte 24", |s| s.reserved0[0] = 1, GP),
        ("reserved byte 47", |s| s.reserved0[23] = 0x80, GP),
        ("reserved byte 96", |s| s.reserved1[0] = 1, GP),
        ("reserved byte 127", |s| s.reserved1[31] = 1, GP),
        ("reserved byte 160", |s| s.reserved2[0] = 1, GP),
        ("reserved byte 191", |s| s.reserved2[31] = 1, GP),
        ("reserved byte 262", |s| s.reserved3[0] = 1, GP),
        ("reserved byte 0x200 (where the model keeps EID)", |s| s.reserved3[0x200 - 262] = 1, GP),
        ("reserved byte 0x3B8", |s| s.reserved3[0x3B8 - 262] = 1, GP),
        ("reserved byte 4095", |s| s.reserved3[4095 - 262] = 1, GP),
        // Not reserved: ECREATE overwrites them (§6.1 step 5).
        (
            "MRENCLAVE, MRSIGNER, ISVPRODID, ISVSVN non-zero in the source",
            |s| {
                s.mrenclave = [0xAA; 32];
                s.mrsigner = [0xBB; 32];
                s.isvprodid = 0xCCCC;
                s.isvsvn = 0xDDDD;
            },
            Done,
        ),
        // CONFIGID / CONFIGSVN need SECS.ATTRIBUTES.KSS.
        ("CONFIGID[0] without KSS", |s| s.configid[0] = 1, GP),
        ("CONFIGID[63] without KSS", |s| s.configid[63] = 1, GP),
        ("CONFIGSVN without KSS", |s| s.configsvn = 1, GP),
        (
            "CONFIGID and CONFIGSVN with KSS",
            |s| {
                s.attributes.flags |= KSS;
                s.configid = [0x42; 64];
                s.configsvn = 3;
            },
            Done,
        ),
    ];
    ecreate_table(&mut m, cases);
}

/// §6.1 step 4 checks whose outcome depends on what the platform enumerates (§9.1): the XFRM
/// legality rules of §1.2 are only reachable with a mask wider than 0x7; the SSA size rule with a
/// large XSAVE area; the settable ATTRIBUTES and MISCSELECT follow the configuration.
#[test]
fn ecreate_secs_checks_follow_cpuid() {
    // XFRM mask: x87, SSE, AVX, MPX, AVX-512, AMX.
    let mut m = machine_with(|f| f.xfrm_mask = 0x6_00FF);
    assert_eq!(m.platform.cpuid(0x12, 1).ecx, 0x6_00FF);
    let cases: &[(&str, SecsTweak, Expect)] = &[
        // Inside the mask but illegal for XSETBV (§1.2).
        ("XFRM 0xB: BNDREGS without BNDCSR", |s| s.attributes.xfrm = 0xB, GP),
        ("XFRM 0x13: BNDCSR without BNDREGS", |s| s.attributes.xfrm = 0x13, GP),
        ("XFRM 0x1B: both MPX bits", |s| s.attributes.xfrm = 0x1B, Done),
        ("XFRM 0x27: opmask only", |s| s.attributes.xfrm = 0x27, GP),
        ("XFRM 0x67: two of three AVX-512 bits", |s| s.attributes.xfrm = 0x67, GP),
        ("XFRM 0xE3: AVX-512 without AVX", |s| s.attributes.xfrm = 0xE3, GP),
        ("XFRM 0xE7: AVX-512 with AVX", |s| s.attributes.xfrm = 0xE7, Done),
        (
            "XFRM 0x2_0003: XTILECFG without XTILEDATA",
            |s| {
                s.attributes.xfrm = 0x2_0003;
                s.ssaframesize = 3;
            },
            GP,
        ),
        (
            "XFRM 0x4_0003: XTILEDATA without XTILECFG",
            |s| {
                s.attributes.xfrm = 0x4_0003;
                s.ssaframesize = 3;
            },
            GP,
        ),
        ("XFRM 0x5: AVX without SSE", |s| s.attributes.xfrm = 0x5, GP),
        // SSA frame: XS(0x6_0003) = 2816 + 8192 = 11008; + 184 = 11192 needs 3 pages.
        (
            "XFRM AMX, SSAFRAMESIZE 2",
            |s| {
                s.attributes.xfrm = 0x6_0003;
                s.ssaframesize = 2;
            },
            GP,
        ),
        (
            "XFRM AMX, SSAFRAMESIZE 3",
            |s| {
                s.attributes.xfrm = 0x6_0003;
                s.ssaframesize = 3;
            },
            Done,
        ),
        (
            "XFRM 0x6_00FF with EXINFO, SSAFRAMESIZE 3",
            |s| {
                s.attributes.xfrm = 0x6_00FF;
                s.miscselect = 1;
                s.ssaframesize = 3;
            },
            Done,
        ),
        // XS(0xE7) = 2688; + 184 + 16 fits one page.
        (
            "XFRM 0xE7 with EXINFO, SSAFRAMESIZE 1",
            |s| {
                s.attributes.xfrm = 0xE7;
                s.miscselect = 1;
            },
            Done,
        ),
    ];
    ecreate_table(&mut m, cases);

    // Neither KSS nor AEX-Notify nor EXINFO enumerated; a 1 MiB maximum 64-bit enclave size.
    let mut m = machine_with(|f| {
        f.kss = false;
        f.aexnotify = false;
        f.exinfo = false;
        f.max_enclave_size_64 = 20;
    });
    let l0 = m.platform.cpuid(0x12, 0);
    assert_eq!((l0.ebx, l0.edx & 0xFF00), (0, 20 << 8));
    assert_eq!(m.platform.cpuid(0x12, 1).eax, 0x36);
    let cases: &[(&str, SecsTweak, Expect)] = &[
        ("the reference SECS", |_| {}, Done),
        ("ATTRIBUTES.KSS not settable", |s| s.attributes.flags |= KSS, GP),
        (
            "ATTRIBUTES.KSS with CONFIGID",
            |s| {
                s.attributes.flags |= KSS;
                s.configid[0] = 1;
            },
            GP,
        ),
        ("ATTRIBUTES.AEXNOTIFY not settable", |s| s.attributes.flags |= 1 << 10, GP),
        ("MISCSELECT.EXINFO not supported", |s| s.miscselect = 1, GP),
        ("64-bit: SIZE 2^20 = 2^EDX[15:8]", |s| s.size = 1 << 20, GP),
        ("64-bit: SIZE 2^19", |s| s.size = 1 << 19, Done),
    ];
    ecreate_table(&mut m, cases);
}

/// What an operand case stages: RBX, RCX and the expected outcome.
type OperandCase<F> = (&'static str, fn(&mut Machine, &F) -> (u64, u64, Expect));

struct EcreateFx {
    /// A valid SECS page.
    used: u64,
    ram: u64,
}

fn ecreate_std(m: &mut Machine) -> u64 {
    ecreate_ops(m, good_secs().bytes(), secs_secinfo().bytes(), |_| {})
}

fn ecreate_with_pageinfo(m: &mut Machine, tweak: fn(&mut Pageinfo)) -> u64 {
    ecreate_ops(m, good_secs().bytes(), secs_secinfo().bytes(), tweak)
}

fn ecreate_with_secinfo(m: &mut Machine, secinfo: &[u8]) -> u64 {
    ecreate_ops(m, good_secs().bytes(), secinfo, |_| {})
}

fn secinfo_raw(flags: u64, byte: Option<(usize, u8)>) -> Vec<u8> {
    let mut s = Secinfo::from_raw_flags(flags).bytes().to_vec();
    if let Some((i, v)) = byte {
        s[i] = v;
    }
    s
}

/// §6.1 steps 1–3: operand alignment, EPC residency, PAGEINFO/SECINFO and the target's EPCM
/// entry, then the order of those checks relative to each other and to step 4.
#[test]
fn ecreate_operand_checks() {
    let mut m = machine();
    let used = ecreate(&mut m, &good_secs());
    let ram = ram_page(&mut m);
    let fx = EcreateFx { used, ram };
    let cases: &[OperandCase<EcreateFx>] = &[
        // Step 1.
        ("RBX (PAGEINFO) 16 bytes off a 32-byte boundary", |m, _| {
            let pi = Pageinfo {
                linaddr: 0,
                srcpge: m.put_bytes(good_secs().bytes(), 4096),
                secinfo_or_pcmd: m.put(&secs_secinfo()),
                secs: 0,
            };
            (put_at(m, pi.bytes(), 32, 16), m.epc_page(), GP)
        }),
        ("RCX not 4 KiB aligned", |m, _| (ecreate_std(m), m.epc_page() + 0x800, GP)),
        ("RCX is ordinary RAM", |m, fx| (ecreate_std(m), fx.ram, not_epc(fx.ram))),
        ("RCX unmapped", |m, _| (ecreate_std(m), UNMAPPED, PagingPf(UNMAPPED))),
        // Step 2.
        ("RBX (PAGEINFO) unmapped", |m, _| (UNMAPPED, m.epc_page(), PagingPf(UNMAPPED))),
        ("SRCPGE not 4 KiB aligned", |m, _| {
            let src = put_at(m, good_secs().bytes(), 4096, 0x800);
            let secinfo = m.put(&secs_secinfo());
            (m.put(&Pageinfo { linaddr: 0, srcpge: src, secinfo_or_pcmd: secinfo, secs: 0 }), m.epc_page(), GP)
        }),
        ("SECINFO 32 bytes off a 64-byte boundary", |m, _| {
            let src = m.put_bytes(good_secs().bytes(), 4096);
            let secinfo = put_at(m, secs_secinfo().bytes(), 64, 32);
            (m.put(&Pageinfo { linaddr: 0, srcpge: src, secinfo_or_pcmd: secinfo, secs: 0 }), m.epc_page(), GP)
        }),
        ("PAGEINFO.LINADDR ≠ 0", |m, _| (ecreate_with_pageinfo(m, |pi| pi.linaddr = BASE), m.epc_page(), GP)),
        // Any non-zero value; here the first EPC page.
        ("PAGEINFO.SECS ≠ 0", |m, _| (ecreate_with_pageinfo(m, |pi| pi.secs = 0x40_0000_0000), m.epc_page(), GP)),
        ("SECINFO.FLAGS bit 6 (reserved)", |m, _| {
            (ecreate_with_secinfo(m, &secinfo_raw(1 << 6, None)), m.epc_page(), GP)
        }),
        ("SECINFO.FLAGS bit 7 (reserved)", |m, _| {
            (ecreate_with_secinfo(m, &secinfo_raw(1 << 7, None)), m.epc_page(), GP)
        }),
        ("SECINFO.FLAGS bit 16 (reserved)", |m, _| {
            (ecreate_with_secinfo(m, &secinfo_raw(1 << 16, None)), m.epc_page(), GP)
        }),
        ("SECINFO.FLAGS bit 63 (reserved)", |m, _| {
            (ecreate_with_secinfo(m, &secinfo_raw(1 << 63, None)), m.epc_page(), GP)
        }),
        ("SECINFO byte 8 (reserved)", |m, _| {
            (ecreate_with_secinfo(m, &secinfo_raw(0, Some((8, 1)))), m.epc_page(), GP)
        }),
        ("SECINFO byte 63 (reserved)", |m, _| {
            (ecreate_with_secinfo(m, &secinfo_raw(0, Some((63, 1)))), m.epc_page(), GP)
        }),
        ("SECINFO PT_TCS", |m, _| {
            (ecreate_with_secinfo(m, &secinfo_raw(si(PageType::Tcs, 0), None)), m.epc_page(), GP)
        }),
        ("SECINFO PT_REG", |m, _| {
            (ecreate_with_secinfo(m, &secinfo_raw(si(PageType::Reg, R), None)), m.epc_page(), GP)
        }),
        ("SECINFO PT_VA", |m, _| (ecreate_with_secinfo(m, &secinfo_raw(si(PageType::Va, 0), None)), m.epc_page(), GP)),
        ("SECINFO PT_TRIM", |m, _| {
            (ecreate_with_secinfo(m, &secinfo_raw(si(PageType::Trim, 0), None)), m.epc_page(), GP)
        }),
        ("SECINFO PT 5 (shadow stack, not modelled)", |m, _| {
            (ecreate_with_secinfo(m, &secinfo_raw(5 << 8, None)), m.epc_page(), GP)
        }),
        // Only bits 7:6, 63:16 and bytes 8–63 are reserved (§1.6): RWX and the SGX2 state bits
        // are not ECREATE's business.
        ("SECINFO PT_SECS with R|W|X|PENDING|MODIFIED|PR", |m, _| {
            (ecreate_with_secinfo(m, &secinfo_raw(si(PageType::Secs, 0x3F), None)), m.epc_page(), Done)
        }),
        // Step 3.
        ("target already a valid SECS", |m, fx| (ecreate_std(m), fx.used, epcm(fx.used))),
        // Step 4 copies the source only now.
        ("SRCPGE unmapped", |m, _| {
            (ecreate_with_pageinfo(m, |pi| pi.srcpge = UNMAPPED), m.epc_page(), PagingPf(UNMAPPED))
        }),
        // Order.
        ("order: align(RBX) before epc(RCX)", |m, fx| {
            let pi = Pageinfo {
                linaddr: 0,
                srcpge: m.put_bytes(good_secs().bytes(), 4096),
                secinfo_or_pcmd: m.put(&secs_secinfo()),
                secs: 0,
            };
            (put_at(m, pi.bytes(), 32, 8), fx.ram, GP)
        }),
        ("order: align(RCX) before epc(RCX)", |m, fx| (ecreate_std(m), fx.ram + 0x10, GP)),
        ("order: epc(RCX) (1) before PAGEINFO.LINADDR (2)", |m, fx| {
            (ecreate_with_pageinfo(m, |pi| pi.linaddr = BASE), fx.ram, not_epc(fx.ram))
        }),
        ("order: epc(RCX) (1) before reading PAGEINFO (2)", |_, fx| (UNMAPPED, fx.ram, not_epc(fx.ram))),
        ("order: epc(RCX) (1) before align(SRCPGE) (2)", |m, fx| {
            (ecreate_with_pageinfo(m, |pi| pi.srcpge += 0x10), fx.ram, not_epc(fx.ram))
        }),
        ("order: PAGEINFO.SECS (2) before EPCM(RCX) (3)", |m, fx| {
            (ecreate_with_pageinfo(m, |pi| pi.secs = 0x1000), fx.used, GP)
        }),
        ("order: SECINFO PT (2) before EPCM(RCX) (3)", |m, fx| {
            (ecreate_with_secinfo(m, &secinfo_raw(si(PageType::Reg, R), None)), fx.used, GP)
        }),
        ("order: EPCM(RCX) (3) before the SECS checks (4)", |m, fx| {
            let mut bad = good_secs();
            bad.attributes.flags |= INIT;
            bad.size = 3;
            (ecreate_ops(m, bad.bytes(), secs_secinfo().bytes(), |_| {}), fx.used, epcm(fx.used))
        }),
        ("order: EPCM(RCX) (3) before copying SRCPGE (4)", |m, fx| {
            (ecreate_with_pageinfo(m, |pi| pi.srcpge = UNMAPPED), fx.used, epcm(fx.used))
        }),
    ];
    for &(name, case) in cases {
        let (rbx, rcx, want) = case(&mut m, &fx);
        run(&mut m, &format!("ECREATE: {name}"), Encls::Ecreate, rbx, rcx, 0, want);
        m.os.reset_scratch();
    }

    // Step 3: a busy target is #GP, before its EPCM entry is looked at.
    let free = m.epc_page();
    let rbx = ecreate_std(&mut m);
    busy(&mut m, free, |m| run(m, "ECREATE: target busy", Encls::Ecreate, rbx, free, 0, GP));
    run(&mut m, "ECREATE once the target is released", Encls::Ecreate, rbx, free, 0, Done);
    let rbx = ecreate_std(&mut m);
    busy(&mut m, used, |m| run(m, "ECREATE: order: busy before EPCM(RCX).VALID", Encls::Ecreate, rbx, used, 0, GP));
}

/// SHA-256 initial hash value (FIPS 180-4 §5.3.3).
const SHA256_IV: [u32; 8] =
    [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

/// §6.1 step 5: what a successful ECREATE leaves behind, observed through other leaves and (for
/// the hidden fields, MODEL CHOICE §1.3) through the EPC page itself.
#[test]
fn ecreate_success_effects() {
    let mut m = machine();
    let mut secs = good_secs();
    secs.attributes.flags |= KSS;
    secs.miscselect = 1;
    secs.configid = [0x42; 64];
    secs.configsvn = 9;
    secs.mrenclave = [0xAA; 32];
    secs.mrsigner = [0xBB; 32];
    secs.isvprodid = 0xCCCC;
    secs.isvsvn = 0xDDDD;
    let a = ecreate(&mut m, &secs); // `run` checked: RAX and RFLAGS unchanged (§11).
    // The second SECS is created with R|W|X in its SECINFO (not reserved, §1.6): EPCM RWX is 0 anyway.
    let b = m.epc_page();
    let rbx = ecreate_with_secinfo(&mut m, Secinfo::from_raw_flags(si(PageType::Secs, R | W | X)).bytes());
    run(&mut m, "ECREATE with SECINFO R|W|X", Encls::Ecreate, rbx, b, 0, Done);
    assert_eq!(snapshot(&m, b).0.rwx(), 0, "EPCM RWX 0");

    let (e, page) = snapshot(&m, a);
    assert!(e.valid() && e.page_type() == PageType::Secs, "EPCM ← VALID, PT_SECS");
    assert_eq!((e.rwx(), e.enclave_address()), (0, 0), "EPCM: RWX 0, ENCLAVEADDRESS 0");
    assert!(!e.blocked() && !e.pending() && !e.modified() && !e.pr(), "EPCM: BLOCKED = PENDING = MODIFIED = PR = 0");
    // The visible fields the SECS source supplied.
    assert_eq!(&page[0..48], &secs.bytes()[0..48], "SIZE, BASEADDR, SSAFRAMESIZE, MISCSELECT copied");
    assert_eq!(&page[48..64], &secs.bytes()[48..64], "ATTRIBUTES copied (INIT = 0: uninitialized)");
    assert_eq!(&page[192..256], &secs.bytes()[192..256], "CONFIGID copied");
    assert_eq!(&page[260..262], &secs.bytes()[260..262], "CONFIGSVN copied");
    // MRENCLAVE = SHA-256 state after the ECREATE block (§3.1), as big-endian words (MODEL CHOICE §1.3).
    let mut state = SHA256_IV;
    sha2::block_api::compress256(&mut state, &[ecreate_block(secs.ssaframesize, secs.size)]);
    let expected: Vec<u8> = state.iter().flat_map(|w| w.to_be_bytes()).collect();
    assert_eq!(&page[64..96], &expected[..], "MRENCLAVE: running state after the ECREATE block");
    assert_eq!(u64_at(&page[..], SecsHidden::MEASUREMENT_BLOCKS), 1, "one block measured");
    assert_eq!(&page[128..160], &[0u8; 32], "MRSIGNER zeroed (model)");
    assert_eq!(&page[256..260], &[0u8; 4], "ISVPRODID = ISVSVN = 0");
    // Hidden state (§1.3 MODEL CHOICE offsets).
    let (_, page_b) = snapshot(&m, b);
    let eid = u64_at(&page[..], SecsHidden::EID);
    assert_ne!(eid, 0);
    assert_eq!(u64_at(&page_b[..], SecsHidden::EID), eid + 1, "EID ← CR_NEXT_EID++");
    assert_eq!(u64_at(&page[..], SecsHidden::VIRTCHILDCNT), 0, "VIRTCHILDCNT ← 0");
    assert_eq!(u64_at(&page[..], SecsHidden::ENCLAVECONTEXT), a, "ENCLAVECONTEXT ← the SECS physical address");
    assert_eq!(u64_at(&page_b[..], SecsHidden::ENCLAVECONTEXT), b);
    for off in [SecsHidden::TRK_EPOCH, SecsHidden::TRK_CUR, SecsHidden::TRK_PREV] {
        assert_eq!(u64_at(&page[..], off), 0, "TRK_EPOCH = TRK_CUR = TRK_PREV = 0");
    }
    assert!(page[SecsHidden::ISVFAMILYID..SecsHidden::PADDING + 352].iter().all(|&b| b == 0), "no EINIT state yet");

    // Observable through other leaves.
    assert_eq!(m.read(a, 64), vec![0xFF; 64], "non-enclave reads of the SECS return all-ones (§2)");
    let rbx = ecreate_std(&mut m);
    run(&mut m, "ECREATE into the new SECS", Encls::Ecreate, rbx, a, 0, epcm(a));
    run(&mut m, "EDBGRD of the SECS (§6.6)", Encls::Edbgrd, 0, a, 0, epcm(a));
    run(&mut m, "EREMOVE of the childless SECS (§6.5)", Encls::Eremove, 0, a, 0, OK);
    run(&mut m, "ECREATE into the freed page", Encls::Ecreate, rbx, a, 0, Done);
}

// ---------------------------------------------------------------------------------------------
// EADD (§6.2)
// ---------------------------------------------------------------------------------------------

/// An EADD about to be issued.
struct EaddOp {
    /// PAGEINFO as it will be written (SRCPGE/SECINFO filled in from the fields below unless set).
    pi: Pageinfo,
    flags: u64,
    /// Overrides the SECINFO bytes.
    secinfo: Option<Vec<u8>>,
    content: Box<[u8; 4096]>,
    rcx: u64,
    /// Misalignment of PAGEINFO / SRCPGE / SECINFO from their required boundaries.
    mis: (u64, u64, u64),
    /// SRCPGE replaced by this address.
    srcpge: Option<u64>,
}

struct EaddFx {
    secs: u64,
    /// A REG child of `secs` at BASE.
    child: u64,
    va: u64,
    free: u64,
    ram: u64,
}

impl EaddOp {
    fn new(m: &mut Machine, secs: u64) -> Self {
        Self {
            pi: Pageinfo { linaddr: BASE + 0x1000, srcpge: 0, secinfo_or_pcmd: 0, secs },
            flags: si(PageType::Reg, R | W),
            secinfo: None,
            content: Box::new([0x42; 4096]),
            rcx: m.epc_page(),
            mis: (0, 0, 0),
            srcpge: None,
        }
    }

    /// Stages the operands; returns RBX.
    fn stage(&self, m: &mut Machine) -> u64 {
        let mut pi = self.pi;
        pi.srcpge = match self.srcpge {
            Some(a) => a,
            None => put_at(m, &self.content[..], 4096, self.mis.1),
        };
        let secinfo = self.secinfo.clone().unwrap_or_else(|| secinfo_raw(self.flags, None));
        pi.secinfo_or_pcmd = put_at(m, &secinfo, 64, self.mis.2);
        put_at(m, pi.bytes(), 32, self.mis.0)
    }
}

type EaddCase = (&'static str, fn(&mut Machine, &EaddFx, &mut EaddOp) -> Expect);

fn eadd_fixture(secs: &Secs) -> (Machine, EaddFx) {
    let mut m = machine();
    let secs_epc = ecreate(&mut m, secs);
    let child = eadd(&mut m, secs_epc, secs.baseaddr, si(PageType::Reg, R | W), &[0; 4096]);
    let va = epa(&mut m);
    let free = m.epc_page();
    let ram = ram_page(&mut m);
    (m, EaddFx { secs: secs_epc, child, va, free, ram })
}

fn eadd_table(m: &mut Machine, fx: &EaddFx, cases: &[EaddCase]) {
    for &(name, case) in cases {
        let mut op = EaddOp::new(m, fx.secs);
        let want = case(m, fx, &mut op);
        let rbx = op.stage(m);
        run(m, &format!("EADD: {name}"), Encls::Eadd, rbx, op.rcx, 0, want);
        m.os.reset_scratch();
    }
}

fn tcs_with(f: fn(&mut Tcs)) -> Tcs {
    let mut t = std_tcs();
    f(&mut t);
    t
}

/// §6.2 steps 1–6 on a 64-bit enclave, then the check order.
#[test]
fn eadd_checks() {
    let (mut m, fx) = eadd_fixture(&good_secs());
    let cases: &[EaddCase] = &[
        ("a REG page (reference)", |_, _, _| Done),
        // Step 1.
        ("RBX (PAGEINFO) 16 bytes off a 32-byte boundary", |_, _, op| {
            op.mis.0 = 16;
            GP
        }),
        ("RCX not 4 KiB aligned", |_, _, op| {
            op.rcx += 0x100;
            GP
        }),
        ("RCX is ordinary RAM", |_, fx, op| {
            op.rcx = fx.ram;
            not_epc(fx.ram)
        }),
        ("RCX unmapped", |_, _, op| {
            op.rcx = UNMAPPED;
            PagingPf(UNMAPPED)
        }),
        // Step 2.
        ("SRCPGE not 4 KiB aligned", |_, _, op| {
            op.mis.1 = 0x800;
            GP
        }),
        ("PAGEINFO.SECS not 4 KiB aligned", |_, fx, op| {
            op.pi.secs = fx.secs + 0x40;
            GP
        }),
        ("SECINFO 32 bytes off a 64-byte boundary", |_, _, op| {
            op.mis.2 = 32;
            GP
        }),
        ("LINADDR not 4 KiB aligned", |_, _, op| {
            op.pi.linaddr += 0x10;
            GP
        }),
        ("PAGEINFO.SECS is ordinary RAM", |_, fx, op| {
            op.pi.secs = fx.ram;
            not_epc(fx.ram)
        }),
        ("PAGEINFO.SECS unmapped", |_, _, op| {
            op.pi.secs = UNMAPPED;
            PagingPf(UNMAPPED)
        }),
        // Step 3.
        ("SECINFO.FLAGS bit 6", |_, _, op| {
            op.flags |= 1 << 6;
            GP
        }),
        ("SECINFO.FLAGS bit 7", |_, _, op| {
            op.flags |= 1 << 7;
            GP
        }),
        ("SECINFO.FLAGS bit 16", |_, _, op| {
            op.flags |= 1 << 16;
            GP
        }),
        ("SECINFO.FLAGS bit 63", |_, _, op| {
            op.flags |= 1 << 63;
            GP
        }),
        ("SECINFO byte 8", |_, _, op| {
            op.secinfo = Some(secinfo_raw(op.flags, Some((8, 1))));
            GP
        }),
        ("SECINFO byte 63", |_, _, op| {
            op.secinfo = Some(secinfo_raw(op.flags, Some((63, 0x80))));
            GP
        }),
        ("SECINFO PT_SECS", |_, _, op| {
            op.flags = si(PageType::Secs, 0);
            GP
        }),
        ("SECINFO PT_VA", |_, _, op| {
            op.flags = si(PageType::Va, 0);
            GP
        }),
        ("SECINFO PT_TRIM", |_, _, op| {
            op.flags = si(PageType::Trim, 0);
            GP
        }),
        ("SECINFO PT 5", |_, _, op| {
            op.flags = 5 << 8 | R;
            GP
        }),
        ("SECINFO PT 0xFF", |_, _, op| {
            op.flags = 0xFF << 8 | R;
            GP
        }),
        // Step 4.
        ("target already valid", |_, fx, op| {
            op.rcx = fx.child;
            epcm(fx.child)
        }),
        ("target is the SECS", |_, fx, op| {
            op.rcx = fx.secs;
            epcm(fx.secs)
        }),
        ("PAGEINFO.SECS is a free EPC page", |_, fx, op| {
            op.pi.secs = fx.free;
            epcm(fx.free)
        }),
        ("PAGEINFO.SECS is a REG page", |_, fx, op| {
            op.pi.secs = fx.child;
            epcm(fx.child)
        }),
        ("PAGEINFO.SECS is a VA page", |_, fx, op| {
            op.pi.secs = fx.va;
            epcm(fx.va)
        }),
        // Step 5: TCS content.
        ("TCS (reference)", |_, _, op| {
            take_tcs(op, std_tcs());
            Done
        }),
        ("TCS reserved byte 72", |_, _, op| {
            take_tcs(op, tcs_with(|t| t.reserved[0] = 1));
            GP
        }),
        ("TCS reserved byte 1000", |_, _, op| {
            take_tcs(op, tcs_with(|t| t.reserved[1000 - 72] = 0x10));
            GP
        }),
        ("TCS reserved byte 4095", |_, _, op| {
            take_tcs(op, tcs_with(|t| t.reserved[4095 - 72] = 1));
            GP
        }),
        ("TCS in a 64-bit enclave: FSLIMIT/GSLIMIT unchecked", |_, _, op| {
            take_tcs(
                op,
                tcs_with(|t| {
                    t.fslimit = 0;
                    t.gslimit = 0x1234;
                }),
            );
            Done
        }),
        ("TCS with FLAGS, CSSA ≥ NSSA, STATE, AEP set (EADD does not check them)", |_, _, op| {
            take_tcs(
                op,
                tcs_with(|t| {
                    t.state = 1;
                    t.flags = !0;
                    t.cssa = 5;
                    t.aep = 0xDEAD;
                }),
            );
            Done
        }),
        ("TCS SECINFO with R|W|X (cleared, not checked)", |_, _, op| {
            take_tcs(op, std_tcs());
            op.flags = si(PageType::Tcs, R | W | X);
            Done
        }),
        ("TCS SECINFO with W only (the W-without-R rule is for REG)", |_, _, op| {
            take_tcs(op, std_tcs());
            op.flags = si(PageType::Tcs, W);
            Done
        }),
        // Step 5: REG permissions.
        ("REG W without R", |_, _, op| {
            op.flags = si(PageType::Reg, W);
            GP
        }),
        ("REG W|X without R", |_, _, op| {
            op.flags = si(PageType::Reg, W | X);
            GP
        }),
        ("REG X only", |_, _, op| {
            op.flags = si(PageType::Reg, X);
            Done
        }),
        ("REG no permissions", |_, _, op| {
            op.flags = si(PageType::Reg, 0);
            Done
        }),
        ("REG R|W|X", |_, _, op| {
            op.flags = si(PageType::Reg, R | W | X);
            Done
        }),
        ("REG with PENDING|MODIFIED|PR (not reserved, §1.6)", |_, _, op| {
            op.flags = si(PageType::Reg, R | PENDING | MODIFIED | PR);
            Done
        }),
        // Step 6: LINADDR ∈ ELRANGE = [BASE, BASE + SIZE).
        ("LINADDR one page below BASEADDR", |_, _, op| {
            op.pi.linaddr = BASE - 0x1000;
            GP
        }),
        ("LINADDR = BASEADDR + SIZE", |_, _, op| {
            op.pi.linaddr = BASE + SIZE;
            GP
        }),
        ("LINADDR 0", |_, _, op| {
            op.pi.linaddr = 0;
            GP
        }),
        ("LINADDR = BASEADDR + SIZE − 4096", |_, _, op| {
            op.pi.linaddr = BASE + SIZE - 0x1000;
            Done
        }),
        ("LINADDR = BASEADDR (a second page at the same address is not checked)", |_, _, op| {
            op.pi.linaddr = BASE;
            Done
        }),
        // Order.
        ("order: align(RBX) before epc(RCX)", |_, fx, op| {
            op.mis.0 = 8;
            op.rcx = fx.ram;
            GP
        }),
        ("order: epc(RCX) (1) before align(SRCPGE) (2)", |_, fx, op| {
            op.mis.1 = 0x10;
            op.rcx = fx.ram;
            not_epc(fx.ram)
        }),
        ("order: epc(RCX) (1) before reading PAGEINFO (2)", |_, fx, op| {
            op.rcx = fx.ram;
            op.mis.0 = 0;
            op.pi.secs = UNMAPPED;
            not_epc(fx.ram)
        }),
        ("order: align(LINADDR) before epc(SECS)", |_, fx, op| {
            op.pi.linaddr += 0x800;
            op.pi.secs = fx.ram;
            GP
        }),
        ("order: epc(SECS) (2) before SECINFO (3)", |_, fx, op| {
            op.pi.secs = fx.ram;
            op.flags = si(PageType::Va, 0);
            not_epc(fx.ram)
        }),
        ("order: SECINFO (3) before EPCM(RCX) (4)", |_, fx, op| {
            op.rcx = fx.child;
            op.flags = si(PageType::Va, 0);
            GP
        }),
        ("order: EPCM(RCX) before EPCM(SECS)", |_, fx, op| {
            op.rcx = fx.child;
            op.pi.secs = fx.free;
            epcm(fx.child)
        }),
        ("order: EPCM(RCX) (4) before REG W-without-R (5)", |_, fx, op| {
            op.rcx = fx.child;
            op.flags = si(PageType::Reg, W);
            epcm(fx.child)
        }),
        ("order: EPCM(SECS) (4) before TCS reserved bytes (5)", |_, fx, op| {
            take_tcs(op, tcs_with(|t| t.reserved[0] = 1));
            op.pi.secs = fx.free;
            epcm(fx.free)
        }),
        ("order: EPCM(SECS) (4) before ELRANGE (6)", |_, fx, op| {
            op.pi.secs = fx.free;
            op.pi.linaddr = 0;
            epcm(fx.free)
        }),
        ("order: EPCM(SECS) (4) before reading SRCPGE (5)", |_, fx, op| {
            op.pi.secs = fx.free;
            op.srcpge = Some(UNMAPPED);
            epcm(fx.free)
        }),
        ("SRCPGE unmapped (copied in step 5)", |_, _, op| {
            op.srcpge = Some(UNMAPPED);
            PagingPf(UNMAPPED)
        }),
    ];
    eadd_table(&mut m, &fx, cases);

    // Step 4: busy target or SECS → #GP, before their EPCM entries are looked at.
    let mut op = EaddOp::new(&mut m, fx.secs);
    let rbx = op.stage(&mut m);
    busy(&mut m, op.rcx, |m| run(m, "EADD: target busy", Encls::Eadd, rbx, op.rcx, 0, GP));
    busy(&mut m, fx.secs, |m| run(m, "EADD: SECS busy", Encls::Eadd, rbx, op.rcx, 0, GP));
    run(&mut m, "EADD once both are released", Encls::Eadd, rbx, op.rcx, 0, Done);
    let rbx = op.stage(&mut m);
    busy(&mut m, op.rcx, |m| {
        run(m, "EADD: order: target busy before EPCM(RCX).VALID", Encls::Eadd, rbx, op.rcx, 0, GP)
    });
    op.rcx = m.epc_page();
    op.pi.secs = fx.free;
    let rbx = op.stage(&mut m);
    busy(&mut m, fx.free, |m| run(m, "EADD: order: SECS busy before EPCM(SECS)", Encls::Eadd, rbx, op.rcx, 0, GP));
}

fn take_tcs(op: &mut EaddOp, tcs: Tcs) {
    op.flags = si(PageType::Tcs, 0);
    op.content = tcs_bytes(&tcs);
}

/// §6.2 step 5, 32-bit enclaves: the low 12 bits of FSLIMIT and GSLIMIT must be 0xFFF (§1.4).
#[test]
fn eadd_tcs_limits_in_32bit_enclaves() {
    let mut secs = good_secs();
    secs.attributes.flags = DEBUG;
    secs.baseaddr = 0x8000_0000;
    let (mut m, fx) = eadd_fixture(&secs);
    let cases: &[EaddCase] = &[
        ("FSLIMIT = GSLIMIT = 0xFFF", |_, _, op| {
            take_tcs(op, std_tcs());
            Done
        }),
        ("FSLIMIT 0x1FFF, GSLIMIT 0xFFFF_FFFF", |_, _, op| {
            take_tcs(
                op,
                tcs_with(|t| {
                    t.fslimit = 0x1FFF;
                    t.gslimit = 0xFFFF_FFFF;
                }),
            );
            Done
        }),
        ("FSLIMIT 0", |_, _, op| {
            take_tcs(op, tcs_with(|t| t.fslimit = 0));
            GP
        }),
        ("FSLIMIT 0xFFE", |_, _, op| {
            take_tcs(op, tcs_with(|t| t.fslimit = 0xFFE));
            GP
        }),
        ("FSLIMIT 0x1000", |_, _, op| {
            take_tcs(op, tcs_with(|t| t.fslimit = 0x1000));
            GP
        }),
        ("GSLIMIT 0x7FF", |_, _, op| {
            take_tcs(op, tcs_with(|t| t.gslimit = 0x7FF));
            GP
        }),
    ];
    for &(name, case) in cases {
        let mut op = EaddOp::new(&mut m, fx.secs);
        op.pi.linaddr = secs.baseaddr + 0x1000;
        let want = case(&mut m, &fx, &mut op);
        let rbx = op.stage(&mut m);
        run(&mut m, &format!("EADD (32-bit enclave): {name}"), Encls::Eadd, rbx, op.rcx, 0, want);
        m.os.reset_scratch();
    }
}

/// §6.2 step 6: no EADD into an initialized enclave.
#[test]
fn eadd_into_an_initialized_enclave() {
    let mut m = machine();
    let e = m.enclave(&EnclaveSpec::default());
    let rcx = m.epc_page();
    let rbx = eadd_ops(&mut m, e.base + 0x8000, e.secs, si(PageType::Reg, R | W), &[0; 4096]);
    run(&mut m, "EADD into an initialized enclave", Encls::Eadd, rbx, rcx, 0, GP);
    let rbx = eadd_ops(&mut m, e.base + 0x8000, e.secs, si(PageType::Reg, W), &[0; 4096]);
    run(&mut m, "EADD into an initialized enclave, W without R", Encls::Eadd, rbx, rcx, 0, GP);
    let rbx = eadd_ops(&mut m, e.base + 0x8000, e.secs, si(PageType::Reg, R), &[0; 4096]);
    run(
        &mut m,
        "EADD: order: EPCM(RCX) (4) before SECS initialized (6)",
        Encls::Eadd,
        rbx,
        e.epc(0),
        0,
        epcm(e.epc(0)),
    );
}

/// §6.2 steps 7–9 and §3.1/§13.16: the TCS is stored with STATE, DBGOPTIN, CSSA and AEP cleared and
/// measured with R = W = X = 0; EEXTEND hashes that EPC copy; the EPCM gets the SECINFO's RWX (0
/// for a TCS) and nothing else; the child count grows. The launch with a signature over the
/// reference measurement proves the EADD/EEXTEND blocks.
#[test]
fn eadd_success_effects() {
    let mut m = machine();
    let secs = std_secs(true);
    let mut pages = std_pages();
    // A dirty TCS passed with R|W|X.
    let dirty = tcs_with(|t| {
        t.state = 1;
        t.flags = 0x3; // DBGOPTIN | AEXNOTIFY
        t.nssa = 2;
        t.cssa = 1;
        t.aep = 0xDEAD_BEEF;
    });
    pages[1] =
        Page { offset: 0x1000, flags: si(PageType::Tcs, R | W | X), content: tcs_bytes(&dirty), chunks: all_chunks() };
    // A REG page whose SECINFO carries the SGX2 state bits (measured as given, never in the EPCM).
    pages[0].flags = si(PageType::Reg, R | W | PENDING | MODIFIED | PR);
    // Only some chunks of the code page, out of order.
    pages[2].chunks = vec![0xF00, 0x100, 0x0];
    let b = build(&mut m, &secs, &pages);

    let tcs = b.pages[&0x1000];
    let (e, stored_tcs) = snapshot(&m, tcs);
    assert!(e.valid() && e.page_type() == PageType::Tcs);
    assert_eq!(e.rwx(), 0, "TCS: SECINFO.RWX ← 0");
    assert_eq!(e.enclave_address(), BASE + 0x1000, "ENCLAVEADDRESS = LINADDR");
    assert_eq!(Some(e.secs()), m.platform.epc().page_of(b.secs), "ENCLAVESECS = SECS");
    assert_eq!(&stored_tcs[..], &stored(&pages[1])[..], "STATE, DBGOPTIN, CSSA, AEP cleared; the rest as given");
    let read = |m: &mut Machine, off: u64| run(m, "EDBGRD of the TCS", Encls::Edbgrd, 0, tcs + off, 0, OK).rbx;
    assert_eq!(read(&mut m, 0), 0, "STATE ← 0");
    assert_eq!(read(&mut m, 8), 0x2, "FLAGS.DBGOPTIN ← 0, other FLAGS bits kept");
    assert_eq!(read(&mut m, 24), 2 << 32, "CSSA ← 0, NSSA kept");
    assert_eq!(read(&mut m, 40), 0, "AEP ← 0");
    assert_eq!(read(&mut m, 16), 0x3000, "OSSA kept");

    let (e, _) = snapshot(&m, b.pages[&0]);
    assert_eq!(e.rwx(), R | W, "REG: RWX from SECINFO");
    assert!(!e.pending() && !e.modified() && !e.pr() && !e.blocked(), "other EPCM flags 0");
    assert_eq!((e.block_epoch(), e.mod_epoch()), (None, None), "§7: EADD clears the epochs");
    run(&mut m, "EDBGRD of the REG page: not PENDING", Encls::Edbgrd, 0, b.pages[&0], 0, OK);

    run(
        &mut m,
        "EREMOVE of the SECS: the children were counted",
        Encls::Eremove,
        0,
        b.secs,
        0,
        code(SgxError::ChildPresent),
    );
    let sig = sign(&body_for(&secs), b.mrenclave);
    launch(&mut m, &b, &sig);
}

// ---------------------------------------------------------------------------------------------
// EEXTEND (§6.3)
// ---------------------------------------------------------------------------------------------

struct EextendFx {
    secs: u64,
    /// REG page of `secs`.
    page: u64,
    /// TCS of `secs`.
    tcs: u64,
    /// Another enclave's SECS and page.
    other_secs: u64,
    other_page: u64,
    va: u64,
    free: u64,
    ram: u64,
    /// A page of an initialized enclave and its SECS, and a PT_TRIM and a PENDING page of it.
    init_secs: u64,
    init_page: u64,
    trim: u64,
    pending: u64,
}

/// §6.3 in order: align(RBX), epc(RBX), align(RCX), epc(RCX), busy, EPCM(RCX), SECS match,
/// initialized.
#[test]
fn eextend_checks() {
    let mut m = machine();
    let e = m.enclave(&EnclaveSpec::default());
    let b = build(&mut m, &good_secs(), &std_pages()[..2]);
    let mut other = good_secs();
    other.baseaddr = BASE + SIZE;
    let o = build(&mut m, &other, &std_pages()[..1]);
    let to_trim = m.put(&Secinfo::new(PageType::Trim, SecinfoFlags::empty()));
    run(&mut m, "EMODT to PT_TRIM (setup)", Encls::Emodt, to_trim, e.epc(layout::READ_ONLY), 0, OK);
    let pending = eaug(&mut m, e.secs, e.base + 0x8000);
    let fx = EextendFx {
        trim: e.epc(layout::READ_ONLY),
        pending,
        secs: b.secs,
        page: b.pages[&0],
        tcs: b.pages[&0x1000],
        other_secs: o.secs,
        other_page: o.pages[&0],
        va: epa(&mut m),
        free: m.epc_page(),
        ram: ram_page(&mut m),
        init_secs: e.secs,
        init_page: e.epc(layout::DATA),
    };
    let cases: &[OperandCase<EextendFx>] = &[
        ("first chunk of a REG page", |_, fx| (fx.secs, fx.page, Done)),
        ("last chunk of a REG page", |_, fx| (fx.secs, fx.page + 0xF00, Done)),
        ("a chunk of a TCS", |_, fx| (fx.secs, fx.tcs + 0x100, Done)),
        ("RBX not 4 KiB aligned", |_, fx| (fx.secs + 0x100, fx.page, GP)),
        ("RBX is ordinary RAM", |_, fx| (fx.ram, fx.page, not_epc(fx.ram))),
        ("RBX unmapped", |_, fx| (UNMAPPED, fx.page, PagingPf(UNMAPPED))),
        ("RCX 0x80 off a 256-byte boundary", |_, fx| (fx.secs, fx.page + 0x80, GP)),
        ("RCX 8 off a 256-byte boundary", |_, fx| (fx.secs, fx.page + 0x108, GP)),
        ("RCX is ordinary RAM", |_, fx| (fx.secs, fx.ram + 0x200, not_epc(fx.ram + 0x200))),
        ("RCX unmapped", |_, fx| (fx.secs, UNMAPPED + 0x100, PagingPf(UNMAPPED + 0x100))),
        ("RCX in a free EPC page: CR2 = RCX", |_, fx| (fx.secs, fx.free + 0x300, epcm(fx.free + 0x300))),
        ("RCX in the SECS", |_, fx| (fx.secs, fx.secs + 0x100, epcm(fx.secs + 0x100))),
        ("RCX in a VA page", |_, fx| (fx.secs, fx.va, epcm(fx.va))),
        ("RCX in a PT_TRIM page", |_, fx| (fx.init_secs, fx.trim + 0x100, epcm(fx.trim + 0x100))),
        ("a PENDING REG page is PT_REG: initialized → #GP", |_, fx| (fx.init_secs, fx.pending, GP)),
        ("RBX is another enclave's SECS", |_, fx| (fx.other_secs, fx.page, GP)),
        ("RBX is the page itself", |_, fx| (fx.page, fx.page, GP)),
        ("RBX is a free EPC page", |_, fx| (fx.free, fx.page, GP)),
        ("RBX is a VA page", |_, fx| (fx.va, fx.page, GP)),
        ("the other enclave's page with its own SECS", |_, fx| (fx.other_secs, fx.other_page + 0x200, Done)),
        ("the enclave is initialized", |_, fx| (fx.init_secs, fx.init_page, GP)),
        // Order.
        ("order: align(RBX) before epc(RBX)", |_, fx| (fx.ram + 0x10, fx.page, GP)),
        ("order: epc(RBX) before align(RCX)", |_, fx| (fx.ram, fx.page + 0x10, not_epc(fx.ram))),
        ("order: align(RCX) before epc(RCX)", |_, fx| (fx.secs, fx.ram + 0x10, GP)),
        ("order: epc(RBX) before epc(RCX)", |_, fx| (UNMAPPED, fx.ram, PagingPf(UNMAPPED))),
        ("order: EPCM(RCX) before the SECS match", |_, fx| (fx.other_secs, fx.free, epcm(fx.free))),
        ("order: EPCM(RCX) before initialized", |_, fx| (fx.init_secs, fx.free, epcm(fx.free))),
        ("order: SECS match before initialized", |_, fx| (fx.init_secs, fx.page, GP)),
    ];
    for &(name, case) in cases {
        let (rbx, rcx, want) = case(&mut m, &fx);
        run(&mut m, &format!("EEXTEND: {name}"), Encls::Eextend, rbx, rcx, 0, want);
    }
    busy(&mut m, fx.page, |m| run(m, "EEXTEND: page busy", Encls::Eextend, fx.secs, fx.page, 0, GP));
    busy(&mut m, fx.secs, |m| run(m, "EEXTEND: SECS busy", Encls::Eextend, fx.secs, fx.page, 0, GP));
    busy(&mut m, fx.free, |m| run(m, "EEXTEND: order: busy before EPCM(RCX)", Encls::Eextend, fx.secs, fx.free, 0, GP));
}

// ---------------------------------------------------------------------------------------------
// EINIT (§4.2)
// ---------------------------------------------------------------------------------------------

/// A standard non-debug enclave, built and signed, with the hash MSRs set to its MRSIGNER.
struct EinitFx {
    m: Machine,
    b: Built,
    sig: Sigstruct,
    ram: u64,
}

fn einit_fixture(sig: &Sigstruct) -> EinitFx {
    let mut m = machine();
    let b = build(&mut m, &std_secs(false), &std_pages());
    set_lehash(&mut m, &mrsigner_of(sig));
    let ram = ram_page(&mut m);
    EinitFx { m, b, sig: sig.clone(), ram }
}

/// A SIGSTRUCT with `edit` applied to its bytes.
fn edited(sig: &Sigstruct, edit: impl FnOnce(&mut [u8])) -> Sigstruct {
    let mut bytes = sig.bytes().to_vec();
    edit(&mut bytes);
    Sigstruct::from_bytes(&bytes).expect("1808 bytes")
}

type SigEdit = fn(&mut [u8]);

/// §4.2 steps 4 and 6: each SIGSTRUCT structure rule (RAX = 1) and the signature (RAX = 8); every
/// failed EINIT leaves the SECS uninitialized, so the correct SIGSTRUCT still launches it.
#[test]
fn einit_sigstruct_checks() {
    let secs = std_secs(false);
    let good = sign(&body_for(&secs), reference_mrenclave(&secs, &std_pages()));
    let mut fx = einit_fixture(&good);
    let sig_struct = code(SgxError::InvalidSigStruct);
    let bad_sig = code(SgxError::InvalidSignature);
    let cases: &[(&str, SigEdit, Expect)] = &[
        // Step 4: HEADER, VENDOR, HEADER2, EXPONENT, reserved bytes (§1.9).
        ("HEADER byte 0", |s| s[0] ^= 1, sig_struct),
        ("HEADER byte 4 (0xE1)", |s| s[4] = 0xE0, sig_struct),
        ("HEADER bytes 12–15: the SDK's 'type' bit 31 (§13.2)", |s| s[15] = 0x80, sig_struct),
        ("VENDOR 1", |s| s[16] = 1, sig_struct),
        ("VENDOR 0x8087", |s| s[16..20].copy_from_slice(&0x8087u32.to_le_bytes()), sig_struct),
        ("HEADER2 byte 24", |s| s[24] ^= 1, sig_struct),
        ("HEADER2 byte 39", |s| s[39] ^= 1, sig_struct),
        ("EXPONENT 65537", |s| s[512..516].copy_from_slice(&65537u32.to_le_bytes()), sig_struct),
        ("EXPONENT 0", |s| s[512..516].fill(0), sig_struct),
        ("reserved byte 44", |s| s[44] = 1, sig_struct),
        ("reserved byte 127", |s| s[127] = 1, sig_struct),
        ("reserved byte 908 (CET_ATTRIBUTES, reserved in the model)", |s| s[908] = 1, sig_struct),
        ("reserved byte 909 (CET_ATTRIBUTES_MASK)", |s| s[909] = 1, sig_struct),
        ("reserved byte 911", |s| s[911] = 1, sig_struct),
        ("reserved byte 992", |s| s[992] = 1, sig_struct),
        ("reserved byte 1007", |s| s[1007] = 1, sig_struct),
        ("reserved byte 1028", |s| s[1028] = 1, sig_struct),
        ("reserved byte 1039", |s| s[1039] = 1, sig_struct),
        // Step 6: signed bytes changed (§1.9 signed message = [0,128) ‖ [900,1028)) or the RSA
        // values inconsistent (§4.3).
        ("ISVSVN (byte 1026, signed)", |s| s[1026] ^= 1, bad_sig),
        ("DATE (byte 20, signed)", |s| s[20] ^= 1, bad_sig),
        ("SWDEFINED (byte 40, signed, not reserved)", |s| s[40] ^= 1, bad_sig),
        ("ENCLAVEHASH (byte 960)", |s| s[960] ^= 1, bad_sig),
        ("MISCSELECT (byte 900)", |s| s[900] ^= 1, bad_sig),
        ("ATTRIBUTEMASK (byte 944)", |s| s[944] ^= 1, bad_sig),
        ("SIGNATURE byte 600", |s| s[600] ^= 1, bad_sig),
        ("MODULUS byte 200", |s| s[200] ^= 1, bad_sig),
        ("Q1 byte 1100", |s| s[1100] ^= 1, bad_sig),
        ("Q2 byte 1500", |s| s[1500] ^= 1, bad_sig),
        (
            "SIGNATURE = MODULUS (s ≥ n)",
            |s| {
                let n = s[128..512].to_vec();
                s[516..900].copy_from_slice(&n);
            },
            bad_sig,
        ),
        ("VENDOR 0x8086 without re-signing", |s| s[16..20].copy_from_slice(&0x8086u32.to_le_bytes()), bad_sig),
        // Order: step 4 before step 6 (a reserved byte breaks the signature too, §3.6).
        (
            "order: reserved byte and a broken signature",
            |s| {
                s[1028] = 1;
                s[600] ^= 1;
            },
            sig_struct,
        ),
    ];
    for &(name, edit, want) in cases {
        let sig = edited(&fx.sig, edit);
        einit(&mut fx.m, &format!("EINIT: {name}"), &sig, fx.b.secs, &Einittoken::zeroed(), want);
    }
    // VENDOR may be 0x8086 when signed that way.
    let mut body = body_for(&secs);
    body.vendor = 0x8086;
    let intel = sign(&body, fx.b.mrenclave);
    einit(&mut fx.m, "EINIT: VENDOR 0x8086, signed", &intel, fx.b.secs, &Einittoken::zeroed(), OK);
}

/// §4.2 steps 1–3, 5, 7–9: operands, the unmasked-event hook, the SECS page; with the check order.
#[test]
fn einit_operand_checks() {
    let secs = std_secs(false);
    let good = sign(&body_for(&secs), reference_mrenclave(&secs, &std_pages()));
    let broken_header = edited(&good, |s| s[0] ^= 1);
    let broken_sig = edited(&good, |s| s[600] ^= 1);
    let mut fx = einit_fixture(&good);
    let (m, secs_epc, ram) = (&mut fx.m, fx.b.secs, fx.ram);
    let token = Einittoken::zeroed();
    let stage = |m: &mut Machine, sig: &Sigstruct, sig_mis: u64, token_mis: u64| {
        (put_at(m, sig.bytes(), 4096, sig_mis), put_at(m, token.bytes(), 512, token_mis))
    };

    // Step 1: alignment.
    for (what, sig_mis, rcx_mis, token_mis) in [
        ("SIGSTRUCT 2048 bytes off a 4 KiB boundary (§13.17)", 2048, 0, 0),
        ("SIGSTRUCT 512-aligned only", 512, 0, 0),
        ("SIGSTRUCT 8 bytes off", 8, 0, 0),
        ("SECS 0x800 bytes off", 0, 0x800, 0),
        ("token 256 bytes off a 512-byte boundary", 0, 0, 256),
        ("token 64 bytes off", 0, 0, 64),
    ] {
        let (rbx, rdx) = stage(m, &good, sig_mis, token_mis);
        run(m, &format!("EINIT: {what}"), Encls::Einit, rbx, secs_epc + rcx_mis, rdx, GP);
    }
    // Step 2: RCX in EPC.
    let (rbx, rdx) = stage(m, &good, 0, 0);
    run(m, "EINIT: RCX is ordinary RAM", Encls::Einit, rbx, ram, rdx, not_epc(ram));
    run(m, "EINIT: RCX unmapped", Encls::Einit, rbx, UNMAPPED, rdx, PagingPf(UNMAPPED));
    // Step 3: the copies.
    run(m, "EINIT: SIGSTRUCT unmapped", Encls::Einit, UNMAPPED, secs_epc, rdx, PagingPf(UNMAPPED));
    run(m, "EINIT: token unmapped", Encls::Einit, rbx, secs_epc, UNMAPPED, PagingPf(UNMAPPED));
    // Order of steps 1–4.
    let (rbx, rdx) = stage(m, &good, 0, 256);
    run(m, "EINIT: order: align(RDX) (1) before epc(RCX) (2)", Encls::Einit, rbx, ram, rdx, GP);
    let (rbx, rdx) = stage(m, &broken_header, 0, 0);
    run(m, "EINIT: order: epc(RCX) (2) before the structure (4)", Encls::Einit, rbx, ram, rdx, not_epc(ram));
    run(
        m,
        "EINIT: order: copying the token (3) before the structure (4)",
        Encls::Einit,
        rbx,
        secs_epc,
        UNMAPPED,
        PagingPf(UNMAPPED),
    );

    // Step 5: SGX_UNMASKED_EVENT, only when the hook fires (§13.24); between steps 4 and 6.
    m.platform.inject_unmasked_events(1);
    einit(
        m,
        "EINIT: order: structure (4) before the unmasked event (5)",
        &broken_header,
        secs_epc,
        &token,
        code(SgxError::InvalidSigStruct),
    );
    m.platform.inject_unmasked_events(1);
    einit(m, "EINIT: pending unmasked event", &broken_sig, secs_epc, &token, code(SgxError::UnmaskedEvent));
    m.platform.inject_unmasked_events(1);
    einit(m, "EINIT: pending unmasked event", &good, secs_epc, &token, code(SgxError::UnmaskedEvent));
    m.platform.inject_unmasked_events(0);

    // Step 7: SECS busy → #GP, after the signature check.
    let (rbx, rdx) = stage(m, &good, 0, 0);
    busy(m, secs_epc, |m| run(m, "EINIT: SECS busy", Encls::Einit, rbx, secs_epc, rdx, GP));
    let (rbx, rdx) = stage(m, &broken_sig, 0, 0);
    busy(m, secs_epc, |m| {
        run(
            m,
            "EINIT: order: signature (6) before SECS busy (7)",
            Encls::Einit,
            rbx,
            secs_epc,
            rdx,
            code(SgxError::InvalidSignature),
        )
    });
    // Step 8: EPCM(RCX) must be a valid PT_SECS.
    let free = m.epc_page();
    let va = epa(m);
    let reg = fx.b.pages[&0];
    let tcs = fx.b.pages[&0x1000];
    for (what, rcx) in [("a free EPC page", free), ("a VA page", va), ("a REG page", reg), ("a TCS", tcs)] {
        einit(m, &format!("EINIT: RCX is {what}"), &good, rcx, &token, epcm(rcx));
    }
    einit(
        m,
        "EINIT: order: signature (6) before EPCM(RCX) (8) (§10.2)",
        &broken_sig,
        free,
        &token,
        code(SgxError::InvalidSignature),
    );
    einit(
        m,
        "EINIT: order: structure (4) before EPCM(RCX) (8)",
        &broken_header,
        free,
        &token,
        code(SgxError::InvalidSigStruct),
    );
    let (rbx, rdx) = stage(m, &good, 0, 0);
    busy(m, free, |m| run(m, "EINIT: order: busy (7) before EPCM(RCX) (8)", Encls::Einit, rbx, free, rdx, GP));

    // The correct SIGSTRUCT still launches: nothing above committed anything.
    einit(m, "EINIT after all of the above", &good, secs_epc, &token, OK);
    // Step 9: already initialized → #GP, after steps 4–8 and before everything from step 10 on.
    einit(m, "EINIT: SECS already initialized", &good, secs_epc, &token, GP);
    einit(
        m,
        "EINIT: order: signature (6) before initialized (9)",
        &broken_sig,
        secs_epc,
        &token,
        code(SgxError::InvalidSignature),
    );
    let mut wrong = body_for(&secs);
    wrong.isvsvn = 99;
    let wrong_hash = sign(&wrong, [0x77; 32]);
    einit(m, "EINIT: order: initialized (9) before the measurement (11)", &wrong_hash, secs_epc, &token, GP);
    set_lehash(m, &intel_lehash());
    einit(m, "EINIT: order: initialized (9) before the token (15)", &good, secs_epc, &token, GP);
}

/// The driver behaviour §4.4 / §13.24 describe: SimpleOs::einit retries SGX_UNMASKED_EVENT.
#[test]
fn einit_unmasked_event_is_retried_by_the_os() {
    let secs = std_secs(false);
    let good = sign(&body_for(&secs), reference_mrenclave(&secs, &std_pages()));
    let mut fx = einit_fixture(&good);
    fx.m.platform.inject_unmasked_events(3);
    assert_eq!(fx.m.os.einit(fx.b.secs, &good), Ok(LeafStatus::Success));
    einit(&mut fx.m, "EINIT after the retried launch", &good, fx.b.secs, &Einittoken::zeroed(), GP);
}

/// Which LEHASH the executing LP holds for a case.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Le {
    /// MSRs = MRSIGNER of the SIGSTRUCT (Linux under FLC).
    Signer,
    /// MSRs = Intel's reset value.
    Intel,
}

struct IdCase {
    name: &'static str,
    /// The SECS to ECREATE (from `std_secs(false)`).
    secs: fn(&mut Secs),
    /// The SIGSTRUCT body (from `body_for(secs)`).
    body: fn(&mut SigstructBody),
    /// Drop the last EEXTEND of the build (the signature still covers the full reference).
    drop_eextend: bool,
    le: Le,
    want: Expect,
}

impl Default for IdCase {
    fn default() -> Self {
        Self { name: "", secs: |_| {}, body: |_| {}, drop_eextend: false, le: Le::Signer, want: OK }
    }
}

/// §4.2 steps 10–15 with an all-zero token: KSS, measurement, EINITTOKEN_KEY, the attribute and
/// MISCSELECT masks, the launch-control check; with the order between them.
#[test]
fn einit_identity_checks() {
    let attr = code(SgxError::InvalidAttribute);
    let cases = [
        IdCase { name: "reference launch", ..IdCase::default() },
        // Step 10.
        IdCase {
            name: "ISVFAMILYID without SECS.KSS",
            body: |b| b.isvfamilyid = [1; 16],
            want: code(SgxError::InvalidSigStruct),
            ..IdCase::default()
        },
        IdCase {
            name: "ISVFAMILYID with SECS.KSS",
            secs: |s| s.attributes.flags |= KSS,
            body: |b| b.isvfamilyid = [1; 16],
            ..IdCase::default()
        },
        IdCase {
            name: "ISVEXTPRODID without KSS is not checked",
            body: |b| b.isvextprodid = [2; 16],
            ..IdCase::default()
        },
        // Step 11.
        IdCase {
            name: "MRENCLAVE ≠ ENCLAVEHASH (one EEXTEND dropped)",
            drop_eextend: true,
            want: code(SgxError::InvalidMeasurement),
            ..IdCase::default()
        },
        // Step 12.
        IdCase {
            name: "EINITTOKEN_KEY with MRSIGNER ≠ LEHASH",
            secs: |s| s.attributes.flags |= EINITTOKEN_KEY,
            le: Le::Intel,
            want: attr,
            ..IdCase::default()
        },
        IdCase {
            name: "EINITTOKEN_KEY with MRSIGNER = LEHASH",
            secs: |s| s.attributes.flags |= EINITTOKEN_KEY,
            ..IdCase::default()
        },
        // Step 13: (SECS.ATTR & MASK) = (SIG.ATTR & MASK), FLAGS and XFRM.
        IdCase {
            name: "SECS DEBUG, SIGSTRUCT without DEBUG, DEBUG in the mask",
            secs: |s| s.attributes.flags |= DEBUG,
            body: |b| b.attributes.flags &= !DEBUG,
            want: attr,
            ..IdCase::default()
        },
        IdCase {
            name: "SECS DEBUG, DEBUG outside the mask (§3.6)",
            secs: |s| s.attributes.flags |= DEBUG,
            body: |b| {
                b.attributes.flags &= !DEBUG;
                b.attributemask.flags &= !DEBUG;
            },
            ..IdCase::default()
        },
        IdCase {
            name: "SECS 32-bit, SIGSTRUCT MODE64BIT in the mask (§3.6)",
            secs: |s| {
                s.attributes.flags &= !MODE64;
                s.baseaddr = 0x8000_0000;
            },
            body: |b| b.attributes.flags |= MODE64,
            want: attr,
            ..IdCase::default()
        },
        IdCase {
            name: "SIGSTRUCT expects PROVISIONKEY",
            body: |b| b.attributes.flags |= 1 << 4,
            want: attr,
            ..IdCase::default()
        },
        IdCase {
            name: "SECS XFRM 0x7, SIGSTRUCT 0x3, full mask",
            secs: |s| s.attributes.xfrm = 7,
            body: |b| b.attributes.xfrm = 3,
            want: attr,
            ..IdCase::default()
        },
        IdCase {
            name: "SECS XFRM 0x7, SIGSTRUCT 0x3, XFRM mask 0xFF..FF1B (§3.6)",
            secs: |s| s.attributes.xfrm = 7,
            body: |b| {
                b.attributes.xfrm = 3;
                b.attributemask.xfrm = 0xFFFF_FFFF_FFFF_FF1B;
            },
            ..IdCase::default()
        },
        IdCase {
            name: "SIGSTRUCT XFRM bit 40 expected (high half of the 128-bit compare)",
            body: |b| b.attributes.xfrm |= 1 << 40,
            want: attr,
            ..IdCase::default()
        },
        IdCase {
            name: "masked-out bits may differ anywhere",
            body: |b| {
                b.attributes = Attributes { flags: 0xFFFF_0000_0000_0000 | MODE64, xfrm: 0xFFFF_0000_0000_0003 };
                b.attributemask = Attributes { flags: 0xFFFF, xfrm: 0xFFFF };
            },
            ..IdCase::default()
        },
        // Step 14.
        IdCase {
            name: "SECS MISCSELECT 1, SIGSTRUCT 0, full MISCMASK",
            secs: |s| s.miscselect = 1,
            body: |b| b.miscselect = 0,
            want: attr,
            ..IdCase::default()
        },
        IdCase {
            name: "SECS MISCSELECT 1, SIGSTRUCT 0, MISCMASK 0",
            secs: |s| s.miscselect = 1,
            body: |b| {
                b.miscselect = 0;
                b.miscmask = 0;
            },
            ..IdCase::default()
        },
        // Step 15.
        IdCase {
            name: "zero token, LEHASH = Intel ≠ MRSIGNER",
            le: Le::Intel,
            want: code(SgxError::InvalidEinittoken),
            ..IdCase::default()
        },
        // Order.
        IdCase {
            name: "order: ISVFAMILYID (10) before the measurement (11)",
            body: |b| b.isvfamilyid = [1; 16],
            drop_eextend: true,
            want: code(SgxError::InvalidSigStruct),
            ..IdCase::default()
        },
        IdCase {
            name: "order: measurement (11) before EINITTOKEN_KEY (12)",
            secs: |s| s.attributes.flags |= EINITTOKEN_KEY,
            drop_eextend: true,
            le: Le::Intel,
            want: code(SgxError::InvalidMeasurement),
            ..IdCase::default()
        },
        IdCase {
            name: "order: measurement (11) before the attribute mask (13)",
            secs: |s| s.attributes.flags |= DEBUG,
            body: |b| b.attributes.flags &= !DEBUG,
            drop_eextend: true,
            want: code(SgxError::InvalidMeasurement),
            ..IdCase::default()
        },
        IdCase {
            name: "order: MISCSELECT (14) before the token (15)",
            secs: |s| s.miscselect = 1,
            body: |b| b.miscselect = 0,
            le: Le::Intel,
            want: attr,
            ..IdCase::default()
        },
        IdCase {
            name: "order: attributes (13) before the token (15)",
            body: |b| b.attributes.xfrm = 7,
            le: Le::Intel,
            want: attr,
            ..IdCase::default()
        },
    ];
    for case in &cases {
        let mut m = machine();
        let mut secs = std_secs(false);
        (case.secs)(&mut secs);
        let mut body = body_for(&secs);
        (case.body)(&mut body);
        // The signature always covers the full reference measurement; the build may skip the
        // last EEXTEND.
        let full = reference_mrenclave(&secs, &std_pages());
        let mut pages = std_pages();
        if case.drop_eextend {
            pages.last_mut().expect("pages").chunks.pop();
        }
        let b = build(&mut m, &secs, &pages);
        let sig = sign(&body, full);
        let le = if case.le == Le::Signer { mrsigner_of(&sig) } else { intel_lehash() };
        set_lehash(&mut m, &le);
        einit(&mut m, &format!("EINIT: {}", case.name), &sig, b.secs, &Einittoken::zeroed(), case.want);
    }
}

/// Builds an EINITTOKEN for an enclave: VALID = 1, the given identity, CPUSVNLE = CR_CPUSVN, some
/// LE identity; `edit` runs before the MAC is computed with the EINITTOKEN key (§8.2) for
/// `lehash`; `after` runs after.
fn token(
    m: &Machine,
    attributes: Attributes,
    mrenclave: [u8; 32],
    mrsigner: [u8; 32],
    lehash: &[u8; 32],
    edit: fn(&mut Einittoken),
    after: fn(&mut Einittoken),
) -> Einittoken {
    let platform = m.platform.keys();
    let mut t = Einittoken::zeroed();
    t.valid = 1;
    t.attributes = attributes;
    t.mrenclave = mrenclave;
    t.mrsigner = mrsigner;
    t.cpusvnle = platform.cpusvn;
    t.isvprodidle = 0x20;
    t.isvsvnle = 3;
    t.maskedmiscselectle = 0;
    t.maskedattributesle = Attributes { flags: MODE64, xfrm: 3 };
    t.keyid = [0x4B; 32];
    edit(&mut t);
    t.mac = keys::einittoken_mac(&keys::einittoken_key(&t, lehash, &platform), &t);
    after(&mut t);
    t
}

type TokenEdit = fn(&mut Einittoken);

/// §4.2 steps 15–21: a launch token MACed by the EINITTOKEN key of the LP's LEHASH (Intel's here,
/// ≠ MRSIGNER) launches the enclave; each later check is broken individually (before the MAC is
/// computed, so that only that check fails), then pairwise to show the order.
#[test]
fn einit_token_checks() {
    let secs = std_secs(false);
    let mrenclave = reference_mrenclave(&secs, &std_pages());
    let sig = sign(&body_for(&secs), mrenclave);
    let mrsigner = mrsigner_of(&sig);
    let bad_token = code(SgxError::InvalidEinittoken);
    let nop: TokenEdit = |_| {};
    let cases: &[(&str, TokenEdit, TokenEdit, Expect)] = &[
        ("a valid token", nop, nop, OK),
        (
            "a valid token with MASKEDATTRIBUTESLE ⊇ SECS and other LE fields",
            |t| {
                t.maskedattributesle = Attributes { flags: !DEBUG, xfrm: !0 };
                t.maskedmiscselectle = !0;
                t.isvsvnle = 0xFFFF;
                t.cpusvnle = [0; 16];
            },
            nop,
            OK,
        ),
        (
            "VALID = 0 with garbage elsewhere, MRSIGNER ≠ LEHASH (step 15)",
            |t| {
                t.valid = 0;
                t.reserved0[0] = 1;
            },
            nop,
            bad_token,
        ),
        ("VALID = 2: bit 0 clear, so the token is not checked (step 15)", |t| t.valid = 2, nop, bad_token),
        // Step 16.
        ("MASKEDATTRIBUTESLE.DEBUG for a non-debug enclave", |t| t.maskedattributesle.flags |= DEBUG, nop, bad_token),
        // Step 17.
        ("VALID bit 1", |t| t.valid = 3, nop, bad_token),
        ("VALID bit 31", |t| t.valid = 1 << 31 | 1, nop, bad_token),
        ("reserved byte 4", |t| t.reserved0[0] = 1, nop, bad_token),
        ("reserved byte 47", |t| t.reserved0[43] = 1, nop, bad_token),
        ("reserved byte 96", |t| t.reserved1[0] = 1, nop, bad_token),
        ("reserved byte 127", |t| t.reserved1[31] = 1, nop, bad_token),
        ("reserved byte 160", |t| t.reserved2[0] = 1, nop, bad_token),
        ("reserved byte 191", |t| t.reserved2[31] = 1, nop, bad_token),
        ("reserved byte 212 (outside the MAC)", |t| t.reserved3[0] = 1, nop, bad_token),
        ("reserved byte 235", |t| t.reserved3[23] = 1, nop, bad_token),
        // Step 18 (§8.4: some byte beyond CR_CPUSVN's).
        ("CPUSVNLE byte 0 one above CR_CPUSVN", |t| t.cpusvnle[0] += 1, nop, code(SgxError::InvalidCpusvn)),
        ("CPUSVNLE byte 15 above CR_CPUSVN (0)", |t| t.cpusvnle[15] = 1, nop, code(SgxError::InvalidCpusvn)),
        // Step 19.
        ("MAC bit flipped", nop, |t| t.mac[0] ^= 1, bad_token),
        ("ISVSVNLE changed after MACing", nop, |t| t.isvsvnle += 1, bad_token),
        ("KEYID changed after MACing (outside the MACed bytes, in the key)", nop, |t| t.keyid[0] ^= 1, bad_token),
        ("MASKEDATTRIBUTESLE changed after MACing", nop, |t| t.maskedattributesle.xfrm ^= 4, bad_token),
        ("MASKEDMISCSELECTLE changed after MACing", nop, |t| t.maskedmiscselectle ^= 1, bad_token),
        ("MRENCLAVE changed after MACing", nop, |t| t.mrenclave[0] ^= 1, bad_token),
        // Step 20.
        ("TOKEN.MRENCLAVE wrong", |t| t.mrenclave[31] ^= 1, nop, code(SgxError::InvalidMeasurement)),
        ("TOKEN.MRSIGNER wrong", |t| t.mrsigner[0] ^= 1, nop, code(SgxError::InvalidMeasurement)),
        // Step 21.
        ("TOKEN.ATTRIBUTES with DEBUG", |t| t.attributes.flags |= DEBUG, nop, code(SgxError::InvalidAttribute)),
        ("TOKEN.ATTRIBUTES with INIT", |t| t.attributes.flags |= INIT, nop, code(SgxError::InvalidAttribute)),
        ("TOKEN.ATTRIBUTES.XFRM 7", |t| t.attributes.xfrm = 7, nop, code(SgxError::InvalidAttribute)),
        // Order.
        (
            "order: DEBUG (16) before CPUSVN (18)",
            |t| {
                t.maskedattributesle.flags |= DEBUG;
                t.cpusvnle[15] = 1;
            },
            nop,
            bad_token,
        ),
        (
            "order: reserved (17) before CPUSVN (18)",
            |t| {
                t.reserved1[5] = 1;
                t.cpusvnle[15] = 1;
            },
            nop,
            bad_token,
        ),
        (
            "order: CPUSVN (18) before MAC (19)",
            |t| t.cpusvnle[15] = 1,
            |t| t.mac[3] ^= 1,
            code(SgxError::InvalidCpusvn),
        ),
        ("order: MAC (19) before MRENCLAVE (20)", |t| t.mrenclave[0] ^= 1, |t| t.mac[3] ^= 1, bad_token),
        (
            "order: MRSIGNER (20) before ATTRIBUTES (21)",
            |t| {
                t.mrsigner[1] ^= 1;
                t.attributes.flags |= DEBUG;
            },
            nop,
            code(SgxError::InvalidMeasurement),
        ),
    ];
    for &(name, edit, after, want) in cases {
        let mut m = machine();
        let b = build(&mut m, &secs, &std_pages());
        set_lehash(&mut m, &intel_lehash());
        let le = lehash(&mut m);
        assert_eq!(le, intel_lehash());
        let t = token(&m, secs.attributes, mrenclave, mrsigner, &le, edit, after);
        einit(&mut m, &format!("EINIT: {name}"), &sig, b.secs, &t, want);
    }

    // Step 16 allows DEBUG in MASKEDATTRIBUTESLE for a debug enclave.
    let secs = std_secs(true);
    let mrenclave = reference_mrenclave(&secs, &std_pages());
    let sig = sign(&body_for(&secs), mrenclave);
    let mut m = machine();
    let b = build(&mut m, &secs, &std_pages());
    set_lehash(&mut m, &intel_lehash());
    let t = token(
        &m,
        secs.attributes,
        mrenclave,
        mrsigner_of(&sig),
        &intel_lehash(),
        |t| t.maskedattributesle.flags |= DEBUG,
        |_| {},
    );
    einit(&mut m, "EINIT: MASKEDATTRIBUTESLE.DEBUG for a debug enclave", &sig, b.secs, &t, OK);

    // Step 15 only looks at VALID bit 0: with it clear the rest of the token is ignored, and
    // MRSIGNER = LEHASH launches.
    let mut m = machine();
    let b = build(&mut m, &secs, &std_pages());
    set_lehash(&mut m, &mrsigner_of(&sig));
    let t = token(
        &m,
        secs.attributes,
        [0; 32],
        [0; 32],
        &[0; 32],
        |t| {
            t.valid = 2;
            t.reserved0 = [0xFF; 44];
            t.cpusvnle = [0xFF; 16];
        },
        |t| t.mac = [0; 16],
    );
    einit(&mut m, "EINIT: VALID bit 0 clear, garbage elsewhere, MRSIGNER = LEHASH", &sig, b.secs, &t, OK);

    // Step 12 runs whether or not there is a token: EINITTOKEN_KEY needs MRSIGNER = LEHASH.
    let mut lt = std_secs(true);
    lt.attributes.flags |= EINITTOKEN_KEY;
    let lt_mrenclave = reference_mrenclave(&lt, &std_pages());
    let lt_sig = sign(&body_for(&lt), lt_mrenclave);
    let mut m = machine();
    let b = build(&mut m, &lt, &std_pages());
    set_lehash(&mut m, &intel_lehash());
    let t = token(&m, lt.attributes, lt_mrenclave, mrsigner_of(&lt_sig), &intel_lehash(), |_| {}, |_| {});
    einit(
        &mut m,
        "EINIT: EINITTOKEN_KEY, MRSIGNER ≠ LEHASH, valid token",
        &lt_sig,
        b.secs,
        &t,
        code(SgxError::InvalidAttribute),
    );

    // A token MACed for another LEHASH does not verify (step 19): the key binds LEHASH (§8.2).
    let mut m = machine();
    let b = build(&mut m, &secs, &std_pages());
    set_lehash(&mut m, &intel_lehash());
    let t = token(&m, secs.attributes, mrenclave, mrsigner_of(&sig), &mrsigner_of(&sig), |_| {}, |_| {});
    einit(&mut m, "EINIT: token MACed for another LEHASH", &sig, b.secs, &t, bad_token);
}

/// §4.2 COMMIT: the SECS gets the digest, the signer's identity and INIT; afterwards EADD,
/// EEXTEND and EINIT refuse the enclave (§6.2 step 6, §6.3, §4.2 step 9).
#[test]
fn einit_commit_effects() {
    let mut m = machine();
    let mut secs = std_secs(false);
    secs.attributes.flags |= KSS;
    let b = build(&mut m, &secs, &std_pages());
    let mut body = body_for(&secs);
    body.isvfamilyid = [0xF1; 16];
    body.isvextprodid = [0xE2; 16];
    body.isvprodid = 0xBEEF;
    body.isvsvn = 0x0102;
    let sig = sign(&body, b.mrenclave);
    launch(&mut m, &b, &sig); // `run` checked RAX = 0 and the §0 flags.

    let (e, page) = snapshot(&m, b.secs);
    assert!(e.valid() && e.page_type() == PageType::Secs);
    assert_eq!(u64_at(&page[..], 48), secs.attributes.flags | INIT, "ATTRIBUTES.INIT ← 1");
    assert_eq!(&page[64..96], &b.mrenclave, "MRENCLAVE ← the final digest");
    assert_eq!(&page[128..160], &mrsigner_of(&sig), "MRSIGNER ← SHA-256(MODULUS)");
    assert_eq!(&page[256..260], &[0xEF, 0xBE, 0x02, 0x01], "ISVPRODID, ISVSVN from SIGSTRUCT");
    assert_eq!(&page[SecsHidden::ISVFAMILYID..SecsHidden::ISVFAMILYID + 16], &[0xF1; 16], "ISVFAMILYID");
    assert_eq!(&page[SecsHidden::ISVEXTPRODID..SecsHidden::ISVEXTPRODID + 16], &[0xE2; 16], "ISVEXTPRODID");
    assert_eq!(&page[SecsHidden::PADDING..SecsHidden::PADDING + 352], &HARDCODED_PKCS1_5_PADDING[..], "PADDING (§4.3)");

    let rbx = eadd_ops(&mut m, BASE + 0x8000, b.secs, si(PageType::Reg, R), &[0; 4096]);
    let rcx = m.epc_page();
    run(&mut m, "EADD after EINIT", Encls::Eadd, rbx, rcx, 0, GP);
    run(&mut m, "EEXTEND after EINIT", Encls::Eextend, b.secs, b.pages[&0], 0, GP);
    einit(&mut m, "EINIT after EINIT", &sig, b.secs, &Einittoken::zeroed(), GP);
}

// ---------------------------------------------------------------------------------------------
// EREMOVE (§6.5)
// ---------------------------------------------------------------------------------------------

/// §6.5 steps 1–3: operands, busy, a free page, a VA page.
#[test]
fn eremove_checks() {
    let mut m = machine();
    let ram = ram_page(&mut m);
    let free = m.epc_page();
    let va = epa(&mut m);
    run(&mut m, "EREMOVE: RCX not 4 KiB aligned", Encls::Eremove, 0, free + 8, 0, GP);
    run(&mut m, "EREMOVE: RCX is ordinary RAM", Encls::Eremove, 0, ram, 0, not_epc(ram));
    run(&mut m, "EREMOVE: RCX unmapped", Encls::Eremove, 0, UNMAPPED, 0, PagingPf(UNMAPPED));
    run(&mut m, "EREMOVE: order: align before epc", Encls::Eremove, 0, ram + 0x10, 0, GP);
    busy(&mut m, free, |m| run(m, "EREMOVE: page busy (before VALID = 0)", Encls::Eremove, 0, free, 0, GP));
    busy(&mut m, va, |m| run(m, "EREMOVE: VA page busy", Encls::Eremove, 0, va, 0, GP));
    run(&mut m, "EREMOVE of a free page is a no-op success", Encls::Eremove, 0, free, 0, OK);
    run(&mut m, "EREMOVE of a free page, again", Encls::Eremove, 0, free, 0, OK);
    run(&mut m, "EREMOVE of a VA page", Encls::Eremove, 0, va, 0, OK);
    assert!(!snapshot(&m, va).0.valid(), "VALID ← 0");
    run(&mut m, "EPA into the removed VA page", Encls::Epa, 3, va, 0, Done);
}

/// §6.5 step 4 and the two-pass protocol Linux uses (§6.5, §10.1): a SECS with children answers
/// SGX_CHILD_PRESENT and goes on the second pass; REG/TCS/PENDING children of an enclave no LP is
/// inside go on the first. (REG/TCS pages of an enclave with a logical processor inside — step 5,
/// SGX_ENCLAVE_ACT — need EENTER, which the platform model does not have yet: not tested here.)
#[test]
fn eremove_two_passes() {
    let mut m = machine();
    // An initialized enclave with an EAUGed (PENDING) page, and an uninitialized one.
    let e = m.enclave(&EnclaveSpec::default());
    let pending = m.epc_page();
    let pi = m.put(&Pageinfo { linaddr: e.base + 0x8000, srcpge: 0, secinfo_or_pcmd: 0, secs: e.secs });
    run(&mut m, "EAUG (setup)", Encls::Eaug, pi, pending, 0, Done);
    let b = build(&mut m, &good_secs(), &std_pages());
    let mut all = vec![e.secs];
    all.extend(e.pages.values());
    all.push(pending);
    all.push(b.secs);
    all.extend(b.pages.values());

    for &page in &all {
        let want = if page == e.secs || page == b.secs { code(SgxError::ChildPresent) } else { OK };
        run(&mut m, "EREMOVE, first pass", Encls::Eremove, 0, page, 0, want);
        if want != OK {
            assert!(snapshot(&m, page).0.valid(), "SGX_CHILD_PRESENT leaves the SECS in place");
        }
    }
    for &page in &all {
        run(&mut m, "EREMOVE, second pass", Encls::Eremove, 0, page, 0, OK);
        assert!(!snapshot(&m, page).0.valid(), "VALID ← 0");
    }
    for &page in &all {
        run(&mut m, "EPA into a removed page: it is free", Encls::Epa, 3, page, 0, Done);
    }
}

/// §6.5 step 3 and §13.12: an accepted TRIM page (MODIFIED = 0) is actually freed and leaves the
/// child count; a TRIM page not yet accepted goes through step 5.
#[test]
fn eremove_trim_pages() {
    let mut m = machine();
    let e = m.enclave(&EnclaveSpec::default());
    let trim_secinfo = m.put(&Secinfo::new(PageType::Trim, SecinfoFlags::empty()));
    for off in [layout::DATA, layout::READ_ONLY] {
        run(&mut m, "EMODT to PT_TRIM (setup)", Encls::Emodt, trim_secinfo, e.epc(off), 0, OK);
    }
    run(&mut m, "ETRACK (setup)", Encls::Etrack, 0, e.secs, 0, OK);
    m.debug_write(e.la(layout::OPERANDS), Secinfo::from_raw_flags(si(PageType::Trim, MODIFIED)).bytes());
    let r = m.enclu(&e, Enclu::Eaccept, e.la(layout::OPERANDS), e.la(layout::DATA), 0).expect("EACCEPT runs");
    assert_eq!(r.status(), LeafStatus::Success, "EACCEPT of the trimmed page (setup)");
    let (accepted, _) = snapshot(&m, e.epc(layout::DATA));
    assert!(accepted.page_type() == PageType::Trim && !accepted.modified(), "an accepted TRIM page");
    assert!(snapshot(&m, e.epc(layout::READ_ONLY)).0.modified(), "a TRIM page not yet accepted");

    run(&mut m, "EREMOVE of an accepted TRIM page", Encls::Eremove, 0, e.epc(layout::DATA), 0, OK);
    assert!(!snapshot(&m, e.epc(layout::DATA)).0.valid(), "the accepted TRIM page is freed");
    run(&mut m, "EPA into the freed TRIM page", Encls::Epa, 3, e.epc(layout::DATA), 0, Done);
    run(
        &mut m,
        "EREMOVE of an unaccepted TRIM page (no LP inside)",
        Encls::Eremove,
        0,
        e.epc(layout::READ_ONLY),
        0,
        OK,
    );
    for (&off, &page) in &e.pages {
        if off != layout::DATA && off != layout::READ_ONLY {
            run(
                &mut m,
                "EREMOVE of the SECS while children remain",
                Encls::Eremove,
                0,
                e.secs,
                0,
                code(SgxError::ChildPresent),
            );
            run(&mut m, "EREMOVE of a child", Encls::Eremove, 0, page, 0, OK);
        }
    }
    run(&mut m, "EREMOVE of the SECS: both TRIM pages left the child count", Encls::Eremove, 0, e.secs, 0, OK);
}

// ---------------------------------------------------------------------------------------------
// EDBGRD / EDBGWR (§6.6)
// ---------------------------------------------------------------------------------------------

struct DbgFx {
    /// Debug enclave.
    e: TestEnclave,
    /// Non-debug enclave.
    nd: TestEnclave,
    /// PENDING (EAUG) pages of `e` and `nd`.
    pending: u64,
    nd_pending: u64,
    /// A MODIFIED page of `e` (EMODT REG → TCS).
    modified: u64,
    /// A PT_TRIM page of `e` (EMODT REG → TRIM, MODIFIED too).
    trim: u64,
    va: u64,
    free: u64,
    ram: u64,
}

fn eaug(m: &mut Machine, secs: u64, linaddr: u64) -> u64 {
    let rcx = m.epc_page();
    let pi = m.put(&Pageinfo { linaddr, srcpge: 0, secinfo_or_pcmd: 0, secs });
    run(m, "EAUG (setup)", Encls::Eaug, pi, rcx, 0, Done);
    rcx
}

/// §6.6 steps 1–6 for both leaves (a case per row, same expectation for EDBGRD and EDBGWR unless
/// the row is leaf-specific), then the order.
#[test]
fn edbg_checks() {
    let mut m = machine();
    let e = m.enclave(&EnclaveSpec { data: vec![(layout::DATA, (0..64).collect())], ..EnclaveSpec::default() });
    let nd = m.enclave(&EnclaveSpec { debug: false, base_slot: 1, ..EnclaveSpec::default() });
    let pending = eaug(&mut m, e.secs, e.base + 0x8000);
    let nd_pending = eaug(&mut m, nd.secs, nd.base + 0x8000);
    let to_tcs = m.put(&Secinfo::new(PageType::Tcs, SecinfoFlags::empty()));
    let modified = e.epc(layout::CODE);
    run(&mut m, "EMODT to PT_TCS (setup)", Encls::Emodt, to_tcs, modified, 0, OK);
    let to_trim = m.put(&Secinfo::new(PageType::Trim, SecinfoFlags::empty()));
    let trim = e.epc(layout::READ_ONLY);
    run(&mut m, "EMODT to PT_TRIM (setup)", Encls::Emodt, to_trim, trim, 0, OK);
    let fx = DbgFx {
        va: epa(&mut m),
        free: m.epc_page(),
        ram: ram_page(&mut m),
        e,
        nd,
        pending,
        nd_pending,
        modified,
        trim,
    };

    const NOT_DEBUGGABLE: Expect = code(SgxError::PageNotDebuggable);
    // (name, RCX, EDBGRD outcome, EDBGWR outcome)
    type DbgCase = (&'static str, fn(&DbgFx) -> (u64, Expect, Expect));
    let cases: &[DbgCase] = &[
        ("REG page of a debug enclave", |fx| (fx.e.epc(layout::DATA) + 8, OK, OK)),
        ("REG page without W (OPERANDS is RW; RWX is ignored anyway)", |fx| (fx.e.epc(layout::OPERANDS), OK, OK)),
        // Step 1.
        ("RCX 4 bytes off an 8-byte boundary (64-bit mode)", |fx| (fx.e.epc(layout::DATA) + 4, GP, GP)),
        ("RCX 1 byte off", |fx| (fx.e.epc(layout::DATA) + 1, GP, GP)),
        ("RCX is ordinary RAM", |fx| (fx.ram + 8, not_epc(fx.ram + 8), not_epc(fx.ram + 8))),
        ("RCX unmapped", |_| (UNMAPPED, PagingPf(UNMAPPED), PagingPf(UNMAPPED))),
        ("RCX in a free EPC page: CR2 = RCX", |fx| (fx.free + 0x18, epcm(fx.free + 0x18), epcm(fx.free + 0x18))),
        // Step 2 (§13.13: a SECS faults with #PF, not #GP).
        ("RCX in a SECS", |fx| (fx.e.secs, epcm(fx.e.secs), epcm(fx.e.secs))),
        ("RCX in a SECS, offset 0x200", |fx| (fx.e.secs + 0x200, epcm(fx.e.secs + 0x200), epcm(fx.e.secs + 0x200))),
        ("RCX in a non-debug enclave's SECS", |fx| (fx.nd.secs, epcm(fx.nd.secs), epcm(fx.nd.secs))),
        ("RCX in a VA page (EDBGRD only)", |fx| (fx.va + 0x10, OK, epcm(fx.va + 0x10))),
        ("RCX in a PT_TRIM page", |fx| (fx.trim + 0x20, epcm(fx.trim + 0x20), epcm(fx.trim + 0x20))),
        // Step 3.
        ("PENDING page", |fx| (fx.pending, NOT_DEBUGGABLE, NOT_DEBUGGABLE)),
        ("MODIFIED page (REG → TCS, not yet accepted)", |fx| (fx.modified + 8, NOT_DEBUGGABLE, NOT_DEBUGGABLE)),
        // Step 4: TCS; EDBGRD below SGX_TCS_LIMIT = 72 (MODEL CHOICE), EDBGWR only FLAGS.
        ("TCS offset 0 (STATE)", |fx| (fx.e.epc(layout::TCS), OK, GP)),
        ("TCS offset 8 (FLAGS)", |fx| (fx.e.epc(layout::TCS) + 8, OK, OK)),
        ("TCS offset 16 (OSSA)", |fx| (fx.e.epc(layout::TCS) + 16, OK, GP)),
        ("TCS offset 40 (AEP)", |fx| (fx.e.epc(layout::TCS) + 40, OK, GP)),
        ("TCS offset 64 (FSLIMIT/GSLIMIT)", |fx| (fx.e.epc(layout::TCS) + 64, OK, GP)),
        ("TCS offset 72", |fx| (fx.e.epc(layout::TCS) + 72, GP, GP)),
        ("TCS offset 4088", |fx| (fx.e.epc(layout::TCS) + 4088, GP, GP)),
        // Step 5.
        ("REG page of a non-debug enclave", |fx| (fx.nd.epc(layout::DATA), GP, GP)),
        ("TCS FLAGS of a non-debug enclave", |fx| (fx.nd.epc(layout::TCS) + 8, GP, GP)),
        // Order.
        ("order: align before epc", |fx| (fx.ram + 4, GP, GP)),
        ("order: EPCM (2) before PENDING (3): PENDING of a non-debug enclave", |fx| {
            (fx.nd_pending + 8, NOT_DEBUGGABLE, NOT_DEBUGGABLE)
        }),
        ("order: TCS offset (4) before DEBUG (5)", |fx| (fx.nd.epc(layout::TCS) + 72, GP, GP)),
        ("order: PT (2) before MODIFIED (3): a trimmed page", |fx| (fx.trim, epcm(fx.trim), epcm(fx.trim))),
        ("order: MODIFIED (3) before the TCS offset (4)", |fx| (fx.modified + 72, NOT_DEBUGGABLE, NOT_DEBUGGABLE)),
    ];
    for &(name, case) in cases {
        let (rcx, rd, wr) = case(&fx);
        run(&mut m, &format!("EDBGRD: {name}"), Encls::Edbgrd, 0x1234, rcx, 0, rd);
        run(&mut m, &format!("EDBGWR: {name}"), Encls::Edbgwr, 0, rcx, 0, wr);
    }
    for leaf in [Encls::Edbgrd, Encls::Edbgwr] {
        let page = fx.e.epc(layout::DATA);
        busy(&mut m, page, |m| run(m, &format!("{leaf:?}: page busy"), leaf, 0, page, 0, GP));
        busy(&mut m, fx.free, |m| run(m, &format!("{leaf:?}: order: busy before VALID"), leaf, 0, fx.free, 0, GP));
    }
}

/// §6.6 step 6: 8 bytes move through RBX, EPCM RWX is ignored, TCS FLAGS is writable, and a VA
/// slot reads as all-ones when `slot & ~7 ≠ 0`, else 0.
#[test]
fn edbg_transfers() {
    let mut m = machine();
    let e = m.enclave(&EnclaveSpec { data: vec![(layout::DATA, (1..=16).collect())], ..EnclaveSpec::default() });
    let data = e.epc(layout::DATA);
    let r = run(&mut m, "EDBGRD", Encls::Edbgrd, 0, data + 8, 0, OK);
    assert_eq!(r.rbx, u64::from_le_bytes([9, 10, 11, 12, 13, 14, 15, 16]), "RBX ← the 8 bytes at RCX");
    assert_eq!(run(&mut m, "EDBGRD", Encls::Edbgrd, !0, data, 0, OK).rbx, 0x0807_0605_0403_0201);
    assert_eq!(run(&mut m, "EDBGRD of code", Encls::Edbgrd, 0, e.epc(layout::CODE), 0, OK).rbx, 0x9090_9090_9090_9090);
    let ro = e.epc(layout::READ_ONLY) + 0x100;
    run(&mut m, "EDBGWR to a read-only page", Encls::Edbgwr, 0xFEED_FACE_CAFE_BEEF, ro, 0, OK);
    assert_eq!(run(&mut m, "EDBGRD", Encls::Edbgrd, 0, ro, 0, OK).rbx, 0xFEED_FACE_CAFE_BEEF, "written");
    assert_eq!(run(&mut m, "EDBGRD", Encls::Edbgrd, 0, ro + 8, 0, OK).rbx, 0x1111_1111_1111_1111, "only 8 bytes");
    let flags = e.epc(layout::TCS) + 8;
    run(&mut m, "EDBGWR of TCS.FLAGS", Encls::Edbgwr, 1, flags, 0, OK);
    assert_eq!(run(&mut m, "EDBGRD of TCS.FLAGS", Encls::Edbgrd, 0, flags, 0, OK).rbx, 1, "DBGOPTIN set");
    assert_eq!(m.read(data, 8), vec![0xFF; 8], "non-enclave reads still see all-ones (§2)");

    // An uninitialized debug enclave is debuggable too.
    let b = build(&mut m, &good_secs(), &std_pages());
    assert_eq!(
        run(&mut m, "EDBGRD before EINIT", Encls::Edbgrd, 0, b.pages[&0x2000], 0, OK).rbx,
        0x9090_9090_9090_9090
    );

    // VA slots: EWB of VA pages fills slots 0..8 of one VA page with VER = 1..=8 (§1.8:
    // CR_NEXT_VER starts at 1 and increments per EWB).
    let mut m = machine();
    let va = epa(&mut m);
    for slot in 0..8u64 {
        let victim = epa(&mut m);
        let src = ram_page(&mut m);
        let pcmd = m.put_bytes(&[0u8; 128], 128);
        let pi = m.put(&Pageinfo { linaddr: 0, srcpge: src, secinfo_or_pcmd: pcmd, secs: 0 });
        run(&mut m, "EWB of a VA page (setup)", Encls::Ewb, pi, victim, va + 8 * slot, OK);
    }
    for slot in 0..8u64 {
        let ver = slot + 1;
        let want = if ver & !7 != 0 { u64::MAX } else { 0 };
        let r = run(&mut m, "EDBGRD of a VA slot", Encls::Edbgrd, 0x77, va + 8 * slot, 0, OK);
        assert_eq!(r.rbx, want, "slot {slot} holds VER {ver}");
    }
    assert_eq!(run(&mut m, "EDBGRD of an empty VA slot", Encls::Edbgrd, 0x77, va + 8 * 100, 0, OK).rbx, 0);
}

// ---------------------------------------------------------------------------------------------
// EPA (§6.7)
// ---------------------------------------------------------------------------------------------

/// §6.7: RBX = PT_VA, RCX aligned and in EPC, not busy, not valid; the page is zeroed and becomes
/// a VA page.
#[test]
fn epa_checks() {
    let mut m = machine();
    let e = m.enclave(&EnclaveSpec::default());
    let ram = ram_page(&mut m);
    let va = epa(&mut m);
    let free = m.epc_page();
    for (name, rbx, rcx, want) in [
        ("RBX = 0 (PT_SECS)", 0, free, GP),
        ("RBX = 2 (PT_REG)", 2, free, GP),
        ("RBX = 4 (PT_TRIM)", 4, free, GP),
        ("RBX = 3 + 2^32", 3 | 1 << 32, free, GP),
        ("RCX not 4 KiB aligned", 3, free + 8, GP),
        ("RCX is ordinary RAM", 3, ram, not_epc(ram)),
        ("RCX unmapped", 3, UNMAPPED, PagingPf(UNMAPPED)),
        ("RCX already a VA page", 3, va, epcm(va)),
        ("RCX is a SECS", 3, e.secs, epcm(e.secs)),
        ("RCX is a REG page", 3, e.epc(layout::DATA), epcm(e.epc(layout::DATA))),
        ("order: RBX before align(RCX)", 2, free + 8, GP),
        ("order: RBX before epc(RCX)", 2, ram, GP),
        ("order: align(RCX) before epc(RCX)", 3, ram + 8, GP),
    ] {
        run(&mut m, &format!("EPA: {name}"), Encls::Epa, rbx, rcx, 0, want);
    }
    busy(&mut m, free, |m| run(m, "EPA: page busy", Encls::Epa, 3, free, 0, GP));
    busy(&mut m, va, |m| run(m, "EPA: order: busy before VALID", Encls::Epa, 3, va, 0, GP));

    // Effects: a page that held enclave data becomes an all-zero VA page (every slot reads 0, where
    // the old 0x11 bytes would read as all-ones, §6.6).
    let old = e.epc(layout::READ_ONLY);
    run(&mut m, "EREMOVE (setup)", Encls::Eremove, 0, old, 0, OK);
    run(&mut m, "EPA", Encls::Epa, 3, old, 0, Done);
    let (entry, content) = snapshot(&m, old);
    assert!(entry.valid() && entry.page_type() == PageType::Va, "EPCM ← VALID, PT_VA");
    assert_eq!((entry.rwx(), entry.enclave_address()), (0, 0), "everything else 0");
    assert!(!entry.blocked() && !entry.pending() && !entry.modified() && !entry.pr());
    assert!(content.iter().all(|&b| b == 0), "page zeroed");
    for slot in [0u64, 1, 255, 511] {
        assert_eq!(run(&mut m, "EDBGRD of a fresh VA slot", Encls::Edbgrd, 0, old + 8 * slot, 0, OK).rbx, 0);
    }
    run(&mut m, "EDBGWR to a VA page", Encls::Edbgwr, 1, old, 0, epcm(old));
    run(&mut m, "EREMOVE of the VA page", Encls::Eremove, 0, old, 0, OK);
}

// ---------------------------------------------------------------------------------------------
// Dispatch (§5.1), fault encodings (§5.3), platform variations (§9)
// ---------------------------------------------------------------------------------------------

const MY_LEAVES: [Encls; 8] = [
    Encls::Ecreate,
    Encls::Eadd,
    Encls::Einit,
    Encls::Eremove,
    Encls::Edbgrd,
    Encls::Edbgwr,
    Encls::Eextend,
    Encls::Epa,
];

/// §5.1: #UD for CPL > 0 before every #GP check; #GP for an invalid leaf and CR0.PG = 0; RAX[63:32]
/// ignored.
#[test]
fn encls_dispatch() {
    let mut m = machine();
    let free = m.epc_page();
    for cpl in [Cpl::Ring1, Cpl::Ring2, Cpl::Ring3] {
        m.os.cpu().set_cpl(cpl);
        for leaf in MY_LEAVES {
            run(&mut m, &format!("{leaf:?} at {cpl:?}"), leaf, 0, free, 0, UD);
        }
        run_rax(&mut m, "invalid leaf 0x30 at CPL > 0: #UD first", 0x30, 0, free, 0, UD);
        m.os.cpu().set_paging(false);
        run(&mut m, "EREMOVE at CPL > 0 with paging off: #UD first", Encls::Eremove, 0, free, 0, UD);
        m.os.cpu().set_paging(true);
    }
    m.os.cpu().set_cpl(Cpl::Ring0);

    for rax in [0x14, 0x15, 0x3F, 0x40, 0xFF, 0xFFFF_FFFF] {
        run_rax(&mut m, &format!("ENCLS leaf {rax:#x} (not a leaf)"), rax, 0, free, 0, GP);
    }
    m.os.cpu().set_paging(false);
    for leaf in MY_LEAVES {
        run(&mut m, &format!("{leaf:?} with CR0.PG = 0"), leaf, 0, free, 0, GP);
    }
    m.os.cpu().set_paging(true);
    // RAX[63:32] is ignored: every call in this file has junk there; one explicitly.
    let mut regs = Gprs::leaf(0, 0, free, 0);
    regs.rax = 0xFFFF_FFFF_0000_0000 | Encls::Eremove as u64;
    assert_eq!(m.os.cpu().encls(&mut regs), Ok(()));
    assert_eq!((regs.rax, regs.status()), (0, LeafStatus::Success), "EREMOVE ran");

    // FEATURE_CONTROL.LOCK/SGX_ENABLE = 0 → #GP(0) for every leaf, before the leaf number and
    // CR0.PG checks. The bare-metal processor always boots with LOCK | SGX_ENABLE (the platform
    // configuration has no "SGX disabled in firmware" switch, and LOCK makes the MSR read-only),
    // so the dispatch function is driven directly.
    assert_eq!(m.os.cpu().rdmsr(0x3A), Ok(0x60001), "firmware default FEATURE_CONTROL (§9.2)");
    assert_eq!(m.os.cpu().wrmsr(0x3A, 0x1), Err(Exception::GP0), "FEATURE_CONTROL is locked");
    let p = Arc::clone(&m.platform);
    for rax in (0..=0x13).chain([0x14, 0x40]) {
        assert_eq!(
            vsgx_hw::leaves::encls_leaf(&p, rax, false, true),
            Err(Exception::GP0),
            "SGX disabled, leaf {rax:#x}"
        );
        assert_eq!(vsgx_hw::leaves::encls_leaf(&p, rax, false, false), Err(Exception::GP0));
    }
    assert_eq!(vsgx_hw::leaves::encls_leaf(&p, 0, true, false), Err(Exception::GP0), "CR0.PG = 0");
    assert_eq!(vsgx_hw::leaves::encls_leaf(&p, 0x14, true, true), Err(Exception::GP0), "invalid leaf");
    assert_eq!(vsgx_hw::leaves::encls_leaf(&p, 0x1_0000_0000, true, true), Ok(Encls::Ecreate), "RAX[63:32] ignored");
}

/// §5.1/§5.2: leaves whose CPUID bit is clear are invalid (#GP(0) at dispatch).
#[test]
fn encls_unenumerated_leaves() {
    let mut m = machine_with(|f| {
        f.sgx2 = false;
        f.encls_c = false;
    });
    assert_eq!(m.platform.cpuid(0x12, 0).eax & 0x43, 0x1, "SGX1 only, no ENCLS-C leaves");
    let free = m.epc_page();
    let e = m.enclave(&EnclaveSpec::default());
    let pi = m.put(&Pageinfo { linaddr: e.base + 0x8000, srcpge: 0, secinfo_or_pcmd: 0, secs: e.secs });
    let secinfo = m.put(&Secinfo::new(PageType::Trim, SecinfoFlags::empty()));
    run(&mut m, "EAUG without SGX2", Encls::Eaug, pi, free, 0, GP);
    run(&mut m, "EMODPR without SGX2", Encls::Emodpr, secinfo, e.epc(0), 0, GP);
    run(&mut m, "EMODT without SGX2", Encls::Emodt, secinfo, e.epc(0), 0, GP);
    for leaf in [Encls::Erdinfo, Encls::Etrackc, Encls::Eldbc, Encls::Elduc] {
        run(&mut m, &format!("{leaf:?} without CPUID.12H.0:EAX[6]"), leaf, 0, free, 0, GP);
    }
}

/// §5.3 / §13.14: on an SGX1-only platform every EPCM fault of these leaves is #GP(0); an operand
/// that is not EPC at all is still a #PF (that is not an EPCM check).
#[test]
fn sgx1_only_epcm_faults_are_gp() {
    let mut m = machine_with(|f| f.sgx2 = false);
    let e = m.enclave(&EnclaveSpec::default()); // SGX1 leaves build and launch as usual
    let b = build(&mut m, &good_secs(), &std_pages()[..1]);
    let free = m.epc_page();
    let va = epa(&mut m);
    let ram = ram_page(&mut m);
    let sig = Sigstruct::from_bytes(FORTANIX_SIG).expect("SIGSTRUCT");

    let rbx = ecreate_std(&mut m);
    run(&mut m, "ECREATE into a valid page", Encls::Ecreate, rbx, b.secs, 0, GP);
    let rbx = eadd_ops(&mut m, BASE + 0x1000, free, si(PageType::Reg, R), &[0; 4096]);
    let rcx = m.epc_page();
    run(&mut m, "EADD naming a free page as SECS", Encls::Eadd, rbx, rcx, 0, GP);
    let rbx = eadd_ops(&mut m, BASE + 0x1000, b.secs, si(PageType::Reg, R), &[0; 4096]);
    run(&mut m, "EADD into a valid page", Encls::Eadd, rbx, b.pages[&0], 0, GP);
    run(&mut m, "EEXTEND of a free page", Encls::Eextend, b.secs, free, 0, GP);
    einit(&mut m, "EINIT on a free page (valid signature)", &sig, free, &Einittoken::zeroed(), GP);
    run(&mut m, "EDBGRD of a SECS", Encls::Edbgrd, 0, e.secs, 0, GP);
    run(&mut m, "EDBGWR of a VA page", Encls::Edbgwr, 0, va, 0, GP);
    run(&mut m, "EDBGRD of a free page", Encls::Edbgrd, 0, free, 0, GP);
    run(&mut m, "EPA of a valid page", Encls::Epa, 3, va, 0, GP);
    // Not EPCM checks.
    run(&mut m, "EREMOVE of ordinary RAM", Encls::Eremove, 0, ram, 0, not_epc(ram));
    run(&mut m, "EDBGRD of ordinary RAM", Encls::Edbgrd, 0, ram, 0, not_epc(ram));
}

/// §10.2 for these leaves: after EPC loss every old page is invalid.
#[test]
fn leaves_after_epc_loss() {
    let mut m = machine();
    let secs = std_secs(true);
    let b = build(&mut m, &secs, &std_pages());
    let sig = sign(&body_for(&secs), b.mrenclave);
    m.platform.lose_epc();
    let page = b.pages[&0];
    let rbx = eadd_ops(&mut m, BASE + 0x8000, b.secs, si(PageType::Reg, R), &[0; 4096]);
    let rcx = m.epc_page();
    run(&mut m, "EADD naming the old SECS", Encls::Eadd, rbx, rcx, 0, epcm(b.secs));
    run(&mut m, "EEXTEND of an old page", Encls::Eextend, b.secs, page, 0, epcm(page));
    run(&mut m, "EDBGRD of an old page", Encls::Edbgrd, 0, page, 0, epcm(page));
    run(&mut m, "EDBGWR of an old page", Encls::Edbgwr, 0, page, 0, epcm(page));
    set_lehash(&mut m, &mrsigner_of(&sig));
    einit(
        &mut m,
        "EINIT: the structure check first",
        &edited(&sig, |s| s[0] ^= 1),
        b.secs,
        &Einittoken::zeroed(),
        code(SgxError::InvalidSigStruct),
    );
    einit(
        &mut m,
        "EINIT: then the signature",
        &edited(&sig, |s| s[600] ^= 1),
        b.secs,
        &Einittoken::zeroed(),
        code(SgxError::InvalidSignature),
    );
    einit(&mut m, "EINIT on the old SECS", &sig, b.secs, &Einittoken::zeroed(), epcm(b.secs));
    for &p in b.pages.values().chain([&b.secs]) {
        run(&mut m, "EREMOVE of an old page: a no-op success", Encls::Eremove, 0, p, 0, OK);
    }
}

/// §4.4 "locked" launch control (FEATURE_CONTROL.SGX_LC = 0, §9.2): ENCLS works, the hash MSRs are
/// readable but not writable, so an all-zero token fails (16) unless the signer is Intel's LE, and a
/// token MACed for the firmware's hash launches.
#[test]
fn locked_launch_control() {
    let mut m = machine_with(|f| f.lc_writable = false);
    assert_eq!(m.os.cpu().rdmsr(0x3A), Ok(0x40001), "LOCK | SGX_ENABLE, SGX_LC clear");
    assert_eq!(m.os.cpu().wrmsr(0x8C, 0), Err(Exception::GP0), "hash MSRs read-only");
    assert_eq!(lehash(&mut m), intel_lehash(), "reset value (§4.4)");
    let secs = std_secs(false);
    let b = build(&mut m, &secs, &std_pages());
    let sig = sign(&body_for(&secs), b.mrenclave);
    assert_eq!(m.os.einit(b.secs, &sig), Ok(LeafStatus::Error(SgxError::InvalidEinittoken)), "Linux-style EINIT");
    let t = token(&m, secs.attributes, b.mrenclave, mrsigner_of(&sig), &intel_lehash(), |_| {}, |_| {});
    einit(&mut m, "EINIT with a token for the firmware's LEHASH", &sig, b.secs, &t, OK);
}

/// §4.4: the hash MSRs are per logical processor; EINIT judges the executing LP's.
#[test]
fn einit_reads_the_executing_lps_lehash() {
    let mut a = machine();
    let secs = std_secs(false);
    let b = build(&mut a, &secs, &std_pages());
    let sig = sign(&body_for(&secs), b.mrenclave);
    let mut other = Machine::on(Arc::clone(&a.platform));
    set_lehash(&mut a, &mrsigner_of(&sig));
    assert_eq!(lehash(&mut other), intel_lehash(), "another LP keeps its own (reset) values");
    einit(
        &mut other,
        "EINIT on an LP holding Intel's hash",
        &sig,
        b.secs,
        &Einittoken::zeroed(),
        code(SgxError::InvalidEinittoken),
    );
    einit(&mut a, "EINIT on the LP holding MRSIGNER", &sig, b.secs, &Einittoken::zeroed(), OK);
}

/// §5.3: a fault's CR2 is the operand's *linear* address; an EPC page is identified by its physical
/// page (the §6.3 SECS match, §6.1 ENCLAVECONTEXT = the SECS *physical* address). Every other test
/// maps EPC 1:1, so here the EPC pages are also mapped at unrelated linear aliases.
#[test]
fn operands_through_linear_aliases() {
    const ALIAS: u64 = 0x5000_0000_0000;
    let alias = |i: u64| ALIAS + i * 0x1000;
    let mut m = machine();
    let secs_pa = m.epc_page();
    let page_pa = m.epc_page();
    let free_pa = m.epc_page();
    let ram = ram_page(&mut m);
    for (i, pa) in [secs_pa, page_pa, free_pa, ram].into_iter().enumerate() {
        m.os.map_page(alias(i as u64), pa).expect("map");
    }
    let ram_alias = alias(3);

    let rbx = ecreate_std(&mut m);
    run(&mut m, "ECREATE through an alias", Encls::Ecreate, rbx, alias(0), 0, Done);
    let (e, page) = snapshot(&m, secs_pa);
    assert!(e.is(PageType::Secs));
    assert_eq!(u64_at(&page[..], SecsHidden::ENCLAVECONTEXT), secs_pa, "ENCLAVECONTEXT is the physical address");
    run(&mut m, "ECREATE through the alias again", Encls::Ecreate, rbx, alias(0), 0, epcm(alias(0)));
    run(&mut m, "ECREATE through the physical address", Encls::Ecreate, rbx, secs_pa, 0, epcm(secs_pa));

    let rbx = eadd_ops(&mut m, BASE, alias(0), si(PageType::Reg, R | W), &[0x33; 4096]);
    run(&mut m, "EADD, SECS and target through aliases", Encls::Eadd, rbx, alias(1), 0, Done);
    let (e, _) = snapshot(&m, page_pa);
    assert_eq!(Some(e.secs()), m.platform.epc().page_of(secs_pa), "ENCLAVESECS is the SECS page");
    assert_eq!(e.enclave_address(), BASE, "ENCLAVEADDRESS = LINADDR");
    run(&mut m, "EEXTEND: SECS through the alias", Encls::Eextend, alias(0), page_pa + 0x100, 0, Done);
    run(&mut m, "EEXTEND: chunk through the alias", Encls::Eextend, secs_pa, alias(1) + 0x200, 0, Done);
    run(&mut m, "EDBGWR through the physical address", Encls::Edbgwr, 0xABCD, page_pa + 0x10, 0, OK);
    assert_eq!(run(&mut m, "EDBGRD through the alias", Encls::Edbgrd, 0, alias(1) + 0x10, 0, OK).rbx, 0xABCD);

    run(&mut m, "EEXTEND of a free page", Encls::Eextend, alias(0), alias(2) + 0x300, 0, epcm(alias(2) + 0x300));
    let rbx = eadd_ops(&mut m, BASE + 0x1000, alias(2), si(PageType::Reg, R), &[0; 4096]);
    let rcx = m.epc_page();
    run(&mut m, "EADD naming a free page as SECS", Encls::Eadd, rbx, rcx, 0, epcm(alias(2)));
    run(&mut m, "EDBGRD of the SECS", Encls::Edbgrd, 0, alias(0) + 8, 0, epcm(alias(0) + 8));
    run(&mut m, "EPA of a valid page", Encls::Epa, 3, alias(1), 0, epcm(alias(1)));
    let sig = Sigstruct::from_bytes(FORTANIX_SIG).expect("SIGSTRUCT");
    einit(&mut m, "EINIT on a free page", &sig, alias(2), &Einittoken::zeroed(), epcm(alias(2)));
    run(&mut m, "EREMOVE of RAM through an alias", Encls::Eremove, 0, ram_alias, 0, not_epc(ram_alias));
    run(&mut m, "EREMOVE of the SECS with a child", Encls::Eremove, 0, alias(0), 0, code(SgxError::ChildPresent));
    run(&mut m, "EREMOVE of the child through the alias", Encls::Eremove, 0, alias(1), 0, OK);
    run(&mut m, "EREMOVE of the SECS through the alias", Encls::Eremove, 0, alias(0), 0, OK);
}

/// §6.5 step 4: VIRTCHILDCNT only blocks EREMOVE in VMX non-root with the oversubscription
/// extensions; on bare metal a SECS with no children goes even with VIRTCHILDCNT ≠ 0.
#[test]
fn eremove_ignores_virtchildcnt_on_bare_metal() {
    let mut m = machine();
    let secs = ecreate(&mut m, &good_secs());
    let r = m.enclv(Enclv::Eincvirtchild, secs, secs, 0).expect("EINCVIRTCHILD runs");
    assert_eq!(r.status(), LeafStatus::Success, "VIRTCHILDCNT = 1 (setup)");
    assert_eq!(u64_at(&snapshot(&m, secs).1[..], SecsHidden::VIRTCHILDCNT), 1);
    run(&mut m, "EREMOVE of a SECS with VIRTCHILDCNT = 1 and no children", Encls::Eremove, 0, secs, 0, OK);
}
