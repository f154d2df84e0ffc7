//! Test harness: a booted bare-metal machine and programmable test enclaves.
#![allow(dead_code, unused_imports)]

pub mod wasm;

use std::collections::BTreeMap;
use std::sync::Arc;

use vsgx_hw::config;
use vsgx_hw::cpu::BareMetalCpu;
use vsgx_hw::leaves::EnclaveMode;
use vsgx_hw::os::SimpleOs;
use vsgx_hw::platform::Platform;
use vsgx_isa::cpu::{Cpl, Cpu, Exception, Gprs, LeafStatus};
use vsgx_isa::leaf::{Encls, Enclu, Enclv};
use vsgx_isa::measure::Measurement;
use vsgx_isa::signing::{SigningKey, SigstructBody};
use vsgx_isa::{
    ArchStruct, Attributes, AttributesFlags, PageType, Pageinfo, Secinfo, SecinfoFlags, Secs, Sigstruct, secinfo_flags,
};

pub const KEY_PEM: &str = include_str!("../../../vsgx-isa/tests/data/test-key.pem");
pub const FORTANIX_SGXS: &[u8] = include_bytes!("../../../../testdata/fortanix-test-enclave.sgxs");
pub const FORTANIX_SIG: &[u8] = include_bytes!("../../../../testdata/fortanix-test-enclave.sig");

/// A booted machine on a deterministic (seeded) embedded platform.
pub struct Machine {
    pub platform: Arc<Platform>,
    pub os: SimpleOs<BareMetalCpu>,
}

impl Machine {
    /// The embedded platform with fuses from `seed`.
    pub fn seeded(seed: u64) -> Self {
        let mut cfg = config::embedded_default();
        cfg.seed = Some(seed);
        Self::with_config(cfg)
    }

    pub fn new() -> Self {
        Self::seeded(7)
    }

    pub fn with_config(cfg: config::PlatformConfig) -> Self {
        let platform = Platform::new(cfg);
        Self::on(platform)
    }

    /// Another logical processor (a fresh OS view) on the same platform, using all of RAM.
    pub fn on(platform: Arc<Platform>) -> Self {
        let ram = platform.ram().size();
        let os = SimpleOs::boot(BareMetalCpu::new(Arc::clone(&platform)), ram).expect("boot");
        Self { platform, os }
    }

    /// Logical processor number `n` of several sharing one platform: its OS keeps page tables and
    /// scratch memory in the n-th 64 MiB of RAM.
    pub fn on_cpu(platform: Arc<Platform>, n: u64) -> Self {
        let ram = platform.ram().size();
        let window = n * (64 << 20)..(n + 1) * (64 << 20);
        let os = SimpleOs::boot_in(BareMetalCpu::new(Arc::clone(&platform)), ram, window).expect("boot");
        Self { platform, os }
    }

    /// Copies a structure into scratch RAM at its architectural operand alignment.
    pub fn put<T: ArchStruct>(&mut self, v: &T) -> u64 {
        self.os.scratch(v.bytes(), T::ALIGN as u64).expect("scratch")
    }

    pub fn put_bytes(&mut self, bytes: &[u8], align: u64) -> u64 {
        self.os.scratch(bytes, align).expect("scratch")
    }

    /// Reads memory through the CPU (ring 0, non-enclave).
    pub fn read(&mut self, la: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        self.os.cpu().read(la, &mut buf).expect("read");
        buf
    }

    pub fn encls(&mut self, leaf: Encls, rbx: u64, rcx: u64, rdx: u64) -> Result<Gprs, Exception> {
        self.os.cpu().encls_leaf(leaf, rbx, rcx, rdx)
    }

    pub fn status(&mut self, leaf: Encls, rbx: u64, rcx: u64, rdx: u64) -> Result<LeafStatus, Exception> {
        self.encls(leaf, rbx, rcx, rdx).map(|r| r.status())
    }

    pub fn enclv(&mut self, leaf: Enclv, rbx: u64, rcx: u64, rdx: u64) -> Result<Gprs, Exception> {
        self.os.cpu().set_vmx_root(true);
        let r = self.os.cpu().enclv_leaf(leaf, rbx, rcx, rdx);
        self.os.cpu().set_vmx_root(false);
        r
    }

    pub fn epc_page(&mut self) -> u64 {
        self.os.alloc_epc().expect("free EPC")
    }

    /// ECREATE of `secs` into a fresh EPC page.
    pub fn ecreate(&mut self, secs: &Secs) -> Result<u64, Exception> {
        let epc = self.epc_page();
        let src = self.put_bytes(secs.bytes(), 4096);
        let secinfo = self.put(&Secinfo::new(PageType::Secs, SecinfoFlags::empty()));
        let pi = self.put(&Pageinfo { linaddr: 0, srcpge: src, secinfo_or_pcmd: secinfo, secs: 0 });
        self.encls(Encls::Ecreate, pi, epc, 0)?;
        self.os.reset_scratch();
        Ok(epc)
    }

    /// EADD of `content` at `linaddr` with SECINFO.FLAGS `flags` into a fresh EPC page (mapped at
    /// `linaddr`).
    pub fn eadd(&mut self, secs: u64, linaddr: u64, flags: u64, content: &[u8; 4096]) -> Result<u64, Exception> {
        let epc = self.epc_page();
        let src = self.put_bytes(content, 4096);
        let secinfo = self.put(&Secinfo::from_raw_flags(flags));
        let pi = self.put(&Pageinfo { linaddr, srcpge: src, secinfo_or_pcmd: secinfo, secs });
        self.encls(Encls::Eadd, pi, epc, 0)?;
        self.os.reset_scratch();
        self.os.map_page(linaddr, epc).expect("map");
        Ok(epc)
    }

    /// EEXTEND of all 16 chunks of an EPC page.
    pub fn eextend_page(&mut self, secs: u64, epc: u64) -> Result<(), Exception> {
        for c in 0..16 {
            self.encls(Encls::Eextend, secs, epc + c * 256, 0)?;
        }
        Ok(())
    }

    /// Builds, signs and initializes a test enclave.
    pub fn enclave(&mut self, spec: &EnclaveSpec) -> TestEnclave {
        let key = SigningKey::from_pem(KEY_PEM).expect("test key");
        let size = spec.size;
        let base = 0x1000_0000_0000u64.next_multiple_of(size) + spec.base_slot * size;
        let mut flags = AttributesFlags::MODE64BIT | spec.extra_flags;
        if spec.debug {
            flags |= AttributesFlags::DEBUG;
        }
        let mut secs = Secs::zeroed();
        secs.size = size;
        secs.baseaddr = base;
        secs.ssaframesize = 1;
        secs.miscselect = spec.miscselect;
        secs.attributes = Attributes { flags: flags.bits(), xfrm: 3 };
        let secs_epc = self.ecreate(&secs).expect("ECREATE");
        let mut m = Measurement::new();
        m.ecreate(1, size);
        let mut pages = BTreeMap::new();
        for (offset, flags, content) in spec.layout() {
            let epc = self.eadd(secs_epc, base + offset, flags, &content).expect("EADD");
            self.eextend_page(secs_epc, epc).expect("EEXTEND");
            let effective = if flags >> 8 == PageType::Tcs as u64 { flags & !7 } else { flags };
            m.eadd(offset, effective);
            let mut stored = content;
            if flags >> 8 == PageType::Tcs as u64 {
                stored[0..8].fill(0);
                stored[8] &= !1;
                stored[24..28].fill(0);
                stored[40..48].fill(0);
            }
            for c in 0..16 {
                let chunk: &[u8; 256] = stored[c * 256..c * 256 + 256].try_into().unwrap();
                m.eextend(offset + (c * 256) as u64, chunk);
            }
            pages.insert(offset, epc);
        }
        let body = SigstructBody {
            date: 0x2026_0101,
            attributes: Attributes { flags: flags.bits(), xfrm: 3 },
            attributemask: Attributes { flags: !0, xfrm: !0 },
            miscselect: spec.miscselect,
            isvprodid: spec.isvprodid,
            isvsvn: spec.isvsvn,
            ..SigstructBody::default()
        };
        let sig = key.sign(&body, m.finalize()).expect("sign");
        let status = self.os.einit(secs_epc, &sig).expect("EINIT runs");
        assert_eq!(status, LeafStatus::Success, "test enclave launches");
        let mode = EnclaveMode::of(&self.platform, secs_epc).expect("initialized");
        TestEnclave { secs: secs_epc, base, size, pages, sig, mode, mrsigner: key.mrsigner() }
    }

    /// Runs an enclave-mode ENCLU leaf inside `enclave` (ring 3).
    pub fn enclu(
        &mut self,
        enclave: &TestEnclave,
        leaf: Enclu,
        rbx: u64,
        rcx: u64,
        rdx: u64,
    ) -> Result<Gprs, Exception> {
        let mut regs = Gprs::leaf(leaf as u32, rbx, rcx, rdx);
        let platform = Arc::clone(&self.platform);
        self.os.cpu().set_cpl(Cpl::Ring3);
        let r = enclave.mode.execute(&platform, self.os.cpu(), &mut regs);
        self.os.cpu().set_cpl(Cpl::Ring0);
        r.map(|_| regs)
    }

    /// Writes enclave memory of a DEBUG enclave with EDBGWR (8 bytes at a time).
    pub fn debug_write(&mut self, la: u64, bytes: &[u8]) {
        assert_eq!(la % 8, 0);
        for (i, chunk) in bytes.chunks(8).enumerate() {
            let mut q = [0u8; 8];
            q[..chunk.len()].copy_from_slice(chunk);
            let addr = la + 8 * i as u64;
            let epc = self.physical(addr);
            let r = self.encls(Encls::Edbgwr, u64::from_le_bytes(q), epc, 0).expect("EDBGWR");
            assert_eq!(r.status(), LeafStatus::Success);
        }
    }

    /// Reads enclave memory of a DEBUG enclave with EDBGRD.
    pub fn debug_read(&mut self, la: u64, len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for q in 0..len.div_ceil(8) {
            let epc = self.physical(la + 8 * q as u64);
            let r = self.encls(Encls::Edbgrd, 0, epc, 0).expect("EDBGRD");
            out.extend_from_slice(&r.rbx.to_le_bytes());
        }
        out.truncate(len);
        out
    }

    /// The physical (= identity-mapped linear) address backing an enclave linear address.
    pub fn physical(&mut self, la: u64) -> u64 {
        self.os.cpu().walk(la, vsgx_hw::leaves::Access::Read).expect("mapped")
    }
}

/// What test enclave to build.
#[derive(Clone, Debug)]
pub struct EnclaveSpec {
    pub size: u64,
    pub debug: bool,
    pub isvprodid: u16,
    pub isvsvn: u16,
    pub miscselect: u32,
    pub extra_flags: AttributesFlags,
    /// Several enclaves in one address space need different bases.
    pub base_slot: u64,
    /// Extra content for the data pages, by enclave offset.
    pub data: Vec<(u64, Vec<u8>)>,
}

impl Default for EnclaveSpec {
    fn default() -> Self {
        Self {
            size: 0x10000,
            debug: true,
            isvprodid: 1,
            isvsvn: 1,
            miscselect: 0,
            extra_flags: AttributesFlags::empty(),
            base_slot: 0,
            data: Vec::new(),
        }
    }
}

/// Offsets of the test enclave's pages.
pub mod layout {
    /// REG RW data page.
    pub const DATA: u64 = 0x0000;
    /// REG RW data page for operands (KEYREQUEST, TARGETINFO, outputs).
    pub const OPERANDS: u64 = 0x1000;
    /// TCS (OSSA = SSA, NSSA = 1, OENTRY = CODE).
    pub const TCS: u64 = 0x2000;
    /// REG RW SSA frame.
    pub const SSA: u64 = 0x3000;
    /// REG read-only page.
    pub const READ_ONLY: u64 = 0x4000;
    /// REG R+X page.
    pub const CODE: u64 = 0x5000;
}

impl EnclaveSpec {
    /// `(offset, SECINFO.FLAGS, content)` of every page.
    pub fn layout(&self) -> Vec<(u64, u64, [u8; 4096])> {
        let rw = secinfo_flags(PageType::Reg, SecinfoFlags::R.union(SecinfoFlags::W));
        let mut tcs = vsgx_isa::Tcs::zeroed();
        tcs.ossa = layout::SSA;
        tcs.nssa = 1;
        tcs.oentry = layout::CODE;
        tcs.ofsbasgx = layout::DATA;
        tcs.ogsbasgx = layout::DATA;
        tcs.fslimit = 0xFFF;
        tcs.gslimit = 0xFFF;
        let mut tcs_page = [0u8; 4096];
        tcs_page.copy_from_slice(tcs.bytes());
        let mut pages = vec![
            (layout::DATA, rw, [0u8; 4096]),
            (layout::OPERANDS, rw, [0u8; 4096]),
            (layout::TCS, secinfo_flags(PageType::Tcs, SecinfoFlags::empty()), tcs_page),
            (layout::SSA, rw, [0u8; 4096]),
            (layout::READ_ONLY, secinfo_flags(PageType::Reg, SecinfoFlags::R), [0x11u8; 4096]),
            (layout::CODE, secinfo_flags(PageType::Reg, SecinfoFlags::R.union(SecinfoFlags::X)), [0x90u8; 4096]),
        ];
        for (offset, bytes) in &self.data {
            let page = offset & !0xFFF;
            if let Some((_, _, content)) = pages.iter_mut().find(|(o, _, _)| *o == page) {
                let at = (offset & 0xFFF) as usize;
                content[at..at + bytes.len()].copy_from_slice(bytes);
            }
        }
        pages
    }
}

/// An initialized test enclave.
#[derive(Clone, Debug)]
pub struct TestEnclave {
    pub secs: u64,
    pub base: u64,
    pub size: u64,
    /// EPC page (physical = identity linear) by enclave offset.
    pub pages: BTreeMap<u64, u64>,
    pub sig: Sigstruct,
    pub mode: EnclaveMode,
    pub mrsigner: [u8; 32],
}

impl TestEnclave {
    /// Enclave linear address of an offset.
    pub fn la(&self, offset: u64) -> u64 {
        self.base + offset
    }

    /// EPC page backing an offset.
    pub fn epc(&self, offset: u64) -> u64 {
        self.pages[&(offset & !0xFFF)] + (offset & 0xFFF)
    }
}

/// The #PF an EPCM check raises on an SGX2 platform from ring 0 / ring 3.
pub fn epcm_pf(linear: u64, ring3: bool) -> Exception {
    use vsgx_isa::cpu::pfec;
    let us = if ring3 { pfec::US } else { 0 };
    Exception::PageFault { linear, error_code: pfec::P | pfec::W | us | pfec::SGX }
}

pub use vsgx_isa::status::SgxError;
