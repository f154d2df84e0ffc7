//! SGX2 page changes from outside the enclave: EAUG, EMODPR, EMODT (SGX.md §6.12–6.14).

use vsgx_isa::status::SgxError;
use vsgx_isa::{PageType, Pageinfo, Secinfo, SecinfoFlags};

use super::secs as s;
use super::{Ctx, GP, LeafResult, Stop, align};
use crate::epc::Epcm;

/// EAUG (ENCLS 0xD): RBX = PAGEINFO, RCX = EPC page.
pub fn eaug(cx: &mut Ctx<'_>, rbx: u64, rcx: u64) -> LeafResult {
    align(rbx, 32)?;
    align(rcx, 4096)?;
    let (page, _) = cx.epc(rcx)?;
    let pageinfo: Pageinfo = cx.read(rbx)?;
    // MODEL CHOICE (SGX.md §1.7): SECINFO must be 0.
    if pageinfo.secinfo_or_pcmd != 0 {
        return Err(GP);
    }
    align(pageinfo.secs, 4096)?;
    align(pageinfo.linaddr, 4096)?;
    if pageinfo.srcpge != 0 {
        return Err(GP);
    }
    let (secs_page, _) = cx.epc(pageinfo.secs)?;
    let mut slot = cx.try_lock(page, GP)?;
    if slot.epcm.valid() {
        return Err(cx.epcm_fault(rcx));
    }
    let mut secs = cx.try_lock(secs_page, GP)?;
    if !secs.epcm.is(PageType::Secs) {
        return Err(cx.epcm_fault(pageinfo.secs));
    }
    if !s::initialized(secs.data()) || !s::in_elrange(secs.data(), pageinfo.linaddr) {
        return Err(GP);
    }
    s::add_children(secs.data_mut(), 1);
    slot.zero();
    let mut e = Epcm::new(PageType::Reg, 0b011, Some(secs_page), pageinfo.linaddr);
    e.set_pending(true);
    slot.epcm = e;
    Ok(())
}

/// EMODPR (ENCLS 0xE): RBX = SECINFO with the permissions to keep, RCX = EPC page.
///
/// MODEL CHOICE: a busy target page is #GP(0) (SGX.md §6.13); a busy SECS — tracking in
/// progress — is the "SGX2 conflict", SGX_EPC_PAGE_CONFLICT.
pub fn emodpr(cx: &mut Ctx<'_>, rbx: u64, rcx: u64) -> LeafResult {
    align(rbx, 64)?;
    align(rcx, 4096)?;
    let (page, _) = cx.epc(rcx)?;
    let secinfo: Secinfo = cx.read(rbx)?;
    let perms = secinfo.perms();
    if !secinfo.reserved_is_zero() || (perms.contains(SecinfoFlags::W) && !perms.contains(SecinfoFlags::R)) {
        return Err(GP);
    }
    let mut slot = cx.try_lock(page, GP)?;
    let e = slot.epcm;
    if !e.valid() {
        return Err(cx.epcm_fault(rcx));
    }
    let secs = cx.p.epc().try_lock(e.secs()).ok_or(Stop::Error(SgxError::EpcPageConflict));
    if e.pending() || e.modified() {
        return Err(Stop::Error(SgxError::PageNotModifiable));
    }
    if e.page_type() != PageType::Reg {
        return Err(cx.epcm_fault(rcx));
    }
    let secs = secs?;
    if !s::initialized(secs.data()) {
        return Err(GP);
    }
    slot.epcm.set_pr(true);
    slot.epcm.set_rwx(e.rwx() & secinfo.flags & 7);
    slot.epcm.set_mod_epoch(Some(s::trk_epoch(secs.data())));
    Ok(())
}

/// EMODT (ENCLS 0xF): RBX = SECINFO with the new type, RCX = EPC page.
pub fn emodt(cx: &mut Ctx<'_>, rbx: u64, rcx: u64) -> LeafResult {
    align(rbx, 64)?;
    align(rcx, 4096)?;
    let (page, _) = cx.epc(rcx)?;
    let secinfo: Secinfo = cx.read(rbx)?;
    let new = secinfo.page_type();
    if !secinfo.reserved_is_zero() || !matches!(new, Some(PageType::Tcs | PageType::Trim)) {
        return Err(GP);
    }
    let mut slot = cx.try_lock(page, GP)?;
    let e = slot.epcm;
    if !e.valid() {
        return Err(cx.epcm_fault(rcx));
    }
    let secs = cx.p.epc().try_lock(e.secs()).ok_or(Stop::Error(SgxError::EpcPageConflict));
    let legal = matches!(
        (e.page_type(), new),
        (PageType::Reg, Some(PageType::Tcs))
            | (PageType::Reg, Some(PageType::Trim))
            | (PageType::Tcs, Some(PageType::Trim))
    );
    if !legal {
        return Err(cx.epcm_fault(rcx));
    }
    if e.pending() || e.modified() {
        return Err(Stop::Error(SgxError::PageNotModifiable));
    }
    let secs = secs?;
    if !s::initialized(secs.data()) {
        return Err(GP);
    }
    let new = new.unwrap_or(PageType::Trim);
    slot.epcm.set_pr(false);
    slot.epcm.set_modified(true);
    slot.epcm.set_rwx(0);
    slot.epcm.set_page_type(new);
    slot.epcm.set_mod_epoch(Some(s::trk_epoch(secs.data())));
    Ok(())
}
