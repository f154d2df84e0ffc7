//! ENCLS, ENCLU and ENCLV leaf numbers (SGX.md §5.2).

/// Declares a `#[repr(u32)]` leaf enum with its architectural names and a checked decoder.
macro_rules! leaves {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $value:literal => $text:literal),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u32)]
        pub enum $name { $($(#[$vmeta])* $variant = $value),* }

        impl $name {
            /// Every leaf, in numeric order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),*];

            /// Decodes a leaf number (the value of EAX).
            pub const fn from_u32(v: u32) -> Option<Self> {
                match v { $($value => Some(Self::$variant),)* _ => None }
            }

            /// The architectural mnemonic.
            pub const fn name(self) -> &'static str {
                match self { $(Self::$variant => $text),* }
            }
        }

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

leaves! {
    /// Supervisor (ring 0) SGX leaves.
    Encls {
        /// Create an enclave (SGX1).
        Ecreate = 0x00 => "ECREATE",
        /// Add a page (SGX1).
        Eadd = 0x01 => "EADD",
        /// Initialize an enclave (SGX1).
        Einit = 0x02 => "EINIT",
        /// Remove a page (SGX1).
        Eremove = 0x03 => "EREMOVE",
        /// Debug read (SGX1).
        Edbgrd = 0x04 => "EDBGRD",
        /// Debug write (SGX1).
        Edbgwr = 0x05 => "EDBGWR",
        /// Extend the measurement by 256 bytes (SGX1).
        Eextend = 0x06 => "EEXTEND",
        /// Load an evicted page, blocked (SGX1).
        Eldb = 0x07 => "ELDB",
        /// Load an evicted page, unblocked (SGX1).
        Eldu = 0x08 => "ELDU",
        /// Block a page (SGX1).
        Eblock = 0x09 => "EBLOCK",
        /// Add a version array page (SGX1).
        Epa = 0x0A => "EPA",
        /// Evict a page (SGX1).
        Ewb = 0x0B => "EWB",
        /// Start a tracking cycle (SGX1).
        Etrack = 0x0C => "ETRACK",
        /// Add a pending page to an initialized enclave (SGX2).
        Eaug = 0x0D => "EAUG",
        /// Restrict permissions (SGX2).
        Emodpr = 0x0E => "EMODPR",
        /// Change page type (SGX2).
        Emodt = 0x0F => "EMODT",
        /// Read EPCM information (oversubscription extensions).
        Erdinfo = 0x10 => "ERDINFO",
        /// Tracking with conflict reporting (oversubscription extensions).
        Etrackc = 0x11 => "ETRACKC",
        /// ELDB with conflict reporting (oversubscription extensions).
        Eldbc = 0x12 => "ELDBC",
        /// ELDU with conflict reporting (oversubscription extensions).
        Elduc = 0x13 => "ELDUC",
    }
}

leaves! {
    /// User (ring 3) SGX leaves.
    Enclu {
        /// Produce a REPORT (SGX1, enclave mode).
        Ereport = 0 => "EREPORT",
        /// Derive a key (SGX1, enclave mode).
        Egetkey = 1 => "EGETKEY",
        /// Enter an enclave (SGX1).
        Eenter = 2 => "EENTER",
        /// Resume after an AEX (SGX1).
        Eresume = 3 => "ERESUME",
        /// Leave the enclave (SGX1, enclave mode).
        Eexit = 4 => "EEXIT",
        /// Accept a page change (SGX2, enclave mode).
        Eaccept = 5 => "EACCEPT",
        /// Extend page permissions (SGX2, enclave mode).
        Emodpe = 6 => "EMODPE",
        /// Accept a pending page by copying (SGX2, enclave mode).
        Eacceptcopy = 7 => "EACCEPTCOPY",
        /// Verify a TDX report (not modelled).
        Everifyreport2 = 8 => "EVERIFYREPORT2",
        /// Decrement CSSA (not modelled).
        Edeccssa = 9 => "EDECCSSA",
    }
}

leaves! {
    /// Virtualization (VMX root) SGX leaves.
    Enclv {
        /// Decrement a SECS's VIRTCHILDCNT.
        Edecvirtchild = 0 => "EDECVIRTCHILD",
        /// Increment a SECS's VIRTCHILDCNT.
        Eincvirtchild = 1 => "EINCVIRTCHILD",
        /// Set a SECS's ENCLAVECONTEXT.
        Esetcontext = 2 => "ESETCONTEXT",
    }
}

impl Enclu {
    /// Leaves that may only run in enclave mode (outside it they raise #GP(0)).
    pub const fn requires_enclave_mode(self) -> bool {
        !matches!(self, Self::Eenter | Self::Eresume)
    }
}

/// Opcode bytes of the three SGX instructions.
pub mod opcode {
    /// `ENCLS`.
    pub const ENCLS: [u8; 3] = [0x0F, 0x01, 0xCF];
    /// `ENCLU`.
    pub const ENCLU: [u8; 3] = [0x0F, 0x01, 0xD7];
    /// `ENCLV`.
    pub const ENCLV: [u8; 3] = [0x0F, 0x01, 0xC0];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_numbers() {
        assert_eq!(Encls::ALL.len(), 20);
        for (i, l) in Encls::ALL.iter().enumerate() {
            assert_eq!(*l as u32, i as u32);
            assert_eq!(Encls::from_u32(i as u32), Some(*l));
        }
        assert_eq!(Encls::from_u32(0x14), None);
        assert_eq!(Encls::Elduc.name(), "ELDUC");
        assert_eq!(Enclu::Eacceptcopy as u32, 7);
        assert_eq!(Enclv::Edecvirtchild as u32, 0);
        assert_eq!(Enclv::Eincvirtchild as u32, 1);
        assert_eq!(Enclv::Esetcontext as u32, 2);
        assert!(!Enclu::Eenter.requires_enclave_mode());
        assert!(Enclu::Egetkey.requires_enclave_mode());
    }
}
