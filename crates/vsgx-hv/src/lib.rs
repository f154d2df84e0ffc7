//! The hypervisor: host EPC manager, domains, vCPUs, the EPC p2m, ENCLS/CPUID/MSR virtualization
//! and EPC policies (DESIGN §5). Built on `vsgx-hw`; knows nothing of config syntax, sockets or CLI.
//!
//! - [`epc`]: the host EPC manager (DESIGN §5.1): O(1) allocation per section with a NUMA
//!   fallback order, accounting per domain and for the hypervisor, release and sanitize with the
//!   two-pass EREMOVE protocol, quarantine of pages EREMOVE cannot remove;
//! - [`domain`]: domains (static vEPC backed at creation, reset, destroy);
//! - [`vcpu`]: vCPUs implementing `Cpu` (guest page walk + p2m, ENCLS exits, virtual MSRs);
//! - [`policy`]: the guest's CPUID 0x12 / leaf 7 and launch control;
//! - [`guest_ram`]: sparse guest RAM with dirty tracking;
//! - [`snapshot`]: save/restore of a domain's state without EPC contents (versioned, checksummed).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod domain;
pub mod epc;
pub mod guest_ram;
pub mod policy;
pub mod snapshot;
pub mod vcpu;
