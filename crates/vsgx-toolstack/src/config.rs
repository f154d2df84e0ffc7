//! Guest configuration files: the xl.cfg(5) grammar (DESIGN §7.1) and the typed guest config.
//!
//! Loading a config is two steps:
//!
//! 1. [`XlConfig::parse`] reads the xl.cfg grammar into settings (key → [`Value`]), each value
//!    remembering where it was written. Any syntax error stops here.
//! 2. [`GuestConfig::from_xl`] turns the settings into a [`GuestConfig`], checked against the host
//!    ([`HostInfo`]: its NUMA nodes, its EPC and its SGX features) and laid out by
//!    [`crate::layout::layout`]. Keys vsgx does not use give one [`Warning`] each.
//!
//! [`GuestConfig::load`] and [`GuestConfig::parse`] do both. Every error is a [`ConfigError`] that
//! names `file:line:column` (1-based; the column counts characters, a tab is one) and what was
//! expected there.
//!
//! ```
//! use vsgx_toolstack::config::GuestConfig;
//! use vsgx_toolstack::host::HostInfo;
//!
//! let text = "name = \"web\"\nmemory = 512\nepc = 64\ndisk = [ 'phy:/dev/vg/web,xvda,w' ]\n";
//! let parsed = GuestConfig::parse("web.cfg", text, &HostInfo::embedded())?;
//! assert_eq!(parsed.layout.epc_sections[0].gpa, 0x1_0000_0000);
//! assert_eq!(parsed.warnings[0].to_string(), "web.cfg:4:1: warning: `disk` is not used by vsgx; ignored");
//!
//! let err = GuestConfig::parse("web.cfg", "name = \"web\"\nepc = 1024\n", &HostInfo::embedded()).unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "web.cfg:2:7: epc: the guest asks for 1024 MiB of EPC, but this host has 256 MiB in total"
//! );
//! # Ok::<(), vsgx_toolstack::config::ConfigError>(())
//! ```
//!
//! # Grammar
//!
//! ```text
//! file      = { blank | statement } EOF
//! statement = key ws ( "=" | "+=" ) ws value ws [comment] ( "\n" | ";" | EOF )
//! blank     = ws [comment] ( "\n" | ";" )
//! key       = [a-z] [._0-9a-z]*
//! value     = string | number | list
//! string    = '"' { char | escape } '"'  |  "'" { char | escape } "'"      (one line)
//! escape    = \" \' \\ \a \b \f \n \r \t \v \xHH (two hex digits) \NNN (1-3 octal digits)
//! number    = [0-9][0-9a-fx]*, read as decimal, or as hex after "0x"
//! list      = "[" nl* [ value nl* { "," nl* value nl* } [ "," nl* ] ] "]"
//! nl        = ws [comment] "\n"              (lists may span lines and hold comments)
//! ws        = { " " | "\t" | "\r" }          (so CRLF files read like LF files)
//! comment   = "#" { any character but "\n" }
//! ```
//!
//! This is the grammar of xl's own parser (libxlu's flex/bison files), with these decisions:
//!
//! - **Numbers** are checked when read: decimal digits, or `0x` and lowercase hex digits, at most
//!   `u64::MAX`. A decimal number with a leading zero (`010`) is refused, because xl reads it as
//!   octal (`strtol` base 0) and a silent difference would be worse than an error.
//! - **Escapes** are xl's set; `\xHH` and octal `\NNN` (at most `\377`) give the character U+00HH.
//!   xl also accepts `\'` only in double-quoted strings; vsgx accepts every escape in both kinds.
//!   Any other character after a backslash is an error, as in xl.
//! - **Lists nest** at most [`MAX_LIST_DEPTH`] levels, so hostile input cannot exhaust the stack.
//! - **A later assignment wins**: `key = value` replaces whatever the key held.
//! - **`key += value`** combines with what the key holds so far:
//!
//!   | before        | `+=` value       | result                                        |
//!   |---------------|------------------|-----------------------------------------------|
//!   | (unset)       | any value        | the value, as with `=` (xl)                   |
//!   | list          | list             | the two lists concatenated (xl)               |
//!   | list          | string or number | the value appended as the list's last item    |
//!   | string        | string           | the strings concatenated (xl: `extra += " quiet"`) |
//!   | anything else | any value        | a list: the old value, then the new item(s)   |
//!
//!   xl itself refuses the last two rows of mixed kinds; vsgx makes a list of them.

mod guest;
mod syntax;

use std::fmt;

pub use guest::{
    Action, EpcPolicy, EpcSectionConfig, GuestConfig, GuestType, MAX_MEMORY_MIB, Parsed, Uuid, VSGX_UUID_NAMESPACE,
    known_keys,
};
pub use syntax::{MAX_LIST_DEPTH, Setting, Value, ValueKind, XlConfig};

pub use crate::host::HostInfo;

/// A position in a config file: 1-based line and column (the column counts characters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1, in characters (a tab is one column).
    pub column: u32,
}

impl Location {
    /// The start of a file.
    pub const START: Self = Self { line: 1, column: 1 };

    /// A location.
    pub const fn new(line: u32, column: u32) -> Self {
        Self { line, column }
    }

    /// The location `chars` characters further on the same line.
    pub(crate) fn plus_columns(self, chars: usize) -> Self {
        Self { line: self.line, column: self.column.saturating_add(u32::try_from(chars).unwrap_or(u32::MAX)) }
    }

    /// The location of byte `offset` in `text` (clamped to the text).
    pub(crate) fn of_offset(text: &str, offset: usize) -> Self {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |n| n + 1);
        let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
        let column = before[line_start..].chars().count() + 1;
        Self { line: u32::try_from(line).unwrap_or(u32::MAX), column: u32::try_from(column).unwrap_or(u32::MAX) }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// A config file that cannot be used: where, and what is wrong.
///
/// Displays as `file:line:column: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{at}: {kind}")]
pub struct ConfigError {
    /// The file name (as given to the parser).
    pub file: String,
    /// Where the offending text starts.
    pub at: Location,
    /// What is wrong.
    pub kind: ErrorKind,
}

/// Sizes in error messages: MiB when whole, bytes in hex otherwise.
fn size_text(bytes: u64) -> String {
    if bytes.is_multiple_of(MIB) { format!("{} MiB", bytes / MIB) } else { format!("{bytes:#x} bytes") }
}

fn list_text<T: fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "none".into();
    }
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

pub(crate) const MIB: u64 = 1 << 20;

/// What is wrong with a config file. `what` fields name the setting, e.g. `memory`,
/// `epc_sections[1]` or `sgx lehash`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The text does not follow the grammar.
    #[error("expected {expected}, found {found}")]
    Syntax {
        /// What the grammar allows here.
        expected: String,
        /// What is there (`end of file`, `end of line`, `'c'`, or a token in backquotes).
        found: String,
    },
    /// A required key is absent.
    #[error("missing required key `{key}`: {hint}")]
    Missing {
        /// The key.
        key: &'static str,
        /// What to write.
        hint: &'static str,
    },
    /// A value of the wrong kind (a list where a number belongs, …).
    #[error("{what}: expected {expected}, found {found}")]
    WrongType {
        /// The setting.
        what: String,
        /// The kind it takes.
        expected: &'static str,
        /// The kind written.
        found: &'static str,
    },
    /// A value that is not one the setting accepts.
    #[error("{what}: expected {expected}, found {found}")]
    InvalidValue {
        /// The setting.
        what: String,
        /// What it accepts.
        expected: String,
        /// What was written (quoted).
        found: String,
    },
    /// A number outside its range.
    #[error("{what} = {value}: must be from {min} to {max}{unit}")]
    OutOfRange {
        /// The setting.
        what: String,
        /// The value written.
        value: u64,
        /// Smallest value accepted.
        min: u64,
        /// Largest value accepted.
        max: u64,
        /// Unit suffix (" MiB" or "").
        unit: &'static str,
    },
    /// `epc_policy` names a policy that does not exist (yet).
    #[error("epc_policy = {value:?}: {reason}; the policies that exist are: {}", list_text(available))]
    UnknownPolicy {
        /// The value written.
        value: String,
        /// Why it is refused.
        reason: &'static str,
        /// The policies this build implements.
        available: Vec<&'static str>,
    },
    /// A NUMA node that has no EPC on this host.
    #[error("{what}: NUMA node {node} has no EPC on this host (nodes with EPC: {})", list_text(host_nodes))]
    UnknownNode {
        /// The setting.
        what: String,
        /// The node written.
        node: u32,
        /// Nodes with EPC on the host.
        host_nodes: Vec<u32>,
    },
    /// An EPC size that is not a whole number of MiB (or is zero).
    #[error("{what}: {} is not a whole, non-zero number of MiB (EPC sections are sized in whole MiB)", size_text(*bytes))]
    NotWholeMib {
        /// The setting.
        what: String,
        /// The size, in bytes.
        bytes: u64,
    },
    /// A section base that is not 4 KiB aligned.
    #[error("{what}: base {base:#x} is not 4 KiB aligned (the next aligned address is {:#x})", base.next_multiple_of(4096))]
    Misaligned {
        /// The setting.
        what: String,
        /// The base written.
        base: u64,
    },
    /// A section that overlaps RAM, the MMIO hole or another section.
    #[error("{what} [{:#x}, {:#x}) overlaps {other} [{:#x}, {:#x})", range.0, range.1, other_range.0, other_range.1)]
    Overlap {
        /// The setting.
        what: String,
        /// Its range `[start, end)`.
        range: (u64, u64),
        /// What it overlaps (`RAM`, `the MMIO hole`, `epc_sections[0]`).
        other: String,
        /// That range `[start, end)`.
        other_range: (u64, u64),
    },
    /// Guest-physical memory that would end beyond the guest physical address width.
    #[error("{what} would end at {end:#x}, beyond the {bits}-bit guest physical address space")]
    AboveAddressWidth {
        /// The setting.
        what: String,
        /// End of the range (exclusive, saturating).
        end: u64,
        /// Guest physical address width.
        bits: u8,
    },
    /// `lehash` that is not 64 hex digits.
    #[error("{what}: expected 64 hex digits (the SHA-256 of the launch enclave signer's modulus), found {found}")]
    BadLehash {
        /// The setting.
        what: String,
        /// What was written, described.
        found: String,
    },
    /// More EPC than the host has in total.
    #[error("{what}: the guest asks for {} of EPC, but this host has {} in total", size_text(*requested), size_text(*host))]
    TooMuchEpc {
        /// The setting.
        what: String,
        /// EPC asked for, in bytes.
        requested: u64,
        /// The host's total EPC, in bytes.
        host: u64,
    },
    /// Two settings that both decide the same thing.
    #[error("`{key}` conflicts with `{other}` at {other_at}: {reason}")]
    Conflict {
        /// The later setting.
        key: String,
        /// The earlier one.
        other: String,
        /// Where the earlier one is.
        other_at: Location,
        /// Why they cannot both be there.
        reason: String,
    },
    /// More EPC sections than a guest may have.
    #[error("{count} EPC sections: a guest may have at most {max} (Linux's limit)")]
    TooManySections {
        /// Sections configured.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// An option given twice inside one option string.
    #[error("{what}: `{option}` is given more than once")]
    DuplicateOption {
        /// The setting.
        what: String,
        /// The option.
        option: String,
    },
    /// The guest asks for something this host does not offer.
    #[error("{what}: {reason}")]
    Unsupported {
        /// The setting.
        what: String,
        /// What the host lacks.
        reason: String,
    },
}

/// A non-fatal remark about a config (for now: a key vsgx does not use). Collected, never printed
/// by the library.
///
/// Displays as `file:line:column: warning: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The file name.
    pub file: String,
    /// Where the key was (last) assigned.
    pub at: Location,
    /// The key.
    pub key: String,
    /// The remark.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: warning: {}", self.file, self.at, self.message)
    }
}

/// A config file that could not be read or used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("{path}: cannot read the config file: {source}")]
    Io {
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid guest config.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_count_lines_and_characters() {
        let text = "ab\n\tcé\nx";
        assert_eq!(Location::of_offset(text, 0), Location::new(1, 1));
        assert_eq!(Location::of_offset(text, 2), Location::new(1, 3));
        assert_eq!(Location::of_offset(text, 3), Location::new(2, 1));
        assert_eq!(Location::of_offset(text, 4), Location::new(2, 2));
        // 'é' is two bytes but one column; an offset inside it is clamped to its start.
        assert_eq!(Location::of_offset(text, 7), Location::new(2, 4));
        assert_eq!(Location::of_offset(text, 6), Location::new(2, 3));
        assert_eq!(Location::of_offset(text, 100), Location::new(3, 2));
    }

    #[test]
    fn errors_and_warnings_name_file_line_and_column() {
        let e = ConfigError {
            file: "g.cfg".into(),
            at: Location::new(3, 9),
            kind: ErrorKind::Syntax { expected: "a value".into(), found: "end of line".into() },
        };
        assert_eq!(e.to_string(), "g.cfg:3:9: expected a value, found end of line");
        let w = Warning { file: "g.cfg".into(), at: Location::new(4, 1), key: "vif".into(), message: "m".into() };
        assert_eq!(w.to_string(), "g.cfg:4:1: warning: m");
    }
}
