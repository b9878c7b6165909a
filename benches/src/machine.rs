//! The machine a benchmark runs on, read from `/proc`: what it is (CPUs, memory, kernel)
//! and how busy it is (all CPUs, one process, or each of its threads).
//!
//! Why a module of its own: on the shared 2-core machine the brokers, the registry, the
//! services and the load generator compete for the same cores, so a figure means little
//! without the load beside it. Every benchmark reads the load the same way (jiffies from
//! `/proc/stat` and `/proc/<pid>/stat`), so their CPU figures compare. Outside Linux the
//! files are missing and every reading is empty or zero rather than an error: the
//! figures are context, not the measurement.

use std::collections::HashMap;

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`, 100 on every Linux we run).
const TICKS_PER_SECOND: f64 = 100.0;

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` writes them (`"0.52 0.61 0.70"`).
pub fn loadavg() -> String {
    read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// What the machine is: `nproc`, `cpu_model`, `mem_total_mib`, `kernel` and
/// `loadavg_at_start` (the JSON keys of the benchmark reports).
pub fn describe() -> serde_json::Value {
    let cpuinfo = read("/proc/cpuinfo");
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let mem_kib: u64 = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    serde_json::json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": cpu_model,
        "mem_total_mib": mem_kib / 1024,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "loadavg_at_start": loadavg(),
    })
}

/// Busy and total jiffies of all CPUs at one moment; two of them give a busy %.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuSample {
    /// Jiffies spent on anything but idle and iowait.
    pub busy: u64,
    /// All jiffies (the first eight fields of the `cpu` line).
    pub total: u64,
}

impl CpuSample {
    /// The machine's CPUs now (zeros without `/proc/stat`).
    pub fn now() -> CpuSample {
        CpuSample::parse(&read("/proc/stat"))
    }

    /// The aggregate `cpu ` line of a `/proc/stat` text.
    pub fn parse(stat: &str) -> CpuSample {
        let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
            return CpuSample::default();
        };
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        let total: u64 = v.iter().take(8).sum();
        let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
        CpuSample {
            busy: total.saturating_sub(idle),
            total,
        }
    }

    /// The busy % of all CPUs between `earlier` and this sample; `None` when no time
    /// was counted in between.
    pub fn busy_pct_since(&self, earlier: CpuSample) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total)?;
        (total > 0).then(|| 100.0 * self.busy.saturating_sub(earlier.busy) as f64 / total as f64)
    }
}

/// The command name and CPU seconds (user + system) of a `/proc/<pid>/stat` or
/// `/proc/<pid>/task/<tid>/stat` text. The name is in parentheses and may itself hold
/// spaces and parentheses, so the fields are counted after its last `)`.
pub fn stat_cpu_seconds(stat: &str) -> (String, f64) {
    let name = stat
        .split_once('(')
        .and_then(|(_, rest)| rest.rsplit_once(')'))
        .map(|(name, _)| name.to_owned())
        .unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields 14 and 15 of stat (utime, stime) are 12 and 13 after the command name.
    (name, (ticks(11) + ticks(12)) / TICKS_PER_SECOND)
}

/// CPU seconds (user + system) a process has used so far (0 when it is gone).
pub fn process_cpu_seconds(pid: u32) -> f64 {
    stat_cpu_seconds(&read(&format!("/proc/{pid}/stat"))).1
}

/// CPU seconds per thread name of a process (threads of the same name summed).
pub fn thread_cpu_seconds(pid: u32) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let tid = task.file_name().to_string_lossy().into_owned();
        let (name, seconds) = stat_cpu_seconds(&read(&format!("/proc/{pid}/task/{tid}/stat")));
        *out.entry(name).or_default() += seconds;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busy_share_counts_everything_but_idle_and_iowait() {
        let a = CpuSample::parse("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3\n");
        assert_eq!(
            a,
            CpuSample {
                busy: 200,
                total: 1000
            }
        );
        let b = CpuSample::parse("cpu  200 0 200 1300 300 0 0 0 0 0\n");
        assert_eq!(b.busy_pct_since(a), Some(20.0));
        // No time in between, or a sample from before a counter reset: no figure.
        assert_eq!(a.busy_pct_since(a), None);
        assert_eq!(a.busy_pct_since(b), None);
        assert_eq!(CpuSample::parse("no cpu line"), CpuSample::default());
    }

    #[test]
    fn process_cpu_is_read_after_the_command_name() {
        // A thread name with a space and a parenthesis, utime 250 and stime 50 ticks.
        let stat = "42 (tokio (rt) x) S 1 42 42 0 -1 4194560 1 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(stat_cpu_seconds(stat), ("tokio (rt) x".to_owned(), 3.0));
        assert_eq!(stat_cpu_seconds(""), (String::new(), 0.0));
    }

    #[test]
    fn this_process_and_its_threads_are_found() {
        let pid = std::process::id();
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(50) {
            std::hint::black_box(0u64);
        }
        assert!(process_cpu_seconds(pid) >= 0.0);
        assert!(!thread_cpu_seconds(pid).is_empty());
        assert!(thread_cpu_seconds(u32::MAX).is_empty());
        assert!(describe()["nproc"].as_u64().is_some_and(|n| n > 0));
    }
}
