//! A TCP relay on loopback that can silently stop relaying ("blackhole"): what a NAT or load
//! balancer does to an idle flow it forgets. Used to cut one gateway's connections to Redis
//! without closing them, so nothing tells the client its connection is dead.

// Test harness: a failed setup step panics with its reason, which is the test's failure report.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running relay to `127.0.0.1:<upstream>`; stopped on drop.
#[derive(Debug)]
pub struct TcpProxy {
    /// The port clients connect to.
    pub port: u16,
    /// Bumped by [`Self::blackhole`] and [`Self::restore`]: relays of an older epoch go silent
    /// (they keep their sockets open and move no byte); new connections wait while the
    /// relay is blackholed.
    epoch: Arc<AtomicU64>,
    state: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Starts relaying to `upstream`.
    pub async fn start(upstream: u16) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let epoch = Arc::new(AtomicU64::new(0));
        let (state, open) = watch::channel(true);
        let e = epoch.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (e, mut open) = (e.clone(), open.clone());
                tokio::spawn(async move {
                    // While blackholed, a new connection is accepted and then left hanging.
                    while !*open.borrow() {
                        if open.changed().await.is_err() {
                            return;
                        }
                    }
                    let mine = e.load(Ordering::SeqCst);
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    relay(client, server, e, mine).await;
                });
            }
        });
        TcpProxy { port, epoch, state, task }
    }

    /// Stops moving bytes on every connection (sockets stay open) and holds new ones.
    pub fn blackhole(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let _ = self.state.send(false);
    }

    /// Relays new connections again; the blackholed ones stay silent until their peers give up.
    pub fn restore(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let _ = self.state.send(true);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies both ways while the epoch is still `mine`; afterwards holds the sockets silently.
async fn relay(client: TcpStream, server: TcpStream, epoch: Arc<AtomicU64>, mine: u64) {
    let (cr, mut cw) = client.into_split();
    let (sr, mut sw) = server.into_split();
    let live = || epoch.load(Ordering::SeqCst) == mine;
    let mut a = [0u8; 16 * 1024];
    let mut b = [0u8; 16 * 1024];
    loop {
        tokio::select! {
            r = cr.readable() => {
                if r.is_err() { break }
                match cr.try_read(&mut a) {
                    Ok(0) => break,
                    Ok(n) if live() => { if sw.write_all(&a[..n]).await.is_err() { break } }
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => break,
                }
            }
            r = sr.readable() => {
                if r.is_err() { break }
                match sr.try_read(&mut b) {
                    Ok(0) => break,
                    Ok(n) if live() => { if cw.write_all(&b[..n]).await.is_err() { break } }
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => break,
                }
            }
        }
    }
}
