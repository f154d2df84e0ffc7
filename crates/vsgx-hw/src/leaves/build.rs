//! Building an enclave: ECREATE, EADD, EEXTEND, EINIT (SGX.md §6.1–6.4, §4.2).

use vsgx_isa::measure::Measurement;
use vsgx_isa::signing::{self, SigstructBody};
use vsgx_isa::status::SgxError;
use vsgx_isa::{
    ArchStruct, Attributes, AttributesFlags, Einittoken, PageType, Pageinfo, Secinfo, SecinfoFlags, Secs, SecsHidden,
    Sigstruct, Tcs, min_ssa_frame_pages, xfrm_is_legal,
};

use super::secs::{self as s};
use super::{Ctx, GP, LeafResult, Stop, align};
use crate::epc::Epcm;
use crate::keys;

/// Whether a 64-bit linear address is canonical (48-bit linear addresses).
pub(crate) fn canonical(la: u64) -> bool {
    let top = la >> 47;
    top == 0 || top == (1 << 17) - 1
}

/// ECREATE (ENCLS 0): RBX = PAGEINFO, RCX = destination EPC page.
pub fn ecreate(cx: &mut Ctx<'_>, rbx: u64, rcx: u64) -> LeafResult {
    align(rbx, 32)?;
    align(rcx, 4096)?;
    let (page, _) = cx.epc(rcx)?;
    let pageinfo: Pageinfo = cx.read(rbx)?;
    align(pageinfo.srcpge, 4096)?;
    align(pageinfo.secinfo_or_pcmd, 64)?;
    if pageinfo.linaddr != 0 || pageinfo.secs != 0 {
        return Err(GP);
    }
    let secinfo: Secinfo = cx.read(pageinfo.secinfo_or_pcmd)?;
    if !secinfo.reserved_is_zero() || secinfo.page_type() != Some(PageType::Secs) {
        return Err(GP);
    }
    let mut slot = cx.try_lock(page, GP)?;
    if slot.epcm.valid() {
        return Err(cx.epcm_fault(rcx));
    }
    let secs: Secs = cx.read(pageinfo.srcpge)?;
    check_secs(cx, &secs)?;

    let epc_address = cx.p.epc().address_of(page);
    let data = slot.data_mut();
    data.copy_from_slice(secs.bytes());
    let mut m = Measurement::new();
    m.ecreate(secs.ssaframesize, secs.size);
    s::store_measurement(data, &m);
    data[128..160].fill(0); // MRSIGNER
    data[256..260].fill(0); // ISVPRODID, ISVSVN
    s::set_u64(data, SecsHidden::EID, cx.p.next_eid());
    s::set_u64(data, SecsHidden::VIRTCHILDCNT, 0);
    s::set_u64(data, SecsHidden::ENCLAVECONTEXT, epc_address);
    s::set_u64(data, SecsHidden::TRK_EPOCH, 0);
    s::set_u64(data, SecsHidden::TRK_CUR, 0);
    s::set_u64(data, SecsHidden::TRK_PREV, 0);
    s::set_u64(data, s::CHILD_COUNT, 0);
    slot.epcm = Epcm::new(PageType::Secs, 0, None, 0);
    Ok(())
}

/// ECREATE's #GP checks on the SECS source (SGX.md §6.1 step 4).
fn check_secs(cx: &Ctx<'_>, secs: &Secs) -> LeafResult {
    let caps = cx.p.capabilities();
    let flags = AttributesFlags::from_bits_retain(secs.attributes.flags);
    let xfrm = secs.attributes.xfrm;
    let mode64 = flags.contains(AttributesFlags::MODE64BIT);
    let max = if mode64 { caps.max_enclave_size_64 } else { caps.max_enclave_size_32 } as u32;
    let checks = [
        xfrm & 3 == 3 && xfrm_is_legal(xfrm),
        secs.miscselect & !caps.miscselect == 0,
        secs.ssaframesize >= min_ssa_frame_pages(xfrm, secs.miscselect).max(1),
        if mode64 { canonical(secs.baseaddr) } else { secs.baseaddr < 1 << 32 },
        max >= 64 || secs.size < 1u64 << max,
        secs.size >= 8192 && secs.size.is_power_of_two(),
        secs.baseaddr & secs.size.wrapping_sub(1) == 0,
        secs.attributes.flags & !caps.attributes.flags == 0 && xfrm & !caps.attributes.xfrm == 0,
        secs.reserved_is_zero(),
        flags.contains(AttributesFlags::KSS) || (secs.configid == [0; 64] && secs.configsvn == 0),
    ];
    if checks.iter().all(|&ok| ok) { Ok(()) } else { Err(GP) }
}

/// EADD (ENCLS 1): RBX = PAGEINFO, RCX = destination EPC page.
pub fn eadd(cx: &mut Ctx<'_>, rbx: u64, rcx: u64) -> LeafResult {
    align(rbx, 32)?;
    align(rcx, 4096)?;
    let (page, _) = cx.epc(rcx)?;
    let pageinfo: Pageinfo = cx.read(rbx)?;
    align(pageinfo.srcpge, 4096)?;
    align(pageinfo.secs, 4096)?;
    align(pageinfo.secinfo_or_pcmd, 64)?;
    align(pageinfo.linaddr, 4096)?;
    let (secs_page, _) = cx.epc(pageinfo.secs)?;
    let secinfo: Secinfo = cx.read(pageinfo.secinfo_or_pcmd)?;
    let pt = secinfo.page_type();
    if !secinfo.reserved_is_zero() || !matches!(pt, Some(PageType::Reg | PageType::Tcs)) {
        return Err(GP);
    }
    let mut slot = cx.try_lock(page, GP)?;
    if slot.epcm.valid() {
        return Err(cx.epcm_fault(rcx));
    }
    let mut secs = cx.try_lock(secs_page, GP)?;
    if !secs.epcm.is(PageType::Secs) {
        return Err(cx.epcm_fault(pageinfo.secs));
    }
    // Step 5: copy the source page into the EPC page (it stays invalid until the EPCM update).
    let src = cx.memory(pageinfo.srcpge, super::Access::Read)?;
    cx.mem.read_memory(src, slot.data_mut())?;
    let mut flags = secinfo.flags;
    let mode64 = s::flags(secs.data()).contains(AttributesFlags::MODE64BIT);
    if pt == Some(PageType::Tcs) {
        let tcs = Tcs::from_bytes(slot.data()).map_err(|_| GP)?;
        if tcs.reserved.iter().any(|&b| b != 0) {
            return Err(GP);
        }
        if !mode64 && (tcs.fslimit & 0xFFF != 0xFFF || tcs.gslimit & 0xFFF != 0xFFF) {
            return Err(GP);
        }
    } else {
        let perms = secinfo.perms();
        if perms.contains(SecinfoFlags::W) && !perms.contains(SecinfoFlags::R) {
            return Err(GP);
        }
    }
    if !s::in_elrange(secs.data(), pageinfo.linaddr) || s::initialized(secs.data()) {
        return Err(GP);
    }
    if pt == Some(PageType::Tcs) {
        flags &= !SecinfoFlags::RWX.bits();
        let content = slot.data_mut();
        content[0..8].fill(0); // STATE
        content[8] &= !1; // FLAGS.DBGOPTIN
        content[24..28].fill(0); // CSSA
        content[40..48].fill(0); // AEP
    }
    let offset = pageinfo.linaddr - s::baseaddr(secs.data());
    let mut m = s::measurement(secs.data());
    m.eadd(offset, flags);
    s::store_measurement(secs.data_mut(), &m);
    s::add_children(secs.data_mut(), 1);
    slot.epcm = Epcm::new(pt.unwrap_or(PageType::Reg), flags, Some(secs_page), pageinfo.linaddr);
    Ok(())
}

/// EEXTEND (ENCLS 6): RBX = SECS, RCX = 256-byte chunk in EPC.
pub fn eextend(cx: &mut Ctx<'_>, rbx: u64, rcx: u64) -> LeafResult {
    align(rbx, 4096)?;
    let (secs_page, _) = cx.epc(rbx)?;
    align(rcx, 256)?;
    let (page, offset) = cx.epc(rcx)?;
    let slot = cx.try_lock(page, GP)?;
    if !slot.epcm.valid() || !matches!(slot.epcm.page_type(), PageType::Reg | PageType::Tcs) {
        return Err(cx.epcm_fault(rcx));
    }
    if slot.epcm.secs() != secs_page {
        return Err(GP);
    }
    let mut secs = cx.try_lock(secs_page, GP)?;
    if !secs.epcm.is(PageType::Secs) || s::initialized(secs.data()) {
        return Err(GP);
    }
    let chunk: &[u8; 256] = slot.data()[offset..offset + 256].try_into().map_err(|_| GP)?;
    let chunk_offset = slot.epcm.enclave_address().wrapping_sub(s::baseaddr(secs.data())) + offset as u64;
    let mut m = s::measurement(secs.data());
    m.eextend(chunk_offset, chunk);
    s::store_measurement(secs.data_mut(), &m);
    Ok(())
}

/// EINIT (ENCLS 2): RBX = SIGSTRUCT, RCX = SECS, RDX = EINITTOKEN. Checks in SGX.md §4.2 order.
pub fn einit(cx: &mut Ctx<'_>, rbx: u64, rcx: u64, rdx: u64) -> LeafResult {
    align(rbx, 4096)?;
    align(rcx, 4096)?;
    align(rdx, 512)?;
    let (secs_page, _) = cx.epc(rcx)?;
    let sig: Sigstruct = cx.read(rbx)?;
    let token: Einittoken = cx.read(rdx)?;
    signing::check_structure(&sig).map_err(|_| Stop::Error(SgxError::InvalidSigStruct))?;
    if cx.p.take_unmasked_event() {
        return Err(Stop::Error(SgxError::UnmaskedEvent));
    }
    let verified = signing::verify_signature(&sig).map_err(|_| Stop::Error(SgxError::InvalidSignature))?;
    let mut secs = cx.try_lock(secs_page, GP)?;
    if !secs.epcm.is(PageType::Secs) {
        return Err(cx.epcm_fault(rcx));
    }
    let data = secs.data();
    if s::initialized(data) {
        return Err(GP);
    }
    let flags = s::flags(data);
    if sig.isvfamilyid != [0; 16] && !flags.contains(AttributesFlags::KSS) {
        return Err(Stop::Error(SgxError::InvalidSigStruct));
    }
    let mrenclave = s::measurement(data).finalize();
    if mrenclave != sig.enclavehash {
        return Err(Stop::Error(SgxError::InvalidMeasurement));
    }
    let lehash = cx.mem.lehash();
    let mrsigner = verified.mrsigner;
    if flags.contains(AttributesFlags::EINITTOKEN_KEY) && mrsigner != lehash {
        return Err(Stop::Error(SgxError::InvalidAttribute));
    }
    let attributes = s::attributes(data);
    if attributes.and(&sig.attributemask) != sig.attributes.and(&sig.attributemask) {
        return Err(Stop::Error(SgxError::InvalidAttribute));
    }
    let miscselect = s::miscselect(data);
    if miscselect & sig.miscmask != sig.miscselect & sig.miscmask {
        return Err(Stop::Error(SgxError::InvalidAttribute));
    }
    if token.valid & 1 == 0 {
        if mrsigner != lehash {
            return Err(Stop::Error(SgxError::InvalidEinittoken));
        }
    } else {
        check_token(cx, &token, &lehash, flags, mrenclave, mrsigner, attributes)?;
    }

    // COMMIT.
    let body = SigstructBody::of(&sig);
    let data = secs.data_mut();
    data[64..96].copy_from_slice(&mrenclave);
    data[128..160].copy_from_slice(&mrsigner);
    data[256..258].copy_from_slice(&body.isvprodid.to_le_bytes());
    data[258..260].copy_from_slice(&body.isvsvn.to_le_bytes());
    data[SecsHidden::ISVFAMILYID..SecsHidden::ISVFAMILYID + 16].copy_from_slice(&body.isvfamilyid);
    data[SecsHidden::ISVEXTPRODID..SecsHidden::ISVEXTPRODID + 16].copy_from_slice(&body.isvextprodid);
    data[SecsHidden::PADDING..SecsHidden::PADDING + 352].copy_from_slice(&verified.padding);
    s::set_u64(data, 48, (flags | AttributesFlags::INIT).bits());
    Ok(())
}

/// EINIT steps 16–21: a token with VALID = 1.
fn check_token(
    cx: &Ctx<'_>,
    token: &Einittoken,
    lehash: &[u8; 32],
    flags: AttributesFlags,
    mrenclave: [u8; 32],
    mrsigner: [u8; 32],
    attributes: Attributes,
) -> LeafResult {
    let bad_token = Stop::Error(SgxError::InvalidEinittoken);
    if token.maskedattributesle.flags & AttributesFlags::DEBUG.bits() != 0 && !flags.contains(AttributesFlags::DEBUG) {
        return Err(bad_token);
    }
    let bytes = token.bytes();
    if token.valid & !1 != 0 || Einittoken::RESERVED_RANGES.iter().any(|r| bytes[r.clone()].iter().any(|&b| b != 0)) {
        return Err(bad_token);
    }
    let platform = cx.p.keys();
    if keys::cpusvn_beyond(&token.cpusvnle, &platform.cpusvn) {
        return Err(Stop::Error(SgxError::InvalidCpusvn));
    }
    let key = keys::einittoken_key(token, lehash, &platform);
    if keys::einittoken_mac(&key, token) != token.mac {
        return Err(bad_token);
    }
    if token.mrenclave != mrenclave || token.mrsigner != mrsigner {
        return Err(Stop::Error(SgxError::InvalidMeasurement));
    }
    if token.attributes != attributes {
        return Err(Stop::Error(SgxError::InvalidAttribute));
    }
    Ok(())
}
