//! Key derivation (SGX.md §8): the KEYDEP serialization, EGETKEY, and the keys EREPORT and EINIT
//! compute internally.
//!
//! The derivation function itself is a **MODEL CHOICE** (§8.3): `AES-128-CMAC(K_ROOT, KEYDEP)`. What is
//! architectural, and what the tests here pin down, is *which inputs change which key* (§8.1): a key
//! software derives with EGETKEY must equal the one EREPORT/EINIT compute whenever the SDM says so, and
//! differ whenever an input it depends on differs.

use vsgx_isa::cpu::Exception;
use vsgx_isa::signing::HARDCODED_PKCS1_5_PADDING;
use vsgx_isa::status::SgxError;
use vsgx_isa::{
    ArchStruct, Attributes, AttributesFlags, Einittoken, Keyname, Keypolicy, Keyrequest, Report, Secs, Targetinfo,
};

use crate::crypto::aes_cmac;

/// Length of the serialized key dependencies.
pub const KEYDEP_SIZE: usize = 672;

/// Domain-separation label at the start of every KEYDEP block (**MODEL CHOICE**, §8.3).
pub const KEYDEP_LABEL: [u8; 16] = *b"SGXMODEL-KDF-V1\0";

/// The SDM's TMP_KEYDEPENDENCIES: every input of one key derivation (§8.3).
///
/// `Default` is all zero. `Debug` redacts the fused secrets (SEAL_KEY_FUSES, OWNEREPOCH).
#[derive(Clone, PartialEq, Eq)]
pub struct KeyDependencies {
    /// KEYNAME.
    pub keyname: u16,
    /// KEYPOLICY.
    pub keypolicy: u16,
    /// ISVPRODID.
    pub isvprodid: u16,
    /// ISVSVN.
    pub isvsvn: u16,
    /// CONFIGSVN.
    pub configsvn: u16,
    /// MISCSELECT.
    pub miscselect: u32,
    /// MISCMASK.
    pub miscmask: u32,
    /// ISVEXTPRODID.
    pub isvextprodid: [u8; 16],
    /// ISVFAMILYID.
    pub isvfamilyid: [u8; 16],
    /// OWNEREPOCH (CR_SGXOWNEREPOCH, or 0 for the provisioning keys).
    pub ownerepoch: [u8; 16],
    /// SEAL_KEY_FUSES (CR_SEAL_FUSES, or 0 for the PROVISION key).
    pub seal_key_fuses: [u8; 16],
    /// CPUSVN.
    pub cpusvn: [u8; 16],
    /// ATTRIBUTES.
    pub attributes: Attributes,
    /// ATTRIBUTEMASK.
    pub attributemask: Attributes,
    /// MRENCLAVE.
    pub mrenclave: [u8; 32],
    /// MRSIGNER.
    pub mrsigner: [u8; 32],
    /// KEYID.
    pub keyid: [u8; 32],
    /// CONFIGID.
    pub configid: [u8; 64],
    /// PADDING: the SECS PADDING or HARDCODED_PKCS1_5_PADDING.
    pub padding: [u8; 352],
}

impl Default for KeyDependencies {
    fn default() -> Self {
        Self {
            keyname: 0,
            keypolicy: 0,
            isvprodid: 0,
            isvsvn: 0,
            configsvn: 0,
            miscselect: 0,
            miscmask: 0,
            isvextprodid: [0; 16],
            isvfamilyid: [0; 16],
            ownerepoch: [0; 16],
            seal_key_fuses: [0; 16],
            cpusvn: [0; 16],
            attributes: Attributes::default(),
            attributemask: Attributes::default(),
            mrenclave: [0; 32],
            mrsigner: [0; 32],
            keyid: [0; 32],
            configid: [0; 64],
            padding: [0; 352],
        }
    }
}

impl core::fmt::Debug for KeyDependencies {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyDependencies")
            .field("keyname", &self.keyname)
            .field("keypolicy", &format_args!("{:#x}", self.keypolicy))
            .field("isvprodid", &self.isvprodid)
            .field("isvsvn", &self.isvsvn)
            .field("configsvn", &self.configsvn)
            .field("miscselect", &format_args!("{:#x}", self.miscselect))
            .field("miscmask", &format_args!("{:#x}", self.miscmask))
            .field("isvextprodid", &Hex(&self.isvextprodid))
            .field("isvfamilyid", &Hex(&self.isvfamilyid))
            .field("ownerepoch", &"<redacted>")
            .field("seal_key_fuses", &"<redacted>")
            .field("cpusvn", &Hex(&self.cpusvn))
            .field("attributes", &self.attributes)
            .field("attributemask", &self.attributemask)
            .field("mrenclave", &Hex(&self.mrenclave))
            .field("mrsigner", &Hex(&self.mrsigner))
            .field("keyid", &Hex(&self.keyid))
            .field("configid", &Hex(&self.configid))
            .field("padding_is_hardcoded", &(self.padding == HARDCODED_PKCS1_5_PADDING))
            .finish()
    }
}

impl KeyDependencies {
    /// Serializes to the 672-byte KEYDEP block of §8.3 (**MODEL CHOICE**): integers little-endian,
    /// CET bytes 26..28 and reserved bytes 36..48 zero.
    pub fn encode(&self) -> [u8; KEYDEP_SIZE] {
        let mut b = [0u8; KEYDEP_SIZE];
        let mut put = |off: usize, bytes: &[u8]| b[off..off + bytes.len()].copy_from_slice(bytes);
        put(0, &KEYDEP_LABEL);
        put(16, &self.keyname.to_le_bytes());
        put(18, &self.keypolicy.to_le_bytes());
        put(20, &self.isvprodid.to_le_bytes());
        put(22, &self.isvsvn.to_le_bytes());
        put(24, &self.configsvn.to_le_bytes());
        // 26..28: CET_ATTRIBUTES and CET_ATTRIBUTES_MASK, always 0 (CET is not modelled).
        put(28, &self.miscselect.to_le_bytes());
        put(32, &self.miscmask.to_le_bytes());
        // 36..48: reserved.
        put(48, &self.isvextprodid);
        put(64, &self.isvfamilyid);
        put(80, &self.ownerepoch);
        put(96, &self.seal_key_fuses);
        put(112, &self.cpusvn);
        put(128, self.attributes.bytes());
        put(144, self.attributemask.bytes());
        put(160, &self.mrenclave);
        put(192, &self.mrsigner);
        put(224, &self.keyid);
        put(256, &self.configid);
        put(320, &self.padding);
        b
    }
}

/// `derivekey()` of the SDM: `AES-128-CMAC(K_ROOT, KEYDEP(dep))` (**MODEL CHOICE**, §8.3).
pub fn derive_key(k_root: &[u8; 16], dep: &KeyDependencies) -> [u8; 16] {
    aes_cmac(k_root, &dep.encode())
}

/// The platform's key material (§8.4): fused secrets plus the per-boot report KEYID.
///
/// `Debug` shows only CPUSVN and the report KEYID (both appear in every REPORT), never the secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct PlatformKeys {
    /// K_ROOT: the per-platform root of every derived key (stands in for the fuses).
    pub k_root: [u8; 16],
    /// CR_SEAL_FUSES.
    pub seal_fuses: [u8; 16],
    /// CR_SGXOWNEREPOCH.
    pub owner_epoch: [u8; 16],
    /// CR_CPUSVN.
    pub cpusvn: [u8; 16],
    /// CR_REPORT_KEYID (new each power cycle).
    pub report_keyid: [u8; 32],
}

impl core::fmt::Debug for PlatformKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PlatformKeys")
            .field("k_root", &"<redacted>")
            .field("seal_fuses", &"<redacted>")
            .field("owner_epoch", &"<redacted>")
            .field("cpusvn", &Hex(&self.cpusvn))
            .field("report_keyid", &Hex(&self.report_keyid))
            .finish()
    }
}

/// What key derivation reads from the current enclave's SECS, including the hidden SECS state
/// (ISVFAMILYID, ISVEXTPRODID, PADDING) that EINIT copies from the SIGSTRUCT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnclaveIdentity {
    /// SECS.ATTRIBUTES (INIT = 1 once initialized).
    pub attributes: Attributes,
    /// SECS.MISCSELECT.
    pub miscselect: u32,
    /// SECS.MRENCLAVE.
    pub mrenclave: [u8; 32],
    /// SECS.MRSIGNER.
    pub mrsigner: [u8; 32],
    /// SECS.ISVPRODID.
    pub isvprodid: u16,
    /// SECS.ISVSVN.
    pub isvsvn: u16,
    /// SECS.CONFIGID.
    pub configid: [u8; 64],
    /// SECS.CONFIGSVN.
    pub configsvn: u16,
    /// ISVFAMILYID (hidden SECS state).
    pub isvfamilyid: [u8; 16],
    /// ISVEXTPRODID (hidden SECS state).
    pub isvextprodid: [u8; 16],
    /// PADDING (hidden SECS state): `EM[0..352]` of the SIGSTRUCT signature.
    pub padding: [u8; 352],
}

impl EnclaveIdentity {
    /// Collects the identity from the architectural SECS fields plus the hidden state the caller keeps.
    pub fn from_secs(secs: &Secs, isvfamilyid: [u8; 16], isvextprodid: [u8; 16], padding: [u8; 352]) -> Self {
        Self {
            attributes: secs.attributes,
            miscselect: secs.miscselect,
            mrenclave: secs.mrenclave,
            mrsigner: secs.mrsigner,
            isvprodid: secs.isvprodid,
            isvsvn: secs.isvsvn,
            configid: secs.configid,
            configsvn: secs.configsvn,
            isvfamilyid,
            isvextprodid,
            padding,
        }
    }

    /// The TARGETINFO naming this enclave (attributes as they are, so INIT = 1 for an initialized
    /// enclave), as a self-TARGETINFO built from its REPORT would be.
    pub fn targetinfo(&self) -> Targetinfo {
        let mut ti = Targetinfo::zeroed();
        ti.measurement = self.mrenclave;
        ti.attributes = self.attributes;
        ti.configsvn = self.configsvn;
        ti.miscselect = self.miscselect;
        ti.configid = self.configid;
        ti
    }

    fn has(&self, flag: AttributesFlags) -> bool {
        self.attributes.flags & flag.bits() != 0
    }
}

/// "Requested CPUSVN is beyond the current one": some byte `requested[i] > current[i]`
/// (**MODEL CHOICE**, §8.4; the SDM leaves the comparison implementation-specific).
pub fn cpusvn_beyond(requested: &[u8; 16], current: &[u8; 16]) -> bool {
    requested.iter().zip(current).any(|(r, c)| r > c)
}

/// How EGETKEY fails (§6.19).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EgetkeyError {
    /// #GP(0): reserved KEYREQUEST bytes or KEYPOLICY bits set, or KSS-only inputs without KSS.
    #[error("EGETKEY #GP(0): malformed KEYREQUEST")]
    GeneralProtection,
    /// ZF = 1 with this code in RAX; the output is untouched.
    #[error("EGETKEY failed: {}", .0.name())]
    Code(SgxError),
}

impl EgetkeyError {
    /// The fault to raise, if this outcome is a fault rather than a return code.
    pub const fn exception(self) -> Option<Exception> {
        match self {
            Self::GeneralProtection => Some(Exception::GP0),
            Self::Code(_) => None,
        }
    }
}

/// Reserved KEYREQUEST byte ranges (§1.12): EGETKEY raises #GP if any byte is non-zero.
pub const KEYREQUEST_RESERVED: [core::ops::Range<usize>; 2] = [6..8, 78..512];

/// EGETKEY's checks and key dependencies (steps 2–3 of §6.19 and the §8.1 table), without deriving.
///
/// Check order: reserved bytes and `KEYPOLICY[15:6]` (#GP); KSS-only inputs without KSS (#GP); then per
/// key: KEYNAME (256), attribute gate (2), CPUSVN (32), ISVSVN (64), and for SEAL CONFIGSVN (64).
pub fn egetkey_dependencies(
    req: &Keyrequest,
    enclave: &EnclaveIdentity,
    platform: &PlatformKeys,
) -> Result<KeyDependencies, EgetkeyError> {
    use EgetkeyError::{Code, GeneralProtection};

    let bytes = req.bytes();
    if KEYREQUEST_RESERVED.iter().any(|r| bytes[r.clone()].iter().any(|&b| b != 0))
        || req.keypolicy & Keypolicy::RESERVED_MASK != 0
    {
        return Err(GeneralProtection);
    }
    if !enclave.has(AttributesFlags::KSS) && (req.keypolicy & Keypolicy::KSS_BITS != 0 || req.configsvn > 0) {
        return Err(GeneralProtection);
    }

    let keyname = Keyname::from_u16(req.keyname).ok_or(Code(SgxError::InvalidKeyname))?;
    let policy = Keypolicy::from_bits_retain(req.keypolicy);
    // A = (ATTRIBUTEMASK | INIT | DEBUG) & SECS.ATTRIBUTES: the `| 0x3` applies to FLAGS only.
    let a = Attributes {
        flags: (req.attributemask.flags | (AttributesFlags::INIT | AttributesFlags::DEBUG).bits())
            & enclave.attributes.flags,
        xfrm: req.attributemask.xfrm & enclave.attributes.xfrm,
    };
    let m = req.miscmask & enclave.miscselect;

    let gate = match keyname {
        Keyname::Einittoken => Some(AttributesFlags::EINITTOKEN_KEY),
        Keyname::Provision | Keyname::ProvisionSeal => Some(AttributesFlags::PROVISIONKEY),
        Keyname::Report | Keyname::Seal => None,
    };
    if gate.is_some_and(|flag| !enclave.has(flag)) {
        return Err(Code(SgxError::InvalidAttribute));
    }
    if keyname != Keyname::Report {
        if cpusvn_beyond(&req.cpusvn, &platform.cpusvn) {
            return Err(Code(SgxError::InvalidCpusvn));
        }
        if req.isvsvn > enclave.isvsvn {
            return Err(Code(SgxError::InvalidIsvsvn));
        }
        if keyname == Keyname::Seal && req.configsvn > enclave.configsvn {
            return Err(Code(SgxError::InvalidIsvsvn));
        }
    }

    let pol = |bit: Keypolicy| policy.contains(bit);
    let isvprodid_unless_no = if pol(Keypolicy::NOISVPRODID) { 0 } else { enclave.isvprodid };
    let (configid, configsvn) = if pol(Keypolicy::CONFIGID) { (enclave.configid, req.configsvn) } else { ([0; 64], 0) };
    let isvfamilyid = if pol(Keypolicy::ISVFAMILYID) { enclave.isvfamilyid } else { [0; 16] };
    let isvextprodid = if pol(Keypolicy::ISVEXTPRODID) { enclave.isvextprodid } else { [0; 16] };

    let mut dep = KeyDependencies { keyname: req.keyname, ..KeyDependencies::default() };
    match keyname {
        Keyname::Seal => {
            dep.isvfamilyid = isvfamilyid;
            dep.isvextprodid = isvextprodid;
            dep.isvprodid = isvprodid_unless_no;
            dep.isvsvn = req.isvsvn;
            dep.ownerepoch = platform.owner_epoch;
            dep.attributes = a;
            dep.attributemask = req.attributemask;
            dep.mrenclave = if pol(Keypolicy::MRENCLAVE) { enclave.mrenclave } else { [0; 32] };
            dep.mrsigner = if pol(Keypolicy::MRSIGNER) { enclave.mrsigner } else { [0; 32] };
            dep.keyid = req.keyid;
            dep.seal_key_fuses = platform.seal_fuses;
            dep.cpusvn = req.cpusvn;
            dep.miscselect = m;
            dep.miscmask = !req.miscmask;
            dep.keypolicy = req.keypolicy;
            dep.configid = configid;
            dep.configsvn = configsvn;
            dep.padding = enclave.padding;
        }
        Keyname::Report => {
            dep.ownerepoch = platform.owner_epoch;
            dep.attributes = enclave.attributes;
            dep.mrenclave = enclave.mrenclave;
            dep.keyid = req.keyid;
            dep.seal_key_fuses = platform.seal_fuses;
            dep.cpusvn = platform.cpusvn;
            dep.miscselect = enclave.miscselect;
            dep.configid = enclave.configid;
            dep.configsvn = enclave.configsvn;
            // §13.7: the constant, exactly as EREPORT uses it.
            dep.padding = HARDCODED_PKCS1_5_PADDING;
        }
        Keyname::Einittoken => {
            dep.isvprodid = enclave.isvprodid;
            dep.isvsvn = req.isvsvn;
            dep.ownerepoch = platform.owner_epoch;
            dep.attributes = a;
            dep.mrsigner = enclave.mrsigner;
            dep.keyid = req.keyid;
            dep.seal_key_fuses = platform.seal_fuses;
            dep.cpusvn = req.cpusvn;
            dep.miscselect = m;
            dep.padding = enclave.padding;
        }
        Keyname::Provision => {
            // OWNEREPOCH, KEYID and SEAL_KEY_FUSES stay 0: the provisioning key survives an owner change
            // and is the same for every platform owner.
            dep.isvprodid = enclave.isvprodid;
            dep.isvsvn = req.isvsvn;
            dep.attributes = a;
            dep.attributemask = req.attributemask;
            dep.mrsigner = enclave.mrsigner;
            dep.cpusvn = req.cpusvn;
            dep.miscselect = m;
            dep.miscmask = !req.miscmask;
            dep.padding = enclave.padding;
        }
        Keyname::ProvisionSeal => {
            // OWNEREPOCH and KEYID 0 like PROVISION, but the seal fuses are mixed in.
            dep.isvfamilyid = isvfamilyid;
            dep.isvextprodid = isvextprodid;
            dep.isvprodid = isvprodid_unless_no;
            dep.isvsvn = req.isvsvn;
            dep.attributes = a;
            dep.attributemask = req.attributemask;
            dep.mrsigner = enclave.mrsigner;
            dep.seal_key_fuses = platform.seal_fuses;
            dep.cpusvn = req.cpusvn;
            dep.miscselect = m;
            dep.miscmask = !req.miscmask;
            dep.keypolicy = req.keypolicy;
            dep.configid = configid;
            dep.configsvn = configsvn;
            dep.padding = enclave.padding;
        }
    }
    Ok(dep)
}

/// EGETKEY (§6.19 steps 2–5) for the enclave `enclave` on `platform`: the 16-byte key, or how it fails.
pub fn egetkey(req: &Keyrequest, enclave: &EnclaveIdentity, platform: &PlatformKeys) -> Result<[u8; 16], EgetkeyError> {
    egetkey_dependencies(req, enclave, platform).map(|dep| derive_key(&platform.k_root, &dep))
}

/// Dependencies of the report key EREPORT uses for `target` (§8.2).
pub fn report_key_dependencies(target: &Targetinfo, platform: &PlatformKeys) -> KeyDependencies {
    KeyDependencies {
        keyname: Keyname::Report as u16,
        ownerepoch: platform.owner_epoch,
        attributes: target.attributes,
        mrenclave: target.measurement,
        miscselect: target.miscselect,
        configid: target.configid,
        configsvn: target.configsvn,
        keyid: platform.report_keyid,
        cpusvn: platform.cpusvn,
        seal_key_fuses: platform.seal_fuses,
        // The SDM names the *reporting* SECS.PADDING; for every validly signed enclave that is this
        // constant, which is what makes it match the target's EGETKEY(REPORT_KEY) (§8.2, §13.7).
        padding: HARDCODED_PKCS1_5_PADDING,
        ..KeyDependencies::default()
    }
}

/// The report key EREPORT MACs a REPORT for `target` with (§8.2). The target enclave gets the same key
/// from EGETKEY(REPORT_KEY, KEYID = REPORT.KEYID).
pub fn report_key(target: &Targetinfo, platform: &PlatformKeys) -> [u8; 16] {
    derive_key(&platform.k_root, &report_key_dependencies(target, platform))
}

/// REPORT.MAC: AES-128-CMAC over `REPORT[0..384)` (REPORTDATA included, KEYID and MAC not).
pub fn report_mac(report_key: &[u8; 16], report: &Report) -> [u8; 16] {
    aes_cmac(report_key, &report.bytes()[Report::MACED])
}

/// Dependencies of the EINITTOKEN key EINIT checks `token` with (§8.2).
pub fn einittoken_key_dependencies(token: &Einittoken, lehash: &[u8; 32], platform: &PlatformKeys) -> KeyDependencies {
    KeyDependencies {
        keyname: Keyname::Einittoken as u16,
        isvprodid: token.isvprodidle,
        isvsvn: token.isvsvnle,
        ownerepoch: platform.owner_epoch,
        attributes: token.maskedattributesle,
        mrsigner: *lehash,
        keyid: token.keyid,
        seal_key_fuses: platform.seal_fuses,
        cpusvn: token.cpusvnle,
        miscselect: token.maskedmiscselectle,
        padding: HARDCODED_PKCS1_5_PADDING,
        ..KeyDependencies::default()
    }
}

/// The EINITTOKEN key for `token` with the executing processor's launch-enclave hash `lehash` (§8.2).
/// A launch enclave signed by that key gets the same key from EGETKEY(EINITTOKEN_KEY).
pub fn einittoken_key(token: &Einittoken, lehash: &[u8; 32], platform: &PlatformKeys) -> [u8; 16] {
    derive_key(&platform.k_root, &einittoken_key_dependencies(token, lehash, platform))
}

/// EINITTOKEN.MAC: AES-128-CMAC over `TOKEN[0..192)`.
pub fn einittoken_mac(key: &[u8; 16], token: &Einittoken) -> [u8; 16] {
    aes_cmac(key, &token.bytes()[Einittoken::MACED])
}

/// Lower-case hex for `Debug`.
struct Hex<'a>(&'a [u8]);

impl core::fmt::Debug for Hex<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INIT: u64 = AttributesFlags::INIT.bits();
    const DEBUG: u64 = AttributesFlags::DEBUG.bits();
    const MODE64: u64 = AttributesFlags::MODE64BIT.bits();
    const PROVISION: u64 = AttributesFlags::PROVISIONKEY.bits();
    const EINITTOKEN: u64 = AttributesFlags::EINITTOKEN_KEY.bits();
    const KSS: u64 = AttributesFlags::KSS.bits();

    fn platform() -> PlatformKeys {
        PlatformKeys {
            k_root: [0x11; 16],
            seal_fuses: [0x22; 16],
            owner_epoch: [0x33; 16],
            cpusvn: [0x05; 16],
            report_keyid: [0x44; 32],
        }
    }

    fn enclave() -> EnclaveIdentity {
        EnclaveIdentity {
            attributes: Attributes { flags: INIT | MODE64, xfrm: 0x3 },
            miscselect: 1,
            mrenclave: [0xE1; 32],
            mrsigner: [0x51; 32],
            isvprodid: 7,
            isvsvn: 3,
            configid: [0; 64],
            configsvn: 0,
            isvfamilyid: [0; 16],
            isvextprodid: [0; 16],
            padding: HARDCODED_PKCS1_5_PADDING,
        }
    }

    fn request(keyname: Keyname, policy: Keypolicy) -> Keyrequest {
        let mut req = Keyrequest::zeroed();
        req.keyname = keyname as u16;
        req.keypolicy = policy.bits();
        req.isvsvn = 3;
        req.cpusvn = [0x05; 16];
        req.attributemask = Attributes { flags: !0, xfrm: !0 };
        req.miscmask = !0;
        req.keyid = [0x77; 32];
        req
    }

    fn seal(policy: Keypolicy) -> Keyrequest {
        request(Keyname::Seal, policy)
    }

    fn key(req: &Keyrequest, enclave: &EnclaveIdentity, platform: &PlatformKeys) -> [u8; 16] {
        egetkey(req, enclave, platform).expect("EGETKEY succeeds")
    }

    #[test]
    fn keydep_layout() {
        let dep = KeyDependencies {
            keyname: 0x0102,
            keypolicy: 0x0304,
            isvprodid: 0x0506,
            isvsvn: 0x0708,
            configsvn: 0x090a,
            miscselect: 0x0b0c_0d0e,
            miscmask: 0x1112_1314,
            isvextprodid: [0x21; 16],
            isvfamilyid: [0x22; 16],
            ownerepoch: [0x23; 16],
            seal_key_fuses: [0x24; 16],
            cpusvn: [0x25; 16],
            attributes: Attributes { flags: 0x3132_3334_3536_3738, xfrm: 0x4142_4344_4546_4748 },
            attributemask: Attributes { flags: 0x5152_5354_5556_5758, xfrm: 0x6162_6364_6566_6768 },
            mrenclave: [0x26; 32],
            mrsigner: [0x27; 32],
            keyid: [0x28; 32],
            configid: [0x29; 64],
            padding: [0x2a; 352],
        };
        let b = dep.encode();
        assert_eq!(&b[0..16], b"SGXMODEL-KDF-V1\0");
        assert_eq!(b[16..18], [0x02, 0x01]);
        assert_eq!(b[18..20], [0x04, 0x03]);
        assert_eq!(b[20..22], [0x06, 0x05]);
        assert_eq!(b[22..24], [0x08, 0x07]);
        assert_eq!(b[24..26], [0x0a, 0x09]);
        assert_eq!(b[26..28], [0, 0], "CET bytes");
        assert_eq!(b[28..32], 0x0b0c_0d0eu32.to_le_bytes());
        assert_eq!(b[32..36], 0x1112_1314u32.to_le_bytes());
        assert!(b[36..48].iter().all(|&x| x == 0), "reserved");
        assert!(b[48..64].iter().all(|&x| x == 0x21));
        assert!(b[64..80].iter().all(|&x| x == 0x22));
        assert!(b[80..96].iter().all(|&x| x == 0x23));
        assert!(b[96..112].iter().all(|&x| x == 0x24));
        assert!(b[112..128].iter().all(|&x| x == 0x25));
        assert_eq!(b[128..136], 0x3132_3334_3536_3738u64.to_le_bytes());
        assert_eq!(b[136..144], 0x4142_4344_4546_4748u64.to_le_bytes());
        assert_eq!(b[144..152], 0x5152_5354_5556_5758u64.to_le_bytes());
        assert_eq!(b[152..160], 0x6162_6364_6566_6768u64.to_le_bytes());
        assert!(b[160..192].iter().all(|&x| x == 0x26));
        assert!(b[192..224].iter().all(|&x| x == 0x27));
        assert!(b[224..256].iter().all(|&x| x == 0x28));
        assert!(b[256..320].iter().all(|&x| x == 0x29));
        assert!(b[320..672].iter().all(|&x| x == 0x2a));

        let zero = KeyDependencies::default().encode();
        assert!(zero[16..].iter().all(|&x| x == 0));
    }

    #[test]
    fn derive_key_is_cmac_of_keydep() {
        let dep = KeyDependencies { keyname: 4, ..Default::default() };
        assert_eq!(derive_key(&[9; 16], &dep), aes_cmac(&[9; 16], &dep.encode()));
        assert_ne!(derive_key(&[9; 16], &dep), derive_key(&[8; 16], &dep));
    }

    #[test]
    fn cpusvn_comparison_is_bytewise() {
        let cur = [5u8; 16];
        assert!(!cpusvn_beyond(&cur, &cur));
        assert!(!cpusvn_beyond(&[0; 16], &cur));
        let mut req = [0u8; 16];
        req[15] = 6;
        assert!(cpusvn_beyond(&req, &cur), "one byte above is beyond, even if others are lower");
    }

    #[test]
    fn local_attestation_report_key_matches_egetkey() {
        let p = platform();
        let mut e = enclave();
        e.attributes.flags |= KSS;
        e.configid = [0xC0; 64];
        e.configsvn = 2;
        let mut ti = Targetinfo::zeroed();
        ti.measurement = e.mrenclave;
        ti.attributes = e.attributes; // INIT = 1
        ti.miscselect = e.miscselect;
        ti.configid = e.configid;
        ti.configsvn = e.configsvn;
        assert_eq!(ti, e.targetinfo());
        let rk = report_key(&ti, &p);

        let mut req = Keyrequest::zeroed();
        req.keyname = Keyname::Report as u16;
        req.keyid = p.report_keyid;
        assert_eq!(key(&req, &e, &p), rk);

        // The REPORT MAC a target checks with its own key.
        let mut report = Report::zeroed();
        report.reportdata = [0xDA; 64];
        report.keyid = p.report_keyid;
        let mac = report_mac(&rk, &report);
        assert_eq!(mac, aes_cmac(&rk, &report.bytes()[..384]));
        report.keyid = [0; 32];
        report.mac = [0xFF; 16];
        assert_eq!(report_mac(&rk, &report), mac, "KEYID and MAC are not covered");
        report.reportdata[63] ^= 1;
        assert_ne!(report_mac(&rk, &report), mac, "REPORTDATA is covered");

        // Without INIT in TARGETINFO, or with another KEYID, the keys differ.
        let mut ti_noinit = ti.clone();
        ti_noinit.attributes.flags &= !INIT;
        assert_ne!(report_key(&ti_noinit, &p), rk);
        req.keyid = [0; 32];
        assert_ne!(key(&req, &e, &p), rk);
    }

    #[test]
    fn report_key_ignores_request_svns_and_cpusvn() {
        let p = platform();
        let e = enclave();
        let mut req = Keyrequest::zeroed();
        req.keyname = Keyname::Report as u16;
        let base = key(&req, &e, &p);
        req.cpusvn = [0xFF; 16]; // beyond, but REPORT_KEY has no SVN checks
        req.isvsvn = 0xFFFF;
        req.attributemask = Attributes { flags: !0, xfrm: !0 };
        req.miscmask = 0x1234;
        assert_eq!(key(&req, &e, &p), base);
    }

    #[test]
    fn seal_mrenclave_policy() {
        let p = platform();
        let req = seal(Keypolicy::MRENCLAVE);
        let k = key(&req, &enclave(), &p);
        let mut other = enclave();
        other.mrenclave[0] ^= 1;
        assert_ne!(key(&req, &other, &p), k, "depends on MRENCLAVE");
        let mut other = enclave();
        other.mrsigner[0] ^= 1;
        assert_eq!(key(&req, &other, &p), k, "independent of MRSIGNER");
    }

    #[test]
    fn seal_mrsigner_policy() {
        let p = platform();
        let req = seal(Keypolicy::MRSIGNER);
        let k = key(&req, &enclave(), &p);
        let mut other = enclave();
        other.mrenclave[0] ^= 1;
        assert_eq!(key(&req, &other, &p), k, "independent of MRENCLAVE");
        let mut other = enclave();
        other.mrsigner[0] ^= 1;
        assert_ne!(key(&req, &other, &p), k, "depends on MRSIGNER");
    }

    #[test]
    fn seal_key_is_bound_to_the_platform() {
        let req = seal(Keypolicy::MRSIGNER);
        let e = enclave();
        let k = key(&req, &e, &platform());
        let mut p = platform();
        p.k_root[0] ^= 1;
        assert_ne!(key(&req, &e, &p), k, "K_ROOT");
        let mut p = platform();
        p.seal_fuses[0] ^= 1;
        assert_ne!(key(&req, &e, &p), k, "seal fuses");
        let mut p = platform();
        p.owner_epoch[0] ^= 1;
        assert_ne!(key(&req, &e, &p), k, "owner epoch");
        let mut p = platform();
        p.report_keyid[0] ^= 1;
        assert_eq!(key(&req, &e, &p), k, "report KEYID is irrelevant to sealing");
    }

    #[test]
    fn provision_key_ignores_owner_epoch_and_seal_fuses() {
        let mut e = enclave();
        e.attributes.flags |= PROVISION;
        let req = request(Keyname::Provision, Keypolicy::empty());
        let k = key(&req, &e, &platform());
        let mut p = platform();
        p.owner_epoch = [0xEE; 16];
        p.seal_fuses = [0xFF; 16];
        assert_eq!(key(&req, &e, &p), k);
        let mut p = platform();
        p.k_root[0] ^= 1;
        assert_ne!(key(&req, &e, &p), k, "still bound to the platform root");
        let mut other_keyid = req.clone();
        other_keyid.keyid = [0; 32];
        assert_eq!(key(&other_keyid, &e, &platform()), k, "KEYID not mixed in");

        // PROVISION_SEAL ignores the owner epoch but not the seal fuses.
        let req = request(Keyname::ProvisionSeal, Keypolicy::empty());
        let k = key(&req, &e, &platform());
        let mut p = platform();
        p.owner_epoch = [0xEE; 16];
        assert_eq!(key(&req, &e, &p), k);
        p.seal_fuses = [0xFF; 16];
        assert_ne!(key(&req, &e, &p), k);
    }

    #[test]
    fn isvsvn_rules() {
        let p = platform();
        let e = enclave(); // ISVSVN 3
        let mut req = seal(Keypolicy::MRSIGNER);
        req.isvsvn = 4;
        assert_eq!(egetkey(&req, &e, &p), Err(EgetkeyError::Code(SgxError::InvalidIsvsvn)));

        // Data sealed by an older version (ISVSVN 2) ...
        let old = EnclaveIdentity { isvsvn: 2, mrenclave: [0x01; 32], ..enclave() };
        req.isvsvn = 2;
        let sealed_by_old = key(&req, &old, &p);
        // ... is unsealable by the newer one asking for ISVSVN 2, whose key differs from its current one.
        assert_eq!(key(&req, &e, &p), sealed_by_old);
        req.isvsvn = 3;
        assert_ne!(key(&req, &e, &p), sealed_by_old);
        // The older version cannot derive the newer key.
        assert_eq!(egetkey(&req, &old, &p), Err(EgetkeyError::Code(SgxError::InvalidIsvsvn)));
    }

    #[test]
    fn cpusvn_rules() {
        let p = platform();
        let e = enclave();
        let mut req = seal(Keypolicy::MRENCLAVE);
        req.cpusvn[4] = 6;
        assert_eq!(egetkey(&req, &e, &p), Err(EgetkeyError::Code(SgxError::InvalidCpusvn)));
        req.cpusvn = [0; 16];
        let older = key(&req, &e, &p);
        req.cpusvn = p.cpusvn;
        assert_ne!(key(&req, &e, &p), older);
    }

    #[test]
    fn keyname_and_attribute_gates() {
        let p = platform();
        let e = enclave();
        let mut req = seal(Keypolicy::MRENCLAVE);
        req.keyname = 5;
        assert_eq!(egetkey(&req, &e, &p), Err(EgetkeyError::Code(SgxError::InvalidKeyname)));
        req.keyname = 0xFFFF;
        assert_eq!(egetkey(&req, &e, &p), Err(EgetkeyError::Code(SgxError::InvalidKeyname)));

        for name in [Keyname::Provision, Keyname::ProvisionSeal] {
            let req = request(name, Keypolicy::empty());
            assert_eq!(egetkey(&req, &e, &p), Err(EgetkeyError::Code(SgxError::InvalidAttribute)), "{name:?}");
        }
        let req = request(Keyname::Einittoken, Keypolicy::empty());
        assert_eq!(egetkey(&req, &e, &p), Err(EgetkeyError::Code(SgxError::InvalidAttribute)));
        let le = EnclaveIdentity { attributes: Attributes { flags: INIT | MODE64 | EINITTOKEN, xfrm: 3 }, ..enclave() };
        assert!(egetkey(&req, &le, &p).is_ok());
    }

    #[test]
    fn check_order_follows_sgx_md() {
        let p = platform();
        let e = enclave();
        // #GP beats the KEYNAME check.
        let mut req = seal(Keypolicy::MRENCLAVE);
        req.keyname = 9;
        req.reserved0 = 1;
        assert_eq!(egetkey(&req, &e, &p), Err(EgetkeyError::GeneralProtection));
        // Attribute gate beats CPUSVN and ISVSVN.
        let mut req = request(Keyname::Provision, Keypolicy::empty());
        req.cpusvn = [0xFF; 16];
        req.isvsvn = 99;
        assert_eq!(egetkey(&req, &e, &p), Err(EgetkeyError::Code(SgxError::InvalidAttribute)));
        // CPUSVN beats ISVSVN.
        let mut req = seal(Keypolicy::MRENCLAVE);
        req.cpusvn = [0xFF; 16];
        req.isvsvn = 99;
        assert_eq!(egetkey(&req, &e, &p), Err(EgetkeyError::Code(SgxError::InvalidCpusvn)));
    }

    #[test]
    fn general_protection_cases() {
        let p = platform();
        let e = enclave();
        let gp = Err(EgetkeyError::GeneralProtection);
        let mut req = seal(Keypolicy::MRENCLAVE);
        req.keypolicy |= Keypolicy::NOISVPRODID.bits();
        assert_eq!(egetkey(&req, &e, &p), gp, "KEYPOLICY bit 2 without KSS");
        for bit in 2..6 {
            let mut req = seal(Keypolicy::MRENCLAVE);
            req.keypolicy |= 1 << bit;
            assert_eq!(egetkey(&req, &e, &p), gp, "KSS policy bit {bit}");
        }
        let mut req = seal(Keypolicy::MRENCLAVE);
        req.configsvn = 1;
        assert_eq!(egetkey(&req, &e, &p), gp, "CONFIGSVN without KSS");
        for bit in 6..16 {
            let mut req = seal(Keypolicy::MRENCLAVE);
            req.keypolicy |= 1 << bit;
            assert_eq!(egetkey(&req, &e, &p), gp, "reserved policy bit {bit}");
        }
        for off in [6usize, 7, 78, 300, 511] {
            let mut bytes = seal(Keypolicy::MRENCLAVE).bytes().to_vec();
            bytes[off] = 1;
            let req = Keyrequest::from_bytes(&bytes).expect("512 bytes");
            assert_eq!(egetkey(&req, &e, &p), gp, "reserved byte {off}");
        }
        assert_eq!(EgetkeyError::GeneralProtection.exception(), Some(Exception::GP0));
        assert_eq!(EgetkeyError::Code(SgxError::InvalidKeyname).exception(), None);
    }

    #[test]
    fn kss_inputs() {
        let p = platform();
        let mut e = enclave();
        e.attributes.flags |= KSS;
        e.configid = [0xC1; 64];
        e.configsvn = 5;
        e.isvfamilyid = [0xF1; 16];
        e.isvextprodid = [0xF2; 16];

        // CONFIGSVN above the enclave's → 64 for SEAL.
        let mut req = seal(Keypolicy::MRSIGNER | Keypolicy::CONFIGID);
        req.configsvn = 6;
        assert_eq!(egetkey(&req, &e, &p), Err(EgetkeyError::Code(SgxError::InvalidIsvsvn)));
        req.configsvn = 5;
        let dep = egetkey_dependencies(&req, &e, &p).expect("valid");
        assert_eq!((dep.configid, dep.configsvn), (e.configid, 5));

        // Without the CONFIGID policy, neither CONFIGID nor CONFIGSVN is mixed in.
        let mut req = seal(Keypolicy::MRSIGNER);
        req.configsvn = 4;
        let dep = egetkey_dependencies(&req, &e, &p).expect("valid");
        assert_eq!((dep.configid, dep.configsvn), ([0; 64], 0));

        let req = seal(Keypolicy::MRSIGNER | Keypolicy::ISVFAMILYID | Keypolicy::ISVEXTPRODID | Keypolicy::NOISVPRODID);
        let dep = egetkey_dependencies(&req, &e, &p).expect("valid");
        assert_eq!(dep.isvfamilyid, e.isvfamilyid);
        assert_eq!(dep.isvextprodid, e.isvextprodid);
        assert_eq!(dep.isvprodid, 0);
        let dep = egetkey_dependencies(&seal(Keypolicy::MRSIGNER), &e, &p).expect("valid");
        assert_eq!((dep.isvfamilyid, dep.isvextprodid, dep.isvprodid), ([0; 16], [0; 16], 7));
    }

    #[test]
    fn debug_is_always_mixed_in() {
        let p = platform();
        let prod = enclave();
        let debug = EnclaveIdentity { attributes: Attributes { flags: INIT | DEBUG | MODE64, xfrm: 3 }, ..enclave() };
        let mut req = seal(Keypolicy::MRENCLAVE);
        req.attributemask = Attributes::default();
        assert_ne!(key(&req, &prod, &p), key(&req, &debug, &p));
        let dep = egetkey_dependencies(&req, &debug, &p).expect("valid");
        assert_eq!(dep.attributes, Attributes { flags: INIT | DEBUG, xfrm: 0 }, "| 0x3 applies to FLAGS only");
        assert_eq!(dep.attributemask, Attributes::default(), "the raw request mask");
    }

    #[test]
    fn attribute_and_misc_masks() {
        let p = platform();
        let e = enclave();
        let mut req = seal(Keypolicy::MRENCLAVE);
        req.attributemask = Attributes { flags: MODE64, xfrm: 0x2 };
        req.miscmask = 0x3;
        let dep = egetkey_dependencies(&req, &e, &p).expect("valid");
        assert_eq!(dep.attributes, Attributes { flags: INIT | MODE64, xfrm: 0x2 });
        assert_eq!(dep.miscselect, 1);
        assert_eq!(dep.miscmask, !0x3);
        assert_eq!(dep.keypolicy, Keypolicy::MRENCLAVE.bits());
        assert_eq!(dep.padding, e.padding);
        // An enclave differing only in a masked-out attribute gets the same key.
        let mut wider = enclave();
        wider.attributes.xfrm = 0x7;
        req.attributemask = Attributes { flags: !0, xfrm: 0x3 };
        assert_eq!(key(&req, &wider, &p), key(&req, &e, &p));
        req.attributemask.xfrm = !0;
        assert_ne!(key(&req, &wider, &p), key(&req, &e, &p));
    }

    #[test]
    fn dependency_table_columns() {
        let p = platform();
        let mut e = enclave();
        e.attributes.flags |= PROVISION | EINITTOKEN | KSS;
        e.configid = [0xC1; 64];
        e.configsvn = 1;
        e.isvfamilyid = [0xF1; 16];
        e.isvextprodid = [0xF2; 16];
        e.padding = [0x5A; 352];
        let all = Keypolicy::all();

        // PROVISION: OWNEREPOCH, KEYID, SEAL_KEY_FUSES 0; KEYPOLICY, KSS fields and MRENCLAVE 0.
        let mut req = request(Keyname::Provision, Keypolicy::empty());
        req.configsvn = 1;
        let d = egetkey_dependencies(&req, &e, &p).expect("valid");
        assert_eq!((d.ownerepoch, d.seal_key_fuses, d.keyid), ([0; 16], [0; 16], [0; 32]));
        assert_eq!((d.keypolicy, d.configsvn, d.configid), (0, 0, [0; 64]));
        assert_eq!((d.mrenclave, d.mrsigner, d.isvprodid), ([0; 32], e.mrsigner, 7));
        assert_eq!((d.attributemask, d.miscmask, d.padding), (req.attributemask, !req.miscmask, e.padding));

        // PROVISION_SEAL: OWNEREPOCH and KEYID 0, fuses and policy-selected fields in.
        let mut req = request(Keyname::ProvisionSeal, all);
        req.configsvn = 1;
        let d = egetkey_dependencies(&req, &e, &p).expect("valid");
        assert_eq!((d.ownerepoch, d.keyid, d.seal_key_fuses), ([0; 16], [0; 32], p.seal_fuses));
        assert_eq!((d.keypolicy, d.configsvn, d.configid), (all.bits(), 1, e.configid));
        assert_eq!((d.isvfamilyid, d.isvextprodid, d.isvprodid), (e.isvfamilyid, e.isvextprodid, 0));
        assert_eq!((d.mrenclave, d.mrsigner), ([0; 32], e.mrsigner), "MRENCLAVE policy has no effect");

        // EINITTOKEN: no masks, no policy, MRSIGNER and ISVPRODID always.
        let req = request(Keyname::Einittoken, Keypolicy::empty());
        let d = egetkey_dependencies(&req, &e, &p).expect("valid");
        assert_eq!((d.attributemask, d.miscmask, d.keypolicy), (Attributes::default(), 0, 0));
        assert_eq!((d.mrenclave, d.mrsigner, d.isvprodid, d.keyid), ([0; 32], e.mrsigner, 7, req.keyid));
        assert_eq!((d.ownerepoch, d.seal_key_fuses, d.padding), (p.owner_epoch, p.seal_fuses, e.padding));

        // REPORT: SECS values, platform CPUSVN, hard-coded padding.
        let mut req = Keyrequest::zeroed();
        req.keyname = Keyname::Report as u16;
        let d = egetkey_dependencies(&req, &e, &p).expect("valid");
        assert_eq!((d.attributes, d.mrenclave, d.mrsigner), (e.attributes, e.mrenclave, [0; 32]));
        assert_eq!((d.cpusvn, d.configid, d.configsvn), (p.cpusvn, e.configid, e.configsvn));
        assert_eq!((d.isvprodid, d.isvsvn, d.isvfamilyid), (0, 0, [0; 16]));
        assert_eq!(d.padding, HARDCODED_PKCS1_5_PADDING);
    }

    #[test]
    fn launch_enclave_reproduces_the_einittoken_key() {
        let p = platform();
        let lehash = [0x51; 32];
        let le = EnclaveIdentity {
            attributes: Attributes { flags: INIT | MODE64 | EINITTOKEN, xfrm: 0x3 },
            mrsigner: lehash,
            ..enclave()
        };
        let mut req = request(Keyname::Einittoken, Keypolicy::empty());
        req.attributemask = Attributes { flags: 0xFF, xfrm: 0x3 };
        req.miscmask = 1;
        req.cpusvn = [0x04; 16];
        req.isvsvn = 2;
        let le_key = key(&req, &le, &p);

        let mut token = Einittoken::zeroed();
        token.valid = 1;
        token.mrenclave = [0xAA; 32];
        token.mrsigner = [0xBB; 32];
        token.cpusvnle = req.cpusvn;
        token.isvprodidle = le.isvprodid;
        token.isvsvnle = req.isvsvn;
        token.maskedmiscselectle = req.miscmask & le.miscselect;
        token.maskedattributesle = le.attributes.and(&Attributes { flags: req.attributemask.flags | 3, xfrm: 3 });
        token.keyid = req.keyid;
        assert_eq!(einittoken_key(&token, &lehash, &p), le_key);
        assert_ne!(einittoken_key(&token, &[0x52; 32], &p), le_key, "bound to LEHASH");

        token.mac = einittoken_mac(&le_key, &token);
        assert_eq!(token.mac, aes_cmac(&le_key, &token.bytes()[..192]));
        let mut other = token.clone();
        other.keyid = [0; 32];
        other.mac = [0; 16];
        assert_eq!(einittoken_mac(&le_key, &other), token.mac, "KEYID and MAC are outside the MAC");
        other.mrenclave[0] ^= 1;
        assert_ne!(einittoken_mac(&le_key, &other), token.mac);
    }

    #[test]
    fn from_secs_copies_identity() {
        let mut secs = Secs::zeroed();
        secs.attributes = Attributes { flags: INIT | MODE64 | KSS, xfrm: 7 };
        secs.miscselect = 1;
        secs.mrenclave = [1; 32];
        secs.mrsigner = [2; 32];
        secs.isvprodid = 3;
        secs.isvsvn = 4;
        secs.configid = [5; 64];
        secs.configsvn = 6;
        let id = EnclaveIdentity::from_secs(&secs, [7; 16], [8; 16], [9; 352]);
        assert_eq!(id.attributes, secs.attributes);
        assert_eq!((id.miscselect, id.mrenclave, id.mrsigner), (1, [1; 32], [2; 32]));
        assert_eq!((id.isvprodid, id.isvsvn, id.configid, id.configsvn), (3, 4, [5; 64], 6));
        assert_eq!((id.isvfamilyid, id.isvextprodid, id.padding), ([7; 16], [8; 16], [9; 352]));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let p = PlatformKeys { k_root: [0xA1; 16], seal_fuses: [0xA2; 16], owner_epoch: [0xA3; 16], ..platform() };
        let s = format!("{p:?}");
        assert!(!s.contains("a1a1") && !s.contains("a2a2") && !s.contains("a3a3"), "{s}");
        assert!(!s.contains("161") && !s.contains("162") && !s.contains("163"), "{s}");
        let dep = KeyDependencies { seal_key_fuses: [0xA2; 16], ownerepoch: [0xA3; 16], ..Default::default() };
        let s = format!("{dep:?}");
        assert!(!s.contains("a2a2") && !s.contains("a3a3") && !s.contains("162"), "{s}");
    }
}
