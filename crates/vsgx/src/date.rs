//! SIGSTRUCT dates: `--date YYYYMMDD`, or the build date from `SOURCE_DATE_EPOCH`, or today (UTC).

use vsgx_isa::signing::encode_date;

/// Parses `YYYYMMDD` into the SIGSTRUCT DATE encoding.
pub fn parse(s: &str) -> Result<u32, String> {
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("'{s}' is not a date of the form YYYYMMDD"));
    }
    let n = |r: std::ops::Range<usize>| s[r].parse::<u32>().unwrap_or(0);
    encode_date(n(0..4), n(4..6), n(6..8)).map_err(|e| e.to_string())
}

/// The default date: `SOURCE_DATE_EPOCH` (reproducible builds) when set, else today, in UTC.
pub fn default_date() -> Result<u32, String> {
    let seconds = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v.trim().parse::<u64>().map_err(|_| format!("SOURCE_DATE_EPOCH='{v}' is not a number of seconds"))?,
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| "the system clock is before 1970".to_string())?
            .as_secs(),
    };
    let (y, m, d) = civil_from_days((seconds / 86_400) as i64);
    encode_date(y as u32, m, d).map_err(|e| e.to_string())
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day) (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(parse("20161214"), Ok(0x2016_1214));
        assert!(parse("2016121").is_err());
        assert!(parse("20161314").is_err());
        assert!(parse("2016121x").is_err());
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(17_149), (2016, 12, 14));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
