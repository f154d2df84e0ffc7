//! The toolstack: xl-style configs, guest memory layout, domain lifecycle, the daemon API,
//! persistence and save/restore/migration streams (DESIGN §7). Uses only the public API of `vsgx-hv`.
//!
//! - [`config`]: the xl.cfg(5) grammar ([`config::XlConfig`]) and the validated
//!   [`config::GuestConfig`] with its warnings;
//! - [`layout`]: the guest memory layout rule (DESIGN §7.2): memory map, CPUID 0x12, ACPI EPC
//!   device and the `vsgx-hv` domain spec, from one function;
//! - [`host`]: what the toolstack needs to know about the host ([`host::HostInfo`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod host;
pub mod layout;
pub mod lifecycle;
pub mod report;
