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
        let watch = HighWater::watch(child.id());
        let (status, usage) = wait_with_usage(child.id())?;
        let wall = started.elapsed();
        // The child's own high-water mark where the system shows it (Linux); `ru_maxrss` only
        // where it does not, as it counts the benchmark's memory too (see `HighWater`).
        let peak_rss_kib = watch.stop().unwrap_or(usage.peak_rss_kib);

        let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
        let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        Ok(Measured {
            wall,
            cpu: usage.cpu,
            peak_rss_kib,
            status,
            summary: serde_json::from_str(stdout.trim()).ok(),
            stderr,
        })
    }
}

/// The child's peak resident memory as its `/proc/<pid>/status` shows it (`VmHWM`), read
/// every few milliseconds while it runs.
///
/// Not `ru_maxrss`: on Linux a process keeps the high-water mark of the memory it had before
/// `exec`, and a child spawned by the benchmark starts as a view of the benchmark's memory,
/// which holds every pre-rendered page (about 210 MiB at a million users). `ru_maxrss` then
/// reports the benchmark's size, whatever the child used. `VmHWM` belongs to the memory the
/// child got at `exec`: tally's own.
struct HighWater {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Option<u64>>,
}

impl HighWater {
    fn watch(pid: u32) -> HighWater {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let path = format!("/proc/{pid}/status");
            let mut peak: Option<u64> = None;
            while !stopped.load(Ordering::SeqCst) {
                // A zombie (exited, not yet reaped) shows no memory lines: the last reading
                // before it stands.
                if let Some(kib) = std::fs::read_to_string(&path)
                    .ok()
                    .as_deref()
                    .and_then(vm_hwm_kib)
                {
                    peak = peak.max(Some(kib));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        });
        HighWater { stop, thread }
    }

    /// The highest `VmHWM` read, or `None` where the system shows none.
    fn stop(self) -> Option<u64> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().ok().flatten()
    }
}

/// `VmHWM:   12345 kB` of a `/proc/<pid>/status` text, in KiB.
fn vm_hwm_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse().ok())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_high_water_mark_is_read_from_a_status_text() {
        let status =
            "Name:\ttally\nVmPeak:\t  900000 kB\nVmHWM:\t   45678 kB\nVmRSS:\t   40000 kB\n";
        assert_eq!(vm_hwm_kib(status), Some(45_678));
        assert_eq!(vm_hwm_kib("Name:\ttally\nState:\tZ (zombie)\n"), None);
    }

    #[test]
    // `wait_with_usage` reaps the child (wait4), which clippy cannot see.
    #[allow(clippy::zombie_processes)]
    fn a_child_is_measured_by_its_own_memory() {
        // This test process is the parent; a shell that sleeps is tiny whatever it holds.
        let big: Vec<u8> = vec![1; 64 << 20];
        let child = Command::new("sh")
            .args(["-c", "sleep 0.2"])
            .spawn()
            .unwrap();
        let watch = HighWater::watch(child.id());
        let (_, usage) = wait_with_usage(child.id()).unwrap();
        let own = watch.stop().expect("Linux shows VmHWM");
        assert!(own < 16 << 10, "a shell's own peak: {own} KiB");
        assert!(big.iter().all(|&b| b == 1));
        // What `ru_maxrss` says instead includes the parent's 64 MiB.
        assert!(usage.peak_rss_kib > own, "{} vs {own}", usage.peak_rss_kib);
    }
}
