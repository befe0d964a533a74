//! What the machine charges for a wake-up on another CPU: the same 64-byte loopback round trip
//! between two threads of this process, once with both pinned to one CPU and once with each on
//! its own. Context for the write figures, not a target: a synchronous write to two peers wakes
//! two processes at once, and they cannot both run where the writer runs.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::common::median;
use crate::loopback::MESSAGE;

/// p50 of `calls` round trips with both threads on CPU 0, and with the server on CPU 1; `None`
/// when this process may not use two CPUs (pinned by `taskset`, or a one-CPU machine).
pub fn same_and_other_cpu(calls: usize) -> anyhow::Result<Option<(Duration, Duration)>> {
    if !allowed(0) || !allowed(1) {
        return Ok(None);
    }
    Ok(Some((round_trips(0, calls)?, round_trips(1, calls)?)))
}

/// The p50 round trip from a client thread on CPU 0 to a server thread on `server_cpu`.
fn round_trips(server_cpu: usize, calls: usize) -> anyhow::Result<Duration> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        pin(server_cpu)?;
        let (mut stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        let mut buf = [0u8; MESSAGE];
        while stream.read_exact(&mut buf).is_ok() {
            stream.write_all(&buf)?;
        }
        Ok(())
    });
    let client = std::thread::spawn(move || -> std::io::Result<Vec<Duration>> {
        pin(0)?;
        let mut stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        let mut buf = [0x5Au8; MESSAGE];
        let mut samples = Vec::with_capacity(calls);
        for i in 0..calls * 2 {
            let start = Instant::now();
            stream.write_all(&buf)?;
            stream.read_exact(&mut buf)?;
            // The first half warms up.
            if i >= calls {
                samples.push(start.elapsed());
            }
        }
        Ok(samples)
    });
    let samples = client.join().expect("client thread")?;
    server.join().expect("server thread")?;
    Ok(median(&samples))
}

fn allowed(cpu: usize) -> bool {
    // SAFETY: `set` is a plain bit set that sched_getaffinity fills for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) == 0
            && libc::CPU_ISSET(cpu, &set)
    }
}

fn pin(cpu: usize) -> std::io::Result<()> {
    // SAFETY: as above; sched_setaffinity reads the set for the calling thread only.
    let done = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set)
    };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
