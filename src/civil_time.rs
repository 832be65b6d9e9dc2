//! Seconds since the epoch as a UTC calendar date and time, for the access log's timestamps
//! and for the times refusals and decisions name (Howard Hinnant's days-to-civil).

/// `YYYY-MM-DDTHH:MM:SS` on the stack (no allocation: the access log formats one a second).
/// Years outside 0000–9999 are clamped.
pub fn date_time(secs: i64) -> [u8; 19] {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut out = *b"0000-00-00T00:00:00";
    let mut put = |at: usize, width: usize, mut v: i64| {
        for i in (0..width).rev() {
            out[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year.clamp(0, 9_999));
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, rem / 3_600);
    put(14, 2, rem % 3_600 / 60);
    put(17, 2, rem % 60);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(&date_time(0), b"1970-01-01T00:00:00");
        assert_eq!(&date_time(951_782_400), b"2000-02-29T00:00:00");
        assert_eq!(&date_time(1_796_603_237), b"2026-12-07T00:27:17");
        assert_eq!(&date_time(4_102_444_799), b"2099-12-31T23:59:59");
        assert_eq!(&date_time(-1), b"1969-12-31T23:59:59");
        assert_eq!(&date_time(-62_135_596_800), b"0001-01-01T00:00:00");
    }
}
