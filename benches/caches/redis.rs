//! The Redis side: `redis-server` from Debian on a free loopback port, without persistence, and
//! a minimal RESP client on one blocking `std` TCP connection.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use colony_runtime::testkit::free_port;

use crate::common::Batch;
use crate::common::process::{Owned, ensure_installed};

/// How long the server may take to answer its first `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `redis-server`; dropping it kills it and removes its directory.
pub struct Redis {
    addr: SocketAddr,
    /// `redis-server --version`, for the report.
    pub version: String,
    _server: Owned,
    _dir: tempfile::TempDir,
}

impl Redis {
    /// Installs Redis if needed and starts a server on 127.0.0.1 with no persistence
    /// (`--save '' --appendonly no`), in a temporary directory. Call from the main thread (see
    /// [`Owned`]).
    ///
    /// # Errors
    /// Redis could not be installed or started, or did not answer in time.
    pub fn start() -> anyhow::Result<Redis> {
        ensure_installed(&["redis-server", "--version"], &["redis-server"])?;
        let version = Command::new("redis-server").arg("--version").output()?;
        let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let log = File::create(dir.path().join("redis.log"))?;
        let server = Owned::spawn(
            Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .arg("--dir")
                .arg(dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log),
        )
        .context("spawn redis-server")?;
        let redis = Redis {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            version,
            _server: server,
            _dir: dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let pong = redis
                .connect()
                .and_then(|mut c| c.call(&[b"PING"]).map(|r| r == Reply::Simple));
            if pong.is_ok_and(|p| p) {
                return Ok(redis);
            }
            if Instant::now() > deadline {
                bail!("redis-server did not answer PING on {}", redis.addr);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A new connection to the server.
    ///
    /// # Errors
    /// The connection failed.
    pub fn connect(&self) -> anyhow::Result<Client> {
        let stream = TcpStream::connect(self.addr)?;
        stream.set_nodelay(true)?;
        Ok(Client {
            writer: stream.try_clone()?,
            reader: BufReader::with_capacity(64 * 1024, stream),
            line: Vec::new(),
        })
    }
}

/// What a reply was, as far as the bench cares.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+...`.
    Simple,
    /// `$n` and its bytes: their count, or `None` for the null bulk string.
    Bulk(Option<usize>),
}

/// One connection, one command at a time or pipelined.
pub struct Client {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    /// The buffer of the reply line being read.
    line: Vec<u8>,
}

/// `args` as one RESP command (an array of bulk strings), appended to `out`.
fn encode(args: &[&[u8]], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

impl Client {
    /// Sends one command and reads its reply.
    ///
    /// # Errors
    /// The connection failed, or Redis answered with an error.
    pub fn call(&mut self, args: &[&[u8]]) -> anyhow::Result<Reply> {
        let mut request = Vec::new();
        encode(args, &mut request);
        self.writer.write_all(&request)?;
        self.reply()
    }

    /// Reads one reply: a simple string or a bulk string (whose bytes are skipped).
    fn reply(&mut self) -> anyhow::Result<Reply> {
        self.line.clear();
        self.reader.read_until(b'\n', &mut self.line)?;
        let text = std::str::from_utf8(&self.line)
            .context("reply line")?
            .trim_end();
        match text.as_bytes().first() {
            Some(b'+') => Ok(Reply::Simple),
            Some(b'$') => {
                let len: i64 = text[1..].parse().context("bulk length")?;
                let Ok(len) = usize::try_from(len) else {
                    return Ok(Reply::Bulk(None));
                };
                let skipped = std::io::copy(
                    &mut (&mut self.reader).take(len as u64 + 2),
                    &mut std::io::sink(),
                )?;
                if skipped != len as u64 + 2 {
                    bail!("the connection closed inside a reply");
                }
                Ok(Reply::Bulk(Some(len)))
            }
            _ => bail!("unexpected reply {text:?}"),
        }
    }

    /// Times `calls` GETs of `key`, one at a time; a GET that does not return `len` bytes
    /// counts as an error.
    ///
    /// # Errors
    /// The connection failed.
    pub fn timed_gets(&mut self, key: &[u8], len: usize, calls: usize) -> anyhow::Result<Batch> {
        let mut request = Vec::new();
        encode(&[b"GET", key], &mut request);
        let mut batch = Batch::default();
        for _ in 0..calls {
            let start = Instant::now();
            self.writer.write_all(&request)?;
            let ok = self.reply()? == Reply::Bulk(Some(len));
            batch.record(start, ok);
        }
        Ok(batch)
    }

    /// Times `count` pipelines of `depth` GETs of `key` each: every sample is one pipeline,
    /// from writing its `depth` commands at once until its last reply is read.
    ///
    /// # Errors
    /// The connection failed.
    pub fn timed_pipelines(
        &mut self,
        key: &[u8],
        len: usize,
        depth: usize,
        count: usize,
    ) -> anyhow::Result<Batch> {
        self.pipelines(&[b"GET", key], &Reply::Bulk(Some(len)), depth, count)
    }

    /// Times `count` pipelines of `depth` SETs of `key` to `value` each, as
    /// [`Self::timed_pipelines`] times GETs.
    ///
    /// # Errors
    /// The connection failed.
    pub fn timed_set_pipelines(
        &mut self,
        key: &[u8],
        value: &[u8],
        depth: usize,
        count: usize,
    ) -> anyhow::Result<Batch> {
        self.pipelines(&[b"SET", key, value], &Reply::Simple, depth, count)
    }

    fn pipelines(
        &mut self,
        command: &[&[u8]],
        expected: &Reply,
        depth: usize,
        count: usize,
    ) -> anyhow::Result<Batch> {
        let mut request = Vec::new();
        for _ in 0..depth {
            encode(command, &mut request);
        }
        let mut batch = Batch::default();
        for _ in 0..count {
            let start = Instant::now();
            self.writer.write_all(&request)?;
            let mut ok = true;
            for _ in 0..depth {
                ok &= self.reply()? == *expected;
            }
            batch.record(start, ok);
        }
        Ok(batch)
    }
}
