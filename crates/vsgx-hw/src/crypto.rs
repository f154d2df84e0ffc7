//! Symmetric primitives of the platform: AES-128-CMAC (key derivation, REPORT and EINITTOKEN MACs)
//! and the AES-128-GCM paging crypto of EWB/ELD* (SGX.md §1.8).
//!
//! Everything here works on fixed-size arrays, so no input can make a primitive fail: the only
//! failure a caller ever sees is a [`MacMismatch`] when opening a page.

use aes::Aes128;
use cmac::{Cmac, KeyInit, Mac};
use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};
use vsgx_isa::PAGE_SIZE;

/// AES-128-CMAC (RFC 4493) of `data` under `key`.
pub fn aes_cmac(key: &[u8; 16], data: &[u8]) -> [u8; 16] {
    let mut mac = <Cmac<Aes128> as KeyInit>::new(key.into());
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The paging IV for version `version`: `00 00 00 00 ‖ version as u64 LE`, i.e. `version << 32` as a
/// 96-bit little-endian integer (**MODEL CHOICE**, SGX.md §1.8).
///
/// The platform never reuses a version under one key (CR_NEXT_VER is monotonic and never 0), which is
/// what keeps GCM safe here.
pub const fn paging_iv(version: u64) -> [u8; 12] {
    let v = version.to_le_bytes();
    [0, 0, 0, 0, v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]]
}

/// Byte offsets of the 128-byte paging MAC header (**MODEL CHOICE** layout, SGX.md §1.8).
///
/// The header is never stored anywhere: EWB and ELD* each rebuild it from the PCMD and EPCM state, and
/// any difference between the two makes the GCM tag check fail.
#[derive(Debug, Clone, Copy)]
pub struct MacHeader;

impl MacHeader {
    /// Size of the header in bytes.
    pub const SIZE: usize = 128;
    /// SECINFO (64 bytes): FLAGS as u64, then zeros.
    pub const SECINFO: usize = 0;
    /// EID (u64): parent SECS EID for REG/TCS/TRIM, 0 for SECS and VA pages.
    pub const EID: usize = 64;
    /// RSVD (40 bytes): 0 at EWB, PCMD bytes 72..112 at ELD*.
    pub const RSVD: usize = 72;
    /// LINADDR (u64): EPCM.ENCLAVEADDRESS, 0 for SECS and VA pages.
    pub const LINADDR: usize = 112;
    /// Trailing zero u64.
    pub const ZERO: usize = 120;
}

/// Builds the paging MAC header from its fields (layout in [`MacHeader`]).
///
/// Only the SECINFO FLAGS word goes in: EWB writes a SECINFO whose other 56 bytes are zero, so a header
/// rebuilt at ELD* from a PCMD with non-zero SECINFO padding would differ anyway (ELD* rejects such a
/// PCMD before it gets here).
pub fn mac_header(secinfo_flags: u64, eid: u64, reserved: &[u8; 40], linaddr: u64) -> [u8; MacHeader::SIZE] {
    let mut h = [0u8; MacHeader::SIZE];
    h[MacHeader::SECINFO..MacHeader::SECINFO + 8].copy_from_slice(&secinfo_flags.to_le_bytes());
    h[MacHeader::EID..MacHeader::EID + 8].copy_from_slice(&eid.to_le_bytes());
    h[MacHeader::RSVD..MacHeader::RSVD + 40].copy_from_slice(reserved);
    h[MacHeader::LINADDR..MacHeader::LINADDR + 8].copy_from_slice(&linaddr.to_le_bytes());
    h
}

/// ELD* found that the page, its version or its MAC header is not what EWB sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("paging MAC mismatch: page, version or metadata differs from what EWB sealed")]
pub struct MacMismatch;

/// The paging key CR_BASE_PK: AES-128-GCM with IV = [`paging_iv`]`(version)` and AAD = the MAC header.
///
/// `Debug` never shows the key.
#[derive(Clone)]
pub struct PagingKey {
    key: LessSafeKey,
}

impl core::fmt::Debug for PagingKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("PagingKey(AES-128-GCM, <redacted>)")
    }
}

impl PagingKey {
    /// Wraps 16 key bytes (a fresh CR_BASE_PK per power cycle or EPC loss).
    pub fn new(key: &[u8; 16]) -> Self {
        // AES-128-GCM accepts every 16-byte key; ring only rejects a wrong length, which the type rules out.
        let unbound = UnboundKey::new(&AES_128_GCM, key).expect("a 16-byte key is a valid AES-128-GCM key");
        Self { key: LessSafeKey::new(unbound) }
    }

    /// Encrypts `page` in place (EWB) and returns the 16-byte tag for PCMD.MAC.
    ///
    /// The caller must never seal two pages with one `version` under the same key.
    pub fn seal(&self, version: u64, header: &[u8; MacHeader::SIZE], page: &mut [u8; PAGE_SIZE]) -> [u8; 16] {
        let nonce = Nonce::assume_unique_for_key(paging_iv(version));
        // ring's GCM only fails for inputs beyond 2^36 bytes; a page is 4 KiB.
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(header), page)
            .expect("AES-GCM sealing of one page cannot fail");
        let mut out = [0u8; 16];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Decrypts `page` in place (ELD*) if `tag` authenticates it with `version` and `header`.
    ///
    /// On [`MacMismatch`] the content of `page` is unspecified, so callers decrypt a scratch copy and
    /// commit it to the EPC only on success, the way ELD* leaves the destination untouched on failure.
    pub fn open(
        &self,
        version: u64,
        header: &[u8; MacHeader::SIZE],
        page: &mut [u8; PAGE_SIZE],
        tag: &[u8; 16],
    ) -> Result<(), MacMismatch> {
        let nonce = Nonce::assume_unique_for_key(paging_iv(version));
        self.key
            .open_in_place_separate_tag(nonce, Aad::from(header), Tag::from(*tag), page, 0..)
            .map(|_| ())
            .map_err(|_| MacMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).expect("test vector is hex")
    }

    fn h16(s: &str) -> [u8; 16] {
        h(s).try_into().expect("test vector is 16 bytes")
    }

    #[test]
    fn cmac_rfc4493_vectors() {
        let key = h16("2b7e151628aed2a6abf7158809cf4f3c");
        let msg = h(concat!(
            "6bc1bee22e409f96e93d7e117393172a",
            "ae2d8a571e03ac9c9eb76fac45af8e51",
            "30c81c46a35ce411e5fbc1191a0a52ef",
            "f69f2445df4f9b17ad2b417be66c3710",
        ));
        assert_eq!(aes_cmac(&key, &msg[..0]), h16("bb1d6929e95937287fa37d129b756746"));
        assert_eq!(aes_cmac(&key, &msg[..16]), h16("070a16b46b4d4144f79bdd9dd04a287c"));
        assert_eq!(aes_cmac(&key, &msg[..40]), h16("dfa66747de9ae63030ca32611497c827"));
        assert_eq!(aes_cmac(&key, &msg[..64]), h16("51f0bebf7e3b9d92fc49741779363cfe"));
    }

    #[test]
    fn iv_layout() {
        assert_eq!(paging_iv(0x0102_0304_0506_0708), [0, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(paging_iv(1), [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
        // `VER << 32` as a 96-bit little-endian integer.
        let mut wide = [0u8; 16];
        wide.copy_from_slice(&((0xdead_beefu128 << 32).to_le_bytes()));
        assert_eq!(paging_iv(0xdead_beef), wide[..12]);
    }

    #[test]
    fn mac_header_layout() {
        let rsvd: [u8; 40] = core::array::from_fn(|i| i as u8 + 1);
        let hd = mac_header(0x0000_0000_0000_0203, 0x1122_3344_5566_7788, &rsvd, 0x7f00_0000_1000);
        assert_eq!(hd[0..8], 0x203u64.to_le_bytes());
        assert!(hd[8..64].iter().all(|&b| b == 0));
        assert_eq!(hd[64..72], 0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(hd[72..112], rsvd);
        assert_eq!(hd[112..120], 0x7f00_0000_1000u64.to_le_bytes());
        assert!(hd[120..128].iter().all(|&b| b == 0));
    }

    fn fixture() -> (PagingKey, [u8; 128], [u8; 4096]) {
        let key = PagingKey::new(&[0x42; 16]);
        let header = mac_header(0x203, 7, &[0; 40], 0x1000_0000);
        let page: [u8; 4096] = core::array::from_fn(|i| (i * 7 + 3) as u8);
        (key, header, page)
    }

    #[test]
    fn seal_open_round_trip() {
        let (key, header, plain) = fixture();
        let mut page = plain;
        let tag = key.seal(5, &header, &mut page);
        assert_ne!(page, plain, "sealing encrypts");
        key.open(5, &header, &mut page, &tag).expect("authentic page opens");
        assert_eq!(page, plain);
    }

    #[test]
    fn any_tampering_is_a_mac_mismatch() {
        let (key, header, plain) = fixture();
        let mut sealed = plain;
        let tag = key.seal(9, &header, &mut sealed);
        let try_open = |version: u64, header: &[u8; 128], page: &[u8; 4096], tag: &[u8; 16]| {
            let mut scratch = *page;
            key.open(version, header, &mut scratch, tag)
        };
        assert_eq!(try_open(9, &header, &sealed, &tag), Ok(()));
        assert_eq!(try_open(8, &header, &sealed, &tag), Err(MacMismatch));
        assert_eq!(try_open(10, &header, &sealed, &tag), Err(MacMismatch));
        for i in [0, 8, 63, 64, 72, 111, 112, 120, 127] {
            let mut hd = header;
            hd[i] ^= 1;
            assert_eq!(try_open(9, &hd, &sealed, &tag), Err(MacMismatch), "header byte {i}");
        }
        for i in 0..16 {
            let mut t = tag;
            t[i] ^= 0x80;
            assert_eq!(try_open(9, &header, &sealed, &t), Err(MacMismatch), "tag byte {i}");
        }
        for i in [0, 1, 2047, 4095] {
            let mut p = sealed;
            p[i] ^= 1;
            assert_eq!(try_open(9, &header, &p, &tag), Err(MacMismatch), "ciphertext byte {i}");
        }
        let other = PagingKey::new(&[0x43; 16]);
        let mut scratch = sealed;
        assert_eq!(other.open(9, &header, &mut scratch, &tag), Err(MacMismatch), "other key");
    }

    #[test]
    fn debug_hides_the_key() {
        let key = PagingKey::new(&[0xAB; 16]);
        let s = format!("{key:?}");
        assert!(!s.to_lowercase().contains("ab, ") && !s.contains("171") && !s.contains("abab"), "{s}");
    }
}
