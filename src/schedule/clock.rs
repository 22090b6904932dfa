//! The daemon's one clock: when a job fires next, and which billing month "now" is, as pure
//! functions of (cron expression, time zone, now). Nothing here reads the system clock, so a
//! test can stand on any night of any year, and the daemon passes in the instant it lives at.
//!
//! The fire times are computed here rather than by tokio-cron-scheduler: that crate reads the
//! wall clock itself (it cannot be handed an instant), and its time-zone jobs have an open
//! report of running an hour off after a DST change (its issue #107). croner, the parser it
//! uses, is asked only which *wall-clock* times match the fields (by reading them as if in UTC,
//! which has no DST); turning a wall-clock time into an instant, on the two DST nights too, is
//! done below with chrono-tz, by the rules in docs/OPERATIONS.md:
//!
//! - a job at a fixed time of day (its hour field does not match every hour) whose local time
//!   does not exist (spring forward) runs once, at the first instant after the gap; a local
//!   time that happens twice (fall back) runs once, at its first occurrence;
//! - a job whose hour field matches every hour (every N minutes, hourly) runs at every instant
//!   whose local time matches: across spring forward it goes on from the first matching time
//!   after the gap, across fall back it runs in both passes of the repeated hour, so that it
//!   neither skips nor doubles in real time.

use crate::domain::Period;
use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};

/// How far around a wall-clock time the search looks: more than any DST shift (2 h at most).
const MARGIN: Duration = Duration::hours(3);
/// The most matching wall-clock times one search reads before it gives up (an expression that
/// never matches, e.g. 30 February, ends earlier: croner finds no match).
const MAX_CANDIDATES: usize = 200_000;

/// A parsed cron expression with seconds: `sec min hour day-of-month month day-of-week`.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: Cron,
    /// The hour field matches every hour: the job repeats through the day (see the module).
    every_hour: bool,
    expression: String,
}

impl CronSchedule {
    /// Parses `expression`; the message says what is expected.
    pub fn parse(expression: &str) -> Result<Self, String> {
        let cron = CronParser::builder()
            .seconds(Seconds::Required)
            .build()
            .parse(expression)
            .map_err(|_| {
                format!(
                    "invalid cron expression {expression:?}: expected six fields with seconds, `sec min hour day-of-month month day-of-week`, e.g. \"0 30 2 * * *\" for 02:30 every night"
                )
            })?;
        let every_hour = (0..24).all(|h| cron.pattern.hour_match(h).unwrap_or(false));
        Ok(Self {
            cron,
            every_hour,
            expression: expression.to_owned(),
        })
    }

    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The first fire time strictly after `after`, reading the expression in `tz`; `None` when
    /// it never matches again.
    pub fn next_fire(&self, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Start a little before `after`'s wall-clock time: after a fall-back, a wall-clock time
        // earlier than `after`'s can still be a later instant (the second pass of the hour).
        // Whole seconds: croner keeps the fraction of the time it starts from, and two daemons
        // must compute the very same instant for a tick to be claimed once.
        let local = after.with_timezone(&tz).naive_local();
        let start = local.with_nanosecond(0).unwrap_or(local) - MARGIN;
        let mut cursor = Utc.from_utc_datetime(&start);
        let mut best: Option<DateTime<Utc>> = None;
        for _ in 0..MAX_CANDIDATES {
            let found = self.cron.find_next_occurrence(&cursor, false).ok()?;
            let wall = found.naive_utc();
            if let Some(best) = best
                && wall > best.with_timezone(&tz).naive_local() + MARGIN
            {
                break;
            }
            for instant in self.instants(tz, wall) {
                if instant > after && best.is_none_or(|b| instant < b) {
                    best = Some(instant);
                }
            }
            cursor = found;
        }
        best
    }

    /// The instants at which the matching wall-clock time `wall` fires in `tz`.
    fn instants(&self, tz: Tz, wall: NaiveDateTime) -> Vec<DateTime<Utc>> {
        match tz.from_local_datetime(&wall) {
            LocalResult::Single(t) => vec![t.with_timezone(&Utc)],
            LocalResult::Ambiguous(first, second) => {
                if self.every_hour {
                    vec![first.with_timezone(&Utc), second.with_timezone(&Utc)]
                } else {
                    vec![first.with_timezone(&Utc)]
                }
            }
            LocalResult::None if self.every_hour => Vec::new(),
            LocalResult::None => first_after_gap(tz, wall).into_iter().collect(),
        }
    }
}

/// The first instant after the DST gap that holds `wall`: zones change at whole minutes, so
/// the first whole minute after `wall` that exists is where the gap ends.
fn first_after_gap(tz: Tz, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
    let minute = wall.with_second(0)?;
    (1..=180).find_map(|k| {
        tz.from_local_datetime(&(minute + Duration::minutes(k)))
            .earliest()
            .map(|t| t.with_timezone(&Utc))
    })
}

/// The first fire time of `expression` in `tz` strictly after `after`: `Err` for an expression
/// that does not parse, `Ok(None)` when it never fires again.
pub fn next_fire(
    expression: &str,
    tz: Tz,
    after: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, String> {
    Ok(CronSchedule::parse(expression)?.next_fire(tz, after))
}

/// The billing months as seen at one instant in the billing zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Months {
    /// The month that holds `now` (what "current month to date" syncs).
    pub current: Period,
    /// The month before it (the one that just ended).
    pub previous: Period,
    /// `now` is within the first `late_data_days` days of `current`: the previous month is
    /// still open for late data.
    pub in_late_window: bool,
}

/// The months at `now` in `tz`, with a late-data window of the first `late_data_days` days of
/// a month (0: no window, the previous month closes as the month turns).
pub fn months_at(now: DateTime<Utc>, tz: Tz, late_data_days: u32) -> Months {
    let current = Period::containing(now, tz);
    Months {
        current,
        previous: current.previous(),
        in_late_window: now.with_timezone(&tz).day() <= late_data_days,
    }
}

/// The instant the late-data window of the month after `period` ends in `tz` (local midnight
/// after its last day): from then on, `period` is closed to scheduled runs.
pub fn late_window_end(period: Period, tz: Tz, late_data_days: u32) -> DateTime<Utc> {
    let next = period.next();
    next.first_day()
        .checked_add_days(chrono::Days::new(u64::from(late_data_days)))
        .and_then(|day| day.and_hms_opt(0, 0, 0))
        .and_then(|midnight| tz.from_local_datetime(&midnight).earliest())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| next.start_utc(tz))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::America::New_York;
    use chrono_tz::Asia::Kolkata;
    use chrono_tz::Australia::Sydney;
    use chrono_tz::Europe::Oslo;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    /// The next `n` fire times after `from`, in UTC, as RFC 3339 text.
    fn sequence(expression: &str, tz: Tz, from: &str, n: usize) -> Vec<String> {
        let schedule = CronSchedule::parse(expression).unwrap();
        let mut at = utc(from);
        (0..n)
            .map(|_| {
                at = schedule.next_fire(tz, at).unwrap();
                at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
            })
            .collect()
    }

    #[test]
    fn oslo_nightly_runs_once_after_the_spring_gap_and_once_in_the_autumn_overlap() {
        // 2027-03-28: 02:00 CET jumps to 03:00 CEST (01:00Z); 02:30 does not exist.
        assert_eq!(
            sequence("0 30 2 * * *", Oslo, "2027-03-26T12:00:00Z", 3),
            [
                "2027-03-27T01:30:00Z",
                "2027-03-28T01:00:00Z",
                "2027-03-29T00:30:00Z"
            ]
        );
        // 2026-10-25: 03:00 CEST falls back to 02:00 CET (01:00Z); 02:30 happens twice.
        assert_eq!(
            sequence("0 30 2 * * *", Oslo, "2026-10-23T12:00:00Z", 3),
            [
                "2026-10-24T00:30:00Z",
                "2026-10-25T00:30:00Z",
                "2026-10-26T01:30:00Z"
            ]
        );
    }

    #[test]
    fn new_york_nightly_across_both_changes() {
        // 2026-03-08: 02:00 EST jumps to 03:00 EDT (07:00Z).
        assert_eq!(
            sequence("0 30 2 * * *", New_York, "2026-03-06T12:00:00Z", 3),
            [
                "2026-03-07T07:30:00Z",
                "2026-03-08T07:00:00Z",
                "2026-03-09T06:30:00Z"
            ]
        );
        // 2026-11-01: 02:00 EDT falls back to 01:00 EST (06:00Z); 01:30 happens twice.
        assert_eq!(
            sequence("0 30 1 * * *", New_York, "2026-10-30T12:00:00Z", 3),
            [
                "2026-10-31T05:30:00Z",
                "2026-11-01T05:30:00Z",
                "2026-11-02T06:30:00Z"
            ]
        );
    }

    #[test]
    fn sydney_nightly_across_both_changes_of_the_southern_year() {
        // 2026-04-05: 03:00 AEDT falls back to 02:00 AEST (16:00Z on the 4th).
        assert_eq!(
            sequence("0 30 2 * * *", Sydney, "2026-04-02T00:00:00Z", 4),
            [
                "2026-04-02T15:30:00Z",
                "2026-04-03T15:30:00Z",
                "2026-04-04T15:30:00Z",
                "2026-04-05T16:30:00Z"
            ]
        );
        // 2026-10-04: 02:00 AEST jumps to 03:00 AEDT (16:00Z on the 3rd).
        assert_eq!(
            sequence("0 30 2 * * *", Sydney, "2026-10-02T00:00:00Z", 3),
            [
                "2026-10-02T16:30:00Z",
                "2026-10-03T16:00:00Z",
                "2026-10-04T15:30:00Z"
            ]
        );
    }

    #[test]
    fn kolkata_keeps_its_half_hour_offset_all_year() {
        assert_eq!(
            sequence("0 30 2 * * *", Kolkata, "2027-03-27T00:00:00Z", 2),
            ["2027-03-27T21:00:00Z", "2027-03-28T21:00:00Z"]
        );
        assert_eq!(
            sequence("0 0 0 1 * *", Kolkata, "2026-10-15T00:00:00Z", 2),
            ["2026-10-31T18:30:00Z", "2026-11-30T18:30:00Z"]
        );
    }

    /// Every fire of an every-15-minutes job over `hours` hours from `from` is 15 minutes after
    /// the one before: nothing skipped, nothing doubled.
    fn assert_every_quarter_hour(tz: Tz, from: &str, hours: i64) {
        let schedule = CronSchedule::parse("0 */15 * * * *").unwrap();
        let start = utc(from);
        let mut at = start;
        let mut fires = Vec::new();
        while at < start + Duration::hours(hours) {
            at = schedule.next_fire(tz, at).unwrap();
            fires.push(at);
        }
        assert_eq!(fires.len() as i64, hours * 4, "{tz} from {from}: {fires:?}");
        for pair in fires.windows(2) {
            assert_eq!(pair[1] - pair[0], Duration::minutes(15), "{tz}: {fires:?}");
        }
    }

    #[test]
    fn an_every_n_minutes_job_neither_skips_nor_doubles() {
        assert_every_quarter_hour(Oslo, "2027-03-27T23:00:00Z", 4);
        assert_every_quarter_hour(Oslo, "2026-10-24T23:00:00Z", 4);
        assert_every_quarter_hour(New_York, "2026-03-08T05:00:00Z", 4);
        assert_every_quarter_hour(New_York, "2026-11-01T04:00:00Z", 4);
        assert_every_quarter_hour(Sydney, "2026-04-04T14:00:00Z", 4);
        assert_every_quarter_hour(Sydney, "2026-10-03T14:00:00Z", 4);
        assert_every_quarter_hour(Kolkata, "2026-10-24T23:00:00Z", 4);
        // The repeated hour in Oslo runs in both passes: 02:00 CEST and 02:00 CET.
        assert_eq!(
            sequence("0 0 * * * *", Oslo, "2026-10-24T23:30:00Z", 3),
            [
                "2026-10-25T00:00:00Z",
                "2026-10-25T01:00:00Z",
                "2026-10-25T02:00:00Z"
            ]
        );
    }

    #[test]
    fn a_fire_time_is_a_whole_second_whatever_the_fraction_of_now() {
        let every_two = CronSchedule::parse("*/2 * * * * *").unwrap();
        for after in ["2026-10-20T10:00:00.091956903Z", "2026-10-20T10:00:00.9Z"] {
            assert_eq!(
                every_two.next_fire(Oslo, utc(after)),
                Some(utc("2026-10-20T10:00:02Z")),
                "{after}"
            );
        }
    }

    #[test]
    fn an_expression_that_never_matches_has_no_next_fire() {
        assert_eq!(
            next_fire("0 0 0 30 2 *", Oslo, utc("2026-10-01T00:00:00Z")),
            Ok(None)
        );
        assert!(next_fire("30 2 * * *", Oslo, utc("2026-10-01T00:00:00Z")).is_err());
    }

    fn months(tz: Tz, at: &str, days: u32) -> (String, String, bool) {
        let m = months_at(utc(at), tz, days);
        (
            m.current.to_string(),
            m.previous.to_string(),
            m.in_late_window,
        )
    }

    #[test]
    fn the_month_and_the_late_data_window_turn_at_local_midnight() {
        // (zone, 23:59 on 31 October local, 00:00 on 1 November local, 00:30 on 1 November)
        let cases = [
            (
                Oslo,
                "2026-10-31T22:59:00Z",
                "2026-10-31T23:00:00Z",
                "2026-10-31T23:30:00Z",
            ),
            (
                New_York,
                "2026-11-01T03:59:00Z",
                "2026-11-01T04:00:00Z",
                "2026-11-01T04:30:00Z",
            ),
            (
                Sydney,
                "2026-10-31T12:59:00Z",
                "2026-10-31T13:00:00Z",
                "2026-10-31T13:30:00Z",
            ),
            (
                Kolkata,
                "2026-10-31T18:29:00Z",
                "2026-10-31T18:30:00Z",
                "2026-10-31T19:00:00Z",
            ),
        ];
        for (tz, last_minute, midnight, half_past) in cases {
            assert_eq!(
                months(tz, last_minute, 3),
                ("2026-10".into(), "2026-09".into(), false),
                "{tz} at 23:59 on the last day"
            );
            assert_eq!(
                months(tz, midnight, 3),
                ("2026-11".into(), "2026-10".into(), true),
                "{tz} at 00:00 on the first day"
            );
            // A run at 00:30 local on the 1st bills the month that just ended.
            assert_eq!(
                Period::previous_in(utc(half_past), tz).to_string(),
                "2026-10",
                "{tz} at 00:30 on the 1st"
            );
        }
    }

    #[test]
    fn the_late_data_window_ends_at_local_midnight_after_its_last_day() {
        // Oslo, 3 days: open until 23:59 on 3 November (CET), closed from 00:00 on the 4th.
        assert!(months_at(utc("2026-11-03T22:59:00Z"), Oslo, 3).in_late_window);
        assert!(!months_at(utc("2026-11-03T23:00:00Z"), Oslo, 3).in_late_window);
        let october: Period = "2026-10".parse().unwrap();
        assert_eq!(
            late_window_end(october, Oslo, 3),
            utc("2026-11-03T23:00:00Z")
        );
        // Sydney across its spring-forward (4 October 2026): a 23-hour day inside the window.
        let september: Period = "2026-09".parse().unwrap();
        assert_eq!(
            late_window_end(september, Sydney, 5),
            utc("2026-10-05T13:00:00Z")
        );
        assert!(months_at(utc("2026-10-05T12:59:00Z"), Sydney, 5).in_late_window);
        assert!(!months_at(utc("2026-10-05T13:00:00Z"), Sydney, 5).in_late_window);
        // No window: the previous month closes as the month turns.
        assert!(!months_at(utc("2026-10-31T23:00:00Z"), Oslo, 0).in_late_window);
    }
}
