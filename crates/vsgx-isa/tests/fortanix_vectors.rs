//! The real enclave in `testdata/` (made by Fortanix's tools) measures and verifies to the values
//! recorded in `testdata/README.md`.

use vsgx_isa::sgxs::{self, LoadPlan};
use vsgx_isa::signing::{self, SigstructBody};
use vsgx_isa::{ArchStruct, PageType, Sigstruct, Tcs};

const SGXS: &[u8] = include_bytes!("../../../testdata/fortanix-test-enclave.sgxs");
const SIG: &[u8] = include_bytes!("../../../testdata/fortanix-test-enclave.sig");
const MRENCLAVE: &str = "784acfd7d5096a8f0fbd3265760bff21b120f62407a9a9e5ba31aa3c8ed198fc";
const MRSIGNER: &str = "fb4bab3d6036ac1d730fa83d7366df1dd2dfeac194ef335d6854d8a6c6475542";

#[test]
fn stream_measures_to_the_recorded_mrenclave() {
    let summary = sgxs::measure(SGXS).expect("canonical stream");
    assert_eq!(hex::encode(summary.mrenclave), MRENCLAVE);
    assert_eq!(summary.size, 0x40000);
    assert_eq!(summary.ssaframesize, 1);
    assert_eq!(summary.pages, 9);
    assert_eq!(summary.measured_chunks, 144);
    assert_eq!(summary.unmeasured_chunks, 0);
}

#[test]
fn load_plan_matches_the_page_list_and_remeasures_like_hardware() {
    let plan = LoadPlan::from_sgxs(SGXS).unwrap();
    let pages: Vec<(u64, u64)> = plan.pages.iter().map(|p| (p.offset, p.secinfo_flags)).collect();
    assert_eq!(
        pages,
        [
            (0x0, 0x201),
            (0x1000, 0x205),
            (0x2000, 0x203),
            (0x4000, 0x201),
            (0x15000, 0x100),
            (0x16000, 0x203),
            (0x27000, 0x203),
            (0x28000, 0x203),
            (0x39000, 0x203)
        ]
    );
    assert!(plan.pages.iter().all(|p| p.measured_chunks().count() == 16));
    assert_eq!(hex::encode(plan.mrenclave()), MRENCLAVE);
    assert_eq!(plan.to_sgxs().unwrap(), SGXS, "plan serializes back to the same stream");

    let tcs_page = &plan.pages[4];
    assert_eq!(tcs_page.page_type(), Some(PageType::Tcs));
    let tcs = Tcs::from_bytes(&tcs_page.content[..]).unwrap();
    assert_eq!((tcs.ossa, tcs.nssa, tcs.cssa, tcs.oentry), (0x27000, 2, 0, 0x1000));
    assert_eq!((tcs.ofsbasgx, tcs.ogsbasgx, tcs.fslimit, tcs.gslimit), (0x16000, 0x16000, 0xFFF, 0xFFF));
    assert_eq!(tcs.flags, 0);
}

#[test]
fn sigstruct_verifies_with_the_recorded_identity() {
    let sig = Sigstruct::from_bytes(SIG).unwrap();
    let verified = signing::verify(&sig).expect("valid signature");
    assert_eq!(hex::encode(verified.mrsigner), MRSIGNER);
    assert_eq!(verified.padding, signing::HARDCODED_PKCS1_5_PADDING);
    assert_eq!(hex::encode(sig.enclavehash), MRENCLAVE);
    assert_eq!(
        hex::encode(<[u8; 32]>::from(<sha2::Sha256 as sha2::Digest>::digest(sig.signed_message()))),
        "4a106038882a9de40d1d1bcbaadc7973ce0fe41185f340a989ce3bf1afb65b6f"
    );
    assert_eq!((sig.vendor, sig.date, sig.exponent), (0, 0x20161214, 3));
    assert_eq!((sig.miscselect, sig.miscmask), (0, 0xFFFF_FFFF));
    assert_eq!((sig.attributes.flags, sig.attributes.xfrm), (0x4, 0x3));
    assert_eq!((sig.attributemask.flags, sig.attributemask.xfrm), (0xFFFF_FFFF_FFFF_FFFD, 0xFFFF_FFFF_FFFF_FF1B));
    assert_eq!((sig.isvprodid, sig.isvsvn), (0xFFFF, 0));
    assert_eq!(signing::decode_date(sig.date), Some((2016, 12, 14)));
}

#[test]
fn flipping_bytes_breaks_verification_in_einit_order() {
    let good = Sigstruct::from_bytes(SIG).unwrap();
    let flip = |offset: usize| {
        let mut bytes = SIG.to_vec();
        bytes[offset] ^= 1;
        signing::verify(&Sigstruct::from_bytes(&bytes).unwrap())
    };
    use signing::{SignatureError, StructureError, VerifyError};
    assert_eq!(flip(1026), Err(VerifyError::Signature(SignatureError::Mismatch)), "ISVSVN is signed");
    assert_eq!(flip(0), Err(VerifyError::Structure(StructureError::Header)));
    assert_eq!(flip(50), Err(VerifyError::Structure(StructureError::Reserved(50))));
    assert_eq!(flip(512), Err(VerifyError::Structure(StructureError::Exponent(2))));
    assert_eq!(flip(1040), Err(VerifyError::Signature(SignatureError::Q1)));
    assert_eq!(flip(1424), Err(VerifyError::Signature(SignatureError::Q2)));
    assert!(matches!(flip(600), Err(VerifyError::Signature(_))));
    assert!(signing::verify(&good).is_ok());
}

#[test]
fn our_signature_over_the_same_body_carries_the_same_enclavehash() {
    let pem = include_str!("data/test-key.pem");
    let key = signing::SigningKey::from_pem(pem).unwrap();
    let original = Sigstruct::from_bytes(SIG).unwrap();
    let summary = sgxs::measure(SGXS).unwrap();
    let ours = key.sign(&SigstructBody::of(&original), summary.mrenclave).unwrap();
    let verified = signing::verify(&ours).unwrap();
    assert_eq!(ours.enclavehash, original.enclavehash);
    assert_eq!(ours.signed_message()[..128], original.signed_message()[..128], "header fields identical");
    assert_eq!(ours.signed_message()[128..], original.signed_message()[128..], "body fields identical");
    assert_eq!(verified.mrsigner, key.mrsigner());
    assert_ne!(verified.mrsigner, signing::verify(&original).unwrap().mrsigner);
    assert_eq!(key.sign(&SigstructBody::of(&original), summary.mrenclave).unwrap(), ours, "deterministic");
}
