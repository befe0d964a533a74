//! Errors of the cache operations.

/// Why a cache could not be created or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// A cache of that name exists on this node with other key or value types. Nothing changed.
    #[error("cache `{name}` already exists with key and value types {existing}; use another name")]
    TypeMismatch {
        /// The cache name.
        name: String,
        /// The existing cache's `(key, value)` type names.
        existing: String,
    },
    /// Cache names are 1 to 255 bytes.
    #[error("cache names must be 1 to 255 bytes long")]
    BadName,
    /// The loader failed. Nothing was cached.
    #[error("loading a value for cache `{name}` failed: {reason}")]
    Load {
        /// The cache name.
        name: String,
        /// The loader's error.
        reason: String,
    },
    /// The key or value of a replicated cache cannot be serialized. Nothing changed.
    #[error("cache `{name}`: {what} cannot be serialized: {reason}")]
    Serialize {
        /// The cache name.
        name: String,
        /// `key` or `value`.
        what: &'static str,
        /// The serializer's error.
        reason: String,
    },
    /// The change is larger than the cluster's message limit. Nothing changed.
    #[error(
        "cache `{name}`: a change of {size} bytes exceeds the limit of {limit} bytes; store less per entry"
    )]
    TooLarge {
        /// The cache name.
        name: String,
        /// The encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The node is locked for maintenance (its shared home moved and an update failed; see
    /// `Node::maintenance`). Nothing was read or changed.
    #[error("this node is locked for maintenance: {message}")]
    Maintenance {
        /// The reason, safe to show anyone.
        message: String,
    },
    /// The cache service is not installed on this node (start it with `colony::node()`).
    #[error("the cache service is not installed on this node (start it with colony::node())")]
    NotInstalled,
}
