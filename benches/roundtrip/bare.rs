//! The baseline: a plain ractor_cluster remote call, with no Colony code on the path.
//!
//! The server runs a `NodeServer` and one echo actor joined to a `pg` group; the client runs its
//! own `NodeServer`, dials the server, finds the echo actor's proxy in the group once, and calls
//! it with `ractor::rpc::call` and a timeout, the same call Colony makes to a gateway.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::{NodeServer, NodeServerMessage, RactorClusterMessage};

use tokio::io::AsyncReadExt;

use super::{CALL_TIMEOUT, CONNECT_TIMEOUT, Options, serve_batches};

/// The `pg` group the echo actor joins.
const GROUP: &str = "bench.echo";
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The echo actor's message: bytes in, the same bytes out, as Colony's `GatewayMsg`.
#[derive(RactorClusterMessage)]
enum EchoMsg {
    /// Answer with the bytes.
    #[rpc]
    Echo(Vec<u8>, RpcReplyPort<Vec<u8>>),
}

/// Sends every payload straight back.
struct Echo;

impl Actor for Echo {
    type Msg = EchoMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<EchoMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<EchoMsg>,
        message: EchoMsg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        let EchoMsg::Echo(bytes, reply) = message;
        // The caller may have timed out and gone.
        let _ = reply.send(bytes);
        Ok(())
    }
}

/// Starts a plain `NodeServer` on `port` (0 for any) of the loopback address.
async fn node_server(
    name: &str,
    port: u16,
    options: &Options,
) -> anyhow::Result<ActorRef<NodeServerMessage>> {
    let server = NodeServer::new(
        port,
        options.cookie.clone(),
        name.into(),
        LOOPBACK.to_string(),
        None,
        Some(NodeConnectionMode::Isolated),
    )
    .with_listen_addr(LOOPBACK);
    let (server, _) = Actor::spawn(None, server, ())
        .await
        .map_err(|e| anyhow!("start the NodeServer: {e}"))?;
    Ok(server)
}

/// The `bare-server` role: serves echo calls on the target port until stdin closes. Prints
/// `ready` once the echo actor is in its group.
pub async fn serve(options: &Options) -> anyhow::Result<()> {
    let _server = node_server("bare-server", options.target()?.port(), options).await?;
    let (echo, _) = Actor::spawn(None, Echo, ())
        .await
        .map_err(|e| anyhow!("start the echo actor: {e}"))?;
    ractor::pg::join(GROUP.into(), vec![echo.get_cell()]);
    println!("ready");
    tokio::io::stdin().read_to_end(&mut Vec::new()).await?;
    Ok(())
}

/// The `bare-client` role: dials the server and measures echo calls; see [`serve_batches`].
pub async fn client(options: &Options) -> anyhow::Result<()> {
    let server = node_server("bare-client", 0, options).await?;
    let target = options.target()?;
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    while let Err(e) = ractor_cluster::client_connect(&server, target).await {
        if Instant::now() > deadline {
            return Err(anyhow!("cannot reach the bare server at {target}: {e}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let echo = remote_echo(deadline).await?;
    let size = options.payload;
    serve_batches(options, move |payload| {
        let echo = echo.clone();
        async move {
            match ractor::rpc::call(
                &echo,
                |port| EchoMsg::Echo(payload, port),
                Some(CALL_TIMEOUT),
            )
            .await
            {
                Ok(CallResult::Success(bytes)) if bytes.len() == size => Ok(()),
                Ok(CallResult::Success(bytes)) => Err(format!("{} bytes came back", bytes.len())),
                Ok(CallResult::Timeout) => Err("timeout".into()),
                Ok(CallResult::SenderError) => Err("reply port dropped".into()),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await
}

/// The proxy of the server's echo actor, once the session has synchronised the group.
async fn remote_echo(deadline: Instant) -> anyhow::Result<ActorCell> {
    loop {
        let remote = ractor::pg::get_members(&GROUP.to_owned())
            .into_iter()
            .find(|cell| !cell.get_id().is_local());
        if let Some(cell) = remote {
            return Ok(cell);
        }
        if Instant::now() > deadline {
            return Err(anyhow!("the echo actor never appeared in `{GROUP}`"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
