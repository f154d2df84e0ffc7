//! The hypervisor: host EPC manager, domains, vCPUs, the EPC p2m, ENCLS/CPUID/MSR virtualization
//! and EPC policies (DESIGN §5). Built on `vsgx-hw`; knows nothing of config syntax, sockets or CLI.
//!
//! - [`epc`]: the host EPC manager (DESIGN §5.1): O(1) allocation per section with a NUMA
//!   fallback order, accounting per domain and for the hypervisor, release and sanitize with the
//!   two-pass EREMOVE protocol, quarantine of pages EREMOVE cannot remove.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod epc;
