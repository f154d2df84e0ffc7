//! Property tests: the parsers and codecs never panic on any input, and where two independent
//! computations exist (streamed MRENCLAVE vs. load plan, plan vs. plain SHA-256), they agree.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select, subsequence};
use proptest::test_runner::Config;
use sha2::{Digest, Sha256};

use vsgx_isa::cpuid::{
    CpuidResult, EpcProperty, EpcSectionLeaf, FIRST_EPC_SUBLEAF, Leaf7Sgx, SgxLeaf0, SgxLeaf1, SgxLeafSupport,
};
use vsgx_isa::measure::{Measurement, eadd_block, ecreate_block, eextend_block};
use vsgx_isa::sgxs::{
    self, CHUNK_SIZE, CHUNKS_PER_PAGE, ChunkIndex, ChunkMeasurement, LoadPlan, PlannedChunk, PlannedPage, Reader,
    Record, SgxsSummary, SgxsWriter, encode_record,
};
use vsgx_isa::signing;
use vsgx_isa::{ArchStruct, Attributes, PAGE_SIZE, Sigstruct};

const SGXS: &[u8] = include_bytes!("../../../testdata/fortanix-test-enclave.sgxs");
const SIG: &[u8] = include_bytes!("../../../testdata/fortanix-test-enclave.sig");

/// `cases` cases, and no regression files written next to the sources on failure (a failing case
/// is printed in full instead).
fn config(cases: u32) -> Config {
    Config { failure_persistence: None, ..Config::with_cases(cases) }
}

// ---------------------------------------------------------------------------------------------
// SGXS streams
// ---------------------------------------------------------------------------------------------

/// Runs the reader, `measure` and `LoadPlan::from_sgxs` on `bytes` and checks that they agree with
/// each other; returns the summary when the stream is valid.
fn check_stream(bytes: &[u8]) -> Option<SgxsSummary> {
    // The reader walks the stream record by record and stops after the first error.
    let mut position = 0;
    let mut records = 0;
    let mut failed = false;
    for item in Reader::new(bytes) {
        assert!(!failed, "the reader yielded an item after an error");
        match item {
            Ok(at) => {
                assert_eq!((at.index, at.position), (records, position));
                position += at.record.encoded_len();
                assert!(position <= bytes.len(), "record runs past the end of the stream");
                records += 1;
            }
            Err(e) => {
                assert_eq!((e.index, e.position), (records, position));
                failed = true;
            }
        }
    }
    if !failed {
        assert_eq!(position, bytes.len(), "the reader must consume the whole stream");
    }

    let summary = sgxs::measure(bytes);
    let plan = LoadPlan::from_sgxs(bytes);
    match (&summary, &plan) {
        (Ok(summary), Ok(plan)) => {
            assert!(!failed);
            assert_eq!(plan.mrenclave(), summary.mrenclave, "plan and stream disagree");
            assert_eq!((plan.size, plan.ssaframesize), (summary.size, summary.ssaframesize));
            assert_eq!(plan.pages.len() as u64, summary.pages);
            assert_eq!(plan.measured_chunks() as u64, summary.measured_chunks);
            assert_eq!(summary.pages + summary.measured_chunks + summary.unmeasured_chunks + 1, records as u64);
            if summary.unmeasured_chunks == 0 {
                // Every record is measured, so the file is exactly the measured block sequence.
                let digest: [u8; 32] = Sha256::digest(bytes).into();
                assert_eq!(summary.mrenclave, digest);
            }
            // The plan serializes to a stream that measures the same and parses back to the plan.
            let again = plan.to_sgxs().expect("a plan from a valid stream serializes");
            assert_eq!(sgxs::measure(&again).expect("serialized plan is valid").mrenclave, summary.mrenclave);
            assert_eq!(&LoadPlan::from_sgxs(&again).expect("serialized plan parses"), plan);
        }
        (Err(a), Err(b)) => assert_eq!(a, b, "measure and LoadPlan report different errors"),
        _ => panic!("measure gave {summary:?} but LoadPlan gave {:?}", plan.as_ref().map(|_| ())),
    }
    summary.ok()
}

/// A record with owned data, so a strategy can produce it.
#[derive(Clone, Debug)]
enum Rec {
    Ecreate(u32, u64),
    Unsized(u32, u64),
    Eadd(u64, u64),
    Eextend(u64, u8),
    Unmeasured(u64, u8),
}

impl Rec {
    fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Rec::Ecreate(ssaframesize, size) => encode_record(&Record::Ecreate { ssaframesize, size }, out),
            Rec::Unsized(ssaframesize, size) => encode_record(&Record::Unsized { ssaframesize, size }, out),
            Rec::Eadd(offset, secinfo_flags) => encode_record(&Record::Eadd { offset, secinfo_flags }, out),
            Rec::Eextend(offset, fill) => encode_record(&Record::Eextend { offset, data: &[fill; CHUNK_SIZE] }, out),
            Rec::Unmeasured(offset, fill) => {
                encode_record(&Record::Unmeasured { offset, data: &[fill; CHUNK_SIZE] }, out)
            }
        }
    }
}

/// Records whose fields are mostly plausible (small sizes, aligned offsets, real flags) and
/// sometimes arbitrary, so random streams get past the first record and exercise the validator.
fn record() -> impl Strategy<Value = Rec> {
    let ssa = prop_oneof![4 => 0u32..4, 1 => any::<u32>()];
    let size = prop_oneof![4 => (12u32..=18).prop_map(|l| 1u64 << l), 1 => any::<u64>()];
    let page = prop_oneof![4 => (0u64..40).prop_map(|p| p * 4096), 1 => any::<u64>()];
    let chunk = prop_oneof![4 => (0u64..40 * 16).prop_map(|c| c * 256), 1 => any::<u64>()];
    let flags = prop_oneof![
        4 => select(vec![0x201u64, 0x203, 0x205, 0x207, 0x100, 0x202, 0x101, 0x300, 0x000, 0x241]),
        1 => any::<u64>(),
    ];
    let fill = prop_oneof![Just(0u8), any::<u8>()];
    prop_oneof![
        1 => (ssa.clone(), size.clone()).prop_map(|(a, s)| Rec::Ecreate(a, s)),
        1 => (ssa, size).prop_map(|(a, s)| Rec::Unsized(a, s)),
        4 => (page, flags).prop_map(|(o, f)| Rec::Eadd(o, f)),
        6 => (chunk.clone(), fill.clone()).prop_map(|(o, b)| Rec::Eextend(o, b)),
        3 => (chunk, fill).prop_map(|(o, b)| Rec::Unmeasured(o, b)),
    ]
}

/// A random record sequence, usually starting with a plausible ECREATE, possibly corrupted.
fn record_stream() -> impl Strategy<Value = Vec<u8>> {
    let first = (1u32..4, 13u32..=18).prop_map(|(a, l)| Rec::Ecreate(a, 1 << l));
    (
        prop_oneof![4 => first.prop_map(Some), 1 => Just(None)],
        vec(record(), 0..24),
        vec((any::<Index>(), 1..=u8::MAX), 0..3),
        any::<Option<Index>>(),
    )
        .prop_map(|(first, rest, flips, cut)| {
            let mut out = Vec::new();
            for r in first.iter().chain(&rest) {
                r.encode(&mut out);
            }
            if !out.is_empty() {
                for (at, x) in flips {
                    let i = at.index(out.len());
                    out[i] ^= x;
                }
            }
            if let Some(cut) = cut {
                out.truncate(cut.index(out.len() + 1));
            }
            out
        })
}

/// A stream that is canonical by construction (ECREATE, then pages at increasing offsets, each
/// followed by distinct chunks of its own page in random order), then perturbed: up to two random
/// records inserted anywhere and up to two bytes flipped. Roughly 40% of these are still valid.
fn structured_stream() -> impl Strategy<Value = Vec<u8>> {
    let flags = prop_oneof![
        8 => select(vec![0x201u64, 0x203, 0x205, 0x207, 0x100]),
        1 => select(vec![0x202u64, 0x101, 0x300, 0x000, 0x241, 0x1_0201]),
    ];
    let chunks = subsequence((0u64..16).collect::<Vec<_>>(), 0..=6).prop_shuffle().prop_flat_map(|chunks| {
        let n = chunks.len();
        (Just(chunks), vec((any::<bool>(), any::<u8>()), n))
    });
    let page = (0u64..4, flags, chunks);
    (
        1u32..4,
        15u32..=18,
        vec(page, 0..6),
        prop_oneof![2 => Just(Vec::new()), 1 => vec((any::<Index>(), record()), 1..=2)],
        prop_oneof![2 => Just(Vec::new()), 1 => vec((any::<Index>(), 1..=u8::MAX), 1..=2)],
    )
        .prop_map(|(ssa, log, pages, inserts, flips)| {
            let mut recs = vec![Rec::Ecreate(ssa, 1 << log)];
            let mut page_number = 0u64;
            for (gap, flags, (chunks, data)) in pages {
                let offset = page_number * 4096;
                page_number += 1 + gap;
                recs.push(Rec::Eadd(offset, flags));
                for (c, (measured, fill)) in chunks.into_iter().zip(data) {
                    let at = offset + c * 256;
                    recs.push(if measured { Rec::Eextend(at, fill) } else { Rec::Unmeasured(at, fill) });
                }
            }
            for (at, rec) in inserts {
                let i = at.index(recs.len() + 1);
                recs.insert(i, rec);
            }
            let mut out = Vec::new();
            for r in &recs {
                r.encode(&mut out);
            }
            for (at, x) in flips {
                let i = at.index(out.len());
                out[i] ^= x;
            }
            out
        })
}

/// Record boundaries of the real stream: (position, length).
fn real_records() -> Vec<(usize, usize)> {
    Reader::new(SGXS)
        .map(|r| {
            let at = r.expect("the real stream parses");
            (at.position, at.record.encoded_len())
        })
        .collect()
}

#[derive(Clone, Debug)]
enum Mutation {
    /// XOR bytes (1 to 8 of them) with non-zero values.
    Flip(Vec<(Index, u8)>),
    /// Keep only a prefix.
    Truncate(Index),
    /// Copy one record and insert the copy before another record (or at the end).
    Duplicate { record: Index, before: Index },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        vec((any::<Index>(), 1..=u8::MAX), 1..=8).prop_map(Mutation::Flip),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), any::<Index>()).prop_map(|(record, before)| Mutation::Duplicate { record, before }),
    ]
}

fn mutate(m: &Mutation) -> Vec<u8> {
    let mut bytes = SGXS.to_vec();
    match m {
        Mutation::Flip(flips) => {
            for (at, x) in flips {
                bytes[at.index(SGXS.len())] ^= x;
            }
        }
        Mutation::Truncate(at) => bytes.truncate(at.index(SGXS.len())),
        Mutation::Duplicate { record, before } => {
            let records = real_records();
            let (start, len) = records[record.index(records.len())];
            let insert_at = records.get(before.index(records.len() + 1)).map_or(SGXS.len(), |r| r.0);
            let copy = SGXS[start..start + len].to_vec();
            bytes.splice(insert_at..insert_at, copy);
        }
    }
    bytes
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..4096)) {
        check_stream(&bytes);
    }

    #[test]
    fn arbitrary_bytes_behind_a_valid_ecreate_never_panic(
        ssa in 1u32..4, log in 13u32..=20, tail in vec(any::<u8>(), 0..4096),
    ) {
        let mut bytes = Vec::new();
        Rec::Ecreate(ssa, 1 << log).encode(&mut bytes);
        bytes.extend_from_slice(&tail);
        check_stream(&bytes);
    }

    #[test]
    fn random_record_streams_never_panic(bytes in record_stream()) {
        check_stream(&bytes);
    }

    #[test]
    fn perturbed_canonical_streams_never_panic(bytes in structured_stream()) {
        check_stream(&bytes);
    }
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn mutated_real_stream_never_panics_and_both_hashes_agree(m in mutation()) {
        let bytes = mutate(&m);
        let summary = check_stream(&bytes);
        if matches!(m, Mutation::Duplicate { .. }) {
            // Every page of the real stream has all 16 chunks measured, so any repeated record
            // (ECREATE, an EADD offset, or a chunk) breaks a canonical-stream rule.
            prop_assert!(summary.is_none(), "a stream with a duplicated record was accepted");
        }
        if let Some(summary) = summary {
            let plan = LoadPlan::from_sgxs(&bytes).unwrap();
            prop_assert_eq!(plan.mrenclave(), summary.mrenclave);
            if bytes != SGXS {
                prop_assert_ne!(
                    hex::encode(summary.mrenclave),
                    "784acfd7d5096a8f0fbd3265760bff21b120f62407a9a9e5ba31aa3c8ed198fc",
                    "a changed stream must not measure like the original"
                );
            }
        }
    }
}

#[test]
fn unmutated_real_stream_passes_the_stream_checks() {
    let summary = check_stream(SGXS).expect("the real stream is valid");
    assert_eq!(summary.pages, 9);
    // Truncating at any record boundary leaves a valid (shorter) stream; anywhere else does not.
    let boundaries: Vec<usize> = real_records().iter().map(|r| r.0 + r.1).collect();
    let cuts = (0..SGXS.len()).step_by(509).chain(boundaries.iter().copied());
    for cut in cuts {
        let valid = check_stream(&SGXS[..cut]).is_some();
        assert_eq!(valid, boundaries.contains(&cut), "cut at {cut}");
    }
}

// ---------------------------------------------------------------------------------------------
// Canonical streams built with SgxsWriter
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct PageSpec {
    flags: u64,
    measure: ChunkMeasurement,
    /// (byte offset, value) pairs written into an otherwise zero page.
    writes: Vec<(usize, u8)>,
}

impl PageSpec {
    fn content(&self) -> Box<[u8; PAGE_SIZE]> {
        let mut page = Box::new([0u8; PAGE_SIZE]);
        for &(at, v) in &self.writes {
            page[at] = v;
        }
        page
    }

    fn mask(&self) -> u16 {
        match self.measure {
            ChunkMeasurement::All => u16::MAX,
            ChunkMeasurement::None => 0,
            ChunkMeasurement::Mask(m) => m,
        }
    }
}

#[derive(Clone, Debug)]
struct EnclaveSpec {
    ssaframesize: u32,
    size: u64,
    pages: Vec<(u64, PageSpec)>,
}

fn chunk_measurement() -> impl Strategy<Value = ChunkMeasurement> {
    prop_oneof![
        Just(ChunkMeasurement::All),
        Just(ChunkMeasurement::None),
        any::<u16>().prop_map(ChunkMeasurement::Mask),
    ]
}

fn page_spec(measure: BoxedStrategy<ChunkMeasurement>) -> impl Strategy<Value = PageSpec> {
    (select(vec![0x201u64, 0x203, 0x205, 0x207, 0x100]), measure, vec((0..PAGE_SIZE, any::<u8>()), 0..8))
        .prop_map(|(flags, measure, writes)| PageSpec { flags, measure, writes })
}

fn enclave_spec(measure: BoxedStrategy<ChunkMeasurement>) -> impl Strategy<Value = EnclaveSpec> {
    sized_enclave_spec(measure, 13..=20, 0..=8)
}

/// An enclave of 2^`log` bytes (`log` from `logs`) with `pages` pages (capped at what fits).
fn sized_enclave_spec(
    measure: BoxedStrategy<ChunkMeasurement>,
    logs: std::ops::RangeInclusive<u32>,
    pages: std::ops::RangeInclusive<usize>,
) -> impl Strategy<Value = EnclaveSpec> {
    (1u32..=4, logs).prop_flat_map(move |(ssaframesize, log)| {
        let size = 1u64 << log;
        let in_enclave = size / PAGE_SIZE as u64;
        let offsets: Vec<u64> = (0..in_enclave).map(|p| p * PAGE_SIZE as u64).collect();
        let max = (in_enclave as usize).min(*pages.end());
        let min = (*pages.start()).min(max);
        subsequence(offsets, min..=max)
            .prop_flat_map({
                let measure = measure.clone();
                move |offsets| {
                    let n = offsets.len();
                    (Just(offsets), vec(page_spec(measure.clone()), n))
                }
            })
            .prop_map(move |(offsets, specs)| EnclaveSpec {
                ssaframesize,
                size,
                pages: offsets.into_iter().zip(specs).collect(),
            })
    })
}

fn build(spec: &EnclaveSpec) -> Vec<u8> {
    let mut w = SgxsWriter::new(spec.ssaframesize, spec.size).expect("valid ECREATE");
    for (offset, page) in &spec.pages {
        w.add_page(*offset, page.flags, &page.content(), page.measure).expect("valid page");
    }
    w.finish()
}

/// MRENCLAVE computed straight from the spec, without any stream.
fn expected_mrenclave(spec: &EnclaveSpec) -> [u8; 32] {
    let mut m = Measurement::new();
    m.ecreate(spec.ssaframesize, spec.size);
    for (offset, page) in &spec.pages {
        m.eadd(*offset, page.flags);
        let content = page.content();
        for (i, chunk) in content.as_chunks::<CHUNK_SIZE>().0.iter().enumerate() {
            if page.mask() & (1 << i) != 0 {
                m.eextend(offset + (i * CHUNK_SIZE) as u64, chunk);
            }
        }
    }
    m.finalize()
}

/// Everything about a generated canonical stream except byte-exact reserialization.
fn check_canonical(spec: &EnclaveSpec, bytes: &[u8]) -> Result<LoadPlan, TestCaseError> {
    let summary = check_stream(bytes).expect("SgxsWriter output is valid");
    let plan = LoadPlan::from_sgxs(bytes).unwrap();
    let (mut measured, mut unmeasured) = (0u64, 0u64);
    for (_, page) in &spec.pages {
        let content = page.content();
        for (i, chunk) in content.as_chunks::<CHUNK_SIZE>().0.iter().enumerate() {
            if page.mask() & (1 << i) != 0 {
                measured += 1;
            } else if chunk.iter().any(|&b| b != 0) {
                unmeasured += 1;
            }
        }
    }
    prop_assert_eq!((summary.size, summary.ssaframesize), (spec.size, spec.ssaframesize));
    prop_assert_eq!(summary.pages, spec.pages.len() as u64);
    prop_assert_eq!(summary.measured_chunks, measured);
    prop_assert_eq!(summary.unmeasured_chunks, unmeasured);
    prop_assert_eq!(plan.mrenclave(), summary.mrenclave);
    prop_assert_eq!(expected_mrenclave(spec), summary.mrenclave);
    for ((offset, page), planned) in spec.pages.iter().zip(&plan.pages) {
        prop_assert_eq!(planned.offset, *offset);
        prop_assert_eq!(planned.secinfo_flags, page.flags);
        prop_assert_eq!(&planned.content, &page.content());
    }
    Ok(plan)
}

/// Chunk measurements for which `SgxsWriter::add_page` and `LoadPlan::to_sgxs` order the chunks of
/// a page the same way: all measured, none measured, or a mask whose measured chunks all come
/// before the first unmeasured one (`0b0…01…1`).
fn order_preserving_measurement() -> BoxedStrategy<ChunkMeasurement> {
    prop_oneof![
        Just(ChunkMeasurement::All),
        Just(ChunkMeasurement::None),
        (0u32..=16).prop_map(|n| ChunkMeasurement::Mask(((1u32 << n) - 1) as u16)),
    ]
    .boxed()
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn canonical_streams_measure_and_round_trip(spec in enclave_spec(order_preserving_measurement())) {
        let bytes = build(&spec);
        let plan = check_canonical(&spec, &bytes)?;
        prop_assert!(plan.to_sgxs().unwrap() == bytes, "to_sgxs must reproduce the stream");
    }

    /// Streams longer than any internal hashing batch (tens of fully measured pages, 5184 bytes
    /// each, occasionally interrupted by an unmeasured chunk), so MRENCLAVE is computed across
    /// several batches and run boundaries.
    #[test]
    fn long_canonical_streams_measure_and_round_trip(
        spec in sized_enclave_spec(
            prop_oneof![
                8 => Just(ChunkMeasurement::All),
                1 => Just(ChunkMeasurement::None),
                1 => (0u32..=16).prop_map(|n| ChunkMeasurement::Mask(((1u32 << n) - 1) as u16)),
            ]
            .boxed(),
            17..=20,
            16..=48,
        ),
    ) {
        let bytes = build(&spec);
        let plan = check_canonical(&spec, &bytes)?;
        prop_assert!(plan.to_sgxs().unwrap() == bytes, "to_sgxs must reproduce the stream");
    }

    #[test]
    fn canonical_streams_with_any_chunk_mask_measure_consistently(
        spec in enclave_spec(chunk_measurement().boxed()),
    ) {
        let bytes = build(&spec);
        check_canonical(&spec, &bytes)?;
    }
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn canonical_streams_with_any_chunk_mask_round_trip_exactly(
        spec in enclave_spec(chunk_measurement().boxed()),
    ) {
        let bytes = build(&spec);
        let plan = check_canonical(&spec, &bytes)?;
        prop_assert!(plan.to_sgxs().unwrap() == bytes, "to_sgxs must reproduce the stream");
    }
}

/// The smallest reproduction of the interleaving property above.
#[test]
fn interleaved_unmeasured_chunk_round_trips_exactly() {
    let mut page = [0u8; PAGE_SIZE];
    page[0] = 1; // chunk 0: non-zero and not measured, so an UNMEASRD record
    let mut w = SgxsWriter::new(1, 0x2000).unwrap();
    w.add_page(0, 0x201, &page, ChunkMeasurement::Mask(0b10)).unwrap();
    let bytes = w.finish();
    let again = LoadPlan::from_sgxs(&bytes).unwrap().to_sgxs().unwrap();
    let records = |s: &[u8]| -> Vec<String> {
        Reader::new(s)
            .map(|r| {
                let record = r.unwrap().record;
                match record {
                    Record::Eextend { offset, .. } | Record::Unmeasured { offset, .. } => {
                        format!("{}@{offset:#x}", record.name())
                    }
                    _ => record.name().to_string(),
                }
            })
            .collect()
    };
    // SgxsWriter: ECREATE, EADD, UNMEASRD@0x0, EEXTEND@0x100.
    assert_eq!(records(&again), records(&bytes));
    assert!(again == bytes);
}

/// Chunks of hand-built plans cannot name bytes outside their page: `ChunkIndex` is checked.
#[test]
fn chunk_indexes_stay_inside_the_page() {
    assert_eq!(ChunkIndex::new(15).map(ChunkIndex::offset), Some(3840));
    assert_eq!(ChunkIndex::new(16), None);
    assert_eq!(ChunkIndex::at_offset(4000), None);
    assert_eq!(ChunkIndex::at_offset(4096), None);
    assert_eq!(ChunkIndex::at_offset(0x100).map(ChunkIndex::index), Some(1));
}

/// A hand-built plan that breaks the canonical rules is refused by `to_sgxs`, not serialized and
/// not a panic; `mrenclave` still computes what hardware would.
#[test]
fn hand_built_non_canonical_plans_are_refused() {
    let chunk = ChunkIndex::new(3).unwrap();
    let page = |offset| PlannedPage {
        offset,
        secinfo_flags: 0x201,
        content: Box::new([0; PAGE_SIZE]),
        chunks: vec![PlannedChunk { chunk, measured: true }, PlannedChunk { chunk, measured: false }],
    };
    let twice = LoadPlan { size: 0x2000, ssaframesize: 1, pages: vec![page(0)] };
    let _ = twice.mrenclave();
    assert!(matches!(twice.to_sgxs().unwrap_err().kind, vsgx_isa::sgxs::SgxsErrorKind::ChunkTwice { .. }));
    let outside = LoadPlan { size: 0x2000, ssaframesize: 1, pages: vec![page(u64::MAX - 0xFFF)] };
    let _ = outside.mrenclave();
    assert!(outside.to_sgxs().is_err());
}

// ---------------------------------------------------------------------------------------------
// SIGSTRUCT
// ---------------------------------------------------------------------------------------------

fn in_signed_range(i: usize) -> bool {
    Sigstruct::SIGNED_HEAD.contains(&i) || Sigstruct::SIGNED_BODY.contains(&i)
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn sigstruct_from_bytes_checks_the_length(bytes in vec(any::<u8>(), 0..4000)) {
        let parsed = Sigstruct::from_bytes(&bytes);
        prop_assert_eq!(parsed.is_ok(), bytes.len() == Sigstruct::SIZE);
        if let Ok(s) = parsed {
            let _ = signing::verify(&s);
        }
    }

    #[test]
    fn arbitrary_sigstructs_never_verify(bytes in vec(any::<u8>(), Sigstruct::SIZE)) {
        let s = Sigstruct::from_bytes(&bytes).unwrap();
        prop_assert_eq!(s.bytes(), &bytes[..]);
        prop_assert!(signing::verify(&s).is_err());
        prop_assert!(signing::verify_signature(&s).is_err());
    }

    /// Random key material behind a well-formed header, so the big-number checks run on garbage.
    #[test]
    fn well_formed_sigstructs_with_random_key_material_never_verify(
        bytes in vec(any::<u8>(), Sigstruct::SIZE),
        small_modulus in any::<bool>(),
        signature_from_modulus in any::<bool>(),
    ) {
        let mut s = Sigstruct::from_bytes(&bytes).unwrap();
        s.header = Sigstruct::HEADER;
        s.header2 = Sigstruct::HEADER2;
        s.vendor = 0;
        s.exponent = Sigstruct::EXPONENT;
        s.reserved0 = [0; 84];
        s.cet_attributes = 0;
        s.cet_attributes_mask = 0;
        s.reserved1 = [0; 2];
        s.reserved2 = [0; 16];
        s.reserved3 = [0; 12];
        if small_modulus {
            s.modulus[8..].fill(0);
        }
        if signature_from_modulus {
            // SIGNATURE just below MODULUS, so the Q1/Q2 checks run.
            s.signature = s.modulus;
            s.signature[383] >>= 1;
        }
        prop_assert_eq!(signing::check_structure(&s), Ok(()));
        prop_assert!(signing::verify(&s).is_err());
    }

    #[test]
    fn mutated_real_sigstruct_never_verifies(flips in vec((0..Sigstruct::SIZE, 1..=u8::MAX), 1..=8)) {
        let mut bytes = SIG.to_vec();
        for &(i, x) in &flips {
            bytes[i] ^= x;
        }
        let changed: Vec<usize> = (0..SIG.len()).filter(|&i| bytes[i] != SIG[i]).collect();
        let s = Sigstruct::from_bytes(&bytes).unwrap();
        let result = signing::verify(&s);
        if changed.iter().any(|&i| in_signed_range(i)) {
            prop_assert!(result.is_err(), "signed bytes {changed:?} changed but the signature verifies");
        }
        // Every other byte is key material (bound by MRSIGNER and the RSA checks), EXPONENT or
        // reserved, so in fact any change at all must fail.
        prop_assert_eq!(result.is_ok(), changed.is_empty(), "changed bytes {:?}", changed);
    }

    #[test]
    fn mutated_signed_byte_never_verifies(
        at in prop_oneof![Sigstruct::SIGNED_HEAD, Sigstruct::SIGNED_BODY],
        x in 1..=u8::MAX,
    ) {
        let mut bytes = SIG.to_vec();
        bytes[at] ^= x;
        prop_assert!(signing::verify(&Sigstruct::from_bytes(&bytes).unwrap()).is_err());
    }
}

#[test]
fn real_sigstruct_verifies() {
    assert!(signing::verify(&Sigstruct::from_bytes(SIG).unwrap()).is_ok());
}

// ---------------------------------------------------------------------------------------------
// CPUID
// ---------------------------------------------------------------------------------------------

fn epc_property() -> impl Strategy<Value = EpcProperty> {
    prop_oneof![Just(EpcProperty::ConfidentialityIntegrity), Just(EpcProperty::ConfidentialityOnly)]
}

fn regs() -> impl Strategy<Value = CpuidResult> {
    // Mostly arbitrary registers, sometimes shaped like a section sub-leaf so decode succeeds.
    let word = || prop_oneof![any::<u32>(), (0u32..0x10_0000), any::<u32>().prop_map(|v| v & !0xFF0)];
    (word(), word(), word(), word()).prop_map(|(eax, ebx, ecx, edx)| CpuidResult { eax, ebx, ecx, edx })
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn epc_section_round_trips(
        base_pages in 0u64..(1 << 40),
        size_pages in 1u64..(1 << 40),
        property in epc_property(),
        subleaf in FIRST_EPC_SUBLEAF..64,
    ) {
        let leaf = EpcSectionLeaf { base: base_pages << 12, size: size_pages << 12, property };
        let r = leaf.encode().expect("encodable");
        prop_assert_eq!(r.eax & 0xF, 1, "type: EPC section");
        prop_assert_eq!(EpcSectionLeaf::decode(subleaf, r), Ok(Some(leaf)));
    }

    #[test]
    fn epc_section_encode_never_panics(base in any::<u64>(), size in any::<u64>(), property in epc_property()) {
        let leaf = EpcSectionLeaf { base, size, property };
        let encodable = base % 4096 == 0 && size % 4096 == 0 && size != 0 && base < 1 << 52 && size < 1 << 52;
        let r = leaf.encode();
        prop_assert_eq!(r.is_ok(), encodable);
        if let Ok(r) = r {
            prop_assert_eq!(EpcSectionLeaf::decode(FIRST_EPC_SUBLEAF, r), Ok(Some(leaf)));
        }
    }

    #[test]
    fn epc_section_decode_never_panics_and_re_encodes(subleaf in any::<u32>(), r in regs()) {
        match EpcSectionLeaf::decode(subleaf, r) {
            Ok(Some(section)) => prop_assert_eq!(section.encode(), Ok(r)),
            Ok(None) => prop_assert_eq!(r, EpcSectionLeaf::END),
            Err(_) => {}
        }
    }

    #[test]
    fn leaf0_round_trips(
        leaves in any::<u32>(),
        miscselect in any::<u32>(),
        max_enclave_size_32 in any::<u8>(),
        max_enclave_size_64 in any::<u8>(),
    ) {
        let l0 = SgxLeaf0 {
            leaves: SgxLeafSupport::from_bits_truncate(leaves),
            miscselect,
            max_enclave_size_32,
            max_enclave_size_64,
        };
        prop_assert_eq!(SgxLeaf0::decode(l0.encode()), Ok(l0));
    }

    #[test]
    fn leaf0_decode_never_panics_and_re_encodes(r in regs()) {
        if let Ok(l0) = SgxLeaf0::decode(r) {
            prop_assert_eq!(l0.encode(), r);
        }
    }

    #[test]
    fn leaf1_round_trips(flags in any::<u64>(), xfrm in any::<u64>(), r in regs()) {
        let l1 = SgxLeaf1 { allowed: Attributes { flags, xfrm } };
        prop_assert_eq!(SgxLeaf1::decode(l1.encode()), l1);
        prop_assert_eq!(SgxLeaf1::decode(r).encode(), r);
    }

    #[test]
    fn leaf7_apply_sets_only_the_sgx_bits(sgx in any::<bool>(), sgx_lc in any::<bool>(), r in regs()) {
        let bits = Leaf7Sgx { sgx, sgx_lc };
        let applied = bits.apply(r);
        prop_assert_eq!(Leaf7Sgx::decode(applied), bits);
        prop_assert_eq!(applied.eax, r.eax);
        prop_assert_eq!(applied.edx, r.edx);
        prop_assert_eq!(applied.ebx & !Leaf7Sgx::EBX_SGX, r.ebx & !Leaf7Sgx::EBX_SGX);
        prop_assert_eq!(applied.ecx & !Leaf7Sgx::ECX_SGX_LC, r.ecx & !Leaf7Sgx::ECX_SGX_LC);
    }
}

// ---------------------------------------------------------------------------------------------
// Measurement
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Event {
    Ecreate(u32, u64),
    Eadd(u64, u64),
    Eextend(u64, Vec<u8>),
}

impl Event {
    fn apply(&self, m: &mut Measurement) {
        match self {
            Event::Ecreate(ssa, size) => m.ecreate(*ssa, *size),
            Event::Eadd(offset, flags) => m.eadd(*offset, *flags),
            Event::Eextend(offset, data) => m.eextend(*offset, data.as_slice().try_into().unwrap()),
        }
    }

    fn blocks(&self, out: &mut Vec<u8>) {
        match self {
            Event::Ecreate(ssa, size) => out.extend_from_slice(&ecreate_block(*ssa, *size)),
            Event::Eadd(offset, flags) => out.extend_from_slice(&eadd_block(*offset, *flags)),
            Event::Eextend(offset, data) => {
                out.extend_from_slice(&eextend_block(*offset));
                out.extend_from_slice(data);
            }
        }
    }
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (any::<u32>(), any::<u64>()).prop_map(|(a, s)| Event::Ecreate(a, s)),
        (any::<u64>(), any::<u64>()).prop_map(|(o, f)| Event::Eadd(o, f)),
        (any::<u64>(), vec(any::<u8>(), CHUNK_SIZE)).prop_map(|(o, d)| Event::Eextend(o, d)),
    ]
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn measurement_is_sha256_of_the_blocks(events in vec(event(), 0..24), split in any::<Index>()) {
        let mut blocks = Vec::new();
        let mut m = Measurement::new();
        for e in &events {
            e.apply(&mut m);
            e.blocks(&mut blocks);
        }
        let digest: [u8; 32] = Sha256::digest(&blocks).into();
        prop_assert_eq!(m.finalize(), digest);
        prop_assert_eq!(m.blocks() as usize * 64, blocks.len());

        // Hashing the concatenated blocks in one call gives the same state.
        let mut bulk = Measurement::new();
        prop_assert_eq!(bulk.update_bytes(&blocks), Some(()));
        prop_assert_eq!(&bulk, &m);

        // Stopping after any event, storing the state as the SECS does, and resuming is invisible.
        let k = split.index(events.len() + 1);
        let mut first = Measurement::new();
        for e in &events[..k] {
            e.apply(&mut first);
        }
        let mut resumed = Measurement::from_state_bytes(&first.state_bytes(), first.blocks());
        prop_assert_eq!(&resumed, &first);
        for e in &events[k..] {
            e.apply(&mut resumed);
        }
        prop_assert_eq!(&resumed, &m);
        prop_assert_eq!(resumed.finalize(), digest);
    }

    #[test]
    fn update_bytes_rejects_partial_blocks(bytes in vec(any::<u8>(), 0..512)) {
        let mut m = Measurement::new();
        let accepted = m.update_bytes(&bytes).is_some();
        prop_assert_eq!(accepted, bytes.len() % 64 == 0);
        if accepted {
            prop_assert_eq!(m.finalize(), <[u8; 32]>::from(Sha256::digest(&bytes)));
        } else {
            prop_assert_eq!(m, Measurement::new(), "nothing hashed");
        }
    }
}

#[test]
fn chunks_per_page_is_consistent() {
    assert_eq!(CHUNKS_PER_PAGE * CHUNK_SIZE, PAGE_SIZE);
}
