//! SGX model-specific registers and launch-control hashes (SGX.md §4.4, §9.2).

use bitflags::bitflags;

/// IA32_FEATURE_CONTROL.
pub const IA32_FEATURE_CONTROL: u32 = 0x3A;
/// IA32_SGXLEPUBKEYHASH0 (digest bytes 0..8).
pub const IA32_SGXLEPUBKEYHASH0: u32 = 0x8C;
/// IA32_SGXLEPUBKEYHASH1 (digest bytes 8..16).
pub const IA32_SGXLEPUBKEYHASH1: u32 = 0x8D;
/// IA32_SGXLEPUBKEYHASH2 (digest bytes 16..24).
pub const IA32_SGXLEPUBKEYHASH2: u32 = 0x8E;
/// IA32_SGXLEPUBKEYHASH3 (digest bytes 24..32).
pub const IA32_SGXLEPUBKEYHASH3: u32 = 0x8F;
/// The four launch-enclave hash MSRs in digest order.
pub const IA32_SGXLEPUBKEYHASH: [u32; 4] =
    [IA32_SGXLEPUBKEYHASH0, IA32_SGXLEPUBKEYHASH1, IA32_SGXLEPUBKEYHASH2, IA32_SGXLEPUBKEYHASH3];

bitflags! {
    /// IA32_FEATURE_CONTROL bits that matter to SGX.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct FeatureControl: u64 {
        /// Write-once lock; writes #GP once set.
        const LOCK = 1 << 0;
        /// The launch-enclave hash MSRs are writable (flexible launch control).
        const SGX_LC = 1 << 17;
        /// SGX enabled by firmware.
        const SGX_ENABLE = 1 << 18;
    }
}

impl FeatureControl {
    /// The model's default firmware state: locked, SGX enabled, hash MSRs writable (0x60001).
    pub const FIRMWARE_DEFAULT: Self = Self::LOCK.union(Self::SGX_LC).union(Self::SGX_ENABLE);

    /// SGX is usable iff LOCK and SGX_ENABLE are both set.
    pub const fn sgx_usable(self) -> bool {
        self.contains(Self::LOCK.union(Self::SGX_ENABLE))
    }
}

/// SHA-256 of Intel's launch-enclave signing key: the power-on value of the hash MSRs.
pub const INTEL_LE_PUBKEY_HASH: [u8; 32] = [
    0xac, 0xb7, 0x70, 0x12, 0x05, 0x3e, 0x05, 0xa6, 0x3d, 0x41, 0x3b, 0x8b, 0xba, 0xe8, 0xfb, 0x6c, 0x5d, 0x73, 0xb3,
    0xf2, 0x99, 0x6d, 0x91, 0xc4, 0x3b, 0xbb, 0xf9, 0x09, 0x59, 0xc0, 0xf8, 0xd4,
];

/// Splits a 32-byte hash into the four MSR values (MSR 0x8C+i = LE u64 of bytes 8i..8i+8).
pub fn lehash_to_msrs(hash: &[u8; 32]) -> [u64; 4] {
    core::array::from_fn(|i| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&hash[8 * i..8 * i + 8]);
        u64::from_le_bytes(b)
    })
}

/// Joins the four MSR values back into the 32-byte hash.
pub fn msrs_to_lehash(msrs: &[u64; 4]) -> [u8; 32] {
    let mut hash = [0u8; 32];
    for (i, v) in msrs.iter().enumerate() {
        hash[8 * i..8 * i + 8].copy_from_slice(&v.to_le_bytes());
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intel_hash_msr_values() {
        assert_eq!(
            lehash_to_msrs(&INTEL_LE_PUBKEY_HASH),
            [0xa6053e051270b7ac, 0x6cfbe8ba8b3b413d, 0xc4916d99f2b3735d, 0xd4f8c05909f9bb3b]
        );
        assert_eq!(msrs_to_lehash(&lehash_to_msrs(&INTEL_LE_PUBKEY_HASH)), INTEL_LE_PUBKEY_HASH);
        assert_eq!(FeatureControl::FIRMWARE_DEFAULT.bits(), 0x60001);
        assert!(FeatureControl::FIRMWARE_DEFAULT.sgx_usable());
        assert!(!FeatureControl::SGX_ENABLE.sgx_usable());
    }
}
