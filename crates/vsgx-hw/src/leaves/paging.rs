//! EPC paging: EPA, EBLOCK, ETRACK, EWB, ELDB/ELDU/ELDBC/ELDUC, ERDINFO, ETRACKC
//! (SGX.md §6.7–6.11, §6.24–6.25, §7).

use vsgx_isa::status::SgxError;
use vsgx_isa::{ArchStruct, PageType, Pageinfo, Pcmd, Rdinfo, Secinfo, SecsHidden};

use super::secs as s;
use super::{Ctx, GP, LeafResult, Stop, align, is_child_type};
use crate::crypto::mac_header;
use crate::epc::Epcm;

/// EPA (ENCLS 0xA): RBX = PT_VA, RCX = EPC page.
pub fn epa(cx: &mut Ctx<'_>, rbx: u64, rcx: u64) -> LeafResult {
    if rbx != PageType::Va as u64 {
        return Err(GP);
    }
    align(rcx, 4096)?;
    let (page, _) = cx.epc(rcx)?;
    let mut slot = cx.try_lock(page, GP)?;
    if slot.epcm.valid() {
        return Err(cx.epcm_fault(rcx));
    }
    slot.zero();
    slot.epcm = Epcm::new(PageType::Va, 0, None, 0);
    Ok(())
}

/// EBLOCK (ENCLS 9): RCX = EPC page.
pub fn eblock(cx: &mut Ctx<'_>, rcx: u64) -> LeafResult {
    align(rcx, 4096)?;
    let (page, _) = cx.epc(rcx)?;
    let mut slot = cx.try_lock(page, Stop::Error(SgxError::EpcPageConflict))?;
    let e = slot.epcm;
    if !e.valid() {
        return Err(Stop::Error(SgxError::PgInvld));
    }
    match e.page_type() {
        PageType::Secs => return Err(Stop::Info(SgxError::PgIsSecs)),
        PageType::Va => return Err(Stop::Info(SgxError::Notblockable)),
        _ => {}
    }
    if e.blocked() {
        return Err(Stop::Info(SgxError::Blkstate));
    }
    let epoch = s::trk_epoch(cx.lock_secs(e.secs())?.data());
    slot.epcm.set_blocked(true);
    slot.epcm.set_block_epoch(Some(epoch));
    Ok(())
}

/// ETRACK (ENCLS 0xC): RCX = SECS.
pub fn etrack(cx: &mut Ctx<'_>, rcx: u64) -> LeafResult {
    align(rcx, 4096)?;
    let (page, _) = cx.epc(rcx)?;
    let mut secs = cx.try_lock(page, GP)?;
    if !secs.epcm.is(PageType::Secs) {
        return Err(cx.epcm_fault(rcx));
    }
    if s::trk_prev(secs.data()) > 0 {
        return Err(Stop::Error(SgxError::PrevTrkIncmpl));
    }
    s::advance_epoch(secs.data_mut());
    Ok(())
}

/// ETRACKC (ENCLS 0x11): RCX = any EPC page of the enclave, or its SECS.
pub fn etrackc(cx: &mut Ctx<'_>, rcx: u64) -> LeafResult {
    align(rcx, 4096)?;
    let page = match cx.epc(rcx) {
        Ok((page, _)) => page,
        Err(Stop::Fault(vsgx_isa::cpu::Exception::PageFault { .. })) => return Err(cx.epcm_fault(rcx)),
        Err(other) => return Err(other),
    };
    let conflict = || Stop::Error(SgxError::EpcPageConflict);
    let slot = cx.try_lock(page, conflict())?;
    let e = slot.epcm;
    if !e.valid() {
        return Err(Stop::Error(SgxError::PgInvld));
    }
    match e.page_type() {
        PageType::Va => Err(Stop::Info(SgxError::TrackNotRequired)),
        PageType::Secs => {
            let mut secs = slot;
            if s::trk_prev(secs.data()) > 0 {
                return Err(Stop::Error(SgxError::PrevTrkIncmpl));
            }
            s::advance_epoch(secs.data_mut());
            Ok(())
        }
        _ => {
            let mut secs = cx.p.epc().try_lock(e.secs()).ok_or_else(conflict)?;
            drop(slot);
            if s::trk_prev(secs.data()) > 0 {
                return Err(Stop::Error(SgxError::PrevTrkIncmpl));
            }
            s::advance_epoch(secs.data_mut());
            Ok(())
        }
    }
}

/// EWB (ENCLS 0xB): RBX = PAGEINFO, RCX = EPC page, RDX = VA slot. Returns 0 or, with CF,
/// SGX_VA_SLOT_OCCUPIED (the eviction still completes).
pub fn ewb(cx: &mut Ctx<'_>, rbx: u64, rcx: u64, rdx: u64) -> LeafResult<u64> {
    align(rbx, 32)?;
    align(rcx, 4096)?;
    let (page, _) = cx.epc(rcx)?;
    align(rdx, 8)?;
    let (va_page, slot_offset) = cx.epc(rdx)?;
    if page == va_page {
        return Err(GP);
    }
    let pageinfo: Pageinfo = cx.read(rbx)?;
    if pageinfo.linaddr != 0 || pageinfo.secs != 0 {
        return Err(GP);
    }
    align(pageinfo.secinfo_or_pcmd, 128)?;
    align(pageinfo.srcpge, 4096)?;
    // Outputs are resolved before anything changes, so a fault leaves the machine untouched.
    let pcmd_out = cx.writable(pageinfo.secinfo_or_pcmd)?;
    let srcpge_out = cx.writable(pageinfo.srcpge)?;
    let pageinfo_out = cx.writable(rbx)?;

    let mut slot = cx.try_lock(page, GP)?;
    let mut va = cx.try_lock(va_page, GP)?;
    let e = slot.epcm;
    if !e.valid() {
        return Err(cx.epcm_fault(rcx));
    }
    if !va.epcm.is(PageType::Va) {
        return Err(cx.epcm_fault(rdx));
    }
    let pt = e.page_type();
    let mut parent = None;
    let (hdr_eid, pcmd_eid) = match pt {
        PageType::Reg | PageType::Tcs | PageType::Trim => {
            if !e.blocked() {
                return Err(Stop::Error(SgxError::PageNotBlocked));
            }
            let secs = cx.lock_secs(e.secs())?;
            if !s::tracked(secs.data(), e.block_epoch()) {
                return Err(Stop::Error(SgxError::NotTracked));
            }
            let eid = s::eid(secs.data());
            parent = Some(secs);
            (eid, eid)
        }
        PageType::Secs => {
            if s::children(slot.data()) > 0 {
                return Err(Stop::Error(SgxError::ChildPresent));
            }
            (0, s::eid(slot.data()))
        }
        PageType::Va => (0, 0),
    };
    let secinfo_flags = e.secinfo_flags();
    let linaddr = e.enclave_address();
    let header = mac_header(secinfo_flags, hdr_eid, &[0; 40], linaddr);
    let version = cx.p.next_version();
    let mut ciphertext = *slot.data();
    let mac = cx.p.with_paging_key(|k| k.seal(version, &header, &mut ciphertext));
    let mut pcmd = Pcmd::zeroed();
    pcmd.secinfo = Secinfo::from_raw_flags(secinfo_flags);
    pcmd.enclaveid = pcmd_eid;
    pcmd.mac = mac;
    cx.write_at(srcpge_out, &ciphertext)?;
    cx.write_at(pcmd_out, pcmd.bytes())?;
    cx.write_at(pageinfo_out, &linaddr.to_le_bytes())?;

    let old = s::u64_at(va.data(), slot_offset);
    s::set_u64(va.data_mut(), slot_offset, version);
    if let Some(mut secs) = parent {
        s::add_children(secs.data_mut(), -1);
    }
    slot.epcm = Epcm::INVALID;
    Ok(if old != 0 { SgxError::VaSlotOccupied.code() } else { 0 })
}

/// Whether ELD* leaves the page blocked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Load {
    /// ELDB/ELDBC.
    Blocked,
    /// ELDU/ELDUC.
    Unblocked,
}

/// ELDB/ELDU (ENCLS 7/8) and ELDBC/ELDUC (0x12/0x13, `report_conflicts`): RBX = PAGEINFO,
/// RCX = EPC page, RDX = VA slot.
pub fn eld(cx: &mut Ctx<'_>, rbx: u64, rcx: u64, rdx: u64, load: Load, report_conflicts: bool) -> LeafResult {
    align(rbx, 32)?;
    align(rcx, 4096)?;
    let (page, _) = cx.epc(rcx)?;
    align(rdx, 8)?;
    let (va_page, slot_offset) = cx.epc(rdx)?;
    let pageinfo: Pageinfo = cx.read(rbx)?;
    align(pageinfo.secinfo_or_pcmd, 128)?;
    align(pageinfo.srcpge, 4096)?;
    let conflict = || if report_conflicts { Stop::Error(SgxError::EpcPageConflict) } else { GP };
    if page == va_page {
        return Err(conflict());
    }
    let mut slot = cx.try_lock(page, conflict())?;
    let mut va = cx.try_lock(va_page, conflict())?;
    if slot.epcm.valid() {
        return Err(cx.epcm_fault(rcx));
    }
    if !va.epcm.is(PageType::Va) {
        return Err(cx.epcm_fault(rdx));
    }
    let pcmd: Pcmd = cx.read(pageinfo.secinfo_or_pcmd)?;
    let pt = pcmd.secinfo.page_type();
    let mut parent = None;
    let hdr_eid = match pt {
        Some(PageType::Reg | PageType::Tcs | PageType::Trim) => {
            align(pageinfo.secs, 4096)?;
            let (secs_page, _) = cx.epc(pageinfo.secs)?;
            let secs = if secs_page == page {
                return Err(conflict());
            } else {
                cx.p.epc().try_lock(secs_page).ok_or_else(conflict)?
            };
            if !secs.epcm.is(PageType::Secs) {
                return Err(cx.epcm_fault(pageinfo.secs));
            }
            let eid = s::eid(secs.data());
            parent = Some((secs_page, secs));
            eid
        }
        _ => {
            if pageinfo.secs != 0 {
                return Err(GP);
            }
            0
        }
    };
    let mut reserved = [0u8; 40];
    reserved.copy_from_slice(&pcmd.bytes()[72..112]);
    let mut header = mac_header(pcmd.secinfo.flags, hdr_eid, &reserved, pageinfo.linaddr);
    // hdr.SECINFO is the whole 64-byte PCMD.SECINFO (SGX.md §6.11 step 4, §1.8), not only its
    // FLAGS: EWB zeroed the other 56 bytes, so a PCMD with any of them set must fail the MAC.
    header[..64].copy_from_slice(pcmd.secinfo.bytes());
    let mut plaintext = [0u8; 4096];
    cx.read_bytes(pageinfo.srcpge, &mut plaintext)?;
    let version = s::u64_at(va.data(), slot_offset);
    let opened = cx.p.with_paging_key(|k| k.open(version, &header, &mut plaintext, &pcmd.mac));
    let Some(pt) = pt.filter(|_| opened.is_ok()) else {
        return Err(Stop::Error(SgxError::MacCompareFail));
    };

    s::set_u64(va.data_mut(), slot_offset, 0);
    let flags = pcmd.secinfo.flags;
    let mut e = Epcm::new(pt, flags & 7, parent.as_ref().map(|(p, _)| *p), pageinfo.linaddr);
    e.set_pending(flags & (1 << 3) != 0);
    e.set_modified(flags & (1 << 4) != 0);
    e.set_pr(flags & (1 << 5) != 0);
    e.set_blocked(load == Load::Blocked && is_child_type(pt));
    if matches!(pt, PageType::Secs | PageType::Va) {
        e.set_enclave_address(0);
    }
    slot.set_data(&plaintext);
    if pt == PageType::Secs {
        let here = cx.p.epc().address_of(page);
        s::set_u64(slot.data_mut(), SecsHidden::ENCLAVECONTEXT, here);
    }
    if let Some((_, mut secs)) = parent {
        s::add_children(secs.data_mut(), 1);
    }
    slot.epcm = e;
    Ok(())
}

/// ERDINFO (ENCLS 0x10): RBX = RDINFO output, RCX = EPC page.
pub fn erdinfo(cx: &mut Ctx<'_>, rbx: u64, rcx: u64) -> LeafResult {
    align(rbx, 32)?;
    align(rcx, 4096)?;
    let page = match cx.epc(rcx) {
        Ok((page, _)) => page,
        Err(Stop::Fault(vsgx_isa::cpu::Exception::PageFault { error_code, .. }))
            if error_code & vsgx_isa::cpu::pfec::SGX != 0 =>
        {
            return Err(Stop::Info(SgxError::PgNonepc));
        }
        Err(other) => return Err(other),
    };
    let out = cx.writable(rbx)?;
    let slot = cx.try_lock(page, Stop::Error(SgxError::EpcPageConflict))?;
    let e = slot.epcm;
    if !e.valid() {
        return Err(Stop::Info(SgxError::PgInvld));
    }
    let mut info = Rdinfo { flags: e.secinfo_flags(), ..Rdinfo::default() };
    if e.blocked() {
        info.flags |= Rdinfo::BLOCKED;
    }
    match e.page_type() {
        PageType::Secs => {
            if s::children(slot.data()) > 0 {
                info.status |= Rdinfo::CHILDPRESENT;
            }
            if s::u64_at(slot.data(), SecsHidden::VIRTCHILDCNT) > 0 {
                info.status |= Rdinfo::VIRTCHILDPRESENT;
            }
            info.enclavecontext = s::u64_at(slot.data(), SecsHidden::ENCLAVECONTEXT);
        }
        PageType::Va => {}
        _ => {
            drop(slot);
            let secs = cx.lock_secs(e.secs())?;
            info.enclavecontext = s::u64_at(secs.data(), SecsHidden::ENCLAVECONTEXT);
        }
    }
    cx.write_at(out, info.bytes())?;
    Ok(())
}
