//! [`FaultProxy`]: forwards one local port to an upstream address and misbehaves on demand.
//!
//! The mode lives in a `watch` channel: the accept loop and every connection's two pumps
//! read it before each step and wake when it changes, so a switch applies to live
//! connections at once. Modes that close the port drop the listener (connecting gets
//! "connection refused", as a stopped service); leaving them binds the same port again.

use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward both ways.
    Pass,
    /// The port is closed: new connections are refused; live ones carry on.
    Refuse,
    /// Accept, never forward: live connections stop moving (bytes wait in the kernel), new
    /// ones are accepted and held. Leaving the mode forwards what waited.
    Blackhole,
    /// Forward, each chunk held this long first, each way.
    Delay(Duration),
    /// Reset every live connection (RST, via `SO_LINGER` 0) and every new one on accept.
    Reset,
    /// Close every live connection and refuse new ones (a dependency gone from the network).
    Cut,
}

impl Mode {
    fn listens(self) -> bool {
        !matches!(self, Mode::Refuse | Mode::Cut)
    }
}

/// A running proxy; stops (port closed, connections dropped) when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    mode: watch::Sender<Mode>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream` (mode [`Mode::Pass`]).
    pub async fn start(upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (mode, _) = watch::channel(Mode::Pass);
        let task = tokio::spawn(accept_loop(listener, upstream, mode.subscribe()));
        Ok(Self {
            addr,
            upstream,
            mode,
            accept: Mutex::new(Some(task)),
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }

    /// Switches the mode; when this returns the port is open or closed as the mode says and
    /// live connections have been told.
    pub async fn set_mode(&self, mode: Mode) -> io::Result<()> {
        self.mode.send_replace(mode);
        let running = self.take_accept_if(!mode.listens());
        if let Some(task) = running {
            task.abort();
            let _ = task.await; // the listener is dropped with the task: the port is closed
        }
        if mode.listens() {
            let mut slot = self.accept.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                // The same port again: SO_REUSEADDR (set by tokio on Unix) lets it rebind
                // while old connections linger in TIME_WAIT.
                let listener = bind_again(self.addr)?;
                *slot = Some(tokio::spawn(accept_loop(
                    listener,
                    self.upstream,
                    self.mode.subscribe(),
                )));
            }
        }
        Ok(())
    }

    fn take_accept_if(&self, close: bool) -> Option<JoinHandle<()>> {
        if !close {
            return None;
        }
        self.accept.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // Live connections close when their pumps see the mode; the listener goes with its task.
        self.mode.send_replace(Mode::Cut);
        if let Some(task) = self.accept.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }
}

fn bind_again(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, mode: watch::Receiver<Mode>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of file descriptors and the like: back off rather than spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = client.set_nodelay(true);
        tokio::spawn(connection(client, upstream, mode.clone()));
    }
}

/// One accepted connection: waits out a blackhole, then resets, closes or forwards it.
async fn connection(client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    loop {
        let now = *mode.borrow_and_update();
        match now {
            Mode::Blackhole => {
                if mode.changed().await.is_err() {
                    return;
                }
            }
            Mode::Reset => {
                let _ = client.set_zero_linger();
                return;
            }
            Mode::Cut => return,
            Mode::Pass | Mode::Refuse | Mode::Delay(_) => break,
        }
    }
    let Ok(Ok(server)) =
        tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(upstream)).await
    else {
        return; // upstream down: the client sees its connection closed
    };
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    tokio::spawn(pump(cr, sw, mode.clone()));
    tokio::spawn(pump(sr, cw, mode));
}

/// Copies one direction until EOF, an error, or a mode that ends the connection.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut mode: watch::Receiver<Mode>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let now = *mode.borrow_and_update();
        match now {
            Mode::Reset => return reset(from, to),
            Mode::Cut => return,
            Mode::Blackhole => {
                if mode.changed().await.is_err() {
                    return;
                }
                continue;
            }
            Mode::Pass | Mode::Refuse | Mode::Delay(_) => {}
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return;
                }
                Ok(n) => n,
            },
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        let now = *mode.borrow();
        if let Mode::Delay(d) = now {
            tokio::time::sleep(d).await;
        }
        // A switch while the chunk waited still applies to it.
        let now = *mode.borrow();
        match now {
            Mode::Reset => return reset(from, to),
            Mode::Cut => return,
            _ => {}
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Both sockets close with RST once both halves of each are gone. The write half is
/// forgotten, not dropped: dropping it would send a FIN first.
fn reset(from: OwnedReadHalf, to: OwnedWriteHalf) {
    let _ = from.as_ref().set_zero_linger();
    let _ = to.as_ref().set_zero_linger();
    to.forget();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::time::{Instant, timeout};

    /// An echo server; its address.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> io::Result<Vec<u8>> {
        s.write_all(msg).await?;
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).await?;
        Ok(got)
    }

    async fn proxy() -> FaultProxy {
        FaultProxy::start(echo().await)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn connect(p: &FaultProxy) -> TcpStream {
        TcpStream::connect(p.addr())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn set(p: &FaultProxy, m: Mode) {
        p.set_mode(m).await.unwrap_or_else(|e| panic!("{e}"));
    }

    #[tokio::test]
    async fn pass_forwards_both_ways() {
        let p = proxy().await;
        let mut s = connect(&p).await;
        assert_eq!(
            roundtrip(&mut s, b"hello").await.ok(),
            Some(b"hello".to_vec())
        );
    }

    #[tokio::test]
    async fn refuse_closes_the_port_and_keeps_live_connections() {
        let p = proxy().await;
        let mut live = connect(&p).await;
        assert!(roundtrip(&mut live, b"x").await.is_ok()); // accepted, not just queued
        set(&p, Mode::Refuse).await;
        let e = TcpStream::connect(p.addr()).await.err().map(|e| e.kind());
        assert_eq!(e, Some(io::ErrorKind::ConnectionRefused));
        assert_eq!(
            roundtrip(&mut live, b"still").await.ok(),
            Some(b"still".to_vec())
        );
        set(&p, Mode::Pass).await;
        let mut again = connect(&p).await;
        assert_eq!(
            roundtrip(&mut again, b"back").await.ok(),
            Some(b"back".to_vec())
        );
    }

    #[tokio::test]
    async fn blackhole_accepts_and_holds_then_delivers_when_lifted() {
        let p = proxy().await;
        let mut live = connect(&p).await;
        set(&p, Mode::Blackhole).await;
        let mut fresh = connect(&p).await; // accepted, not refused
        live.write_all(b"held")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut buf = [0u8; 4];
        let waited = timeout(Duration::from_millis(300), live.read_exact(&mut buf)).await;
        assert!(waited.is_err(), "a blackhole forwarded data");
        set(&p, Mode::Pass).await;
        timeout(Duration::from_secs(2), live.read_exact(&mut buf))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&buf, b"held");
        assert_eq!(
            roundtrip(&mut fresh, b"new").await.ok(),
            Some(b"new".to_vec())
        );
    }

    #[tokio::test]
    async fn delay_holds_each_chunk_each_way() {
        let p = proxy().await;
        let mut s = connect(&p).await;
        set(&p, Mode::Delay(Duration::from_millis(150))).await;
        let started = Instant::now();
        assert_eq!(
            roundtrip(&mut s, b"slow").await.ok(),
            Some(b"slow".to_vec())
        );
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(300),
            "one round trip took {took:?}"
        );
        set(&p, Mode::Pass).await;
        let started = Instant::now();
        assert_eq!(
            roundtrip(&mut s, b"fast").await.ok(),
            Some(b"fast".to_vec())
        );
        assert!(started.elapsed() < Duration::from_millis(150));
    }

    #[tokio::test]
    async fn reset_sends_rst_to_live_and_new_connections() {
        let p = proxy().await;
        let mut live = connect(&p).await;
        assert!(roundtrip(&mut live, b"x").await.is_ok());
        set(&p, Mode::Reset).await;
        let mut buf = [0u8; 1];
        let r = timeout(Duration::from_secs(2), live.read(&mut buf))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            r.err().map(|e| e.kind()),
            Some(io::ErrorKind::ConnectionReset)
        );
        let mut fresh = connect(&p).await;
        let r = timeout(Duration::from_secs(2), fresh.read(&mut buf))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            r.err().map(|e| e.kind()),
            Some(io::ErrorKind::ConnectionReset)
        );
    }

    #[tokio::test]
    async fn cut_closes_live_connections_and_refuses_new_ones_until_lifted() {
        let p = proxy().await;
        let mut live = connect(&p).await;
        assert!(roundtrip(&mut live, b"x").await.is_ok());
        set(&p, Mode::Cut).await;
        let mut buf = [0u8; 1];
        let r = timeout(Duration::from_secs(2), live.read(&mut buf))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.ok(), Some(0), "a cut connection reads EOF");
        let e = TcpStream::connect(p.addr()).await.err().map(|e| e.kind());
        assert_eq!(e, Some(io::ErrorKind::ConnectionRefused));
        set(&p, Mode::Pass).await;
        let mut again = connect(&p).await;
        assert_eq!(
            roundtrip(&mut again, b"ok").await.ok(),
            Some(b"ok".to_vec())
        );
    }
}
