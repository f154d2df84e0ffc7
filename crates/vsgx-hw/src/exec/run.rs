//! Running enclave code: EENTER, ERESUME, EEXIT and AEX (SGX.md §6.20–6.23) for WebAssembly
//! enclaves (DESIGN §9, `docs/enclave-abi.md`).
//!
//! The module's linear memory is the enclave heap. The executor never trusts the module with it:
//! the instrumentation pass (`instrument.rs`) makes every access call [`TOUCH`](super::abi::TOUCH)
//! first, and `touch` performs the enclave-mode access check of SGX.md §2 on the page at its
//! linear address — page tables, then EPCM (valid, PT_REG, this enclave, this address, R/W,
//! not blocked/pending/modified). A page that passes is copied into the wasm memory and stays
//! "present" until the next exit, exactly like a TLB entry; stores mark it dirty and dirty pages are
//! written back to EPC at every exit. A page that fails raises an AEX carrying the #PF (with
//! PFEC.SGX for EPCM failures); after the OS fixes it (ELDU), ERESUME repeats the access.
//!
//! Interrupts: execution is metered with wasmi fuel in slices; between slices the processor's
//! interrupt line and the per-entry budget are checked, and either causes an AEX. ERESUME then
//! continues the suspended call to the same result.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use vsgx_isa::cpu::{AexCause, EnclaveExit, Exception, Gprs, InterruptLine, pfec};
use vsgx_isa::wasm_abi::{self, Header};
use vsgx_isa::{ArchStruct, Exinfo, ExitInfo, ExitType, Gprsgx, Miscselect, PageType, SecsHidden, SsaFrameLayout, Tcs};
use wasmi::{Caller, Engine, Linker, Memory, MemoryType, Module, ResumableCall, Store, Val};

use crate::epc::PageId;
use crate::leaves::secs as s;
use crate::leaves::{Access, EnclaveMode, OperandAccess, Target};
use crate::platform::Platform;

/// Fuel per slice between interrupt checks.
const FUEL_SLICE: u64 = 20_000;

/// Why the wasm call stopped in a host function.
#[derive(Debug)]
enum Stop {
    /// EEXIT with a result.
    Eexit(i64),
    /// An exception inside the enclave: AEX.
    Fault(Exception),
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Eexit(r) => write!(f, "EEXIT({r})"),
            Self::Fault(e) => write!(f, "{e}"),
        }
    }
}

impl wasmi::errors::HostError for Stop {}

/// A host operation to repeat at ERESUME because it faulted (the access is retried, as the
/// faulting instruction is).
#[derive(Clone, Copy, Debug)]
enum Pending {
    Touch { addr: u32, offset: u32, lenw: u32 },
    CopyIn { dst: u32, src: u64, len: u32 },
    CopyOut { dst: u64, src: u32, len: u32 },
    Enclu { leaf: u32, rbx: u32, rcx: u32, rdx: u32, returns: bool },
}

/// The processor's address space as the executor keeps it: translation for enclave and
/// non-enclave accesses, cloneable so a suspended call can run again on any processor.
pub trait AddressSpace: OperandAccess + Send {
    /// A copy of this address space (same CR3, privilege and memory).
    fn boxed_clone(&self) -> Box<dyn AddressSpace>;
}

/// Per-entry state the host functions use (the wasmi store's data).
struct Run {
    platform: Arc<Platform>,
    mem: Box<dyn AddressSpace>,
    mode: EnclaveMode,
    heap_base: u64,
    memory: Option<Memory>,
    /// Per heap page: the EPC page it was checked against (present), and whether it is dirty.
    present: Vec<Option<(PageId, bool)>>,
    /// Indices of the present pages, so exits cost O(pages touched), not O(heap).
    touched: Vec<usize>,
    pending: Option<Pending>,
    /// The instrumentation's window globals (rlo, rhi, wlo, whi).
    window: Option<[wasmi::Global; 4]>,
    /// The last page `touch` validated, and whether it is writable: becomes the window.
    last: Option<(usize, bool)>,
}

/// A call suspended by an AEX.
struct Suspended {
    store: Option<Store<Run>>,
    call: SuspendedCall,
    outputs: [Val; 1],
    return_to: u64,
}

enum SuspendedCall {
    Host(wasmi::ResumableCallHostTrap),
    Fuel(wasmi::ResumableCallOutOfFuel),
    /// The enclave trapped: nothing to resume.
    Dead(String),
}

/// Compiled modules by MRENCLAVE and calls suspended by AEX, per platform.
pub struct Executor {
    engine: Engine,
    modules: Mutex<HashMap<[u8; 32], (Module, Header)>>,
    suspended: Mutex<HashMap<(PageId, u32), Suspended>>,
    traps: Mutex<HashMap<PageId, String>>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor").field("modules", &self.modules.lock().len()).finish_non_exhaustive()
    }
}

impl Default for Executor {
    fn default() -> Self {
        let mut config = wasmi::Config::default();
        config.consume_fuel(true);
        Self {
            engine: Engine::new(&config),
            modules: Mutex::new(HashMap::new()),
            suspended: Mutex::new(HashMap::new()),
            traps: Mutex::new(HashMap::new()),
        }
    }
}

/// How the processor calls into the executor.
#[allow(missing_debug_implementations)]
pub struct Entry<'a> {
    /// The platform.
    pub platform: &'a Arc<Platform>,
    /// The processor's address space, for the checks EENTER makes and for the run.
    pub mem: Box<dyn AddressSpace>,
    /// The processor's interrupt line.
    pub interrupt: &'a InterruptLine,
    /// Fuel the entry may use before an AEX (None: unlimited).
    pub budget: Option<u64>,
}

impl Executor {
    /// Drops everything suspended (EPC loss: the SSA frames are gone).
    pub fn clear(&self) {
        self.suspended.lock().clear();
        self.traps.lock().clear();
    }

    /// Number of compiled modules cached.
    pub fn cached_modules(&self) -> usize {
        self.modules.lock().len()
    }

    /// The message of the last WebAssembly trap on the TCS at EPC page `tcs`, if any.
    pub fn last_trap(&self, tcs: PageId) -> Option<String> {
        self.traps.lock().get(&tcs).cloned()
    }
}

/// TCS state gathered by the EENTER/ERESUME checks.
struct Thread {
    tcs_page: PageId,
    tcs: Tcs,
    mode: EnclaveMode,
    frame: SsaFrameLayout,
    miscselect: u32,
}

fn epcm_pf(linear: u64, write: bool) -> Exception {
    Exception::PageFault { linear, error_code: pfec::P | pfec::US | pfec::SGX | if write { pfec::W } else { 0 } }
}

/// The enclave-mode access check of SGX.md §2 for the page containing `la`.
fn enclave_page(
    platform: &Platform,
    mem: &mut dyn OperandAccess,
    mode: &EnclaveMode,
    la: u64,
    access: Access,
) -> Result<PageId, Exception> {
    let write = access == Access::Write;
    let hpa = match mem.translate(la, access)? {
        Target::Epc(hpa) => hpa,
        Target::Memory(_) => return Err(epcm_pf(la, write)),
    };
    let page = platform.epc().page_of(hpa).ok_or(epcm_pf(la, write))?;
    let slot = platform.epc().lock(page).ok_or(epcm_pf(la, write))?;
    let e = slot.epcm;
    let ok = e.is(PageType::Reg)
        && e.secs() == mode.secs
        && e.enclave_address() == la & !0xFFF
        && !e.blocked()
        && !e.pending()
        && !e.modified()
        && e.r()
        && (!write || e.w());
    if ok { Ok(page) } else { Err(epcm_pf(la, write)) }
}

impl Run {
    fn heap_pages(&self) -> usize {
        self.present.len()
    }

    /// Makes heap bytes `[start, start + len)` accessible (`write`: for stores).
    fn touch(&mut self, data: &mut [u8], start: u64, len: u64, write: bool) -> Result<(), Exception> {
        if len == 0 {
            return Ok(());
        }
        let first = start / 4096;
        let last = (start.saturating_add(len - 1) / 4096).min(self.heap_pages() as u64 - 1);
        for page in first..=last {
            let i = page as usize;
            match self.present[i] {
                Some((_, true)) => continue,
                Some((epc, false)) if !write => {
                    let _ = epc;
                    continue;
                }
                _ => {}
            }
            let la = self.heap_base + page * 4096;
            let access = if write { Access::Write } else { Access::Read };
            let epc = enclave_page(&self.platform, self.mem.as_mut(), &self.mode, la, access)?;
            if self.present[i].is_none() {
                let slot = self.platform.epc().lock(epc).ok_or(epcm_pf(la, write))?;
                data[i * 4096..(i + 1) * 4096].copy_from_slice(slot.data());
                self.touched.push(i);
            }
            self.present[i] = Some((epc, write));
        }
        self.last = Some((last as usize, self.present[last as usize].is_some_and(|(_, w)| w)));
        Ok(())
    }

    /// Writes dirty pages back to EPC (pages that stopped being this enclave's are skipped: their
    /// stores are lost as on hardware, where the EPCM would have refused them).
    fn write_back(&mut self, data: &[u8]) {
        for &i in &self.touched {
            let entry = &mut self.present[i];
            if let Some((epc, true)) = *entry {
                if let Some(mut slot) = self.platform.epc().lock(epc) {
                    let e = slot.epcm;
                    if e.is(PageType::Reg)
                        && e.secs() == self.mode.secs
                        && e.enclave_address() == self.heap_base + i as u64 * 4096
                    {
                        slot.data_mut().copy_from_slice(&data[i * 4096..(i + 1) * 4096]);
                    }
                }
                *entry = Some((epc, false));
            }
        }
    }

    /// Forgets every present page (at exit: the TLB of an exited enclave is gone). The caller
    /// also empties the window globals ([`set_window`]).
    fn invalidate(&mut self) {
        for i in self.touched.drain(..) {
            self.present[i] = None;
        }
        self.last = None;
    }

    /// Reads or writes memory outside the enclave by linear address (non-enclave access).
    fn outside(&mut self, la: u64, buf: &mut [u8], write: bool) -> Result<(), Exception> {
        let mut done = 0;
        while done < buf.len() {
            let a = la.wrapping_add(done as u64);
            if a >= self.mode.base && a - self.mode.base < self.mode.size {
                return Err(Exception::GP0);
            }
            let n = (4096 - (a & 0xFFF) as usize).min(buf.len() - done);
            let access = if write { Access::Write } else { Access::Read };
            match self.mem.translate(a, access)? {
                Target::Epc(_) if !write => buf[done..done + n].fill(0xFF),
                Target::Epc(_) => {}
                Target::Memory(pa) if write => self.mem.write_memory(pa, &buf[done..done + n])?,
                Target::Memory(pa) => self.mem.read_memory(pa, &mut buf[done..done + n])?,
            }
            done += n;
        }
        Ok(())
    }
}

/// Executes a host operation against the run state and the wasm memory.
fn perform_on(run: &mut Run, data: &mut [u8], op: Pending) -> Result<Vec<Val>, Exception> {
    let in_heap = |start: u32, len: u32, data: &[u8]| start as usize + len as usize <= data.len();
    match op {
        Pending::Touch { addr, offset, lenw } => {
            let start = addr as u64 + offset as u64;
            run.touch(data, start, (lenw & 0x7FFF_FFFF) as u64, lenw >> 31 == 1)?;
            Ok(Vec::new())
        }
        Pending::CopyIn { dst, src, len } => {
            if !in_heap(dst, len, data) {
                return Err(Exception::GP0);
            }
            run.touch(data, dst as u64, len as u64, true)?;
            let mut buf = vec![0u8; len as usize];
            run.outside(src, &mut buf, false)?;
            data[dst as usize..dst as usize + len as usize].copy_from_slice(&buf);
            Ok(Vec::new())
        }
        Pending::CopyOut { dst, src, len } => {
            if !in_heap(src, len, data) {
                return Err(Exception::GP0);
            }
            run.touch(data, src as u64, len as u64, false)?;
            let mut buf = data[src as usize..src as usize + len as usize].to_vec();
            run.outside(dst, &mut buf, true)?;
            Ok(Vec::new())
        }
        Pending::Enclu { leaf, rbx, rcx, rdx, returns } => {
            // The leaf works on EPC: make it current first, and re-check pages afterwards.
            run.write_back(data);
            run.invalidate();
            let base = run.heap_base;
            let mut regs = Gprs::leaf(leaf, base + rbx as u64, base + rcx as u64, base + rdx as u64);
            let platform = Arc::clone(&run.platform);
            run.mode.execute(&platform, run.mem.as_mut(), &mut regs)?;
            Ok(if returns { vec![Val::I64(regs.rax as i64)] } else { Vec::new() })
        }
    }
}

/// Sets the window globals: read window = the page `last` names, write window = that page if
/// writable; both empty when nothing is validated.
fn set_window(mut ctx: impl wasmi::AsContextMut<Data = Run>) {
    let (window, last) = {
        let ctx = ctx.as_context();
        (ctx.data().window, ctx.data().last)
    };
    let Some(globals) = window else { return };
    let page = |p: usize| (p as i64 * 4096, p as i64 * 4096 + 4096);
    let read = last.map_or((0, 0), |(p, _)| page(p));
    let write = last.filter(|&(_, writable)| writable).map_or((0, 0), |(p, _)| page(p));
    for (i, (lo, hi)) in [read, write].into_iter().enumerate() {
        let _ = globals[2 * i].set(&mut ctx, Val::I64(lo));
        let _ = globals[2 * i + 1].set(&mut ctx, Val::I64(hi));
    }
}

/// Runs a host operation from inside a host function; a fault is recorded for ERESUME.
fn host_op(caller: &mut Caller<'_, Run>, op: Pending) -> Result<Vec<Val>, wasmi::Error> {
    let memory = caller.data().memory.ok_or_else(|| wasmi::Error::new("enclave memory missing"))?;
    let (data, run) = memory.data_and_store_mut(&mut *caller);
    let result = perform_on(run, data, op);
    set_window(&mut *caller);
    match result {
        Ok(values) => Ok(values),
        Err(e) => {
            caller.data_mut().pending = Some(op);
            Err(wasmi::Error::host(Stop::Fault(e)))
        }
    }
}

fn first_i64(values: Vec<Val>) -> i64 {
    match values.first() {
        Some(Val::I64(v)) => *v,
        _ => 0,
    }
}

/// The imports of `abi::IMPORTS` plus the instrumentation hook.
fn linker(engine: &Engine) -> Result<Linker<Run>, wasmi::Error> {
    use vsgx_isa::leaf::Enclu;
    let mut l = Linker::<Run>::new(engine);
    let m = wasm_abi::IMPORT_MODULE;
    l.func_wrap(m, super::abi::TOUCH.name, |mut c: Caller<'_, Run>, addr: i32, offset: i32, lenw: i32| {
        host_op(&mut c, Pending::Touch { addr: addr as u32, offset: offset as u32, lenw: lenw as u32 }).map(drop)
    })?;
    l.func_wrap(m, super::abi::EEXIT.name, |_: Caller<'_, Run>, result: i64| -> Result<(), wasmi::Error> {
        Err(wasmi::Error::host(Stop::Eexit(result)))
    })?;
    l.func_wrap(m, super::abi::COPY_IN.name, |mut c: Caller<'_, Run>, dst: i32, src: i64, len: i32| {
        host_op(&mut c, Pending::CopyIn { dst: dst as u32, src: src as u64, len: len as u32 }).map(drop)
    })?;
    l.func_wrap(m, super::abi::COPY_OUT.name, |mut c: Caller<'_, Run>, dst: i64, src: i32, len: i32| {
        host_op(&mut c, Pending::CopyOut { dst: dst as u64, src: src as u32, len: len as u32 }).map(drop)
    })?;
    let enclu = |leaf: Enclu, rbx: i32, rcx: i32, rdx: i32, returns: bool| Pending::Enclu {
        leaf: leaf as u32,
        rbx: rbx as u32,
        rcx: rcx as u32,
        rdx: rdx as u32,
        returns,
    };
    l.func_wrap(m, super::abi::EGETKEY.name, move |mut c: Caller<'_, Run>, req: i32, out: i32| {
        host_op(&mut c, enclu(Enclu::Egetkey, req, out, 0, true)).map(first_i64)
    })?;
    l.func_wrap(m, super::abi::EREPORT.name, move |mut c: Caller<'_, Run>, ti: i32, data: i32, out: i32| {
        host_op(&mut c, enclu(Enclu::Ereport, ti, data, out, false)).map(drop)
    })?;
    l.func_wrap(m, super::abi::EACCEPT.name, move |mut c: Caller<'_, Run>, si: i32, page: i32| {
        host_op(&mut c, enclu(Enclu::Eaccept, si, page, 0, true)).map(first_i64)
    })?;
    l.func_wrap(m, super::abi::EMODPE.name, move |mut c: Caller<'_, Run>, si: i32, page: i32| {
        host_op(&mut c, enclu(Enclu::Emodpe, si, page, 0, false)).map(drop)
    })?;
    l.func_wrap(m, super::abi::EACCEPTCOPY.name, move |mut c: Caller<'_, Run>, si: i32, dst: i32, src: i32| {
        host_op(&mut c, enclu(Enclu::Eacceptcopy, si, dst, src, true)).map(first_i64)
    })?;
    Ok(l)
}

/// Fault raised by an EPCM check of an ENCLU instruction itself (EENTER/ERESUME operands).
fn enclu_epcm_fault(platform: &Platform, linear: u64) -> Exception {
    if platform.capabilities().sgx2 { epcm_pf(linear, true) } else { Exception::GP0 }
}

impl Executor {
    /// The checks EENTER (`resume` = false) and ERESUME share (SGX.md §6.20–6.21), in order.
    /// On success the TCS is ACTIVE with AEP set.
    fn enter_checks(&self, e: &mut Entry<'_>, rbx: u64, aep: u64, resume: bool) -> Result<Thread, Exception> {
        let p = e.platform.as_ref();
        if !rbx.is_multiple_of(4096) {
            return Err(Exception::GP0);
        }
        let not_epc = Exception::PageFault { linear: rbx, error_code: pfec::P | pfec::US | pfec::SGX };
        let tcs_page = match e.mem.translate(rbx, Access::Read)? {
            Target::Epc(hpa) => p.epc().page_of(hpa).ok_or(not_epc)?,
            Target::Memory(_) => return Err(not_epc),
        };
        if !crate::leaves::canonical(aep) {
            return Err(Exception::GP0);
        }
        let slot = p.epc().try_lock(tcs_page).ok_or(Exception::GP0)?;
        let epcm = slot.epcm;
        if !epcm.is(PageType::Tcs)
            || epcm.blocked()
            || epcm.enclave_address() != rbx
            || epcm.pending()
            || epcm.modified()
        {
            return Err(enclu_epcm_fault(p, rbx));
        }
        let tcs = Tcs::from_bytes(slot.data()).map_err(|_| Exception::GP0)?;
        let secs_hpa = p.epc().address_of(epcm.secs());
        let (mode, ssaframesize, miscselect) = {
            let secs = p.epc().lock(epcm.secs()).ok_or(Exception::GP0)?;
            let d = secs.data();
            (s::initialized(d), s::u32_at(d, 16), s::miscselect(d))
        };
        let allowed_flags = 0b11;
        let misaligned = tcs.ossa % 4096 != 0 || tcs.ofsbasgx % 4096 != 0 || tcs.ogsbasgx % 4096 != 0;
        if misaligned || tcs.flags & !allowed_flags != 0 || !mode {
            return Err(Exception::GP0);
        }
        let mode = EnclaveMode::of(p, secs_hpa).map_err(|_| Exception::GP0)?;
        if (!resume && tcs.cssa >= tcs.nssa) || (resume && (tcs.cssa == 0 || tcs.cssa > tcs.nssa)) {
            return Err(Exception::GP0);
        }
        let frame = SsaFrameLayout { frame_pages: ssaframesize.max(1) };
        let index = if resume { tcs.cssa - 1 } else { tcs.cssa };
        let ssa = frame.frame_address(mode.base, tcs.ossa, index);
        drop(slot);
        for page in 0..frame.frame_pages as u64 {
            let la = ssa + page * 4096;
            enclave_page(p, e.mem.as_mut(), &mode, la, Access::Write).map_err(|_| enclu_epcm_fault(p, la))?;
        }
        let mut slot = p.epc().try_lock(tcs_page).ok_or(Exception::GP0)?;
        if s::u64_at(slot.data(), 0) != vsgx_isa::tcs_state::INACTIVE {
            return Err(Exception::GP0);
        }
        s::set_u64(slot.data_mut(), 0, vsgx_isa::tcs_state::ACTIVE);
        s::set_u64(slot.data_mut(), 40, aep);
        Ok(Thread { tcs_page, tcs, mode, frame, miscselect })
    }

    fn join_epoch(p: &Platform, mode: &EnclaveMode) -> u64 {
        let Some(mut secs) = p.epc().lock(mode.secs) else { return 0 };
        let d = secs.data_mut();
        s::set_u64(d, SecsHidden::TRK_CUR, s::trk_cur(d) + 1);
        s::trk_epoch(d)
    }

    fn leave_epoch(p: &Platform, mode: &EnclaveMode, epoch: u64) {
        let Some(mut secs) = p.epc().lock(mode.secs) else { return };
        let d = secs.data_mut();
        if epoch == s::trk_epoch(d) {
            s::set_u64(d, SecsHidden::TRK_CUR, s::trk_cur(d).saturating_sub(1));
        } else {
            s::set_u64(d, SecsHidden::TRK_PREV, s::trk_prev(d).saturating_sub(1));
        }
    }

    /// Sets the TCS's STATE (and optionally CSSA).
    fn set_tcs(p: &Platform, t: &Thread, state: u64, cssa: Option<u32>) {
        if let Some(mut slot) = p.epc().lock(t.tcs_page)
            && slot.epcm.is(PageType::Tcs)
        {
            s::set_u64(slot.data_mut(), 0, state);
            if let Some(c) = cssa {
                slot.data_mut()[24..28].copy_from_slice(&c.to_le_bytes());
            }
        }
    }

    /// Writes GPRSGX (and EXINFO) of SSA frame `index` at an AEX.
    fn write_ssa(p: &Platform, mem: &mut dyn OperandAccess, t: &Thread, index: u32, cause: &AexCause, gpr: Gprsgx) {
        let frame = t.frame.frame_address(t.mode.base, t.tcs.ossa, index);
        let gpr_la = frame + t.frame.gprsgx_offset();
        let Ok(page) = enclave_page(p, mem, &t.mode, gpr_la, Access::Write) else { return };
        let Some(mut slot) = p.epc().lock(page) else { return };
        let off = (gpr_la & 0xFFF) as usize;
        let exinfo = t.miscselect & Miscselect::EXINFO.bits() != 0;
        let mut gpr = gpr;
        gpr.exitinfo = match cause {
            AexCause::Exception(e @ (Exception::PageFault { .. } | Exception::GeneralProtection(_))) if exinfo => {
                ExitInfo { vector: e.vector(), exit_type: ExitType::Hardware }.encode()
            }
            AexCause::Exception(Exception::InvalidOpcode) => {
                ExitInfo { vector: 6, exit_type: ExitType::Hardware }.encode()
            }
            _ => 0,
        };
        slot.data_mut()[off..off + 184].copy_from_slice(gpr.bytes());
        if exinfo {
            let info = match cause {
                AexCause::Exception(Exception::PageFault { linear, error_code }) => {
                    Some(Exinfo { maddr: *linear, errcd: *error_code, reserved: 0 })
                }
                AexCause::Exception(Exception::GeneralProtection(code)) => {
                    Some(Exinfo { maddr: 0, errcd: *code, reserved: 0 })
                }
                _ => None,
            };
            if let (Some(info), Some(at)) = (info, off.checked_sub(16)) {
                slot.data_mut()[at..at + 16].copy_from_slice(info.bytes());
            }
        }
    }

    fn read_gprsgx(p: &Platform, mem: &mut dyn OperandAccess, t: &Thread, index: u32) -> Gprsgx {
        let la = t.frame.frame_address(t.mode.base, t.tcs.ossa, index) + t.frame.gprsgx_offset();
        enclave_page(p, mem, &t.mode, la, Access::Read)
            .ok()
            .and_then(|page| p.epc().lock(page))
            .and_then(|slot| {
                let off = (la & 0xFFF) as usize;
                Gprsgx::from_bytes(&slot.data()[off..off + 184]).ok()
            })
            .unwrap_or_default()
    }

    /// ENCLU[EENTER]: RBX = TCS, RCX = AEP; RDI, RSI, RDX, R8, R9 carry the ECALL (docs/enclave-abi.md).
    pub fn eenter(&self, mut e: Entry<'_>, regs: &mut Gprs) -> Result<EnclaveExit, Exception> {
        let t = self.enter_checks(&mut e, regs.rbx, regs.rcx, false)?;
        let p = Arc::clone(e.platform);
        let epoch = Self::join_epoch(&p, &t.mode);
        let return_to = regs.rip.wrapping_add(3);
        // SSA[CSSA].URSP/URBP ← RSP/RBP.
        let mut gpr = Self::read_gprsgx(&p, e.mem.as_mut(), &t, t.tcs.cssa);
        gpr.ursp = regs.rsp;
        gpr.urbp = regs.rbp;
        Self::write_ssa(&p, e.mem.as_mut(), &t, t.tcs.cssa, &AexCause::Interrupt, gpr);
        let args = [regs.rdi, regs.rsi, regs.rdx, regs.r8_r15[0], regs.r8_r15[1]];
        regs.rax = t.tcs.cssa as u64;
        let cssa = t.tcs.cssa;
        match self.start(&p, &mut e, &t, args) {
            Start::Exit(result) => {
                Ok(self.finish(&p, &t, cssa, epoch, regs, return_to, None, Outcome::Exit(result), [Val::I64(0)]))
            }
            Start::Fault(fault) => {
                let outcome = Outcome::Aex(AexCause::Exception(fault), SuspendedCall::Dead(format!("{fault}")));
                Ok(self.finish(&p, &t, cssa, epoch, regs, return_to, None, outcome, [Val::I64(0)]))
            }
            Start::Trap(msg) => {
                let outcome = Outcome::Aex(AexCause::Exception(Exception::InvalidOpcode), SuspendedCall::Dead(msg));
                Ok(self.finish(&p, &t, cssa, epoch, regs, return_to, None, outcome, [Val::I64(0)]))
            }
            Start::Running(mut store, r, mut outputs) => {
                let outcome = drive(&mut store, r, &mut outputs, e.interrupt, e.budget);
                Ok(self.finish(&p, &t, cssa, epoch, regs, return_to, Some(*store), outcome, outputs))
            }
        }
    }

    /// ENCLU[ERESUME]: continues the call an AEX suspended on this TCS.
    pub fn eresume(&self, mut e: Entry<'_>, regs: &mut Gprs) -> Result<EnclaveExit, Exception> {
        let t = self.enter_checks(&mut e, regs.rbx, regs.rcx, true)?;
        let p = Arc::clone(e.platform);
        let index = t.tcs.cssa - 1;
        let Some(Suspended { store: Some(store), call, outputs: saved, return_to }) =
            self.suspended.lock().remove(&(t.tcs_page, index))
        else {
            // Nothing to resume (the frame was never written by an AEX of this platform).
            Self::set_tcs(&p, &t, vsgx_isa::tcs_state::INACTIVE, None);
            return Err(Exception::GP0);
        };
        Self::set_tcs(&p, &t, vsgx_isa::tcs_state::ACTIVE, Some(index));
        let epoch = Self::join_epoch(&p, &t.mode);
        let mut store = store;
        let mut outputs = saved;
        {
            let run = store.data_mut();
            run.mem = e.mem.boxed_clone();
            run.mode = t.mode;
            run.invalidate();
        }
        set_window(&mut store);
        let pending = store.data_mut().pending.take();
        let redo = match pending {
            Some(op) => perform(&mut store, op).map_err(|f| (f, op)),
            None => Ok(Vec::new()),
        };
        set_window(&mut store);
        let outcome = match (redo, call) {
            (_, dead @ SuspendedCall::Dead(_)) => Outcome::Aex(AexCause::Exception(Exception::InvalidOpcode), dead),
            (Err((fault, op)), call) => {
                store.data_mut().pending = Some(op);
                Outcome::Aex(AexCause::Exception(fault), call)
            }
            (Ok(values), SuspendedCall::Host(inv)) => {
                let r = inv.resume(&mut store, &values, &mut outputs);
                drive(&mut store, r, &mut outputs, e.interrupt, e.budget)
            }
            (Ok(_), SuspendedCall::Fuel(inv)) => {
                let _ = store.set_fuel(FUEL_SLICE);
                let r = inv.resume(&mut store, &mut outputs);
                drive(&mut store, r, &mut outputs, e.interrupt, e.budget)
            }
        };
        Ok(self.finish(&p, &t, index, epoch, regs, return_to, Some(store), outcome, outputs))
    }
}

/// How the start of an entry went.
enum Start {
    /// The ECALL index names nothing: EEXIT with that status at once.
    Exit(i64),
    /// A header or code page failed its check: AEX with that fault (the thread cannot continue).
    Fault(Exception),
    /// The image is not a valid enclave module: AEX with #UD.
    Trap(String),
    /// The call is running.
    Running(Box<Store<Run>>, Result<ResumableCall, wasmi::Error>, [Val; 1]),
}

/// How a run ended.
enum Outcome {
    Exit(i64),
    Aex(AexCause, SuspendedCall),
}

/// Drives a resumable call through fuel slices until it exits or needs an AEX.
fn drive(
    store: &mut Store<Run>,
    mut r: Result<ResumableCall, wasmi::Error>,
    outputs: &mut [Val; 1],
    interrupt: &InterruptLine,
    budget: Option<u64>,
) -> Outcome {
    let mut used = 0u64;
    loop {
        match r {
            Ok(ResumableCall::Finished) => return Outcome::Exit(first_i64(outputs.to_vec())),
            Ok(ResumableCall::HostTrap(inv)) => {
                let stop = inv.host_error().downcast_ref::<Stop>().map(|s| match s {
                    Stop::Eexit(v) => Err(*v),
                    Stop::Fault(f) => Ok(*f),
                });
                return match stop {
                    Some(Err(result)) => Outcome::Exit(result),
                    Some(Ok(fault)) => Outcome::Aex(AexCause::Exception(fault), SuspendedCall::Host(inv)),
                    None => Outcome::Aex(
                        AexCause::Exception(Exception::InvalidOpcode),
                        SuspendedCall::Dead(inv.host_error().to_string()),
                    ),
                };
            }
            Ok(ResumableCall::OutOfFuel(inv)) => {
                used = used.saturating_add(FUEL_SLICE);
                if interrupt.take() || budget.is_some_and(|b| used >= b) {
                    return Outcome::Aex(AexCause::Interrupt, SuspendedCall::Fuel(inv));
                }
                let _ = store.set_fuel(FUEL_SLICE);
                r = inv.resume(&mut *store, outputs);
            }
            Err(err) => {
                if let Some(Stop::Eexit(v)) = err.downcast_ref::<Stop>() {
                    return Outcome::Exit(*v);
                }
                return Outcome::Aex(
                    AexCause::Exception(Exception::InvalidOpcode),
                    SuspendedCall::Dead(err.to_string()),
                );
            }
        }
    }
}

/// Runs a pending operation on a suspended store (ERESUME repeats the faulting access).
fn perform(store: &mut Store<Run>, op: Pending) -> Result<Vec<Val>, Exception> {
    let memory = store.data().memory.ok_or(Exception::GP0)?;
    let (data, run) = memory.data_and_store_mut(&mut *store);
    perform_on(run, data, op)
}

impl Executor {
    /// Loads, checks, compiles (once per MRENCLAVE) and instantiates the enclave's module and
    /// starts the ECALL.
    fn start(&self, p: &Arc<Platform>, e: &mut Entry<'_>, t: &Thread, args: [u64; 5]) -> Start {
        let read_page = |e: &mut Entry<'_>, la: u64, exec: bool| -> Result<[u8; 4096], Exception> {
            let page = enclave_page(p, e.mem.as_mut(), &t.mode, la, Access::Read)?;
            let slot = p.epc().lock(page).ok_or(epcm_pf(la, false))?;
            if exec && !slot.epcm.x() {
                return Err(epcm_pf(la, false));
            }
            Ok(*slot.data())
        };
        let header_la = t.mode.base.wrapping_add(t.tcs.oentry);
        let header = match read_page(e, header_la & !0xFFF, false) {
            Ok(page) => match Header::decode(&page) {
                Ok(h) => h,
                Err(err) => return Start::Trap(format!("the enclave header is invalid: {err}")),
            },
            Err(fault) => return Start::Fault(fault),
        };
        let mrenclave: [u8; 32] = match p.epc().lock(t.mode.secs) {
            Some(secs) => s::bytes(secs.data(), 64),
            None => return Start::Fault(Exception::GP0),
        };
        // Code fetch: every code page must be an executable page of this enclave, every entry.
        let mut code = Vec::new();
        let cached = self.modules.lock().get(&mrenclave).map(|(m, _)| m.clone());
        let pages = header.code_len.div_ceil(4096);
        for i in 0..pages {
            match read_page(e, t.mode.base + header.code_offset + i * 4096, true) {
                Ok(page) if cached.is_none() => code.extend_from_slice(&page),
                Ok(_) => {}
                Err(fault) => return Start::Fault(fault),
            }
        }
        let module = match cached {
            Some(m) => m,
            None => {
                code.truncate(header.code_len as usize);
                let instrumented = match super::instrument::instrument(&code) {
                    Ok(bytes) => bytes,
                    Err(err) => return Start::Trap(format!("the enclave module is not acceptable: {err}")),
                };
                match Module::new(&self.engine, &instrumented[..]) {
                    Ok(m) => {
                        self.modules.lock().insert(mrenclave, (m.clone(), header.clone()));
                        m
                    }
                    Err(err) => return Start::Trap(format!("the enclave module does not compile: {err}")),
                }
            }
        };
        let Some(name) = header.ecalls.get(args[0] as usize) else {
            return Start::Exit(wasm_abi::status::NO_SUCH_ECALL);
        };
        let heap_pages = (header.heap_len / 4096) as usize;
        let run = Run {
            platform: Arc::clone(p),
            mem: e.mem.boxed_clone(),
            mode: t.mode,
            heap_base: t.mode.base + header.heap_offset,
            memory: None,
            present: vec![None; heap_pages],
            touched: Vec::new(),
            pending: None,
            window: None,
            last: None,
        };
        let mut store = Store::new(&self.engine, run);
        let wasm_pages = (header.heap_len / wasm_abi::WASM_PAGE) as u32;
        let memory = match Memory::new(&mut store, MemoryType::new(wasm_pages, Some(wasm_pages))) {
            Ok(m) => m,
            Err(err) => return Start::Trap(format!("cannot create the enclave heap: {err}")),
        };
        store.data_mut().memory = Some(memory);
        let instance = linker(&self.engine)
            .and_then(|mut l| {
                l.define(super::abi::MEMORY.0, super::abi::MEMORY.1, memory)?;
                Ok(l)
            })
            .and_then(|l| l.instantiate_and_start(&mut store, &module));
        let instance = match instance {
            Ok(i) => i,
            Err(err) => return Start::Trap(format!("the enclave module cannot be instantiated: {err}")),
        };
        let globals = super::instrument::WINDOW_GLOBALS.map(|g| instance.get_global(&store, g));
        if let [Some(a), Some(b), Some(c), Some(d)] = globals {
            store.data_mut().window = Some([a, b, c, d]);
        }
        let Some(func) = instance.get_func(&store, &format!("{}{name}", super::abi::ECALL_PREFIX)) else {
            return Start::Trap(format!("ECALL {name} is not exported"));
        };
        let _ = store.set_fuel(FUEL_SLICE);
        let inputs =
            [Val::I64(args[1] as i64), Val::I64(args[2] as i64), Val::I64(args[3] as i64), Val::I64(args[4] as i64)];
        let mut outputs = [Val::I64(0)];
        let r = func.call_resumable(&mut store, &inputs, &mut outputs);
        Start::Running(Box::new(store), r, outputs)
    }

    /// Ends an entry: dirty pages back to EPC, then EEXIT or AEX (SGX.md §6.22–6.23).
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        p: &Arc<Platform>,
        t: &Thread,
        cssa: u32,
        epoch: u64,
        regs: &mut Gprs,
        return_to: u64,
        store: Option<Store<Run>>,
        outcome: Outcome,
        outputs: [Val; 1],
    ) -> EnclaveExit {
        let mut store = store;
        let mut mem: Box<dyn AddressSpace> = match store.as_mut() {
            Some(store) => {
                if let Some(memory) = store.data().memory {
                    let (data, run) = memory.data_and_store_mut(&mut *store);
                    run.write_back(data);
                    run.invalidate();
                }
                store.data().mem.boxed_clone()
            }
            None => return self.finish_without_store(p, t, cssa, epoch, regs, return_to, outcome),
        };
        let aep = Self::aep(p, t);
        match outcome {
            Outcome::Exit(result) => {
                Self::set_tcs(p, t, vsgx_isa::tcs_state::INACTIVE, None);
                Self::leave_epoch(p, &t.mode, epoch);
                Self::eexit_regs(regs, result, aep, return_to);
                EnclaveExit::Eexit
            }
            Outcome::Aex(cause, call) => {
                let cause = Self::delivered(cause);
                let gpr = Self::read_gprsgx(p, mem.as_mut(), t, cssa);
                Self::write_ssa(
                    p,
                    mem.as_mut(),
                    t,
                    cssa,
                    &cause,
                    Gprsgx { ursp: gpr.ursp, urbp: gpr.urbp, ..Gprsgx::default() },
                );
                if let SuspendedCall::Dead(msg) = &call {
                    self.traps.lock().insert(t.tcs_page, msg.clone());
                }
                self.suspended.lock().insert((t.tcs_page, cssa), Suspended { store, call, outputs, return_to });
                Self::set_tcs(p, t, vsgx_isa::tcs_state::INACTIVE, Some(cssa + 1));
                Self::leave_epoch(p, &t.mode, epoch);
                Self::aex_regs(regs, aep, gpr.ursp, gpr.urbp);
                EnclaveExit::Aex(cause)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_without_store(
        &self,
        p: &Arc<Platform>,
        t: &Thread,
        cssa: u32,
        epoch: u64,
        regs: &mut Gprs,
        return_to: u64,
        outcome: Outcome,
    ) -> EnclaveExit {
        let aep = Self::aep(p, t);
        match outcome {
            Outcome::Exit(result) => {
                Self::set_tcs(p, t, vsgx_isa::tcs_state::INACTIVE, None);
                Self::leave_epoch(p, &t.mode, epoch);
                Self::eexit_regs(regs, result, aep, return_to);
                EnclaveExit::Eexit
            }
            Outcome::Aex(cause, call) => {
                let cause = Self::delivered(cause);
                if let SuspendedCall::Dead(msg) = &call {
                    self.traps.lock().insert(t.tcs_page, msg.clone());
                }
                self.suspended
                    .lock()
                    .insert((t.tcs_page, cssa), Suspended { store: None, call, outputs: [Val::I64(0)], return_to });
                Self::set_tcs(p, t, vsgx_isa::tcs_state::INACTIVE, Some(cssa + 1));
                Self::leave_epoch(p, &t.mode, epoch);
                Self::aex_regs(regs, aep, regs.rsp, regs.rbp);
                EnclaveExit::Aex(cause)
            }
        }
    }

    fn aep(p: &Platform, t: &Thread) -> u64 {
        p.epc().lock(t.tcs_page).map_or(0, |slot| s::u64_at(slot.data(), 40))
    }

    /// A #PF is delivered with the low 12 bits of CR2 cleared (SGX.md §6.23 step 4).
    fn delivered(cause: AexCause) -> AexCause {
        match cause {
            AexCause::Exception(Exception::PageFault { linear, error_code }) => {
                AexCause::Exception(Exception::PageFault { linear: linear & !0xFFF, error_code })
            }
            other => other,
        }
    }

    fn eexit_regs(regs: &mut Gprs, result: i64, aep: u64, return_to: u64) {
        regs.rax = vsgx_isa::leaf::Enclu::Eexit as u64;
        regs.rdi = result as u64;
        regs.rcx = aep;
        regs.rip = return_to;
    }

    /// The synthetic state after an AEX (SGX.md §6.23).
    fn aex_regs(regs: &mut Gprs, aep: u64, ursp: u64, urbp: u64) {
        regs.rax = vsgx_isa::leaf::Enclu::Eresume as u64;
        regs.rcx = aep;
        regs.rdx = 0;
        regs.rsi = 0;
        regs.rdi = 0;
        regs.r8_r15 = [0; 8];
        regs.rsp = ursp;
        regs.rbp = urbp;
        regs.rip = aep;
        regs.rflags &= !vsgx_isa::cpu::rflags::STATUS_MASK;
    }
}
