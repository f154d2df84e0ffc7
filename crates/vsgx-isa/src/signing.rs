//! SIGSTRUCT: building, signing and verifying (SGX.md §1.9, §4.1, §4.3) and signing keys.
//!
//! Signing uses RustCrypto `rsa` (RSASSA-PKCS1-v1_5 with SHA-256, deterministic). Verification is
//! done the way EINIT does it, with the Q1/Q2 helper values instead of a modular exponentiation,
//! and yields the PKCS#1 padding EINIT stores in the SECS.

use alloc::string::String;

use crypto_bigint::ConcatenatingMul;
use rsa::BoxedUint;
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::pkcs8::DecodePrivateKey;
use rsa::rand_core::TryCryptoRng;
use rsa::signature::{SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use sha2::{Digest, Sha256};

use crate::measure::mrsigner;
use crate::types::{ArchStruct, Attributes, AttributesFlags, Sigstruct};

/// Modulus size EINIT accepts, in bits.
pub const MODULUS_BITS: u32 = 3072;
/// Modulus size in bytes.
pub const MODULUS_BYTES: usize = 384;
/// Length of the PKCS#1 v1.5 padding EINIT keeps in the SECS (`EM[0..352]`).
pub const PADDING_LEN: usize = 352;

/// DER prefix of a SHA-256 DigestInfo.
const SHA256_DIGEST_INFO: [u8; 19] =
    [0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20];

/// HARDCODED_PKCS1_5_PADDING: `00 01 FF×330 00 ‖ DigestInfo(SHA-256) prefix`, i.e. `EM[0..352]`
/// of every valid SIGSTRUCT signature.
pub const HARDCODED_PKCS1_5_PADDING: [u8; PADDING_LEN] = {
    let mut p = [0xFFu8; PADDING_LEN];
    p[0] = 0;
    p[1] = 1;
    p[332] = 0;
    let mut i = 0;
    while i < SHA256_DIGEST_INFO.len() {
        p[333 + i] = SHA256_DIGEST_INFO[i];
        i += 1;
    }
    p
};

/// The fields of a SIGSTRUCT a signer chooses (everything but the key material and ENCLAVEHASH).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SigstructBody {
    /// 0 or [`Sigstruct::VENDOR_INTEL`].
    pub vendor: u32,
    /// Date, yyyymmdd as hex digits (see [`encode_date`]).
    pub date: u32,
    /// Free for software.
    pub swdefined: u32,
    /// Expected MISCSELECT.
    pub miscselect: u32,
    /// Enforced MISCSELECT bits.
    pub miscmask: u32,
    /// Expected ATTRIBUTES.
    pub attributes: Attributes,
    /// Enforced ATTRIBUTES bits.
    pub attributemask: Attributes,
    /// ISVFAMILYID (KSS).
    pub isvfamilyid: [u8; 16],
    /// ISVEXTPRODID (KSS).
    pub isvextprodid: [u8; 16],
    /// Product ID.
    pub isvprodid: u16,
    /// Security version.
    pub isvsvn: u16,
}

impl Default for SigstructBody {
    /// A 64-bit production enclave: ATTRIBUTES = MODE64BIT, XFRM = x87|SSE; every FLAGS bit enforced
    /// (so it cannot be launched in debug mode); XFRM enforced except AVX and AVX-512
    /// (0xFFFF_FFFF_FFFF_FF1B, the Intel/Fortanix convention, so a loader may enable them);
    /// MISCSELECT 0 enforced entirely.
    fn default() -> Self {
        Self {
            vendor: 0,
            date: 0,
            swdefined: 0,
            miscselect: 0,
            miscmask: u32::MAX,
            attributes: Attributes::new(AttributesFlags::MODE64BIT, 0x3),
            attributemask: Attributes { flags: u64::MAX, xfrm: 0xFFFF_FFFF_FFFF_FF1B },
            isvfamilyid: [0; 16],
            isvextprodid: [0; 16],
            isvprodid: 0,
            isvsvn: 0,
        }
    }
}

impl SigstructBody {
    /// The body fields of an existing SIGSTRUCT.
    pub fn of(s: &Sigstruct) -> Self {
        Self {
            vendor: s.vendor,
            date: s.date,
            swdefined: s.swdefined,
            miscselect: s.miscselect,
            miscmask: s.miscmask,
            attributes: s.attributes,
            attributemask: s.attributemask,
            isvfamilyid: s.isvfamilyid,
            isvextprodid: s.isvextprodid,
            isvprodid: s.isvprodid,
            isvsvn: s.isvsvn,
        }
    }

    /// An unsigned SIGSTRUCT with these fields and `enclavehash` (key fields zero).
    pub fn to_unsigned(&self, enclavehash: [u8; 32]) -> Sigstruct {
        let mut s = Sigstruct::zeroed();
        s.header = Sigstruct::HEADER;
        s.header2 = Sigstruct::HEADER2;
        s.vendor = self.vendor;
        s.date = self.date;
        s.swdefined = self.swdefined;
        s.miscselect = self.miscselect;
        s.miscmask = self.miscmask;
        s.attributes = self.attributes;
        s.attributemask = self.attributemask;
        s.isvfamilyid = self.isvfamilyid;
        s.isvextprodid = self.isvextprodid;
        s.isvprodid = self.isvprodid;
        s.isvsvn = self.isvsvn;
        s.enclavehash = enclavehash;
        s.exponent = Sigstruct::EXPONENT;
        s
    }
}

/// A date that cannot be a SIGSTRUCT DATE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid date {year:04}-{month:02}-{day:02} (year 0000–9999, month 01–12, day 01–31)")]
pub struct DateError {
    /// Year.
    pub year: u32,
    /// Month.
    pub month: u32,
    /// Day.
    pub day: u32,
}

/// Encodes a calendar date as SIGSTRUCT DATE: the decimal digits yyyymmdd read as hex.
pub fn encode_date(year: u32, month: u32, day: u32) -> Result<u32, DateError> {
    if year > 9999 || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return Err(DateError { year, month, day });
    }
    let digits = year * 10000 + month * 100 + day;
    let mut value = 0u32;
    for shift in (0..8).rev() {
        value = (value << 4) | ((digits / 10u32.pow(shift)) % 10);
    }
    Ok(value)
}

/// Decodes SIGSTRUCT DATE into (year, month, day) when every nibble is a decimal digit.
pub fn decode_date(date: u32) -> Option<(u32, u32, u32)> {
    let mut digits = 0u32;
    for shift in (0..8).rev() {
        let nibble = (date >> (shift * 4)) & 0xF;
        if nibble > 9 {
            return None;
        }
        digits = digits * 10 + nibble;
    }
    Some((digits / 10000, digits / 100 % 100, digits % 100))
}

/// A SIGSTRUCT EINIT rejects before looking at the signature (SGX_INVALID_SIG_STRUCT).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StructureError {
    /// HEADER is not the constant.
    #[error("HEADER (bytes 0..16) is not the constant 06000000E10000000000010000000000")]
    Header,
    /// VENDOR is neither 0 nor 0x8086.
    #[error("VENDOR (byte 16) is {0:#x}, must be 0 or 0x8086")]
    Vendor(u32),
    /// HEADER2 is not the constant.
    #[error("HEADER2 (bytes 24..40) is not the constant 01010000600000006000000001000000")]
    Header2,
    /// EXPONENT is not 3.
    #[error("EXPONENT (byte 512) is {0}, must be 3")]
    Exponent(u32),
    /// A reserved byte is not zero.
    #[error("reserved byte {0} is not zero")]
    Reserved(usize),
}

/// Checks the SIGSTRUCT's constant and reserved fields, in EINIT's order.
pub fn check_structure(s: &Sigstruct) -> Result<(), StructureError> {
    if s.header != Sigstruct::HEADER {
        return Err(StructureError::Header);
    }
    if s.vendor != 0 && s.vendor != Sigstruct::VENDOR_INTEL {
        return Err(StructureError::Vendor(s.vendor));
    }
    if s.header2 != Sigstruct::HEADER2 {
        return Err(StructureError::Header2);
    }
    if s.exponent != Sigstruct::EXPONENT {
        return Err(StructureError::Exponent(s.exponent));
    }
    let bytes = s.bytes();
    for range in Sigstruct::RESERVED_RANGES {
        if let Some(i) = bytes[range.clone()].iter().position(|&b| b != 0) {
            return Err(StructureError::Reserved(range.start + i));
        }
    }
    Ok(())
}

/// Why the RSA part of a SIGSTRUCT does not verify (SGX_INVALID_SIGNATURE).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// SIGNATURE ≥ MODULUS.
    #[error("SIGNATURE is not smaller than MODULUS")]
    SignatureTooLarge,
    /// Q1 is not ⌊s² / n⌋.
    #[error("Q1 is inconsistent with SIGNATURE and MODULUS")]
    Q1,
    /// Q2 is not ⌊s·(s² − q1·n) / n⌋.
    #[error("Q2 is inconsistent with SIGNATURE and MODULUS")]
    Q2,
    /// s³ mod n is not the PKCS#1 v1.5 encoding of SHA-256 of the signed message.
    #[error("the signature does not match the signed fields (PKCS#1 v1.5 SHA-256 check failed)")]
    Mismatch,
}

/// A SIGSTRUCT whose signature verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedSignature {
    /// SHA-256 of the modulus.
    pub mrsigner: [u8; 32],
    /// `EM[0..352]`, which EINIT stores as SECS PADDING.
    pub padding: [u8; PADDING_LEN],
}

fn uint(le: &[u8; MODULUS_BYTES]) -> BoxedUint {
    BoxedUint::from_le_slice_truncated(le, MODULUS_BITS)
}

/// `a·b − q·n` if it lies in `[0, n)`, as a 3072-bit number.
fn reduce_check(a: &BoxedUint, b: &BoxedUint, q: &BoxedUint, n: &BoxedUint) -> Option<BoxedUint> {
    let product = a.concatenating_mul(b);
    let qn = q.concatenating_mul(n);
    let (r, borrow) = product.borrowing_sub(&qn, crypto_bigint::Limb::ZERO);
    if borrow.0 != 0 || r.cmp_vartime(n) != core::cmp::Ordering::Less {
        return None;
    }
    Some(BoxedUint::from_le_slice_truncated(&r.to_le_bytes()[..MODULUS_BYTES], MODULUS_BITS))
}

/// Verifies SIGNATURE against MODULUS with Q1/Q2 exactly as EINIT does (SGX.md §4.3).
/// Does not check the structure: see [`check_structure`] and [`verify`].
pub fn verify_signature(s: &Sigstruct) -> Result<VerifiedSignature, SignatureError> {
    let n = uint(&s.modulus);
    let sig = uint(&s.signature);
    if sig.cmp_vartime(&n) != core::cmp::Ordering::Less {
        return Err(SignatureError::SignatureTooLarge);
    }
    let r1 = reduce_check(&sig, &sig, &uint(&s.q1), &n).ok_or(SignatureError::Q1)?;
    let r2 = reduce_check(&sig, &r1, &uint(&s.q2), &n).ok_or(SignatureError::Q2)?;
    let em = r2.to_be_bytes();
    let em = &em[em.len() - MODULUS_BYTES..];
    let digest: [u8; 32] = Sha256::digest(s.signed_message()).into();
    if em[..PADDING_LEN] != HARDCODED_PKCS1_5_PADDING || em[PADDING_LEN..] != digest {
        return Err(SignatureError::Mismatch);
    }
    let mut padding = [0u8; PADDING_LEN];
    padding.copy_from_slice(&em[..PADDING_LEN]);
    Ok(VerifiedSignature { mrsigner: mrsigner(&s.modulus), padding })
}

/// Either half of SIGSTRUCT verification.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// EINIT would answer SGX_INVALID_SIG_STRUCT.
    #[error("malformed SIGSTRUCT: {0}")]
    Structure(#[from] StructureError),
    /// EINIT would answer SGX_INVALID_SIGNATURE.
    #[error("invalid signature: {0}")]
    Signature(#[from] SignatureError),
}

/// Full verification in EINIT's order: structure, then signature.
pub fn verify(s: &Sigstruct) -> Result<VerifiedSignature, VerifyError> {
    check_structure(s)?;
    Ok(verify_signature(s)?)
}

/// A key that cannot sign SIGSTRUCTs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not a PEM RSA private key (PKCS#1 or PKCS#8).
    #[error("not an RSA private key in PEM (PKCS#1 'RSA PRIVATE KEY' or PKCS#8 'PRIVATE KEY')")]
    NotRsaPem,
    /// The modulus is not 3072 bits.
    #[error("the RSA modulus is {0} bits; SGX needs 3072")]
    ModulusSize(u32),
    /// The public exponent is not 3.
    #[error("the RSA public exponent is {0}; SGX needs 3")]
    Exponent(String),
    /// Key generation or signing failed inside the RSA implementation.
    #[error("RSA operation failed: {0}")]
    Rsa(String),
}

/// An RSA-3072 private key with public exponent 3.
#[derive(Clone)]
pub struct SigningKey {
    key: rsa::PrivateKey,
}

impl core::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SigningKey").field("mrsigner", &crate::types::HexBytes(&self.mrsigner())).finish()
    }
}

impl SigningKey {
    fn checked(key: rsa::PrivateKey) -> Result<Self, KeyError> {
        let bits = key.n().bit_width_vartime();
        if bits != MODULUS_BITS {
            return Err(KeyError::ModulusSize(bits));
        }
        if key.e().cmp_vartime(BoxedUint::from(3u64)) != core::cmp::Ordering::Equal {
            let e = key.e().to_be_bytes_trimmed_vartime();
            let mut hex = String::from("0x");
            for b in e.iter() {
                hex.push_str(&alloc::format!("{b:02x}"));
            }
            return Err(KeyError::Exponent(hex));
        }
        Ok(Self { key })
    }

    /// Parses a PEM private key (PKCS#1 or PKCS#8) and checks it is RSA-3072 with e = 3.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let key = rsa::PrivateKey::from_pkcs1_pem(pem)
            .or_else(|_| rsa::PrivateKey::from_pkcs8_pem(pem))
            .map_err(|_| KeyError::NotRsaPem)?;
        Self::checked(key)
    }

    /// Generates a new key from a cryptographically secure RNG.
    pub fn generate<R: TryCryptoRng + ?Sized>(rng: &mut R) -> Result<Self, KeyError> {
        let key = rsa::PrivateKey::new_with_exp(rng, MODULUS_BITS as usize, BoxedUint::from(3u64))
            .map_err(|e| KeyError::Rsa(alloc::format!("{e}")))?;
        Self::checked(key)
    }

    /// The key as PKCS#1 PEM (`-----BEGIN RSA PRIVATE KEY-----`, what `openssl genrsa -3 3072` writes).
    pub fn to_pem(&self) -> Result<String, KeyError> {
        self.key
            .to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
            .map(|pem| String::from(pem.as_str()))
            .map_err(|e| KeyError::Rsa(alloc::format!("{e}")))
    }

    /// The modulus as SIGSTRUCT stores it (384 bytes, little-endian).
    pub fn modulus_le(&self) -> [u8; MODULUS_BYTES] {
        let be = self.key.n().to_be_bytes();
        let mut le = [0u8; MODULUS_BYTES];
        for (dst, src) in le.iter_mut().zip(be.iter().rev()) {
            *dst = *src;
        }
        le
    }

    /// MRSIGNER of enclaves signed with this key.
    pub fn mrsigner(&self) -> [u8; 32] {
        mrsigner(&self.modulus_le())
    }

    /// Signs a SIGSTRUCT for an enclave with MRENCLAVE `enclavehash`. Deterministic: the same key,
    /// body and hash always give the same bytes.
    pub fn sign(&self, body: &SigstructBody, enclavehash: [u8; 32]) -> Result<Sigstruct, KeyError> {
        let mut s = body.to_unsigned(enclavehash);
        s.modulus = self.modulus_le();
        let signer = rsa::pkcs1v15::SigningKey::<Sha256>::new(self.key.clone());
        let signature = signer.try_sign(&s.signed_message()).map_err(|e| KeyError::Rsa(alloc::format!("{e}")))?;
        let be = signature.to_bytes();
        if be.len() != MODULUS_BYTES {
            return Err(KeyError::Rsa(alloc::format!("signature is {} bytes, expected 384", be.len())));
        }
        for (dst, src) in s.signature.iter_mut().zip(be.iter().rev()) {
            *dst = *src;
        }
        let (q1, q2) = q1_q2(&s.signature, &s.modulus)?;
        s.q1 = q1;
        s.q2 = q2;
        Ok(s)
    }
}

/// Q1 = ⌊s² / n⌋ and Q2 = ⌊s·(s² − Q1·n) / n⌋, little-endian.
fn q1_q2(
    signature: &[u8; MODULUS_BYTES],
    modulus: &[u8; MODULUS_BYTES],
) -> Result<([u8; MODULUS_BYTES], [u8; MODULUS_BYTES]), KeyError> {
    let s = uint(signature);
    let n = crypto_bigint::NonZero::new(uint(modulus))
        .into_option()
        .ok_or_else(|| KeyError::Rsa(String::from("zero modulus")))?;
    let (q1, r1) = s.concatenating_mul(&s).div_rem_vartime(&n);
    let (q2, _) = s.concatenating_mul(&r1).div_rem_vartime(&n);
    let le = |x: &BoxedUint| -> [u8; MODULUS_BYTES] {
        let bytes = x.to_le_bytes();
        let mut out = [0u8; MODULUS_BYTES];
        out.copy_from_slice(&bytes[..MODULUS_BYTES]);
        out
    };
    Ok((le(&q1), le(&q2)))
}
