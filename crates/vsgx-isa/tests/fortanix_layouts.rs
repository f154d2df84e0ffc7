//! Cross-checks the architectural structures against the independent Fortanix `sgx-isa` crate.
//!
//! For every structure both crates define, a buffer of the architectural size is filled with a byte
//! pattern in which (nearly) every field gets distinct bytes, parsed with both crates, and compared
//! field by field; both crates must also give the buffer back unchanged. Bit-flag and enum values
//! and the measurement tags are compared too.
//!
//! Fortanix `sgx-isa` 0.6 follows a pre-KSS edition of the SDM: it calls the KSS fields
//! (CONFIGID, CONFIGSVN, ISVFAMILYID, ...) reserved or, in REPORT and SIGSTRUCT, already names them.
//! Where it lumps one of our fields into a reserved array, the overlapping bytes are compared and a
//! comment says so. Fortanix has no GPRSGX, EXINFO, RDINFO or VA-page types, so those are not
//! cross-checked here (their offsets are asserted at compile time in `vsgx-isa` itself).

use core::mem::{align_of, size_of};

use vsgx_isa::leaf::{Encls, Enclu};
use vsgx_isa::measure::{TAG_EADD, TAG_ECREATE, TAG_EEXTEND};
use vsgx_isa::status::SgxError;
use vsgx_isa::{
    ArchStruct, Attributes, AttributesFlags, Einittoken, Keyname, Keypolicy, Keyrequest, Miscselect, PageType,
    Pageinfo, Pcmd, Report, Secinfo, SecinfoFlags, Secs, Sigstruct, Targetinfo, Tcs, TcsFlags,
};

const SIG: &[u8] = include_bytes!("../../../testdata/fortanix-test-enclave.sig");

/// The patterns every structure is checked with: the brief's `i·7 + 3`, which repeats every 256
/// bytes, and an LCG stream, which does not, so a field misplaced by a multiple of 256 is caught.
fn patterns(len: usize) -> [Vec<u8>; 2] {
    let affine = (0..len).map(|i| (i * 7 + 3) as u8).collect();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let lcg = (0..len)
        .map(|_| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (state >> 56) as u8
        })
        .collect();
    [affine, lcg]
}

/// Parses `buf` with both crates and checks both give the bytes back unchanged.
macro_rules! parse_both {
    ($ours:ty, $theirs:ty, $buf:expr) => {{
        let buf: &[u8] = $buf;
        let ours = <$ours>::from_bytes(buf).expect("vsgx-isa accepts the architectural size");
        let theirs = <$theirs>::try_copy_from(buf).expect("Fortanix accepts the architectural size");
        assert_eq!(ours.bytes(), buf, "{}: vsgx-isa round trip", <$ours>::NAME);
        assert_eq!(theirs.as_ref(), buf, "{}: Fortanix round trip", <$ours>::NAME);
        (ours, theirs)
    }};
}

/// Sizes: Fortanix's UNPADDED_SIZE is the architectural size; its Rust size is padded up to its
/// alignment. Alignment: Fortanix declares the operand alignment with `repr(align)`.
macro_rules! check_size_and_align {
    ($ours:ty, $theirs:ty) => {{
        assert_eq!(<$theirs>::UNPADDED_SIZE, <$ours>::SIZE, "{} size", <$ours>::NAME);
        assert_eq!(size_of::<$ours>(), <$ours>::SIZE, "{} Rust size", <$ours>::NAME);
        assert!(size_of::<$theirs>() >= <$ours>::SIZE);
        assert_eq!(align_of::<$theirs>(), <$ours>::ALIGN, "{} alignment", <$ours>::NAME);
        // Both crates reject every other length.
        for len in [0, <$ours>::SIZE - 1, <$ours>::SIZE + 1] {
            let buf = vec![0u8; len];
            assert!(<$ours>::from_bytes(&buf).is_err(), "{} accepted {len} bytes", <$ours>::NAME);
            assert!(<$theirs>::try_copy_from(&buf).is_none());
        }
    }};
}

fn assert_attributes(ours: &Attributes, theirs: &sgx_isa::Attributes) {
    assert_eq!(ours.flags, theirs.flags.bits(), "ATTRIBUTES.FLAGS");
    assert_eq!(ours.xfrm, theirs.xfrm, "ATTRIBUTES.XFRM");
}

/// Fortanix stores ATTRIBUTEMASK (SIGSTRUCT, KEYREQUEST) as `[u64; 2]`: FLAGS, then XFRM.
fn assert_attribute_mask(ours: &Attributes, theirs: &[u64; 2]) {
    assert_eq!([ours.flags, ours.xfrm], *theirs, "ATTRIBUTEMASK");
}

#[test]
fn attributes() {
    assert_eq!(sgx_isa::Attributes::UNPADDED_SIZE, Attributes::SIZE);
    assert_eq!(size_of::<Attributes>(), Attributes::SIZE);
    // ATTRIBUTES has no alignment attribute in Fortanix (it is never an instruction operand on its
    // own); vsgx-isa's ALIGN = 16 documents the SDM's 16-byte alignment of the field.
    assert_eq!(Attributes::ALIGN, 16);
    for buf in patterns(Attributes::SIZE) {
        let (ours, theirs) = parse_both!(Attributes, sgx_isa::Attributes, &buf);
        assert_attributes(&ours, &theirs);
    }
}

#[test]
fn secs() {
    check_size_and_align!(Secs, sgx_isa::Secs);
    for buf in patterns(Secs::SIZE) {
        let (ours, theirs) = parse_both!(Secs, sgx_isa::Secs, &buf);
        assert_eq!(ours.size, theirs.size);
        assert_eq!(ours.baseaddr, theirs.baseaddr);
        assert_eq!(ours.ssaframesize, theirs.ssaframesize);
        assert_eq!(ours.miscselect, theirs.miscselect.bits());
        assert_eq!(ours.reserved0, theirs._reserved1);
        assert_attributes(&ours.attributes, &theirs.attributes);
        assert_eq!(ours.mrenclave, theirs.mrenclave);
        assert_eq!(ours.reserved1, theirs._reserved2);
        assert_eq!(ours.mrsigner, theirs.mrsigner);
        // Fortanix `_reserved3` (96 bytes @160) = our reserved2 (32 @160) + CONFIGID (KSS, 64 @192).
        assert_eq!(ours.reserved2[..], theirs._reserved3[..32]);
        assert_eq!(ours.configid[..], theirs._reserved3[32..]);
        assert_eq!(ours.isvprodid, theirs.isvprodid);
        assert_eq!(ours.isvsvn, theirs.isvsvn);
        // Fortanix `padding` (3836 bytes @260) = CONFIGSVN (KSS, 2 @260) + our reserved3 (3834 @262).
        assert_eq!(ours.configsvn.to_le_bytes()[..], theirs.padding[..2]);
        assert_eq!(ours.reserved3[..], theirs.padding[2..]);
    }
}

#[test]
fn tcs() {
    check_size_and_align!(Tcs, sgx_isa::Tcs);
    for buf in patterns(Tcs::SIZE) {
        let (ours, theirs) = parse_both!(Tcs, sgx_isa::Tcs, &buf);
        // Fortanix calls STATE (@0) and AEP (@40) reserved: hardware-owned, software writes 0.
        assert_eq!(ours.state, theirs._reserved1);
        assert_eq!(ours.flags, theirs.flags.bits());
        assert_eq!(ours.ossa, theirs.ossa);
        assert_eq!(ours.cssa, theirs.cssa);
        assert_eq!(ours.nssa, theirs.nssa);
        assert_eq!(ours.oentry, theirs.oentry);
        assert_eq!(ours.aep, theirs._reserved2);
        assert_eq!(ours.ofsbasgx, theirs.ofsbasgx);
        assert_eq!(ours.ogsbasgx, theirs.ogsbasgx);
        assert_eq!(ours.fslimit, theirs.fslimit);
        assert_eq!(ours.gslimit, theirs.gslimit);
        assert_eq!(ours.reserved[..], theirs._reserved3[..]);
    }
    assert_eq!(Tcs::ARCH_FIELDS_END, Tcs::SIZE - 4024, "Fortanix's trailing reserved array");
}

#[test]
fn secinfo() {
    check_size_and_align!(Secinfo, sgx_isa::Secinfo);
    for buf in patterns(Secinfo::SIZE) {
        let (ours, theirs) = parse_both!(Secinfo, sgx_isa::Secinfo, &buf);
        assert_eq!(ours.flags, theirs.flags.bits());
        assert_eq!(ours.reserved, theirs._reserved1);
        assert_eq!((ours.flags >> 8) as u8, theirs.flags.page_type());
        assert_eq!(ours.page_type().map(|t| t as u8), {
            let raw = theirs.flags.page_type();
            sgx_isa::PageType::try_from(raw).ok().map(|t| t as u8)
        });
    }
    // A SECINFO built from a page type and permissions means the same to both crates.
    for pt in [PageType::Secs, PageType::Tcs, PageType::Reg, PageType::Va, PageType::Trim] {
        let theirs_pt = sgx_isa::PageType::try_from(pt as u8).expect("Fortanix knows the type");
        let ours = Secinfo::new(pt, SecinfoFlags::R | SecinfoFlags::X);
        let theirs = sgx_isa::SecinfoFlags::from(theirs_pt) | sgx_isa::SecinfoFlags::R | sgx_isa::SecinfoFlags::X;
        assert_eq!(ours.flags, theirs.bits(), "{}", pt.name());
        assert_eq!(ours.page_type(), Some(pt));
    }
}

#[test]
fn pageinfo() {
    check_size_and_align!(Pageinfo, sgx_isa::Pageinfo);
    for buf in patterns(Pageinfo::SIZE) {
        let (ours, theirs) = parse_both!(Pageinfo, sgx_isa::Pageinfo, &buf);
        assert_eq!(ours.linaddr, theirs.linaddr);
        assert_eq!(ours.srcpge, theirs.srcpge);
        assert_eq!(ours.secinfo_or_pcmd, theirs.secinfo);
        assert_eq!(ours.secs, theirs.secs);
    }
}

#[test]
fn pcmd() {
    check_size_and_align!(Pcmd, sgx_isa::Pcmd);
    for buf in patterns(Pcmd::SIZE) {
        let (ours, theirs) = parse_both!(Pcmd, sgx_isa::Pcmd, &buf);
        assert_eq!(ours.secinfo.flags, theirs.secinfo.flags.bits());
        assert_eq!(ours.secinfo.reserved, theirs.secinfo._reserved1);
        assert_eq!(ours.enclaveid, theirs.enclaveid);
        assert_eq!(ours.reserved, theirs._reserved1);
        assert_eq!(ours.mac, theirs.mac);
    }
}

fn assert_sigstruct(ours: &Sigstruct, theirs: &sgx_isa::Sigstruct) {
    assert_eq!(ours.header, theirs.header);
    assert_eq!(ours.vendor, theirs.vendor);
    assert_eq!(ours.date, theirs.date);
    assert_eq!(ours.header2, theirs.header2);
    assert_eq!(ours.swdefined, theirs.swdefined);
    assert_eq!(ours.reserved0[..], theirs._reserved1[..]);
    assert_eq!(ours.modulus[..], theirs.modulus[..]);
    assert_eq!(ours.exponent, theirs.exponent);
    assert_eq!(ours.signature[..], theirs.signature[..]);
    assert_eq!(ours.miscselect, theirs.miscselect.bits());
    assert_eq!(ours.miscmask, theirs.miscmask);
    assert_eq!(ours.cet_attributes, theirs.cet_attributes);
    assert_eq!(ours.cet_attributes_mask, theirs.cet_attributes_mask);
    // Fortanix declares the two reserved bytes @910 as one u16.
    assert_eq!(ours.reserved1, theirs._reserved2.to_le_bytes());
    assert_eq!(ours.isvfamilyid, theirs.isvfamilyid);
    assert_attributes(&ours.attributes, &theirs.attributes);
    assert_attribute_mask(&ours.attributemask, &theirs.attributemask);
    assert_eq!(ours.enclavehash, theirs.enclavehash);
    assert_eq!(ours.reserved2, theirs._reserved3);
    assert_eq!(ours.isvextprodid, theirs.isvextprodid);
    assert_eq!(ours.isvprodid, theirs.isvprodid);
    assert_eq!(ours.isvsvn, theirs.isvsvn);
    assert_eq!(ours.reserved3, theirs._reserved4);
    assert_eq!(ours.q1[..], theirs.q1[..]);
    assert_eq!(ours.q2[..], theirs.q2[..]);
    // The signed message: Fortanix hands out the two ranges, we concatenate them.
    let (head, body) = theirs.signature_data();
    assert_eq!(head, &ours.bytes()[Sigstruct::SIGNED_HEAD]);
    assert_eq!(body, &ours.bytes()[Sigstruct::SIGNED_BODY]);
    assert_eq!(ours.signed_message()[..], [head, body].concat()[..]);
}

#[test]
fn sigstruct() {
    check_size_and_align!(Sigstruct, sgx_isa::Sigstruct);
    for buf in patterns(Sigstruct::SIZE) {
        let (ours, theirs) = parse_both!(Sigstruct, sgx_isa::Sigstruct, &buf);
        assert_sigstruct(&ours, &theirs);
    }
    assert_eq!(Sigstruct::HEADER, sgx_isa::SIGSTRUCT_HEADER1);
    assert_eq!(Sigstruct::HEADER2, sgx_isa::SIGSTRUCT_HEADER2);
}

#[test]
fn real_sigstruct_reads_the_same() {
    let (ours, theirs) = parse_both!(Sigstruct, sgx_isa::Sigstruct, SIG);
    assert_sigstruct(&ours, &theirs);
    assert_eq!(theirs.header, sgx_isa::SIGSTRUCT_HEADER1);
    assert_eq!(theirs.header2, sgx_isa::SIGSTRUCT_HEADER2);
    assert_eq!(theirs.attributes.flags, sgx_isa::AttributesFlags::MODE64BIT);
}

#[test]
fn einittoken() {
    check_size_and_align!(Einittoken, sgx_isa::Einittoken);
    for buf in patterns(Einittoken::SIZE) {
        let (ours, theirs) = parse_both!(Einittoken, sgx_isa::Einittoken, &buf);
        assert_eq!(ours.valid, theirs.valid);
        assert_eq!(ours.reserved0, theirs._reserved1);
        assert_attributes(&ours.attributes, &theirs.attributes);
        assert_eq!(ours.mrenclave, theirs.mrenclave);
        assert_eq!(ours.reserved1, theirs._reserved2);
        assert_eq!(ours.mrsigner, theirs.mrsigner);
        assert_eq!(ours.reserved2, theirs._reserved3);
        assert_eq!(ours.cpusvnle, theirs.cpusvnle);
        assert_eq!(ours.isvprodidle, theirs.isvprodidle);
        assert_eq!(ours.isvsvnle, theirs.isvsvnle);
        assert_eq!(ours.reserved3, theirs._reserved4);
        assert_eq!(ours.maskedmiscselectle, theirs.maskedmiscselectle.bits());
        assert_attributes(&ours.maskedattributesle, &theirs.maskedattributesle);
        assert_eq!(ours.keyid, theirs.keyid);
        assert_eq!(ours.mac, theirs.mac);
    }
}

fn assert_report(ours: &Report, theirs: &sgx_isa::Report) {
    assert_eq!(ours.cpusvn, theirs.cpusvn);
    assert_eq!(ours.miscselect, theirs.miscselect.bits());
    // Fortanix splits our reserved0 (12 bytes @20) into CET_ATTRIBUTES (@20) and 11 reserved bytes;
    // vsgx does not model CET, so the byte stays inside reserved0 here.
    assert_eq!(ours.reserved0[0], theirs.cet_attributes);
    assert_eq!(ours.reserved0[1..], theirs._reserved1[..]);
    assert_eq!(ours.isvextprodid, theirs.isvextnprodid);
    assert_attributes(&ours.attributes, &theirs.attributes);
    assert_eq!(ours.mrenclave, theirs.mrenclave);
    assert_eq!(ours.reserved1, theirs._reserved2);
    assert_eq!(ours.mrsigner, theirs.mrsigner);
    assert_eq!(ours.reserved2, theirs._reserved3);
    assert_eq!(ours.configid, theirs.configid);
    assert_eq!(ours.isvprodid, theirs.isvprodid);
    assert_eq!(ours.isvsvn, theirs.isvsvn);
    assert_eq!(ours.configsvn, theirs.configsvn);
    assert_eq!(ours.reserved3, theirs._reserved4);
    assert_eq!(ours.isvfamilyid, theirs.isvfamilyid);
    assert_eq!(ours.reportdata, theirs.reportdata);
    assert_eq!(ours.keyid, theirs.keyid);
    assert_eq!(ours.mac, theirs.mac);
    // The MACed prefix.
    assert_eq!(Report::MACED, 0..sgx_isa::Report::TRUNCATED_SIZE);
    assert_eq!(&ours.bytes()[Report::MACED], &theirs.mac_data()[..]);
}

#[test]
fn report() {
    check_size_and_align!(Report, sgx_isa::Report);
    for buf in patterns(Report::SIZE) {
        let (ours, theirs) = parse_both!(Report, sgx_isa::Report, &buf);
        assert_report(&ours, &theirs);
    }
}

fn assert_targetinfo(ours: &Targetinfo, theirs: &sgx_isa::Targetinfo) {
    assert_eq!(ours.measurement, theirs.measurement);
    assert_attributes(&ours.attributes, &theirs.attributes);
    // Fortanix `_reserved1` (4 bytes @48) = our reserved0 (2 @48) + CONFIGSVN (KSS, 2 @50).
    assert_eq!(ours.reserved0[..], theirs._reserved1[..2]);
    assert_eq!(ours.configsvn.to_le_bytes()[..], theirs._reserved1[2..]);
    assert_eq!(ours.miscselect, theirs.miscselect.bits());
    // Fortanix `_reserved2` (456 bytes @56) = our reserved1 (8 @56) + CONFIGID (KSS, 64 @64)
    // + reserved2 (384 @128).
    assert_eq!(ours.reserved1[..], theirs._reserved2[..8]);
    assert_eq!(ours.configid[..], theirs._reserved2[8..72]);
    assert_eq!(ours.reserved2[..], theirs._reserved2[72..]);
}

#[test]
fn targetinfo() {
    check_size_and_align!(Targetinfo, sgx_isa::Targetinfo);
    for buf in patterns(Targetinfo::SIZE) {
        let (ours, theirs) = parse_both!(Targetinfo, sgx_isa::Targetinfo, &buf);
        assert_targetinfo(&ours, &theirs);
    }
}

#[test]
fn targetinfo_from_report_agrees_outside_kss() {
    for buf in patterns(Report::SIZE) {
        let (ours, theirs) = parse_both!(Report, sgx_isa::Report, &buf);
        let ours = Targetinfo::from_report(&ours);
        let theirs = sgx_isa::Targetinfo::from(theirs);
        // Fortanix (pre-KSS) copies MRENCLAVE, ATTRIBUTES and MISCSELECT; vsgx also copies the KSS
        // fields CONFIGSVN and CONFIGID, which Fortanix leaves zero. Everything else must agree.
        assert_eq!(ours.measurement, theirs.measurement);
        assert_attributes(&ours.attributes, &theirs.attributes);
        assert_eq!(ours.miscselect, theirs.miscselect.bits());
        let (ob, tb) = (ours.bytes(), theirs.as_ref());
        let kss = [50..52, 64..128];
        for i in 0..Targetinfo::SIZE {
            if kss.iter().any(|r| r.contains(&i)) {
                assert_eq!(tb[i], 0, "Fortanix leaves byte {i} zero");
            } else {
                assert_eq!(ob[i], tb[i], "TARGETINFO byte {i}");
            }
        }
        assert_eq!(ours.configid[..], buf[192..256]);
        assert_eq!(ours.configsvn.to_le_bytes()[..], buf[260..262]);
    }
}

#[test]
fn keyrequest() {
    check_size_and_align!(Keyrequest, sgx_isa::Keyrequest);
    for buf in patterns(Keyrequest::SIZE) {
        let (ours, theirs) = parse_both!(Keyrequest, sgx_isa::Keyrequest, &buf);
        assert_eq!(ours.keyname, theirs.keyname);
        assert_eq!(ours.keypolicy, theirs.keypolicy.bits());
        assert_eq!(ours.isvsvn, theirs.isvsvn);
        assert_eq!(ours.reserved0, theirs._reserved1);
        assert_eq!(ours.cpusvn, theirs.cpusvn);
        assert_attribute_mask(&ours.attributemask, &theirs.attributemask);
        assert_eq!(ours.keyid, theirs.keyid);
        assert_eq!(ours.miscmask, theirs.miscmask);
        // Fortanix `_reserved2` (436 bytes @76) = CONFIGSVN (KSS, 2 @76) + our reserved1 (434 @78).
        assert_eq!(ours.configsvn.to_le_bytes()[..], theirs._reserved2[..2]);
        assert_eq!(ours.reserved1[..], theirs._reserved2[2..]);
    }
}

#[test]
fn attributes_flags_bits() {
    use sgx_isa::AttributesFlags as F;
    let pairs = [
        (AttributesFlags::INIT, F::INIT),
        (AttributesFlags::DEBUG, F::DEBUG),
        (AttributesFlags::MODE64BIT, F::MODE64BIT),
        (AttributesFlags::PROVISIONKEY, F::PROVISIONKEY),
        (AttributesFlags::EINITTOKEN_KEY, F::EINITTOKENKEY),
        (AttributesFlags::CET, F::CET),
        (AttributesFlags::KSS, F::KSS),
    ];
    for (ours, theirs) in pairs {
        assert_eq!(ours.bits(), theirs.bits(), "{ours:?}");
    }
    // vsgx additionally knows AEX-Notify (bit 10), which postdates Fortanix sgx-isa 0.6.
    assert_eq!(AttributesFlags::all().bits(), F::all().bits() | AttributesFlags::AEXNOTIFY.bits());
    assert_eq!(AttributesFlags::AEXNOTIFY.bits(), 1 << 10);
}

#[test]
fn miscselect_bits() {
    assert_eq!(Miscselect::EXINFO.bits(), sgx_isa::Miscselect::EXINFO.bits());
    assert_eq!(Miscselect::all().bits(), sgx_isa::Miscselect::all().bits());
}

#[test]
fn secinfo_flags_bits() {
    use sgx_isa::SecinfoFlags as F;
    let pairs = [
        (SecinfoFlags::R, F::R),
        (SecinfoFlags::W, F::W),
        (SecinfoFlags::X, F::X),
        (SecinfoFlags::PENDING, F::PENDING),
        (SecinfoFlags::MODIFIED, F::MODIFIED),
        (SecinfoFlags::PR, F::PR),
    ];
    for (ours, theirs) in pairs {
        assert_eq!(ours.bits(), theirs.bits(), "{ours:?}");
    }
    assert_eq!(SecinfoFlags::all().bits(), (F::all() - F::PT_MASK).bits());
    assert_eq!(SecinfoFlags::PAGE_TYPE_MASK, F::PT_MASK.bits());
    assert_eq!(SecinfoFlags::RWX.bits(), (F::R | F::W | F::X).bits());
    // Reserved = everything that is neither a named flag nor the page type.
    assert_eq!(SecinfoFlags::RESERVED_MASK, !F::all().bits());
}

#[test]
fn tcs_flags_bits() {
    assert_eq!(TcsFlags::DBGOPTIN.bits(), sgx_isa::TcsFlags::DBGOPTIN.bits());
    // AEXNOTIFY (bit 1) postdates Fortanix sgx-isa 0.6.
    assert_eq!(TcsFlags::all().bits(), sgx_isa::TcsFlags::all().bits() | TcsFlags::AEXNOTIFY.bits());
}

#[test]
fn keypolicy_bits() {
    assert_eq!(Keypolicy::MRENCLAVE.bits(), sgx_isa::Keypolicy::MRENCLAVE.bits());
    assert_eq!(Keypolicy::MRSIGNER.bits(), sgx_isa::Keypolicy::MRSIGNER.bits());
    // Fortanix (pre-KSS) knows only bits 0 and 1; bits 2..=5 are the KSS policy bits.
    assert_eq!(Keypolicy::all().bits(), sgx_isa::Keypolicy::all().bits() | Keypolicy::KSS_BITS);
    assert_eq!(Keypolicy::RESERVED_MASK, !Keypolicy::all().bits());
}

#[test]
fn page_type_and_keyname_values() {
    for v in 0..=u8::MAX {
        assert_eq!(
            PageType::from_u8(v).map(|t| t as u8),
            sgx_isa::PageType::try_from(v).ok().map(|t| t as u8),
            "page type {v}"
        );
    }
    for v in 0..=u16::MAX {
        assert_eq!(
            Keyname::from_u16(v).map(|k| k as u16),
            sgx_isa::Keyname::try_from(v).ok().map(|k| k as u16),
            "key name {v}"
        );
    }
}

#[test]
fn measurement_tags() {
    assert_eq!(TAG_ECREATE, sgx_isa::MEAS_ECREATE);
    assert_eq!(TAG_EADD, sgx_isa::MEAS_EADD);
    assert_eq!(TAG_EEXTEND, sgx_isa::MEAS_EEXTEND);
}

/// `ECreate` → `ECREATE`, `InvalidEinitToken` → `INVALIDEINITTOKEN`.
fn squash(name: &str) -> String {
    name.chars().filter(|c| *c != '_').flat_map(char::to_uppercase).collect()
}

#[test]
fn leaf_numbers() {
    for v in 0..64u32 {
        if let Ok(theirs) = sgx_isa::Encls::try_from(v) {
            let ours = Encls::from_u32(v).unwrap_or_else(|| panic!("ENCLS leaf {v} missing"));
            assert_eq!(ours.name(), squash(&format!("{theirs:?}")));
        }
        if let Ok(theirs) = sgx_isa::Enclu::try_from(v) {
            let ours = Enclu::from_u32(v).unwrap_or_else(|| panic!("ENCLU leaf {v} missing"));
            assert_eq!(ours.name(), squash(&format!("{theirs:?}")));
        }
    }
}

#[test]
fn error_codes() {
    for v in 0..=1024u32 {
        let Ok(theirs) = sgx_isa::ErrorCode::try_from(v) else {
            continue;
        };
        let theirs_name = squash(&format!("{theirs:?}"));
        match SgxError::from_code(u64::from(v)) {
            None => assert_eq!(theirs, sgx_isa::ErrorCode::Success, "code {v} missing"),
            // Code 7 was SGX_LOCKFAIL in older SDMs; current ones call it SGX_EPC_PAGE_CONFLICT.
            Some(SgxError::EpcPageConflict) => assert_eq!(theirs, sgx_isa::ErrorCode::Lockfail),
            Some(ours) => {
                let ours_name = squash(ours.name().strip_prefix("SGX_").unwrap_or(ours.name()));
                assert_eq!(ours_name, theirs_name, "code {v}");
            }
        }
    }
}
