//! What the toolstack needs to know about the host to check and lay out a guest: its SGX
//! capabilities, its EPC sections (with NUMA nodes) and the guest physical address width.

use vsgx_hw::config::{EpcSectionLayout, PlatformConfig};
use vsgx_hw::platform::{Capabilities, Platform};

/// Guest physical address width, in bits (**choice**: 52, the architectural maximum of x86-64 and
/// the widest address CPUID 0x12 can enumerate; the platform model reports no CPUID 0x80000008,
/// so there is no narrower host width to inherit).
pub const GUEST_PHYS_ADDR_BITS: u8 = 52;

/// The host as the toolstack sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostInfo {
    /// SGX capabilities (from the platform's CPUID).
    pub capabilities: Capabilities,
    /// Physical EPC sections: base, size, NUMA node.
    pub epc: Vec<EpcSectionLayout>,
    /// Guest physical address width, in bits.
    pub guest_phys_bits: u8,
}

impl HostInfo {
    /// The host a platform configuration describes (no platform is powered on).
    pub fn from_platform_config(config: &PlatformConfig) -> Self {
        Self {
            capabilities: Capabilities::from_cpuid(|leaf, subleaf| config.cpuid(leaf, subleaf)),
            epc: config.epc_layout(),
            guest_phys_bits: GUEST_PHYS_ADDR_BITS,
        }
    }

    /// The embedded default platform (two 128 MiB EPC sections on nodes 0 and 1).
    pub fn embedded() -> Self {
        Self::from_platform_config(&vsgx_hw::config::embedded_default())
    }

    /// A running platform.
    pub fn from_platform(platform: &Platform) -> Self {
        Self {
            capabilities: *platform.capabilities(),
            epc: platform.config().epc_layout(),
            guest_phys_bits: GUEST_PHYS_ADDR_BITS,
        }
    }

    /// NUMA nodes that have EPC, ascending.
    pub fn nodes(&self) -> Vec<u32> {
        let mut nodes: Vec<u32> = self.epc.iter().map(|s| s.node).collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }

    /// Total EPC, in bytes.
    pub fn total_epc_bytes(&self) -> u64 {
        self.epc.iter().fold(0u64, |t, s| t.saturating_add(s.size))
    }

    /// EPC on `node`, in bytes.
    pub fn node_epc_bytes(&self, node: u32) -> u64 {
        self.epc.iter().filter(|s| s.node == node).fold(0u64, |t, s| t.saturating_add(s.size))
    }

    /// The node a vEPC section without `node=` is placed on: that of the host's first EPC section
    /// (the EPC manager falls back to other nodes when it runs short).
    pub fn default_node(&self) -> u32 {
        self.epc.first().map_or(0, |s| s.node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_host() {
        let h = HostInfo::embedded();
        assert_eq!(h.nodes(), vec![0, 1]);
        assert_eq!(h.total_epc_bytes(), 256 << 20);
        assert_eq!(h.node_epc_bytes(1), 128 << 20);
        assert_eq!(h.node_epc_bytes(7), 0);
        assert_eq!(h.default_node(), 0);
        assert!(h.capabilities.sgx2 && h.capabilities.flc);
        assert_eq!(h.guest_phys_bits, 52);
    }
}
