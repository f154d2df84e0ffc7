//! Byte-exact architectural structures (SGX.md §1).
//!
//! Every structure is `#[repr(C)]` with natural field alignment, so its in-memory layout *is* the
//! architectural layout. Sizes and the offset of every named field are asserted at compile time
//! (see the `layout!` invocations), and the layouts are cross-checked against Fortanix `sgx-isa` in
//! this crate's integration tests.
//!
//! Conversions go through [`ArchStruct`]: [`ArchStruct::from_bytes`] copies from an exactly-sized
//! byte slice (any alignment), [`ArchStruct::as_bytes`] borrows the bytes. Reserved fields are
//! public and named `reservedN` so callers can build any byte pattern, including invalid ones a
//! test wants to feed to the hardware model.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

mod attributes;
mod einittoken;
mod keyrequest;
mod pageinfo;
mod pcmd;
mod rdinfo;
mod report;
mod secinfo;
mod secs;
mod sigstruct;
mod ssa;
mod tcs;

pub use attributes::*;
pub use einittoken::*;
pub use keyrequest::*;
pub use pageinfo::*;
pub use pcmd::*;
pub use rdinfo::*;
pub use report::*;
pub use secinfo::*;
pub use secs::*;
pub use sigstruct::*;
pub use ssa::*;
pub use tcs::*;

/// The page size of the EPC and of every page-granular SGX operand.
pub const PAGE_SIZE: usize = 4096;

/// A byte slice had the wrong length for the structure it was meant to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{name} must be exactly {expected} bytes, got {actual}")]
pub struct LengthError {
    /// Architectural name of the structure.
    pub name: &'static str,
    /// Architectural size.
    pub expected: usize,
    /// Length that was supplied.
    pub actual: usize,
}

/// An architectural structure with a fixed size and operand alignment.
pub trait ArchStruct: FromBytes + IntoBytes + Immutable + KnownLayout + Sized {
    /// Architectural name, used in error messages.
    const NAME: &'static str;
    /// Size in bytes (SGX.md §1.1).
    const SIZE: usize;
    /// Alignment the architecture requires of a linear-address operand naming this structure.
    const ALIGN: usize;

    /// Copies the structure out of exactly [`Self::SIZE`] bytes (any alignment).
    fn from_bytes(bytes: &[u8]) -> Result<Self, LengthError> {
        Self::read_from_bytes(bytes).map_err(|_| LengthError {
            name: Self::NAME,
            expected: Self::SIZE,
            actual: bytes.len(),
        })
    }

    /// The structure's bytes, exactly as the architecture lays them out.
    fn bytes(&self) -> &[u8] {
        self.as_bytes()
    }

    /// The structure's bytes, mutable (for reading it in place from memory).
    fn bytes_mut(&mut self) -> &mut [u8] {
        self.as_mut_bytes()
    }

    /// An all-zero instance.
    fn zeroed() -> Self {
        Self::new_zeroed()
    }
}

/// Implements [`ArchStruct`] and asserts size and field offsets at compile time.
macro_rules! layout {
    ($ty:ident, $name:literal, size = $size:literal, align = $align:literal, { $($field:ident @ $off:literal),* $(,)? }) => {
        impl $crate::types::ArchStruct for $ty {
            const NAME: &'static str = $name;
            const SIZE: usize = $size;
            const ALIGN: usize = $align;
        }
        const _: () = {
            assert!(core::mem::size_of::<$ty>() == $size, concat!($name, " has the wrong size"));
            $(assert!(
                core::mem::offset_of!($ty, $field) == $off,
                concat!($name, ".", stringify!($field), " is at the wrong offset")
            );)*
        };
    };
}
pub(crate) use layout;

/// Formats a byte array as lower-case hex (for `Debug` of hashes and keys).
pub(crate) struct HexBytes<'a>(pub &'a [u8]);

impl core::fmt::Debug for HexBytes<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}
