//! `vsgx sigstruct show`.

use std::path::Path;
use std::process::ExitCode;

use serde::Serialize;
use vsgx_isa::measure::mrsigner;
use vsgx_isa::signing::{decode_date, verify};
use vsgx_isa::{ArchStruct, AttributesFlags, Sigstruct};

use super::read_file;

/// Exit status when the file is not a SIGSTRUCT at all.
const UNREADABLE: u8 = 2;

#[derive(Serialize)]
struct Shown {
    valid: bool,
    invalid_reason: Option<String>,
    mrsigner: String,
    enclavehash: String,
    vendor: String,
    date: String,
    swdefined: u32,
    isvprodid: u16,
    isvsvn: u16,
    attributes: u64,
    attributes_mask: u64,
    xfrm: u64,
    xfrm_mask: u64,
    miscselect: u32,
    misc_mask: u32,
    isvfamilyid: String,
    isvextprodid: String,
    exponent: u32,
    modulus_bits: u64,
}

fn vendor_name(vendor: u32) -> String {
    match vendor {
        0 => "none".into(),
        Sigstruct::VENDOR_INTEL => "intel".into(),
        other => format!("{other:#x}"),
    }
}

fn date_text(date: u32) -> String {
    match decode_date(date) {
        Some((y, m, d)) => format!("{y:04}{m:02}{d:02}"),
        None => format!("{date:#010x}"),
    }
}

fn modulus_bits(modulus: &[u8; 384]) -> u64 {
    match modulus.iter().rposition(|&b| b != 0) {
        Some(top) => top as u64 * 8 + u64::from(8 - modulus[top].leading_zeros()),
        None => 0,
    }
}

/// `vsgx sigstruct show`: exit 0 when valid, 1 when invalid, 2 when unreadable.
pub fn show(file: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let s = match read_file(file).and_then(|bytes| {
        Sigstruct::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("{} is not a SIGSTRUCT: {e}", file.display()))
    }) {
        Ok(s) => s,
        Err(err) => {
            eprintln!("error: {err:#}");
            return Ok(ExitCode::from(UNREADABLE));
        }
    };
    let verdict = verify(&s);
    let shown = Shown {
        valid: verdict.is_ok(),
        invalid_reason: verdict.as_ref().err().map(|e| e.to_string()),
        mrsigner: hex::encode(mrsigner(&s.modulus)),
        enclavehash: hex::encode(s.enclavehash),
        vendor: vendor_name(s.vendor),
        date: date_text(s.date),
        swdefined: s.swdefined,
        isvprodid: s.isvprodid,
        isvsvn: s.isvsvn,
        attributes: s.attributes.flags,
        attributes_mask: s.attributemask.flags,
        xfrm: s.attributes.xfrm,
        xfrm_mask: s.attributemask.xfrm,
        miscselect: s.miscselect,
        misc_mask: s.miscmask,
        isvfamilyid: hex::encode(s.isvfamilyid),
        isvextprodid: hex::encode(s.isvextprodid),
        exponent: s.exponent,
        modulus_bits: modulus_bits(&s.modulus),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&shown)?);
    } else {
        print_human(&shown);
    }
    Ok(if shown.valid { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn print_human(s: &Shown) {
    let flag_names = |flags: u64| {
        let names: Vec<&str> = AttributesFlags::from_bits_truncate(flags).iter_names().map(|(n, _)| n).collect();
        if names.is_empty() { String::new() } else { format!(" ({})", names.join(" | ")) }
    };
    let rows: [(&str, String); 19] = [
        ("valid", if s.valid { "yes".into() } else { format!("NO: {}", s.invalid_reason.as_deref().unwrap_or("")) }),
        ("enclavehash", s.enclavehash.clone()),
        ("mrsigner", s.mrsigner.clone()),
        ("vendor", s.vendor.clone()),
        ("date", s.date.clone()),
        ("swdefined", format!("{:#x}", s.swdefined)),
        ("isvprodid", s.isvprodid.to_string()),
        ("isvsvn", s.isvsvn.to_string()),
        ("attributes", format!("{:#018x}{}", s.attributes, flag_names(s.attributes))),
        ("attributes mask", format!("{:#018x}", s.attributes_mask)),
        ("xfrm", format!("{:#018x}", s.xfrm)),
        ("xfrm mask", format!("{:#018x}", s.xfrm_mask)),
        ("miscselect", format!("{:#010x}", s.miscselect)),
        ("misc mask", format!("{:#010x}", s.misc_mask)),
        ("isvfamilyid", s.isvfamilyid.clone()),
        ("isvextprodid", s.isvextprodid.clone()),
        ("exponent", s.exponent.to_string()),
        ("modulus", format!("{} bits", s.modulus_bits)),
        ("debug", if s.attributes & AttributesFlags::DEBUG.bits() != 0 { "yes".into() } else { "no".into() }),
    ];
    for (name, value) in rows {
        println!("{name:<16} {value}");
    }
}
