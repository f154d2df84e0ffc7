//! EREMOVE, EDBGRD, EDBGWR (SGX.md §6.5, §6.6).

use vsgx_isa::status::SgxError;
use vsgx_isa::{AttributesFlags, PageType};

use super::secs as s;
use super::{Ctx, GP, LeafResult, Stop, align};
use crate::epc::Epcm;

/// EREMOVE (ENCLS 3): RCX = EPC page.
///
/// An accepted TRIM page is freed (the literal SDM text forgets to) and, being a child, leaves
/// its SECS's child count (MODEL CHOICE, consistent with SGX.md §6.5 step 3).
pub fn eremove(cx: &mut Ctx<'_>, rcx: u64) -> LeafResult {
    align(rcx, 4096)?;
    let (page, _) = cx.epc(rcx)?;
    if !cx.p.epc().materialized(page) {
        // Never used since power-on: invalid, and no storage needs creating to say so.
        return Ok(());
    }
    let mut slot = cx.try_lock(page, GP)?;
    let e = slot.epcm;
    if !e.valid() {
        return Ok(());
    }
    match e.page_type() {
        PageType::Va => {}
        PageType::Secs => {
            if s::children(slot.data()) > 0 {
                return Err(Stop::Error(SgxError::ChildPresent));
            }
        }
        PageType::Trim if !e.modified() => {
            let mut secs = cx.lock_secs(e.secs())?;
            s::add_children(secs.data_mut(), -1);
        }
        PageType::Reg | PageType::Tcs | PageType::Trim => {
            let mut secs = cx.lock_secs(e.secs())?;
            if s::active(secs.data()) {
                return Err(Stop::Error(SgxError::EnclaveAct));
            }
            s::add_children(secs.data_mut(), -1);
        }
    }
    slot.epcm = Epcm::INVALID;
    Ok(())
}

/// EDBGRD (ENCLS 4): RCX = EPC address; the 8 bytes come back in RBX.
pub fn edbgrd(cx: &mut Ctx<'_>, rcx: u64) -> LeafResult<u64> {
    align(rcx, 8)?;
    let (page, offset) = cx.epc(rcx)?;
    let slot = cx.try_lock(page, GP)?;
    let e = slot.epcm;
    if !e.valid() || !matches!(e.page_type(), PageType::Reg | PageType::Tcs | PageType::Va) {
        return Err(cx.epcm_fault(rcx));
    }
    if e.pending() || e.modified() {
        return Err(Stop::Error(SgxError::PageNotDebuggable));
    }
    if e.page_type() == PageType::Va {
        let v = s::u64_at(slot.data(), offset);
        return Ok(if v & !7 != 0 { u64::MAX } else { 0 });
    }
    if e.page_type() == PageType::Tcs && offset >= TCS_LIMIT {
        return Err(GP);
    }
    require_debug(cx, e)?;
    Ok(s::u64_at(slot.data(), offset))
}

/// EDBGWR (ENCLS 5): RBX = data, RCX = EPC address.
pub fn edbgwr(cx: &mut Ctx<'_>, rbx: u64, rcx: u64) -> LeafResult {
    align(rcx, 8)?;
    let (page, offset) = cx.epc(rcx)?;
    let mut slot = cx.try_lock(page, GP)?;
    let e = slot.epcm;
    if !e.valid() || !matches!(e.page_type(), PageType::Reg | PageType::Tcs) {
        return Err(cx.epcm_fault(rcx));
    }
    if e.pending() || e.modified() {
        return Err(Stop::Error(SgxError::PageNotDebuggable));
    }
    if e.page_type() == PageType::Tcs && offset != TCS_FLAGS {
        return Err(GP);
    }
    require_debug(cx, e)?;
    s::set_u64(slot.data_mut(), offset, rbx);
    Ok(())
}

/// SGX_TCS_LIMIT for EDBGRD: MODEL CHOICE, the architectural TCS fields (72 bytes).
const TCS_LIMIT: usize = 72;
/// The only TCS qword EDBGWR may write: FLAGS.
const TCS_FLAGS: usize = 8;

/// REG/TCS pages are debuggable only in DEBUG enclaves (#GP otherwise).
fn require_debug(cx: &Ctx<'_>, e: Epcm) -> LeafResult {
    let secs = cx.lock_secs(e.secs())?;
    if s::flags(secs.data()).contains(AttributesFlags::DEBUG) { Ok(()) } else { Err(GP) }
}
