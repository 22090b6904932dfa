//! One measured `tally run` in a child process: its wall time, its CPU time and its peak
//! resident memory, read by `wait4` the way `/usr/bin/time` reads them.
//!
//! A child process, rather than the pipeline called in the benchmark's own process, because
//! the figure must be tally's alone: the benchmark holds every pre-rendered page (hundreds of
//! MiB at a million users) and its yardstick's buffers, and a process's high-water mark
//! cannot be reset between the first run and the re-run. A real `tally run` also measures what
//! an operator runs: start-up, the configuration check and the migrations included.

use crate::domain::RunSummary;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// What one child run measured and answered.
#[derive(Debug, Clone)]
pub struct Measured {
    pub wall: Duration,
    /// User plus system CPU time of the child.
    pub cpu: Duration,
    /// The child's peak resident set size (`ru_maxrss`), in KiB.
    pub peak_rss_kib: u64,
    pub status: ExitStatus,
    /// The JSON summary `tally run --output json` printed, if it printed one.
    pub summary: Option<RunSummary>,
    /// What the child wrote to stderr, for a failure's message.
    pub stderr: String,
}

/// How to start one `tally run`.
#[derive(Debug, Clone)]
pub struct RunCommand {
    /// The `tally` binary (the benchmark's own).
    pub exe: PathBuf,
    pub config: PathBuf,
    pub period: String,
    /// Variables the child gets on top of the benchmark's environment, from which every
    /// `TALLY*` variable and `DATABASE_URL` are removed first: the generated configuration
    /// says everything, and the operator's own settings must not leak into a measurement.
    pub env: Vec<(String, String)>,
    /// Where stdout and stderr go (files: a pipe that nobody reads could block the child).
    pub out_dir: PathBuf,
}

impl RunCommand {
    /// Runs the child to its end (blocking) and measures it; `label` names its output files.
    pub fn measure(&self, label: &str) -> anyhow::Result<Measured> {
        let stdout_path = self.out_dir.join(format!("{label}.stdout"));
        let stderr_path = self.out_dir.join(format!("{label}.stderr"));
        let mut command = Command::new(&self.exe);
        command
            .arg("--config")
            .arg(&self.config)
            .args(["run", "--period", &self.period, "--output", "json"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout_path)?)
            .stderr(std::fs::File::create(&stderr_path)?);
        for (name, _) in std::env::vars_os() {
            let text = name.to_string_lossy();
            if text.starts_with("TALLY") || text == "DATABASE_URL" {
                command.env_remove(&name);
            }
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));

        let started = Instant::now();
        let child = command.spawn()?;
        let (status, usage) = wait_with_usage(child.id())?;
        let wall = started.elapsed();

        let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
        let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        Ok(Measured {
            wall,
            cpu: usage.cpu,
            peak_rss_kib: usage.peak_rss_kib,
            status,
            summary: serde_json::from_str(stdout.trim()).ok(),
            stderr,
        })
    }
}

/// What `wait4` reports about a finished child.
struct Usage {
    cpu: Duration,
    peak_rss_kib: u64,
}

/// Waits for child `pid` and reads its resource usage. `std::process::Child::wait` would reap
/// the child without it, and `getrusage(RUSAGE_CHILDREN)` gives the largest of every child so
/// far, so the re-run could not be told from the first run.
fn wait_with_usage(pid: u32) -> std::io::Result<(ExitStatus, Usage)> {
    let pid = libc::pid_t::try_from(pid).map_err(std::io::Error::other)?;
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: `rusage` is a plain C struct for which all zeroes is a valid value, and both
        // pointers point at live locals for the whole call; `pid` is our own unreaped child,
        // so no other waiter can race us for it.
        let (got, usage) = unsafe {
            let mut usage: libc::rusage = std::mem::zeroed();
            let got = libc::wait4(pid, &mut status, 0, &mut usage);
            (got, usage)
        };
        if got == pid {
            let cpu = timeval(usage.ru_utime) + timeval(usage.ru_stime);
            // Linux reports KiB; macOS bytes.
            let max = u64::try_from(usage.ru_maxrss).unwrap_or(0);
            let peak_rss_kib = if cfg!(target_os = "macos") {
                max / 1024
            } else {
                max
            };
            return Ok((ExitStatus::from_raw(status), Usage { cpu, peak_rss_kib }));
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

fn timeval(t: libc::timeval) -> Duration {
    Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
        + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
}

/// The number of complete rows after the header of the file sink's file, if it exists.
pub fn file_sink_rows(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|text| text.lines().count().saturating_sub(1))
        .unwrap_or(0)
}
