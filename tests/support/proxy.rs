//! A TCP proxy the test controls, in front of an insurer or the broker: it
//! adds a delay to everything the far side sends back, resets every new
//! connection, or severs them all for a while.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The proxy; stops when dropped.
#[derive(Debug)]
pub struct Proxy {
    port: u16,
    delay_ms: Arc<AtomicU64>,
    reset: Arc<AtomicBool>,
    pipes: Arc<std::sync::Mutex<tokio::task::JoinSet<()>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// A proxy on a free loopback port forwarding to `upstream` (a loopback port).
    pub async fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let reset = Arc::new(AtomicBool::new(false));
        let (d, r) = (delay_ms.clone(), reset.clone());
        let pipes: Arc<std::sync::Mutex<tokio::task::JoinSet<()>>> = Arc::default();
        let p = pipes.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if r.load(Ordering::Relaxed) {
                    // Close with RST: the client sees "connection reset".
                    let _ = client.set_zero_linger();
                    drop(client);
                    continue;
                }
                let mut pipes = p.lock().unwrap();
                while pipes.try_join_next().is_some() {}
                pipes.spawn(pipe(client, upstream, d.clone()));
            }
        });
        Proxy {
            port,
            delay_ms,
            reset,
            pipes,
            task,
        }
    }

    /// The port to call instead of the insurer's.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Delays every chunk the insurer sends back by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// Resets every new connection (`true`) or forwards again (`false`).
    pub fn set_reset(&self, reset: bool) {
        self.reset.store(reset, Ordering::Relaxed);
    }

    /// Cuts every open connection and refuses new ones for `outage`, then
    /// forwards again: the far side is unreachable meanwhile.
    pub async fn sever(&self, outage: Duration) {
        self.set_reset(true);
        self.pipes.lock().unwrap().abort_all();
        tokio::time::sleep(outage).await;
        self.set_reset(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(client: TcpStream, upstream: u16, delay_ms: Arc<AtomicU64>) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = async {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        let _ = server_write.shutdown().await;
    };
    let down = async {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let n = match server_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let delay = delay_ms.load(Ordering::Relaxed);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            if client_write.write_all(&buffer[..n]).await.is_err() {
                break;
            }
        }
        let _ = client_write.shutdown().await;
    };
    tokio::join!(up, down);
}
