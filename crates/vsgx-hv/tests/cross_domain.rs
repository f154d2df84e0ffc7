//! Three domains on three threads issue random ENCLS sequences through their own vCPUs (issue 5
//! item 6): each guest builds small debug and production enclaves in its vEPC, blocks, tracks,
//! evicts and reloads their pages with a VA page of its own and buffers in its own RAM, removes
//! pages, reads them back with EDBGRD, and also names the *other* domains' pages — their vEPC GPAs
//! (the same numbers exist in its own guest-physical space) and their host EPC addresses.
//!
//! Every guest keeps a model of its own vEPC (what each page is, which enclave it belongs to, what
//! it holds, which VA slots are occupied) and predicts every leaf's outcome from that model alone:
//! a result that depended on another domain's pages would not match. Every outcome must be an
//! architectural answer (a status or an exception), never a panic. After the threads have joined,
//! each owner reloads and reads back every page of its enclaves (they hold per-domain, per-enclave
//! stamped contents, so a page of another domain could never pass for its own); the platform's EPCM
//! census must equal the sum of the three models; the EPC manager's accounting must be conserved
//! and audit clean; and destroying the three domains must return every page.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, OnceLock};

use proptest::prelude::*;
use vsgx_hv::domain::{Domain, DomainSpec};
use vsgx_hv::epc::{DomainId, EpcManager, Owner, PageState};
use vsgx_hv::policy::{LaunchControl, SgxFeatures, VepcSection};
use vsgx_hv::vcpu::Vcpu;
use vsgx_hw::config;
use vsgx_hw::os::{SimpleOs, default_base};
use vsgx_hw::platform::Platform;
use vsgx_isa::cpu::{Cpu, Exception, LeafStatus, pfec};
use vsgx_isa::leaf::Encls;
use vsgx_isa::sgxs::{ChunkMeasurement, LoadPlan, SgxsWriter};
use vsgx_isa::signing::{SigningKey, SigstructBody};
use vsgx_isa::status::SgxError;
use vsgx_isa::{
    ArchStruct, Attributes, AttributesFlags, PageType, Pageinfo, Secinfo, SecinfoFlags, Secs, Sigstruct, secinfo_flags,
};

const KEY_PEM: &str = include_str!("../../vsgx-isa/tests/data/test-key.pem");

/// Guest RAM: the OS's page tables and scratch in the first half, eviction buffers above.
const RAM: u64 = 64 << 20;
const OS_WINDOW: u64 = 32 << 20;
/// 4 KiB encrypted blobs (EWB SRCPGE), one per eviction.
const BLOBS: u64 = 32 << 20;
/// 128-byte PCMDs, one per eviction.
const PCMDS: u64 = 48 << 20;
const BUFFERS: u64 = 4096;
/// Every domain's vEPC starts at the same GPA; sizes differ, so a GPA of a bigger domain may lie
/// outside a smaller one's vEPC (3 MiB is mapped by the guest's 2 MiB pages up to 4 MiB: the
/// last MiB is guest-mapped but not vEPC, an EPT violation).
const EPC_GPA: u64 = 0x1_0000_0000;
const VEPC_MIB: [u64; 3] = [2, 3, 4];
const MAX_VEPC_PAGES: u16 = 1024;
/// A linear page a guest points at another domain's host EPC address.
const PROBE_LA: u64 = 0x7000_0000_0000;
/// Pages are allocated among the lowest free GPAs, so the three domains' enclaves overlap in
/// guest-physical space and naming another domain's page usually lands on one of one's own.
const ALLOC_WINDOW: usize = 6;
/// VA slots a guest uses (a few, so that occupied slots are hit too).
const VA_SLOTS: u64 = 12;

// ---------------------------------------------------------------------------------------------
// Test enclaves: SGXS written here, signed with the test key, contents unique per domain.

/// Kinds of test enclave: `(ELRANGE size, debug, pages as (offset, SECINFO.FLAGS, measurement))`.
fn kind(k: usize) -> (u64, bool, Vec<(u64, u64, ChunkMeasurement)>) {
    let rw = secinfo_flags(PageType::Reg, SecinfoFlags::R.union(SecinfoFlags::W));
    let ro = secinfo_flags(PageType::Reg, SecinfoFlags::R);
    match k {
        0 => (
            0x8000,
            true,
            vec![
                (0x0000, rw, ChunkMeasurement::All),
                (0x1000, rw, ChunkMeasurement::All),
                (0x3000, rw, ChunkMeasurement::All),
                (0x5000, ro, ChunkMeasurement::Mask(0x0F0F)),
            ],
        ),
        1 => (0x4000, true, vec![(0x0000, rw, ChunkMeasurement::All), (0x2000, rw, ChunkMeasurement::None)]),
        _ => (0x2000, false, vec![(0x0000, rw, ChunkMeasurement::All), (0x1000, ro, ChunkMeasurement::All)]),
    }
}

const KINDS: usize = 3;

fn page_content(domain: usize, kind: usize, offset: u64) -> Box<[u8; 4096]> {
    let mut page = Box::new([0u8; 4096]);
    let seed = (domain as u64 + 1) * 0x9E37_79B9 + kind as u64 * 0x1000 + offset;
    for (i, b) in page.iter_mut().enumerate() {
        *b = ((i as u64).wrapping_mul(seed | 1) >> 3 ^ seed ^ (i as u64 >> 7)) as u8;
    }
    page
}

#[derive(Debug)]
struct Image {
    plan: LoadPlan,
    sig: Sigstruct,
    debug: bool,
}

/// `images()[domain][kind]`, built and signed once.
fn images() -> &'static Vec<Vec<Image>> {
    static IMAGES: OnceLock<Vec<Vec<Image>>> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let key = SigningKey::from_pem(KEY_PEM).expect("test key");
        (0..3)
            .map(|d| {
                (0..KINDS)
                    .map(|k| {
                        let (size, debug, pages) = kind(k);
                        let mut w = SgxsWriter::new(1, size).expect("ECREATE record");
                        for (offset, flags, measure) in pages {
                            w.add_page(offset, flags, &page_content(d, k, offset), measure).expect("page");
                        }
                        let plan = LoadPlan::from_sgxs(&w.finish()).expect("canonical SGXS");
                        let mut flags = AttributesFlags::MODE64BIT;
                        if debug {
                            flags |= AttributesFlags::DEBUG;
                        }
                        let body = SigstructBody {
                            date: 0x2026_0101,
                            attributes: Attributes::new(flags, 3),
                            attributemask: Attributes { flags: !0, xfrm: !0 },
                            isvprodid: 1,
                            isvsvn: 1,
                            ..SigstructBody::default()
                        };
                        let sig = key.sign(&body, plan.mrenclave()).expect("sign");
                        Image { plan, sig, debug }
                    })
                    .collect()
            })
            .collect()
    })
}

// ---------------------------------------------------------------------------------------------
// Operations.

/// An EPC address a guest names.
#[derive(Clone, Copy, Debug)]
enum Addr {
    /// One of its own valid pages.
    Own(u32),
    /// A valid page of another domain (1 or 2 places further), by its GPA.
    Foreign(u8, u32),
    /// Page `n` of the largest vEPC layout (may lie outside its own vEPC).
    Any(u16),
}

#[derive(Clone, Copy, Debug)]
enum Op {
    /// Build, initialize and stamp an enclave of a kind.
    Build(usize, u32),
    /// ECREATE (a trapped leaf) of an empty enclave of a kind into the page named.
    Ecreate(Addr, usize),
    /// EBLOCK + ETRACK + EWB of one of its own enclave pages into VA slot `n`.
    Evict(u32, u64),
    /// ELDU of an evicted page into a free page of its own, or into the page named.
    Reload(u32, Option<Addr>),
    Eblock(Addr),
    Etrack(Addr),
    /// EWB of the named page into VA slot `n`.
    Ewb(Addr, u64),
    Eremove(Addr),
    /// EDBGRD of qword `n` of the named page.
    Edbgrd(Addr, u64),
    Epa(Option<Addr>),
    /// A leaf on the host EPC address of domain `(self + n) % 3`'s page, raw or mapped by the
    /// guest's page tables.
    Probe {
        other: u8,
        pick: u32,
        mapped: bool,
        leaf: u8,
    },
}

fn addr() -> impl Strategy<Value = Addr> {
    prop_oneof![
        any::<u32>().prop_map(Addr::Own),
        (1u8..3, any::<u32>()).prop_map(|(o, p)| Addr::Foreign(o, p)),
        (0..MAX_VEPC_PAGES).prop_map(Addr::Any),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..KINDS, any::<u32>()).prop_map(|(k, s)| Op::Build(k, s)),
        1 => (addr(), 0..KINDS).prop_map(|(a, k)| Op::Ecreate(a, k)),
        4 => (any::<u32>(), 0..VA_SLOTS).prop_map(|(p, s)| Op::Evict(p, s)),
        3 => (any::<u32>(), proptest::option::weighted(0.3, addr())).prop_map(|(p, a)| Op::Reload(p, a)),
        2 => addr().prop_map(Op::Eblock),
        2 => addr().prop_map(Op::Etrack),
        2 => (addr(), 0..VA_SLOTS).prop_map(|(a, s)| Op::Ewb(a, s)),
        2 => addr().prop_map(Op::Eremove),
        4 => (addr(), 0u64..512).prop_map(|(a, q)| Op::Edbgrd(a, q)),
        1 => proptest::option::weighted(0.5, addr()).prop_map(Op::Epa),
        2 => (0u8..3, any::<u32>(), any::<bool>(), 0u8..5)
            .prop_map(|(other, pick, mapped, leaf)| Op::Probe { other, pick, mapped, leaf }),
    ]
}

// ---------------------------------------------------------------------------------------------
// A guest and its model of its own vEPC.

/// What a leaf answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// A leaf that reports only through faults (ECREATE, EADD, EEXTEND, EPA) completed.
    Done,
    /// A status in RAX/RFLAGS.
    Status(LeafStatus),
    /// EDBGRD's data.
    Value(u64),
    /// An exception.
    Fault(Exception),
}

use Outcome::{Done, Fault, Status, Value};

const SUCCESS: Outcome = Status(LeafStatus::Success);

fn error(e: SgxError) -> Outcome {
    Status(LeafStatus::Error(e))
}

fn info(e: SgxError) -> Outcome {
    Status(LeafStatus::Info(e))
}

/// The fault an EPCM check raises at ring 0 on this SGX2 platform.
fn epcm_fault(linear: u64) -> Outcome {
    Fault(Exception::PageFault { linear, error_code: pfec::P | pfec::W | pfec::SGX })
}

const GP: Outcome = Fault(Exception::GP0);

/// One page of the guest's vEPC as the model knows it (absent = invalid).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Page {
    Secs(usize),
    Reg { enclave: usize, offset: u64, blocked: Option<u64> },
    Va,
}

/// Where an enclave page is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Loc {
    Resident(u64),
    Evicted { va: u64, slot: u64, buf: u64 },
}

/// What a VA slot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Held {
    /// An enclave page that can be reloaded (its enclave is alive).
    Page { enclave: usize, offset: u64, buf: u64 },
    /// A SECS or VA page, or a page whose enclave is gone: the slot is occupied, nothing to reload.
    Opaque,
}

#[derive(Debug)]
struct EnclaveModel {
    secs: u64,
    base: u64,
    debug: bool,
    alive: bool,
    /// TRK epoch (ETRACKs so far).
    epoch: u64,
    children: u64,
    pages: BTreeMap<u64, Loc>,
    content: BTreeMap<u64, Box<[u8; 4096]>>,
}

/// What the guests publish for each other: their valid vEPC GPAs.
struct World<'a> {
    domains: &'a [Domain],
    published: [Mutex<Vec<u64>>; 3],
}

#[derive(Debug, Default, Clone, Copy)]
struct Coverage {
    leaves: u64,
    foreign_named: u64,
    foreign_hit_own_valid: u64,
    evictions: u64,
    reloads: u64,
    edbgrd_checked: u64,
    probes: u64,
}

#[derive(Debug)]
struct Guest {
    index: usize,
    os: SimpleOs<Vcpu>,
    vepc_pages: u64,
    epc: BTreeMap<u64, Page>,
    free: BTreeSet<u64>,
    enclaves: Vec<EnclaveModel>,
    slots: BTreeMap<(u64, u64), Held>,
    next_buf: u64,
    cov: Coverage,
}

impl Guest {
    fn boot(index: usize, d: &Domain) -> Self {
        let os = SimpleOs::boot_in(d.vcpu(0).expect("vCPU 0"), RAM, 0..OS_WINDOW).expect("guest boots");
        let vepc_pages = VEPC_MIB[index] << 8;
        Self {
            index,
            os,
            vepc_pages,
            epc: BTreeMap::new(),
            free: (0..vepc_pages).map(|i| EPC_GPA + i * 4096).collect(),
            enclaves: Vec::new(),
            slots: BTreeMap::new(),
            next_buf: 0,
            cov: Coverage::default(),
        }
    }

    fn ctx(&self) -> String {
        let pages: Vec<String> = self.epc.iter().map(|(gpa, page)| format!("{gpa:#x}: {page:?}")).collect();
        format!("domain {}'s model of its vEPC: {{{}}}", self.index, pages.join(", "))
    }

    /// Runs a leaf on the guest's vCPU. Leaves that do not write RAX report `Done`.
    fn run(&mut self, leaf: Encls, rbx: u64, rcx: u64, rdx: u64) -> Outcome {
        self.cov.leaves += 1;
        match self.os.cpu().encls_leaf(leaf, rbx, rcx, rdx) {
            Err(e) => Fault(e),
            Ok(_) if matches!(leaf, Encls::Ecreate | Encls::Eadd | Encls::Eextend | Encls::Epa) => Done,
            Ok(regs) if leaf == Encls::Edbgrd && regs.status() == LeafStatus::Success => Value(regs.rbx),
            Ok(regs) => Status(regs.status()),
        }
    }

    fn expect(&mut self, leaf: Encls, rbx: u64, rcx: u64, rdx: u64, expected: Outcome) {
        let got = self.run(leaf, rbx, rcx, rdx);
        assert_eq!(got, expected, "{leaf} rbx={rbx:#x} rcx={rcx:#x} rdx={rdx:#x}; {}", self.ctx());
    }

    /// The model's view of a linear (= guest-physical, identity-mapped) address: the fault a
    /// leaf takes resolving it when it is outside the vEPC, else the page there.
    fn locate(&self, la: u64) -> Result<Option<Page>, Outcome> {
        let end = EPC_GPA + self.vepc_pages * 4096;
        if (EPC_GPA..end).contains(&la) {
            return Ok(self.epc.get(&(la & !0xFFF)).copied());
        }
        // Mapped by the guest (2 MiB pages) but not vEPC: the p2m has no EPC there.
        let mapped = (EPC_GPA..end.next_multiple_of(2 << 20)).contains(&la);
        let error_code = if mapped { pfec::P | pfec::SGX } else { 0 };
        Err(Fault(Exception::PageFault { linear: la, error_code }))
    }

    fn resolve(&mut self, a: Addr, world: &World<'_>) -> u64 {
        let any = |n: u64| EPC_GPA + n % u64::from(MAX_VEPC_PAGES) * 4096;
        match a {
            Addr::Own(pick) => match self.epc.len() {
                0 => any(u64::from(pick)),
                n => *self.epc.keys().nth(pick as usize % n).unwrap_or(&EPC_GPA),
            },
            Addr::Foreign(other, pick) => {
                self.cov.foreign_named += 1;
                let list = world.published[(self.index + other as usize) % 3].lock().unwrap().clone();
                let gpa = if list.is_empty() { any(u64::from(pick)) } else { list[pick as usize % list.len()] };
                if self.epc.contains_key(&gpa) {
                    self.cov.foreign_hit_own_valid += 1;
                }
                gpa
            }
            Addr::Any(n) => any(u64::from(n)),
        }
    }

    /// A free page among the lowest [`ALLOC_WINDOW`] free GPAs (the leaf that fills it takes it).
    fn pick_free(&self, seed: u64) -> Option<u64> {
        let n = self.free.len().min(ALLOC_WINDOW);
        self.free.iter().nth((seed % n.max(1) as u64) as usize).copied()
    }

    fn set(&mut self, gpa: u64, page: Page) {
        self.free.remove(&gpa);
        self.epc.insert(gpa, page);
    }

    fn clear(&mut self, gpa: u64) {
        self.epc.remove(&gpa);
        self.free.insert(gpa);
    }

    fn scratch<T: ArchStruct>(&mut self, v: &T) -> u64 {
        self.os.scratch(v.bytes(), T::ALIGN as u64).expect("scratch")
    }

    // --- model bookkeeping ---------------------------------------------------------------------

    /// An enclave's SECS is gone (EREMOVE or EWB): its evicted pages can never be reloaded.
    fn kill(&mut self, e: usize) {
        let enclave = &mut self.enclaves[e];
        enclave.alive = false;
        for loc in std::mem::take(&mut enclave.pages).into_values() {
            if let Loc::Evicted { va, slot, .. } = loc {
                self.slots.insert((va, slot), Held::Opaque);
            }
        }
    }

    /// Whatever a VA slot held is lost (overwritten, or its VA page is gone).
    fn lose(&mut self, held: Option<Held>) {
        if let Some(Held::Page { enclave, offset, .. }) = held {
            self.enclaves[enclave].pages.remove(&offset);
        }
    }

    /// A VA page is gone: every slot in it is lost.
    fn drop_va(&mut self, va: u64) {
        let keys: Vec<_> = self.slots.range((va, 0)..(va, 512)).map(|(k, _)| *k).collect();
        for k in keys {
            let held = self.slots.remove(&k);
            self.lose(held);
        }
    }

    // --- leaves, each predicted from the model, executed, compared, applied ----------------------

    fn eblock(&mut self, la: u64) -> Outcome {
        let expected = match self.locate(la) {
            Err(f) => f,
            Ok(None) => error(SgxError::PgInvld),
            Ok(Some(Page::Secs(_))) => info(SgxError::PgIsSecs),
            Ok(Some(Page::Va)) => info(SgxError::Notblockable),
            Ok(Some(Page::Reg { blocked: Some(_), .. })) => info(SgxError::Blkstate),
            Ok(Some(Page::Reg { blocked: None, .. })) => SUCCESS,
        };
        self.expect(Encls::Eblock, 0, la, 0, expected);
        if let Some(Page::Reg { enclave, offset, .. }) = self.epc.get(&la).copied().filter(|_| expected == SUCCESS) {
            let epoch = self.enclaves[enclave].epoch;
            self.epc.insert(la, Page::Reg { enclave, offset, blocked: Some(epoch) });
        }
        expected
    }

    fn etrack(&mut self, la: u64) -> Outcome {
        let expected = match self.locate(la) {
            Err(f) => f,
            Ok(Some(Page::Secs(_))) => SUCCESS,
            Ok(_) => epcm_fault(la),
        };
        self.expect(Encls::Etrack, 0, la, 0, expected);
        if let Some(Page::Secs(e)) = self.epc.get(&la).copied().filter(|_| expected == SUCCESS) {
            self.enclaves[e].epoch += 1;
        }
        expected
    }

    /// A VA page to evict into, created with EPA when there is none.
    fn va_page(&mut self, seed: u64) -> Option<u64> {
        let vas: Vec<u64> = self.epc.iter().filter(|(_, p)| **p == Page::Va).map(|(g, _)| *g).collect();
        if !vas.is_empty() {
            return Some(vas[(seed % vas.len() as u64) as usize]);
        }
        let gpa = self.pick_free(seed)?;
        (self.epa(gpa) == Done).then_some(gpa)
    }

    fn epa(&mut self, la: u64) -> Outcome {
        let expected = match self.locate(la) {
            Err(f) => f,
            Ok(Some(_)) => epcm_fault(la),
            Ok(None) => Done,
        };
        self.expect(Encls::Epa, PageType::Va as u64, la, 0, expected);
        if expected == Done {
            self.set(la, Page::Va);
        }
        expected
    }

    fn ewb(&mut self, la: u64, va: u64, slot: u64) -> Outcome {
        let buf = self.next_buf % BUFFERS;
        let (blob, pcmd) = (BLOBS + buf * 4096, PCMDS + buf * 128);
        let pi = self.scratch(&Pageinfo { linaddr: 0, srcpge: blob, secinfo_or_pcmd: pcmd, secs: 0 });
        let occupied = self.slots.contains_key(&(va, slot));
        let done = if occupied { info(SgxError::VaSlotOccupied) } else { SUCCESS };
        let target = self.locate(la);
        let expected = match target {
            Err(f) => f,
            _ if la & !0xFFF == va => GP,
            Ok(None) => epcm_fault(la),
            Ok(Some(Page::Reg { blocked: None, .. })) => error(SgxError::PageNotBlocked),
            Ok(Some(Page::Reg { enclave, blocked: Some(b), .. })) if self.enclaves[enclave].epoch < b + 1 => {
                error(SgxError::NotTracked)
            }
            Ok(Some(Page::Secs(e))) if self.enclaves[e].children > 0 => error(SgxError::ChildPresent),
            Ok(Some(_)) => done,
        };
        self.expect(Encls::Ewb, pi, la, va + 8 * slot, expected);
        self.os.reset_scratch();
        if expected != done {
            return expected;
        }
        self.next_buf += 1;
        self.cov.evictions += 1;
        let previous = self.slots.remove(&(va, slot));
        self.lose(previous);
        let held = match target {
            Ok(Some(Page::Reg { enclave, offset, .. })) => {
                let e = &mut self.enclaves[enclave];
                e.children -= 1;
                e.pages.insert(offset, Loc::Evicted { va, slot, buf });
                Held::Page { enclave, offset, buf }
            }
            Ok(Some(Page::Secs(e))) => {
                self.kill(e);
                Held::Opaque
            }
            _ => {
                self.drop_va(la);
                Held::Opaque
            }
        };
        self.slots.insert((va, slot), held);
        self.clear(la);
        expected
    }

    /// ELDU of the page held in `(va, slot)` into `la`.
    fn eldu(&mut self, va: u64, slot: u64, la: u64) -> Outcome {
        let Some(Held::Page { enclave, offset, buf }) = self.slots.get(&(va, slot)).copied() else {
            unreachable!("only reloadable slots are reloaded")
        };
        let (secs, base) = (self.enclaves[enclave].secs, self.enclaves[enclave].base);
        let info =
            Pageinfo { linaddr: base + offset, srcpge: BLOBS + buf * 4096, secinfo_or_pcmd: PCMDS + buf * 128, secs };
        let pi = self.scratch(&info);
        let expected = match self.locate(la) {
            Err(f) => f,
            _ if la & !0xFFF == va => GP,
            Ok(Some(_)) => epcm_fault(la),
            Ok(None) => SUCCESS,
        };
        self.expect(Encls::Eldu, pi, la, va + 8 * slot, expected);
        self.os.reset_scratch();
        if expected == SUCCESS {
            self.cov.reloads += 1;
            self.slots.remove(&(va, slot));
            let e = &mut self.enclaves[enclave];
            e.children += 1;
            e.pages.insert(offset, Loc::Resident(la));
            self.set(la, Page::Reg { enclave, offset, blocked: None });
        }
        expected
    }

    fn eremove(&mut self, la: u64) -> Outcome {
        let target = self.locate(la);
        let expected = match target {
            Err(f) => f,
            Ok(Some(Page::Secs(e))) if self.enclaves[e].children > 0 => error(SgxError::ChildPresent),
            Ok(_) => SUCCESS,
        };
        self.expect(Encls::Eremove, 0, la, 0, expected);
        if expected == SUCCESS {
            match target {
                Ok(Some(Page::Secs(e))) => self.kill(e),
                Ok(Some(Page::Reg { enclave, offset, .. })) => {
                    let e = &mut self.enclaves[enclave];
                    e.children -= 1;
                    e.pages.remove(&offset);
                }
                Ok(Some(Page::Va)) => self.drop_va(la),
                _ => {}
            }
            if target != Ok(None) {
                self.clear(la);
            }
        }
        expected
    }

    fn edbgrd(&mut self, la: u64) -> Outcome {
        let got = self.run(Encls::Edbgrd, 0, la, 0);
        let offset_in_page = (la & 0xFFF) as usize;
        let ok = match self.locate(la) {
            Err(f) => got == f,
            Ok(None | Some(Page::Secs(_))) => got == epcm_fault(la),
            Ok(Some(Page::Va)) => {
                // The slot's version number, condensed to 0 / all-ones (its value is the platform's).
                let occupied = self.slots.contains_key(&(la & !0xFFF, offset_in_page as u64 / 8));
                if occupied { matches!(got, Value(0 | u64::MAX)) } else { got == Value(0) }
            }
            Ok(Some(Page::Reg { enclave, offset, .. })) => {
                let e = &self.enclaves[enclave];
                if e.debug {
                    self.cov.edbgrd_checked += 1;
                    let mut q = [0u8; 8];
                    q.copy_from_slice(&e.content[&offset][offset_in_page..offset_in_page + 8]);
                    got == Value(u64::from_le_bytes(q))
                } else {
                    got == GP
                }
            }
        };
        assert!(ok, "EDBGRD {la:#x}: {got:?}; {}", self.ctx());
        got
    }

    // --- composite operations ------------------------------------------------------------------

    /// ECREATE (trapped by the hypervisor: operands copied and checked against the guest's
    /// CPUID) of an enclave of `kind` into `la`; on success the model gains an empty enclave.
    fn ecreate(&mut self, la: u64, kind: usize) -> Outcome {
        let image = &images()[self.index][kind];
        let base = default_base(image.plan.size, true);
        let mut secs = Secs::zeroed();
        secs.size = image.plan.size;
        secs.baseaddr = base;
        secs.ssaframesize = image.plan.ssaframesize;
        secs.miscselect = image.sig.miscselect;
        secs.attributes = image.sig.attributes;
        let src = self.os.scratch(secs.bytes(), 4096).expect("scratch");
        let secinfo = self.scratch(&Secinfo::new(PageType::Secs, SecinfoFlags::empty()));
        let pi = self.scratch(&Pageinfo { linaddr: 0, srcpge: src, secinfo_or_pcmd: secinfo, secs: 0 });
        let expected = match self.locate(la) {
            Err(f) => f,
            Ok(Some(_)) => epcm_fault(la),
            Ok(None) => Done,
        };
        self.expect(Encls::Ecreate, pi, la, 0, expected);
        self.os.reset_scratch();
        if expected == Done {
            self.set(la, Page::Secs(self.enclaves.len()));
            self.enclaves.push(EnclaveModel {
                secs: la,
                base,
                debug: image.debug,
                alive: true,
                epoch: 0,
                children: 0,
                pages: BTreeMap::new(),
                content: BTreeMap::new(),
            });
        }
        expected
    }

    /// Builds an enclave of `kind` with the guest's own ECREATE/EADD/EEXTEND/EINIT, then stamps
    /// every page of a debug enclave with EDBGWR (domain, enclave number, offset).
    fn build(&mut self, kind: usize, seed: u32) {
        let image = &images()[self.index][kind];
        if (self.free.len() as u64) < image.plan.pages.len() as u64 + 1 {
            return;
        }
        let mut rng = u64::from(seed);
        let mut next = || {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            rng >> 33
        };
        let secs_gpa = self.pick_free(next()).expect("free page");
        assert_eq!(self.ecreate(secs_gpa, kind), Done);
        let e = self.enclaves.len() - 1;
        let base = self.enclaves[e].base;
        let mut enclave = self.enclaves.pop().expect("the enclave just created");
        for page in &image.plan.pages {
            let gpa = self.pick_free(next()).expect("free page");
            let src = self.os.scratch(&page.content[..], 4096).expect("scratch");
            let secinfo = self.scratch(&page.secinfo());
            let pi = self.scratch(&Pageinfo {
                linaddr: base + page.offset,
                srcpge: src,
                secinfo_or_pcmd: secinfo,
                secs: secs_gpa,
            });
            self.expect(Encls::Eadd, pi, gpa, 0, Done);
            for chunk in page.measured_chunks() {
                self.expect(Encls::Eextend, secs_gpa, gpa + chunk.offset() as u64, 0, Done);
            }
            self.os.reset_scratch();
            self.set(gpa, Page::Reg { enclave: e, offset: page.offset, blocked: None });
            enclave.children += 1;
            enclave.pages.insert(page.offset, Loc::Resident(gpa));
            enclave.content.insert(page.offset, page.content.clone());
        }
        let status = self.os.einit(secs_gpa, &image.sig).expect("EINIT runs");
        assert_eq!(status, LeafStatus::Success, "domain {} enclave {e} launches", self.index);
        if image.debug {
            for (&offset, &loc) in &enclave.pages {
                let Loc::Resident(gpa) = loc else { unreachable!() };
                let stamp = (self.index as u64 + 1) << 56 | (e as u64) << 24 | offset;
                let r = self.os.cpu().encls_leaf(Encls::Edbgwr, stamp, gpa, 0).map(|r| r.status());
                assert_eq!(r, Ok(LeafStatus::Success), "EDBGWR");
                enclave.content.get_mut(&offset).expect("content")[..8].copy_from_slice(&stamp.to_le_bytes());
            }
        }
        self.enclaves.push(enclave);
    }

    fn resident_pages(&self) -> Vec<u64> {
        self.epc.iter().filter(|(_, p)| matches!(p, Page::Reg { .. })).map(|(g, _)| *g).collect()
    }

    fn reloadable(&self) -> Vec<(u64, u64)> {
        self.slots.iter().filter(|(_, h)| matches!(h, Held::Page { .. })).map(|(k, _)| *k).collect()
    }

    fn evict(&mut self, pick: u32, slot: u64) {
        let pages = self.resident_pages();
        if pages.is_empty() {
            return;
        }
        let la = pages[pick as usize % pages.len()];
        let Some(Page::Reg { enclave, .. }) = self.epc.get(&la).copied() else { unreachable!() };
        let Some(va) = self.va_page(u64::from(pick)) else { return };
        self.eblock(la);
        let secs = self.enclaves[enclave].secs;
        assert_eq!(self.etrack(secs), SUCCESS);
        let r = self.ewb(la, va, slot);
        assert!(r == SUCCESS || r == info(SgxError::VaSlotOccupied), "{r:?}");
    }

    fn reload(&mut self, pick: u32, target: Option<u64>) {
        let held = self.reloadable();
        if held.is_empty() {
            return;
        }
        let (va, slot) = held[pick as usize % held.len()];
        let la = match target {
            Some(la) => la,
            None => match self.pick_free(u64::from(pick)) {
                Some(gpa) => gpa,
                None => return,
            },
        };
        self.eldu(va, slot, la);
    }

    /// Names another domain's (or its own) host EPC address: never an EPC page for a guest.
    fn probe(&mut self, world: &World<'_>, other: u8, pick: u32, mapped: bool, leaf: u8) {
        self.cov.probes += 1;
        let d = (self.index + other as usize) % 3;
        let pages = VEPC_MIB[d] << 8;
        let gpa = EPC_GPA + u64::from(pick) % pages * 4096;
        let hpa = world.domains[d].shared().epc_of(gpa).expect("static vEPC is backed");
        let (la, expected) = if mapped {
            self.os.map_page(PROBE_LA, hpa).expect("map");
            (PROBE_LA, Exception::PageFault { linear: PROBE_LA, error_code: pfec::P | pfec::SGX })
        } else {
            (hpa, Exception::PageFault { linear: hpa, error_code: 0 })
        };
        let (leaf, rbx) = match leaf {
            0 => (Encls::Edbgrd, 0),
            1 => (Encls::Eremove, 0),
            2 => (Encls::Eblock, 0),
            3 => (Encls::Etrack, 0),
            _ => (Encls::Epa, PageType::Va as u64),
        };
        self.expect(leaf, rbx, la, 0, Fault(expected));
    }

    fn step(&mut self, op: Op, world: &World<'_>) {
        match op {
            Op::Build(kind, seed) => self.build(kind, seed),
            Op::Ecreate(a, kind) => {
                let la = self.resolve(a, world);
                self.ecreate(la, kind);
            }
            Op::Evict(pick, slot) => self.evict(pick, slot),
            Op::Reload(pick, target) => {
                let la = target.map(|a| self.resolve(a, world));
                self.reload(pick, la);
            }
            Op::Eblock(a) => {
                let la = self.resolve(a, world);
                self.eblock(la);
            }
            Op::Etrack(a) => {
                let la = self.resolve(a, world);
                self.etrack(la);
            }
            Op::Ewb(a, slot) => {
                let la = self.resolve(a, world);
                if let Some(va) = self.va_page(slot) {
                    self.ewb(la, va, slot);
                }
            }
            Op::Eremove(a) => {
                let la = self.resolve(a, world);
                self.eremove(la);
            }
            Op::Edbgrd(a, q) => {
                let la = self.resolve(a, world);
                self.edbgrd(la + 8 * q);
            }
            Op::Epa(a) => {
                let la = match a {
                    Some(a) => self.resolve(a, world),
                    None => match self.pick_free(0) {
                        Some(gpa) => gpa,
                        None => return,
                    },
                };
                self.epa(la);
            }
            Op::Probe { other, pick, mapped, leaf } => self.probe(world, other, pick, mapped, leaf),
        }
        *world.published[self.index].lock().unwrap() = self.epc.keys().copied().collect();
    }

    /// The owner's final check: every page of every live enclave is reloaded if evicted and read
    /// back in full with EDBGRD (a production enclave's pages answer #GP).
    fn verify(&mut self) {
        for e in 0..self.enclaves.len() {
            if !self.enclaves[e].alive {
                continue;
            }
            let locs: Vec<(u64, Loc)> = self.enclaves[e].pages.iter().map(|(o, l)| (*o, *l)).collect();
            for (offset, loc) in locs {
                let gpa = match loc {
                    Loc::Resident(gpa) => gpa,
                    Loc::Evicted { va, slot, .. } => {
                        let gpa = self.pick_free(offset).expect("room to reload");
                        assert_eq!(self.eldu(va, slot, gpa), SUCCESS, "reload for verification");
                        gpa
                    }
                };
                if self.enclaves[e].debug {
                    for q in 0..512 {
                        self.edbgrd(gpa + 8 * q);
                    }
                } else {
                    assert_eq!(self.edbgrd(gpa), GP, "production enclave page");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The property.

fn manager() -> Arc<EpcManager> {
    let mut cfg = config::embedded_default();
    cfg.seed = Some(5);
    Arc::new(EpcManager::new(Platform::new(cfg)))
}

fn spec(i: usize) -> DomainSpec {
    DomainSpec {
        name: format!("guest{i}"),
        uuid: [i as u8 + 1; 16],
        vcpus: 1,
        ram: vec![(0, RAM)],
        epc: vec![VepcSection { gpa: EPC_GPA, size: VEPC_MIB[i] << 20, node: (i % 2) as u32 }],
        features: SgxFeatures::default(),
        launch: LaunchControl::default(),
        provision: false,
    }
}

/// Counts a guest thread out, even when it panics (so the auditor stops).
struct Finished<'a>(&'a AtomicUsize);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
}

fn scenario(ops: &[Vec<Op>; 3]) -> Coverage {
    let epc = manager();
    let domains: Vec<Domain> =
        (0..3).map(|i| Domain::create(DomainId(i as u32 + 1), spec(i), Arc::clone(&epc)).expect("domain")).collect();
    epc.audit().expect("audit after creation");
    let world = World { domains: &domains, published: Default::default() };
    let guests: Vec<Guest> = domains.iter().enumerate().map(|(i, d)| Guest::boot(i, d)).collect();

    let start = Barrier::new(3);
    let running = AtomicUsize::new(3);
    let mut guests: Vec<Guest> = std::thread::scope(|s| {
        // Meanwhile the hypervisor's accounting stays conserved and audit-clean.
        let auditor = s.spawn(|| {
            while running.load(Ordering::Acquire) > 0 {
                epc.check_conservation().expect("conservation while the guests run");
                epc.audit().expect("audit while the guests run");
                std::thread::yield_now();
            }
        });
        let handles: Vec<_> = guests
            .into_iter()
            .zip(ops)
            .map(|(mut g, ops)| {
                let (world, start, running) = (&world, &start, &running);
                s.spawn(move || {
                    let _done = Finished(running);
                    start.wait();
                    for &op in ops {
                        g.step(op, world);
                    }
                    g
                })
            })
            .collect();
        let guests = handles.into_iter().map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect();
        auditor.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        guests
    });

    // Every owner finds its pages as it left them, whatever the others did meanwhile.
    for g in &mut guests {
        g.verify();
    }
    let census = epc.platform().census().expect("EPCM invariants");
    let count =
        |f: fn(&Page) -> bool| guests.iter().map(|g| g.epc.values().filter(|p| f(p)).count() as u64).sum::<u64>();
    assert_eq!(census.valid, count(|_| true), "valid EPC pages = the three models' pages");
    assert_eq!(census.secs, count(|p| matches!(p, Page::Secs(_))));
    assert_eq!(census.va, count(|p| *p == Page::Va));
    assert_eq!(census.children, count(|p| matches!(p, Page::Reg { .. })));
    for g in &guests {
        for e in g.enclaves.iter().filter(|e| e.alive) {
            let resident = e.pages.values().filter(|l| matches!(l, Loc::Resident(_))).count() as u64;
            assert_eq!(e.children, resident, "domain {}: children of SECS {:#x}", g.index, e.secs);
        }
    }

    // Accounting: conserved, audit clean, every backing page still owned by its own domain.
    epc.check_conservation().expect("conservation");
    epc.audit().expect("audit");
    let stats = epc.stats();
    for (i, d) in domains.iter().enumerate() {
        let id = DomainId(i as u32 + 1);
        assert_eq!(stats.per_domain[&id].resident, VEPC_MIB[i] << 8);
        for &hpa in d.epc_pages() {
            assert_eq!(epc.page_state(hpa).expect("page"), PageState::Owned(Owner::Domain(id)));
        }
    }

    // Teardown returns everything.
    let coverage = guests.iter().fold(Coverage::default(), |a, g| Coverage {
        leaves: a.leaves + g.cov.leaves,
        foreign_named: a.foreign_named + g.cov.foreign_named,
        foreign_hit_own_valid: a.foreign_hit_own_valid + g.cov.foreign_hit_own_valid,
        evictions: a.evictions + g.cov.evictions,
        reloads: a.reloads + g.cov.reloads,
        edbgrd_checked: a.edbgrd_checked + g.cov.edbgrd_checked,
        probes: a.probes + g.cov.probes,
    });
    drop(guests);
    for d in domains {
        let report = d.destroy().expect("destroy");
        assert!(report.quarantined.is_empty(), "{report:?}");
    }
    let stats = epc.stats();
    assert_eq!(stats.free, stats.total, "destroy returns every page: {stats:?}");
    assert_eq!((stats.hypervisor, stats.quarantined), (0, 0));
    assert!(stats.per_domain.is_empty(), "{:?}", stats.per_domain);
    epc.check_conservation().expect("conservation after teardown");
    epc.audit().expect("audit after teardown");
    assert_eq!(epc.platform().census().expect("census").valid, 0);
    coverage
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn three_domains_on_three_threads_cannot_affect_each_other(
        ops in proptest::array::uniform3(proptest::collection::vec(op(), 16..96))
    ) {
        scenario(&ops);
    }
}

/// One longer fixed run that must reach every interesting path (evictions, reloads, foreign GPAs
/// landing on the guest's own pages, probes of host addresses).
#[test]
fn a_long_fixed_run_reaches_every_path() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    let ops =
        proptest::array::uniform3(proptest::collection::vec(op(), 200)).new_tree(&mut runner).expect("ops").current();
    let c = scenario(&ops);
    assert!(c.evictions > 20 && c.reloads > 10, "{c:?}");
    assert!(c.foreign_named > 30 && c.foreign_hit_own_valid > 10, "{c:?}");
    assert!(c.edbgrd_checked > 5000 && c.probes > 10, "{c:?}");
}
