//! Save and restore of a domain's state without EPC contents (DESIGN §5.2, §5.5): the domain spec
//! (which is also its memory map), every vCPU's architectural and MSR state, and the guest RAM
//! pages in use, as a versioned, self-describing, checksummed byte stream.
//!
//! EPC contents are never carried. [`restore`] creates the domain afresh with [`Domain::create`]:
//! a static vEPC of the same layout, every page backed and invalid, so the guest observes a sudden
//! EPC loss exactly as after a migration (SGX.md §10.2) and recovers by rebuilding its enclaves.
//!
//! # Format, version 1
//!
//! All integers are little-endian; offsets below are from the start of the stream.
//!
//! ```text
//! 0    magic        8 bytes   "VSGXDOM\0"
//! 8    version      u32       1
//! 12   sections     each: tag [u8; 4] (ASCII), length u64, content [length]
//!                   SPEC, VCPU and RAM exactly once each, in any order, then END (length 0)
//! ..   checksum     32 bytes  SHA-256 of every byte before it; nothing may follow
//! ```
//!
//! `SPEC` — the [`DomainSpec`]:
//!
//! ```text
//! name          u32 length + that many bytes of UTF-8
//! uuid          16 bytes
//! vcpus         u32 (≥ 1)
//! ram           u32 count + count × (gpa u64, size u64)
//! vepc          u32 count + count × (gpa u64, size u64, node u32)
//! features      sgx2 u8, kss u8, aexnotify u8, exinfo u8       0 = as the host, 1 = off, 2 = on
//!               xfrm_mask: present u8 (0/1) + mask u64           mask 0 when absent
//! launch        lehash 32 bytes, writable u8 (0/1)
//! provision     u8 (0/1)
//! ```
//!
//! RAM regions and vEPC sections are page aligned, non-empty and end below 2^52; RAM regions are
//! disjoint and total at most [`MAX_RAM`].
//!
//! `VCPU` — one record per vCPU, as many as `vcpus`, in index order ([`VcpuState`]):
//!
//! ```text
//! count         u32
//! record        index u32, cr3 u64, paging u8 (0/1), cpl u8 (0..=3),
//!               IA32_FEATURE_CONTROL u64, IA32_SGXLEPUBKEYHASH0..3 4 × u64        (54 bytes)
//! ```
//!
//! `RAM` — the guest RAM pages ever written ([`GuestRam::dirty_pages`](crate::guest_ram::GuestRam::dirty_pages)):
//!
//! ```text
//! count         u64
//! page          gpa u64 (page aligned, strictly increasing, inside a RAM region), 4096 bytes
//! ```
//!
//! On restore, the destination must be able to host the domain as saved: its vEPC fits in the
//! platform's EPC (static policy), the SGX features it asks for exist, and the locked
//! IA32_FEATURE_CONTROL the guest saw is the one this platform's policy gives it.
//!
//! Decoding never panics and never allocates in proportion to a length it has not checked against
//! the bytes actually present. Every error names what was wrong and at which byte offset. Nothing
//! is allocated from the EPC manager unless the whole stream is valid.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::domain::{Domain, DomainError, DomainSpec};
use crate::epc::{DomainId, EpcManager};
use crate::policy::{CpuidPolicy, LaunchControl, SgxFeatures, VepcSection};
use crate::vcpu::{Vcpu, VcpuState};

/// The stream's first 8 bytes.
pub const MAGIC: [u8; 8] = *b"VSGXDOM\0";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;
/// Section tag of the domain spec.
pub const TAG_SPEC: [u8; 4] = *b"SPEC";
/// Section tag of the vCPU states.
pub const TAG_VCPU: [u8; 4] = *b"VCPU";
/// Section tag of the guest RAM pages.
pub const TAG_RAM: [u8; 4] = *b"RAM\0";
/// Section tag closing the section list.
pub const TAG_END: [u8; 4] = *b"END\0";
/// Bytes of the trailing SHA-256.
pub const CHECKSUM_LEN: usize = 32;

const PAGE: u64 = 4096;
/// Tag and length in front of each section's content.
const SECTION_HEADER_LEN: usize = 4 + 8;
const VCPU_RECORD_LEN: usize = 4 + 8 + 1 + 1 + 8 + 32;
const RAM_RECORD_LEN: usize = 8 + PAGE as usize;
/// Guest-physical addresses end below 2^52 (the architectural MAXPHYADDR limit).
const MAX_GPA: u64 = 1 << 52;
/// The largest guest RAM a stream may describe (a decoding limit: guest RAM is sparse, but its
/// dirty bitmap is allocated up front).
pub const MAX_RAM: u64 = 1 << 40;

/// Why a stream could not be restored. Offsets are byte offsets from the start of the stream.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The stream does not start with `"VSGXDOM\0"`.
    #[error("not a vsgx domain snapshot: bad magic {} at byte 0 (expected \"VSGXDOM\\0\")", found.escape_ascii())]
    BadMagic {
        /// The first bytes found (at most 8).
        found: Vec<u8>,
    },
    /// A format version this build cannot read.
    #[error("unsupported version {found} at byte 8 (this build reads version {VERSION})")]
    UnsupportedVersion {
        /// The version in the stream.
        found: u32,
    },
    /// The stream, or a section, ends inside a field.
    #[error("truncated at byte {offset}: {field} needs {needed} bytes, only {available} remain")]
    Truncated {
        /// Where the field starts.
        offset: usize,
        /// The field.
        field: String,
        /// Bytes it needs.
        needed: u64,
        /// Bytes left (in the stream or, inside a section, in the section).
        available: usize,
    },
    /// The trailing SHA-256 does not match the bytes before it.
    #[error("checksum mismatch: the SHA-256 at byte {offset} is {stored}, bytes 0..{offset} hash to {computed}")]
    ChecksumMismatch {
        /// Where the checksum starts (= the number of bytes it covers).
        offset: usize,
        /// The checksum in the stream (hex).
        stored: String,
        /// The checksum of the stream (hex).
        computed: String,
    },
    /// A section tag this version does not know.
    #[error("unknown section tag \"{}\" at byte {offset}", tag.escape_ascii())]
    UnknownSection {
        /// Where the tag is.
        offset: usize,
        /// The tag.
        tag: [u8; 4],
    },
    /// A required section is absent.
    #[error("section \"{}\" is missing", tag_name(*tag))]
    MissingSection {
        /// Its tag.
        tag: [u8; 4],
    },
    /// A field holds a value that is not allowed.
    #[error("invalid {field} at byte {offset}: {reason}")]
    Invalid {
        /// Where the field starts.
        offset: usize,
        /// The field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The stream is valid but this platform cannot host the domain as saved.
    #[error("incompatible with this platform: {0}")]
    Incompatible(String),
    /// The restored domain could not be created (e.g. EPC is short); nothing was leaked.
    #[error("the restored domain cannot be created: {0}")]
    Domain(#[from] DomainError),
}

// ---------------------------------------------------------------------------------------------
// Encoding

#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn bytes(&mut self, v: &[u8]) {
        self.0.extend_from_slice(v);
    }

    /// A u32 count; vectors longer than u32::MAX cannot exist in a domain spec.
    fn count(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }

    fn section(&mut self, tag: [u8; 4], content: &[u8]) {
        self.bytes(&tag);
        self.u64(content.len() as u64);
        self.bytes(content);
    }
}

fn opt_bool(v: Option<bool>) -> u8 {
    match v {
        None => 0,
        Some(false) => 1,
        Some(true) => 2,
    }
}

fn encode_spec(spec: &DomainSpec) -> Vec<u8> {
    let mut w = Writer::default();
    w.count(spec.name.len());
    w.bytes(spec.name.as_bytes());
    w.bytes(&spec.uuid);
    w.u32(spec.vcpus);
    w.count(spec.ram.len());
    for &(gpa, size) in &spec.ram {
        w.u64(gpa);
        w.u64(size);
    }
    w.count(spec.epc.len());
    for s in &spec.epc {
        w.u64(s.gpa);
        w.u64(s.size);
        w.u32(s.node);
    }
    let f = &spec.features;
    for v in [f.sgx2, f.kss, f.aexnotify, f.exinfo] {
        w.u8(opt_bool(v));
    }
    w.u8(u8::from(f.xfrm_mask.is_some()));
    w.u64(f.xfrm_mask.unwrap_or(0));
    w.bytes(&spec.launch.lehash);
    w.u8(u8::from(spec.launch.writable));
    w.u8(u8::from(spec.provision));
    w.0
}

fn encode_vcpu(w: &mut Writer, index: u32, s: &VcpuState) {
    w.u32(index);
    w.u64(s.cr3);
    w.u8(u8::from(s.paging));
    w.u8(s.cpl);
    w.u64(s.feature_control);
    for h in s.lehash {
        w.u64(h);
    }
}

/// Saves `domain`'s state except EPC contents (see the [module documentation](self) for the
/// format). The domain's vCPUs must be paused.
///
/// `vcpus` are the domain's running vCPUs, in any order; a vCPU index of the domain with none in
/// `vcpus` is saved in its reset state (it never ran). vCPUs of other domains are a caller bug:
/// they are ignored (and assert in debug builds); if an index appears twice, the first wins.
pub fn save(domain: &Domain, vcpus: &[&Vcpu]) -> Vec<u8> {
    let spec = domain.spec();
    let shared = domain.shared();
    debug_assert!(
        vcpus.iter().all(|v| Arc::ptr_eq(v.domain(), shared)),
        "snapshot::save was given a vCPU of another domain"
    );

    let mut vcpu_section = Writer::default();
    vcpu_section.u32(spec.vcpus);
    for index in 0..spec.vcpus {
        let state = vcpus
            .iter()
            .find(|v| v.index() == index && Arc::ptr_eq(v.domain(), shared))
            .map(|v| v.state())
            .unwrap_or_else(|| Vcpu::new(Arc::clone(shared), index).state());
        encode_vcpu(&mut vcpu_section, index, &state);
    }

    let dirty = shared.ram.dirty_pages();
    let mut ram_section = Writer(Vec::with_capacity(8 + dirty.len() * RAM_RECORD_LEN));
    ram_section.u64(0);
    let mut count = 0u64;
    let mut page = [0u8; PAGE as usize];
    for gpa in dirty {
        // Dirty pages are RAM by construction; a page that cannot be read is not carried.
        if shared.ram.read(gpa, &mut page).is_ok() {
            ram_section.u64(gpa);
            ram_section.bytes(&page);
            count += 1;
        }
    }
    ram_section.0[..8].copy_from_slice(&count.to_le_bytes());

    let mut w = Writer(Vec::with_capacity(ram_section.0.len() + 1024));
    w.bytes(&MAGIC);
    w.u32(VERSION);
    w.section(TAG_SPEC, &encode_spec(spec));
    w.section(TAG_VCPU, &vcpu_section.0);
    w.section(TAG_RAM, &ram_section.0);
    w.section(TAG_END, &[]);
    let digest: [u8; 32] = Sha256::digest(&w.0).into();
    w.bytes(&digest);
    w.0
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// A cursor over `buf[pos..end]` reporting absolute offsets.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], pos: usize, end: usize) -> Self {
        Self { buf, pos, end }
    }

    fn remaining(&self) -> usize {
        self.end - self.pos
    }

    fn take(&mut self, n: u64, field: &dyn fmt::Display) -> Result<&'a [u8], SnapshotError> {
        let available = self.remaining();
        let len = usize::try_from(n).ok().filter(|&len| len <= available).ok_or_else(|| SnapshotError::Truncated {
            offset: self.pos,
            field: field.to_string(),
            needed: n,
            available,
        })?;
        let bytes = self.buf.get(self.pos..self.pos + len).ok_or_else(|| SnapshotError::Truncated {
            offset: self.pos,
            field: field.to_string(),
            needed: n,
            available,
        })?;
        self.pos += len;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, field: &dyn fmt::Display) -> Result<[u8; N], SnapshotError> {
        let at = self.pos;
        let b = self.take(N as u64, field)?;
        b.try_into().map_err(|_| invalid(at, field, "internal length error"))
    }

    fn u8(&mut self, field: &dyn fmt::Display) -> Result<u8, SnapshotError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn u32(&mut self, field: &dyn fmt::Display) -> Result<u32, SnapshotError> {
        self.array(field).map(u32::from_le_bytes)
    }

    fn u64(&mut self, field: &dyn fmt::Display) -> Result<u64, SnapshotError> {
        self.array(field).map(u64::from_le_bytes)
    }

    fn bool(&mut self, field: &dyn fmt::Display) -> Result<bool, SnapshotError> {
        let at = self.pos;
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(invalid(at, field, format!("{v} is not a boolean (0 or 1)"))),
        }
    }

    fn opt_bool(&mut self, field: &dyn fmt::Display) -> Result<Option<bool>, SnapshotError> {
        let at = self.pos;
        match self.u8(field)? {
            0 => Ok(None),
            1 => Ok(Some(false)),
            2 => Ok(Some(true)),
            v => Err(invalid(at, field, format!("{v} is not 0 (as the host), 1 (off) or 2 (on)"))),
        }
    }

    /// A count of records of `record_len` bytes each, checked against the bytes left.
    fn count(
        &mut self,
        n: u64,
        record_len: usize,
        at: usize,
        field: &dyn fmt::Display,
    ) -> Result<usize, SnapshotError> {
        let needed = n.saturating_mul(record_len as u64);
        let available = self.remaining();
        if needed > available as u64 {
            return Err(SnapshotError::Truncated { offset: at, field: field.to_string(), needed, available });
        }
        usize::try_from(n).map_err(|_| invalid(at, field, "too large"))
    }

    /// The section must be consumed exactly.
    fn finish(&self, section: &str) -> Result<(), SnapshotError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(invalid(self.pos, &format_args!("section {section}"), format!("{n} unexpected bytes at its end"))),
        }
    }
}

fn invalid(offset: usize, field: &dyn fmt::Display, reason: impl Into<String>) -> SnapshotError {
    SnapshotError::Invalid { offset, field: field.to_string(), reason: reason.into() }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn tag_name(tag: [u8; 4]) -> String {
    tag.escape_ascii().to_string().trim_end_matches("\\x00").to_string()
}

/// A section's content and where it starts.
#[derive(Clone, Copy)]
struct Section {
    start: usize,
    end: usize,
}

/// Checks the header, the section framing and the checksum; returns the sections by tag.
fn frame(bytes: &[u8]) -> Result<HashMap<[u8; 4], Section>, SnapshotError> {
    let head = &bytes[..bytes.len().min(MAGIC.len())];
    if *head != MAGIC[..head.len()] {
        return Err(SnapshotError::BadMagic { found: head.to_vec() });
    }
    let mut r = Reader::new(bytes, 0, bytes.len());
    r.take(MAGIC.len() as u64, &"magic")?;
    let version = r.u32(&"format version")?;
    if version != VERSION {
        return Err(SnapshotError::UnsupportedVersion { found: version });
    }
    let mut sections = HashMap::new();
    loop {
        let tag_at = r.pos;
        let tag: [u8; 4] = r.array(&"section tag")?;
        if ![TAG_SPEC, TAG_VCPU, TAG_RAM, TAG_END].contains(&tag) {
            return Err(SnapshotError::UnknownSection { offset: tag_at, tag });
        }
        let name = tag_name(tag);
        let len_at = r.pos;
        let len = r.u64(&format_args!("section {name} length"))?;
        let start = r.pos;
        r.take(len, &format_args!("section {name} content ({len} bytes)"))?;
        if tag == TAG_END {
            if len != 0 {
                return Err(invalid(len_at, &"section END length", format!("{len}, must be 0")));
            }
            break;
        }
        if let Some(first) = sections.insert(tag, Section { start, end: r.pos }) {
            return Err(invalid(
                tag_at,
                &format_args!("section {name}"),
                format!("appears twice (first at byte {})", first.start - SECTION_HEADER_LEN),
            ));
        }
    }
    let covered = r.pos;
    let stored = r.take(CHECKSUM_LEN as u64, &"SHA-256 checksum")?;
    if r.remaining() != 0 {
        return Err(invalid(r.pos, &"end of stream", format!("{} bytes after the checksum", r.remaining())));
    }
    let computed = Sha256::digest(&bytes[..covered]);
    if computed.as_slice() != stored {
        return Err(SnapshotError::ChecksumMismatch { offset: covered, stored: hex(stored), computed: hex(&computed) });
    }
    for tag in [TAG_SPEC, TAG_VCPU, TAG_RAM] {
        if !sections.contains_key(&tag) {
            return Err(SnapshotError::MissingSection { tag });
        }
    }
    Ok(sections)
}

/// A page-aligned, non-empty range below [`MAX_GPA`].
fn check_range(at: usize, field: &dyn fmt::Display, gpa: u64, size: u64) -> Result<(), SnapshotError> {
    if !gpa.is_multiple_of(PAGE) || size == 0 || !size.is_multiple_of(PAGE) {
        return Err(invalid(at, field, format!("[{gpa:#x}, +{size:#x}) is not page aligned or is empty")));
    }
    if gpa.checked_add(size).is_none_or(|end| end > MAX_GPA) {
        return Err(invalid(
            at,
            field,
            format!("[{gpa:#x}, +{size:#x}) ends beyond the 52-bit physical address space"),
        ));
    }
    Ok(())
}

fn decode_spec(r: &mut Reader<'_>) -> Result<DomainSpec, SnapshotError> {
    let name_at = r.pos;
    let name_len = r.u32(&"SPEC name length")?;
    let name = r.take(u64::from(name_len), &"SPEC name")?;
    let name = std::str::from_utf8(name)
        .map_err(|e| invalid(name_at + 4, &"SPEC name", format!("not UTF-8 ({e})")))?
        .to_string();
    let uuid = r.array(&"SPEC uuid")?;
    let vcpus_at = r.pos;
    let vcpus = r.u32(&"SPEC vcpus")?;
    if vcpus == 0 {
        return Err(invalid(vcpus_at, &"SPEC vcpus", "a domain needs at least one vCPU"));
    }

    let at = r.pos;
    let n = r.u32(&"SPEC RAM region count")?;
    let n = r.count(u64::from(n), 16, at, &format_args!("SPEC {n} RAM regions"))?;
    let mut ram = Vec::with_capacity(n);
    let mut offsets = Vec::with_capacity(n);
    let mut total = 0u64;
    for i in 0..n {
        let at = r.pos;
        let field = format!("SPEC RAM region {i}");
        let gpa = r.u64(&field)?;
        let size = r.u64(&field)?;
        check_range(at, &field, gpa, size)?;
        total = total.saturating_add(size);
        if total > MAX_RAM {
            return Err(invalid(at, &field, format!("guest RAM would exceed {MAX_RAM:#x} bytes")));
        }
        ram.push((gpa, size));
        offsets.push(at);
    }
    let mut by_gpa: Vec<usize> = (0..n).collect();
    by_gpa.sort_by_key(|&i| ram[i]);
    for w in by_gpa.windows(2) {
        let ((a, a_size), (b, b_size)) = (ram[w[0]], ram[w[1]]);
        if b < a + a_size {
            let (i, j) = (w[0].max(w[1]), w[0].min(w[1]));
            let (gpa, size) = if i == w[1] { (b, b_size) } else { (a, a_size) };
            return Err(invalid(
                offsets[i],
                &format_args!("SPEC RAM region {i}"),
                format!("[{gpa:#x}, +{size:#x}) overlaps RAM region {j}"),
            ));
        }
    }

    let at = r.pos;
    let n = r.u32(&"SPEC vEPC section count")?;
    let n = r.count(u64::from(n), 20, at, &format_args!("SPEC {n} vEPC sections"))?;
    let mut epc = Vec::with_capacity(n);
    for i in 0..n {
        let at = r.pos;
        let field = format!("SPEC vEPC section {i}");
        let gpa = r.u64(&field)?;
        let size = r.u64(&field)?;
        let node = r.u32(&field)?;
        check_range(at, &field, gpa, size)?;
        epc.push(VepcSection { gpa, size, node });
    }

    let sgx2 = r.opt_bool(&"SPEC feature sgx2")?;
    let kss = r.opt_bool(&"SPEC feature kss")?;
    let aexnotify = r.opt_bool(&"SPEC feature aexnotify")?;
    let exinfo = r.opt_bool(&"SPEC feature exinfo")?;
    let has_xfrm = r.bool(&"SPEC xfrm mask presence")?;
    let xfrm_at = r.pos;
    let xfrm = r.u64(&"SPEC xfrm mask")?;
    if !has_xfrm && xfrm != 0 {
        return Err(invalid(xfrm_at, &"SPEC xfrm mask", format!("{xfrm:#x} although absent (must be 0)")));
    }
    let features = SgxFeatures { sgx2, kss, aexnotify, exinfo, xfrm_mask: has_xfrm.then_some(xfrm) };
    let lehash = r.array(&"SPEC launch-control lehash")?;
    let writable = r.bool(&"SPEC launch-control writable")?;
    let provision = r.bool(&"SPEC provision")?;
    r.finish("SPEC")?;
    Ok(DomainSpec { name, uuid, vcpus, ram, epc, features, launch: LaunchControl { lehash, writable }, provision })
}

/// vCPU states with the offset of each record.
fn decode_vcpus(r: &mut Reader<'_>, spec: &DomainSpec) -> Result<Vec<(usize, VcpuState)>, SnapshotError> {
    let at = r.pos;
    let n = r.u32(&"VCPU count")?;
    if n != spec.vcpus {
        return Err(invalid(at, &"VCPU count", format!("{n} vCPU records, the domain spec has {} vCPUs", spec.vcpus)));
    }
    let n = r.count(u64::from(n), VCPU_RECORD_LEN, at, &format_args!("VCPU {n} records"))?;
    let mut states = Vec::with_capacity(n);
    for i in 0..n {
        let rec = r.pos;
        let index = r.u32(&format_args!("vCPU {i} index"))?;
        if index as usize != i {
            return Err(invalid(
                rec,
                &format_args!("vCPU {i} index"),
                format!("{index}, records must be in index order"),
            ));
        }
        let cr3 = r.u64(&format_args!("vCPU {i} CR3"))?;
        let paging = r.bool(&format_args!("vCPU {i} paging"))?;
        let cpl_at = r.pos;
        let cpl = r.u8(&format_args!("vCPU {i} CPL"))?;
        if cpl > 3 {
            return Err(invalid(cpl_at, &format_args!("vCPU {i} CPL"), format!("{cpl}, must be 0..=3")));
        }
        let feature_control = r.u64(&format_args!("vCPU {i} IA32_FEATURE_CONTROL"))?;
        let mut lehash = [0u64; 4];
        for (k, h) in lehash.iter_mut().enumerate() {
            *h = r.u64(&format_args!("vCPU {i} IA32_SGXLEPUBKEYHASH{k}"))?;
        }
        states.push((rec, VcpuState { cr3, paging, cpl, feature_control, lehash }));
    }
    r.finish("VCPU")?;
    Ok(states)
}

/// RAM pages `(gpa, contents)`, checked to lie in the spec's RAM.
fn decode_ram<'a>(r: &mut Reader<'a>, spec: &DomainSpec) -> Result<Vec<(u64, &'a [u8])>, SnapshotError> {
    let at = r.pos;
    let n = r.u64(&"RAM page count")?;
    let n = r.count(n, RAM_RECORD_LEN, at, &format_args!("RAM {n} pages"))?;
    let mut pages = Vec::with_capacity(n);
    let mut previous: Option<u64> = None;
    for i in 0..n {
        let rec = r.pos;
        let field = format!("RAM page {i} GPA");
        let gpa = r.u64(&field)?;
        if !gpa.is_multiple_of(PAGE) {
            return Err(invalid(rec, &field, format!("{gpa:#x} is not page aligned")));
        }
        if previous.is_some_and(|p| gpa <= p) {
            return Err(invalid(rec, &field, format!("{gpa:#x}: pages must be in strictly increasing order")));
        }
        if !spec.ram.iter().any(|&(b, s)| gpa >= b && gpa - b < s) {
            return Err(invalid(rec, &field, format!("page {gpa:#x} is outside RAM")));
        }
        previous = Some(gpa);
        let data = r.take(PAGE, &format_args!("RAM page {i} contents"))?;
        pages.push((gpa, data));
    }
    r.finish("RAM")?;
    Ok(pages)
}

/// Restores a domain saved by [`save`] as domain `id` on `epc`'s platform (which need not be the
/// one it was saved on). The domain gets a fresh static vEPC of the saved layout — empty, as
/// after EPC loss — its RAM pages and vCPUs (index order) continue where they were saved.
///
/// The whole stream is validated before anything is created; on any error nothing is left
/// allocated.
pub fn restore(bytes: &[u8], id: DomainId, epc: Arc<EpcManager>) -> Result<(Domain, Vec<Vcpu>), SnapshotError> {
    let sections = frame(bytes)?;
    let reader = |tag: [u8; 4]| {
        sections.get(&tag).map(|s| Reader::new(bytes, s.start, s.end)).ok_or(SnapshotError::MissingSection { tag })
    };
    let spec = decode_spec(&mut reader(TAG_SPEC)?)?;
    let states = decode_vcpus(&mut reader(TAG_VCPU)?, &spec)?;
    let pages = decode_ram(&mut reader(TAG_RAM)?, &spec)?;

    // Static policy: every vEPC page is backed now, so a vEPC larger than all of EPC can never be
    // created (checked here so that no p2m is allocated for it).
    let vepc_pages = spec.epc.iter().fold(0u64, |n, s| n.saturating_add(s.size / PAGE));
    if vepc_pages > epc.total_pages() {
        return Err(SnapshotError::Incompatible(format!(
            "the domain's vEPC has {vepc_pages} pages, this platform's EPC only {}",
            epc.total_pages()
        )));
    }
    // FEATURE_CONTROL is locked by the guest's firmware: the destination must give the same value.
    let policy = CpuidPolicy::derive(epc.platform().capabilities(), &spec.features, spec.epc.clone())
        .map_err(DomainError::from)?;
    let feature_control = policy.feature_control(&spec.launch);
    for (i, (at, state)) in states.iter().enumerate() {
        if state.feature_control != feature_control {
            return Err(SnapshotError::Incompatible(format!(
                "vCPU {i} IA32_FEATURE_CONTROL (byte {}) was {:#x}, this platform gives the domain {feature_control:#x}",
                at + 14,
                state.feature_control
            )));
        }
    }

    let domain = Domain::create(id, spec, epc)?;
    for (gpa, data) in pages {
        domain.shared().ram.write(gpa, data).map_err(|e| SnapshotError::Incompatible(e.to_string()))?;
    }
    let mut vcpus = Vec::with_capacity(states.len());
    for (i, (at, state)) in states.iter().enumerate() {
        let mut vcpu = u32::try_from(i)
            .ok()
            .and_then(|i| domain.vcpu(i))
            .ok_or_else(|| invalid(*at, &format_args!("vCPU {i}"), "no such vCPU in the restored domain"))?;
        vcpu.load_state(state);
        vcpus.push(vcpu);
    }
    Ok((domain, vcpus))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_names_drop_padding() {
        assert_eq!(tag_name(TAG_RAM), "RAM");
        assert_eq!(tag_name(TAG_SPEC), "SPEC");
        assert_eq!(tag_name(*b"A\x01B\0"), "A\\x01B");
    }

    #[test]
    fn readers_never_read_past_their_end() {
        let buf = [1u8, 2, 3, 4, 5, 6];
        let mut r = Reader::new(&buf, 2, 5);
        assert!(matches!(r.u32(&"x"), Err(SnapshotError::Truncated { offset: 2, needed: 4, available: 3, .. })));
        assert_eq!(r.take(3, &"y").ok(), Some(&buf[2..5]));
        assert!(r.take(u64::MAX, &"z").is_err());
        assert!(r.count(u64::MAX, 54, 5, &"w").is_err());
    }
}
