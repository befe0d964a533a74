//! Cluster messaging: named channels that carry typed messages from one node to every other up
//! node.
//!
//! Node-local events ([`crate::events`]) stay local. What must cross nodes goes through a
//! channel: `node.messaging().channel::<T>(name)`, then [`Channel::publish`] and
//! [`Channel::subscribe`]. The promises:
//! - **to every other up node**: a message goes to each member this node sees up when it is
//!   published, never back to the sender;
//! - **at most once, drops counted**: nothing is retried; a message that did not arrive, was
//!   older than one already delivered from its sender, or found its receiver's subscribers
//!   behind, is counted ([`MessagingStats`]), never delivered twice;
//! - **ordered per sender**: a receiver delivers a sender's messages of one channel in the
//!   order they were published: each carries a number, and one that arrives after a later one
//!   (two publishes racing on one node) is dropped, never delivered out of order;
//! - **authenticated sender**: [`Message::from`] is the node the message's link authenticated,
//!   not a claim inside the message;
//! - **bounded**: a message larger than the channel's limit is refused at `publish`; each
//!   subscriber holds at most its capacity, and a receiver keeps order state only for its own
//!   channels and current members.

use std::any::TypeId;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::membership::driver::MembershipHandle;
use crate::transport::{Request, Service, ServiceError, ServiceFuture};
use crate::{Node, NodeId, wire};

/// The transport service every node runs for channels.
pub(crate) const SERVICE: &str = "messaging";

/// The default largest message, in bytes (encoded).
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024;

/// The default number of messages a subscriber may fall behind before it loses some.
pub const DEFAULT_CAPACITY: usize = 1024;

/// How long a publish waits for the other nodes to take its message.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a channel could not be opened or a message not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessagingError {
    /// Channel names are 1 to 255 bytes.
    #[error("channel names must be 1 to 255 bytes long")]
    BadName,
    /// The channel is open on this node with another message type.
    #[error("channel `{name}` already carries messages of type {existing}; use another name")]
    TypeMismatch {
        /// The channel.
        name: String,
        /// The type it carries.
        existing: &'static str,
    },
    /// The message could not be serialized. Nothing was sent.
    #[error("channel `{name}`: the message cannot be serialized: {reason}")]
    Serialize {
        /// The channel.
        name: String,
        /// The serializer's error.
        reason: String,
    },
    /// The message is larger than the channel's limit. Nothing was sent.
    #[error(
        "channel `{name}`: a message of {size} bytes exceeds the limit of {limit} bytes; send less, or a reference to it"
    )]
    TooLarge {
        /// The channel.
        name: String,
        /// The encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

/// A channel's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelSettings {
    /// The largest message, encoded, in bytes (at most the node's message limit).
    pub max_bytes: usize,
    /// Messages one subscriber may fall behind before it loses the oldest.
    pub capacity: usize,
}

impl Default for ChannelSettings {
    fn default() -> Self {
        ChannelSettings {
            max_bytes: DEFAULT_MAX_BYTES,
            capacity: DEFAULT_CAPACITY,
        }
    }
}

/// Counters of this node's channels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessagingStats {
    /// Messages published here.
    pub published: u64,
    /// Deliveries of published messages that no other node confirmed (it was down, slow or
    /// gone): each may or may not have arrived.
    pub unconfirmed: u64,
    /// Messages received for a channel this node has not opened.
    pub unknown_channel: u64,
    /// Messages received after a later one of the same sender and channel.
    pub out_of_order: u64,
    /// Messages received and handed to subscribers.
    pub delivered: u64,
    /// Messages a subscriber lost because it fell behind, or that it could not decode.
    pub lost_by_subscribers: u64,
}

/// One received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<T> {
    /// The node that sent it, as its link authenticated it.
    pub from: NodeId,
    /// The message.
    pub value: T,
}

/// What crosses the wire.
#[derive(Serialize, Deserialize)]
struct Wire {
    channel: String,
    seq: u64,
    #[serde(with = "serde_bytes")]
    bytes: Vec<u8>,
}

/// A received message before its subscribers decode it.
#[derive(Clone)]
struct Raw {
    from: NodeId,
    bytes: Arc<[u8]>,
}

struct Open {
    type_id: TypeId,
    type_name: &'static str,
    settings: ChannelSettings,
    sender: broadcast::Sender<Raw>,
    next_seq: u64,
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    unconfirmed: AtomicU64,
    unknown_channel: AtomicU64,
    out_of_order: AtomicU64,
    delivered: AtomicU64,
    lost_by_subscribers: AtomicU64,
}

struct Inner {
    channels: Mutex<HashMap<String, Open>>,
    order: Mutex<Order>,
    counters: Counters,
}

/// A node's channels: `node.messaging()`. Cheap to clone.
#[derive(Clone)]
pub struct Messaging {
    node: Node,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Messaging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Messaging").finish_non_exhaustive()
    }
}

/// Creates the messaging state and the service that receives for it.
pub(crate) fn service(membership: MembershipHandle) -> (Arc<MessagingState>, Arc<dyn Service>) {
    let state = Arc::new(MessagingState(Arc::new(Inner {
        channels: Mutex::new(HashMap::new()),
        order: Mutex::new(Order::default()),
        counters: Counters::default(),
    })));
    (
        state.clone(),
        Arc::new(Receiver {
            inner: state.0.clone(),
            membership,
        }),
    )
}

/// A node's messaging state, kept by the node.
pub(crate) struct MessagingState(Arc<Inner>);

impl MessagingState {
    pub(crate) fn handle(&self, node: Node) -> Messaging {
        Messaging {
            node,
            inner: self.0.clone(),
        }
    }
}

impl Messaging {
    /// Opens the channel `name` for messages of type `T` with default limits (the same
    /// channel on every call with the same type).
    ///
    /// # Errors
    /// [`MessagingError::BadName`], or [`MessagingError::TypeMismatch`] if the channel is
    /// open with another type.
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo(node: colony_runtime::Node) -> Result<(), Box<dyn std::error::Error>> {
    /// let channel = node.messaging().channel::<String>("reindex")?;
    /// let mut updates = channel.subscribe();
    /// channel.publish(&"project-42".to_string()).await?;
    /// while let Some(message) = updates.recv().await {
    ///     println!("{} asks to reindex {}", message.from, message.value);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn channel<T>(&self, name: &str) -> Result<Channel<T>, MessagingError>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
    {
        self.channel_with(name, ChannelSettings::default())
    }

    /// Opens `name` with `settings` (used the first time the channel is opened on this node).
    ///
    /// # Errors
    /// As [`Self::channel`].
    pub fn channel_with<T>(
        &self,
        name: &str,
        settings: ChannelSettings,
    ) -> Result<Channel<T>, MessagingError>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
    {
        if name.is_empty() || name.len() > 255 {
            return Err(MessagingError::BadName);
        }
        let mut channels = self.inner.channels.lock().expect("channels lock");
        let open = channels.entry(name.to_owned()).or_insert_with(|| Open {
            type_id: TypeId::of::<T>(),
            type_name: std::any::type_name::<T>(),
            settings: ChannelSettings {
                max_bytes: settings.max_bytes.min(self.node.config().max_message_bytes),
                capacity: settings.capacity.max(1),
            },
            sender: broadcast::channel(settings.capacity.max(1)).0,
            next_seq: 1,
        });
        if open.type_id != TypeId::of::<T>() {
            return Err(MessagingError::TypeMismatch {
                name: name.to_owned(),
                existing: open.type_name,
            });
        }
        Ok(Channel {
            messaging: self.clone(),
            name: name.to_owned(),
            max_bytes: open.settings.max_bytes,
            _type: PhantomData,
        })
    }

    /// This node's counters.
    pub fn stats(&self) -> MessagingStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MessagingStats {
            published: get(&c.published),
            unconfirmed: get(&c.unconfirmed),
            unknown_channel: get(&c.unknown_channel),
            out_of_order: get(&c.out_of_order),
            delivered: get(&c.delivered),
            lost_by_subscribers: get(&c.lost_by_subscribers),
        }
    }
}

/// A named channel of `T` messages on this node. Cheap to clone.
pub struct Channel<T> {
    messaging: Messaging,
    name: String,
    max_bytes: usize,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for Channel<T> {
    fn clone(&self) -> Self {
        Channel {
            messaging: self.messaging.clone(),
            name: self.name.clone(),
            max_bytes: self.max_bytes,
            _type: PhantomData,
        }
    }
}

/// What became of one published message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Nodes that took it.
    pub delivered: usize,
    /// Nodes that did not confirm it (counted in [`MessagingStats::unconfirmed`]).
    pub unconfirmed: usize,
}

impl<T> Channel<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    /// The channel's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends `value` to every other node this node sees up, once, and waits for them to take
    /// it (at most 2 s). Messages published one after another from this node arrive in that
    /// order.
    ///
    /// # Errors
    /// [`MessagingError::Serialize`] or [`MessagingError::TooLarge`]; nothing was sent then.
    pub async fn publish(&self, value: &T) -> Result<Published, MessagingError> {
        let bytes = wire::encode_payload(value).map_err(|e| MessagingError::Serialize {
            name: self.name.clone(),
            reason: e.to_string(),
        })?;
        if bytes.len() > self.max_bytes {
            return Err(MessagingError::TooLarge {
                name: self.name.clone(),
                size: bytes.len(),
                limit: self.max_bytes,
            });
        }
        let inner = &self.messaging.inner;
        let node = &self.messaging.node;
        // Publishes awaited one after another arrive in order. Concurrent ones may cross on a
        // link; the receiver then drops the one that arrives after a higher number (counted),
        // so a channel never delivers out of order.
        let targets: Vec<NodeId> = node
            .up_members()
            .into_iter()
            .filter(|id| *id != node.id())
            .collect();
        let seq = {
            let mut channels = inner.channels.lock().expect("channels lock");
            let open = channels.get_mut(&self.name).expect("opened by channel()");
            open.next_seq += 1;
            open.next_seq - 1
        };
        let payload = wire::encode_payload(&Wire {
            channel: self.name.clone(),
            seq,
            bytes,
        })
        .map_err(|e| MessagingError::Serialize {
            name: self.name.clone(),
            reason: e.to_string(),
        })?;
        inner.counters.published.fetch_add(1, Ordering::Relaxed);
        let answers = node
            .request_each(&targets, SERVICE, "publish", payload, Some(PUBLISH_TIMEOUT))
            .await;
        let delivered = answers.iter().filter(|a| a.is_ok()).count();
        let unconfirmed = answers.len() - delivered;
        inner
            .counters
            .unconfirmed
            .fetch_add(unconfirmed as u64, Ordering::Relaxed);
        Ok(Published {
            delivered,
            unconfirmed,
        })
    }

    /// Subscriptions of this channel on this node now (dropped ones are gone).
    pub fn subscribers(&self) -> usize {
        let channels = self.messaging.inner.channels.lock().expect("channels lock");
        channels
            .get(&self.name)
            .map_or(0, |open| open.sender.receiver_count())
    }

    /// Receives the messages that arrive from now on.
    pub fn subscribe(&self) -> Subscription<T> {
        let channels = self.messaging.inner.channels.lock().expect("channels lock");
        let open = channels.get(&self.name).expect("opened by channel()");
        Subscription {
            receiver: open.sender.subscribe(),
            inner: self.messaging.inner.clone(),
            _type: PhantomData,
        }
    }
}

/// Messages of one channel as they arrive on this node.
pub struct Subscription<T> {
    receiver: broadcast::Receiver<Raw>,
    inner: Arc<Inner>,
    _type: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Subscription<T> {
    /// The next message; `None` once the node's messaging is gone. Messages lost because this
    /// subscriber fell behind, or that do not decode as `T`, are skipped and counted.
    pub async fn recv(&mut self) -> Option<Message<T>> {
        loop {
            match self.receiver.recv().await {
                Ok(raw) => match wire::decode_payload(&raw.bytes) {
                    Ok(value) => {
                        return Some(Message {
                            from: raw.from,
                            value,
                        });
                    }
                    Err(e) => {
                        tracing::warn!(from = %raw.from, error = %e, "a channel message did not decode; skipped");
                        self.lost(1);
                    }
                },
                Err(broadcast::error::RecvError::Lagged(n)) => self.lost(n),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    fn lost(&self, n: u64) {
        self.inner
            .counters
            .lost_by_subscribers
            .fetch_add(n, Ordering::Relaxed);
    }
}

/// The service side: checks order and hands messages to the channel's subscribers.
struct Receiver {
    inner: Arc<Inner>,
    membership: MembershipHandle,
}

impl Service for Receiver {
    fn call(&self, request: Request) -> ServiceFuture {
        let answer = match request.kind.as_str() {
            "publish" => self.receive(request.from, &request.payload),
            other => Err(ServiceError::UnknownKind(other.to_owned())),
        };
        Box::pin(async move { answer })
    }
}

/// Order entries kept before those of nodes that are no longer members are dropped.
const PRUNE_AT: usize = 4096;

/// The last number delivered per sender and channel.
#[derive(Default)]
struct Order {
    last: HashMap<(NodeId, String), u64>,
}

impl Order {
    /// Whether `seq` from `from` on `channel` comes after every number delivered before. Past
    /// [`PRUNE_AT`] entries, senders that are not in `members()` any more lose theirs (a
    /// restarted node comes back under a new id): bounded by channels times members.
    fn admit(
        &mut self,
        from: NodeId,
        channel: &str,
        seq: u64,
        members: impl FnOnce() -> Vec<NodeId>,
    ) -> bool {
        let key = (from, channel.to_owned());
        if self.last.get(&key).is_some_and(|l| seq <= *l) {
            return false;
        }
        self.last.insert(key, seq);
        if self.last.len() > PRUNE_AT {
            let members = members();
            self.last.retain(|(sender, _), _| members.contains(sender));
        }
        true
    }
}

impl Receiver {
    fn receive(&self, from: NodeId, payload: &[u8]) -> Result<Vec<u8>, ServiceError> {
        let msg: Wire = wire::decode_payload(payload)?;
        let counters = &self.inner.counters;
        let channels = self.inner.channels.lock().expect("channels lock");
        let Some(open) = channels.get(&msg.channel) else {
            counters.unknown_channel.fetch_add(1, Ordering::Relaxed);
            return Ok(Vec::new());
        };
        if msg.bytes.len() > open.settings.max_bytes {
            return Err(ServiceError::Failed(format!(
                "a message of {} bytes exceeds channel `{}`'s limit of {} bytes",
                msg.bytes.len(),
                msg.channel,
                open.settings.max_bytes
            )));
        }
        let admitted =
            self.inner
                .order
                .lock()
                .expect("order lock")
                .admit(from, &msg.channel, msg.seq, || {
                    let view = self.membership.view();
                    view.members.iter().map(|m| m.id).collect()
                });
        if !admitted {
            counters.out_of_order.fetch_add(1, Ordering::Relaxed);
            return Ok(Vec::new());
        }
        counters.delivered.fetch_add(1, Ordering::Relaxed);
        // No subscriber: nobody listens here now, which is not a loss.
        let _ = open.sender.send(Raw {
            from,
            bytes: msg.bytes.into(),
        });
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests;
