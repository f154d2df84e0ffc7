//! The SGX platform model: physical EPC and EPCM, every ENCLS/ENCLU/ENCLV leaf, fused keys, paging
//! crypto and enclave execution, behind the `Cpu` trait of `vsgx-isa` (DESIGN §4).
//!
//! Knows nothing about domains or virtualization beyond what real hardware exposes.
#![forbid(unsafe_code)]
