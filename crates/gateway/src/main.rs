//! The `vmcp-gateway` binary.

fn main() {
    println!("vmcp-gateway {}", env!("CARGO_PKG_VERSION"));
}
