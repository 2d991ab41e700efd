//! The peer every RDMA figure is compared with: a plain TCP socket pair on the same loopback,
//! in the same process, streaming the same sizes.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use netdirect_types::Status;

use crate::error::{Error, Result};

/// Which CPU each side of a measurement runs on (`nd bench` pins as `taskset` would pin two
/// processes); `None`: wherever the scheduler puts it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pinning {
    /// The sending (client) side.
    pub client: Option<usize>,
    /// The receiving (server) side.
    pub server: Option<usize>,
}

impl Pinning {
    /// The client on the first CPU of this process's mask, the server on the second; not
    /// pinned with fewer CPUs, or with `no_pin`.
    pub fn first_two(no_pin: bool) -> Pinning {
        let cpus = if no_pin {
            Vec::new()
        } else {
            core_affinity::get_core_ids().unwrap_or_default()
        };
        match cpus.as_slice() {
            [c, s, ..] => Pinning {
                client: Some(c.id),
                server: Some(s.id),
            },
            _ => Pinning::default(),
        }
    }

    /// Pins the calling thread to the client's CPU (threads it spawns inherit it).
    pub fn enter_client(self) {
        pin_current(self.client);
    }

    /// Pins the calling thread to the server's CPU (threads it spawns inherit it).
    pub fn enter_server(self) {
        pin_current(self.server);
    }

    /// Runs `f` on a thread of its own pinned to the client's CPU, so the caller keeps its mask.
    pub fn on_client<T: Send>(self, f: impl FnOnce() -> T + Send) -> T {
        thread::scope(|s| {
            s.spawn(|| {
                self.enter_client();
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }
}

fn pin_current(cpu: Option<usize>) {
    if let Some(id) = cpu {
        // Best effort: a mask the cgroup forbids leaves the thread where it was.
        let _ = core_affinity::set_for_current(core_affinity::CoreId { id });
    }
}

fn io_err(what: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::status(format!("TCP peer: {what}: {e}"), Status::UNSUCCESSFUL)
}

fn pair(ip: IpAddr, timeout: Duration) -> Result<(TcpStream, TcpStream)> {
    let l = TcpListener::bind(SocketAddr::new(ip, 0)).map_err(io_err("bind"))?;
    let addr = l.local_addr().map_err(io_err("local address"))?;
    let c = TcpStream::connect_timeout(&addr, timeout).map_err(io_err("connect"))?;
    let (s, _) = l.accept().map_err(io_err("accept"))?;
    // The congestion control of netdirect's own loopback connections (cubic unless
    // NETDIRECT_LOOPBACK_CC says otherwise), so that "vs TCP" compares like with like.
    let config = netdirect_soft::transport::EngineConfig::default();
    for x in [&c, &s] {
        netdirect_soft::transport::choose_congestion_control(
            socket2::SockRef::from(x),
            ip,
            &config,
        );
        x.set_nodelay(true).map_err(io_err("nodelay"))?;
        x.set_read_timeout(Some(timeout))
            .map_err(io_err("timeout"))?;
        x.set_write_timeout(Some(timeout))
            .map_err(io_err("timeout"))?;
    }
    Ok((c, s))
}

/// A stream result: bytes per second and messages per second.
#[derive(Debug, Clone, Copy)]
pub struct TcpBw {
    /// Bytes per second.
    pub bw: f64,
    /// Messages (writes of `size`) per second.
    pub msg_rate: f64,
}

/// Streams `size`-octet writes for `time` (at least `min_msgs`); the receiver reads them all
/// and acknowledges the total; the time runs until the acknowledgement.
pub fn bandwidth(
    ip: IpAddr,
    size: usize,
    time: Duration,
    min_msgs: u64,
    pin: Pinning,
) -> Result<TcpBw> {
    pin.on_client(|| {
        let timeout = Duration::from_secs(30);
        let (mut c, mut s) = pair(ip, timeout)?;
        let reader = thread::spawn(move || -> std::io::Result<u64> {
            pin.enter_server();
            let mut buf = vec![0u8; (1 << 20).max(size)];
            let mut total = 0u64;
            loop {
                let n = s.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            s.write_all(&total.to_le_bytes())?;
            Ok(total)
        });
        let msg = vec![0x5Au8; size];
        let start = Instant::now();
        let mut sent = 0u64;
        while sent < min_msgs || start.elapsed() < time {
            c.write_all(&msg).map_err(io_err("write"))?;
            sent += 1;
        }
        c.shutdown(std::net::Shutdown::Write)
            .map_err(io_err("shutdown"))?;
        let mut ack = [0u8; 8];
        c.read_exact(&mut ack).map_err(io_err("acknowledgement"))?;
        let secs = start.elapsed().as_secs_f64().max(1e-9);
        let total = u64::from_le_bytes(ack);
        let _ = reader.join();
        if total != sent * size as u64 {
            return Err(Error::status(
                format!("TCP peer: {total} octets arrived of {}", sent * size as u64),
                Status::DATA_ERROR,
            ));
        }
        Ok(TcpBw {
            bw: total as f64 / secs,
            msg_rate: sent as f64 / secs,
        })
    })
}

/// `iters` ping-pongs of `size` octets (after `warmup`); one-way latency = half the round trip,
/// in nanoseconds.
pub fn latency(
    ip: IpAddr,
    size: usize,
    iters: u64,
    warmup: u64,
    pin: Pinning,
) -> Result<Histogram<u64>> {
    pin.on_client(|| {
        let timeout = Duration::from_secs(30);
        let (mut c, mut s) = pair(ip, timeout)?;
        let total = iters + warmup;
        let echo = thread::spawn(move || -> std::io::Result<()> {
            pin.enter_server();
            let mut b = vec![0u8; size];
            for _ in 0..total {
                s.read_exact(&mut b)?;
                s.write_all(&b)?;
            }
            Ok(())
        });
        let mut hist = crate::perf::new_hist()?;
        let mut b = vec![7u8; size];
        for i in 0..total {
            let t0 = Instant::now();
            c.write_all(&b).map_err(io_err("write"))?;
            c.read_exact(&mut b).map_err(io_err("read"))?;
            if i >= warmup {
                let _ = hist.record((t0.elapsed().as_nanos() as u64 / 2).max(1));
            }
        }
        let _ = echo.join();
        Ok(hist)
    })
}
