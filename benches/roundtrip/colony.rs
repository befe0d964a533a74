//! The Colony side: a node in this process, seeded to the `colony node` process, calls the
//! built-in `node` service's `echo` kind on it. Each call encodes an envelope, writes it on the
//! link to the peer, is decoded and answered by the peer's dispatcher, and its reply is
//! decoded, which is all the cost Colony adds over the bare round trip.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use colony_runtime::Node;

use super::{CONNECT_TIMEOUT, Options, serve_batches};

/// The `colony-client` role: joins the target's cluster and measures echo requests; see
/// [`serve_batches`].
pub async fn client(options: &Options) -> anyhow::Result<()> {
    let target = options.target()?;
    let home = tempfile::tempdir()?;
    let node = Node::builder()
        .name(format!("bench-client-{}", std::process::id()))
        .home(home.path())
        .bind("127.0.0.1:0")
        .seeds([target])
        .cookie(options.cookie.clone())
        .cluster_size(2)
        .start()
        .await
        .context("start the client node")?;
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let peer = loop {
        let up = node
            .members()
            .into_iter()
            .find(|m| m.addr == target && m.state.is_up());
        if let Some(peer) = up.filter(|m| node.is_connected(m.id)) {
            break peer.id;
        }
        if Instant::now() > deadline {
            bail!("no link to the node at {target}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let size = options.payload;
    let caller = node.clone();
    let served = serve_batches(options, move |payload| {
        let node = caller.clone();
        async move {
            match node.request_raw(peer, "node", "echo", payload, None).await {
                Ok(bytes) if bytes.len() == size => Ok(()),
                Ok(bytes) => Err(format!("{} bytes came back", bytes.len())),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await;
    node.shutdown().await;
    served
}
