//! Components: application parts that start after the node has joined and stop before it leaves.

use std::future::Future;
use std::pin::Pin;

use crate::Node;

mod scope;
pub use scope::Scope;

/// A boxed future returned by [`Component`] hooks.
pub type HookFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a component could not start; the node stops what it started and does not come up.
#[derive(Debug, thiserror::Error)]
#[error("component `{component}` failed to start: {reason}")]
pub struct ComponentError {
    /// The component's name.
    pub component: String,
    /// What went wrong.
    pub reason: String,
}

/// A part of the application tied to the node's life.
///
/// Components start in the order they were added, once the node has joined the cluster, and stop
/// in reverse order when the node shuts down, before it leaves, so that they can still talk to
/// the cluster while stopping. Implementors must make `on_stop` return even if `on_start` failed
/// half-way, and must not block the thread (use async IO or `spawn_blocking`).
///
/// # Examples
/// ```
/// use colony_runtime::lifecycle::{Component, ComponentError, HookFuture};
/// use colony_runtime::Node;
///
/// struct Greeter;
/// impl Component for Greeter {
///     fn name(&self) -> &str { "greeter" }
///     fn on_start<'a>(&'a self, node: &'a Node) -> HookFuture<'a, Result<(), ComponentError>> {
///         Box::pin(async move {
///             tracing::info!("hello from {}", node.name());
///             Ok(())
///         })
///     }
///     fn on_stop<'a>(&'a self, _node: &'a Node) -> HookFuture<'a, ()> {
///         Box::pin(async {})
///     }
/// }
/// ```
pub trait Component: Send + Sync + 'static {
    /// A short name for logs and errors.
    fn name(&self) -> &str;
    /// Called once the node has joined.
    fn on_start<'a>(&'a self, node: &'a Node) -> HookFuture<'a, Result<(), ComponentError>>;
    /// Called when the node shuts down, before it leaves the cluster, and when the component is
    /// disabled cluster-wide (see `Node::set_component_enabled`). It may be started again later.
    fn on_stop<'a>(&'a self, node: &'a Node) -> HookFuture<'a, ()>;
    /// Whether the component may run on several nodes at once. One that is not runs only in a
    /// one-node cluster, and enabling it in a larger one is refused. Compatible by default.
    fn cluster_compatible(&self) -> bool {
        true
    }
}
