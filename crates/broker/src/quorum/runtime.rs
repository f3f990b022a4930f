//! openraft's `AsyncRuntime` on glommio: the Raft core runs as tasks of the shard that hosts it,
//! with glommio's timers. Channels and the mutex come from `tokio::sync`, which needs no tokio
//! runtime (it only uses wakers), so they work under any executor.
//!
//! Time is the OS's monotonic clock (`std::time::Instant`); the deterministic simulator will swap
//! this runtime for one on virtual time.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use glommio::timer::Timer;
use openraft_rt::{
    mutex, oneshot, watch, AsyncRuntime, Mpsc, MpscReceiver, MpscSender, MpscWeakSender,
    OneshotSender, OptionalSend, OptionalSync, SendError, TryRecvError,
};

/// The runtime. Only `new`/`block_on` (openraft's test suites) use a value of it, which owns a
/// local executor; in the broker the Raft core's tasks run on the shard's own executor.
pub struct GlommioRuntime {
    executor: glommio::LocalExecutor,
}

impl fmt::Debug for GlommioRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GlommioRuntime")
    }
}

/// A spawned task ended without an output: glommio drops the tasks of an executor that stops.
#[derive(Debug)]
pub struct Cancelled;

impl fmt::Display for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("task cancelled")
    }
}

/// A deadline passed before the future finished.
#[derive(Debug)]
pub struct Elapsed;

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline elapsed")
    }
}

pub struct JoinHandle<T>(glommio::task::JoinHandle<T>);

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, Cancelled>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|out| out.ok_or(Cancelled))
    }
}

pub struct Sleep(Timer);

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

/// A future raced against a timer. The future is polled first, so one that is ready at the
/// deadline still wins. Boxed because openraft names this type for futures that are not `Unpin`;
/// the quorum's traffic is a few messages a second, so the allocation does not matter.
pub struct Timeout<T> {
    future: Pin<Box<T>>,
    timer: Timer,
}

impl<R, T: Future<Output = R>> Future for Timeout<T> {
    type Output = Result<R, Elapsed>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(out) = self.future.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        Pin::new(&mut self.timer).poll(cx).map(|_| Err(Elapsed))
    }
}

fn until(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

impl AsyncRuntime for GlommioRuntime {
    type JoinError = Cancelled;
    type JoinHandle<T: OptionalSend + 'static> = JoinHandle<T>;
    type Sleep = Sleep;
    type Instant = Instant;
    type TimeoutError = Elapsed;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = Timeout<T>;
    type ThreadLocalRng = rand::rngs::ThreadRng;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        JoinHandle(glommio::spawn_local(future).detach())
    }

    fn sleep(duration: Duration) -> Sleep {
        Sleep(Timer::new(duration))
    }

    fn sleep_until(deadline: Instant) -> Sleep {
        Sleep(Timer::new(until(deadline)))
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Timeout<F> {
        Timeout {
            future: Box::pin(future),
            timer: Timer::new(duration),
        }
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Instant,
        future: F,
    ) -> Timeout<F> {
        Self::timeout(until(deadline), future)
    }

    /// A panic in a glommio task unwinds the executor's thread, which stops the broker: no join
    /// handle ever reports one.
    fn is_panic(_: &Cancelled) -> bool {
        false
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        rand::rng()
    }

    type Mpsc = Channels;
    type Watch = Channels;
    type Oneshot = Channels;
    type Mutex<T: OptionalSend + 'static> = Mutex<T>;

    fn new(_threads: usize) -> Self {
        GlommioRuntime {
            executor: glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
                .make()
                .expect("a glommio executor for openraft's tests"),
        }
    }

    fn block_on<F, T>(&mut self, future: F) -> T
    where
        F: Future<Output = T>,
    {
        self.executor.run(future)
    }
}

/// The channel families openraft asks for (bounded mpsc, watch, oneshot), over `tokio::sync`.
pub struct Channels;

pub struct Sender<T>(tokio::sync::mpsc::Sender<T>);
pub struct Receiver<T>(tokio::sync::mpsc::Receiver<T>);
pub struct WeakSender<T>(tokio::sync::mpsc::WeakSender<T>);

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender(self.0.clone())
    }
}

impl<T> Clone for WeakSender<T> {
    fn clone(&self) -> Self {
        WeakSender(self.0.clone())
    }
}

impl Mpsc for Channels {
    type Sender<T: OptionalSend> = Sender<T>;
    type Receiver<T: OptionalSend> = Receiver<T>;
    type WeakSender<T: OptionalSend> = WeakSender<T>;

    fn channel<T: OptionalSend>(buffer: usize) -> (Sender<T>, Receiver<T>) {
        let (tx, rx) = tokio::sync::mpsc::channel(buffer);
        (Sender(tx), Receiver(rx))
    }
}

impl<T: OptionalSend> MpscSender<Channels, T> for Sender<T> {
    async fn send(&self, msg: T) -> Result<(), SendError<T>> {
        self.0
            .send(msg)
            .await
            .map_err(|refused| SendError(refused.0))
    }

    fn downgrade(&self) -> WeakSender<T> {
        WeakSender(self.0.downgrade())
    }
}

impl<T: OptionalSend> MpscReceiver<T> for Receiver<T> {
    async fn recv(&mut self) -> Option<T> {
        self.0.recv().await
    }

    fn try_recv(&mut self) -> Result<T, TryRecvError> {
        use tokio::sync::mpsc::error::TryRecvError as Tokio;
        self.0.try_recv().map_err(|err| match err {
            Tokio::Empty => TryRecvError::Empty,
            Tokio::Disconnected => TryRecvError::Disconnected,
        })
    }
}

impl<T: OptionalSend> MpscWeakSender<Channels, T> for WeakSender<T> {
    fn upgrade(&self) -> Option<Sender<T>> {
        self.0.upgrade().map(Sender)
    }
}

pub struct WatchSender<T>(tokio::sync::watch::Sender<T>);
pub struct WatchReceiver<T>(tokio::sync::watch::Receiver<T>);

impl<T> Clone for WatchSender<T> {
    fn clone(&self) -> Self {
        WatchSender(self.0.clone())
    }
}

impl<T> Clone for WatchReceiver<T> {
    fn clone(&self) -> Self {
        WatchReceiver(self.0.clone())
    }
}

impl watch::Watch for Channels {
    type Sender<T: OptionalSend + OptionalSync> = WatchSender<T>;
    type Receiver<T: OptionalSend + OptionalSync> = WatchReceiver<T>;
    type Ref<'a, T: OptionalSend + 'a> = tokio::sync::watch::Ref<'a, T>;

    fn channel<T: OptionalSend + OptionalSync>(init: T) -> (WatchSender<T>, WatchReceiver<T>) {
        let (tx, rx) = tokio::sync::watch::channel(init);
        (WatchSender(tx), WatchReceiver(rx))
    }
}

impl<T: OptionalSend + OptionalSync> watch::WatchSender<Channels, T> for WatchSender<T> {
    fn send(&self, value: T) -> Result<(), watch::SendError<T>> {
        self.0
            .send(value)
            .map_err(|refused| watch::SendError(refused.0))
    }

    fn send_if_modified<F: FnOnce(&mut T) -> bool>(&self, modify: F) -> bool {
        self.0.send_if_modified(modify)
    }

    fn borrow_watched(&self) -> tokio::sync::watch::Ref<'_, T> {
        self.0.borrow()
    }

    fn subscribe(&self) -> WatchReceiver<T> {
        WatchReceiver(self.0.subscribe())
    }
}

impl<T: OptionalSend + OptionalSync> watch::WatchReceiver<Channels, T> for WatchReceiver<T> {
    async fn changed(&mut self) -> Result<(), watch::RecvError> {
        self.0.changed().await.map_err(|_| watch::RecvError(()))
    }

    fn borrow_watched(&self) -> tokio::sync::watch::Ref<'_, T> {
        self.0.borrow()
    }

    fn borrow_and_update(&mut self) -> tokio::sync::watch::Ref<'_, T> {
        self.0.borrow_and_update()
    }
}

pub struct OneshotTx<T>(tokio::sync::oneshot::Sender<T>);

impl oneshot::Oneshot for Channels {
    type Sender<T: OptionalSend> = OneshotTx<T>;
    type Receiver<T: OptionalSend> = tokio::sync::oneshot::Receiver<T>;
    type ReceiverError = tokio::sync::oneshot::error::RecvError;

    fn channel<T: OptionalSend>() -> (OneshotTx<T>, tokio::sync::oneshot::Receiver<T>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (OneshotTx(tx), rx)
    }
}

impl<T: OptionalSend> OneshotSender<T> for OneshotTx<T> {
    fn send(self, value: T) -> Result<(), T> {
        self.0.send(value)
    }
}

pub struct Mutex<T>(tokio::sync::Mutex<T>);

impl<T: OptionalSend + 'static> mutex::Mutex<T> for Mutex<T> {
    type Guard<'a> = tokio::sync::MutexGuard<'a, T>;

    fn new(value: T) -> Self {
        Mutex(tokio::sync::Mutex::new(value))
    }

    async fn lock(&self) -> tokio::sync::MutexGuard<'_, T> {
        self.0.lock().await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn glommio_runtime_passes_openraft_runtime_suite() {
        openraft_rt::testing::Suite::<super::GlommioRuntime>::test_all();
    }
}
