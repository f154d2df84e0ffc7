//! ENCLV: EDECVIRTCHILD, EINCVIRTCHILD, ESETCONTEXT (SGX.md §6.26).

use vsgx_isa::status::SgxError;
use vsgx_isa::{PageType, SecsHidden};

use super::secs as s;
use super::{Ctx, GP, LeafResult, Stop, align};

/// EDECVIRTCHILD (`increment` = false) / EINCVIRTCHILD: RBX = enclave page, RCX = its SECS.
pub fn virtchild(cx: &mut Ctx<'_>, rbx: u64, rcx: u64, increment: bool) -> LeafResult {
    align(rbx, 4096)?;
    let (page, _) = cx.epc(rbx)?;
    let (secs_page, _) = cx.epc(rcx)?;
    let conflict = || Stop::Error(SgxError::EpcPageConflict);
    let slot = cx.try_lock(page, conflict())?;
    let e = slot.epcm;
    if !e.valid() {
        return Err(cx.epcm_fault(rbx));
    }
    let parent = match e.page_type() {
        PageType::Reg | PageType::Tcs | PageType::Trim => e.secs(),
        PageType::Secs => page,
        PageType::Va => return Err(cx.epcm_fault(rbx)),
    };
    if parent != secs_page {
        return Err(GP);
    }
    let mut secs_guard;
    let secs = if parent == page {
        secs_guard = slot;
        &mut secs_guard
    } else {
        secs_guard = cx.try_lock(parent, conflict())?;
        drop(slot);
        &mut secs_guard
    };
    let count = s::u64_at(secs.data(), SecsHidden::VIRTCHILDCNT);
    let next = if increment { count.checked_add(1) } else { count.checked_sub(1) };
    let next = next.ok_or(Stop::Error(SgxError::InvalidCounter))?;
    s::set_u64(secs.data_mut(), SecsHidden::VIRTCHILDCNT, next);
    Ok(())
}

/// ESETCONTEXT: RCX = SECS, RDX = address of the u64 context value.
pub fn esetcontext(cx: &mut Ctx<'_>, rcx: u64, rdx: u64) -> LeafResult {
    align(rcx, 4096)?;
    let (page, _) = cx.epc(rcx)?;
    align(rdx, 8)?;
    let value = cx.read_u64(rdx)?;
    let mut secs = cx.try_lock(page, Stop::Error(SgxError::EpcPageConflict))?;
    if !secs.epcm.is(PageType::Secs) {
        return Err(cx.epcm_fault(rcx));
    }
    s::set_u64(secs.data_mut(), SecsHidden::ENCLAVECONTEXT, value);
    Ok(())
}
