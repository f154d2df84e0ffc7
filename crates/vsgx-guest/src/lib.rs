//! The guest kernel's SGX support: driver, page tables, EPC reclaim, EPC-loss recovery, SDK and
//! guest agent (DESIGN §6). Reaches the machine only through `vsgx_isa::cpu::Cpu`, so the same code
//! can later run inside a real KVM guest.
#![no_std]
#![forbid(unsafe_code)]
