//! RFC 3339 formatting/parsing of whole-second UTC times, as used by the TOC
//! `modtime` field. No time crate needed for this one format.

/// Days since 1970-01-01 for a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for whole Unix seconds.
pub fn format_rfc3339(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z` as Go's RFC 3339 with nanoseconds
/// writes it (trailing zeros of the fraction dropped): the zstd:chunked v2
/// TOC keeps sub-second times, which containers/storage compares exactly.
pub fn format_rfc3339_nanos(secs: i64, nanos: u32) -> String {
    let mut out = format_rfc3339(secs);
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        out.insert_str(out.len() - 1, &format!(".{}", frac.trim_end_matches('0')));
    }
    out
}

/// Parses RFC 3339 (`Z` or `±hh:mm` zone, optional fraction, which is
/// truncated). Returns `None` for anything malformed.
#[cfg(test)]
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    parse_rfc3339_nanos(s).map(|(secs, _)| secs)
}

/// [`parse_rfc3339`] with the fraction as nanoseconds (digits past the
/// ninth ignored, as Go does).
pub fn parse_rfc3339_nanos(s: &str) -> Option<(i64, u32)> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    // Work on bytes: the input is untrusted and may hold multi-byte characters.
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = &b[r];
        if part.iter().all(u8::is_ascii_digit) {
            std::str::from_utf8(part).ok()?.parse().ok()
        } else {
            None
        }
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut rest = &b[19..];
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix(b".") {
        let digits = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        for i in 0..9 {
            nanos = nanos * 10
                + frac
                    .get(i)
                    .filter(|_| i < digits)
                    .map_or(0, |d| u32::from(d - b'0'));
        }
        rest = &frac[digits..];
    }
    let two = |hi: u8, lo: u8| -> Option<i64> {
        (hi.is_ascii_digit() && lo.is_ascii_digit())
            .then(|| i64::from((hi - b'0') * 10 + (lo - b'0')))
    };
    let offset = match *rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let secs = two(h1, h2)? * 3600 + two(m1, m2)? * 60;
            if sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec - offset;
    Some((secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for secs in [0, 1, 1577934246, -1, -86_401, 253_402_300_799, 951_782_400] {
            assert_eq!(parse_rfc3339(&format_rfc3339(secs)), Some(secs), "{secs}");
        }
        assert_eq!(format_rfc3339(1577934246), "2020-01-02T03:04:06Z");
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn parses_offsets_and_fractions() {
        assert_eq!(
            parse_rfc3339("2020-01-02T04:04:06.999+01:00"),
            Some(1577934246)
        );
        assert_eq!(
            parse_rfc3339_nanos("2020-01-02T04:04:06.5+01:00"),
            Some((1577934246, 500_000_000))
        );
        assert_eq!(
            format_rfc3339_nanos(1577934246, 120_000_000),
            "2020-01-02T03:04:06.12Z"
        );
        assert_eq!(
            format_rfc3339_nanos(-1, 1),
            "1969-12-31T23:59:59.000000001Z"
        );
        assert_eq!(format_rfc3339_nanos(5, 0), format_rfc3339(5));
        assert_eq!(parse_rfc3339("2020-01-02T03:04:06x"), None);
        assert_eq!(parse_rfc3339("garbage"), None);
        assert_eq!(parse_rfc3339("2020-13-02T03:04:06Z"), None);
        // Found by fuzzing: multi-byte characters where digits are expected.
        assert_eq!(parse_rfc3339("2020-01-02T03:04:0\u{1e5}"), None);
        assert_eq!(parse_rfc3339("2020-01-02T03:04:06+0\u{e9}:00"), None);
    }
}
