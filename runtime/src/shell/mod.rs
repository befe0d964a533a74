//! The actor shell every sans-IO core runs in: one ractor actor that feeds a core its inputs,
//! the membership view and its timer, and after each of them lets the core's driver carry out
//! what the core queued.
//!
//! A primitive implements [`Driven`] for its driver (its core plus the IO the core asks for:
//! sockets, disk, waiting callers), and gets a [`Shell`]: inputs can be stepped in the caller's
//! own task ([`Shell::send`], no hand-off to the actor and back) or queued for the actor
//! ([`Shell::cast`], for callers that must not wait on the driver's lock, such as a
//! connection's task that serves other requests too). A step hands the core its input (or
//! every input queued since the actor last woke: under load, one flush, and so one disk write,
//! serves a whole burst), then flushes and re-arms the timer at the core's next deadline.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::watch;

use crate::membership::View;

/// Aborts a task when dropped: a task that serves something else's lifetime (a watcher of a
/// link, a runner awaited by a run) ends with it, however its owner ends.
///
/// # Examples
/// ```
/// use colony_runtime::shell::AbortOnDrop;
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let task = tokio::spawn(std::future::pending::<()>());
/// let handle = task.abort_handle();
/// drop(AbortOnDrop(handle));
/// assert!(task.await.unwrap_err().is_cancelled());
/// # });
/// ```
pub struct AbortOnDrop(pub tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A core with its IO, as the shell drives it.
pub trait Driven: Send + 'static {
    /// What callers hand the core.
    type Input: Send + 'static;

    /// One input.
    fn input(&mut self, now: Instant, input: Self::Input);

    /// The membership view changed (called once at the start, too).
    fn view(&mut self, now: Instant, view: &Arc<View>);

    /// The deadline of [`Driven::deadline`] passed.
    fn timeout(&mut self, now: Instant);

    /// Carries out everything the core queued. Called after every input, view and timeout.
    fn flush(&mut self, now: Instant);

    /// When [`Driven::timeout`] is due next.
    fn deadline(&self) -> Option<Instant>;

    /// The shell was stopped: release what the driver owns (its store, say), which handles to
    /// the stopped shell would otherwise keep for as long as they live.
    fn stop(&mut self) {}
}

/// The shell is gone: its node is stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the service has stopped: its node is shutting down")]
pub struct Stopped;

/// The actor's messages (local only: ractor's blanket `Message` impl covers them, as its
/// `cluster` feature, which would demand an explicit one, is off since the transport dropped
/// ractor_cluster).
pub enum ShellMsg {
    /// Inputs were queued with [`Shell::cast`].
    Inbox,
    /// The membership view changed.
    View(Arc<View>),
    /// The deadline passed.
    Tick,
}

/// Steps longer than this are reported.
const SLOW_STEP: Duration = Duration::from_millis(100);

/// Inputs queued for the actor; the actor is woken once per burst.
type Inbox<I> = Arc<Mutex<Vec<I>>>;

struct Stepper<D> {
    driven: D,
    deadline: watch::Sender<Option<Instant>>,
}

impl<D: Driven> Stepper<D> {
    fn settle(&mut self, now: Instant) {
        self.driven.flush(now);
        let next = self.driven.deadline();
        // `send_replace` wakes the timer even if the deadline did not move: after a tick it
        // waits for exactly that.
        self.deadline.send_replace(next);
    }
}

/// A running shell. Cheap to clone.
pub struct Shell<D: Driven> {
    actor: ActorRef<ShellMsg>,
    state: Arc<Mutex<Stepper<D>>>,
    inbox: Inbox<D::Input>,
}

impl<D: Driven> Clone for Shell<D> {
    fn clone(&self) -> Self {
        Shell {
            actor: self.actor.clone(),
            state: self.state.clone(),
            inbox: self.inbox.clone(),
        }
    }
}

struct ShellActor<D>(std::marker::PhantomData<fn() -> D>);

impl<D: Driven> Shell<D> {
    /// Starts the actor around `driven`, feeding it `views` until the view's sender is gone.
    ///
    /// # Errors
    /// ractor's reason if the actor could not start.
    pub async fn spawn(
        driven: D,
        views: watch::Receiver<Arc<View>>,
    ) -> Result<Shell<D>, ractor::SpawnErr> {
        let (deadline, wake) = watch::channel(None);
        let state = Arc::new(Mutex::new(Stepper { driven, deadline }));
        let inbox: Inbox<D::Input> = Arc::default();
        let (actor, _) = Actor::spawn(
            None,
            ShellActor::<D>(std::marker::PhantomData),
            (state.clone(), inbox.clone(), wake, views),
        )
        .await?;
        Ok(Shell {
            actor,
            state,
            inbox,
        })
    }

    fn stopped(&self) -> bool {
        stopped(&self.actor)
    }

    /// Steps `input` now, in the caller's task.
    ///
    /// # Errors
    /// [`Stopped`] once the shell stopped: the input was not handed to the core.
    pub fn send(&self, input: D::Input) -> Result<(), Stopped> {
        if self.stopped() {
            return Err(Stopped);
        }
        let now = Instant::now();
        let mut state = lock(&self.state);
        let _loud = Loud;
        state.driven.input(now, input);
        state.settle(now);
        Ok(())
    }

    /// Queues `input` for the actor, which steps every input queued when it wakes.
    ///
    /// # Errors
    /// [`Stopped`] once the shell stopped.
    pub fn cast(&self, input: D::Input) -> Result<(), Stopped> {
        if self.stopped() {
            return Err(Stopped);
        }
        queue(&self.actor, &self.inbox, input)
    }

    /// A handle that only queues inputs: for the driver itself to keep (to hand its core what
    /// its tasks produce). A driver keeping its [`Shell`] would keep itself alive, and what it
    /// owns (its store on disk, say) open, after the shell stopped.
    pub fn caster(&self) -> Caster<D::Input> {
        Caster {
            actor: self.actor.clone(),
            inbox: self.inbox.clone(),
        }
    }

    /// Reads the driver.
    pub fn with<R>(&self, read: impl FnOnce(&D) -> R) -> R {
        read(&lock(&self.state).driven)
    }

    /// Changes the driver outside of a step (to hand it its own shell, say).
    pub fn with_mut<R>(&self, change: impl FnOnce(&mut D) -> R) -> R {
        change(&mut lock(&self.state).driven)
    }

    /// Stops the actor, and tells the driver ([`Driven::stop`]); later inputs fail with
    /// [`Stopped`].
    pub fn stop(&self) {
        self.actor.stop(None);
        lock(&self.state).driven.stop();
    }
}

/// Queues `input` in `inbox`, waking `actor` for the first of a burst.
fn queue<I>(actor: &ActorRef<ShellMsg>, inbox: &Inbox<I>, input: I) -> Result<(), Stopped> {
    let first = {
        let mut inbox = inbox.lock().unwrap_or_else(|e| e.into_inner());
        inbox.push(input);
        inbox.len() == 1
    };
    // One wake per burst: the actor takes the whole inbox.
    if first {
        actor.cast(ShellMsg::Inbox).map_err(|_| Stopped)?;
    }
    Ok(())
}

/// Queues inputs for a shell's actor ([`Shell::caster`]); holds neither the driver nor the
/// actor's state. Cheap to clone.
pub struct Caster<I> {
    actor: ActorRef<ShellMsg>,
    inbox: Inbox<I>,
}

impl<I> Clone for Caster<I> {
    fn clone(&self) -> Self {
        Caster {
            actor: self.actor.clone(),
            inbox: self.inbox.clone(),
        }
    }
}

impl<I: Send + 'static> Caster<I> {
    /// As [`Shell::cast`].
    ///
    /// # Errors
    /// [`Stopped`] once the shell stopped.
    pub fn cast(&self, input: I) -> Result<(), Stopped> {
        if stopped(&self.actor) {
            return Err(Stopped);
        }
        queue(&self.actor, &self.inbox, input)
    }
}

fn stopped(actor: &ActorRef<ShellMsg>) -> bool {
    // Not "is it running": ractor marks an actor running only after `spawn` returned, and an
    // input stepped in that gap is as good as any (the driver was built before).
    use ractor::ActorStatus::{Draining, Stopped as Dead, Stopping};
    matches!(actor.get_status(), Draining | Stopping | Dead)
}

/// Logs an error when dropped during a panic.
struct Loud;

impl Drop for Loud {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!("a core panicked in its actor shell: the service it drives stops");
        }
    }
}

fn lock<D>(state: &Mutex<Stepper<D>>) -> MutexGuard<'_, Stepper<D>> {
    // A panic in a core is a bug; the state it left is still the best there is.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

type Args<D> = (
    Arc<Mutex<Stepper<D>>>,
    Inbox<<D as Driven>::Input>,
    watch::Receiver<Option<Instant>>,
    watch::Receiver<Arc<View>>,
);

impl<D: Driven> Actor for ShellActor<D> {
    type Msg = ShellMsg;
    type State = (Arc<Mutex<Stepper<D>>>, Inbox<D::Input>);
    type Arguments = Args<D>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (state, inbox, mut wake, mut views): Args<D>,
    ) -> Result<Self::State, ActorProcessingErr> {
        // One long-lived timer task, told the earliest deadline through a watch: cheaper than a
        // spawned timer each time the deadline moves.
        let me = myself.clone();
        tokio::spawn(async move {
            loop {
                let at = *wake.borrow_and_update();
                let fired = match at {
                    Some(at) => tokio::select! {
                        changed = wake.changed() => { if changed.is_err() { return } false }
                        () = tokio::time::sleep_until(at.into()) => true,
                    },
                    None => {
                        if wake.changed().await.is_err() {
                            return;
                        }
                        false
                    }
                };
                // After a tick, wait for the step to set the next deadline.
                if fired && (me.cast(ShellMsg::Tick).is_err() || wake.changed().await.is_err()) {
                    return;
                }
            }
        });
        let me = myself.clone();
        tokio::spawn(async move {
            loop {
                let view = views.borrow_and_update().clone();
                if me.cast(ShellMsg::View(view)).is_err() {
                    return;
                }
                if views.changed().await.is_err() {
                    me.stop(None);
                    return;
                }
            }
        });
        {
            let now = Instant::now();
            let mut s = lock(&state);
            s.settle(now);
        }
        Ok((state, inbox))
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        message: Self::Msg,
        (state, inbox): &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let now = Instant::now();
        let mut s = lock(state);
        // A core that panics is a bug; say so loudly before the actor dies with it.
        let _loud = Loud;
        match message {
            ShellMsg::Inbox => {
                let inputs = std::mem::take(&mut *inbox.lock().unwrap_or_else(|e| e.into_inner()));
                for input in inputs {
                    s.driven.input(now, input);
                }
            }
            ShellMsg::View(view) => s.driven.view(now, &view),
            ShellMsg::Tick => s.driven.timeout(now),
        }
        s.settle(now);
        // A step holds a runtime thread: a long one delays every task sharing it, membership's
        // probes among them, which then suspect live peers.
        let took = now.elapsed();
        if took > SLOW_STEP {
            tracing::warn!(
                core = std::any::type_name::<D>(),
                took_ms = took.as_millis() as u64,
                "a core took long to step"
            );
        }
        Ok(())
    }
}
