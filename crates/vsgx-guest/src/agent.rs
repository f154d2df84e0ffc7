//! The guest agent: executes toolstack requests that arrive through a mailbox in guest RAM
//! (DESIGN §6), and the pure codec the host side uses to write requests and read responses.
//!
//! The host (toolstack or hypervisor) writes a request into a fixed guest-physical region, the
//! guest agent executes it and answers in place, the way hypervisors talk to guest agents. The
//! guest side is [`Agent::serve`]; the host side is [`encode_request`] / [`decode_response`] (pure
//! functions on byte slices, no `Cpu` needed). Both sides share this module, so they cannot
//! disagree about the format.
//!
//! # Mailbox
//!
//! A mailbox is [`MAILBOX_SIZE`] bytes of guest RAM at a guest-physical address agreed at setup
//! (4 KiB aligned is recommended): a header page ([`HEADER_SIZE`] = 4096 bytes) followed by the
//! payload area ([`PAYLOAD_CAPACITY`] = 1 MiB). The region should be reported `reserved` to the
//! guest kernel (not RAM it allocates from); the agent identity-maps any page of it that the
//! kernel's page tables do not map yet (as a driver would `ioremap` a shared region), and refuses a
//! mailbox that overlaps the guest's EPC. All integers are little-endian.
//!
//! Header (the first [`HEADER_LEN`] = 32 bytes of the header page; the rest of the page is
//! reserved, written as zero and ignored):
//!
//! | offset | size | field         | meaning                                                          |
//! |--------|------|---------------|------------------------------------------------------------------|
//! | 0x00   | 8    | `magic`       | `b"VSGXAGNT"` ([`MAGIC`])                                         |
//! | 0x08   | 2    | `version`     | 1 ([`VERSION`])                                                   |
//! | 0x0A   | 2    | `kind`        | request kind ([`Kind`]); a response echoes the request's         |
//! | 0x0C   | 4    | `state`       | 0 empty, 1 request, 2 response ([`STATE_EMPTY`], …)               |
//! | 0x10   | 8    | `sequence`    | chosen by the host, echoed in the response                        |
//! | 0x18   | 4    | `payload_len` | bytes used in the payload area (≤ [`PAYLOAD_CAPACITY`])           |
//! | 0x1C   | 4    | `status`      | 0 in a request (ignored); the response's [`Status`]               |
//!
//! Handshake: the host writes the payload, then the header with `state` = 1 (the state word last:
//! it is what makes the request visible). [`Agent::serve`] does nothing unless `state` is 1 (any
//! other value, including garbage, means "nothing pending"); otherwise it checks the header,
//! decodes and executes the request, writes the response payload, then the response header with
//! `state` = 2 written last. The host reads the header, then `payload_len` payload bytes, and may
//! write the next request. An empty (all-zero) mailbox is idle.
//!
//! # Requests and responses
//!
//! Lengths are counts of bytes; `name` fields are UTF-8 (at most [`MAX_NAME_BYTES`]); a request's
//! fields must fill its payload exactly (no trailing bytes). Enclave ids are the agent's own (they
//! survive the driver rebuilding an enclave), numbered from 1.
//!
//! | kind | request | request payload | response payload (status OK) |
//! |------|---------|-----------------|------------------------------|
//! | 1 | LOAD | `u32 sgxs_len, u32 sig_len, sgxs, sig` | LOADED (below) |
//! | 2 | CALL | `u32 enclave, u32 output_capacity, u16 name_len, name, u32 input_len, input` | `i64 result, u32 aexs, u32 output_len, output` |
//! | 3 | LIST | empty | `u32 count`, then per enclave: `u32 enclave, u8 state (0 ready, 1 lost, 2 gone), [32] mrenclave, [32] mrsigner, u64 epc_pages, u16 ecall_count, {u16 name_len, name}*` |
//! | 4 | DESTROY | `u32 enclave` | `u64 released_pages, u64 free_pages` |
//! | 5 | STATS | empty | `u64 total_epc_pages, u64 free_epc_pages, u32 enclaves, u32 lost_enclaves` |
//! | 6 | UPLOAD | `u64 offset, u32 len, bytes` | `u64 staged_len` |
//! | 7 | LOAD_STAGED | `u32 sig_len, sig` | LOADED (below) |
//!
//! LOADED = `u32 enclave, [32] mrenclave, [32] mrsigner, u16 ecall_count, {u16 name_len, name}*`.
//!
//! An image whose LOAD does not fit in the payload area is sent in pieces: UPLOAD appends to the
//! agent's staging buffer (offset 0 starts a new image, any other offset must equal the bytes
//! staged so far; at most [`MAX_IMAGE_BYTES`] in all), then LOAD_STAGED loads the staged SGXS with
//! the given SIGSTRUCT and empties the buffer. One image is staged at a time (the host serializes
//! its requests to one agent). [`load_requests`] chooses between the two forms.
//! CALL's `output_capacity` is at most [`MAX_CALL_OUTPUT`] (the response must fit). A CALL's
//! `result` is the ECALL's own (≥ 0: output length, < 0: the enclave's error code).
//!
//! LIST's `epc_pages` counts the enclave's resident EPC pages plus its SECS; state 2 ("gone")
//! marks an enclave the driver tore down behind the agent's back (DESTROY forgets it). DESTROY's
//! `released_pages` is what the guest's free EPC grew by.
//!
//! # Errors
//!
//! A request header is checked in this order: magic, version, kind, `payload_len`; then the
//! payload is decoded, then the request executed. The first failure is answered with `status` ≠ 0
//! and a UTF-8 message (at most [`MAX_MESSAGE_BYTES`]) as the payload; the response header still
//! carries the magic, the version, the request's `sequence` and its `kind` as written. Codes
//! ([`Status`]): 1 BAD_MAGIC, 2 BAD_VERSION, 3 BAD_KIND, 4 BAD_LENGTH (`payload_len` beyond the
//! payload area), 5 TRUNCATED (a field runs past the payload), 6 MALFORMED (trailing bytes, an
//! UPLOAD out of sequence, LOAD_STAGED with nothing staged), 7 BAD_UTF8, 8 TOO_LARGE (a name,
//! output capacity or staged image over its limit), 9 NO_SUCH_ENCLAVE, 10 NO_SUCH_ECALL,
//! 11 BAD_IMAGE, 12 NO_EPC, 13 EINIT_REFUSED, 14 ENCLAVE_LOST, 15 ENCLAVE_FAULT, 16 NO_MEMORY,
//! 17 INTERNAL. The guest stays up and serves the next request; a failed request changes nothing,
//! except that a LOAD_STAGED that decoded consumes the staged image whatever its outcome.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use vsgx_isa::cpu::{Cpu, Exception};

use crate::GuestError;
use crate::driver::{Driver, EnclaveState};
use crate::sdk::ManagedEnclave;

/// Magic at offset 0 of the header page.
pub const MAGIC: [u8; 8] = *b"VSGXAGNT";
/// Protocol version.
pub const VERSION: u16 = 1;
/// Size of the header page; the payload area starts this far into the mailbox.
pub const HEADER_SIZE: usize = 4096;
/// Bytes of the header page that carry fields.
pub const HEADER_LEN: usize = 32;
/// Size of the payload area.
pub const PAYLOAD_CAPACITY: usize = 1 << 20;
/// Size of a whole mailbox (header page + payload area).
pub const MAILBOX_SIZE: usize = HEADER_SIZE + PAYLOAD_CAPACITY;
/// Largest SGXS image the agent stages through UPLOAD.
pub const MAX_IMAGE_BYTES: u64 = 64 << 20;
/// Longest ECALL name in a request.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest error message in a response.
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// Largest CALL `output_capacity` (the output must fit in a response).
pub const MAX_CALL_OUTPUT: u32 = (PAYLOAD_CAPACITY - CALL_RESPONSE_FIXED) as u32;
/// Largest UPLOAD chunk (fills the payload area).
pub const UPLOAD_CHUNK: usize = PAYLOAD_CAPACITY - 12;

/// `state`: nothing pending.
pub const STATE_EMPTY: u32 = 0;
/// `state`: the host wrote a request.
pub const STATE_REQUEST: u32 = 1;
/// `state`: the agent wrote a response.
pub const STATE_RESPONSE: u32 = 2;

const CALL_RESPONSE_FIXED: usize = 16;
const LOAD_FIXED: usize = 8;
const OFF_STATE: usize = 0x0C;

/// Request kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Kind {
    /// Load an enclave from SGXS + SIGSTRUCT bytes.
    Load = 1,
    /// Call an ECALL by name.
    Call = 2,
    /// List the agent's enclaves.
    List = 3,
    /// Destroy an enclave.
    Destroy = 4,
    /// EPC statistics.
    Stats = 5,
    /// Append a piece of an SGXS image to the staging buffer.
    Upload = 6,
    /// Load the staged SGXS image with a SIGSTRUCT.
    LoadStaged = 7,
}

impl Kind {
    /// The kind with this code.
    pub const fn from_u16(code: u16) -> Option<Self> {
        Some(match code {
            1 => Self::Load,
            2 => Self::Call,
            3 => Self::List,
            4 => Self::Destroy,
            5 => Self::Stats,
            6 => Self::Upload,
            7 => Self::LoadStaged,
            _ => return None,
        })
    }

    /// The request's name (as in the module docs).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Load => "LOAD",
            Self::Call => "CALL",
            Self::List => "LIST",
            Self::Destroy => "DESTROY",
            Self::Stats => "STATS",
            Self::Upload => "UPLOAD",
            Self::LoadStaged => "LOAD_STAGED",
        }
    }
}

/// A response status code (the header's `status` field). Codes this build does not know are kept
/// as they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Status(pub u32);

impl Status {
    /// Success.
    pub const OK: Self = Self(0);
    /// The header's magic is not [`MAGIC`].
    pub const BAD_MAGIC: Self = Self(1);
    /// The header's version is not [`VERSION`].
    pub const BAD_VERSION: Self = Self(2);
    /// Unknown request kind.
    pub const BAD_KIND: Self = Self(3);
    /// `payload_len` exceeds the payload area.
    pub const BAD_LENGTH: Self = Self(4);
    /// A field runs past the end of the payload.
    pub const TRUNCATED: Self = Self(5);
    /// Trailing bytes, or a field value that makes no sense here (e.g. an UPLOAD offset).
    pub const MALFORMED: Self = Self(6);
    /// A name is not UTF-8.
    pub const BAD_UTF8: Self = Self(7);
    /// A field or the response exceeds its limit.
    pub const TOO_LARGE: Self = Self(8);
    /// No enclave with that id.
    pub const NO_SUCH_ENCLAVE: Self = Self(9);
    /// The enclave has no ECALL with that name.
    pub const NO_SUCH_ECALL: Self = Self(10);
    /// The SGXS, its header page or the SIGSTRUCT is not loadable.
    pub const BAD_IMAGE: Self = Self(11);
    /// Not enough free EPC in the guest.
    pub const NO_EPC: Self = Self(12);
    /// EINIT refused the enclave.
    pub const EINIT_REFUSED: Self = Self(13);
    /// The enclave's EPC is gone (power transition or migration); destroy it and load it again.
    pub const ENCLAVE_LOST: Self = Self(14);
    /// The enclave stopped with an exception.
    pub const ENCLAVE_FAULT: Self = Self(15);
    /// The guest is out of RAM.
    pub const NO_MEMORY: Self = Self(16);
    /// Anything else the guest's SGX stack failed with.
    pub const INTERNAL: Self = Self(17);

    /// The code's name, `None` for codes this build does not know.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "OK",
            1 => "BAD_MAGIC",
            2 => "BAD_VERSION",
            3 => "BAD_KIND",
            4 => "BAD_LENGTH",
            5 => "TRUNCATED",
            6 => "MALFORMED",
            7 => "BAD_UTF8",
            8 => "TOO_LARGE",
            9 => "NO_SUCH_ENCLAVE",
            10 => "NO_SUCH_ECALL",
            11 => "BAD_IMAGE",
            12 => "NO_EPC",
            13 => "EINIT_REFUSED",
            14 => "ENCLAVE_LOST",
            15 => "ENCLAVE_FAULT",
            16 => "NO_MEMORY",
            17 => "INTERNAL",
            _ => return None,
        })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "status {}", self.0),
        }
    }
}

/// Why bytes are not a well-formed request or response.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The header's magic is wrong.
    #[error("bad mailbox magic {0:02x?} (expected \"VSGXAGNT\")")]
    BadMagic([u8; 8]),
    /// Unsupported protocol version.
    #[error("mailbox protocol version {0} is not supported (this agent speaks version 1)")]
    BadVersion(u16),
    /// Unknown request kind.
    #[error("unknown request kind {0} (known: 1 LOAD, 2 CALL, 3 LIST, 4 DESTROY, 5 STATS, 6 UPLOAD, 7 LOAD_STAGED)")]
    UnknownKind(u16),
    /// The header's state is not the one expected.
    #[error("mailbox state is {found}, expected {expected}")]
    WrongState {
        /// State found.
        found: u32,
        /// State expected.
        expected: u32,
    },
    /// `payload_len` exceeds the payload area (or the bytes given).
    #[error("payload length {len} exceeds the {capacity} bytes available")]
    Length {
        /// Declared length.
        len: u64,
        /// Bytes available.
        capacity: u64,
    },
    /// A field runs past the end of the payload.
    #[error("truncated {0}: the payload ends inside it")]
    Truncated(&'static str),
    /// Bytes after the last field.
    #[error("{0} trailing bytes after the last field")]
    Trailing(usize),
    /// A text field is not UTF-8.
    #[error("{0} is not UTF-8")]
    Utf8(&'static str),
    /// A field exceeds its limit.
    #[error("{what} is {len} bytes, at most {max} are allowed")]
    TooLarge {
        /// The field.
        what: &'static str,
        /// Its size.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A field has a value the format does not allow.
    #[error("invalid {0}")]
    Invalid(&'static str),
}

impl CodecError {
    /// The status an agent answers this error with.
    pub fn status(&self) -> Status {
        match self {
            Self::BadMagic(_) => Status::BAD_MAGIC,
            Self::BadVersion(_) => Status::BAD_VERSION,
            Self::UnknownKind(_) => Status::BAD_KIND,
            Self::Length { .. } => Status::BAD_LENGTH,
            Self::Truncated(_) => Status::TRUNCATED,
            Self::Trailing(_) | Self::Invalid(_) | Self::WrongState { .. } => Status::MALFORMED,
            Self::Utf8(_) => Status::BAD_UTF8,
            Self::TooLarge { .. } => Status::TOO_LARGE,
        }
    }
}

/// The mailbox header's fields, as raw values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Magic ([`MAGIC`]).
    pub magic: [u8; 8],
    /// Version ([`VERSION`]).
    pub version: u16,
    /// Request kind code ([`Kind`]).
    pub kind: u16,
    /// [`STATE_EMPTY`], [`STATE_REQUEST`] or [`STATE_RESPONSE`].
    pub state: u32,
    /// Sequence number.
    pub sequence: u64,
    /// Payload bytes.
    pub payload_len: u32,
    /// Response status ([`Status`]).
    pub status: u32,
}

impl Header {
    /// A request header.
    pub fn request(kind: Kind, sequence: u64, payload_len: u32) -> Self {
        Self {
            magic: MAGIC,
            version: VERSION,
            kind: kind as u16,
            state: STATE_REQUEST,
            sequence,
            payload_len,
            status: 0,
        }
    }

    /// Decodes the first [`HEADER_LEN`] bytes (no field is checked).
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new(bytes);
        let header = Self {
            magic: r.array("header")?,
            version: r.u16("header")?,
            kind: r.u16("header")?,
            state: r.u32("header")?,
            sequence: r.u64("header")?,
            payload_len: r.u32("header")?,
            status: r.u32("header")?,
        };
        Ok(header)
    }

    /// The [`HEADER_LEN`] header bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&self.magic);
        b[8..10].copy_from_slice(&self.version.to_le_bytes());
        b[10..12].copy_from_slice(&self.kind.to_le_bytes());
        b[12..16].copy_from_slice(&self.state.to_le_bytes());
        b[16..24].copy_from_slice(&self.sequence.to_le_bytes());
        b[24..28].copy_from_slice(&self.payload_len.to_le_bytes());
        b[28..32].copy_from_slice(&self.status.to_le_bytes());
        b
    }

    /// Checks magic, version, kind and payload length, in that order.
    pub fn check(&self) -> Result<Kind, CodecError> {
        if self.magic != MAGIC {
            return Err(CodecError::BadMagic(self.magic));
        }
        if self.version != VERSION {
            return Err(CodecError::BadVersion(self.version));
        }
        let kind = Kind::from_u16(self.kind).ok_or(CodecError::UnknownKind(self.kind))?;
        if self.payload_len as usize > PAYLOAD_CAPACITY {
            return Err(CodecError::Length { len: self.payload_len.into(), capacity: PAYLOAD_CAPACITY as u64 });
        }
        Ok(kind)
    }
}

/// A request (borrowing its byte and text fields).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// Load an enclave.
    Load {
        /// The SGXS stream.
        sgxs: &'a [u8],
        /// The SIGSTRUCT (1808 bytes).
        sigstruct: &'a [u8],
    },
    /// Call an ECALL.
    Call {
        /// Agent enclave id.
        enclave: u32,
        /// ECALL name.
        ecall: &'a str,
        /// Input bytes.
        input: &'a [u8],
        /// Output buffer size (at most [`MAX_CALL_OUTPUT`]).
        output_capacity: u32,
    },
    /// List the agent's enclaves.
    List,
    /// Destroy an enclave.
    Destroy {
        /// Agent enclave id.
        enclave: u32,
    },
    /// EPC statistics.
    Stats,
    /// Append to the staged image.
    Upload {
        /// Where these bytes go in the image (0 starts a new image).
        offset: u64,
        /// The bytes.
        bytes: &'a [u8],
    },
    /// Load the staged image.
    LoadStaged {
        /// The SIGSTRUCT (1808 bytes).
        sigstruct: &'a [u8],
    },
}

impl Request<'_> {
    /// The request's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Self::Load { .. } => Kind::Load,
            Self::Call { .. } => Kind::Call,
            Self::List => Kind::List,
            Self::Destroy { .. } => Kind::Destroy,
            Self::Stats => Kind::Stats,
            Self::Upload { .. } => Kind::Upload,
            Self::LoadStaged { .. } => Kind::LoadStaged,
        }
    }
}

/// The requests that load an image: one LOAD when it fits in the payload area, otherwise UPLOADs
/// of at most [`UPLOAD_CHUNK`] bytes followed by LOAD_STAGED.
pub fn load_requests<'a>(sgxs: &'a [u8], sigstruct: &'a [u8]) -> Vec<Request<'a>> {
    if LOAD_FIXED + sgxs.len() + sigstruct.len() <= PAYLOAD_CAPACITY {
        return vec![Request::Load { sgxs, sigstruct }];
    }
    let mut out: Vec<Request<'a>> = sgxs
        .chunks(UPLOAD_CHUNK)
        .enumerate()
        .map(|(i, bytes)| Request::Upload { offset: (i * UPLOAD_CHUNK) as u64, bytes })
        .collect();
    out.push(Request::LoadStaged { sigstruct });
    out
}

/// An enclave as LOAD / LOAD_STAGED report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedEnclave {
    /// Agent enclave id.
    pub enclave: u32,
    /// MRENCLAVE.
    pub mrenclave: [u8; 32],
    /// MRSIGNER.
    pub mrsigner: [u8; 32],
    /// ECALL names, in ECALL-number order.
    pub ecalls: Vec<String>,
}

/// What CALL returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallResult {
    /// The ECALL's result (≥ 0: output length; < 0: the enclave's error code).
    pub result: i64,
    /// AEXs taken during the call.
    pub aexs: u32,
    /// Output bytes.
    pub output: Vec<u8>,
}

/// An enclave's condition in a LIST.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ListedState {
    /// Initialized and callable.
    Ready = 0,
    /// Its EPC is gone; destroy it and load it again.
    Lost = 1,
    /// The driver no longer has it (torn down behind the agent's back).
    Gone = 2,
}

/// One enclave in a LIST.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnclaveInfo {
    /// Agent enclave id.
    pub enclave: u32,
    /// Condition.
    pub state: ListedState,
    /// MRENCLAVE.
    pub mrenclave: [u8; 32],
    /// MRSIGNER.
    pub mrsigner: [u8; 32],
    /// EPC pages the enclave holds (SECS included).
    pub epc_pages: u64,
    /// ECALL names.
    pub ecalls: Vec<String>,
}

/// The guest's EPC statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpcStats {
    /// EPC pages of the guest (its vEPC).
    pub total_pages: u64,
    /// Free EPC pages.
    pub free_pages: u64,
    /// Enclaves the guest's driver holds.
    pub enclaves: u32,
    /// Of those, enclaves whose EPC was lost.
    pub lost_enclaves: u32,
}

/// A successful response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// LOAD or LOAD_STAGED.
    Loaded(LoadedEnclave),
    /// CALL.
    Called(CallResult),
    /// LIST.
    Listed(Vec<EnclaveInfo>),
    /// DESTROY.
    Destroyed {
        /// EPC pages returned to the guest's allocator.
        released_pages: u64,
        /// Free EPC pages afterwards.
        free_pages: u64,
    },
    /// STATS.
    Stats(EpcStats),
    /// UPLOAD.
    Uploaded {
        /// Bytes staged so far.
        staged: u64,
    },
}

/// A failed request: status and message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct Failure {
    /// Status code (never [`Status::OK`]).
    pub status: Status,
    /// What was wrong.
    pub message: String,
}

impl Failure {
    /// A failure.
    pub fn new(status: Status, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
}

impl From<CodecError> for Failure {
    fn from(e: CodecError) -> Self {
        Self::new(e.status(), e.to_string())
    }
}

/// A decoded response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The request's sequence number.
    pub sequence: u64,
    /// The request's kind code (echoed, even when unknown).
    pub kind: u16,
    /// The outcome.
    pub outcome: Result<Response, Failure>,
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], CodecError> {
        if n > self.bytes.len() {
            return Err(CodecError::Truncated(field));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], CodecError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, CodecError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, CodecError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    fn i64(&mut self, field: &'static str) -> Result<i64, CodecError> {
        Ok(i64::from_le_bytes(self.array(field)?))
    }

    fn text(&mut self, len: usize, field: &'static str) -> Result<&'a str, CodecError> {
        core::str::from_utf8(self.take(len, field)?).map_err(|_| CodecError::Utf8(field))
    }

    fn names(&mut self) -> Result<Vec<String>, CodecError> {
        let count = self.u16("ECALL count")?;
        let mut names = Vec::new();
        for _ in 0..count {
            let len = self.u16("ECALL name length")?;
            names.push(self.text(len.into(), "ECALL name")?.to_string());
        }
        Ok(names)
    }

    fn finish(self) -> Result<(), CodecError> {
        match self.bytes.len() {
            0 => Ok(()),
            n => Err(CodecError::Trailing(n)),
        }
    }
}

#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    fn names(&mut self, names: &[String]) -> Result<(), CodecError> {
        self.u16(len16("ECALL list", names.len())?);
        for name in names {
            self.u16(len16("ECALL name", name.len())?);
            self.bytes(name.as_bytes());
        }
        Ok(())
    }
}

fn len16(what: &'static str, len: usize) -> Result<u16, CodecError> {
    u16::try_from(len).map_err(|_| CodecError::TooLarge { what, len: len as u64, max: u16::MAX.into() })
}

fn len32(what: &'static str, len: usize) -> Result<u32, CodecError> {
    u32::try_from(len).map_err(|_| CodecError::TooLarge { what, len: len as u64, max: u32::MAX.into() })
}

fn check_name(name_len: usize) -> Result<(), CodecError> {
    if name_len > MAX_NAME_BYTES {
        return Err(CodecError::TooLarge { what: "ECALL name", len: name_len as u64, max: MAX_NAME_BYTES as u64 });
    }
    Ok(())
}

fn check_output(cap: u32) -> Result<(), CodecError> {
    if cap > MAX_CALL_OUTPUT {
        return Err(CodecError::TooLarge { what: "output capacity", len: cap.into(), max: MAX_CALL_OUTPUT.into() });
    }
    Ok(())
}

fn check_upload(offset: u64, len: usize) -> Result<(), CodecError> {
    let end = offset.saturating_add(len as u64);
    if end > MAX_IMAGE_BYTES {
        return Err(CodecError::TooLarge { what: "staged image", len: end, max: MAX_IMAGE_BYTES });
    }
    Ok(())
}

/// The payload of a request (checked against the limits a well-behaved host respects).
pub fn encode_request_payload(request: &Request<'_>) -> Result<Vec<u8>, CodecError> {
    let mut w = Writer::default();
    match *request {
        Request::Load { sgxs, sigstruct } => {
            w.u32(len32("SGXS", sgxs.len())?);
            w.u32(len32("SIGSTRUCT", sigstruct.len())?);
            w.bytes(sgxs);
            w.bytes(sigstruct);
        }
        Request::Call { enclave, ecall, input, output_capacity } => {
            check_name(ecall.len())?;
            check_output(output_capacity)?;
            w.u32(enclave);
            w.u32(output_capacity);
            w.u16(len16("ECALL name", ecall.len())?);
            w.bytes(ecall.as_bytes());
            w.u32(len32("input", input.len())?);
            w.bytes(input);
        }
        Request::List | Request::Stats => {}
        Request::Destroy { enclave } => w.u32(enclave),
        Request::Upload { offset, bytes } => {
            check_upload(offset, bytes.len())?;
            w.u64(offset);
            w.u32(len32("upload", bytes.len())?);
            w.bytes(bytes);
        }
        Request::LoadStaged { sigstruct } => {
            w.u32(len32("SIGSTRUCT", sigstruct.len())?);
            w.bytes(sigstruct);
        }
    }
    if w.0.len() > PAYLOAD_CAPACITY {
        return Err(CodecError::TooLarge {
            what: "request payload",
            len: w.0.len() as u64,
            max: PAYLOAD_CAPACITY as u64,
        });
    }
    Ok(w.0)
}

/// A request as mailbox bytes: the header page (fields + zeroed reserved bytes) followed by the
/// payload, to be written at the mailbox's guest-physical address. Write `[HEADER_SIZE..]` first
/// and the header page last (the state word is what makes the request visible).
pub fn encode_request(sequence: u64, request: &Request<'_>) -> Result<Vec<u8>, CodecError> {
    let payload = encode_request_payload(request)?;
    let header = Header::request(request.kind(), sequence, len32("request payload", payload.len())?);
    Ok(page_and_payload(&header, &payload))
}

fn page_and_payload(header: &Header, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_SIZE + payload.len()];
    out[..HEADER_LEN].copy_from_slice(&header.encode());
    out[HEADER_SIZE..].copy_from_slice(payload);
    out
}

/// Decodes a request payload of a given kind (the guest side; also useful to check encodings).
pub fn decode_request_payload(kind: Kind, payload: &[u8]) -> Result<Request<'_>, CodecError> {
    let mut r = Reader::new(payload);
    let request = match kind {
        Kind::Load => {
            let sgxs_len = r.u32("SGXS length")?;
            let sig_len = r.u32("SIGSTRUCT length")?;
            let sgxs = r.take(sgxs_len as usize, "SGXS")?;
            let sigstruct = r.take(sig_len as usize, "SIGSTRUCT")?;
            Request::Load { sgxs, sigstruct }
        }
        Kind::Call => {
            let enclave = r.u32("enclave id")?;
            let output_capacity = r.u32("output capacity")?;
            check_output(output_capacity)?;
            let name_len = r.u16("ECALL name length")?;
            check_name(name_len.into())?;
            let ecall = r.text(name_len.into(), "ECALL name")?;
            let input_len = r.u32("input length")?;
            let input = r.take(input_len as usize, "input")?;
            Request::Call { enclave, ecall, input, output_capacity }
        }
        Kind::List => Request::List,
        Kind::Destroy => Request::Destroy { enclave: r.u32("enclave id")? },
        Kind::Stats => Request::Stats,
        Kind::Upload => {
            let offset = r.u64("upload offset")?;
            let len = r.u32("upload length")?;
            let bytes = r.take(len as usize, "upload bytes")?;
            check_upload(offset, bytes.len())?;
            Request::Upload { offset, bytes }
        }
        Kind::LoadStaged => {
            let sig_len = r.u32("SIGSTRUCT length")?;
            Request::LoadStaged { sigstruct: r.take(sig_len as usize, "SIGSTRUCT")? }
        }
    };
    r.finish()?;
    Ok(request)
}

/// Decodes a request from mailbox bytes (header page + at least `payload_len` payload bytes):
/// the sequence number and the request.
pub fn decode_request(mailbox: &[u8]) -> Result<(u64, Request<'_>), CodecError> {
    let header = Header::decode(mailbox)?;
    if header.state != STATE_REQUEST {
        return Err(CodecError::WrongState { found: header.state, expected: STATE_REQUEST });
    }
    let kind = header.check()?;
    let payload = payload_of(mailbox, header.payload_len)?;
    Ok((header.sequence, decode_request_payload(kind, payload)?))
}

fn payload_of(mailbox: &[u8], payload_len: u32) -> Result<&[u8], CodecError> {
    let available = mailbox.len().saturating_sub(HEADER_SIZE);
    let len = payload_len as usize;
    mailbox
        .get(HEADER_SIZE..HEADER_SIZE.saturating_add(len))
        .ok_or(CodecError::Length { len: len as u64, capacity: available as u64 })
}

fn encode_response_payload(response: &Response) -> Result<Vec<u8>, CodecError> {
    let mut w = Writer::default();
    match response {
        Response::Loaded(l) => {
            w.u32(l.enclave);
            w.bytes(&l.mrenclave);
            w.bytes(&l.mrsigner);
            w.names(&l.ecalls)?;
        }
        Response::Called(c) => {
            w.i64(c.result);
            w.u32(c.aexs);
            w.u32(len32("output", c.output.len())?);
            w.bytes(&c.output);
        }
        Response::Listed(list) => {
            w.u32(len32("enclave list", list.len())?);
            for e in list {
                w.u32(e.enclave);
                w.u8(e.state as u8);
                w.bytes(&e.mrenclave);
                w.bytes(&e.mrsigner);
                w.u64(e.epc_pages);
                w.names(&e.ecalls)?;
            }
        }
        Response::Destroyed { released_pages, free_pages } => {
            w.u64(*released_pages);
            w.u64(*free_pages);
        }
        Response::Stats(s) => {
            w.u64(s.total_pages);
            w.u64(s.free_pages);
            w.u32(s.enclaves);
            w.u32(s.lost_enclaves);
        }
        Response::Uploaded { staged } => w.u64(*staged),
    }
    if w.0.len() > PAYLOAD_CAPACITY {
        return Err(CodecError::TooLarge { what: "response", len: w.0.len() as u64, max: PAYLOAD_CAPACITY as u64 });
    }
    Ok(w.0)
}

fn truncate_message(message: &str) -> &str {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message;
    }
    let mut end = MAX_MESSAGE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

/// The response header and payload for an outcome. A success whose payload would not fit, or a
/// failure carrying [`Status::OK`], becomes a failure.
fn response_parts(sequence: u64, kind: u16, outcome: &Result<Response, Failure>) -> (Header, Vec<u8>) {
    let encoded = match outcome {
        Ok(response) => encode_response_payload(response).map_err(Failure::from),
        Err(f) if f.status == Status::OK => Err(Failure::new(Status::INTERNAL, f.message.clone())),
        Err(f) => Err(f.clone()),
    };
    let (status, payload) = match encoded {
        Ok(payload) => (Status::OK, payload),
        Err(f) => (f.status, truncate_message(&f.message).as_bytes().to_vec()),
    };
    let header = Header {
        magic: MAGIC,
        version: VERSION,
        kind,
        state: STATE_RESPONSE,
        sequence,
        // At most PAYLOAD_CAPACITY (checked above), so it fits.
        payload_len: payload.len() as u32,
        status: status.0,
    };
    (header, payload)
}

/// A response as mailbox bytes (header page + payload), the way the agent writes it. `kind` is the
/// request's kind code, echoed.
pub fn encode_response(sequence: u64, kind: u16, outcome: &Result<Response, Failure>) -> Vec<u8> {
    let (header, payload) = response_parts(sequence, kind, outcome);
    page_and_payload(&header, &payload)
}

/// Decodes a response from mailbox bytes: the header page followed by at least `payload_len`
/// payload bytes (the host reads the header, then the payload it announces).
pub fn decode_response(mailbox: &[u8]) -> Result<Reply, CodecError> {
    let header = Header::decode(mailbox)?;
    if header.magic != MAGIC {
        return Err(CodecError::BadMagic(header.magic));
    }
    if header.version != VERSION {
        return Err(CodecError::BadVersion(header.version));
    }
    if header.state != STATE_RESPONSE {
        return Err(CodecError::WrongState { found: header.state, expected: STATE_RESPONSE });
    }
    if header.payload_len as usize > PAYLOAD_CAPACITY {
        return Err(CodecError::Length { len: header.payload_len.into(), capacity: PAYLOAD_CAPACITY as u64 });
    }
    let payload = payload_of(mailbox, header.payload_len)?;
    let status = Status(header.status);
    let outcome = if status == Status::OK {
        let kind = Kind::from_u16(header.kind).ok_or(CodecError::UnknownKind(header.kind))?;
        Ok(decode_response_payload(kind, payload)?)
    } else {
        Err(Failure::new(status, String::from_utf8_lossy(payload).into_owned()))
    };
    Ok(Reply { sequence: header.sequence, kind: header.kind, outcome })
}

fn decode_response_payload(kind: Kind, payload: &[u8]) -> Result<Response, CodecError> {
    let mut r = Reader::new(payload);
    let response = match kind {
        Kind::Load | Kind::LoadStaged => Response::Loaded(LoadedEnclave {
            enclave: r.u32("enclave id")?,
            mrenclave: r.array("MRENCLAVE")?,
            mrsigner: r.array("MRSIGNER")?,
            ecalls: r.names()?,
        }),
        Kind::Call => {
            let result = r.i64("result")?;
            let aexs = r.u32("AEX count")?;
            let len = r.u32("output length")?;
            Response::Called(CallResult { result, aexs, output: r.take(len as usize, "output")?.to_vec() })
        }
        Kind::List => {
            let count = r.u32("enclave count")?;
            let mut list = Vec::new();
            for _ in 0..count {
                let enclave = r.u32("enclave id")?;
                let state = match r.u8("enclave state")? {
                    0 => ListedState::Ready,
                    1 => ListedState::Lost,
                    2 => ListedState::Gone,
                    _ => return Err(CodecError::Invalid("enclave state")),
                };
                list.push(EnclaveInfo {
                    enclave,
                    state,
                    mrenclave: r.array("MRENCLAVE")?,
                    mrsigner: r.array("MRSIGNER")?,
                    epc_pages: r.u64("EPC pages")?,
                    ecalls: r.names()?,
                });
            }
            Response::Listed(list)
        }
        Kind::Destroy => {
            Response::Destroyed { released_pages: r.u64("released pages")?, free_pages: r.u64("free pages")? }
        }
        Kind::Stats => Response::Stats(EpcStats {
            total_pages: r.u64("total pages")?,
            free_pages: r.u64("free pages")?,
            enclaves: r.u32("enclave count")?,
            lost_enclaves: r.u32("lost enclave count")?,
        }),
        Kind::Upload => Response::Uploaded { staged: r.u64("staged length")? },
    };
    r.finish()?;
    Ok(response)
}

/// The guest agent: the enclaves it loaded (by agent id) and the staged image.
pub struct Agent<C: Cpu> {
    enclaves: BTreeMap<u32, ManagedEnclave<C>>,
    next_id: u32,
    staged: Vec<u8>,
    /// The mailbox whose pages were checked (and mapped where needed).
    mapped: Option<u64>,
}

impl<C: Cpu> fmt::Debug for Agent<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Agent")
            .field("enclaves", &self.enclaves.keys().collect::<Vec<_>>())
            .field("next_id", &self.next_id)
            .field("staged", &self.staged.len())
            .field("mapped", &self.mapped)
            .finish()
    }
}

impl<C: Cpu> Default for Agent<C> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Cpu> Agent<C> {
    /// An agent with no enclaves.
    pub fn new() -> Self {
        Self { enclaves: BTreeMap::new(), next_id: 1, staged: Vec::new(), mapped: None }
    }

    /// An enclave the agent loaded.
    pub fn enclave(&self, id: u32) -> Option<&ManagedEnclave<C>> {
        self.enclaves.get(&id)
    }

    /// The agent's enclave ids, ascending.
    pub fn enclave_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.enclaves.keys().copied()
    }

    /// Bytes of the image staged by UPLOAD.
    pub fn staged_len(&self) -> usize {
        self.staged.len()
    }

    /// Processes the pending request in the mailbox at `mailbox_gpa`, if any: returns `false` when
    /// the header's state is not "request". A malformed or failing request gets an error response
    /// (`Ok(true)`); `Err` means the mailbox itself is unusable (it does not lie below 2^52, it
    /// overlaps the EPC, or accessing it faults). Unbacked guest-physical memory reads as all ones,
    /// which is never a pending request.
    pub fn serve(&mut self, driver: &mut Driver<C>, mailbox_gpa: u64) -> Result<bool, GuestError> {
        self.ensure_mapped(driver, mailbox_gpa)?;
        let mut raw = [0u8; HEADER_LEN];
        driver.kernel().cpu().read(mailbox_gpa, &mut raw).map_err(GuestError::Fault)?;
        let header = Header::decode(&raw).map_err(|_| GuestError::Fault(Exception::GP0))?;
        if header.state != STATE_REQUEST {
            return Ok(false);
        }
        let outcome = match header.check() {
            Err(e) => Err(Failure::from(e)),
            Ok(kind) => {
                let mut payload = vec![0u8; header.payload_len as usize];
                let at = mailbox_gpa + HEADER_SIZE as u64;
                driver.kernel().cpu().read(at, &mut payload).map_err(GuestError::Fault)?;
                match decode_request_payload(kind, &payload) {
                    Err(e) => Err(Failure::from(e)),
                    Ok(request) => self.execute(driver, request),
                }
            }
        };
        let (mut response, payload) = response_parts(header.sequence, header.kind, &outcome);
        let cpu = driver.kernel().cpu();
        cpu.write(mailbox_gpa + HEADER_SIZE as u64, &payload).map_err(GuestError::Fault)?;
        response.state = STATE_REQUEST;
        cpu.write(mailbox_gpa, &response.encode()).map_err(GuestError::Fault)?;
        cpu.write(mailbox_gpa + OFF_STATE as u64, &STATE_RESPONSE.to_le_bytes()).map_err(GuestError::Fault)?;
        Ok(true)
    }

    /// Checks the mailbox lies in addressable, non-EPC memory and identity-maps any page of it the
    /// kernel's page tables leave unmapped.
    fn ensure_mapped(&mut self, driver: &mut Driver<C>, gpa: u64) -> Result<(), GuestError> {
        if self.mapped == Some(gpa) {
            return Ok(());
        }
        // Physical addresses have at most 52 bits (and the mailbox is identity-mapped).
        let end = gpa.checked_add(MAILBOX_SIZE as u64).filter(|&end| end <= 1 << 52);
        let end = end.ok_or(GuestError::Fault(Exception::GP0))?;
        let kernel = driver.kernel();
        if kernel.sgx().sections.iter().any(|&(base, size)| gpa < base.saturating_add(size) && base < end) {
            return Err(GuestError::Fault(Exception::GP0));
        }
        let mut next = Some(gpa & !0xFFF);
        while let Some(page) = next.filter(|&p| p < end) {
            let mut probe = [0u8; 1];
            match kernel.cpu().read(page, &mut probe) {
                Ok(()) => {}
                Err(Exception::PageFault { .. }) => {
                    kernel.map_page(page, Some(page))?;
                    kernel.cpu().read(page, &mut probe).map_err(GuestError::Fault)?;
                }
                Err(e) => return Err(GuestError::Fault(e)),
            }
            next = page.checked_add(4096);
        }
        self.mapped = Some(gpa);
        Ok(())
    }

    fn execute(&mut self, driver: &mut Driver<C>, request: Request<'_>) -> Result<Response, Failure> {
        match request {
            Request::Load { sgxs, sigstruct } => self.load(driver, sgxs, sigstruct),
            Request::Upload { offset, bytes } => {
                let staged = self.staged.len() as u64;
                if offset != 0 && offset != staged {
                    return Err(Failure::new(
                        Status::MALFORMED,
                        format!(
                            "UPLOAD at offset {offset}, but {staged} bytes are staged (uploads are sequential; offset 0 starts a new image)"
                        ),
                    ));
                }
                if offset == 0 {
                    self.staged.clear();
                }
                self.staged.extend_from_slice(bytes);
                Ok(Response::Uploaded { staged: self.staged.len() as u64 })
            }
            Request::LoadStaged { sigstruct } => {
                let sgxs = core::mem::take(&mut self.staged);
                if sgxs.is_empty() {
                    return Err(Failure::new(Status::MALFORMED, "no image is staged: send UPLOAD requests first"));
                }
                self.load(driver, &sgxs, sigstruct)
            }
            Request::Call { enclave, ecall, input, output_capacity } => {
                let managed = self.enclaves.get_mut(&enclave).ok_or_else(|| no_enclave(enclave))?;
                match managed.call(driver, ecall, input, output_capacity as usize) {
                    Ok(outcome) => Ok(Response::Called(CallResult {
                        result: outcome.result,
                        aexs: outcome.aexs,
                        output: outcome.output,
                    })),
                    Err(GuestError::NoSuchEcall) if !managed.runs_here() => Err(Failure::new(
                        Status::NO_SUCH_ECALL,
                        format!(
                            "enclave {enclave} has no ECALLs: its code is not WebAssembly, so it is initialized but \
                             cannot run on this model"
                        ),
                    )),
                    Err(GuestError::NoSuchEcall) => Err(Failure::new(
                        Status::NO_SUCH_ECALL,
                        format!("enclave {enclave} has no ECALL {ecall:?} (it has: {})", managed.ecalls().join(", ")),
                    )),
                    Err(e) => Err(guest_failure(enclave, &e)),
                }
            }
            Request::List => Ok(Response::Listed(
                self.enclaves
                    .iter()
                    .map(|(&id, managed)| {
                        let ecalls = managed.ecalls().to_vec();
                        match driver.enclave(managed.id()) {
                            Some(e) => EnclaveInfo {
                                enclave: id,
                                state: if e.state == EnclaveState::Lost {
                                    ListedState::Lost
                                } else {
                                    ListedState::Ready
                                },
                                mrenclave: e.mrenclave,
                                mrsigner: e.mrsigner,
                                epc_pages: e.pages.len() as u64 + 1,
                                ecalls,
                            },
                            None => EnclaveInfo {
                                enclave: id,
                                state: ListedState::Gone,
                                mrenclave: [0; 32],
                                mrsigner: [0; 32],
                                epc_pages: 0,
                                ecalls,
                            },
                        }
                    })
                    .collect(),
            )),
            Request::Destroy { enclave } => {
                let managed = self.enclaves.remove(&enclave).ok_or_else(|| no_enclave(enclave))?;
                let before = driver.kernel().free_epc_pages();
                match driver.destroy(managed.id()) {
                    // Torn down behind the agent's back: forgetting it is all that is left.
                    Ok(()) | Err(GuestError::NoSuchEnclave(_)) => {}
                    Err(e) => return Err(guest_failure(enclave, &e)),
                }
                let free_pages = driver.kernel().free_epc_pages();
                Ok(Response::Destroyed { released_pages: free_pages.saturating_sub(before), free_pages })
            }
            Request::Stats => {
                let (enclaves, lost) = driver.enclaves().fold((0u32, 0u32), |(n, lost), (_, e)| {
                    (n.saturating_add(1), lost.saturating_add(u32::from(e.state == EnclaveState::Lost)))
                });
                let kernel = driver.kernel();
                Ok(Response::Stats(EpcStats {
                    total_pages: kernel.total_epc_pages(),
                    free_pages: kernel.free_epc_pages(),
                    enclaves,
                    lost_enclaves: lost,
                }))
            }
        }
    }

    fn load(&mut self, driver: &mut Driver<C>, sgxs: &[u8], sigstruct: &[u8]) -> Result<Response, Failure> {
        let id = self.next_id;
        let next =
            id.checked_add(1).ok_or_else(|| Failure::new(Status::INTERNAL, "the agent ran out of enclave ids"))?;
        let managed = ManagedEnclave::load(driver, sgxs, sigstruct, None).map_err(|e| load_failure(&e))?;
        let Some(e) = driver.enclave(managed.id()) else {
            return Err(Failure::new(Status::INTERNAL, "the driver lost the enclave it just loaded"));
        };
        let loaded = LoadedEnclave {
            enclave: id,
            mrenclave: e.mrenclave,
            mrsigner: e.mrsigner,
            ecalls: managed.ecalls().to_vec(),
        };
        self.enclaves.insert(id, managed);
        self.next_id = next;
        Ok(Response::Loaded(loaded))
    }
}

fn no_enclave(id: u32) -> Failure {
    Failure::new(Status::NO_SUCH_ENCLAVE, format!("no enclave {id} in this guest's agent"))
}

fn status_of(e: &GuestError) -> Status {
    match e {
        // #GP from building the enclave means the SECS or a SECINFO the image and its SIGSTRUCT
        // describe is invalid (size, SSA frame size, ATTRIBUTES, XFRM, page types): a bad image.
        GuestError::Leaf("ECREATE" | "EADD" | "EEXTEND", Exception::GeneralProtection(_)) => Status::BAD_IMAGE,
        GuestError::NoSuchEnclave(_) => Status::NO_SUCH_ENCLAVE,
        GuestError::NoSuchEcall => Status::NO_SUCH_ECALL,
        GuestError::Image(_) | GuestError::Header(_) | GuestError::BadSigstruct | GuestError::NoTcs(_) => {
            Status::BAD_IMAGE
        }
        GuestError::EpcShort { .. } | GuestError::OutOfEpc => Status::NO_EPC,
        GuestError::Einit(_) => Status::EINIT_REFUSED,
        GuestError::EnclaveLost(_) => Status::ENCLAVE_LOST,
        GuestError::EnclaveFault(_) => Status::ENCLAVE_FAULT,
        GuestError::OutOfRam => Status::NO_MEMORY,
        _ => Status::INTERNAL,
    }
}

fn guest_failure(enclave: u32, e: &GuestError) -> Failure {
    let message = match e {
        // The driver's ids are not the agent's: name the agent's.
        GuestError::EnclaveLost(_) => {
            format!("enclave {enclave} was lost (its EPC is gone); destroy it and load it again")
        }
        GuestError::NoSuchEnclave(_) => format!("enclave {enclave} is no longer in the guest's driver"),
        other => format!("enclave {enclave}: {other}"),
    };
    Failure::new(status_of(e), message)
}

fn load_failure(e: &GuestError) -> Failure {
    let hint = match e {
        GuestError::Leaf("ECREATE", Exception::GeneralProtection(_)) => {
            " (the SECS its SGXS and SIGSTRUCT describe is invalid: size, SSA frame size, ATTRIBUTES, XFRM or \
             MISCSELECT)"
        }
        GuestError::Leaf("EADD", Exception::GeneralProtection(_)) => " (a page's SECINFO in the SGXS is invalid)",
        _ => "",
    };
    Failure::new(status_of(e), format!("cannot load the enclave: {e}{hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip_request(request: &Request<'_>) {
        let bytes = encode_request(7, request).unwrap();
        assert_eq!(bytes.len(), HEADER_SIZE + encode_request_payload(request).unwrap().len());
        let (sequence, decoded) = decode_request(&bytes).unwrap();
        assert_eq!((sequence, &decoded), (7, request));
    }

    #[test]
    fn every_request_round_trips() {
        roundtrip_request(&Request::Load { sgxs: b"sgxs bytes", sigstruct: &[3; 1808] });
        roundtrip_request(&Request::Call { enclave: 3, ecall: "hello", input: b"world", output_capacity: 64 });
        roundtrip_request(&Request::List);
        roundtrip_request(&Request::Destroy { enclave: u32::MAX });
        roundtrip_request(&Request::Stats);
        roundtrip_request(&Request::Upload { offset: 4096, bytes: &[9; 100] });
        roundtrip_request(&Request::LoadStaged { sigstruct: &[1; 1808] });
    }

    #[test]
    fn the_header_layout_is_the_documented_one() {
        let bytes = encode_request(0x1122_3344_5566_7788, &Request::Destroy { enclave: 5 }).unwrap();
        assert_eq!(&bytes[0..8], b"VSGXAGNT");
        assert_eq!(&bytes[8..10], &[1, 0]);
        assert_eq!(&bytes[10..12], &[4, 0]);
        assert_eq!(&bytes[12..16], &[1, 0, 0, 0]);
        assert_eq!(&bytes[16..24], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(&bytes[24..28], &[4, 0, 0, 0]);
        assert_eq!(&bytes[28..32], &[0, 0, 0, 0]);
        assert!(bytes[32..HEADER_SIZE].iter().all(|&b| b == 0));
        assert_eq!(&bytes[HEADER_SIZE..], &5u32.to_le_bytes());
    }

    #[test]
    fn every_response_round_trips() {
        let names = vec![String::from("seal"), String::from("unseal")];
        let outcomes = [
            (
                Kind::Load,
                Ok(Response::Loaded(LoadedEnclave {
                    enclave: 1,
                    mrenclave: [1; 32],
                    mrsigner: [2; 32],
                    ecalls: names.clone(),
                })),
            ),
            (Kind::Call, Ok(Response::Called(CallResult { result: -3, aexs: 2, output: b"out".to_vec() }))),
            (
                Kind::List,
                Ok(Response::Listed(vec![
                    EnclaveInfo {
                        enclave: 1,
                        state: ListedState::Ready,
                        mrenclave: [4; 32],
                        mrsigner: [5; 32],
                        epc_pages: 300,
                        ecalls: names.clone(),
                    },
                    EnclaveInfo {
                        enclave: 9,
                        state: ListedState::Gone,
                        mrenclave: [0; 32],
                        mrsigner: [0; 32],
                        epc_pages: 0,
                        ecalls: vec![],
                    },
                ])),
            ),
            (Kind::Destroy, Ok(Response::Destroyed { released_pages: 300, free_pages: 4096 })),
            (
                Kind::Stats,
                Ok(Response::Stats(EpcStats { total_pages: 4096, free_pages: 10, enclaves: 2, lost_enclaves: 1 })),
            ),
            (Kind::Upload, Ok(Response::Uploaded { staged: 1 << 20 })),
            (Kind::Call, Err(Failure::new(Status::NO_SUCH_ECALL, "no ECALL \"x\""))),
        ];
        for (kind, outcome) in outcomes {
            let bytes = encode_response(42, kind as u16, &outcome);
            let reply = decode_response(&bytes).unwrap();
            assert_eq!(reply, Reply { sequence: 42, kind: kind as u16, outcome });
        }
        // An unknown kind is echoed in an error response.
        let bytes = encode_response(1, 999, &Err(Failure::new(Status::BAD_KIND, "unknown")));
        assert_eq!(decode_response(&bytes).unwrap().kind, 999);
    }

    #[test]
    fn malformed_payloads_are_named() {
        let call =
            encode_request_payload(&Request::Call { enclave: 1, ecall: "hi", input: b"abc", output_capacity: 8 })
                .unwrap();
        for cut in 0..call.len() {
            assert!(
                matches!(decode_request_payload(Kind::Call, &call[..cut]), Err(CodecError::Truncated(_))),
                "cut at {cut}"
            );
        }
        let mut long = call.clone();
        long.push(0);
        assert_eq!(decode_request_payload(Kind::Call, &long), Err(CodecError::Trailing(1)));
        let mut bad = call.clone();
        bad[10] = 0xFF;
        assert_eq!(decode_request_payload(Kind::Call, &bad), Err(CodecError::Utf8("ECALL name")));
        assert_eq!(decode_request_payload(Kind::Stats, b"x").map_err(|e| e.status()), Err(Status::MALFORMED));
        let too_big = Request::Call { enclave: 1, ecall: "x", input: b"", output_capacity: MAX_CALL_OUTPUT + 1 };
        assert!(matches!(encode_request_payload(&too_big), Err(CodecError::TooLarge { .. })));
        let huge = vec![0u8; PAYLOAD_CAPACITY];
        assert!(matches!(
            encode_request_payload(&Request::Load { sgxs: &huge, sigstruct: b"" }),
            Err(CodecError::TooLarge { what: "request payload", .. })
        ));
        let mut header = Header::request(Kind::List, 0, 0);
        header.payload_len = PAYLOAD_CAPACITY as u32 + 1;
        assert_eq!(header.check().map_err(|e| e.status()), Err(Status::BAD_LENGTH));
    }

    #[test]
    fn load_requests_split_images_that_do_not_fit() {
        let small = vec![1u8; 1000];
        assert_eq!(load_requests(&small, b"sig"), vec![Request::Load { sgxs: &small, sigstruct: b"sig" }]);
        let big = vec![2u8; 2 * UPLOAD_CHUNK + 5];
        let reqs = load_requests(&big, b"sig");
        assert_eq!(reqs.len(), 4);
        assert_eq!(reqs[2], Request::Upload { offset: 2 * UPLOAD_CHUNK as u64, bytes: &big[2 * UPLOAD_CHUNK..] });
        assert_eq!(reqs[3], Request::LoadStaged { sigstruct: b"sig" });
        for r in &reqs {
            assert!(encode_request_payload(r).unwrap().len() <= PAYLOAD_CAPACITY);
        }
    }

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let message = "é".repeat(MAX_MESSAGE_BYTES);
        let bytes = encode_response(0, 2, &Err(Failure::new(Status::INTERNAL, message)));
        let Err(f) = decode_response(&bytes).unwrap().outcome else { panic!("not a failure") };
        assert_eq!(f.message.len(), MAX_MESSAGE_BYTES);
        assert!(f.message.chars().all(|c| c == 'é'));
    }

    #[test]
    fn truncated_or_foreign_responses_are_refused() {
        let bytes = encode_response(3, Kind::Stats as u16, &Ok(Response::Uploaded { staged: 1 }));
        // The payload is a STATS-kind header over an UPLOAD payload: too short.
        assert!(matches!(decode_response(&bytes), Err(CodecError::Truncated(_))));
        let ok = encode_response(3, Kind::Upload as u16, &Ok(Response::Uploaded { staged: 1 }));
        assert!(matches!(decode_response(&ok[..HEADER_SIZE + 4]), Err(CodecError::Length { .. })));
        assert!(matches!(decode_response(&ok[..10]), Err(CodecError::Truncated("header"))));
        // Only the header fields, not the whole header page: the payload area is missing.
        let empty = encode_response(3, Kind::Destroy as u16, &Err(Failure::new(Status::INTERNAL, "")));
        assert!(matches!(decode_response(&empty[..HEADER_LEN]), Err(CodecError::Length { len: 0, capacity: 0 })));
        let request = encode_request(3, &Request::Stats).unwrap();
        assert!(matches!(decode_response(&request), Err(CodecError::WrongState { found: 1, expected: 2 })));
    }

    proptest! {
        #[test]
        fn arbitrary_payloads_never_panic_the_decoders(kind in 0u16..10, payload in prop::collection::vec(any::<u8>(), 0..200)) {
            if let Some(kind) = Kind::from_u16(kind)
                && let Ok(request) = decode_request_payload(kind, &payload)
            {
                // Whatever decodes re-encodes to the same bytes.
                prop_assert_eq!(encode_request_payload(&request).unwrap(), payload.clone());
            }
            let mut mailbox = vec![0u8; HEADER_SIZE];
            mailbox[..HEADER_LEN].copy_from_slice(&Header {
                magic: MAGIC, version: VERSION, kind, state: STATE_RESPONSE, sequence: 0,
                payload_len: payload.len() as u32, status: 0,
            }.encode());
            mailbox.extend_from_slice(&payload);
            let _ = decode_response(&mailbox);
        }

        #[test]
        fn calls_round_trip(enclave: u32, name in "[a-z_]{0,40}", input in prop::collection::vec(any::<u8>(), 0..300), cap in 0..=MAX_CALL_OUTPUT) {
            roundtrip_request(&Request::Call { enclave, ecall: &name, input: &input, output_capacity: cap });
        }
    }
}
