//! A shard's budget for request bytes held in memory (`queued.max.request.bytes`), shared by all
//! its connections, charged as a frame's bytes arrive rather than for the size it announces.
//!
//! Charging the announced size up front let one connection that announced 100 MiB and sent
//! nothing hold the whole budget, so every other connection of the shard waited. Charged per
//! chunk read, a connection holds only what it was actually sent (plus the chunk it is reading).
//!
//! Charging as bytes arrive could deadlock: connections each holding part of a frame, the budget
//! spent among them, each waiting for room that only a finished (answered) frame gives back.
//! So one frame at a time may go over the budget: when a chunk does not fit, the first connection
//! to find the overdraft free takes it and reads the rest of its frame without waiting; it keeps
//! the overdraft until that request is answered and its bytes are released. Some frame can
//! therefore always finish, and the shard holds at most the budget plus one frame
//! (`socket.request.max.bytes`). A connection that takes the overdraft and then stalls holds it
//! only until `sluice.request.receive.timeout.ms` closes it.
//!
//! A request that only waits gives its bytes back before its answer: an acks=all produce to
//! replicated partitions, once its records are appended (`FrameCharge::until_signalled`). Its
//! answer waits for the followers' fetches, which need room to be read; had it kept its charge,
//! enough such produces would spend the budget and wait forever for fetches the shard no longer
//! reads. Kafka's request memory pool is likewise given back when a handler parks a produce.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

use futures::channel::oneshot;

/// The budget of one shard.
pub struct RequestMemory {
    budget_bytes: u64,
    /// The largest frame: how far the overdraft may take `used_bytes` past the budget.
    frame_max_bytes: u64,
    used_bytes: Cell<u64>,
    overdraft_taken: Cell<bool>,
    /// Connections waiting for room, woken (all of them) whenever bytes or the overdraft are
    /// given back. Waiting happens only while the budget is spent and another frame holds the
    /// overdraft; each woken connection checks again and, finding no room, waits again.
    waiting: RefCell<Vec<Waker>>,
}

/// The bytes one frame holds, given back when dropped (once its request is answered).
pub struct FrameCharge {
    memory: Rc<RequestMemory>,
    bytes: u64,
    overdraft: bool,
}

impl RequestMemory {
    pub fn new(budget_bytes: u64, frame_max_bytes: u64) -> RequestMemory {
        RequestMemory {
            budget_bytes,
            frame_max_bytes,
            used_bytes: Cell::new(0),
            overdraft_taken: Cell::new(false),
            waiting: RefCell::new(Vec::new()),
        }
    }

    /// A charge for a new frame, holding nothing yet.
    pub fn frame(self: &Rc<Self>) -> FrameCharge {
        FrameCharge {
            memory: self.clone(),
            bytes: 0,
            overdraft: false,
        }
    }

    pub fn used_bytes(&self) -> u64 {
        self.used_bytes.get()
    }

    fn give_back(&self, bytes: u64, overdraft: bool) {
        self.used_bytes.set(self.used_bytes.get() - bytes);
        if overdraft {
            debug_assert!(self.overdraft_taken.get());
            self.overdraft_taken.set(false);
        }
        for waker in self.waiting.borrow_mut().drain(..) {
            waker.wake();
        }
    }
}

impl FrameCharge {
    /// Adds `bytes` more of this frame, waiting while the budget is spent and another frame
    /// holds the overdraft.
    pub async fn add(&mut self, bytes: u64) {
        let memory = self.memory.clone();
        poll_fn(|cx| {
            let used = memory.used_bytes.get();
            if self.overdraft || used + bytes <= memory.budget_bytes {
                self.take(bytes);
                return Poll::Ready(());
            }
            if !memory.overdraft_taken.get() {
                memory.overdraft_taken.set(true);
                self.overdraft = true;
                self.take(bytes);
                return Poll::Ready(());
            }
            memory.waiting.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    fn take(&mut self, bytes: u64) {
        let memory = &self.memory;
        self.bytes += bytes;
        memory.used_bytes.set(memory.used_bytes.get() + bytes);
        assert!(
            self.bytes <= memory.frame_max_bytes,
            "a frame is charged at most its size"
        );
        debug_assert!(memory.used_bytes.get() <= memory.budget_bytes + memory.frame_max_bytes);
    }
}

/// A frame's charge held until every signal it handed out has fired (or been dropped).
pub struct SignalledRelease {
    charge: RefCell<Option<FrameCharge>>,
    signals_left: Cell<usize>,
}

impl FrameCharge {
    /// Holds this charge until every signal made by `SignalledRelease::signal` has fired.
    /// Signals are made before the first await that could fire one: the charge goes back when
    /// the count returns to zero, so one made after that would find it given back already.
    pub fn until_signalled(self) -> Rc<SignalledRelease> {
        Rc::new(SignalledRelease {
            charge: RefCell::new(Some(self)),
            signals_left: Cell::new(0),
        })
    }
}

impl SignalledRelease {
    /// A signal to fire (send, or drop) once what it stands for no longer needs the bytes. It
    /// may be fired on another shard.
    pub fn signal(self: &Rc<Self>) -> oneshot::Sender<()> {
        self.signals_left.set(self.signals_left.get() + 1);
        let (fire, fired) = oneshot::channel();
        let release = self.clone();
        glommio::spawn_local(async move {
            let _ = fired.await;
            release.one_fired();
        })
        .detach();
        fire
    }

    fn one_fired(&self) {
        let left = self.signals_left.get();
        assert!(left > 0, "a signal fires once");
        self.signals_left.set(left - 1);
        if left == 1 {
            self.charge.borrow_mut().take();
        }
    }
}

impl Drop for FrameCharge {
    fn drop(&mut self) {
        if self.bytes > 0 || self.overdraft {
            self.memory.give_back(self.bytes, self.overdraft);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[test]
    fn bytes_are_charged_as_added_and_given_back_on_drop() {
        let memory = Rc::new(RequestMemory::new(100, 60));
        let mut a = memory.frame();
        a.add(40).now_or_never().unwrap();
        a.add(20).now_or_never().unwrap();
        assert_eq!(memory.used_bytes(), 60);
        drop(a);
        assert_eq!(memory.used_bytes(), 0);
    }

    #[test]
    fn one_frame_may_finish_past_the_budget_and_the_next_waits_for_it() {
        let memory = Rc::new(RequestMemory::new(100, 60));
        let mut a = memory.frame();
        let mut b = memory.frame();
        let mut c = memory.frame();
        a.add(50).now_or_never().unwrap();
        b.add(50).now_or_never().unwrap();
        // The budget is spent by two half-read frames: one of them may still finish.
        b.add(10).now_or_never().expect("b takes the overdraft");
        assert_eq!(memory.used_bytes(), 110);
        assert!(a.add(10).now_or_never().is_none(), "a waits");
        assert!(c.add(1).now_or_never().is_none(), "c waits");
        drop(b);
        a.add(10)
            .now_or_never()
            .expect("room again once b is answered");
        c.add(1).now_or_never().expect("and for c");
        assert_eq!(memory.used_bytes(), 61);
    }

    #[test]
    fn a_charge_held_for_signals_goes_back_when_the_last_fires() {
        let used = glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let memory = Rc::new(RequestMemory::new(100, 100));
                let mut frame = memory.frame();
                frame.add(80).await;
                let release = frame.until_signalled();
                let (first, second) = (release.signal(), release.signal());
                drop(release);
                let mut used = vec![memory.used_bytes()];
                first.send(()).unwrap();
                glommio::yield_if_needed().await;
                glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
                used.push(memory.used_bytes());
                drop(second);
                glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
                used.push(memory.used_bytes());
                used
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(used, [80, 80, 0], "a dropped signal counts as fired");
    }

    #[test]
    fn a_waiting_frame_is_woken_when_bytes_come_back() {
        let (woken, memory) = glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let memory = Rc::new(RequestMemory::new(100, 100));
                let mut held = memory.frame();
                held.add(100).await;
                let mut overdraft = memory.frame();
                overdraft.add(100).await;
                let waiter = glommio::spawn_local({
                    let memory = memory.clone();
                    async move {
                        let mut frame = memory.frame();
                        frame.add(30).await;
                        frame.bytes
                    }
                });
                glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
                drop(held);
                drop(overdraft);
                (waiter.await, memory.used_bytes())
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!((woken, memory), (30, 0));
    }
}
