//! The enclave SDK: ECALLs with the untrusted-runtime loop (EENTER, ERESUME after interrupts and
//! after the driver reloads an evicted page), EPC-loss detection and recovery by rebuilding
//! (DESIGN §6, SGX.md §10.3).

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

use vsgx_isa::cpu::{AexCause, Cpu, EnclaveExit, Exception, Gprs};
use vsgx_isa::leaf::Enclu;
use vsgx_isa::{ArchStruct, Sigstruct, wasm_abi};

use crate::driver::{Driver, EnclaveId, EnclaveState};
use crate::{GuestError, NO_HEADER_PAGE};

/// Where untrusted code resumes after an AEX and returns after EEXIT (any canonical address
/// outside every enclave; the model does not execute untrusted code).
const AEP: u64 = 0x7FFF_0000_1000;
const RETURN_RIP: u64 = 0x7FFF_0000_2000;
/// Most ERESUMEs per call before the SDK gives up (a livelocked enclave).
const MAX_RESUMES: u32 = 1_000_000;

/// What an ECALL returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallOutcome {
    /// The ECALL's result (≥ 0: output length; < 0: the enclave's error code).
    pub result: i64,
    /// The output bytes.
    pub output: Vec<u8>,
    /// AEXs taken (interrupts).
    pub aexs: u32,
}

impl<C: Cpu> Driver<C> {
    /// Calls ECALL number `ecall` of an enclave with `input`, allowing `out_cap` output bytes.
    ///
    /// Before EENTER the pages an entry needs (SECS, TCS, SSA frames, entry and code pages) are
    /// made resident and stay so for the call. An SGX #PF on a page the driver evicted is fixed
    /// by reloading it (ELDU, possibly evicting other pages) and the enclave is resumed. An EPCM
    /// fault on any other page, or a reload that fails, means the enclave's EPC is gone: the
    /// enclave is marked lost and [`GuestError::EnclaveLost`] returned.
    pub fn call(&mut self, id: EnclaveId, ecall: u64, input: &[u8], out_cap: usize) -> Result<CallOutcome, GuestError> {
        let (base, tcs_offset) = {
            let e = self.enclave(id).ok_or(GuestError::NoSuchEnclave(id.0))?;
            if e.state == EnclaveState::Lost {
                return Err(GuestError::EnclaveLost(id.0));
            }
            (e.base, *e.tcs.first().ok_or(GuestError::NoTcs(id.0))?)
        };
        let tcs = base + tcs_offset;
        let in_pages = self.kernel().stage(input)?;
        let out_pages = match self.kernel().stage(&vec![0u8; out_cap.max(1)]) {
            Ok(p) => p,
            Err(e) => {
                self.give_back(&in_pages, &[]);
                return Err(e);
            }
        };
        let contiguous = |pages: &[u64]| pages.windows(2).all(|w| w[1] == w[0] + 4096);
        if !contiguous(&in_pages) || !contiguous(&out_pages) {
            self.give_back(&in_pages, &out_pages);
            return Err(GuestError::OutOfRam);
        }
        let mut regs = Gprs {
            rbx: tcs,
            rcx: AEP,
            rdi: ecall,
            rsi: in_pages[0],
            rdx: input.len() as u64,
            rip: RETURN_RIP,
            ..Gprs::default()
        };
        regs.r8_r15[0] = out_pages[0];
        regs.r8_r15[1] = out_cap as u64;
        let mut aexs = 0;
        self.reclaim.running = Some(id);
        let outcome = self.run(id, tcs, &mut regs, &mut aexs);
        self.reclaim.running = None;
        let result = match outcome {
            Ok(result) => result,
            Err(err) => {
                if matches!(err, GuestError::EnclaveLost(_)) {
                    self.mark_lost(id);
                }
                self.give_back(&in_pages, &out_pages);
                return Err(err);
            }
        };
        let n = usize::try_from(result).unwrap_or(0).min(out_cap);
        let mut output = vec![0u8; n];
        let read = self.kernel().cpu().read(out_pages[0], &mut output).map_err(GuestError::Fault);
        self.give_back(&in_pages, &out_pages);
        read?;
        Ok(CallOutcome { result, output, aexs })
    }

    /// EENTER, then ERESUME after every interrupt and every fault on an evicted page, until EEXIT.
    fn run(&mut self, id: EnclaveId, tcs: u64, regs: &mut Gprs, aexs: &mut u32) -> Result<i64, GuestError> {
        self.prepare_entry(id)?;
        let mut leaf = Enclu::Eenter;
        let mut resumes = 0u32;
        loop {
            let exit = self.kernel().as_user(|cpu| cpu.enclu_leaf(leaf, regs));
            match exit {
                Ok(EnclaveExit::Eexit) => return Ok(regs.rdi as i64),
                Ok(EnclaveExit::Aex(cause)) => {
                    if resumes >= MAX_RESUMES {
                        // A livelocked enclave (or one whose working set cannot fit).
                        let f = match cause {
                            AexCause::Exception(f) => f,
                            AexCause::Interrupt => Exception::GP0,
                        };
                        return Err(GuestError::EnclaveFault(f));
                    }
                    resumes += 1;
                    match cause {
                        AexCause::Interrupt => *aexs += 1,
                        AexCause::Exception(f) if f.is_epcm_fault() => self.page_in(id, f)?,
                        AexCause::Exception(f) => return Err(GuestError::EnclaveFault(f)),
                    }
                    regs.rbx = tcs;
                    regs.rcx = AEP;
                    leaf = Enclu::Eresume;
                }
                // EENTER/ERESUME itself faulted (registers unchanged) on a TCS or SSA page.
                Err(f) if f.is_epcm_fault() && resumes < MAX_RESUMES => {
                    resumes += 1;
                    self.page_in(id, f)?;
                }
                Err(f) if f.is_epcm_fault() => return Err(GuestError::EnclaveLost(id.0)),
                Err(f) => return Err(GuestError::Fault(f)),
            }
        }
    }

    /// Handles an SGX #PF of enclave `id`: reloads the page if the driver evicted it; any other
    /// EPCM fault means the EPC is gone.
    fn page_in(&mut self, id: EnclaveId, f: Exception) -> Result<(), GuestError> {
        let Exception::PageFault { linear, .. } = f else { return Err(GuestError::EnclaveLost(id.0)) };
        match self.evicted_by_us(id, linear) {
            Some(offset) => self.ensure_resident(id, offset),
            None => Err(GuestError::EnclaveLost(id.0)),
        }
    }

    fn give_back(&mut self, a: &[u64], b: &[u64]) {
        self.kernel().free_run(a);
        self.kernel().free_run(b);
    }
}

/// Re-provisioning hook: runs after a rebuild, before the call is retried (e.g. restores state
/// from sealed data on the same platform, or fetches secrets again after a migration).
pub type Reprovision<C> = Box<dyn FnMut(&mut Driver<C>, EnclaveId) -> Result<(), GuestError>>;

/// An enclave the SDK can rebuild from its image when its EPC is lost.
pub struct ManagedEnclave<C: Cpu> {
    id: EnclaveId,
    sgxs: Vec<u8>,
    sig: Sigstruct,
    /// The WebAssembly header; `None` for an enclave whose code is not WebAssembly (x86 code from
    /// another toolchain): it loads and initializes, but nothing of it can run on this model.
    header: Option<wasm_abi::Header>,
    reprovision: Option<Reprovision<C>>,
    rebuilds: u32,
}

impl<C: Cpu> core::fmt::Debug for ManagedEnclave<C> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ManagedEnclave").field("id", &self.id).field("rebuilds", &self.rebuilds).finish_non_exhaustive()
    }
}

impl<C: Cpu> ManagedEnclave<C> {
    /// Loads an enclave image (SGXS + SIGSTRUCT bytes) and keeps it for rebuilds.
    pub fn load(
        driver: &mut Driver<C>,
        sgxs: &[u8],
        sig: &[u8],
        reprovision: Option<Reprovision<C>>,
    ) -> Result<Self, GuestError> {
        let sig = Sigstruct::from_bytes(sig).map_err(|_| GuestError::BadSigstruct)?;
        let header = match crate::image_header(sgxs) {
            Ok(header) => Some(header),
            // Any valid SGXS + SIGSTRUCT pair loads (DESIGN §8), WebAssembly or not.
            Err(GuestError::Header(wasm_abi::HeaderError::Magic | wasm_abi::HeaderError::Layout(NO_HEADER_PAGE))) => {
                None
            }
            Err(e) => return Err(e),
        };
        let id = driver.load(sgxs, &sig)?;
        Ok(Self { id, sgxs: sgxs.to_vec(), sig, header, reprovision, rebuilds: 0 })
    }

    /// The current driver id (changes after a rebuild).
    pub fn id(&self) -> EnclaveId {
        self.id
    }

    /// How many times the enclave was rebuilt after an EPC loss.
    pub fn rebuilds(&self) -> u32 {
        self.rebuilds
    }

    /// The ECALL names (none when the enclave's code is not WebAssembly).
    pub fn ecalls(&self) -> &[alloc::string::String] {
        self.header.as_ref().map_or(&[], |h| &h.ecalls)
    }

    /// Whether the enclave's code is WebAssembly, i.e. can run here.
    pub fn runs_here(&self) -> bool {
        self.header.is_some()
    }

    /// Calls ECALL `name`. If the enclave was lost, it is torn down, rebuilt from its image,
    /// re-provisioned, and the call retried once; without a recovery hook `EnclaveLost` is returned.
    pub fn call(
        &mut self,
        driver: &mut Driver<C>,
        name: &str,
        input: &[u8],
        out_cap: usize,
    ) -> Result<CallOutcome, GuestError> {
        let ecall = self.header.as_ref().and_then(|h| h.ecall(name)).ok_or(GuestError::NoSuchEcall)? as u64;
        match driver.call(self.id, ecall, input, out_cap) {
            Err(GuestError::EnclaveLost(_)) if self.reprovision.is_some() => {
                self.rebuild(driver)?;
                driver.call(self.id, ecall, input, out_cap)
            }
            other => other,
        }
    }

    /// Destroys the lost instance and builds a fresh one from the image, then re-provisions it.
    pub fn rebuild(&mut self, driver: &mut Driver<C>) -> Result<(), GuestError> {
        driver.destroy(self.id)?;
        self.id = driver.load(&self.sgxs, &self.sig)?;
        self.rebuilds += 1;
        if let Some(hook) = self.reprovision.as_mut() {
            hook(driver, self.id)?;
        }
        Ok(())
    }
}
