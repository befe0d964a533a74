//! Shared-home moves: a node that starts with another shared home than the one it last ran
//! with runs the registered [`HomeUpdateHandler`]s, and stays locked for maintenance if one
//! fails.
//!
//! The local home's `state/shared-home` records the shared home (canonical path) the node last
//! ran with. At start:
//! - nothing recorded: the first start; the location is recorded, no handler runs;
//! - the same location: nothing moved, no handler runs;
//! - another location: a move. The handlers apply in registration order. If all apply, the new
//!   location is recorded. If one fails, the ones that had applied roll back in reverse order
//!   (not the failing one), nothing is recorded, and the node is locked with a message safe to
//!   show anyone. A later start with the old location starts normally; one with the new
//!   location tries the move again.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use super::{LocalHome, SharedHome};

/// What users see when a handler fails without a safe summary of its own.
pub const STANDARD_MESSAGE: &str = "The shared home directory moved and the update for its new location failed. \
An administrator must check the node's log.";

/// A boxed future returned by [`HomeUpdateHandler`] methods.
pub type UpdateFuture<'a> = Pin<Box<dyn Future<Output = Result<(), HomeUpdateError>> + Send + 'a>>;

/// The old and new locations of a moved shared home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HomeUpdate {
    /// Where the shared home was when this node last ran.
    pub old: PathBuf,
    /// Where it is now.
    pub new: PathBuf,
}

/// Why a handler could not apply (or roll back) a move.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HomeUpdateError {
    /// A failure the handler describes for users: `summary` is shown to anyone who uses the
    /// node, so it must say what went wrong at a high level and name no path (a summary that
    /// names one is replaced by [`STANDARD_MESSAGE`]); `detail` goes to the log only.
    #[error("{summary}")]
    Service {
        /// Safe to show anyone.
        summary: String,
        /// For administrators: written to the log.
        detail: String,
    },
    /// Any other failure: users see [`STANDARD_MESSAGE`], the log gets this text.
    #[error("{0}")]
    Other(String),
}

/// Updates whatever depends on the shared home's absolute location when it moves.
///
/// # Examples
/// ```
/// use colony_runtime::homes::{HomeUpdate, HomeUpdateError, HomeUpdateHandler, UpdateFuture};
///
/// /// Rewrites the index's absolute path.
/// struct Index;
/// impl HomeUpdateHandler for Index {
///     fn name(&self) -> &str { "index" }
///     fn apply<'a>(&'a self, update: &'a HomeUpdate) -> UpdateFuture<'a> {
///         Box::pin(async move {
///             let _ = (&update.old, &update.new);
///             Err(HomeUpdateError::Service {
///                 summary: "The search index could not be moved.".into(),
///                 detail: format!("no index under {}", update.new.display()),
///             })
///         })
///     }
///     fn rollback<'a>(&'a self, _: &'a HomeUpdate) -> UpdateFuture<'a> {
///         Box::pin(async { Ok(()) })
///     }
/// }
/// let _ = colony_runtime::Node::builder().home_update_handler(Index);
/// ```
pub trait HomeUpdateHandler: Send + Sync + 'static {
    /// A short name for logs.
    fn name(&self) -> &str;
    /// Replaces references to `update.old` with `update.new`.
    fn apply<'a>(&'a self, update: &'a HomeUpdate) -> UpdateFuture<'a>;
    /// Undoes a successful [`apply`](Self::apply), so the node can run from the old location
    /// again. Called only on handlers that applied, when a later one failed; its error is
    /// logged, never returned.
    fn rollback<'a>(&'a self, update: &'a HomeUpdate) -> UpdateFuture<'a>;
}

/// A handler made of two closures.
///
/// # Examples
/// ```
/// use colony_runtime::homes::handler_fn;
/// let handler = handler_fn("links", |_update| Ok(()), |_update| Ok(()));
/// let _ = colony_runtime::Node::builder().home_update_handler(handler);
/// ```
pub fn handler_fn<A, R>(name: impl Into<String>, apply: A, rollback: R) -> impl HomeUpdateHandler
where
    A: Fn(&HomeUpdate) -> Result<(), HomeUpdateError> + Send + Sync + 'static,
    R: Fn(&HomeUpdate) -> Result<(), HomeUpdateError> + Send + Sync + 'static,
{
    FnHandler {
        name: name.into(),
        apply,
        rollback,
    }
}

struct FnHandler<A, R> {
    name: String,
    apply: A,
    rollback: R,
}

impl<A, R> HomeUpdateHandler for FnHandler<A, R>
where
    A: Fn(&HomeUpdate) -> Result<(), HomeUpdateError> + Send + Sync + 'static,
    R: Fn(&HomeUpdate) -> Result<(), HomeUpdateError> + Send + Sync + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }
    fn apply<'a>(&'a self, update: &'a HomeUpdate) -> UpdateFuture<'a> {
        let result = (self.apply)(update);
        Box::pin(async move { result })
    }
    fn rollback<'a>(&'a self, update: &'a HomeUpdate) -> UpdateFuture<'a> {
        let result = (self.rollback)(update);
        Box::pin(async move { result })
    }
}

/// How the start found the shared home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// No location was recorded: this one is now.
    First,
    /// The same location as last time.
    Unchanged,
    /// It moved and every handler applied; the new location is recorded.
    Moved(HomeUpdate),
    /// It moved and a handler failed: the node stays locked for maintenance with `message`
    /// (safe to show anyone).
    Locked {
        /// The move.
        update: HomeUpdate,
        /// What users see.
        message: String,
    },
}

/// Why the recorded location could not be read or written. The node does not start.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot record the shared home's location in {path}: {source} (check that the local home's state directory is writable)"
)]
pub struct RecordError {
    /// The record file.
    pub path: PathBuf,
    /// What the OS said.
    pub source: std::io::Error,
}

/// Compares the shared home with the recorded one and runs `handlers` if it moved. See the
/// module doc.
///
/// # Errors
/// [`RecordError`] when the record cannot be read or written.
pub async fn settle(
    local: &LocalHome,
    shared: &SharedHome,
    handlers: &[Arc<dyn HomeUpdateHandler>],
) -> Result<Settled, RecordError> {
    let record = local.state().join("shared-home");
    let fail = |source| RecordError {
        path: record.clone(),
        source,
    };
    let new = std::fs::canonicalize(shared.root()).map_err(fail)?;
    let old = match std::fs::read(&record) {
        Ok(bytes) => from_bytes(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            write_atomically(&record, &new).map_err(fail)?;
            return Ok(Settled::First);
        }
        Err(e) => return Err(fail(e)),
    };
    if old == new {
        return Ok(Settled::Unchanged);
    }
    let update = HomeUpdate { old, new };
    tracing::warn!(old = %update.old.display(), new = %update.new.display(), "the shared home moved; running the update handlers");
    for (i, handler) in handlers.iter().enumerate() {
        if let Err(e) = handler.apply(&update).await {
            tracing::error!(handler = handler.name(), error = ?e, "a shared-home update handler failed; rolling back the ones that applied");
            for applied in handlers[..i].iter().rev() {
                if let Err(e) = applied.rollback(&update).await {
                    tracing::error!(handler = applied.name(), error = ?e, "rolling back a shared-home update failed");
                }
            }
            let message = shown(&e, &update);
            return Ok(Settled::Locked { update, message });
        }
    }
    write_atomically(&record, &update.new).map_err(fail)?;
    tracing::info!(
        handlers = handlers.len(),
        "the shared home's new location is recorded"
    );
    Ok(Settled::Moved(update))
}

/// What users see for `e`: a handler's own summary unless it names a path.
fn shown(e: &HomeUpdateError, update: &HomeUpdate) -> String {
    match e {
        HomeUpdateError::Service { summary, .. } if !names_a_path(summary, update) => {
            summary.clone()
        }
        _ => STANDARD_MESSAGE.to_owned(),
    }
}

/// Whether `text` names either location, or anything shaped like an absolute path.
fn names_a_path(text: &str, update: &HomeUpdate) -> bool {
    let names = |p: &Path| {
        let p = p.to_string_lossy();
        !p.is_empty() && text.contains(p.as_ref())
    };
    names(&update.old)
        || names(&update.new)
        || text.split_whitespace().any(|word| {
            let word = word.trim_matches(|c: char| "\"'`([{<".contains(c));
            word.starts_with('/')
                || word.starts_with("~/")
                || word.starts_with("\\\\")
                || word.get(1..3) == Some(":\\")
        })
}

fn write_atomically(path: &Path, location: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&to_bytes(location))?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(unix)]
fn to_bytes(p: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    p.as_os_str().as_bytes().to_vec()
}

#[cfg(unix)]
fn from_bytes(bytes: Vec<u8>) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(bytes))
}

#[cfg(not(unix))]
fn to_bytes(p: &Path) -> Vec<u8> {
    p.to_string_lossy().into_owned().into_bytes()
}

#[cfg(not(unix))]
fn from_bytes(bytes: Vec<u8>) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests;
