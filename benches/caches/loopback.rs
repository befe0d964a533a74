//! The floor: a TCP echo over 127.0.0.1 between two tokio tasks in two processes, on the same
//! multi-threaded runtime as the nodes. The server is the `echo` role of this binary; the client
//! is a task in a writer process, the same process and runtime that times the cache writes. One
//! round trip sends [`MESSAGE`] bytes and reads them back, with `TCP_NODELAY` on both ends: the
//! least any request between two such processes pays.

use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

/// Bytes sent each way per round trip: about the size of a small cache change.
pub const MESSAGE: usize = 64;

/// The `echo` role: listens on a free 127.0.0.1 port, prints its address, and echoes every
/// connection until stdin closes.
///
/// # Errors
/// The port could not be bound.
pub async fn serve() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                let mut buf = [0u8; MESSAGE];
                while stream.read_exact(&mut buf).await.is_ok()
                    && stream.write_all(&buf).await.is_ok()
                {}
            });
        }
    });
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while stdin.next_line().await?.is_some() {}
    Ok(())
}

/// The client end of one connection.
pub struct Client {
    stream: tokio::net::TcpStream,
    buf: [u8; MESSAGE],
}

impl Client {
    /// Connects to the server at `addr`.
    ///
    /// # Errors
    /// The connection failed.
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Client> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            buf: [0x5A; MESSAGE],
        })
    }

    /// One round trip.
    ///
    /// # Errors
    /// The connection failed.
    pub async fn round_trip(&mut self) -> std::io::Result<()> {
        self.stream.write_all(&self.buf).await?;
        self.stream.read_exact(&mut self.buf).await?;
        Ok(())
    }
}
