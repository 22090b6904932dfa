//! The benchmark's figures as Markdown, ready for docs/PERFORMANCE.md: one row per step
//! measured, then the ratios the project's goals are stated in, each beside its goal.

use std::fmt::Write as _;
use std::time::Duration;

/// The goals of the speed work (docs/PERFORMANCE.md), which the ratios are shown against.
pub const GOAL_FIRST_RUN_OVER_BARE: f64 = 3.0;
pub const GOAL_RERUN_OVER_FIRST: f64 = 0.5;
pub const GOAL_RSS_GROWTH: f64 = 1.5;
/// 100 MB, in bytes.
pub const GOAL_PEAK_RSS_BYTES: f64 = 100_000_000.0;

/// One measured child run.
#[derive(Debug, Clone)]
pub struct Step {
    pub wall: Duration,
    pub cpu: Duration,
    pub peak_rss_kib: u64,
    /// `None` when the run printed no summary.
    pub lines_pushed: Option<u64>,
    /// Whether it pushed what it had to (one line per organization, then none).
    pub as_expected: bool,
}

/// The two runs of one store at one size.
#[derive(Debug, Clone)]
pub struct StoreResult {
    pub store: &'static str,
    pub first: Option<Step>,
    pub rerun: Option<Step>,
}

/// Everything measured at one size.
#[derive(Debug, Clone)]
pub struct SizeResult {
    pub orgs: usize,
    pub records: usize,
    /// The fastest bare fetch-and-parse of the sitting.
    pub bare: Duration,
    pub bare_runs: usize,
    pub stores: Vec<StoreResult>,
}

impl SizeResult {
    fn label(&self) -> String {
        format!(
            "{} users / {} orgs",
            thousands(self.records as u64),
            thousands(self.orgs as u64)
        )
    }

    fn store(&self, name: &str) -> Option<&StoreResult> {
        self.stores.iter().find(|s| s.store == name)
    }
}

/// The steps table and the ratios table.
pub fn render(sizes: &[SizeResult]) -> String {
    let mut out = String::new();
    out.push_str(
        "| data set | store | step | seconds | records/s | lines pushed | peak RSS | CPU s |\n\
         |---|---|---|---:|---:|---:|---:|---:|\n",
    );
    for size in sizes {
        let _ = writeln!(
            out,
            "| {} | — | bare fetch-and-parse ({} connections, best of {}) | {} | {} | — | — | — |",
            size.label(),
            super::yardstick::CONNECTIONS,
            size.bare_runs,
            secs(size.bare),
            rate(size.records, size.bare),
        );
        for store in &size.stores {
            for (name, step) in [("first run", &store.first), ("re-run", &store.rerun)] {
                let Some(step) = step else {
                    let _ = writeln!(
                        out,
                        "| {} | {} | {name} | not run | | | | |",
                        size.label(),
                        store.store
                    );
                    continue;
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {name} | {} | {} | {}{} | {} | {} |",
                    size.label(),
                    store.store,
                    secs(step.wall),
                    rate(size.records, step.wall),
                    step.lines_pushed.map_or_else(|| "?".to_owned(), thousands),
                    if step.as_expected { "" } else { " (wrong)" },
                    mib(step.peak_rss_kib),
                    secs(step.cpu),
                );
            }
        }
    }

    out.push_str("\n| ratio | store | measured | goal | met |\n|---|---|---:|---:|---|\n");
    let mut stores: Vec<&'static str> = Vec::new();
    for name in sizes.iter().flat_map(|s| s.stores.iter().map(|r| r.store)) {
        if !stores.contains(&name) {
            stores.push(name);
        }
    }
    for size in sizes {
        for store in &size.stores {
            if let Some(first) = &store.first {
                let ratio = first.wall.as_secs_f64() / size.bare.as_secs_f64().max(1e-9);
                ratio_row(
                    &mut out,
                    &format!("first run / bare fetch, {}", size.label()),
                    store.store,
                    format!("{ratio:.1}×"),
                    format!("≤ {GOAL_FIRST_RUN_OVER_BARE}×"),
                    ratio <= GOAL_FIRST_RUN_OVER_BARE,
                );
            }
            if let (Some(first), Some(rerun)) = (&store.first, &store.rerun) {
                let ratio = rerun.wall.as_secs_f64() / first.wall.as_secs_f64().max(1e-9);
                ratio_row(
                    &mut out,
                    &format!("re-run / first run, {}", size.label()),
                    store.store,
                    format!("{ratio:.2}"),
                    format!("≤ {GOAL_RERUN_OVER_FIRST}"),
                    ratio <= GOAL_RERUN_OVER_FIRST,
                );
            }
        }
    }
    let (Some(small), Some(large)) = (sizes.first(), sizes.last()) else {
        return out;
    };
    for store in stores {
        let peak = |size: &SizeResult| {
            size.store(store)
                .and_then(|s| {
                    let first = s.first.as_ref().map(|r| r.peak_rss_kib);
                    let rerun = s.rerun.as_ref().map(|r| r.peak_rss_kib);
                    first.max(rerun)
                })
                .filter(|kib| *kib > 0)
        };
        if sizes.len() > 1
            && let (Some(at_small), Some(at_large)) = (peak(small), peak(large))
        {
            let ratio = at_large as f64 / at_small as f64;
            ratio_row(
                &mut out,
                &format!(
                    "peak RSS at {} / at {} users",
                    thousands(large.records as u64),
                    thousands(small.records as u64)
                ),
                store,
                format!("{ratio:.2}"),
                format!("≤ {GOAL_RSS_GROWTH}"),
                ratio <= GOAL_RSS_GROWTH,
            );
        } else if sizes.len() == 1 {
            ratio_row(
                &mut out,
                "peak RSS growth: needs two sizes (--sizes)",
                store,
                "—".to_owned(),
                format!("≤ {GOAL_RSS_GROWTH}"),
                false,
            );
        }
        if let Some(at_large) = peak(large) {
            ratio_row(
                &mut out,
                &format!(
                    "peak RSS at {} users (goal stated at 1,000,000)",
                    thousands(large.records as u64)
                ),
                store,
                mib(at_large),
                "≤ 100 MB (95.4 MiB)".to_owned(),
                at_large as f64 * 1024.0 <= GOAL_PEAK_RSS_BYTES,
            );
        }
    }
    out
}

fn ratio_row(out: &mut String, what: &str, store: &str, measured: String, goal: String, met: bool) {
    let _ = writeln!(
        out,
        "| {what} | {store} | {measured} | {goal} | {} |",
        if met { "yes" } else { "no" }
    );
}

fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

fn rate(records: usize, d: Duration) -> String {
    thousands((records as f64 / d.as_secs_f64().max(1e-9)).round() as u64)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(secs: f64, rss_mib: u64, pushed: u64) -> Option<Step> {
        Some(Step {
            wall: Duration::from_secs_f64(secs),
            cpu: Duration::from_secs_f64(secs / 2.0),
            peak_rss_kib: rss_mib * 1024,
            lines_pushed: Some(pushed),
            as_expected: true,
        })
    }

    #[test]
    fn the_ratios_are_computed_against_their_goals() {
        let size = |records: usize, orgs: usize, first: f64, rss: u64| SizeResult {
            orgs,
            records,
            bare: Duration::from_secs(1),
            bare_runs: 3,
            stores: vec![StoreResult {
                store: "sqlite",
                first: step(first, rss, orgs as u64),
                rerun: step(first / 4.0, rss, 0),
            }],
        };
        let table = render(&[size(1_000, 10, 2.0, 40), size(10_000, 100, 30.0, 80)]);
        assert!(
            table.contains(
                "| first run / bare fetch, 1,000 users / 10 orgs | sqlite | 2.0× | ≤ 3× | yes |"
            ),
            "{table}"
        );
        assert!(
            table.contains(
                "| first run / bare fetch, 10,000 users / 100 orgs | sqlite | 30.0× | ≤ 3× | no |"
            ),
            "{table}"
        );
        assert!(
            table.contains(
                "| re-run / first run, 10,000 users / 100 orgs | sqlite | 0.25 | ≤ 0.5 | yes |"
            ),
            "{table}"
        );
        assert!(
            table.contains("| peak RSS at 10,000 / at 1,000 users | sqlite | 2.00 | ≤ 1.5 | no |"),
            "{table}"
        );
        assert!(
            table.contains("| 80.0 MiB | ≤ 100 MB (95.4 MiB) | yes |"),
            "{table}"
        );
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
