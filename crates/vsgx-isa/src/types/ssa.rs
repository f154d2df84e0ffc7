//! SSA frame layout: GPRSGX, EXITINFO, EXINFO (SGX.md §1.5).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::layout;

/// Size of GPRSGX, the general-purpose register area at the end of every SSA frame.
pub const GPRSGX_SIZE: usize = 184;
/// Size of the EXINFO MISC component.
pub const EXINFO_SIZE: usize = 16;

/// Register state saved at the end of an SSA frame on AEX (184 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Gprsgx {
    /// RAX.
    pub rax: u64,
    /// RCX.
    pub rcx: u64,
    /// RDX.
    pub rdx: u64,
    /// RBX.
    pub rbx: u64,
    /// RSP.
    pub rsp: u64,
    /// RBP.
    pub rbp: u64,
    /// RSI.
    pub rsi: u64,
    /// RDI.
    pub rdi: u64,
    /// R8 … R15.
    pub r8_r15: [u64; 8],
    /// RFLAGS.
    pub rflags: u64,
    /// RIP.
    pub rip: u64,
    /// Outside RSP, written by EENTER, loaded into RSP on AEX.
    pub ursp: u64,
    /// Outside RBP, as URSP.
    pub urbp: u64,
    /// [`ExitInfo`] encoding.
    pub exitinfo: u32,
    /// Reserved; byte 167 bit 0 is the AEX-Notify request when supported.
    pub reserved: u32,
    /// FS base.
    pub fsbase: u64,
    /// GS base.
    pub gsbase: u64,
}
layout!(Gprsgx, "GPRSGX", size = 184, align = 8, {
    rax @ 0, rcx @ 8, rdx @ 16, rbx @ 24, rsp @ 32, rbp @ 40, rsi @ 48, rdi @ 56, r8_r15 @ 64,
    rflags @ 128, rip @ 136, ursp @ 144, urbp @ 152, exitinfo @ 160, reserved @ 164,
    fsbase @ 168, gsbase @ 176,
});

/// #PF/#GP details written below GPRSGX when MISCSELECT.EXINFO = 1 (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Exinfo {
    /// #PF linear address, low 12 bits kept; 0 for #GP.
    pub maddr: u64,
    /// Error code (bit 15 = EPCM-induced fault).
    pub errcd: u32,
    /// Reserved.
    pub reserved: u32,
}
layout!(Exinfo, "EXINFO", size = 16, align = 8, { maddr @ 0, errcd @ 8, reserved @ 12 });

/// EXITINFO exit types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ExitType {
    /// Hardware exception.
    Hardware = 3,
    /// Software exception.
    Software = 6,
}

/// Decoded GPRSGX.EXITINFO: `[7:0]` vector, `[10:8]` exit type, `[31]` valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExitInfo {
    /// Exception vector.
    pub vector: u8,
    /// Exit type.
    pub exit_type: ExitType,
}

impl ExitInfo {
    const VALID: u32 = 1 << 31;

    /// Encodes to the 32-bit EXITINFO value (VALID set).
    pub const fn encode(self) -> u32 {
        Self::VALID | (self.exit_type as u32) << 8 | self.vector as u32
    }

    /// Decodes an EXITINFO value; `None` when VALID is clear, the exit type is unknown or
    /// reserved bits are set.
    pub const fn decode(raw: u32) -> Option<Self> {
        if raw & Self::VALID == 0 || raw & 0x7FFF_F800 != 0 {
            return None;
        }
        let exit_type = match (raw >> 8) & 7 {
            3 => ExitType::Hardware,
            6 => ExitType::Software,
            _ => return None,
        };
        Some(Self { vector: raw as u8, exit_type })
    }
}

/// Where things sit inside one SSA frame of `frame_pages` pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SsaFrameLayout {
    /// Frame size in pages (SECS.SSAFRAMESIZE).
    pub frame_pages: u32,
}

impl SsaFrameLayout {
    /// Frame size in bytes.
    pub const fn frame_bytes(&self) -> u64 {
        self.frame_pages as u64 * 4096
    }
    /// Offset of GPRSGX from the frame start (the last 184 bytes).
    pub const fn gprsgx_offset(&self) -> u64 {
        self.frame_bytes() - GPRSGX_SIZE as u64
    }
    /// Offset of EXINFO from the frame start (directly below GPRSGX).
    pub const fn exinfo_offset(&self) -> u64 {
        self.gprsgx_offset() - EXINFO_SIZE as u64
    }
    /// Linear address of frame `index` for a TCS with `ossa` in an enclave at `baseaddr`.
    pub const fn frame_address(&self, baseaddr: u64, ossa: u64, index: u32) -> u64 {
        baseaddr.wrapping_add(ossa).wrapping_add(index as u64 * self.frame_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exitinfo_round_trip() {
        let pf = ExitInfo { vector: 14, exit_type: ExitType::Hardware };
        assert_eq!(pf.encode(), 0x8000_030E);
        assert_eq!(ExitInfo::decode(pf.encode()), Some(pf));
        assert_eq!(ExitInfo::decode(0), None);
        assert_eq!(ExitInfo::decode(0x8000_050E), None);
    }

    #[test]
    fn frame_layout() {
        let l = SsaFrameLayout { frame_pages: 1 };
        assert_eq!(l.gprsgx_offset(), 4096 - 184);
        assert_eq!(l.exinfo_offset(), 4096 - 200);
        assert_eq!(l.frame_address(0x10000, 0x2000, 1), 0x13000);
    }
}
