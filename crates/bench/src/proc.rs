//! Process memory and CPU from Linux's /proc.

use anyhow::Context;

/// Clock ticks per second of `/proc/PID/stat` times (`USER_HZ`, 100 on Linux's user ABI).
const USER_HZ: f64 = 100.0;

/// Fails unless `pid`'s memory can be read: the `--server-pid` check before any setup.
pub fn check_server_pid(pid: u32) -> anyhow::Result<()> {
    memory_kb(pid).context("--server-pid").map(drop)
}

/// `pid`'s current RSS in KiB for a progress line; 0 when it cannot be read.
pub fn rss_kb(pid: u32) -> u64 {
    memory_kb(pid).map_or(0, |(_, rss)| rss)
}

/// `(VmHWM, VmRSS)` of `pid` in KiB: peak and current resident set.
pub fn memory_kb(pid: u32) -> anyhow::Result<(u64, u64)> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_memory(&text).with_context(|| format!("no VmHWM/VmRSS in {path}"))
}

fn parse_memory(status: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        status.lines().find_map(|l| {
            l.strip_prefix(name)?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// User + system CPU seconds used so far by `pid` (`None`: this process).
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    parse_cpu(&std::fs::read_to_string(path).ok()?)
}

fn parse_cpu(stat: &str) -> Option<f64> {
    // The command name (field 2) may hold spaces and parentheses: fields are counted after
    // its closing parenthesis, where field 3 (state) comes first; utime and stime are 14, 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_stat() {
        let status =
            "Name:\tstampede\nVmPeak:\t  999 kB\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(parse_memory(status), Some((20480, 10240)));
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(parse_cpu(stat), Some(3.0));
        assert!(cpu_seconds(None).is_some());
        assert!(memory_kb(std::process::id()).is_ok());
    }
}
