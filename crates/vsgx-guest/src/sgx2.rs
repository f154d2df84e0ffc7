//! SGX2 page operations from the kernel side (SGX.md §6.12–6.14): add a pending page (EAUG),
//! restrict permissions (EMODPR), trim (EMODT to PT_TRIM) and remove a trimmed page. Each one
//! needs the enclave's EACCEPT (from enclave code) to take effect; EMODPR and EMODT are followed by
//! ETRACK, as EACCEPT requires the change to be tracked.

use vsgx_isa::cpu::{Cpu, LeafStatus};
use vsgx_isa::leaf::Encls;
use vsgx_isa::status::SgxError;
use vsgx_isa::{ArchStruct, PageType, Pageinfo, Secinfo, SecinfoFlags};

use crate::GuestError;
use crate::driver::{Driver, EnclaveId};
use crate::kernel::fault;

impl<C: Cpu> Driver<C> {
    fn offset_in(&mut self, id: EnclaveId, offset: u64) -> Result<(u64, u64), GuestError> {
        let e = self.live(id)?;
        if !offset.is_multiple_of(4096) || offset >= e.size {
            return Err(GuestError::BadOffset(offset));
        }
        Ok((e.base, e.size))
    }

    fn status(&mut self, name: &'static str, leaf: Encls, rbx: u64, rcx: u64) -> Result<(), GuestError> {
        match self.encls(leaf, rbx, rcx, 0).map_err(|e| GuestError::Leaf(name, e))? {
            LeafStatus::Success => Ok(()),
            LeafStatus::Error(e) | LeafStatus::Info(e) => Err(GuestError::Sgx2(name, e)),
            LeafStatus::Unknown(code) => {
                Err(GuestError::Sgx2(name, SgxError::from_code(code).unwrap_or(SgxError::PgInvld)))
            }
        }
    }

    /// ETRACK on the enclave's SECS (the SECS is reloaded first if it was evicted).
    fn track_enclave(&mut self, id: EnclaveId) -> Result<(), GuestError> {
        let tcs = self.live(id)?.tcs.first().copied().unwrap_or(0);
        self.ensure_resident(id, tcs)?;
        let secs = self.live(id)?.secs;
        self.status("ETRACK", Encls::Etrack, 0, secs)
    }

    /// EAUG: adds a zeroed, PENDING R+W page at `offset` of an initialized enclave. Enclave code
    /// must EACCEPT it (SECINFO = R | W | PENDING, PT_REG) before using it.
    pub fn augment(&mut self, id: EnclaveId, offset: u64) -> Result<(), GuestError> {
        let (base, _) = self.offset_in(id, offset)?;
        if self.live(id)?.paging.mapped.contains(&offset) {
            return Err(GuestError::BadOffset(offset));
        }
        let tcs = self.live(id)?.tcs.first().copied().unwrap_or(0);
        self.ensure_resident(id, tcs)?;
        while self.live(id)?.paging.va_slots() < self.live(id)?.paging.mapped.len() as u64 + 2 {
            self.add_va_page(id)?;
        }
        let epc = self.alloc_epc()?;
        let secs = self.live(id)?.secs;
        let operands = self.kernel.alloc_ram_page()?;
        let pi = Pageinfo { linaddr: base + offset, srcpge: 0, secinfo_or_pcmd: 0, secs };
        let written = self.kernel.cpu().write(operands, pi.bytes()).map_err(fault);
        // EAUG reports only through faults (RAX keeps the leaf number).
        let r = written.and_then(|()| {
            self.encls(Encls::Eaug, operands, epc, 0).map(drop).map_err(|e| GuestError::Leaf("EAUG", e))
        });
        self.kernel.free_ram_page(operands);
        if let Err(e) = r {
            self.kernel.free_epc_page(epc);
            return Err(e);
        }
        let e = self.live(id)?;
        e.pages.insert(offset, epc);
        e.paging.mapped.insert(offset);
        self.kernel.map_page(base + offset, Some(epc))?;
        self.reclaim.fifo.push_back((id, offset));
        Ok(())
    }

    fn modify(
        &mut self,
        id: EnclaveId,
        offset: u64,
        name: &'static str,
        leaf: Encls,
        secinfo: Secinfo,
    ) -> Result<(), GuestError> {
        self.offset_in(id, offset)?;
        self.ensure_resident(id, offset)?;
        let epc = *self.live(id)?.pages.get(&offset).ok_or(GuestError::BadOffset(offset))?;
        let operands = self.kernel.alloc_ram_page()?;
        let written = self.kernel.cpu().write(operands, secinfo.bytes()).map_err(fault);
        let r = written.and_then(|()| self.status(name, leaf, operands, epc));
        self.kernel.free_ram_page(operands);
        r?;
        self.track_enclave(id)
    }

    /// EMODPR + ETRACK: restricts page `offset` to the permissions `rwx` (SECINFO bits R=1, W=2,
    /// X=4). Enclave code completes it with EACCEPT (SECINFO = rwx | PR, PT_REG).
    pub fn restrict(&mut self, id: EnclaveId, offset: u64, rwx: u64) -> Result<(), GuestError> {
        let perms = SecinfoFlags::from_bits_truncate(rwx & 7);
        self.modify(id, offset, "EMODPR", Encls::Emodpr, Secinfo::new(PageType::Reg, perms))
    }

    /// EMODT to PT_TRIM + ETRACK. Enclave code accepts it with EACCEPT (SECINFO = MODIFIED,
    /// PT_TRIM); then [`Driver::remove_trimmed`] frees the page.
    pub fn trim(&mut self, id: EnclaveId, offset: u64) -> Result<(), GuestError> {
        self.modify(id, offset, "EMODT", Encls::Emodt, Secinfo::new(PageType::Trim, SecinfoFlags::empty()))
    }

    /// EREMOVE of a trimmed (and accepted) page: its EPC returns to the allocator.
    pub fn remove_trimmed(&mut self, id: EnclaveId, offset: u64) -> Result<(), GuestError> {
        let (base, _) = self.offset_in(id, offset)?;
        self.ensure_resident(id, offset)?;
        let epc = *self.live(id)?.pages.get(&offset).ok_or(GuestError::BadOffset(offset))?;
        self.status("EREMOVE", Encls::Eremove, 0, epc)?;
        let e = self.live(id)?;
        e.pages.remove(&offset);
        e.paging.mapped.remove(&offset);
        self.reclaim.fifo.retain(|&entry| entry != (id, offset));
        self.kernel.free_epc_page(epc);
        self.kernel.map_page(base + offset, None)
    }
}
