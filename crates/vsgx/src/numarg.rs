//! Parsers for numeric command-line arguments.

/// Parses a hexadecimal number with or without `0x` (`--attributes 0x4`, `--xfrm 3`).
pub fn hex_u64(s: &str) -> Result<u64, String> {
    let digits = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")).unwrap_or(s);
    if digits.is_empty() || digits.len() > 16 {
        return Err(format!("'{s}' is not a 64-bit hexadecimal number"));
    }
    u64::from_str_radix(digits, 16).map_err(|_| format!("'{s}' is not a hexadecimal number"))
}

/// Parses a 32-bit hexadecimal number with or without `0x`.
pub fn hex_u32(s: &str) -> Result<u32, String> {
    let v = hex_u64(s)?;
    u32::try_from(v).map_err(|_| format!("'{s}' does not fit in 32 bits"))
}

/// Parses a 16-bit number, decimal or `0x` hexadecimal (`--isvprodid 7`, `--isvsvn 0x10`).
pub fn u16_any(s: &str) -> Result<u16, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse::<u64>(),
    };
    let v = parsed.map_err(|_| format!("'{s}' is not a number"))?;
    u16::try_from(v).map_err(|_| format!("{s} does not fit in 16 bits (0–65535)"))
}

/// Parses a byte size: a number with an optional K/M/G suffix (KiB/MiB/GiB also accepted).
pub fn size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = digits.parse().map_err(|_| format!("'{s}' is not a size (e.g. 65536, 64K, 1M)"))?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("'{s}': unknown unit '{unit}' (use K, M or G)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("'{s}' is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(hex_u64("0x1F"), Ok(0x1f));
        assert_eq!(hex_u64("ffffffffffffff1b"), Ok(0xffff_ffff_ffff_ff1b));
        assert!(hex_u64("").is_err());
        assert!(hex_u64("0x").is_err());
        assert!(hex_u64("12345678901234567").is_err());
        assert!(hex_u64("xyz").is_err());
        assert_eq!(hex_u32("0xFFFFFFFF"), Ok(u32::MAX));
        assert!(hex_u32("0x100000000").is_err());
        assert_eq!(u16_any("65535"), Ok(65535));
        assert_eq!(u16_any("0x10"), Ok(16));
        assert!(u16_any("65536").is_err());
        assert!(u16_any("-1").is_err());
        assert_eq!(size("64K"), Ok(65536));
        assert_eq!(size("2MiB"), Ok(2 << 20));
        assert_eq!(size("4096"), Ok(4096));
        assert!(size("1X").is_err());
        assert!(size("K").is_err());
    }
}
