//! The hypervisor: host EPC manager, domains, vCPUs, the EPC p2m, ENCLS/CPUID/MSR virtualization
//! and EPC policies (DESIGN §5). Built on `vsgx-hw`; knows nothing of config syntax, sockets or CLI.
#![forbid(unsafe_code)]
