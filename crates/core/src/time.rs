//! Times as the APIs print them. Pure arithmetic on milliseconds since the epoch (which
//! always arrive as arguments); no clock, no time zones.

/// Milliseconds since the epoch as ISO 8601 UTC with milliseconds (`2026-11-24T19:55:26.123Z`).
pub fn iso8601(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        ms % 1000
    )
}

/// The inverse of `iso8601`: `YYYY-MM-DDTHH:MM:SS[.sss]Z` to milliseconds since the epoch
/// (a version in a URL or a rollback body). `None` for any other form.
pub fn parse_iso8601(text: &str) -> Option<u64> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let number = |s: &str, len: usize| -> Option<u64> {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
    };
    let mut date = date.split('-');
    let (y, m, d) = (
        number(date.next()?, 4)?,
        number(date.next()?, 2)?,
        number(date.next()?, 2)?,
    );
    let (clock, millis) = match time.split_once('.') {
        Some((clock, fraction)) => (clock, number(fraction, 3)?),
        None => (time, 0),
    };
    let mut clock = clock.split(':');
    let (h, min, s) = (
        number(clock.next()?, 2)?,
        number(clock.next()?, 2)?,
        number(clock.next()?, 2)?,
    );
    if date.next().is_some() || clock.next().is_some() || y < 1970 {
        return None;
    }
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || h > 23 || min > 59 || s > 59 {
        return None;
    }
    let days = days_from_civil(y as i64, m as u32, d as u32);
    let ms = ((days * 86_400) as u64 + h * 3600 + min * 60 + s) * 1000 + millis;
    // A day past the month's end would come back as another date.
    (iso8601(ms).get(..10) == text.get(..10)).then_some(ms)
}

/// Howard Hinnant's civil-to-days algorithm (days since 1970-01-01).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_formats_known_instants() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(iso8601(1_795_549_526_000), "2026-11-24T19:45:26.000Z");
    }

    #[test]
    fn parsing_is_the_exact_inverse_and_refuses_other_forms() {
        for ms in [0, 951_782_400_123, 1_795_549_526_000, 4_102_444_799_999] {
            assert_eq!(parse_iso8601(&iso8601(ms)), Some(ms));
        }
        assert_eq!(
            parse_iso8601("2026-11-24T19:45:26Z"),
            Some(1_795_549_526_000)
        );
        for bad in [
            "2026-11-24T19:45:26.000+00:00",
            "2026-11-24 19:45:26.000Z",
            "2026-02-30T00:00:00.000Z",
            "2026-11-24T24:00:00.000Z",
            "2026-11-24T19:45:26.1Z",
            "1969-12-31T23:59:59.999Z",
            "x",
        ] {
            assert_eq!(parse_iso8601(bad), None, "{bad}");
        }
    }
}
