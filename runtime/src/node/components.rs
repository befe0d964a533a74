//! Components across the cluster: which of a node's components run follows the cluster state.
//!
//! A component runs unless the group's state disables it by name (`Command::Component`). At
//! start the node starts its enabled components in order (a failure fails the start); then a
//! task follows the state, starting components as they are enabled (in registration order) and
//! stopping them as they are disabled (in reverse), on every node, a node that joins later
//! included. A component that is not cluster-compatible runs only in a one-node cluster.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Node;
use crate::consensus::{Command, Outcome, ProposeError};
use crate::lifecycle::{ComponentError, Scope};

/// How long enabling or disabling waits for the group.
const PROPOSE_WITHIN: Duration = Duration::from_secs(5);

/// A component as `GET /components` and [`Node::components`] show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentStatus {
    /// Its name.
    pub name: String,
    /// Whether the cluster has it enabled.
    pub enabled: bool,
    /// Whether it runs on this node now.
    pub running: bool,
    /// Whether it may run in a cluster of more than one node.
    pub cluster_compatible: bool,
}

/// Why a component could not be enabled or disabled. Nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum ComponentControlError {
    /// Names are 1 to 255 bytes.
    #[error("component names must be 1 to 255 bytes long")]
    BadName,
    /// The component says it cannot run on more than one node, and this cluster has more.
    #[error(
        "component `{0}` is not cluster-compatible and this cluster has more than one node; run it on a one-node cluster"
    )]
    NotClusterCompatible(String),
    /// The group refused it (too many components named).
    #[error("the cluster refused to record component `{name}`: {reason}")]
    Refused {
        /// The component.
        name: String,
        /// Why.
        reason: String,
    },
    /// The group did not answer in time; the change may still apply.
    #[error("the consensus group did not record the change: {0} (retry; it may still apply)")]
    Group(#[from] ProposeError),
}

impl Node {
    /// This node's components, with the cluster's switch and whether each runs here.
    pub async fn components(&self) -> Vec<ComponentStatus> {
        let state = self.inner.group.status().state.clone();
        let running = self.inner.started.lock().await;
        self.inner
            .components
            .iter()
            .zip(running.iter())
            .map(|(c, running)| ComponentStatus {
                name: c.name().to_owned(),
                enabled: state.components.get(c.name()).copied().unwrap_or(true),
                running: *running,
                cluster_compatible: c.cluster_compatible(),
            })
            .collect()
    }

    /// Enables or disables the component `name` on every node (it need not be one of this
    /// node's). Returns once the group recorded it; each node then starts or stops it.
    ///
    /// # Errors
    /// [`ComponentControlError`]; nothing changed.
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo(node: colony_runtime::Node) -> Result<(), Box<dyn std::error::Error>> {
    /// node.set_component_enabled("mail-digest", false).await?;
    /// # Ok(()) }
    /// ```
    pub async fn set_component_enabled(
        &self,
        name: &str,
        enabled: bool,
    ) -> Result<(), ComponentControlError> {
        if name.is_empty() || name.len() > 255 {
            return Err(ComponentControlError::BadName);
        }
        let local = self.inner.components.iter().find(|c| c.name() == name);
        if enabled && local.is_some_and(|c| !c.cluster_compatible()) && self.is_multi_node() {
            return Err(ComponentControlError::NotClusterCompatible(name.to_owned()));
        }
        let command = Command::Component {
            name: name.to_owned(),
            enabled,
        };
        match self.inner.group.propose(command, PROPOSE_WITHIN).await? {
            Outcome::Refused(why) => Err(ComponentControlError::Refused {
                name: name.to_owned(),
                reason: why.to_string(),
            }),
            _ => Ok(()),
        }
    }

    fn is_multi_node(&self) -> bool {
        self.inner.config.cluster_size > 1 || self.members().len() > 1
    }

    /// Whether component `i` should run now.
    fn wanted(&self, i: usize) -> bool {
        let component = &self.inner.components[i];
        let state = self.inner.group.status().state.clone();
        let enabled = state
            .components
            .get(component.name())
            .copied()
            .unwrap_or(true);
        let allowed = component.cluster_compatible() || !self.is_multi_node();
        if enabled && !allowed {
            tracing::warn!(
                component = component.name(),
                "not cluster-compatible: not started in a cluster of more than one node"
            );
        }
        enabled && allowed
    }

    /// Starts the components that should run, in order; a failure stops nothing else and is
    /// returned (the start then fails and the node stops what it started).
    pub(super) async fn start_components(&self) -> Result<(), ComponentError> {
        // A locked node stays up for operators to see, but runs none of the application: its
        // primitives would refuse the components' work anyway.
        if let Some(message) = self.maintenance() {
            tracing::error!(
                message,
                components = self.inner.components.len(),
                "locked for maintenance: components not started"
            );
            return Ok(());
        }
        self.reconcile(true).await?;
        tokio::spawn(self.clone().follow_the_cluster());
        Ok(())
    }

    /// Starts what is wanted and stops what is not. With `strict`, a failed start is returned;
    /// otherwise it is logged and the component stays stopped.
    async fn reconcile(&self, strict: bool) -> Result<(), ComponentError> {
        let mut running = self.inner.started.lock().await;
        if self.is_stopping() {
            return Ok(());
        }
        for i in (0..running.len()).rev() {
            if running[i] && !self.wanted(i) {
                let component = self.inner.components[i].clone();
                tracing::info!(
                    component = component.name(),
                    "stopping component (disabled)"
                );
                self.stop_one(i).await;
                running[i] = false;
            }
        }
        for i in 0..running.len() {
            if running[i] || !self.wanted(i) {
                continue;
            }
            match self.start_one(i).await {
                Ok(()) => running[i] = true,
                Err(e) if strict => return Err(e),
                Err(e) => {
                    tracing::error!(error = %e, "component failed to start; it stays stopped")
                }
            }
        }
        Ok(())
    }

    /// Follows the cluster's switches until the node stops.
    async fn follow_the_cluster(self) {
        let mut status = self.inner.group.watch();
        let mut seen = status.borrow_and_update().state.components.clone();
        while status.changed().await.is_ok() && !self.is_stopping() {
            let now = status.borrow_and_update().state.components.clone();
            if now != seen {
                seen = now;
                let _ = self.reconcile(false).await;
            }
        }
    }

    /// Stops every running component, in reverse order.
    pub(super) async fn stop_components(&self) {
        let mut running = self.inner.started.lock().await;
        for i in (0..running.len()).rev() {
            if running[i] {
                let component = self.inner.components[i].clone();
                tracing::info!(component = component.name(), "stopping component");
                self.stop_one(i).await;
                running[i] = false;
            }
        }
    }

    /// Starts component `i` with a new scope; a failed start releases what it had taken.
    async fn start_one(&self, i: usize) -> Result<(), ComponentError> {
        let component = self.inner.components[i].clone();
        tracing::info!(component = component.name(), "starting component");
        let scope = Scope::new(component.name());
        self.scopes()[i] = Some(scope.clone());
        let started = component.on_start(self).await;
        if started.is_err() {
            self.scopes()[i] = None;
            scope.release();
        }
        started
    }

    /// Stops component `i`, then releases what its scope still holds.
    async fn stop_one(&self, i: usize) {
        self.inner.components[i].on_stop(self).await;
        let scope = self.scopes()[i].take();
        if let Some(scope) = scope {
            scope.release();
        }
    }

    fn scopes(&self) -> std::sync::MutexGuard<'_, Vec<Option<Scope>>> {
        self.inner.scopes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The scope of the component `name` while it runs on this node (from before its `on_start`
    /// until after its `on_stop`): what the component puts there is released when it stops,
    /// whether it was disabled, the node stopped or its start failed. `None` when it does not
    /// run here.
    ///
    /// # Examples
    /// ```
    /// use colony_runtime::lifecycle::{Component, ComponentError, HookFuture};
    /// use colony_runtime::Node;
    ///
    /// struct Watcher;
    /// impl Component for Watcher {
    ///     fn name(&self) -> &str { "watcher" }
    ///     fn on_start<'a>(&'a self, node: &'a Node) -> HookFuture<'a, Result<(), ComponentError>> {
    ///         Box::pin(async move {
    ///             let scope = node.component_scope(self.name()).expect("set before on_start");
    ///             let mut events = node.subscribe(64);
    ///             // Ends when the component stops: nothing to undo in on_stop.
    ///             scope.spawn(async move {
    ///                 while let Some(event) = events.recv().await {
    ///                     tracing::info!(?event, "membership changed");
    ///                 }
    ///             });
    ///             Ok(())
    ///         })
    ///     }
    ///     fn on_stop<'a>(&'a self, _node: &'a Node) -> HookFuture<'a, ()> {
    ///         Box::pin(async {})
    ///     }
    /// }
    /// ```
    pub fn component_scope(&self, name: &str) -> Option<Scope> {
        let scopes = self.scopes();
        self.inner
            .components
            .iter()
            .zip(scopes.iter())
            .find_map(|(c, scope)| scope.as_ref().filter(|_| c.name() == name).cloned())
    }
}
