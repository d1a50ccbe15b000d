//! When a job runs: Chronos's ISO 8601 repeating intervals (`R[n]/<start>/<period>`) and
//! Metronome's 5-field cron, both read in an IANA time zone. Pure: every "now" is an
//! argument, and the time zone database is the one built into the binary (jiff's bundled
//! tzdb), so every master computes the same instants whatever its host has installed.
//!
//! Daylight saving time, decided once for both kinds: a wall-clock time that does not
//! exist (the hour skipped in spring) runs at the next valid instant, the end of the gap
//! (all of a cron's times in the gap run once there); a wall-clock time that exists twice
//! (the hour repeated in autumn) runs once, at its first occurrence.

use jiff::civil::{Date, DateTime, Weekday};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::Timestamp;

/// Years a cron search looks ahead before it decides the expression never matches (a
/// February 29 recurs within 8 years; `0 0 30 2 *` never).
pub const CRON_SEARCH_YEARS: i16 = 30;

/// An IANA time zone by name from the bundled database (`UTC` included).
pub fn time_zone(name: &str) -> Result<TimeZone, String> {
    TimeZone::get(name).map_err(|_| {
        format!("unknown time zone {name:?} (an IANA name such as Europe/Berlin or UTC)")
    })
}

fn timestamp(ms: u64) -> Option<Timestamp> {
    Timestamp::from_millisecond(i64::try_from(ms).ok()?).ok()
}

fn millis(ts: Timestamp) -> Option<u64> {
    u64::try_from(ts.as_millisecond()).ok()
}

/// The instant a wall-clock time `dt` of `tz` names, by the rules above: itself when
/// unambiguous, its first occurrence in a fold, the end of the gap when it does not exist.
pub fn resolve(tz: &TimeZone, dt: DateTime) -> Option<Timestamp> {
    let ambiguous = tz.to_ambiguous_timestamp(dt);
    match ambiguous.offset() {
        AmbiguousOffset::Unambiguous { offset } | AmbiguousOffset::Fold { before: offset, .. } => {
            offset.to_timestamp(dt).ok()
        }
        AmbiguousOffset::Gap { after, .. } => {
            // Read with the offset after the gap, `dt` is an instant before the transition;
            // the transition that follows it is where the gap ends.
            let before_transition = after.to_timestamp(dt).ok()?;
            let transition = tz.following(before_transition).next()?;
            Some(transition.timestamp())
        }
    }
}

// ---------------------------------------------------------------------------------------
// ISO 8601 repeating intervals (Chronos)

/// An ISO 8601 duration: calendar parts (months, days) added on the wall clock of the
/// schedule's time zone, the rest as exact time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub months: u32,
    pub days: u32,
    pub millis: u64,
}

impl Period {
    /// `P1Y2M3W4DT5H6M7.5S` (any part may be left out; weeks are 7 days; `P` alone and a
    /// zero duration are refused).
    pub fn parse(text: &str) -> Result<Period, String> {
        let bad = || format!("{text:?} is not an ISO 8601 duration such as PT2S, PT1H or P1D");
        let rest = text.strip_prefix('P').ok_or_else(bad)?;
        let (date, time) = match rest.split_once('T') {
            Some((date, time)) if !time.is_empty() => (date, Some(time)),
            Some(_) => return Err(bad()),
            None => (rest, None),
        };
        let mut period = Period {
            months: 0,
            days: 0,
            millis: 0,
        };
        let parts = |part: &str, units: &str| -> Result<Vec<(f64, char)>, String> {
            let mut out = Vec::new();
            let mut number = String::new();
            let mut allowed = units.chars();
            for c in part.chars() {
                if c.is_ascii_digit() || c == '.' {
                    number.push(c);
                    continue;
                }
                // Units in their order, each at most once.
                if !allowed.by_ref().any(|u| u == c) || number.is_empty() {
                    return Err(bad());
                }
                let value: f64 = number.parse().map_err(|_| bad())?;
                out.push((value, c));
                number.clear();
            }
            if !number.is_empty() {
                return Err(bad());
            }
            Ok(out)
        };
        let whole = |value: f64| -> Result<u32, String> {
            (value.fract() == 0.0 && value <= 100_000.0)
                .then_some(value as u32)
                .ok_or_else(bad)
        };
        let date_parts = parts(date, "YMWD")?;
        let time_parts = match time {
            Some(time) => parts(time, "HMS")?,
            None => Vec::new(),
        };
        if date_parts.is_empty() && time_parts.is_empty() {
            return Err(bad());
        }
        for (value, unit) in date_parts {
            let n = whole(value)?;
            match unit {
                'Y' => period.months += n * 12,
                'M' => period.months += n,
                'W' => period.days += n * 7,
                _ => period.days += n,
            }
        }
        for (value, unit) in time_parts {
            let unit_ms = match unit {
                'H' => 3_600_000.0,
                'M' => 60_000.0,
                _ => 1_000.0,
            };
            if unit != 'S' {
                whole(value)?;
            }
            let ms = value * unit_ms;
            if !(ms.is_finite() && ms <= 1e15) || ms.fract() != 0.0 {
                return Err(bad());
            }
            period.millis += ms as u64;
        }
        if period.months == 0 && period.days == 0 && period.millis == 0 {
            return Err(format!(
                "{text:?} is a zero duration: a schedule must move on"
            ));
        }
        Ok(period)
    }
}

/// `R[n]/<start>/<period>`: run `n` times (`R` alone: for ever; `R0`: never), the first at
/// `start`, the k-th at `start + k × period` (k from 0). Unlike Chronos, which adds the
/// period to the previous run, the k-th run is computed from the start, so `P1M` from
/// January 31 runs on the last day of shorter months and on the 31st again after them.
#[derive(Debug, Clone, PartialEq)]
pub struct Iso8601Schedule {
    pub repeats: Option<u64>,
    pub start_ms: u64,
    /// The start on the wall clock of `tz`, as written (a start in a skipped hour runs at
    /// the gap's end, and the following days at the time written).
    pub start_civil: DateTime,
    pub period: Period,
    pub tz: TimeZone,
}

impl Iso8601Schedule {
    /// Parses a Chronos `schedule` in the job's `scheduleTimeZone` (which reads a start
    /// written without an offset, and the period's calendar parts).
    pub fn parse(text: &str, tz_name: &str) -> Result<Iso8601Schedule, String> {
        let tz = time_zone(if tz_name.is_empty() { "UTC" } else { tz_name })?;
        let mut parts = text.split('/');
        let (Some(repeats), Some(start), Some(period), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!(
                "{text:?} is not R[n]/<start>/<period>, e.g. R/2026-01-01T00:00:00Z/PT1H"
            ));
        };
        let repeats = match repeats.strip_prefix('R') {
            Some("") => None,
            Some(n) if n.bytes().all(|b| b.is_ascii_digit()) => Some(
                n.parse::<u64>()
                    .map_err(|_| format!("{repeats:?}: too many repetitions"))?,
            ),
            _ => {
                return Err(format!(
                    "{repeats:?} must be R (for ever) or R<n> (n times), as in R5/..."
                ))
            }
        };
        let (start_ms, start_civil) = parse_start(start, &tz)?;
        let period = Period::parse(period)?;
        Ok(Iso8601Schedule {
            repeats,
            start_ms,
            start_civil,
            period,
            tz,
        })
    }

    /// The k-th run's instant (k from 0), if there is one.
    pub fn instant(&self, k: u64) -> Option<u64> {
        if self.repeats.is_some_and(|n| k >= n) {
            return None;
        }
        let exact = self.period.millis.checked_mul(k)?;
        let calendar = if k == 0 || (self.period.months == 0 && self.period.days == 0) {
            self.start_ms
        } else {
            let start = self.start_civil;
            let months = i64::from(self.period.months).checked_mul(i64::try_from(k).ok()?)?;
            let days = i64::from(self.period.days).checked_mul(i64::try_from(k).ok()?)?;
            let span = jiff::Span::new()
                .try_months(months)
                .ok()?
                .try_days(days)
                .ok()?;
            millis(resolve(&self.tz, start.checked_add(span).ok()?)?)?
        };
        calendar.checked_add(exact)
    }

    /// The first run at or after `t`: its number and instant. Runs are strictly later one
    /// after the other, so this is a search over k (doubling, then halving): logarithmic in
    /// the number of runs since the start.
    pub fn first_at_or_after(&self, t: u64) -> Option<(u64, u64)> {
        let at = |k: u64| self.instant(k);
        if at(0)? >= t {
            return Some((0, at(0)?));
        }
        // at(low) < t; find high with at(high) >= t (or none: the runs end before t).
        let (mut low, mut high) = (0u64, 1u64);
        loop {
            match at(high) {
                Some(instant) if instant >= t => break,
                Some(_) => {
                    low = high;
                    high = high.checked_mul(2)?;
                }
                None => {
                    // Past the last run or the end of time: the last run before it decides.
                    let last = match self.repeats {
                        Some(n) if n > 0 => n - 1,
                        _ => return None,
                    };
                    if last <= low || at(last)? < t {
                        return None;
                    }
                    high = last;
                    break;
                }
            }
        }
        while high - low > 1 {
            let mid = low + (high - low) / 2;
            if at(mid)? >= t {
                high = mid;
            } else {
                low = mid;
            }
        }
        Some((high, at(high)?))
    }
}

/// A start `2026-01-01T00:00:00Z`, with an offset (`+01:00`), or without one (read in
/// `tz`); seconds and milliseconds optional. Its instant, and its wall-clock time in `tz`.
fn parse_start(text: &str, tz: &TimeZone) -> Result<(u64, DateTime), String> {
    let bad = || format!("{text:?} is not an ISO 8601 start time such as 2026-01-01T00:00:00Z");
    if let Ok(ts) = text.parse::<Timestamp>() {
        // An instant as written (also one in a repeated hour's second pass).
        return Ok((millis(ts).ok_or_else(bad)?, tz.to_datetime(ts)));
    }
    let civil = text.parse::<DateTime>().map_err(|_| bad())?;
    let ms = resolve(tz, civil).and_then(millis).ok_or_else(bad)?;
    Ok((ms, civil))
}

// ---------------------------------------------------------------------------------------
// Cron (Metronome)

/// A 5-field cron expression: minute, hour, day of month, month, day of week (0-7, 0 and 7
/// Sunday; names `JAN`, `MON`, ...), with lists, ranges and steps, `?` for "any", and
/// Metronome's `L` (last day of the month; `5L`: its last Friday), `W` (`15W`: the weekday
/// nearest the 15th; `LW`: the last weekday) and `#` (`1#2`: the second Monday). As in
/// Vixie cron, a day matching either day field runs when both are restricted, and one
/// matching both when either starts with `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    /// Days of the month (bit d for day d).
    days: u32,
    months: u16,
    /// Days of the week (bit 0 Sunday .. 6 Saturday).
    weekdays: u8,
    /// Day-of-month specials.
    last_day: bool,
    last_weekday: bool,
    nearest_weekday: Vec<u8>,
    /// Day-of-week specials: (weekday, n) for `w#n`, weekdays for `wL`.
    nth_weekday: Vec<(u8, u8)>,
    last_of_weekday: Vec<u8>,
    day_any: bool,
    weekday_any: bool,
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

impl Cron {
    pub fn parse(text: &str) -> Result<Cron, String> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "{text:?} has {} fields; cron takes 5: minute hour day-of-month month day-of-week",
                fields.len()
            ));
        }
        let mut cron = Cron {
            minutes: 0,
            hours: 0,
            days: 0,
            months: 0,
            weekdays: 0,
            last_day: false,
            last_weekday: false,
            nearest_weekday: Vec::new(),
            nth_weekday: Vec::new(),
            last_of_weekday: Vec::new(),
            day_any: is_any(fields[2]),
            weekday_any: is_any(fields[4]),
        };
        cron.minutes = field(fields[0], "minute", 0, 59, &[])?;
        cron.hours = field(fields[1], "hour", 0, 23, &[])? as u32;
        cron.months = (field(fields[3], "month", 1, 12, &MONTHS)? >> 1) as u16;
        // Day of month: plain values and the specials L, LW, nW.
        let mut plain = Vec::new();
        for item in fields[2].split(',') {
            let upper = item.to_ascii_uppercase();
            if upper == "L" {
                cron.last_day = true;
            } else if upper == "LW" {
                cron.last_weekday = true;
            } else if let Some(n) = upper.strip_suffix('W') {
                let day = number(n, "day-of-month", 1, 31, &[])?;
                cron.nearest_weekday.push(day as u8);
            } else {
                plain.push(item);
            }
        }
        if !plain.is_empty() {
            cron.days = field(&plain.join(","), "day-of-month", 1, 31, &[])? as u32;
        }
        // Day of week: plain values (7 is Sunday) and the specials wL, w#n.
        let mut plain = Vec::new();
        for item in fields[4].split(',') {
            let upper = item.to_ascii_uppercase();
            if let Some((day, n)) = upper.split_once('#') {
                let day = number(day, "day-of-week", 0, 7, &WEEKDAYS)? % 7;
                let n = number(n, "the n of day-of-week #n", 1, 5, &[])?;
                cron.nth_weekday.push((day as u8, n as u8));
            } else if let Some(day) = upper.strip_suffix('L').filter(|d| !d.is_empty()) {
                let day = number(day, "day-of-week", 0, 7, &WEEKDAYS)? % 7;
                cron.last_of_weekday.push(day as u8);
            } else {
                plain.push(item);
            }
        }
        if !plain.is_empty() {
            let mask = field(&plain.join(","), "day-of-week", 0, 7, &WEEKDAYS)?;
            cron.weekdays = ((mask & 0x7f) | (mask >> 7)) as u8;
        }
        Ok(cron)
    }

    fn day_matches(&self, date: Date) -> bool {
        let day = date.day() as u32;
        let last = date.days_in_month() as u32;
        let by_day = self.days & (1 << day) != 0
            || (self.last_day && day == last)
            || (self.last_weekday && Some(day) == last_weekday_of(date))
            || self
                .nearest_weekday
                .iter()
                .any(|&d| nearest_weekday(date, u32::from(d)) == Some(day));
        let weekday = date.weekday().to_sunday_zero_offset() as u8;
        let by_weekday = self.weekdays & (1 << weekday) != 0
            || self
                .nth_weekday
                .iter()
                .any(|&(w, n)| w == weekday && (day - 1) / 7 + 1 == u32::from(n))
            || self
                .last_of_weekday
                .iter()
                .any(|&w| w == weekday && day + 7 > last);
        // Vixie cron: when either field starts with `*` both must match (a bare `*`
        // matches every day), otherwise either may.
        match self.day_any || self.weekday_any {
            true => by_day && by_weekday,
            false => by_day || by_weekday,
        }
    }

    /// The first run strictly after `t` (ms since the epoch) on the wall clock of `tz`, by
    /// the daylight saving rules of this module; `None` when there is none within
    /// `CRON_SEARCH_YEARS`.
    pub fn next_after(&self, tz: &TimeZone, t: u64) -> Option<u64> {
        let now = timestamp(t)?;
        let local = tz.to_datetime(now);
        // Candidates from the wall-clock minute after `local` (a fold's second pass gives
        // wall-clock times whose first occurrence is past: they are skipped below).
        let first = local
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?
            .checked_add(jiff::Span::new().minutes(1))
            .ok()?;
        let mut date = first.date();
        let end = date
            .checked_add(jiff::Span::new().years(CRON_SEARCH_YEARS))
            .ok()?;
        while date < end {
            if self.months & (1 << (date.month() - 1)) != 0 && self.day_matches(date) {
                for hour in 0..24i8 {
                    if self.hours & (1 << hour) == 0 {
                        continue;
                    }
                    for minute in 0..60i8 {
                        if self.minutes & (1 << minute) == 0 {
                            continue;
                        }
                        let candidate = date.at(hour, minute, 0, 0);
                        if candidate < first {
                            continue;
                        }
                        let instant = resolve(tz, candidate)?;
                        if instant > now {
                            return millis(instant);
                        }
                    }
                }
            }
            date = date.tomorrow().ok()?;
        }
        None
    }
}

/// A day field that does not restrict (Vixie cron: one starting with `*`, as `*/2`, counts
/// as unrestricted when combining the two day fields).
fn is_any(field: &str) -> bool {
    field.starts_with('*') || field == "?"
}

/// One value of a field: a number in `min..=max` or, where `names` are given, a name
/// (`names[0]` is `min`).
fn number(text: &str, what: &str, min: u64, max: u64, names: &[&str]) -> Result<u64, String> {
    let upper = text.to_ascii_uppercase();
    if let Some(i) = names.iter().position(|n| *n == upper) {
        return Ok(min + i as u64);
    }
    match text.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "{what} {text:?} must be {min}-{max}{}",
            match names {
                [] => String::new(),
                names => format!(" or one of {}", names.join(",")),
            }
        )),
    }
}

/// A field's bit mask (bit v for value v): `*`, `?`, `v`, `a-b`, `*/s`, `a-b/s`, `a/s`, in a
/// comma-separated list.
fn field(text: &str, what: &str, min: u64, max: u64, names: &[&str]) -> Result<u64, String> {
    let mut mask = 0u64;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step = step
                    .parse::<u64>()
                    .ok()
                    .filter(|s| (1..=max).contains(s))
                    .ok_or_else(|| format!("{what} step {step:?} must be 1-{max}"))?;
                (range, step)
            }
            None => (item, 1),
        };
        let (low, high) = if is_any(range) {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (
                number(a, what, min, max, names)?,
                number(b, what, min, max, names)?,
            );
            if a > b {
                return Err(format!("{what} range {range:?} runs backwards"));
            }
            (a, b)
        } else {
            let a = number(range, what, min, max, names)?;
            // `a/s` is a start with a step: from a to the end.
            (a, if item.contains('/') { max } else { a })
        };
        let mut v = low;
        while v <= high {
            mask |= 1 << v;
            v += step;
        }
    }
    Ok(mask)
}

/// The last Monday-to-Friday day of `date`'s month.
fn last_weekday_of(date: Date) -> Option<u32> {
    let mut last = date.last_of_month();
    while matches!(last.weekday(), Weekday::Saturday | Weekday::Sunday) {
        last = last.yesterday().ok()?;
    }
    Some(last.day() as u32)
}

/// The weekday nearest day `d` of `date`'s month, within the month (`15W`): a Saturday
/// moves to Friday, a Sunday to Monday, except across the month's ends (`1W` on a Saturday
/// is Monday the 3rd); `None` when the month has no day `d`.
fn nearest_weekday(date: Date, d: u32) -> Option<u32> {
    let last = date.days_in_month() as u32;
    if d > last {
        return None;
    }
    let target = date.with().day(d as i8).build().ok()?;
    Some(match target.weekday() {
        Weekday::Saturday if d == 1 => 3,
        Weekday::Saturday => d - 1,
        Weekday::Sunday if d == last => d - 2,
        Weekday::Sunday => d + 1,
        _ => d,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `2026-03-29T01:30:00Z` etc. as milliseconds.
    fn ms(text: &str) -> u64 {
        millis(text.parse::<Timestamp>().unwrap()).unwrap()
    }

    fn utc(t: u64) -> String {
        crate::time::iso8601(t)
    }

    #[test]
    fn durations_parse_into_calendar_and_exact_parts() {
        let p = |t: &str| Period::parse(t).unwrap();
        assert_eq!(p("PT2S").millis, 2_000);
        assert_eq!(p("PT0.5S").millis, 500);
        assert_eq!(p("PT1H30M").millis, 5_400_000);
        assert_eq!((p("P1D").days, p("P1D").millis), (1, 0));
        assert_eq!(p("P2W").days, 14);
        assert_eq!(p("P1Y2M").months, 14);
        assert_eq!(
            p("P1DT1H"),
            Period {
                months: 0,
                days: 1,
                millis: 3_600_000
            }
        );
        for bad in [
            "", "P", "PT", "T1H", "P1H", "PT1D", "PT1S1M", "P1.5D", "PT0S", "P0D", "1D", "PTS",
            "PT-1S",
        ] {
            assert!(Period::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn repeating_intervals_count_from_the_start() {
        let s = Iso8601Schedule::parse("R3/2026-01-01T00:00:00Z/PT2S", "").unwrap();
        assert_eq!(s.repeats, Some(3));
        let t0 = ms("2026-01-01T00:00:00Z");
        assert_eq!(
            (0..4).map(|k| s.instant(k)).collect::<Vec<_>>(),
            vec![Some(t0), Some(t0 + 2_000), Some(t0 + 4_000), None]
        );
        assert_eq!(s.first_at_or_after(0), Some((0, t0)));
        assert_eq!(s.first_at_or_after(t0 + 1), Some((1, t0 + 2_000)));
        assert_eq!(s.first_at_or_after(t0 + 4_000), Some((2, t0 + 4_000)));
        assert_eq!(s.first_at_or_after(t0 + 4_001), None, "R3 ran out");

        let never = Iso8601Schedule::parse("R0/2026-01-01T00:00:00Z/PT2S", "").unwrap();
        assert_eq!(never.first_at_or_after(0), None, "R0 never runs");
        let once = Iso8601Schedule::parse("R1/2026-01-01T00:00:00Z/P1D", "").unwrap();
        assert_eq!(once.first_at_or_after(0), Some((0, t0)));
        assert_eq!(once.first_at_or_after(t0 + 1), None);

        // Unbounded, with a start long past: found without walking every run.
        let forever = Iso8601Schedule::parse("R/2000-01-01T00:00:00Z/PT1S", "").unwrap();
        let now = ms("2026-12-03T10:00:00.500Z");
        assert_eq!(forever.first_at_or_after(now).unwrap().1, now + 500);
    }

    #[test]
    fn calendar_periods_follow_the_wall_clock_of_the_schedule_time_zone() {
        // Daily at 09:00 Berlin time across the spring change: 08:00Z, then 07:00Z.
        let s = Iso8601Schedule::parse("R/2026-03-28T09:00:00/P1D", "Europe/Berlin").unwrap();
        assert_eq!(utc(s.instant(0).unwrap()), "2026-03-28T08:00:00.000Z");
        assert_eq!(utc(s.instant(1).unwrap()), "2026-03-29T07:00:00.000Z");
        // The same in UTC is exactly 24 h apart.
        let u = Iso8601Schedule::parse("R/2026-03-28T09:00:00Z/P1D", "UTC").unwrap();
        assert_eq!(u.instant(1).unwrap() - u.instant(0).unwrap(), 86_400_000);
        // PT24H is exact time whatever the zone.
        let exact = Iso8601Schedule::parse("R/2026-03-28T09:00:00/PT24H", "Europe/Berlin").unwrap();
        assert_eq!(utc(exact.instant(1).unwrap()), "2026-03-29T08:00:00.000Z");
        // Months from the 31st: the month's last day, then the 31st again.
        let monthly = Iso8601Schedule::parse("R/2026-01-31T12:00:00Z/P1M", "").unwrap();
        assert_eq!(utc(monthly.instant(1).unwrap()), "2026-02-28T12:00:00.000Z");
        assert_eq!(utc(monthly.instant(2).unwrap()), "2026-03-31T12:00:00.000Z");
        // A start with an offset in the repeated hour's second pass is that instant.
        let second =
            Iso8601Schedule::parse("R/2026-10-25T02:30:00+01:00/PT1H", "Europe/Berlin").unwrap();
        assert_eq!(utc(second.instant(0).unwrap()), "2026-10-25T01:30:00.000Z");
        assert_eq!(utc(second.instant(1).unwrap()), "2026-10-25T02:30:00.000Z");
        // A start in the skipped hour is the end of the gap.
        let gap = Iso8601Schedule::parse("R/2026-03-29T02:30:00/P1D", "Europe/Berlin").unwrap();
        assert_eq!(utc(gap.instant(0).unwrap()), "2026-03-29T01:00:00.000Z");
        assert_eq!(utc(gap.instant(1).unwrap()), "2026-03-30T00:30:00.000Z");
    }

    #[test]
    fn bad_iso8601_schedules_say_what_is_wrong() {
        for (text, tz, says) in [
            ("R/2026-01-01T00:00:00Z", "", "R[n]/<start>/<period>"),
            ("X/2026-01-01T00:00:00Z/PT1S", "", "must be R"),
            ("R-1/2026-01-01T00:00:00Z/PT1S", "", "must be R"),
            ("R/yesterday/PT1S", "", "start time"),
            ("R/2026-01-01T00:00:00Z/1S", "", "duration"),
            (
                "R/2026-01-01T00:00:00Z/PT1S",
                "Mars/Olympus",
                "unknown time zone",
            ),
        ] {
            let error = Iso8601Schedule::parse(text, tz).unwrap_err();
            assert!(error.contains(says), "{text}: {error}");
        }
    }

    fn next(cron: &str, tz: &str, after: &str) -> String {
        let tz = time_zone(tz).unwrap();
        utc(Cron::parse(cron)
            .unwrap()
            .next_after(&tz, ms(after))
            .unwrap())
    }

    #[test]
    fn cron_fields_lists_ranges_steps_and_names() {
        assert_eq!(
            next("*/15 * * * *", "UTC", "2026-01-01T00:07:00Z"),
            "2026-01-01T00:15:00.000Z"
        );
        assert_eq!(
            next("0 9-17/4 * * *", "UTC", "2026-01-01T09:00:00Z"),
            "2026-01-01T13:00:00.000Z"
        );
        assert_eq!(
            next("30 2 * * MON-FRI", "UTC", "2026-01-02T03:00:00Z"),
            "2026-01-05T02:30:00.000Z"
        );
        assert_eq!(
            next("0 0 1 jan,jul *", "UTC", "2026-01-01T00:00:00Z"),
            "2026-07-01T00:00:00.000Z"
        );
        assert_eq!(
            next("5/20 * * * *", "UTC", "2026-01-01T00:06:00Z"),
            "2026-01-01T00:25:00.000Z"
        );
        // Strictly after: at a run's own instant, the next one.
        assert_eq!(
            next("0 * * * *", "UTC", "2026-01-01T05:00:00Z"),
            "2026-01-01T06:00:00.000Z"
        );
        assert_eq!(
            next("0 * * * *", "UTC", "2026-01-01T05:00:00.001Z"),
            "2026-01-01T06:00:00.000Z"
        );
        // 0 and 7 are Sunday; with both day fields restricted, either matches.
        assert_eq!(
            next("0 0 * * 7", "UTC", "2026-01-01T00:00:00Z"),
            "2026-01-04T00:00:00.000Z"
        );
        assert_eq!(
            next("0 0 * * 0", "UTC", "2026-01-01T00:00:00Z"),
            "2026-01-04T00:00:00.000Z"
        );
        assert_eq!(
            next("0 0 13 * FRI", "UTC", "2026-01-01T00:00:00Z"),
            "2026-01-02T00:00:00.000Z"
        );
        assert_eq!(
            next("0 0 13 * ?", "UTC", "2026-01-01T00:00:00Z"),
            "2026-01-13T00:00:00.000Z"
        );
        // A day field starting with `*` makes both fields count: Mondays on odd days.
        assert_eq!(
            next("0 0 */2 * MON", "UTC", "2026-01-01T00:00:00Z"),
            "2026-01-05T00:00:00.000Z"
        );
        assert_eq!(
            next("0 0 */2 * MON", "UTC", "2026-01-05T00:00:00Z"),
            "2026-01-19T00:00:00.000Z"
        );
        // Leap days only.
        assert_eq!(
            next("0 0 29 2 *", "UTC", "2026-01-01T00:00:00Z"),
            "2028-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn cron_last_nearest_and_nth_days() {
        // L: the last day; LW: the last weekday (2026-01-31 is a Saturday).
        assert_eq!(
            next("0 0 L * *", "UTC", "2026-02-01T00:00:00Z"),
            "2026-02-28T00:00:00.000Z"
        );
        assert_eq!(
            next("0 0 LW * *", "UTC", "2026-01-01T00:00:00Z"),
            "2026-01-30T00:00:00.000Z"
        );
        // 15W: 2026-02-15 is a Sunday -> Monday 16th; 1W: 2026-08-01 is a Saturday -> 3rd.
        assert_eq!(
            next("0 0 15W * *", "UTC", "2026-02-01T00:00:00Z"),
            "2026-02-16T00:00:00.000Z"
        );
        assert_eq!(
            next("0 0 1W * *", "UTC", "2026-07-05T00:00:00Z"),
            "2026-08-03T00:00:00.000Z"
        );
        // 5L: the last Friday; 1#2: the second Monday.
        assert_eq!(
            next("0 0 * * 5L", "UTC", "2026-01-01T00:00:00Z"),
            "2026-01-30T00:00:00.000Z"
        );
        assert_eq!(
            next("0 0 * * 1#2", "UTC", "2026-01-01T00:00:00Z"),
            "2026-01-12T00:00:00.000Z"
        );
        assert_eq!(
            next("0 0 * * MON#5", "UTC", "2026-01-01T00:00:00Z"),
            "2026-03-30T00:00:00.000Z"
        );
    }

    #[test]
    fn bad_cron_expressions_name_the_field() {
        for (text, says) in [
            ("* * * *", "has 4 fields"),
            ("60 * * * *", "minute \"60\" must be 0-59"),
            ("* 24 * * *", "hour"),
            ("* * 0 * *", "day-of-month"),
            ("* * * 13 *", "month"),
            ("* * * * 8", "day-of-week"),
            ("*/0 * * * *", "step"),
            ("5-1 * * * *", "backwards"),
            ("* * * FOO *", "JAN"),
            ("* * * * 1#6", "#n"),
        ] {
            let error = Cron::parse(text).unwrap_err();
            assert!(error.contains(says), "{text}: {error}");
        }
        let tz = time_zone("UTC").unwrap();
        assert_eq!(
            Cron::parse("0 0 30 2 *").unwrap().next_after(&tz, 0),
            None,
            "never"
        );
    }

    /// Both changes of 2026 in Europe/Berlin (Mar 29 02:00 -> 03:00, Oct 25 03:00 -> 02:00)
    /// and America/New_York (Mar 8 02:00 -> 03:00, Nov 1 02:00 -> 01:00).
    #[test]
    fn cron_across_daylight_saving_changes_runs_skipped_times_once_and_repeated_ones_once() {
        for (tz, spring_day, gap_end_utc, autumn_day, fold_first_utc, after_fold_utc) in [
            (
                "Europe/Berlin",
                "2026-03-29",
                "2026-03-29T01:00:00.000Z",
                "2026-10-25",
                "2026-10-25T00:30:00.000Z",
                "2026-10-25T02:00:00.000Z",
            ),
            (
                "America/New_York",
                "2026-03-08",
                "2026-03-08T07:00:00.000Z",
                "2026-11-01",
                "2026-11-01T05:30:00.000Z",
                "2026-11-01T07:00:00.000Z",
            ),
        ] {
            let zone = time_zone(tz).unwrap();
            let runs = |cron: &str, from: &str, n: usize| -> Vec<String> {
                let cron = Cron::parse(cron).unwrap();
                let mut t = ms(from);
                (0..n)
                    .map(|_| {
                        t = cron.next_after(&zone, t).unwrap();
                        utc(t)
                    })
                    .collect()
            };
            // Daily at 02:30, a time the spring day skips: once, where the gap ends.
            let daily = runs("30 2 * * *", &format!("{spring_day}T00:00:00Z"), 2);
            assert_eq!(daily[0], gap_end_utc, "{tz}");
            // Every 15 minutes: the four skipped times are one run at the gap's end.
            let quarter = runs("*/15 * * * *", &format!("{spring_day}T00:00:00Z"), 40);
            let at_gap_end = quarter.iter().filter(|t| **t == gap_end_utc).count();
            assert_eq!(at_gap_end, 1, "{tz}: {quarter:?}");
            // Daily at 01:30 (New York) / 02:30 (Berlin), a time the autumn day has twice:
            // once, at its first occurrence.
            let repeated = if tz == "Europe/Berlin" {
                "30 2 * * *"
            } else {
                "30 1 * * *"
            };
            let autumn = runs(repeated, &format!("{autumn_day}T00:00:00Z"), 2);
            assert_eq!(autumn[0], fold_first_utc, "{tz}");
            assert!(
                autumn[1].starts_with(&next_day(autumn_day)),
                "{tz}: {autumn:?}"
            );
            // Hourly through the fold: the repeated hour once, then the hour after it.
            let hourly = runs("0 * * * *", &format!("{autumn_day}T00:00:00Z"), 6);
            let unique: std::collections::BTreeSet<&String> = hourly.iter().collect();
            assert_eq!(unique.len(), hourly.len(), "{tz}: {hourly:?}");
            assert!(
                hourly.contains(&after_fold_utc.to_string()),
                "{tz}: {hourly:?}"
            );
        }
    }

    fn next_day(date: &str) -> String {
        let d: Date = date.parse().unwrap();
        d.tomorrow().unwrap().to_string()
    }

    /// Property: for many `t`, the next run is later than `t`, and a later `t` never gets an
    /// earlier next run (pseudo-random `t` over 2026-2030, fixed seed).
    #[test]
    fn the_next_run_is_after_t_and_monotone_in_t() {
        let crons = [
            "*/7 * * * *",
            "30 2 * * *",
            "0 0 L * *",
            "15 1,2,3 * * 0",
            "0 12 15W * *",
            "0 0 * * 5L",
        ];
        let zones = [
            "UTC",
            "Europe/Berlin",
            "America/New_York",
            "Australia/Lord_Howe",
        ];
        let isos = [
            "R/2026-01-01T00:00:00/PT7M",
            "R/2026-01-31T02:30:00/P1M",
            "R100/2026-03-01T01:00:00/P1DT1H",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut random = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (start, span) = (ms("2026-01-01T00:00:00Z"), 4 * 365 * 86_400_000u64);
        for zone_name in zones {
            let zone = time_zone(zone_name).unwrap();
            for text in crons {
                let cron = Cron::parse(text).unwrap();
                let mut ts: Vec<u64> = (0..300).map(|_| start + random() % span).collect();
                ts.sort_unstable();
                let mut previous = 0;
                for t in ts {
                    let next = cron.next_after(&zone, t).unwrap();
                    assert!(next > t, "{text} {zone_name} after {}", utc(t));
                    assert!(
                        next >= previous,
                        "{text} {zone_name} not monotone at {}",
                        utc(t)
                    );
                    // Nothing in between: the minute before `next` (if after t) is no run.
                    previous = next;
                }
            }
            for text in isos {
                let s = Iso8601Schedule::parse(text, zone_name).unwrap();
                let mut ts: Vec<u64> = (0..300).map(|_| start + random() % span).collect();
                ts.sort_unstable();
                let mut previous = 0;
                for t in ts {
                    if let Some((k, at)) = s.first_at_or_after(t) {
                        assert!(
                            at >= t && at >= previous,
                            "{text} {zone_name} at {}",
                            utc(t)
                        );
                        assert!(
                            k == 0 || s.instant(k - 1).unwrap() < t,
                            "{text}: not the first"
                        );
                        previous = at;
                    } else {
                        previous = u64::MAX;
                    }
                }
            }
        }
    }
}
