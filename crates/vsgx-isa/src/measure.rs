//! MRENCLAVE and MRSIGNER (SGX.md §3.1, §3.2).
//!
//! MRENCLAVE is SHA-256 over a sequence of 64-byte blocks, one per ECREATE and EADD and five per
//! EEXTEND. [`Measurement`] keeps the raw SHA-256 state (eight words plus a block count) rather than
//! an opaque hasher, because the hardware keeps exactly that inside the SECS between ECREATE and
//! EINIT: the platform model stores it with [`Measurement::state_bytes`] and restores it with
//! [`Measurement::from_state_bytes`].

use sha2::Digest;
use sha2::block_api::compress256;

/// Tag of an ECREATE block (`"ECREATE\0"`).
pub const TAG_ECREATE: u64 = 0x0045_5441_4552_4345;
/// Tag of an EADD block (`"EADD\0\0\0\0"`).
pub const TAG_EADD: u64 = 0x0000_0000_4444_4145;
/// Tag of an EEXTEND block (`"EEXTEND\0"`).
pub const TAG_EEXTEND: u64 = 0x0044_4E45_5458_4545;

/// Bytes measured by one EEXTEND.
pub const EEXTEND_CHUNK: usize = 256;

const SHA256_IV: [u32; 8] =
    [0x6a09_e667, 0xbb67_ae85, 0x3c6e_f372, 0xa54f_f53a, 0x510e_527f, 0x9b05_688c, 0x1f83_d9ab, 0x5be0_cd19];

/// The 64-byte ECREATE measurement block.
pub fn ecreate_block(ssaframesize: u32, size: u64) -> [u8; 64] {
    let mut b = [0u8; 64];
    b[0..8].copy_from_slice(&TAG_ECREATE.to_le_bytes());
    b[8..12].copy_from_slice(&ssaframesize.to_le_bytes());
    b[12..20].copy_from_slice(&size.to_le_bytes());
    b
}

/// The 64-byte EADD measurement block: page offset and the first 48 bytes of the *effective*
/// SECINFO (FLAGS, then zeros). For a TCS the caller passes FLAGS with R/W/X already cleared.
pub fn eadd_block(offset: u64, secinfo_flags: u64) -> [u8; 64] {
    let mut b = [0u8; 64];
    b[0..8].copy_from_slice(&TAG_EADD.to_le_bytes());
    b[8..16].copy_from_slice(&offset.to_le_bytes());
    b[16..24].copy_from_slice(&secinfo_flags.to_le_bytes());
    b
}

/// The 64-byte EEXTEND header block (the 256 chunk bytes follow as four more blocks).
pub fn eextend_block(offset: u64) -> [u8; 64] {
    let mut b = [0u8; 64];
    b[0..8].copy_from_slice(&TAG_EEXTEND.to_le_bytes());
    b[8..16].copy_from_slice(&offset.to_le_bytes());
    b
}

/// A running MRENCLAVE computation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Measurement {
    state: [u32; 8],
    blocks: u64,
}

impl Default for Measurement {
    fn default() -> Self {
        Self::new()
    }
}

impl Measurement {
    /// The SHA-256 initial state, no blocks hashed.
    pub const fn new() -> Self {
        Self { state: SHA256_IV, blocks: 0 }
    }

    /// Hashes whole 64-byte blocks.
    pub fn update_blocks(&mut self, blocks: &[[u8; 64]]) {
        compress256(&mut self.state, blocks);
        self.blocks += blocks.len() as u64;
    }

    /// Hashes a byte string whose length is a multiple of 64; `None` (nothing hashed) otherwise.
    pub fn update_bytes(&mut self, bytes: &[u8]) -> Option<()> {
        let (blocks, rest) = bytes.as_chunks::<64>();
        if !rest.is_empty() {
            return None;
        }
        self.update_blocks(blocks);
        Some(())
    }

    /// Measures ECREATE.
    pub fn ecreate(&mut self, ssaframesize: u32, size: u64) {
        self.update_blocks(&[ecreate_block(ssaframesize, size)]);
    }

    /// Measures EADD of the page at `offset` from BASEADDR with the effective SECINFO.FLAGS.
    pub fn eadd(&mut self, offset: u64, secinfo_flags: u64) {
        self.update_blocks(&[eadd_block(offset, secinfo_flags)]);
    }

    /// Measures EEXTEND of the 256-byte chunk at `offset` from BASEADDR.
    pub fn eextend(&mut self, offset: u64, chunk: &[u8; EEXTEND_CHUNK]) {
        let mut blocks = [[0u8; 64]; 5];
        blocks[0] = eextend_block(offset);
        for (dst, src) in blocks[1..].iter_mut().zip(chunk.as_chunks::<64>().0) {
            *dst = *src;
        }
        self.update_blocks(&blocks);
    }

    /// Number of 64-byte blocks hashed so far.
    pub const fn blocks(&self) -> u64 {
        self.blocks
    }

    /// Finalizes (EINIT): SHA-256 padding for `blocks · 512` bits.
    pub fn finalize(&self) -> [u8; 32] {
        let mut state = self.state;
        let mut pad = [0u8; 64];
        pad[0] = 0x80;
        pad[56..].copy_from_slice(&self.blocks.wrapping_mul(512).to_be_bytes());
        compress256(&mut state, &[pad]);
        let mut out = [0u8; 32];
        for (dst, word) in out.as_chunks_mut::<4>().0.iter_mut().zip(state) {
            *dst = word.to_be_bytes();
        }
        out
    }

    /// The running state as stored in the SECS MRENCLAVE field before EINIT: eight big-endian
    /// words (MODEL CHOICE, SGX.md §1.3). The block count is stored separately.
    pub fn state_bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for i in 0..8 {
            out[4 * i..4 * i + 4].copy_from_slice(&self.state[i].to_be_bytes());
        }
        out
    }

    /// Rebuilds a running measurement from [`Self::state_bytes`] and the block count.
    pub fn from_state_bytes(bytes: &[u8; 32], blocks: u64) -> Self {
        let state = core::array::from_fn(|i| {
            u32::from_be_bytes([bytes[4 * i], bytes[4 * i + 1], bytes[4 * i + 2], bytes[4 * i + 3]])
        });
        Self { state, blocks }
    }
}

/// MRSIGNER: SHA-256 of the 384 little-endian modulus bytes as stored in the SIGSTRUCT.
pub fn mrsigner(modulus: &[u8; 384]) -> [u8; 32] {
    sha2::Sha256::digest(modulus).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_plain_sha256_of_the_blocks() {
        let mut m = Measurement::new();
        let mut bytes = alloc::vec::Vec::new();
        m.ecreate(1, 0x40000);
        bytes.extend_from_slice(&ecreate_block(1, 0x40000));
        m.eadd(0x1000, 0x205);
        bytes.extend_from_slice(&eadd_block(0x1000, 0x205));
        let chunk = [0xA5u8; 256];
        m.eextend(0x1100, &chunk);
        bytes.extend_from_slice(&eextend_block(0x1100));
        bytes.extend_from_slice(&chunk);
        assert_eq!(m.blocks(), 7);
        let expected: [u8; 32] = sha2::Sha256::digest(&bytes).into();
        assert_eq!(m.finalize(), expected);

        let restored = Measurement::from_state_bytes(&m.state_bytes(), m.blocks());
        assert_eq!(restored, m);
        assert_eq!(Measurement::new().finalize(), <[u8; 32]>::from(sha2::Sha256::digest(b"")));
    }

    #[test]
    fn tags_spell_their_names() {
        assert_eq!(&TAG_ECREATE.to_le_bytes(), b"ECREATE\0");
        assert_eq!(&TAG_EADD.to_le_bytes(), b"EADD\0\0\0\0");
        assert_eq!(&TAG_EEXTEND.to_le_bytes(), b"EEXTEND\0");
        assert!(Measurement::new().update_bytes(&[0; 65]).is_none());
    }
}
