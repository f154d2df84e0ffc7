//! The toolstack: xl-style configs, guest memory layout, domain lifecycle, the daemon API,
//! persistence and save/restore/migration streams (DESIGN §7). Uses only the public API of `vsgx-hv`.
#![forbid(unsafe_code)]
