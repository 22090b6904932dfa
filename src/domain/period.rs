//! The billing period: a calendar month, half-open `[start, end)` in the job's time zone.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A calendar month `YYYY-MM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Period {
    year: i32,
    month: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid period {0:?}: expected YYYY-MM, e.g. 2026-10")]
pub struct PeriodError(pub String);

impl Period {
    pub fn new(year: i32, month: u32) -> Result<Self, PeriodError> {
        if !(1..=12).contains(&month) || !(1970..=9999).contains(&year) {
            return Err(PeriodError(format!("{year:04}-{month:02}")));
        }
        Ok(Self { year, month })
    }

    pub fn year(&self) -> i32 {
        self.year
    }

    pub fn month(&self) -> u32 {
        self.month
    }

    /// The month's first day; prices in force on this day apply to the whole period.
    pub fn first_day(&self) -> NaiveDate {
        NaiveDate::from_ymd_opt(self.year, self.month, 1).expect("validated month")
    }

    /// The month's last day (inclusive).
    pub fn last_day(&self) -> NaiveDate {
        self.next()
            .first_day()
            .pred_opt()
            .expect("a day before any month")
    }

    pub fn next(&self) -> Self {
        if self.month == 12 {
            Self {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Self {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    pub fn previous(&self) -> Self {
        if self.month == 1 {
            Self {
                year: self.year - 1,
                month: 12,
            }
        } else {
            Self {
                year: self.year,
                month: self.month - 1,
            }
        }
    }

    /// The period that contains `now` in `tz`.
    pub fn containing(now: DateTime<Utc>, tz: Tz) -> Self {
        let local = now.with_timezone(&tz);
        Self {
            year: local.year(),
            month: local.month(),
        }
    }

    /// The month before the one holding `now` in `tz`: the period a run bills by default (the
    /// last complete month), for `tally run` and the nightly schedule alike.
    pub fn previous_in(now: DateTime<Utc>, tz: Tz) -> Self {
        Self::containing(now, tz).previous()
    }

    /// The first instant of the period in `tz`, as UTC.
    pub fn start_utc(&self, tz: Tz) -> DateTime<Utc> {
        let midnight = self
            .first_day()
            .and_hms_opt(0, 0, 0)
            .expect("midnight exists");
        // Where a zone springs forward at midnight (Paraguay did on 1 October 2023), midnight
        // does not exist: the month starts at the first instant after the gap. Zones change at
        // whole minutes, so the first whole minute that exists is it.
        (0..=180)
            .find_map(|minutes| {
                tz.from_local_datetime(&(midnight + chrono::Duration::minutes(minutes)))
                    .earliest()
            })
            .map(|start| start.with_timezone(&Utc))
            .unwrap_or_else(|| Utc.from_utc_datetime(&midnight))
    }

    /// The first instant after the period in `tz` (half-open end), as UTC.
    pub fn end_utc(&self, tz: Tz) -> DateTime<Utc> {
        self.next().start_utc(tz)
    }
}

impl FromStr for Period {
    type Err = PeriodError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || PeriodError(s.to_owned());
        let (y, m) = s.trim().split_once('-').ok_or_else(err)?;
        if y.len() != 4 || m.len() != 2 {
            return Err(err());
        }
        let year = y.parse().map_err(|_| err())?;
        let month = m.parse().map_err(|_| err())?;
        Self::new(year, month).map_err(|_| err())
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl Serialize for Period {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_year_month() {
        let p: Period = "2026-10".parse().unwrap();
        assert_eq!(p.to_string(), "2026-10");
        assert_eq!(p.last_day(), NaiveDate::from_ymd_opt(2026, 10, 31).unwrap());
        assert_eq!(p.next().to_string(), "2026-11");
        assert_eq!(
            "2026-01".parse::<Period>().unwrap().previous().to_string(),
            "2025-12"
        );
    }

    #[test]
    fn refuses_what_is_not_a_month() {
        for bad in ["2026-13", "2026-1", "26-10", "2026/10", "", "2026-00"] {
            assert!(bad.parse::<Period>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_month_whose_midnight_falls_in_a_dst_gap_starts_after_the_gap() {
        // America/Asuncion sprang forward from 00:00 (-04) to 01:00 (-03) on 1 October 2023.
        let p: Period = "2023-10".parse().unwrap();
        let tz = chrono_tz::America::Asuncion;
        let midnight = p.first_day().and_hms_opt(0, 0, 0).unwrap();
        assert!(
            tz.from_local_datetime(&midnight).earliest().is_none(),
            "in the gap"
        );
        assert_eq!(p.start_utc(tz).to_rfc3339(), "2023-10-01T04:00:00+00:00");
        assert_eq!(
            p.previous().end_utc(tz),
            p.start_utc(tz),
            "no instant in two months"
        );
    }

    #[test]
    fn boundaries_follow_the_time_zone() {
        let p: Period = "2026-10".parse().unwrap();
        assert_eq!(
            p.start_utc(chrono_tz::UTC).to_rfc3339(),
            "2026-10-01T00:00:00+00:00"
        );
        // Oslo is UTC+2 on 1 October (summer time) and UTC+1 on 1 November.
        assert_eq!(
            p.start_utc(chrono_tz::Europe::Oslo).to_rfc3339(),
            "2026-09-30T22:00:00+00:00"
        );
        assert_eq!(
            p.end_utc(chrono_tz::Europe::Oslo).to_rfc3339(),
            "2026-10-31T23:00:00+00:00"
        );
    }
}
