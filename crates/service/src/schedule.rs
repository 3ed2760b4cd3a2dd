//! Schedules: cron expressions, or words like `daily at 02:00`.
//!
//! Accepted forms (times are the machine's local time):
//! - `daily at 02:00`, `hourly`, `hourly at :15`
//! - `weekly on sunday at 04:00`, `monthly on 1 at 03:00`
//! - `every 10 minutes`, `every 6 hours`, `every 5 seconds` (steps restart
//!   each minute or hour, as cron's `*/N` does)
//! - five-field cron, `minute hour day-of-month month day-of-week`, with
//!   Sunday as 0 or 7 as in crontab(5); six fields put seconds first.

use std::str::FromStr;

use chrono::{DateTime, Local, TimeZone};

/// A parsed schedule.
#[derive(Clone)]
pub struct Schedule {
    text: String,
    cron: cron::Schedule,
}

impl std::fmt::Debug for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Schedule({:?})", self.text)
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

const DAYS: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];

impl Schedule {
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("an empty schedule".into());
        }
        let expr = match words(t)? {
            Some(e) => e,
            None => cron_expr(t)?,
        };
        let cron = cron::Schedule::from_str(&expr)
            .map_err(|e| format!("{t:?} is not a schedule ({e}); try \"daily at 02:00\" or a cron expression like \"0 2 * * *\""))?;
        if cron.upcoming(Local).next().is_none() {
            return Err(format!("{t:?} never runs"));
        }
        Ok(Schedule {
            text: t.to_string(),
            cron,
        })
    }

    /// The first run strictly after `t`.
    pub fn next_after<Z: TimeZone>(&self, t: &DateTime<Z>) -> Option<DateTime<Z>> {
        self.cron.after(t).next()
    }

    /// The latest run at or before `t`.
    pub fn last_at_or_before<Z: TimeZone>(&self, t: &DateTime<Z>) -> Option<DateTime<Z>> {
        let just_after = t.clone() + chrono::Duration::milliseconds(1);
        self.cron.after(&just_after).next_back()
    }
}

fn hh_mm(s: &str) -> Result<(u32, u32), String> {
    let (h, m) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not a time like 02:00"))?;
    let h: u32 = h.parse().map_err(|_| format!("{s:?} is not a time"))?;
    let m: u32 = m.parse().map_err(|_| format!("{s:?} is not a time"))?;
    if h > 23 || m > 59 {
        return Err(format!("{s:?} is not a time of day"));
    }
    Ok((h, m))
}

/// Translates the word forms into a six-field (seconds first) expression.
fn words(t: &str) -> Result<Option<String>, String> {
    let lower = t.to_ascii_lowercase();
    let w: Vec<&str> = lower.split_whitespace().collect();
    let out = match w.as_slice() {
        ["hourly"] => "0 0 * * * *".to_string(),
        ["hourly", "at", m] => {
            let m: u32 = m
                .trim_start_matches(':')
                .parse()
                .ok()
                .filter(|m| *m < 60)
                .ok_or_else(|| format!("{t:?}: minute must be 0 to 59"))?;
            format!("0 {m} * * * *")
        }
        ["daily"] => "0 0 0 * * *".to_string(),
        ["daily", "at", at] => {
            let (h, m) = hh_mm(at)?;
            format!("0 {m} {h} * * *")
        }
        ["weekly", "on", day, "at", at] => {
            let (h, m) = hh_mm(at)?;
            let d = DAYS
                .iter()
                .position(|d| d.starts_with(day) && day.len() >= 3)
                .ok_or_else(|| format!("{t:?}: {day:?} is not a day of the week"))?;
            format!("0 {m} {h} * * {}", d + 1)
        }
        ["monthly", "on", day, "at", at] => {
            let (h, m) = hh_mm(at)?;
            let d: u32 = day
                .parse()
                .ok()
                .filter(|d| (1..=28).contains(d))
                .ok_or_else(|| format!("{t:?}: the day of the month must be 1 to 28"))?;
            format!("0 {m} {h} {d} * *")
        }
        ["every", n, unit] => {
            let n: u32 = n
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{t:?}: {n:?} is not a positive number"))?;
            let unit = unit.trim_end_matches('s');
            match (unit, n) {
                ("second", 1..=59) => format!("*/{n} * * * * *"),
                ("minute", 1..=59) => format!("0 */{n} * * * *"),
                ("hour", 1..=23) => format!("0 0 */{n} * * *"),
                ("day", 1) => "0 0 0 * * *".into(),
                ("second" | "minute" | "hour", _) => {
                    return Err(format!("{t:?}: too many {unit}s for one step"))
                }
                _ => return Err(format!("{t:?}: use seconds, minutes or hours")),
            }
        }
        [first, ..] if first.chars().all(|c| c.is_ascii_alphabetic()) && !is_cron_word(first) => {
            return Err(format!(
                "{t:?} is not a schedule; try \"daily at 02:00\", \"weekly on sunday at 04:00\", \"every 6 hours\" or a cron expression"
            ))
        }
        _ => return Ok(None),
    };
    Ok(Some(out))
}

fn is_cron_word(w: &str) -> bool {
    // Month and day names may start a cron field, but never the first.
    w.starts_with('@')
}

/// Five-field crontab syntax → the six-field form the `cron` crate reads,
/// with days of the week moved from 0–7 (Sunday 0 or 7) to its 1–7.
fn cron_expr(t: &str) -> Result<String, String> {
    let f: Vec<&str> = t.split_whitespace().collect();
    match f.len() {
        5 => {
            let dow = dow_field(f[4]).map_err(|e| format!("{t:?}: {e}"))?;
            Ok(format!("0 {} {} {} {} {dow}", f[0], f[1], f[2], f[3]))
        }
        6 => {
            let dow = dow_field(f[5]).map_err(|e| format!("{t:?}: {e}"))?;
            Ok(format!(
                "{} {} {} {} {} {dow}",
                f[0], f[1], f[2], f[3], f[4]
            ))
        }
        n => Err(format!(
            "{t:?} has {n} fields; a cron expression has 5 (minute hour day month weekday)"
        )),
    }
}

fn dow_field(field: &str) -> Result<String, String> {
    let map = |s: &str| -> Result<String, String> {
        if s.chars().all(|c| c.is_ascii_digit()) {
            let n: u32 = s.parse().map_err(|_| format!("bad weekday {s}"))?;
            if n > 7 {
                return Err(format!("weekday {n} is not 0 to 7"));
            }
            Ok(((n % 7) + 1).to_string())
        } else {
            Ok(s.to_string())
        }
    };
    let mut out = Vec::new();
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (item, None),
        };
        let mapped = match range.split_once('-') {
            Some((a, b)) if b == "7" && a != "0" && a.chars().all(|c| c.is_ascii_digit()) => {
                // "5-7" (Friday to Sunday): Sunday wraps to the front.
                out.push("1".to_string());
                format!("{}-7", map(a)?)
            }
            Some((a, b)) => format!("{}-{}", map(a)?, map(b)?),
            None => map(range)?,
        };
        out.push(match step {
            Some(s) => format!("{mapped}/{s}"),
            None => mapped,
        });
    }
    Ok(out.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, Timelike, Utc};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn words_and_cron_agree() {
        let t = at("2026-11-24T10:30:00Z"); // a Tuesday
        let daily = Schedule::parse("daily at 02:00").unwrap();
        assert_eq!(daily.next_after(&t).unwrap(), at("2026-11-25T02:00:00Z"));
        assert_eq!(
            daily.last_at_or_before(&t).unwrap(),
            at("2026-11-24T02:00:00Z")
        );
        let cron = Schedule::parse("0 2 * * *").unwrap();
        assert_eq!(cron.next_after(&t), daily.next_after(&t));

        let sunday = Schedule::parse("weekly on sunday at 04:00").unwrap();
        let next = sunday.next_after(&t).unwrap();
        assert_eq!(next.weekday(), chrono::Weekday::Sun);
        assert_eq!((next.hour(), next.minute()), (4, 0));
        // crontab's Sunday is 0 and 7.
        for expr in ["0 4 * * 0", "0 4 * * 7", "0 4 * * sun"] {
            assert_eq!(Schedule::parse(expr).unwrap().next_after(&t), Some(next));
        }
        // Friday to Sunday.
        let weekend = Schedule::parse("0 4 * * 5-7").unwrap();
        let days: Vec<_> = weekend
            .cron
            .after(&t)
            .take(3)
            .map(|d| d.weekday())
            .collect();
        assert_eq!(
            days,
            [
                chrono::Weekday::Fri,
                chrono::Weekday::Sat,
                chrono::Weekday::Sun
            ]
        );

        let five = Schedule::parse("every 5 seconds").unwrap();
        assert_eq!(five.next_after(&t).unwrap(), at("2026-11-24T10:30:05Z"));
        assert_eq!(
            Schedule::parse("every 6 hours").unwrap().next_after(&t),
            Some(at("2026-11-24T12:00:00Z"))
        );
        // An exact hit counts as "at or before".
        assert_eq!(
            daily.last_at_or_before(&at("2026-11-24T02:00:00Z")),
            Some(at("2026-11-24T02:00:00Z"))
        );
    }

    #[test]
    fn bad_schedules_say_why() {
        for bad in [
            "",
            "nightly",
            "daily at 25:00",
            "weekly on funday at 02:00",
            "every 0 minutes",
            "every 90 minutes",
            "0 2 * *",
            "0 2 * * 8",
            "61 * * * *",
        ] {
            let e = Schedule::parse(bad).unwrap_err();
            assert!(!e.is_empty(), "{bad}");
        }
    }
}
