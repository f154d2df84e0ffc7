//! Helpers for WebAssembly enclaves: build, sign, launch, call.

use vsgx_hw::exec::image::{ImageParams, build_image, read_header};
use vsgx_hw::os::default_base;
use vsgx_isa::Sigstruct;
use vsgx_isa::cpu::{AexCause, Cpl, Cpu, EnclaveExit, Exception, Gprs, LeafStatus};
use vsgx_isa::leaf::Enclu;
use vsgx_isa::sgxs::LoadPlan;
use vsgx_isa::signing::SigningKey;

use super::{KEY_PEM, Machine};

pub const AEP: u64 = 0x40_2000;
pub const RIP: u64 = 0x40_1000;

/// A launched WebAssembly enclave.
pub struct Wasm {
    pub base: u64,
    pub secs: u64,
    pub pages: Vec<(u64, u64)>, // (offset, EPC)
    pub header: vsgx_isa::wasm_abi::Header,
    pub mrenclave: [u8; 32],
}

impl Wasm {
    pub fn tcs(&self) -> u64 {
        self.base + 0x1000
    }
    pub fn epc_of(&self, offset: u64) -> u64 {
        self.pages.iter().find(|(o, _)| *o == offset).map(|(_, e)| *e).expect("page")
    }
}

pub fn wat(text: &str) -> Vec<u8> {
    wat::parse_str(text).expect("valid WAT")
}

pub fn signed(module: &[u8], params: &ImageParams) -> (Vec<u8>, Sigstruct) {
    let img = build_image(module, params).expect("image builds");
    let key = SigningKey::from_pem(KEY_PEM).unwrap();
    let mut body = img.body;
    body.date = 0x2026_0101;
    let sig = key.sign(&body, img.mrenclave).unwrap();
    (img.sgxs, sig)
}

pub fn launch_image(m: &mut Machine, sgxs: &[u8], sig: &Sigstruct, slot: u64) -> Result<Wasm, LeafStatus> {
    let plan = LoadPlan::from_sgxs(sgxs).unwrap();
    let header = read_header(&plan).unwrap();
    let base = default_base(plan.size, true) + slot * plan.size.max(1 << 30);
    let built = m.os.build(&plan, sig, base).expect("build");
    match m.os.einit(built.secs, sig).unwrap() {
        LeafStatus::Success => {}
        other => return Err(other),
    }
    let pages = plan.pages.iter().map(|p| p.offset).zip(built.pages.iter().copied()).collect();
    Ok(Wasm { base, secs: built.secs, pages, header, mrenclave: sig.enclavehash })
}

pub fn launch(m: &mut Machine, module: &[u8], params: &ImageParams, slot: u64) -> Wasm {
    let (sgxs, sig) = signed(module, params);
    launch_image(m, &sgxs, &sig, slot).expect("EINIT succeeds")
}

/// Calls ECALL `name` with `input`; answers interrupts with ERESUME and hands every other AEX to
/// `on_aex` (which may fix things and return true to resume). Returns (result, output, AEXs).
pub fn call_with(
    m: &mut Machine,
    w: &Wasm,
    name: &str,
    input: &[u8],
    mut on_aex: impl FnMut(&mut Machine, Exception) -> bool,
) -> Result<(i64, Vec<u8>, u32), Exception> {
    let index = w.header.ecall(name).expect("ECALL exists") as u64;
    let in_la = m.put_bytes(input, 4096);
    let out_la = m.put_bytes(&[0; 8192], 4096);
    m.os.cpu().set_cpl(Cpl::Ring3);
    let mut regs =
        Gprs { rbx: w.tcs(), rcx: AEP, rdi: index, rsi: in_la, rdx: input.len() as u64, rip: RIP, ..Gprs::default() };
    regs.r8_r15[0] = out_la;
    regs.r8_r15[1] = 8192;
    let mut aexs = 0;
    let mut exit = m.os.cpu().enclu_leaf(Enclu::Eenter, &mut regs);
    let result = loop {
        match exit {
            Ok(EnclaveExit::Eexit) => break regs.rdi as i64,
            Ok(EnclaveExit::Aex(cause)) => {
                aexs += 1;
                assert_eq!((regs.rax, regs.rip, regs.rcx, regs.rbx), (3, AEP, AEP, w.tcs()), "synthetic AEX state");
                if let AexCause::Exception(e) = cause {
                    m.os.cpu().set_cpl(Cpl::Ring0);
                    let resume = on_aex(m, e);
                    m.os.cpu().set_cpl(Cpl::Ring3);
                    if !resume {
                        m.os.cpu().set_cpl(Cpl::Ring0);
                        return Err(e);
                    }
                }
                regs.rbx = w.tcs();
                regs.rcx = AEP;
                exit = m.os.cpu().enclu_leaf(Enclu::Eresume, &mut regs);
            }
            Err(e) => {
                m.os.cpu().set_cpl(Cpl::Ring0);
                return Err(e);
            }
        }
    };
    assert_eq!((regs.rip, regs.rcx), (RIP + 3, AEP), "EEXIT returns after the EENTER");
    m.os.cpu().set_cpl(Cpl::Ring0);
    let n = result.clamp(0, 8192) as usize;
    let out = m.read(out_la, n);
    m.os.reset_scratch();
    Ok((result, out, aexs))
}

pub fn call(m: &mut Machine, w: &Wasm, name: &str, input: &[u8]) -> (i64, Vec<u8>) {
    let (r, out, _) = call_with(m, w, name, input, |_, e| panic!("unexpected AEX: {e}")).expect("no fault");
    (r, out)
}
