//! Private Redis and MariaDB instances for tests that stop, kill or cut a dependency: each on
//! a spare loopback port with its data in a directory the caller owns, stopped by PID
//! (SIGKILL) when dropped, so the shared services are never touched.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A loopback port free a moment ago (bound, read, released).
pub fn spare_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn timed_out(what: &str, log: &Path) -> io::Error {
    let tail = std::fs::read_to_string(log).unwrap_or_default();
    let tail: String = tail.lines().rev().take(8).collect::<Vec<_>>().join(" | ");
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("{what} not ready; log (last lines, newest first): {tail}"),
    )
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill(); // SIGKILL by PID
        let _ = c.wait();
    }
}

/// A private `redis-server` with an append-only file (`appendfsync always`) in `dir`;
/// [`PrivateRedis::restart`] brings it back on the same port and the same data.
pub struct PrivateRedis {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts one with its data in `dir` and waits until it answers `PING`.
    pub fn start(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut r = Self {
            port: spare_port()?,
            dir: dir.to_owned(),
            child: None,
        };
        r.spawn()?;
        Ok(r)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        loopback(self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: no shutdown save; what survives is what the append-only file has.
    pub fn kill(&mut self) {
        kill(&mut self.child);
    }

    /// Starts it again on the same port and directory (after [`PrivateRedis::kill`]).
    pub fn restart(&mut self) -> io::Result<()> {
        kill(&mut self.child);
        self.spawn()
    }

    fn spawn(&mut self) -> io::Result<()> {
        let log = self.dir.join("redis.log");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--save", "", "--daemonize", "no", "--protected-mode", "no"])
            .args(["--maxmemory-policy", "noeviction"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if redis_pong(self.addr()) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(timed_out("redis-server", &log))
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// `PING` answered `+PONG` (not `-LOADING` while the append-only file is replayed).
fn redis_pong(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

/// A private `mariadbd` (grant tables skipped: any user, no password) with its data directory
/// made by `mariadb-install-db` under `dir`.
pub struct PrivateMariadb {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateMariadb {
    /// Initialises `dir/data` and starts the server; waits until it accepts a MySQL handshake.
    pub fn start(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let datadir = dir.join("data");
        let log = dir.join("install.log");
        let status = Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", datadir.display()))
            .args([
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--user=root",
            ])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log)?)
            .stderr(Stdio::null())
            .status()?;
        if !status.success() {
            return Err(timed_out("mariadb-install-db failed;", &log));
        }
        let mut m = Self {
            port: spare_port()?,
            dir: dir.to_owned(),
            child: None,
        };
        m.spawn()?;
        Ok(m)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        loopback(self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        kill(&mut self.child);
    }

    /// Starts it again on the same port and data (InnoDB recovers what was committed).
    pub fn restart(&mut self) -> io::Result<()> {
        kill(&mut self.child);
        self.spawn()
    }

    fn spawn(&mut self) -> io::Result<()> {
        let log = self.dir.join("mariadbd.log");
        let child = Command::new("mariadbd")
            .arg("--no-defaults")
            .args(["--user=root", "--skip-grant-tables", "--skip-networking=0"])
            .args(["--bind-address=127.0.0.1", "--innodb-log-file-size=16M"])
            .arg(format!("--datadir={}", self.dir.join("data").display()))
            .arg(format!("--port={}", self.port))
            .arg(format!(
                "--socket={}",
                self.dir.join("mysqld.sock").display()
            ))
            .arg(format!(
                "--pid-file={}",
                self.dir.join("mysqld.pid").display()
            ))
            .arg(format!("--log-error={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if mysql_greets(self.addr()) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(timed_out("mariadbd", &log))
    }
}

impl Drop for PrivateMariadb {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// The server sent its handshake packet (protocol version 10) rather than an error.
fn mysql_greets(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 5];
    // 3 bytes length, 1 byte sequence, then the protocol version.
    matches!(s.read_exact(&mut buf), Ok(()) if buf[4] == 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(addr: SocketAddr, cmd: &[u8]) -> Vec<u8> {
        let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{e}"));
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        s.write_all(cmd).unwrap_or_else(|e| panic!("{e}"));
        let mut buf = vec![0u8; 64];
        let n = s.read(&mut buf).unwrap_or_else(|e| panic!("{e}"));
        buf.truncate(n);
        buf
    }

    #[test]
    fn private_redis_keeps_its_data_across_a_kill_and_restart() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut r = PrivateRedis::start(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(r.port(), 6379);
        assert_eq!(roundtrip(r.addr(), b"SET k v\r\n"), b"+OK\r\n");
        let port = r.port();
        r.kill();
        assert!(!redis_pong(r.addr()));
        r.restart().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.port(), port);
        assert_eq!(roundtrip(r.addr(), b"GET k\r\n"), b"$1\r\nv\r\n");
    }

    #[test]
    fn private_mariadb_starts_answers_and_stops() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut m = PrivateMariadb::start(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(m.port(), 3306);
        assert!(mysql_greets(m.addr()));
        m.kill();
        assert!(!mysql_greets(m.addr()));
        m.restart().unwrap_or_else(|e| panic!("{e}"));
        assert!(mysql_greets(m.addr()));
    }
}
