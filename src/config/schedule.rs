//! `[schedule]` and `[daemon]`: the jobs `tally daemon` runs, when, in which time zone, and
//! where it answers `/healthz` and `/metrics`. Kept apart from `config.rs` so that the daemon's
//! settings and their checks live together.

use crate::problem::Problem;
use chrono_tz::Tz;
use serde::Deserialize;
use std::collections::BTreeSet;

/// The name of the job the daemon runs when `[[schedule.jobs]]` lists none.
pub const DEFAULT_JOB: &str = "nightly";

/// `[schedule]`: the daemon's jobs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleSettings {
    /// The default job's cron expression (when `jobs` is empty): six fields with seconds.
    pub cron: String,
    /// The default job's time zone; default `general.timezone`.
    pub timezone: Option<String>,
    /// The first this many days of a month (in `general.timezone`) are the previous month's
    /// late-data window: scheduled runs still bill it; afterwards it is closed.
    pub late_data_days: u32,
    /// `[[schedule.jobs]]`; empty: one job `nightly` from `cron` and `timezone`.
    pub jobs: Vec<JobSettings>,
}

impl Default for ScheduleSettings {
    fn default() -> Self {
        Self {
            cron: "0 30 2 * * *".into(),
            timezone: None,
            late_data_days: 3,
            jobs: Vec::new(),
        }
    }
}

/// `[[schedule.jobs]]`: one job of the daemon.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct JobSettings {
    /// Its name, in logs, `/healthz` and the metrics' `job` label.
    pub name: String,
    /// Cron expression with seconds: `sec min hour day-of-month month day-of-week`.
    pub cron: String,
    /// The zone the cron expression is read in; default `general.timezone`.
    #[serde(default)]
    pub timezone: Option<String>,
    /// What it does (default `nightly`).
    #[serde(default)]
    pub task: JobTask,
}

/// What a job does when it fires.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobTask {
    /// `month_to_date`, then `previous_month`.
    #[default]
    Nightly,
    /// Syncs the current month to date; its lines stay drafts and nothing is pushed.
    MonthToDate,
    /// Inside the late-data window, runs the previous month as `tally run` would (push, or
    /// wait for approval); after it, closes that month.
    PreviousMonth,
}

impl JobTask {
    pub fn as_str(&self) -> &'static str {
        match self {
            JobTask::Nightly => "nightly",
            JobTask::MonthToDate => "month_to_date",
            JobTask::PreviousMonth => "previous_month",
        }
    }
}

/// A job as the daemon runs it: every default filled in and its zone parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub name: String,
    pub cron: String,
    pub timezone: Tz,
    pub task: JobTask,
}

impl ScheduleSettings {
    /// The jobs to run, with `general_timezone` as the default zone; every problem at once
    /// when they are not right.
    pub fn jobs(&self, general_timezone: &str) -> Result<Vec<Job>, Vec<Problem>> {
        let mut problems = Vec::new();
        let zone = |at: String, name: &str, problems: &mut Vec<Problem>| {
            name.parse::<Tz>()
                .map_err(|_| {
                    problems.push(Problem::new(
                        at,
                        format!(
                            "unknown time zone {name:?} (use an IANA name such as UTC or Europe/Oslo)"
                        ),
                    ))
                })
                .ok()
        };
        let billing_zone = general_timezone.parse::<Tz>().ok();
        let cron = |at: String, expression: &str, problems: &mut Vec<Problem>| {
            if let Err(message) = crate::schedule::check_cron(expression) {
                problems.push(Problem::new(at, message));
            }
        };
        let mut jobs = Vec::new();
        if self.jobs.is_empty() {
            cron("schedule.cron".into(), &self.cron, &mut problems);
            let tz = match &self.timezone {
                Some(name) => zone("schedule.timezone".into(), name, &mut problems),
                None => billing_zone,
            };
            if let Some(timezone) = tz {
                jobs.push(Job {
                    name: DEFAULT_JOB.into(),
                    cron: self.cron.clone(),
                    timezone,
                    task: JobTask::Nightly,
                });
            }
        } else {
            let mut names = BTreeSet::new();
            for (i, job) in self.jobs.iter().enumerate() {
                let at = format!("schedule.jobs[{i}]");
                let name = job.name.trim();
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    problems.push(Problem::new(
                        format!("{at}.name"),
                        format!(
                            "{:?}: a job needs a name of letters, digits, `_` or `-` (it labels logs and metrics)",
                            job.name
                        ),
                    ));
                } else if !names.insert(name) {
                    problems.push(Problem::new(
                        format!("{at}.name"),
                        format!("{name:?} names another job too; each job needs its own name"),
                    ));
                }
                cron(format!("{at}.cron"), &job.cron, &mut problems);
                let tz = match &job.timezone {
                    Some(name) => zone(format!("{at}.timezone"), name, &mut problems),
                    None => billing_zone,
                };
                if let Some(timezone) = tz {
                    jobs.push(Job {
                        name: name.to_owned(),
                        cron: job.cron.clone(),
                        timezone,
                        task: job.task,
                    });
                }
            }
        }
        if self.late_data_days > 27 {
            problems.push(Problem::new(
                "schedule.late_data_days",
                format!(
                    "is {}: the late-data window must end before the month does (at most 27 days; default 3, 0 closes the month as it ends)",
                    self.late_data_days
                ),
            ));
        }
        if problems.is_empty() {
            Ok(jobs)
        } else {
            Err(problems)
        }
    }
}

/// `[daemon]`: the daemon's own HTTP endpoints.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonSettings {
    /// `host:port` of `/healthz` and `/metrics`; empty: no server.
    pub listen: String,
}

impl Default for DaemonSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".into(),
        }
    }
}

impl DaemonSettings {
    /// The address to serve on, `None` for no server; a problem when it is not `host:port`.
    pub fn address(&self) -> Result<Option<std::net::SocketAddr>, Problem> {
        let listen = self.listen.trim();
        if listen.is_empty() {
            return Ok(None);
        }
        listen.parse().map(Some).map_err(|_| {
            Problem::new(
                "daemon.listen",
                format!(
                    "{listen:?} is not an address and port such as 127.0.0.1:9464 or 0.0.0.0:9464 (empty: no server)"
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_job_reads_its_cron_in_the_billing_zone() {
        let jobs = ScheduleSettings::default().jobs("Europe/Oslo").unwrap();
        assert_eq!(
            jobs,
            [Job {
                name: "nightly".into(),
                cron: "0 30 2 * * *".into(),
                timezone: chrono_tz::Europe::Oslo,
                task: JobTask::Nightly,
            }]
        );
        let old_keys = ScheduleSettings {
            timezone: Some("Asia/Kolkata".into()),
            ..Default::default()
        };
        assert_eq!(
            old_keys.jobs("Europe/Oslo").unwrap()[0].timezone,
            chrono_tz::Asia::Kolkata
        );
    }

    #[test]
    fn every_problem_of_the_jobs_is_listed_at_once() {
        let settings = ScheduleSettings {
            late_data_days: 40,
            jobs: vec![
                JobSettings {
                    name: "a".into(),
                    cron: "30 2 * * *".into(),
                    timezone: Some("Mars/Olympus".into()),
                    task: JobTask::Nightly,
                },
                JobSettings {
                    name: "a".into(),
                    cron: "0 0 * * * *".into(),
                    timezone: None,
                    task: JobTask::MonthToDate,
                },
            ],
            ..Default::default()
        };
        let problems: Vec<String> = settings
            .jobs("UTC")
            .unwrap_err()
            .iter()
            .map(|p| p.to_string())
            .collect();
        let all = problems.join("\n");
        assert_eq!(problems.len(), 4, "{all}");
        assert!(all.contains("schedule.jobs[0].cron: invalid cron"), "{all}");
        assert!(
            all.contains("schedule.jobs[0].timezone: unknown time zone \"Mars/Olympus\""),
            "{all}"
        );
        assert!(all.contains("schedule.jobs[1].name"), "{all}");
        assert!(all.contains("schedule.late_data_days: is 40"), "{all}");
    }

    #[test]
    fn the_listen_address_is_checked_and_empty_means_no_server() {
        assert!(DaemonSettings::default().address().unwrap().is_some());
        let none = DaemonSettings { listen: " ".into() };
        assert_eq!(none.address().unwrap(), None);
        let bad = DaemonSettings {
            listen: "localhost".into(),
        };
        assert!(
            bad.address()
                .unwrap_err()
                .to_string()
                .contains("daemon.listen")
        );
    }
}
