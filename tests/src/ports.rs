//! Free loopback ports.

use std::net::TcpListener;

/// A currently free TCP port on 127.0.0.1 (the OS picks it; it is released before return, so a
/// peer started right after can bind it).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
