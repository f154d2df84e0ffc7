//! ENCLU leaves that run in enclave mode: EREPORT, EGETKEY, EACCEPT, EMODPE, EACCEPTCOPY
//! (SGX.md §6.15–6.19).
//!
//! The enclave executor (EENTER/ERESUME) calls [`EnclaveMode::execute`] when enclave code issues
//! ENCLU; tests call it directly on an initialized enclave. Operands are linear addresses inside
//! ELRANGE that must resolve to suitable EPC pages of the current enclave.

use vsgx_isa::cpu::{Exception, Gprs};
use vsgx_isa::leaf::Enclu;
use vsgx_isa::status::SgxError;
use vsgx_isa::{ArchStruct, AttributesFlags, Keyrequest, PageType, Report, Secinfo, SecinfoFlags, Targetinfo, Tcs};

use super::secs as s;
use super::{Ctx, GP, LeafResult, OperandAccess, Stop, align, finish};
use crate::epc::PageId;
use crate::keys::{self, EgetkeyError};
use crate::platform::Platform;

/// A logical processor in enclave mode: the current enclave (CR_ACTIVE_SECS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnclaveMode {
    /// The enclave's SECS page.
    pub secs: PageId,
    /// BASEADDR.
    pub base: u64,
    /// SIZE.
    pub size: u64,
}

/// Why an enclave mode could not be established.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnclaveOpError {
    /// The address is not a valid, initialized SECS.
    #[error("{0:#x} is not the SECS of an initialized enclave")]
    NotInitializedSecs(u64),
}

impl EnclaveMode {
    /// Enclave mode for the initialized enclave whose SECS is at host physical address `secs_hpa`.
    pub fn of(p: &Platform, secs_hpa: u64) -> Result<Self, EnclaveOpError> {
        let bad = EnclaveOpError::NotInitializedSecs(secs_hpa);
        let page = p.epc().page_of(secs_hpa).ok_or(bad)?;
        let slot = p.epc().lock(page).ok_or(bad)?;
        if !slot.epcm.is(PageType::Secs) || !s::initialized(slot.data()) {
            return Err(bad);
        }
        Ok(Self { secs: page, base: s::baseaddr(slot.data()), size: s::size(slot.data()) })
    }

    fn in_elrange(&self, la: u64) -> bool {
        la >= self.base && la - self.base < self.size
    }

    /// Executes an enclave-mode ENCLU leaf (`regs.rax`), updating `regs` as the architecture does.
    pub fn execute(&self, p: &Platform, mem: &mut dyn OperandAccess, regs: &mut Gprs) -> Result<(), Exception> {
        let leaf = Enclu::from_u32(regs.rax as u32).ok_or(Exception::GP0)?;
        let sgx2 = p.capabilities().sgx2;
        let mut cx = Ctx { p, mem };
        let mut op = Op { cx: &mut cx, mode: *self };
        let (rbx, rcx, rdx) = (regs.rbx, regs.rcx, regs.rdx);
        let outcome = match leaf {
            Enclu::Ereport => op.ereport(rbx, rcx, rdx).map(|_| None),
            Enclu::Egetkey => op.egetkey(rbx, rcx).map(|_| Some(0)),
            Enclu::Eaccept if sgx2 => op.eaccept(rbx, rcx).map(|_| Some(0)),
            Enclu::Emodpe if sgx2 => op.emodpe(rbx, rcx).map(|_| None),
            Enclu::Eacceptcopy if sgx2 => op.eacceptcopy(rbx, rcx, rdx).map(|_| Some(0)),
            // EENTER/ERESUME in enclave mode, unmodelled and unenumerated leaves.
            _ => Err(GP),
        };
        finish(regs, outcome)
    }
}

/// What an enclave access to an operand page must allow.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    Read,
    Write,
}

struct Op<'c, 'a> {
    cx: &'c mut Ctx<'a>,
    mode: EnclaveMode,
}

impl Op<'_, '_> {
    /// Resolves an enclave operand and checks it: [`Self::locate`], then [`Self::check_access`].
    fn operand(&mut self, la: u64, need: Need) -> LeafResult<(PageId, usize)> {
        let (page, off) = self.locate(la)?;
        self.check_access(la, page, need)?;
        Ok((page, off))
    }

    /// The address checks of an enclave operand: in ELRANGE (#GP), then in EPC (#PF).
    fn locate(&mut self, la: u64) -> LeafResult<(PageId, usize)> {
        if !self.mode.in_elrange(la) {
            return Err(GP);
        }
        self.cx.epc(la)
    }

    /// The EPCM checks of an ordinary enclave access to a located operand (#PF-EPCM): valid, not
    /// blocked, PT_REG, this enclave, mapped at this address, not pending/modified, readable (and
    /// writable if `need` is Write).
    ///
    /// Leaves whose SGX.md text runs the address checks of *every* operand before any EPCM check
    /// (EREPORT §6.18, EMODPE §6.17, EACCEPTCOPY §6.16) call [`Self::locate`] for all operands
    /// first and this afterwards.
    fn check_access(&mut self, la: u64, page: PageId, need: Need) -> LeafResult {
        let e = self.cx.lock(page)?.epcm;
        let ok = e.is(PageType::Reg)
            && !e.blocked()
            && e.secs() == self.mode.secs
            && e.enclave_address() == la & !0xFFF
            && !e.pending()
            && !e.modified()
            && e.r()
            && (need == Need::Read || e.w());
        if ok { Ok(()) } else { Err(self.cx.epcm_fault(la)) }
    }

    /// Copies bytes out of a located, checked operand.
    fn read_at(&mut self, page: PageId, off: usize, buf: &mut [u8]) -> LeafResult {
        let slot = self.cx.lock(page)?;
        buf.copy_from_slice(&slot.data()[off..off + buf.len()]);
        Ok(())
    }

    fn read(&mut self, la: u64, buf: &mut [u8]) -> LeafResult {
        let (page, off) = self.operand(la, Need::Read)?;
        self.read_at(page, off, buf)
    }

    fn read_struct<T: ArchStruct>(&mut self, la: u64) -> LeafResult<T> {
        let mut buf = vec![0u8; T::SIZE];
        self.read(la, &mut buf)?;
        T::from_bytes(&buf).map_err(|_| GP)
    }

    fn write(&mut self, page: PageId, off: usize, data: &[u8]) -> LeafResult {
        let mut slot = self.cx.lock(page)?;
        slot.data_mut()[off..off + data.len()].copy_from_slice(data);
        Ok(())
    }

    fn identity(&self) -> LeafResult<keys::EnclaveIdentity> {
        Ok(s::identity(self.cx.lock_secs(self.mode.secs)?.data()))
    }

    /// EREPORT (ENCLU 0): RBX = TARGETINFO, RCX = REPORTDATA, RDX = output REPORT.
    fn ereport(&mut self, rbx: u64, rcx: u64, rdx: u64) -> LeafResult {
        align(rbx, 512)?;
        align(rcx, 128)?;
        align(rdx, 512)?;
        // SGX.md §6.18: step 1 (ELRANGE, EPC) for every operand, then step 2 (EPCM).
        let (ti_page, ti_off) = self.locate(rbx)?;
        let (rd_page, rd_off) = self.locate(rcx)?;
        let (out_page, out_off) = self.locate(rdx)?;
        self.check_access(rbx, ti_page, Need::Read)?;
        self.check_access(rcx, rd_page, Need::Read)?;
        self.check_access(rdx, out_page, Need::Write)?;
        let mut bytes = [0u8; Targetinfo::SIZE];
        self.read_at(ti_page, ti_off, &mut bytes)?;
        if Targetinfo::RESERVED_RANGES.iter().any(|r| bytes[r.clone()].iter().any(|&b| b != 0)) {
            return Err(GP);
        }
        let target = Targetinfo::from_bytes(&bytes).map_err(|_| GP)?;
        let mut reportdata = [0u8; 64];
        self.read_at(rd_page, rd_off, &mut reportdata)?;
        let id = self.identity()?;
        let platform = self.cx.p.keys();
        let mut report = Report::zeroed();
        report.cpusvn = platform.cpusvn;
        report.miscselect = id.miscselect;
        report.isvextprodid = id.isvextprodid;
        report.attributes = id.attributes;
        report.mrenclave = id.mrenclave;
        report.mrsigner = id.mrsigner;
        report.configid = id.configid;
        report.isvprodid = id.isvprodid;
        report.isvsvn = id.isvsvn;
        report.configsvn = id.configsvn;
        report.isvfamilyid = id.isvfamilyid;
        report.reportdata = reportdata;
        report.keyid = platform.report_keyid;
        let key = keys::report_key(&target, &platform);
        report.mac = keys::report_mac(&key, &report);
        self.write(out_page, out_off, report.bytes())
    }

    /// EGETKEY (ENCLU 1): RBX = KEYREQUEST, RCX = 16-byte output.
    fn egetkey(&mut self, rbx: u64, rcx: u64) -> LeafResult {
        align(rbx, 512)?;
        align(rcx, 16)?;
        self.operand(rbx, Need::Read)?;
        let (out_page, out_off) = self.operand(rcx, Need::Write)?;
        let request: Keyrequest = self.read_struct(rbx)?;
        let id = self.identity()?;
        match keys::egetkey(&request, &id, &self.cx.p.keys()) {
            Ok(key) => self.write(out_page, out_off, &key),
            Err(EgetkeyError::GeneralProtection) => Err(GP),
            Err(EgetkeyError::Code(code)) => Err(Stop::Error(code)),
        }
    }

    /// The SECINFO operand of EACCEPT/EMODPE/EACCEPTCOPY.
    fn secinfo(&mut self, rbx: u64) -> LeafResult<Secinfo> {
        align(rbx, 64)?;
        let (page, off) = self.locate(rbx)?;
        self.secinfo_at(rbx, page, off)
    }

    /// A located SECINFO operand: its page checked as an enclave read (#PF-EPCM), then its
    /// reserved bits (#GP).
    fn secinfo_at(&mut self, rbx: u64, page: PageId, off: usize) -> LeafResult<Secinfo> {
        self.check_access(rbx, page, Need::Read)?;
        let mut bytes = [0u8; Secinfo::SIZE];
        self.read_at(page, off, &mut bytes)?;
        let secinfo = Secinfo::from_bytes(&bytes).map_err(|_| GP)?;
        if !secinfo.reserved_is_zero() {
            return Err(GP);
        }
        Ok(secinfo)
    }

    /// The target page of EACCEPT/EMODPE/EACCEPTCOPY: in ELRANGE (#GP) and EPC (#PF).
    fn target(&mut self, rcx: u64) -> LeafResult<PageId> {
        align(rcx, 4096)?;
        if !self.mode.in_elrange(rcx) {
            return Err(GP);
        }
        Ok(self.cx.epc(rcx)?.0)
    }

    /// EACCEPT (ENCLU 5): RBX = SECINFO, RCX = page.
    fn eaccept(&mut self, rbx: u64, rcx: u64) -> LeafResult {
        let secinfo = self.secinfo(rbx)?;
        let page = self.target(rcx)?;
        let req = secinfo.perms();
        let (pending, modified, pr) =
            (req.contains(SecinfoFlags::PENDING), req.contains(SecinfoFlags::MODIFIED), req.contains(SecinfoFlags::PR));
        let legal = match secinfo.page_type() {
            Some(PageType::Reg) => (pr || pending) && !modified,
            Some(PageType::Tcs | PageType::Trim) => !pending && modified && !pr,
            _ => false,
        };
        if !legal {
            return Err(GP);
        }
        let mut slot = self.cx.try_lock(page, GP)?;
        let e = slot.epcm;
        if !e.valid()
            || e.blocked()
            || !matches!(e.page_type(), PageType::Reg | PageType::Tcs | PageType::Trim)
            || e.secs() != self.mode.secs
        {
            return Err(self.cx.epcm_fault(rcx));
        }
        let matches = e.enclave_address() == rcx
            && e.pending() == pending
            && e.modified() == modified
            && e.rwx() == secinfo.flags & 7
            && Some(e.page_type()) == secinfo.page_type();
        if !matches {
            return Err(Stop::Error(SgxError::PageAttributesMismatch));
        }
        let secs = self.cx.p.epc().lock(self.mode.secs).ok_or(GP)?;
        if !s::tracked(secs.data(), e.mod_epoch()) {
            return Err(Stop::Error(SgxError::NotTracked));
        }
        let mode64 = s::flags(secs.data()).contains(AttributesFlags::MODE64BIT);
        drop(secs);
        if e.page_type() == PageType::Tcs {
            let tcs = Tcs::from_bytes(slot.data()).map_err(|_| GP)?;
            let bad = tcs.reserved.iter().any(|&b| b != 0)
                || tcs.flags & 1 != 0
                || tcs.cssa >= tcs.nssa
                || tcs.aep != 0
                || tcs.state != 0
                || (!mode64 && (tcs.fslimit & 0xFFF != 0xFFF || tcs.gslimit & 0xFFF != 0xFFF));
            if bad {
                return Err(GP);
            }
        }
        slot.epcm.set_pending(false);
        slot.epcm.set_modified(false);
        slot.epcm.set_pr(false);
        slot.epcm.set_mod_epoch(None);
        Ok(())
    }

    /// EMODPE (ENCLU 6): RBX = SECINFO, RCX = page; extends permissions, no tracking needed.
    fn emodpe(&mut self, rbx: u64, rcx: u64) -> LeafResult {
        align(rbx, 64)?;
        align(rcx, 4096)?;
        if !self.mode.in_elrange(rbx) || !self.mode.in_elrange(rcx) {
            return Err(GP);
        }
        // SGX.md §6.17: both operands in EPC before the SECINFO page is checked.
        let (si_page, si_off) = self.cx.epc(rbx)?;
        let (page, _) = self.cx.epc(rcx)?;
        let secinfo = self.secinfo_at(rbx, si_page, si_off)?;
        let mut slot = self.cx.try_lock(page, GP)?;
        let e = slot.epcm;
        let ok = e.is(PageType::Reg)
            && !e.pending()
            && !e.modified()
            && !e.blocked()
            && e.secs() == self.mode.secs
            && e.enclave_address() == rcx;
        if !ok {
            return Err(self.cx.epcm_fault(rcx));
        }
        let rwx = e.rwx() | (secinfo.flags & 7);
        if rwx & 0b010 != 0 && rwx & 0b001 == 0 {
            return Err(GP);
        }
        slot.epcm.set_rwx(rwx);
        Ok(())
    }

    /// EACCEPTCOPY (ENCLU 7): RBX = SECINFO, RCX = destination (PENDING), RDX = source.
    fn eacceptcopy(&mut self, rbx: u64, rcx: u64, rdx: u64) -> LeafResult {
        align(rbx, 64)?;
        align(rcx, 4096)?;
        align(rdx, 4096)?;
        if !self.mode.in_elrange(rbx) || !self.mode.in_elrange(rcx) || !self.mode.in_elrange(rdx) {
            return Err(GP);
        }
        // SGX.md §6.16: all three operands in EPC before the SECINFO page is checked.
        let (si_page, si_off) = self.cx.epc(rbx)?;
        let (page, _) = self.cx.epc(rcx)?;
        let (src_page, _) = self.cx.epc(rdx)?;
        let secinfo = self.secinfo_at(rbx, si_page, si_off)?;
        let perms = secinfo.perms();
        if (perms.contains(SecinfoFlags::W) && !perms.contains(SecinfoFlags::R))
            || secinfo.page_type() != Some(PageType::Reg)
        {
            return Err(GP);
        }
        self.check_access(rdx, src_page, Need::Read)?;
        let mut source = [0u8; 4096];
        self.read_at(src_page, 0, &mut source)?;
        let mut slot = self.cx.try_lock(page, GP)?;
        let e = slot.epcm;
        let ok = e.is(PageType::Reg)
            && e.pending()
            && !e.modified()
            && e.secs() == self.mode.secs
            && e.rwx() == 0b011
            && e.enclave_address() == rcx;
        if !ok {
            return Err(Stop::Error(SgxError::PageAttributesMismatch));
        }
        slot.data_mut().copy_from_slice(&source);
        slot.epcm.set_rwx(secinfo.flags & 7);
        slot.epcm.set_pending(false);
        Ok(())
    }
}
