//! The SGX platform model: physical EPC and EPCM, every ENCLS/ENCLU/ENCLV leaf, fused keys, paging
//! crypto and bare-metal logical processors implementing `vsgx_isa::cpu::Cpu` (DESIGN §4).
//!
//! - [`config`]: platform configuration (TOML + embedded default) and the CPUID it implies;
//! - [`epc`]: sparse physical EPC with a compact EPCM and per-page locks;
//! - [`platform`]: the [`Platform`](platform::Platform): EPC, secrets, counters, power events;
//! - [`leaves`]: the leaf implementations, written against [`leaves::OperandAccess`] so the
//!   hypervisor can run them for guests with its own address translation;
//! - [`keys`], [`crypto`]: key derivation and paging encryption;
//! - [`memory`], [`cpu`]: bare-metal RAM and logical processors;
//! - [`bench`]: benchmark fixtures shared by the benches and `vsgx bench`.
//!
//! Knows nothing about domains or virtualization beyond what real hardware exposes.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bench;
pub mod config;
pub mod cpu;
pub mod crypto;
pub mod epc;
pub mod exec;
pub mod keys;
pub mod leaves;
pub mod memory;
pub mod os;
pub mod platform;
pub mod tlb;
