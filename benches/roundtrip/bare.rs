//! The baseline: the loopback floor, a plain tokio TCP echo with no Colony code on the path.
//!
//! The server answers each length-prefixed frame with the same bytes; the client writes one
//! frame and reads the answer on one connection with `TCP_NODELAY`. Each side writes a frame
//! with one call and reads through a buffer, as a link does: the least any request over TCP
//! costs here. (Until Colony carried requests on its own links, this baseline was a
//! ractor_cluster remote call; see `docs/benchmarks.md`, section 2.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

use super::{CALL_TIMEOUT, CONNECT_TIMEOUT, Options, serve_batches};

/// The `bare-server` role: echoes frames on the target port until stdin closes. Prints `ready`
/// once it listens.
pub async fn serve(options: &Options) -> anyhow::Result<()> {
    let listener = TcpListener::bind(options.target()?)
        .await
        .context("bind the echo server")?;
    let accepting = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(echo(stream));
        }
    });
    println!("ready");
    tokio::io::stdin().read_to_end(&mut Vec::new()).await?;
    accepting.abort();
    Ok(())
}

/// Sends every frame straight back until the client hangs up.
async fn echo(stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut stream = BufReader::new(stream);
    let mut frame = Vec::new();
    loop {
        read_frame(&mut stream, &mut frame).await?;
        stream.get_mut().write_all(&frame).await?;
    }
}

/// Reads one frame, its length prefix included, into `frame`.
async fn read_frame(stream: &mut BufReader<TcpStream>, frame: &mut Vec<u8>) -> std::io::Result<()> {
    let len = stream.read_u32_le().await?;
    frame.clear();
    frame.extend_from_slice(&len.to_le_bytes());
    frame.resize(4 + len as usize, 0);
    stream.read_exact(&mut frame[4..]).await?;
    Ok(())
}

/// One round trip: `payload` out as a frame, the echoed frame back; the payload's length.
async fn call(stream: &mut BufReader<TcpStream>, payload: &[u8]) -> std::io::Result<usize> {
    let mut frame = Vec::with_capacity(4 + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(payload);
    stream.get_mut().write_all(&frame).await?;
    read_frame(stream, &mut frame).await?;
    Ok(frame.len() - 4)
}

/// The `bare-client` role: connects to the server and measures echo round trips; see
/// [`serve_batches`].
pub async fn client(options: &Options) -> anyhow::Result<()> {
    let target = options.target()?;
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let stream = loop {
        match TcpStream::connect(target).await {
            Ok(stream) => break stream,
            Err(e) if Instant::now() > deadline => {
                return Err(anyhow!("cannot reach the echo server at {target}: {e}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    stream.set_nodelay(true)?;
    // One call at a time: the lock is never contended, it only lends the stream to each call.
    let stream = Arc::new(Mutex::new(BufReader::new(stream)));
    let size = options.payload;
    serve_batches(options, move |payload| {
        let stream = stream.clone();
        async move {
            let mut stream = stream.lock().await;
            match tokio::time::timeout(CALL_TIMEOUT, call(&mut stream, &payload)).await {
                Ok(Ok(len)) if len == size => Ok(()),
                Ok(Ok(len)) => Err(format!("{len} bytes came back")),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("timeout".into()),
            }
        }
    })
    .await
}
