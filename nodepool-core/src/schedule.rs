//! When a disruption budget is active: a cron schedule (the five standard fields, or a
//! descriptor such as `@daily`), a duration from each of its times, and a time zone.
//! Karpenter reads its schedules in UTC only; a budget here names its zone, and the
//! schedule is read on that zone's clock (the zone database is bundled, so a time zone
//! needs nothing on the machine).
//!
//! The rule is Karpenter's: a budget is active at `now` when one of its schedule's times
//! falls in `(now - duration, now]`.
use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;

/// A parsed cron expression: the set of minutes, hours, days of the month, months and
/// days of the week it fires on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u64,
    days_of_month: u64,
    months: u64,
    days_of_week: u64,
    /// The day-of-month or the day-of-week field is `*`: a day must match both fields.
    /// Otherwise a day matches when either does, as cron has it.
    either_day_is_any: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl std::str::FromStr for Schedule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let expanded = match text.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other if other.starts_with('@') => {
                return Err(format!("unknown descriptor {other:?}"));
            }
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [minute, hour, dom, month, dow] = fields[..] else {
            return Err(format!(
                "{text:?} has {} fields; a schedule has five (minute hour day-of-month month \
                 day-of-week) or is a descriptor such as @daily",
                fields.len()
            ));
        };
        let days_of_week = field(dow, 0, 7, &DAYS, "day of week")?;
        Ok(Self {
            minutes: field(minute, 0, 59, &[], "minute")?,
            hours: field(hour, 0, 23, &[], "hour")?,
            days_of_month: field(dom, 1, 31, &[], "day of month")?,
            months: field(month, 1, 12, &MONTHS, "month")?,
            // 7 is Sunday too.
            days_of_week: (days_of_week | (days_of_week >> 7)) & 0x7f,
            either_day_is_any: dom.starts_with('*') || dow.starts_with('*'),
        })
    }
}

/// One field: `*`, `5`, `1-5`, `*/15`, `10-50/10`, `mon-fri`, or a list of them.
fn field(text: &str, min: u32, max: u32, names: &[&str], what: &str) -> Result<u64, String> {
    let value = |s: &str| -> Result<u32, String> {
        let lower = s.to_ascii_lowercase();
        // Names count from the field's first value: jan is 1, sun is 0.
        if let Some(i) = names.iter().position(|n| *n == lower) {
            return Ok(min + i as u32);
        }
        let v: u32 = s
            .parse()
            .map_err(|_| format!("{what} {s:?} is not a number"))?;
        if v < min || v > max {
            return Err(format!("{what} {v} is outside {min}-{max}"));
        }
        Ok(v)
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("{what} step {step:?} is not a positive number"))?;
                (range, step)
            }
            None => (part, 1),
        };
        let (low, high) = match range {
            "*" | "?" => (min, max),
            _ => match range.split_once('-') {
                Some((a, b)) => (value(a)?, value(b)?),
                // `5/15` is `5-max/15`, as in most crons.
                None if part.contains('/') => (value(range)?, max),
                None => {
                    let v = value(range)?;
                    (v, v)
                }
            },
        };
        if low > high {
            return Err(format!("{what} range {range:?} runs backwards"));
        }
        for v in (low..=high).step_by(step as usize) {
            bits |= 1 << v;
        }
    }
    Ok(bits)
}

fn has(bits: u64, v: impl Into<u64>) -> bool {
    bits & (1 << v.into()) != 0
}

impl Schedule {
    fn matches_day(&self, date: Date) -> bool {
        if !has(self.months, date.month() as u8) {
            return false;
        }
        let dom = has(self.days_of_month, date.day() as u8);
        let dow = has(
            self.days_of_week,
            date.weekday().to_sunday_zero_offset() as u8,
        );
        if self.either_day_is_any {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The times of `date` this schedule fires at, in `zone`, latest first when `backwards`.
    fn times_of(
        &self,
        date: Date,
        zone: &TimeZone,
        backwards: bool,
    ) -> impl Iterator<Item = Timestamp> + '_ {
        let zone = zone.clone();
        let hours: Vec<i8> = (0..24i8).filter(|h| has(self.hours, *h as u8)).collect();
        let minutes: Vec<i8> = (0..60i8).filter(|m| has(self.minutes, *m as u8)).collect();
        let mut times: Vec<(i8, i8)> = hours
            .iter()
            .flat_map(|h| minutes.iter().map(move |m| (*h, *m)))
            .collect();
        if backwards {
            times.reverse();
        }
        times.into_iter().filter_map(move |(h, m)| {
            date.at(h, m, 0, 0)
                .to_zoned(zone.clone())
                .ok()
                .map(|z| z.timestamp())
        })
    }
}

/// A budget's active window: a schedule, a duration from each of its times, a zone.
#[derive(Clone, Debug)]
pub struct Window {
    schedule: Schedule,
    duration: Duration,
    zone: TimeZone,
}

/// How far ahead the next time of a schedule is looked for (`0 0 29 2 *` fires once in
/// four years).
const HORIZON_DAYS: i32 = 5 * 366;

impl Window {
    /// The window of `schedule` (cron), `duration` long, read in `zone` (UTC when unset);
    /// the error names what is wrong.
    pub fn new(schedule: &str, duration: Duration, zone: Option<&str>) -> Result<Self, String> {
        let schedule = schedule.parse()?;
        let zone = match zone {
            None => TimeZone::UTC,
            Some(name) => {
                TimeZone::get(name).map_err(|_| format!("{name:?} is not a known time zone"))?
            }
        };
        if duration.is_zero() {
            return Err("duration must be longer than 0s".into());
        }
        Ok(Self {
            schedule,
            duration,
            zone,
        })
    }

    /// Whether the window is open at `now`.
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.last_start(now).is_some()
    }

    /// When the window may next open or close: the end of the open window (a later time
    /// of the schedule may keep it open longer), or the schedule's next time.
    pub fn next_change(&self, now: Timestamp) -> Option<Timestamp> {
        match self.last_start(now) {
            Some(start) => start.checked_add(self.duration).ok(),
            None => self.next_start(now),
        }
    }

    /// The latest time of the schedule in `(now - duration, now]`.
    fn last_start(&self, now: Timestamp) -> Option<Timestamp> {
        let since = now.checked_sub(self.duration).ok()?;
        let first_day = since.to_zoned(self.zone.clone()).date().yesterday().ok()?;
        let mut day = now.to_zoned(self.zone.clone()).date();
        while day >= first_day {
            if self.schedule.matches_day(day) {
                for t in self.schedule.times_of(day, &self.zone, true) {
                    if t <= since {
                        break;
                    }
                    if t <= now {
                        return Some(t);
                    }
                }
            }
            day = day.yesterday().ok()?;
        }
        None
    }

    /// The first time of the schedule after `now`.
    fn next_start(&self, now: Timestamp) -> Option<Timestamp> {
        let mut day = now.to_zoned(self.zone.clone()).date();
        for _ in 0..HORIZON_DAYS {
            if self.schedule.matches_day(day) {
                let next = self
                    .schedule
                    .times_of(day, &self.zone, false)
                    .find(|t| *t > now);
                if next.is_some() {
                    return next;
                }
            }
            day = day.tomorrow().ok()?;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn hours(h: u64) -> Duration {
        Duration::from_secs(h * 3600)
    }

    #[test]
    fn fields_parse_as_cron_reads_them() {
        let s: Schedule = "*/15 9-17 * * mon-fri".parse().unwrap();
        assert_eq!(s.minutes, 1 | 1 << 15 | 1 << 30 | 1 << 45);
        assert_eq!(s.hours, (9..=17).map(|h| 1u64 << h).sum::<u64>());
        assert_eq!(s.days_of_week, 0b0111110);
        assert!(s.either_day_is_any);
        let sunday_as_7: Schedule = "0 0 * * 7".parse().unwrap();
        assert_eq!(sunday_as_7.days_of_week, 1);
        assert_eq!(
            "@daily".parse::<Schedule>().unwrap(),
            "0 0 * * *".parse().unwrap()
        );
        let s: Schedule = "5/20 0 1,15 jan,Jul *".parse().unwrap();
        assert_eq!(s.minutes, 1 << 5 | 1 << 25 | 1 << 45);
        assert_eq!(s.months, 1 << 1 | 1 << 7);
    }

    #[test]
    fn a_bad_schedule_says_what_is_wrong() {
        for (text, says) in [
            ("0 0 * *", "has 4 fields"),
            ("60 * * * *", "minute 60 is outside 0-59"),
            ("* 5-1 * * *", "runs backwards"),
            ("*/0 * * * *", "step \"0\""),
            ("* * * foo *", "month \"foo\" is not a number"),
            ("@sometimes", "unknown descriptor"),
        ] {
            let e = text.parse::<Schedule>().unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
        assert!(
            Window::new("@daily", hours(1), Some("Mars/Olympus"))
                .unwrap_err()
                .contains("not a known time zone")
        );
    }

    #[test]
    fn a_window_opens_at_each_time_and_closes_after_its_duration() {
        // Weekdays, 09:00 for 8 hours (UTC).
        let w = Window::new("0 9 * * 1-5", hours(8), None).unwrap();
        // 2026-12-02 is a Wednesday.
        assert!(!w.is_active(at("2026-12-02T08:59:59Z")));
        assert!(w.is_active(at("2026-12-02T09:00:00Z")));
        assert!(w.is_active(at("2026-12-02T16:59:59Z")));
        assert!(!w.is_active(at("2026-12-02T17:00:00Z")));
        // Saturday: closed all day.
        assert!(!w.is_active(at("2026-12-05T10:00:00Z")));
        // What the controller sets its clock by: the close, then the next open.
        assert_eq!(
            w.next_change(at("2026-12-02T10:00:00Z")),
            Some(at("2026-12-02T17:00:00Z"))
        );
        assert_eq!(
            w.next_change(at("2026-12-04T18:00:00Z")),
            Some(at("2026-12-07T09:00:00Z")),
            "Friday evening: next Monday"
        );
    }

    #[test]
    fn a_window_spans_midnight_and_reads_its_own_time_zone() {
        // 22:00 in Berlin (UTC+1 in December) for 4 hours: 21:00 to 01:00 UTC.
        let w = Window::new("0 22 * * *", hours(4), Some("Europe/Berlin")).unwrap();
        assert!(!w.is_active(at("2026-12-02T20:59:00Z")));
        assert!(w.is_active(at("2026-12-02T21:00:00Z")));
        assert!(w.is_active(at("2026-12-03T00:59:00Z")));
        assert!(!w.is_active(at("2026-12-03T01:00:00Z")));
        // In July Berlin is UTC+2: the window moves with the zone's clock.
        assert!(w.is_active(at("2026-07-02T20:00:00Z")));
        assert!(!w.is_active(at("2026-07-02T19:59:00Z")));
    }

    #[test]
    fn a_rare_schedule_is_found_years_ahead() {
        let w = Window::new("0 0 29 2 *", hours(24), None).unwrap();
        assert_eq!(
            w.next_change(at("2026-12-02T00:00:00Z")),
            Some(at("2028-02-29T00:00:00Z"))
        );
        // Day of month and day of week both given: either matches, as in cron.
        let either = Window::new("0 12 1 * sun", hours(1), None).unwrap();
        assert!(
            either.is_active(at("2026-12-01T12:30:00Z")),
            "the 1st, a Tuesday"
        );
        assert!(either.is_active(at("2026-12-06T12:30:00Z")), "a Sunday");
        assert!(!either.is_active(at("2026-12-02T12:30:00Z")));
    }
}
