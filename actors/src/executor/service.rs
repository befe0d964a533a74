//! The executor service of a node: installing it, [`Executors`] (`node.concurrency()`) and the
//! [`BucketedExecutor`] handle applications submit to.

use std::any::{Any, type_name};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use colony_runtime::Node;
use colony_runtime::clock::WallClock;
use colony_runtime::consensus::exec::{MAX_NAME, MAX_TASK_BYTES, NewTask};
use colony_runtime::lifecycle::ComponentError;
use colony_runtime::shell::Shell;

use super::actor::{ExecDriver, ExecHandle, ExecInput, ExecutorStats};
use super::error::ExecutorError;
use super::gateway::ExecGateway;
use super::msg::SERVICE;
use super::processor::{BucketedExecutorSettings, ExecutorTask};
use super::submit::SubmitAnswer;

/// An open executor: its typed handle, and its task type's name.
type Open = (Arc<dyn Any + Send + Sync>, &'static str);

/// What every handle of one node's executor service shares.
struct Shared {
    service: ExecHandle,
    /// The node's wall clock, which delayed tasks count from.
    clock: WallClock,
    /// Executors open on this node.
    open: Mutex<HashMap<String, Open>>,
}

/// Starts the executor service on `node`: its driver and its `executor` gateway. Every node of
/// a cluster runs it, whether or not the application opens an executor, since any node may be
/// given executor slots and must take their hand-overs; `colony::node()` installs it.
///
/// # Errors
/// [`ComponentError`] when the actor or the gateway cannot start.
pub async fn install(node: &Node) -> Result<(), ComponentError> {
    let fail = |reason: String| ComponentError {
        component: "executor".into(),
        reason,
    };
    let service = Shell::spawn(ExecDriver::new(node.clone()), node.watch_members())
        .await
        .map_err(|e| fail(e.to_string()))?;
    service.with_mut(|d| d.shell = Some(service.caster()));
    crate::wiring::feed_group(node, &service, ExecInput::Group);
    node.register_service(
        SERVICE,
        Arc::new(ExecGateway {
            service: service.clone(),
        }),
    )
    .await
    .map_err(|e| fail(e.to_string()))?;
    let report = service.clone();
    node.register_admin_view(
        "executors",
        Arc::new(move |_node| {
            let report = report.clone();
            Box::pin(async move { Ok(report.with(ExecDriver::report)) })
        }),
    );
    let measured = service.clone();
    node.add_metrics_collector(Arc::new(move |_node| {
        for (name, s) in measured.with(ExecDriver::all_stats) {
            metrics(&name, &s);
        }
    }));
    node.set_extension(Arc::new(Shared {
        service,
        clock: node.wall_clock(),
        open: Mutex::new(HashMap::new()),
    }));
    Ok(())
}

/// One executor's figures for `/metrics`, labelled by its name.
fn metrics(name: &str, s: &ExecutorStats) {
    use metrics::{counter, gauge};
    let labels = [("executor", name.to_owned())];
    gauge!("colony_executor_queued_tasks", &labels).set(s.queued as f64);
    gauge!("colony_executor_buckets", &labels).set(s.buckets as f64);
    gauge!("colony_executor_in_process", &labels).set(s.in_process as f64);
    gauge!("colony_executor_limit", &labels).set(s.limit as f64);
    counter!("colony_executor_batches_succeeded_total", &labels).absolute(s.succeeded);
    counter!("colony_executor_batches_failed_total", &labels).absolute(s.failed);
    counter!("colony_executor_dead_letters_total", &labels).absolute(s.dead_letters);
}

/// Gives a node's concurrency primitives: `node.concurrency()`.
pub trait ConcurrencyExt {
    /// The executors of this node.
    fn concurrency(&self) -> Executors;
}

impl ConcurrencyExt for Node {
    fn concurrency(&self) -> Executors {
        Executors {
            shared: self.extension::<Shared>(),
        }
    }
}

/// A node's executors. Cheap to clone.
#[derive(Clone)]
pub struct Executors {
    shared: Option<Arc<Shared>>,
}

impl Executors {
    /// The executor `name` on this node: opened with `settings` the first time (this node then
    /// processes the buckets of its slots), the same executor every later time (`settings` are
    /// then ignored). Every node should open the executors it may be given buckets of.
    ///
    /// # Errors
    /// [`ExecutorError::TypeMismatch`] if `name` is open with another task type;
    /// [`ExecutorError::BadName`]; [`ExecutorError::NotRunning`].
    ///
    /// # Examples
    /// ```no_run
    /// # async fn run(node: colony_runtime::Node) -> Result<(), Box<dyn std::error::Error>> {
    /// use colony_actors::executor::{BucketedExecutorSettings, ConcurrencyExt};
    /// let mail = node.concurrency().bucketed_executor(
    ///     "mail",
    ///     BucketedExecutorSettings::new(
    ///         |to: &String| to.clone(),
    ///         |to: String, batch: Vec<String>, token: u64| async move {
    ///             println!("{} mails to {to} (token {token})", batch.len());
    ///             Ok::<(), std::io::Error>(())
    ///         },
    ///     ),
    /// )?;
    /// mail.submit("ann@example.com".to_owned()).await?;
    /// # Ok(()) }
    /// ```
    pub fn bucketed_executor<T: ExecutorTask>(
        &self,
        name: &str,
        settings: BucketedExecutorSettings<T>,
    ) -> Result<BucketedExecutor<T>, ExecutorError> {
        let shared = self.shared.as_ref().ok_or(ExecutorError::NotRunning)?;
        if name.is_empty() || name.len() > MAX_NAME {
            return Err(ExecutorError::BadName);
        }
        let mut open = shared.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((typed, types)) = open.get(name) {
            return typed
                .clone()
                .downcast::<Inner<T>>()
                .map(|inner| BucketedExecutor { inner })
                .map_err(|_| ExecutorError::TypeMismatch {
                    name: name.to_owned(),
                    existing: (*types).to_owned(),
                });
        }
        let (bucket_fn, runner, core, bound) = settings.build();
        shared
            .service
            .send(ExecInput::Open {
                name: name.to_owned(),
                settings: core,
                runner,
            })
            .map_err(|_| ExecutorError::NotRunning)?;
        let inner = Arc::new(Inner {
            name: name.to_owned(),
            bucket_fn,
            bound,
            shared: shared.clone(),
            closed: AtomicBool::new(false),
        });
        open.insert(name.to_owned(), (inner.clone(), type_name::<T>()));
        Ok(BucketedExecutor { inner })
    }
}

struct Inner<T> {
    name: String,
    bucket_fn: Arc<dyn Fn(&T) -> String + Send + Sync>,
    bound: u64,
    shared: Arc<Shared>,
    closed: AtomicBool,
}

/// One executor on this node. Cheap to clone. See `docs/executor.md` for what it promises.
pub struct BucketedExecutor<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Clone for BucketedExecutor<T> {
    fn clone(&self) -> Self {
        BucketedExecutor {
            inner: self.inner.clone(),
        }
    }
}

/// A task's number in its executor: numbers increase in the order the group accepted tasks.
pub type TaskId = u64;

impl<T: ExecutorTask> BucketedExecutor<T> {
    /// The executor's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Queues `task` in its bucket; returns once the group committed it (on a majority's
    /// disks), so no single crash loses it. Waits while this node is not in the group.
    ///
    /// # Errors
    /// [`ExecutorError::Serialize`] or [`ExecutorError::TooLarge`] (checked before anything is
    /// sent), [`ExecutorError::BadName`] for a bucket id outside 1 to 256 bytes,
    /// [`ExecutorError::Busy`] past the executor's bound, [`ExecutorError::ShutDown`],
    /// [`ExecutorError::Refused`], [`ExecutorError::Unknown`], [`ExecutorError::NotRunning`].
    pub async fn submit(&self, task: T) -> Result<TaskId, ExecutorError> {
        self.submit_at(task, 0).await
    }

    /// Queues `task` to be processed no earlier than `delay` from now (by this node's clock).
    /// It holds its bucket meanwhile: tasks behind it wait, since order comes first.
    ///
    /// # Errors
    /// As [`Self::submit`].
    pub async fn schedule(&self, task: T, delay: Duration) -> Result<TaskId, ExecutorError> {
        let now_ms = self.inner.shared.clock.now_millis();
        let at = now_ms.saturating_add(delay.as_millis() as u64);
        self.submit_at(task, at).await
    }

    async fn submit_at(&self, task: T, not_before_ms: u64) -> Result<TaskId, ExecutorError> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(ExecutorError::ShutDown(inner.name.clone()));
        }
        // Checked here, not in the group: a submit carries other callers' tasks too, and one
        // bad task would refuse them all.
        let bytes =
            colony_runtime::wire::encode_payload(&task).map_err(|e| ExecutorError::Serialize {
                reason: e.to_string(),
            })?;
        if bytes.len() > MAX_TASK_BYTES {
            return Err(ExecutorError::TooLarge {
                bytes: bytes.len(),
                limit: MAX_TASK_BYTES,
            });
        }
        let bucket = (inner.bucket_fn)(&task);
        if bucket.is_empty() || bucket.len() > MAX_NAME {
            return Err(ExecutorError::BadName);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        inner
            .shared
            .service
            .send(ExecInput::Submit {
                executor: inner.name.clone(),
                tasks: vec![NewTask::new(bucket, bytes, not_before_ms)],
                bound: inner.bound,
                reply: tx,
            })
            .map_err(|_| ExecutorError::NotRunning)?;
        match rx.await.map_err(|_| ExecutorError::NotRunning)? {
            SubmitAnswer::Accepted { first, .. } => Ok(first),
            SubmitAnswer::Busy { queued } => Err(ExecutorError::Busy { queued }),
            SubmitAnswer::Refused(r) => Err(ExecutorError::Refused(r)),
            SubmitAnswer::Unknown => Err(ExecutorError::Unknown),
        }
    }

    /// This executor's numbers as this node sees them.
    pub fn stats(&self) -> ExecutorStats {
        self.inner
            .shared
            .service
            .with(|d| d.stats(&self.inner.name))
    }

    /// Stops processing this executor on this node: its batches in process are dropped (they
    /// run again elsewhere, or here once reopened), later submits through any handle fail with
    /// [`ExecutorError::ShutDown`], and the name may be opened again. Queued tasks stay queued.
    pub fn shutdown(&self) {
        let inner = &self.inner;
        if inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut open = inner.shared.open.lock().unwrap_or_else(|e| e.into_inner());
        open.remove(&inner.name);
        let _ = inner
            .shared
            .service
            .send(ExecInput::Close(inner.name.clone()));
    }
}
