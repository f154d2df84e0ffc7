//! The vsgx enclave ABI: how a WebAssembly enclave is laid out inside ELRANGE and how it is
//! entered (`docs/enclave-abi.md` is the prose version).
//!
//! Not architectural, but shared by everything that builds, loads or calls such enclaves: the
//! build tool and executor (`vsgx-hw`) and the guest SDK (`vsgx-guest`, which depends on this crate
//! only). Layout (offsets from BASEADDR):
//!
//! | offset | pages | content |
//! |---|---|---|
//! | 0 | 1 | header (PT_REG, R): [`Header`] |
//! | 0x1000 | per TCS: 1 + NSSA·SSAFRAMESIZE | TCS (OENTRY = 0, the header), then its SSA frames (R+W) |
//! | `code_offset` | ⌈code_len / 4096⌉ | the module bytes (R+X) |
//! | `heap_offset` | `heap_len / 4096` | the module's linear memory (R+W), initial image |
//!
//! Every page is measured in full, so MRENCLAVE covers the header, the code and the initial heap.

use alloc::string::String;
use alloc::vec::Vec;

/// `"VSGXWASM"`.
pub const MAGIC: [u8; 8] = *b"VSGXWASM";
/// ABI version.
pub const VERSION: u32 = 1;
/// Offset of the ECALL name table in the header page.
pub const ECALL_TABLE: usize = 64;
/// Bytes per ECALL name slot (NUL-padded UTF-8; at most 31 bytes of name).
pub const ECALL_NAME_SLOT: usize = 32;
/// Most ECALLs an enclave may export.
pub const MAX_ECALLS: usize = (4096 - ECALL_TABLE) / ECALL_NAME_SLOT;
/// WebAssembly page size: the heap is a whole number of them.
pub const WASM_PAGE: u64 = 65536;
/// Import module name of the enclave's imports.
pub const IMPORT_MODULE: &str = "vsgx";

/// The header page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Offset of the module bytes from BASEADDR (page aligned).
    pub code_offset: u64,
    /// Length of the module in bytes.
    pub code_len: u64,
    /// Offset of the heap (linear memory) from BASEADDR (page aligned).
    pub heap_offset: u64,
    /// Heap size in bytes (a multiple of 64 KiB).
    pub heap_len: u64,
    /// Exported ECALL functions; index = EENTER's RDI.
    pub ecalls: Vec<String>,
}

/// A header page that does not follow the ABI.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Bad magic.
    #[error("not a vsgx WebAssembly enclave (header magic is not VSGXWASM)")]
    Magic,
    /// Unknown version.
    #[error("unsupported enclave ABI version {0} (this build knows version 1)")]
    Version(u32),
    /// Layout fields are inconsistent.
    #[error("inconsistent header: {0}")]
    Layout(&'static str),
    /// An ECALL name is not valid.
    #[error("ECALL {index}: {reason}")]
    Ecall {
        /// Index in the table.
        index: usize,
        /// Why.
        reason: &'static str,
    },
}

fn u64_at(page: &[u8; 4096], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&page[at..at + 8]);
    u64::from_le_bytes(b)
}

fn u32_at(page: &[u8; 4096], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&page[at..at + 4]);
    u32::from_le_bytes(b)
}

impl Header {
    /// Encodes the header page. Names longer than 31 bytes or more than [`MAX_ECALLS`] entries are
    /// an error.
    pub fn encode(&self) -> Result<[u8; 4096], HeaderError> {
        self.check()?;
        let mut p = [0u8; 4096];
        p[0..8].copy_from_slice(&MAGIC);
        p[8..12].copy_from_slice(&VERSION.to_le_bytes());
        p[16..24].copy_from_slice(&self.code_offset.to_le_bytes());
        p[24..32].copy_from_slice(&self.code_len.to_le_bytes());
        p[32..40].copy_from_slice(&self.heap_offset.to_le_bytes());
        p[40..48].copy_from_slice(&self.heap_len.to_le_bytes());
        p[48..52].copy_from_slice(&(self.ecalls.len() as u32).to_le_bytes());
        for (i, name) in self.ecalls.iter().enumerate() {
            let at = ECALL_TABLE + i * ECALL_NAME_SLOT;
            p[at..at + name.len()].copy_from_slice(name.as_bytes());
        }
        Ok(p)
    }

    /// Decodes and checks a header page.
    pub fn decode(page: &[u8; 4096]) -> Result<Self, HeaderError> {
        if page[0..8] != MAGIC {
            return Err(HeaderError::Magic);
        }
        let version = u32_at(page, 8);
        if version != VERSION {
            return Err(HeaderError::Version(version));
        }
        if u32_at(page, 12) != 0 || u32_at(page, 52) != 0 || page[56..64].iter().any(|&b| b != 0) {
            return Err(HeaderError::Layout("reserved header bytes are not zero"));
        }
        let count = u32_at(page, 48) as usize;
        if count > MAX_ECALLS {
            return Err(HeaderError::Layout("more ECALLs than the header page holds"));
        }
        let mut ecalls = Vec::with_capacity(count);
        for index in 0..count {
            let at = ECALL_TABLE + index * ECALL_NAME_SLOT;
            let slot = &page[at..at + ECALL_NAME_SLOT];
            let len = slot
                .iter()
                .position(|&b| b == 0)
                .ok_or(HeaderError::Ecall { index, reason: "name not NUL-terminated" })?;
            if slot[len..].iter().any(|&b| b != 0) {
                return Err(HeaderError::Ecall { index, reason: "bytes after the name are not zero" });
            }
            let name = core::str::from_utf8(&slot[..len])
                .map_err(|_| HeaderError::Ecall { index, reason: "name is not UTF-8" })?;
            ecalls.push(String::from(name));
        }
        let header = Self {
            code_offset: u64_at(page, 16),
            code_len: u64_at(page, 24),
            heap_offset: u64_at(page, 32),
            heap_len: u64_at(page, 40),
            ecalls,
        };
        header.check()?;
        Ok(header)
    }

    fn check(&self) -> Result<(), HeaderError> {
        let layout = |reason| Err(HeaderError::Layout(reason));
        if !self.code_offset.is_multiple_of(4096) || !self.heap_offset.is_multiple_of(4096) {
            return layout("code and heap must start on page boundaries");
        }
        if self.code_len == 0 {
            return layout("the code region is empty");
        }
        if !self.heap_len.is_multiple_of(WASM_PAGE) {
            return layout("the heap must be a whole number of 64 KiB WebAssembly pages");
        }
        let code_end =
            self.code_offset.checked_add(self.code_len).ok_or(HeaderError::Layout("code region overflows"))?;
        if self.code_offset < 4096 || code_end > self.heap_offset {
            return layout("the code region must lie between the header and the heap");
        }
        if self.heap_offset.checked_add(self.heap_len).is_none() {
            return layout("heap region overflows");
        }
        if self.ecalls.len() > MAX_ECALLS {
            return layout("too many ECALLs");
        }
        for (index, name) in self.ecalls.iter().enumerate() {
            if name.is_empty() || name.len() >= ECALL_NAME_SLOT || name.as_bytes().contains(&0) {
                return Err(HeaderError::Ecall { index, reason: "names must be 1 to 31 bytes without NUL" });
            }
        }
        Ok(())
    }

    /// Index of the ECALL named `name`.
    pub fn ecall(&self, name: &str) -> Option<usize> {
        self.ecalls.iter().position(|e| e == name)
    }
}

// Register assignment of an ECALL: RDI = ECALL index; RSI/RDX = input buffer linear
// address/length; R8/R9 = output buffer linear address/capacity (both outside the enclave). On exit
// RDI = the ECALL's i64 result (≥ 0: bytes written to the output buffer; < 0: an error code).

/// Error results an ECALL returns in RDI (negative), by convention.
pub mod status {
    /// The ECALL index names no exported ECALL.
    pub const NO_SUCH_ECALL: i64 = -1;
    /// The output buffer is too small.
    pub const OUTPUT_TOO_SMALL: i64 = -2;
    /// The input is malformed for this ECALL.
    pub const BAD_INPUT: i64 = -3;
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn header_round_trip_and_checks() {
        let h = Header {
            code_offset: 0x5000,
            code_len: 1234,
            heap_offset: 0x10000,
            heap_len: 0x20000,
            ecalls: vec![String::from("hello"), String::from("seal")],
        };
        let page = h.encode().unwrap();
        assert_eq!(Header::decode(&page).unwrap(), h);
        assert_eq!(h.ecall("seal"), Some(1));
        let mut bad = page;
        bad[0] = b'X';
        assert_eq!(Header::decode(&bad), Err(HeaderError::Magic));
        let mut bad = page;
        bad[8] = 2;
        assert_eq!(Header::decode(&bad), Err(HeaderError::Version(2)));
        assert!(Header { heap_len: 4096, ..h.clone() }.encode().is_err());
        assert!(Header { code_offset: 0x10000, ..h.clone() }.encode().is_err());
        assert!(Header { ecalls: vec![String::from("x").repeat(32)], ..h }.encode().is_err());
    }
}
