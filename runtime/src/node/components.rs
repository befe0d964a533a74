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
use crate::lifecycle::ComponentError;

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
                component.on_stop(self).await;
                running[i] = false;
            }
        }
        for i in 0..running.len() {
            if running[i] || !self.wanted(i) {
                continue;
            }
            let component = self.inner.components[i].clone();
            tracing::info!(component = component.name(), "starting component");
            match component.on_start(self).await {
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
                component.on_stop(self).await;
                running[i] = false;
            }
        }
    }
}
