//! CPU time of processes and threads, from `/proc`, for the examples.

#![allow(dead_code)]

use std::time::Duration;

/// CPU time this process has used so far (user and system, all threads),
/// from `/proc/self/stat`; `None` where that file does not exist.
pub(crate) fn cpu_time() -> Option<Duration> {
    stat_cpu_time(std::path::Path::new("/proc/self/stat"))
}

/// User plus system time in a `/proc/.../stat` file (a process's or a
/// thread's).
pub(crate) fn stat_cpu_time(path: &std::path::Path) -> Option<Duration> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // The kernel counts in USER_HZ, 100 a second on Linux.
    Some(Duration::from_millis(ticks * 10))
}

/// CPU time used so far by the threads named `name` of the process whose
/// `/proc` directory is `proc` (the store's writer thread is
/// `breakwater-store`).
pub(crate) fn thread_cpu_time(proc: &std::path::Path, name: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir(proc.join("task")) else {
        return Duration::ZERO;
    };
    // The kernel keeps the first 15 bytes of a thread's name.
    let name = &name[..name.len().min(15)];
    tasks
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm")).is_ok_and(|c| c.trim() == name)
        })
        .filter_map(|task| stat_cpu_time(&task.path().join("stat")))
        .sum()
}

/// Resident memory of the process whose `/proc` directory is `proc`, in
/// bytes (`VmRSS`), if known.
pub(crate) fn rss(proc: &std::path::Path) -> Option<u64> {
    let status = std::fs::read_to_string(proc.join("status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}
