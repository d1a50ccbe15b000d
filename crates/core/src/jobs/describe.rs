//! A job's schedule in plain words (`dcos-rs job list`, the dashboard) and its next run.
//!
//! Cron expressions of the common shapes read as sentences ("every 5 minutes", "at 02:30
//! on Monday to Friday"); any other is shown as written (`cron "..."`), never guessed at.

use super::schedule::{time_zone, Cron, Iso8601Schedule, Period};
use super::state::{ScheduleKind, ScheduleSpec};

/// The schedule in words, with its time zone when it is not UTC.
pub fn describe(schedule: &ScheduleSpec) -> String {
    let words = match &schedule.kind {
        ScheduleKind::Cron(text) => cron_words(text),
        ScheduleKind::Iso8601(text) => iso_words(text),
    };
    match schedule.time_zone.as_str() {
        "" | "UTC" => words,
        zone => format!("{words} ({zone})"),
    }
}

/// The first instant of the schedule after `after_ms`, if it has one (an invalid
/// expression has none).
pub fn next_run(schedule: &ScheduleSpec, after_ms: u64) -> Option<u64> {
    match &schedule.kind {
        ScheduleKind::Cron(text) => {
            let tz = time_zone(&schedule.time_zone).ok()?;
            Cron::parse(text).ok()?.next_after(&tz, after_ms)
        }
        ScheduleKind::Iso8601(text) => Iso8601Schedule::parse(text, &schedule.time_zone)
            .ok()?
            .first_at_or_after(after_ms.checked_add(1)?)
            .map(|(_, at)| at),
    }
}

/// `at_ms` on the wall clock of the zone named `zone` (UTC when unknown), to the second,
/// with the zone's abbreviation: `2026-12-03 10:20:00 CET`.
pub fn wall_clock(at_ms: u64, zone: &str) -> String {
    let tz = time_zone(zone).unwrap_or(jiff::tz::TimeZone::UTC);
    let Ok(instant) = jiff::Timestamp::from_millisecond(at_ms as i64) else {
        return crate::time::iso8601(at_ms);
    };
    instant
        .to_zoned_datetime(tz)
        .strftime("%Y-%m-%d %H:%M:%S %Z")
        .to_string()
}

fn plural(n: u64, unit: &str) -> String {
    match n {
        1 => format!("1 {unit}"),
        n => format!("{n} {unit}s"),
    }
}

/// `PT1H30M` as "1 hour 30 minutes".
fn period_words(period: &Period) -> String {
    let mut parts = Vec::new();
    let (years, months) = (period.months / 12, period.months % 12);
    let (weeks, days) = match period.days % 7 {
        0 => (period.days / 7, 0),
        _ => (0, period.days),
    };
    let ms = period.millis;
    let units: [(u64, &str); 8] = [
        (u64::from(years), "year"),
        (u64::from(months), "month"),
        (u64::from(weeks), "week"),
        (u64::from(days), "day"),
        (ms / 3_600_000, "hour"),
        (ms / 60_000 % 60, "minute"),
        (ms / 1_000 % 60, "second"),
        (ms % 1_000, "millisecond"),
    ];
    for (n, unit) in units {
        if n > 0 {
            parts.push(plural(n, unit));
        }
    }
    parts.join(" ")
}

fn iso_words(text: &str) -> String {
    let Ok(schedule) = Iso8601Schedule::parse(text, "UTC") else {
        return format!("{text:?}");
    };
    let start = text.split('/').nth(1).unwrap_or_default();
    let every = period_words(&schedule.period);
    match schedule.repeats {
        Some(0) => "never (R0)".into(),
        Some(1) => format!("once, at {start}"),
        Some(n) => format!("{n} times, every {every} from {start}"),
        None => format!("every {every} from {start}"),
    }
}

const DAY_NAMES: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const MONTH_NAMES: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

fn number(field: &str, max: u32) -> Option<u32> {
    field.parse().ok().filter(|n| *n <= max)
}

/// A day of the week by number (0-7) or name.
fn weekday(field: &str) -> Option<&'static str> {
    if let Some(n) = number(field, 7) {
        return Some(DAY_NAMES[(n % 7) as usize]);
    }
    DAY_NAMES
        .iter()
        .find(|name| name[..3].eq_ignore_ascii_case(field))
        .copied()
}

/// `1-5` as "Monday to Friday", `1,3` as "Monday and Wednesday", `SAT` as "Saturday".
fn weekdays(field: &str) -> Option<String> {
    if let Some((from, to)) = field.split_once('-') {
        return Some(format!("{} to {}", weekday(from)?, weekday(to)?));
    }
    let names: Option<Vec<&str>> = field.split(',').map(weekday).collect();
    let names = names?;
    Some(match names.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => return None,
    })
}

fn month(field: &str) -> Option<&'static str> {
    if let Some(n) = number(field, 12).filter(|n| *n >= 1) {
        return Some(MONTH_NAMES[(n - 1) as usize]);
    }
    MONTH_NAMES
        .iter()
        .find(|name| name[..3].eq_ignore_ascii_case(field))
        .copied()
}

fn cron_words(text: &str) -> String {
    let as_written = || format!("cron {text:?}");
    let fields: Vec<&str> = text.split_whitespace().collect();
    let [minute, hour, day, month_field, dow] = fields[..] else {
        return as_written();
    };
    if Cron::parse(text).is_err() {
        return as_written();
    }
    let any = |f: &str| f == "*" || f == "?";
    let step = |f: &str| {
        f.strip_prefix("*/")
            .and_then(|n| number(n, 59))
            .filter(|n| *n > 0)
    };
    let days_any = any(day) && any(month_field) && any(dow);
    // Sub-daily shapes.
    if days_any {
        match (
            any(minute),
            step(minute),
            number(minute, 59),
            any(hour),
            step(hour),
        ) {
            (true, _, _, true, _) => return "every minute".into(),
            (_, Some(n), _, true, _) => return format!("every {}", plural(n.into(), "minute")),
            (_, _, Some(m), true, _) => return format!("every hour at minute {m}"),
            (_, _, Some(m), _, Some(n)) => {
                return format!("every {} at minute {m}", plural(n.into(), "hour"))
            }
            _ => {}
        }
    }
    let (Some(m), Some(h)) = (number(minute, 59), number(hour, 23)) else {
        return as_written();
    };
    let at = format!("at {h:02}:{m:02}");
    match (any(day), any(month_field), any(dow)) {
        (true, true, true) => format!("every day {at}"),
        (true, true, false) => match weekdays(dow) {
            Some(days) => format!("{at} on {days}"),
            None => as_written(),
        },
        (false, true, true) if day == "L" => format!("{at} on the last day of every month"),
        (false, true, true) => match number(day, 31).filter(|d| *d >= 1) {
            Some(d) => format!("{at} on day {d} of every month"),
            None => as_written(),
        },
        (false, false, true) => match (number(day, 31).filter(|d| *d >= 1), month(month_field)) {
            (Some(d), Some(name)) => format!("{at} on {name} {d}"),
            _ => as_written(),
        },
        _ => as_written(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::policy::Concurrency;

    fn spec(kind: ScheduleKind, tz: &str) -> ScheduleSpec {
        ScheduleSpec {
            id: "default".into(),
            kind,
            time_zone: tz.into(),
            starting_deadline_seconds: 60,
            concurrency: Concurrency::Allow,
            enabled: true,
        }
    }

    fn cron(text: &str) -> String {
        describe(&spec(ScheduleKind::Cron(text.into()), "UTC"))
    }

    #[test]
    fn common_cron_shapes_read_as_sentences_and_others_as_written() {
        let cases = [
            ("* * * * *", "every minute"),
            ("*/5 * * * *", "every 5 minutes"),
            ("*/1 * * * *", "every 1 minute"),
            ("15 * * * *", "every hour at minute 15"),
            ("0 */6 * * *", "every 6 hours at minute 0"),
            ("30 2 * * *", "every day at 02:30"),
            ("0 9 * * 1-5", "at 09:00 on Monday to Friday"),
            ("0 9 * * MON-FRI", "at 09:00 on Monday to Friday"),
            ("0 9 * * 0,6", "at 09:00 on Sunday and Saturday"),
            ("0 9 * * 7", "at 09:00 on Sunday"),
            ("0 0 1 * *", "at 00:00 on day 1 of every month"),
            ("0 0 L * *", "at 00:00 on the last day of every month"),
            ("0 12 25 12 *", "at 12:00 on December 25"),
            ("0 12 25 DEC *", "at 12:00 on December 25"),
            ("0 9 * * 1#2", "cron \"0 9 * * 1#2\""),
            ("0,30 9 * * *", "cron \"0,30 9 * * *\""),
            ("0 9 15W * *", "cron \"0 9 15W * *\""),
            ("61 * * * *", "cron \"61 * * * *\""),
        ];
        for (text, words) in cases {
            assert_eq!(cron(text), words, "{text}");
        }
        assert_eq!(
            describe(&spec(
                ScheduleKind::Cron("0 3 * * *".into()),
                "Europe/Berlin"
            )),
            "every day at 03:00 (Europe/Berlin)"
        );
    }

    #[test]
    fn iso8601_schedules_read_with_their_period_and_repeats() {
        let iso = |text: &str| describe(&spec(ScheduleKind::Iso8601(text.into()), "UTC"));
        assert_eq!(
            iso("R/2026-01-01T00:00:00Z/PT2S"),
            "every 2 seconds from 2026-01-01T00:00:00Z"
        );
        assert_eq!(
            iso("R5/2026-01-01T00:00:00Z/PT1H30M"),
            "5 times, every 1 hour 30 minutes from 2026-01-01T00:00:00Z"
        );
        assert_eq!(
            iso("R1/2026-01-01T00:00:00Z/P1D"),
            "once, at 2026-01-01T00:00:00Z"
        );
        assert_eq!(
            iso("R/2026-01-01T00:00:00Z/P2W"),
            "every 2 weeks from 2026-01-01T00:00:00Z"
        );
        assert_eq!(
            iso("R/2026-01-01T00:00:00Z/P1Y2M"),
            "every 1 year 2 months from 2026-01-01T00:00:00Z"
        );
        assert_eq!(iso("R0/2026-01-01T00:00:00Z/P1D"), "never (R0)");
    }

    #[test]
    fn wall_clock_times_are_in_the_zone_asked_for() {
        // 2026-01-01T00:00:00Z
        let start = 1_767_225_600_000;
        assert_eq!(wall_clock(start, "UTC"), "2026-01-01 00:00:00 UTC");
        assert_eq!(
            wall_clock(start, "Europe/Berlin"),
            "2026-01-01 01:00:00 CET"
        );
        assert_eq!(
            wall_clock(start + 1_500, "America/New_York"),
            "2025-12-31 19:00:01 EST"
        );
        assert_eq!(wall_clock(start, "Nowhere/Else"), "2026-01-01 00:00:00 UTC");
    }

    #[test]
    fn the_next_run_is_the_first_instant_after_now() {
        // 2026-01-01T00:00:00Z
        let start = 1_767_225_600_000;
        let every_2s = spec(
            ScheduleKind::Iso8601("R/2026-01-01T00:00:00Z/PT2S".into()),
            "UTC",
        );
        assert_eq!(next_run(&every_2s, start - 5), Some(start));
        assert_eq!(next_run(&every_2s, start), Some(start + 2_000));
        assert_eq!(next_run(&every_2s, start + 1), Some(start + 2_000));
        let once = spec(
            ScheduleKind::Iso8601("R1/2026-01-01T00:00:00Z/PT2S".into()),
            "UTC",
        );
        assert_eq!(next_run(&once, start), None);
        let hourly = spec(ScheduleKind::Cron("0 * * * *".into()), "UTC");
        assert_eq!(next_run(&hourly, start), Some(start + 3_600_000));
        let bad = spec(ScheduleKind::Cron("nope".into()), "UTC");
        assert_eq!(next_run(&bad, start), None);
    }
}
