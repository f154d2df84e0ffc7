//! CPUID codecs for SGX enumeration: leaf 7 bits, leaf 0x12 sub-leaves 0, 1 and ≥ 2 (SGX.md §9.1).
//!
//! Each `encode` produces exactly the register values hardware reports and each `decode` accepts
//! exactly those, rejecting reserved bits so a malformed (e.g. guest-visible, hypervisor-built)
//! leaf is caught where it is made.

use bitflags::bitflags;

use crate::Attributes;

/// The SGX enumeration leaf.
pub const LEAF_SGX: u32 = 0x12;
/// The structured extended feature flags leaf.
pub const LEAF_FEATURES: u32 = 0x07;
/// The first EPC-section sub-leaf of leaf 0x12.
pub const FIRST_EPC_SUBLEAF: u32 = 2;

/// Register values of one CPUID leaf/sub-leaf.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CpuidResult {
    /// EAX.
    pub eax: u32,
    /// EBX.
    pub ebx: u32,
    /// ECX.
    pub ecx: u32,
    /// EDX.
    pub edx: u32,
}

impl CpuidResult {
    /// All four registers, in EAX, EBX, ECX, EDX order.
    pub const fn to_array(self) -> [u32; 4] {
        [self.eax, self.ebx, self.ecx, self.edx]
    }
}

/// A CPUID encoding that violates the architectural format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CpuidError {
    /// A reserved bit is set.
    #[error("CPUID.(12H,{subleaf}): reserved bits {mask:#x} set in {reg}")]
    Reserved {
        /// Sub-leaf.
        subleaf: u32,
        /// Register name.
        reg: &'static str,
        /// The offending bits.
        mask: u32,
    },
    /// The sub-leaf type is neither 0 (invalid) nor 1 (EPC section).
    #[error("CPUID.(12H,{subleaf}): unknown sub-leaf type {kind}")]
    UnknownType {
        /// Sub-leaf.
        subleaf: u32,
        /// EAX[3:0].
        kind: u32,
    },
    /// The EPC-section property is neither 1 nor 2.
    #[error("CPUID.(12H,{subleaf}): unknown EPC section property {property}")]
    UnknownProperty {
        /// Sub-leaf.
        subleaf: u32,
        /// ECX[3:0].
        property: u32,
    },
    /// A section cannot be encoded (not 4 KiB aligned, empty, or beyond 52 bits).
    #[error("EPC section base {base:#x} size {size:#x} cannot be encoded: {reason}")]
    Unencodable {
        /// Section base.
        base: u64,
        /// Section size.
        size: u64,
        /// Why.
        reason: &'static str,
    },
}

/// SGX bits of CPUID.(07H,0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Leaf7Sgx {
    /// EBX[2]: SGX supported.
    pub sgx: bool,
    /// ECX[30]: flexible launch control (the hash MSRs exist).
    pub sgx_lc: bool,
}

impl Leaf7Sgx {
    /// EBX bit of SGX.
    pub const EBX_SGX: u32 = 1 << 2;
    /// ECX bit of SGX_LC.
    pub const ECX_SGX_LC: u32 = 1 << 30;

    /// Reads the SGX bits out of a full leaf-7 result (other bits ignored).
    pub const fn decode(r: CpuidResult) -> Self {
        Self { sgx: r.ebx & Self::EBX_SGX != 0, sgx_lc: r.ecx & Self::ECX_SGX_LC != 0 }
    }

    /// Sets or clears the SGX bits in a leaf-7 result, leaving other features alone.
    pub const fn apply(self, mut r: CpuidResult) -> CpuidResult {
        r.ebx = (r.ebx & !Self::EBX_SGX) | if self.sgx { Self::EBX_SGX } else { 0 };
        r.ecx = (r.ecx & !Self::ECX_SGX_LC) | if self.sgx_lc { Self::ECX_SGX_LC } else { 0 };
        r
    }
}

bitflags! {
    /// CPUID.(12H,0):EAX: which SGX leaf groups exist.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct SgxLeafSupport: u32 {
        /// SGX1 leaves.
        const SGX1 = 1 << 0;
        /// SGX2 leaves (EAUG, EMODPR, EMODT, EACCEPT, EMODPE, EACCEPTCOPY).
        const SGX2 = 1 << 1;
        /// ENCLV leaves (EINCVIRTCHILD, EDECVIRTCHILD, ESETCONTEXT).
        const ENCLV = 1 << 5;
        /// ETRACKC, ERDINFO, ELDBC, ELDUC.
        const ENCLS_C = 1 << 6;
        /// EVERIFYREPORT2 (never set by vsgx).
        const EVERIFYREPORT2 = 1 << 7;
        /// EUPDATESVN (never set by vsgx).
        const EUPDATESVN = 1 << 10;
        /// EDECCSSA (never set by vsgx).
        const EDECCSSA = 1 << 11;
    }
}

/// CPUID.(12H,0): SGX capabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SgxLeaf0 {
    /// EAX: leaf groups.
    pub leaves: SgxLeafSupport,
    /// EBX: supported MISCSELECT bits.
    pub miscselect: u32,
    /// EDX[7:0]: log2 of the maximum enclave size outside 64-bit mode.
    pub max_enclave_size_32: u8,
    /// EDX[15:8]: log2 of the maximum enclave size in 64-bit mode.
    pub max_enclave_size_64: u8,
}

impl SgxLeaf0 {
    /// Encodes the sub-leaf.
    pub const fn encode(&self) -> CpuidResult {
        CpuidResult {
            eax: self.leaves.bits(),
            ebx: self.miscselect,
            ecx: 0,
            edx: (self.max_enclave_size_64 as u32) << 8 | self.max_enclave_size_32 as u32,
        }
    }

    /// Decodes the sub-leaf; unknown EAX bits, ECX and EDX[31:16] must be zero.
    pub fn decode(r: CpuidResult) -> Result<Self, CpuidError> {
        let reserved =
            |reg, mask: u32| if mask != 0 { Err(CpuidError::Reserved { subleaf: 0, reg, mask }) } else { Ok(()) };
        reserved("EAX", r.eax & !SgxLeafSupport::all().bits())?;
        reserved("ECX", r.ecx)?;
        reserved("EDX", r.edx & 0xFFFF_0000)?;
        Ok(Self {
            leaves: SgxLeafSupport::from_bits_retain(r.eax),
            miscselect: r.ebx,
            max_enclave_size_32: r.edx as u8,
            max_enclave_size_64: (r.edx >> 8) as u8,
        })
    }
}

/// CPUID.(12H,1): which ATTRIBUTES bits ECREATE accepts (EAX:EBX = FLAGS, ECX:EDX = XFRM).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SgxLeaf1 {
    /// Settable attribute bits.
    pub allowed: Attributes,
}

impl SgxLeaf1 {
    /// Encodes the sub-leaf.
    pub const fn encode(&self) -> CpuidResult {
        CpuidResult {
            eax: self.allowed.flags as u32,
            ebx: (self.allowed.flags >> 32) as u32,
            ecx: self.allowed.xfrm as u32,
            edx: (self.allowed.xfrm >> 32) as u32,
        }
    }

    /// Decodes the sub-leaf (every bit is meaningful).
    pub const fn decode(r: CpuidResult) -> Self {
        Self {
            allowed: Attributes {
                flags: (r.ebx as u64) << 32 | r.eax as u64,
                xfrm: (r.edx as u64) << 32 | r.ecx as u64,
            },
        }
    }
}

/// Protection an EPC section offers (ECX[3:0] of its sub-leaf).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EpcProperty {
    /// Confidentiality and integrity protection (1).
    ConfidentialityIntegrity,
    /// Confidentiality protection only (2).
    ConfidentialityOnly,
}

/// One EPC section as enumerated by CPUID.(12H, n ≥ 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EpcSectionLeaf {
    /// Physical base address (4 KiB aligned, below 2^52).
    pub base: u64,
    /// Size in bytes (4 KiB multiple, below 2^52, non-zero).
    pub size: u64,
    /// Protection property.
    pub property: EpcProperty,
}

const ADDR_LOW_MASK: u64 = 0xFFFF_F000;
const ADDR_HIGH_MASK: u64 = 0xF_FFFF;
const MAX_ENCODABLE: u64 = 1 << 52;

impl EpcSectionLeaf {
    /// Encodes the section's sub-leaf.
    pub fn encode(&self) -> Result<CpuidResult, CpuidError> {
        let fail = |reason| CpuidError::Unencodable { base: self.base, size: self.size, reason };
        if !self.base.is_multiple_of(4096) || !self.size.is_multiple_of(4096) {
            return Err(fail("base and size must be 4 KiB aligned"));
        }
        if self.size == 0 {
            return Err(fail("size must not be zero"));
        }
        if self.base >= MAX_ENCODABLE || self.size >= MAX_ENCODABLE {
            return Err(fail("base and size must be below 2^52"));
        }
        let property = match self.property {
            EpcProperty::ConfidentialityIntegrity => 1,
            EpcProperty::ConfidentialityOnly => 2,
        };
        Ok(CpuidResult {
            eax: (self.base & ADDR_LOW_MASK) as u32 | 1,
            ebx: ((self.base >> 32) & ADDR_HIGH_MASK) as u32,
            ecx: (self.size & ADDR_LOW_MASK) as u32 | property,
            edx: ((self.size >> 32) & ADDR_HIGH_MASK) as u32,
        })
    }

    /// The all-zero sub-leaf that ends the enumeration.
    pub const END: CpuidResult = CpuidResult { eax: 0, ebx: 0, ecx: 0, edx: 0 };

    /// Decodes sub-leaf `subleaf` (≥ 2): `Ok(None)` for the type-0 terminator.
    pub fn decode(subleaf: u32, r: CpuidResult) -> Result<Option<Self>, CpuidError> {
        let reserved =
            |reg, mask: u32| if mask != 0 { Err(CpuidError::Reserved { subleaf, reg, mask }) } else { Ok(()) };
        match r.eax & 0xF {
            0 => {
                reserved("EAX", r.eax)?;
                reserved("EBX", r.ebx)?;
                reserved("ECX", r.ecx)?;
                reserved("EDX", r.edx)?;
                return Ok(None);
            }
            1 => {}
            kind => return Err(CpuidError::UnknownType { subleaf, kind }),
        }
        reserved("EAX", r.eax & 0xFF0)?;
        reserved("EBX", r.ebx & !(ADDR_HIGH_MASK as u32))?;
        reserved("ECX", r.ecx & 0xFF0)?;
        reserved("EDX", r.edx & !(ADDR_HIGH_MASK as u32))?;
        let property = match r.ecx & 0xF {
            1 => EpcProperty::ConfidentialityIntegrity,
            2 => EpcProperty::ConfidentialityOnly,
            property => return Err(CpuidError::UnknownProperty { subleaf, property }),
        };
        let base = (r.eax as u64 & ADDR_LOW_MASK) | (r.ebx as u64 & ADDR_HIGH_MASK) << 32;
        let size = (r.ecx as u64 & ADDR_LOW_MASK) | (r.edx as u64 & ADDR_HIGH_MASK) << 32;
        if size == 0 {
            return Err(CpuidError::Unencodable { base, size, reason: "an EPC section of size 0" });
        }
        Ok(Some(Self { base, size, property }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sgx_md_worked_examples() {
        let a =
            EpcSectionLeaf { base: 0x8020_0000, size: 0x05D8_0000, property: EpcProperty::ConfidentialityIntegrity };
        let r = a.encode().unwrap();
        assert_eq!(r.to_array(), [0x8020_0001, 0, 0x05D8_0001, 0]);
        assert_eq!(EpcSectionLeaf::decode(2, r), Ok(Some(a)));

        let b = EpcSectionLeaf {
            base: 0x10_0000_0000,
            size: 0x1_0000_0000,
            property: EpcProperty::ConfidentialityIntegrity,
        };
        assert_eq!(b.encode().unwrap().to_array(), [1, 0x10, 1, 1]);
        assert_eq!(EpcSectionLeaf::decode(3, EpcSectionLeaf::END), Ok(None));
    }

    #[test]
    fn leaf0_and_leaf1_defaults() {
        let l0 = SgxLeaf0 {
            leaves: SgxLeafSupport::SGX1 | SgxLeafSupport::SGX2,
            miscselect: 1,
            max_enclave_size_32: 0x1F,
            max_enclave_size_64: 0x24,
        };
        assert_eq!(l0.encode().to_array(), [3, 1, 0, 0x241F]);
        assert_eq!(SgxLeaf0::decode(l0.encode()), Ok(l0));
        assert!(SgxLeaf0::decode(CpuidResult { ecx: 1, ..l0.encode() }).is_err());
        let l1 = SgxLeaf1 { allowed: Attributes { flags: 0x36, xfrm: 0x7 } };
        assert_eq!(l1.encode().to_array(), [0x36, 0, 7, 0]);
        assert_eq!(SgxLeaf1::decode(l1.encode()), l1);
    }

    #[test]
    fn leaf7_bits() {
        let r = Leaf7Sgx { sgx: true, sgx_lc: true }.apply(CpuidResult { ebx: 0x1, ..Default::default() });
        assert_eq!((r.ebx, r.ecx), (0x5, 1 << 30));
        assert_eq!(Leaf7Sgx::decode(r), Leaf7Sgx { sgx: true, sgx_lc: true });
        let cleared = Leaf7Sgx::default().apply(r);
        assert_eq!((cleared.ebx, cleared.ecx), (0x1, 0));
    }

    #[test]
    fn section_decode_rejects_garbage() {
        assert!(matches!(
            EpcSectionLeaf::decode(2, CpuidResult { eax: 2, ..Default::default() }),
            Err(CpuidError::UnknownType { .. })
        ));
        assert!(matches!(
            EpcSectionLeaf::decode(2, CpuidResult { eax: 0x1001, ecx: 0x1003, ..Default::default() }),
            Err(CpuidError::UnknownProperty { .. })
        ));
        assert!(matches!(
            EpcSectionLeaf::decode(2, CpuidResult { eax: 0x1011, ecx: 0x1001, ..Default::default() }),
            Err(CpuidError::Reserved { .. })
        ));
        assert!(matches!(
            EpcSectionLeaf::decode(2, CpuidResult { eax: 0, ebx: 1, ..Default::default() }),
            Err(CpuidError::Reserved { .. })
        ));
        assert!(
            EpcSectionLeaf { base: 0x1001, size: 0x1000, property: EpcProperty::ConfidentialityOnly }.encode().is_err()
        );
    }
}
