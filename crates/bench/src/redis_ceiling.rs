//! `redis-ceiling`: what Redis itself does with a claim-like script on this machine, measured
//! by `redis-benchmark` (the Debian `redis-tools` package).
//!
//! The Lua is an approximation of the claim script's cost, not the script itself: two
//! `HINCRBY`s on a hash (stock and a per-user counter) and one `XADD` to a capped stream (the
//! claim log), with one key, no pipelining. The real script also reads the template's window
//! and checks limits, so expect it to be somewhat slower than this ceiling.

use anyhow::{Context, bail};
use serde::Serialize;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Claim-like work: stock and per-user counters plus a capped stream entry.
pub const LUA: &str = "local s = redis.call('HINCRBY', KEYS[1], 'stock', -1) \
local u = redis.call('HINCRBY', KEYS[1], 'u:' .. (s % 1000), 1) \
redis.call('XADD', KEYS[1] .. ':log', 'MAXLEN', '~', '10000', '*', 'u', u, 's', s) \
return s";

/// The key the script touches (and `KEY:log`); deleted afterwards when `redis-cli` exists.
pub const KEY: &str = "stampede-bench:ceiling";

/// The `redis-ceiling` flags (their docs are the `--help` text).
#[derive(Debug, Clone, clap::Args)]
pub struct RedisOptions {
    #[arg(
        long = "redis-host",
        value_name = "REDIS_HOST",
        default_value = "127.0.0.1"
    )]
    pub host: String,
    #[arg(long = "redis-port", value_name = "REDIS_PORT", default_value_t = 6379)]
    pub port: u16,
    /// redis-benchmark -n
    #[arg(long, short = 'n', default_value_t = 200_000)]
    pub requests: u64,
    /// redis-benchmark -c
    #[arg(long, default_value_t = 50)]
    pub clients: u64,
    // Give up on redis-benchmark after this long (not a flag).
    #[arg(skip = Duration::from_secs(600))]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct RedisReport {
    pub scenario: &'static str,
    /// `None` when skipped.
    pub ops_per_s: Option<f64>,
    pub p50_ms: Option<f64>,
    pub requests: u64,
    pub clients: u64,
    pub command: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

pub fn run(opts: &RedisOptions) -> anyhow::Result<RedisReport> {
    let args: Vec<String> = vec![
        "-h".into(),
        opts.host.clone(),
        "-p".into(),
        opts.port.to_string(),
        "-q".into(),
        "-n".into(),
        opts.requests.to_string(),
        "-c".into(),
        opts.clients.to_string(),
        "-P".into(),
        "1".into(),
        "eval".into(),
        LUA.into(),
        "1".into(),
        KEY.into(),
    ];
    let command = format!(
        "redis-benchmark {} \"{LUA}\" 1 {KEY}",
        args[..args.len() - 3].join(" ")
    );
    let mut report = RedisReport {
        scenario: "redis-ceiling",
        ops_per_s: None,
        p50_ms: None,
        requests: opts.requests,
        clients: opts.clients,
        command,
        skipped: None,
    };
    // redis-benchmark waits forever when it cannot connect: check first.
    let addr = format!("{}:{}", opts.host, opts.port);
    if let Err(e) = reachable(&addr) {
        report.skipped = Some(format!("Redis at {addr} is not reachable: {e:#}"));
        return Ok(report);
    }
    let child = Command::new("redis-benchmark")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            report.skipped =
                Some("redis-benchmark is not installed (Debian package redis-tools)".into());
            return Ok(report);
        }
        Err(e) => return Err(e).context("starting redis-benchmark"),
    };
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().context("waiting for redis-benchmark")? {
            break s;
        }
        if started.elapsed() > opts.timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!("redis-benchmark did not finish within {:?}", opts.timeout);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        s.read_to_string(&mut out)
            .context("reading redis-benchmark's output")?;
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    cleanup(&opts.host, opts.port);
    let Some((ops, p50)) = parse_output(&out) else {
        bail!(
            "redis-benchmark ({status}) printed no rate: {} {}",
            out.trim(),
            err.trim()
        );
    };
    report.ops_per_s = Some(ops);
    report.p50_ms = p50;
    Ok(report)
}

fn reachable(addr: &str) -> anyhow::Result<()> {
    use std::net::ToSocketAddrs;
    let sock = addr
        .to_socket_addrs()
        .context("resolving")?
        .next()
        .context("no address")?;
    std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(2)).context("connecting")?;
    Ok(())
}

fn cleanup(host: &str, port: u16) {
    let _ = Command::new("redis-cli")
        .args(["-h", host, "-p", &port.to_string(), "DEL", KEY])
        .arg(format!("{KEY}:log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// `(requests per second, p50 ms)` from `-q` output (progress lines end in `\r`).
fn parse_output(out: &str) -> Option<(f64, Option<f64>)> {
    let line = out
        .split(['\r', '\n'])
        .rfind(|l| l.contains("requests per second"))?;
    let before = line.split(" requests per second").next()?;
    let ops = before.rsplit([' ', ':']).next()?.trim().parse().ok()?;
    let p50 = line
        .split("p50=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok());
    Some((ops, p50))
}

impl RedisReport {
    pub fn to_text(&self) -> String {
        match (&self.skipped, self.ops_per_s) {
            (Some(why), _) => format!("redis-ceiling skipped: {why}\n"),
            (None, Some(ops)) => format!(
                "redis-ceiling (claim-like Lua: 2x HINCRBY + XADD, an approximation of the claim \
                 script)\nops/s        {ops:.1}\np50          {}\nclients      {}\nrequests     {}\n\
                 command      {}\n",
                self.p50_ms
                    .map_or_else(|| "-".into(), |p| format!("{p:.3} ms")),
                self.clients,
                self.requests,
                self.command
            ),
            (None, None) => "redis-ceiling: no result\n".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quiet_output() {
        let out = "eval ...: rps=0.0 (overall: -nan) avg_msec=-nan (overall: -nan)\r   \r\
                   eval local s = ... 1 stampede-bench:ceiling: 87336.24 requests per second, p50=0.471 msec\n\n";
        assert_eq!(parse_output(out), Some((87336.24, Some(0.471))));
        let old = "EVAL: 51234.00 requests per second\n";
        assert_eq!(parse_output(old), Some((51234.0, None)));
        assert_eq!(parse_output("garbage"), None);
    }
}
