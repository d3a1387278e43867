//! Free loopback ports.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::OnceLock;

use parking_lot::Mutex;

/// Ports this test process already handed out: the OS may offer a released port again, and
/// two peers started from one process (a Redis Cluster's 12 ports, parallel tests) must never
/// get the same one.
fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A currently free TCP port on 127.0.0.1 that this process has not handed out before (the OS
/// picks it; it is released before return, so a peer started right after can bind it).
pub fn free_port() -> std::io::Result<u16> {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if handed_out().lock().insert(port) {
            return Ok(port);
        }
    }
}
