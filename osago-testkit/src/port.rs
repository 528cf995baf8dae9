//! Free loopback ports.
//!
//! Ports are picked at random *below* the kernel's ephemeral range
//! (`/proc/sys/net/ipv4/ip_local_port_range`), so an outgoing connection
//! never takes the port of a stopped instance before it restarts, and a port
//! is never handed out twice by one process.

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// The lowest port picked.
const LOWEST: u16 = 15_000;

/// A loopback TCP port nobody listens on now, never returned before by this
/// process.
pub fn free_port() -> u16 {
    static TAKEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let taken = TAKEN.get_or_init(|| Mutex::new(HashSet::new()));
    let mut taken = taken.lock().unwrap_or_else(|e| e.into_inner());
    let highest = ephemeral_start().saturating_sub(1);
    if highest > LOWEST + 1_000 {
        for _ in 0..1_000 {
            let port = LOWEST + (random() % u64::from(highest - LOWEST)) as u16;
            if !taken.contains(&port) && bindable(port) {
                taken.insert(port);
                return port;
            }
        }
    }
    // Fallback: let the kernel choose.
    for _ in 0..1_000 {
        let port = TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("cannot bind a loopback port");
        if taken.insert(port) {
            return port;
        }
    }
    panic!("no free loopback port found");
}

fn bindable(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// The first port of the kernel's ephemeral range (32768 when unknown).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

fn random() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_bindable() {
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let unique: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(unique.len(), ports.len());
        for port in ports {
            assert!(bindable(port), "port {port} is taken");
        }
    }
}
