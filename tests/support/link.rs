//! A TCP proxy in front of a backend that shapes the link: a rate limit and a one-way delay,
//! changeable while it runs. Loopback backends behind it look like backends over a slow or far
//! link (this kernel has no `netem` qdisc for the delay).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How a [`Link`] forwards bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Shape {
    /// Bytes per second in each direction, over all connections; `None`: unlimited.
    pub rate: Option<u64>,
    /// Added to every byte's trip, in each direction.
    pub delay: Duration,
}

/// Each direction's pacing: when the link is free again.
#[derive(Default)]
struct Pacing {
    shape: Shape,
    up_free: Option<Instant>,
    down_free: Option<Instant>,
}

/// A shaping proxy listening on the loopback; its threads end with its connections.
pub struct Link {
    /// Where zstor connects instead of the backend.
    pub address: SocketAddr,
    pacing: Arc<Mutex<Pacing>>,
}

impl Link {
    /// Forwards every connection to `backend`, unshaped until [`Link::shape`].
    pub fn start(backend: SocketAddr) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let pacing = Arc::new(Mutex::new(Pacing::default()));
        let shared = pacing.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(backend) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                for (from, to, up) in [
                    (
                        client.try_clone().unwrap(),
                        server.try_clone().unwrap(),
                        true,
                    ),
                    (server, client, false),
                ] {
                    forward(from, to, up, shared.clone());
                }
            }
        });
        Link { address, pacing }
    }

    /// Changes the shape (for bytes read from now on).
    pub fn shape(&self, shape: Shape) {
        let mut pacing = self.pacing.lock().unwrap();
        pacing.shape = shape;
        pacing.up_free = None;
        pacing.down_free = None;
    }
}

/// Copies `from` to `to`: a reader thread stamps each chunk, a writer thread sends it once the
/// delay has passed and the direction's rate allows.
fn forward(mut from: TcpStream, mut to: TcpStream, up: bool, pacing: Arc<Mutex<Pacing>>) {
    let (chunks, arrived) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = chunks.send((Instant::now(), Vec::new()));
                    return;
                }
                Ok(n) => {
                    if chunks.send((Instant::now(), buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    });
    std::thread::spawn(move || {
        for (at, bytes) in arrived {
            if bytes.is_empty() {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            let send_at = {
                let mut pacing = pacing.lock().unwrap();
                let shape = pacing.shape;
                let free = if up {
                    &mut pacing.up_free
                } else {
                    &mut pacing.down_free
                };
                let start = (at + shape.delay).max(free.unwrap_or(at));
                if let Some(rate) = shape.rate {
                    let busy = Duration::from_secs_f64(bytes.len() as f64 / rate as f64);
                    *free = Some(start.max(Instant::now()) + busy);
                }
                start
            };
            if let Some(wait) = send_at.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if to.write_all(&bytes).is_err() {
                return;
            }
        }
    });
}
