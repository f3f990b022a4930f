//! Reused buffers for large request frames. One pool per shard (a shard is one thread), used by
//! every connection the shard accepted.
//!
//! A produce request is about a megabyte. Allocating its buffer afresh means zeroing it (a
//! socket read needs initialized bytes) and, since the allocator hands memory that large back to
//! the kernel when it is freed, faulting every page in again: together about a tenth of the
//! broker's CPU under P1 (`perf record` in docs/performance.md). A buffer from the pool was
//! zeroed once and its pages are already mapped.
//!
//! A frame is lent out as a slice of the whole buffer. The connection keeps a handle on the whole
//! buffer and gives it back once the request is answered. If anything still holds part of the
//! frame then (the batches of a produce with acks=0 wait in their logs' pending writes until the
//! next flush), the pool keeps the handle and reuses the buffer only once the last holder has let
//! go, so reuse can never alias live bytes.

use std::cell::RefCell;

use bytes::{Bytes, BytesMut};

use crate::limits::{
    CONNECTION_FRAME_AHEAD_MAX_BYTES, FRAME_BUFFER_INITIAL_BYTES, FRAME_POOL_BUFFERS_MAX,
    FRAME_POOL_BUFFER_MAX_BYTES, FRAME_POOL_FRAME_MIN_BYTES, FRAME_POOL_ROUNDING_BYTES,
};

thread_local! {
    static POOL: FramePool = FramePool::default();
}

/// A request frame being read: `buffer[..filled]` holds the frame's bytes received so far.
///
/// The buffer is sized by the bytes that arrive, not by the size the frame announces: it starts
/// from a pooled buffer (memory the shard holds already) or small, and doubles as it fills, at
/// most `CONNECTION_FRAME_AHEAD_MAX_BYTES` past what was received. A connection that announces
/// 100 MiB and sends nothing holds a few KiB.
pub struct FrameBuffer {
    buffer: BytesMut,
    len: usize,
    filled: usize,
}

impl FrameBuffer {
    /// A buffer for a frame of `len` bytes: a free pooled buffer when one fits, else one that
    /// grows as the bytes arrive.
    pub fn take(len: usize) -> FrameBuffer {
        let pooled = poolable(len)
            .then(|| POOL.with(|pool| pool.take_free(len)))
            .flatten();
        let buffer = pooled.unwrap_or_default();
        debug_assert!(buffer.is_empty() || buffer.len() >= len);
        FrameBuffer {
            buffer,
            len,
            filled: 0,
        }
    }

    pub fn is_full(&self) -> bool {
        self.filled == self.len
    }

    /// Where the frame's next bytes go (never empty until the frame is full), grown first when
    /// the buffer is full.
    pub fn unfilled(&mut self) -> &mut [u8] {
        debug_assert!(!self.is_full());
        if self.filled == self.buffer.len() {
            self.grow();
        }
        let end = self.buffer.len().min(self.len);
        &mut self.buffer[self.filled..end]
    }

    /// Counts `bytes` more as received (written into [`FrameBuffer::unfilled`]).
    pub fn advance(&mut self, bytes: usize) {
        self.filled += bytes;
        assert!(self.filled <= self.len.min(self.buffer.len()));
    }

    /// Doubles the buffer, within the frame's size and `CONNECTION_FRAME_AHEAD_MAX_BYTES` of
    /// what was received. A frame the pool could take is rounded up as the pool's own buffers
    /// are, so that it can join the pool once answered.
    fn grow(&mut self) {
        let whole = if poolable(self.len) {
            self.len.next_multiple_of(FRAME_POOL_ROUNDING_BYTES)
        } else {
            self.len
        };
        let doubled = (self.buffer.len() * 2).max(FRAME_BUFFER_INITIAL_BYTES);
        let grown = doubled
            .min(self.filled + CONNECTION_FRAME_AHEAD_MAX_BYTES)
            .min(whole);
        assert!(
            grown > self.buffer.len(),
            "a frame that is not full can grow"
        );
        self.buffer.resize(grown, 0);
    }

    /// The frame, and the handle that returns its buffer to the pool (see [`Lent::give_back`]).
    pub fn freeze(self) -> (Bytes, Lent) {
        assert!(self.is_full(), "only a whole frame is handed out");
        let whole = self.buffer.freeze();
        let frame = whole.slice(..self.len);
        (frame, Lent(whole))
    }
}

/// Whether a frame of `len` bytes is read into a buffer the pool keeps.
fn poolable(len: usize) -> bool {
    (FRAME_POOL_FRAME_MIN_BYTES..=FRAME_POOL_BUFFER_MAX_BYTES).contains(&len)
}

/// The whole buffer behind a frame that was handed out.
pub struct Lent(Bytes);

impl Lent {
    /// Returns the buffer to this shard's pool: free now if nothing else holds any of it, else
    /// once nothing does.
    pub fn give_back(self) {
        if self.0.len() < FRAME_POOL_FRAME_MIN_BYTES || self.0.len() > FRAME_POOL_BUFFER_MAX_BYTES {
            return;
        }
        match self.0.try_into_mut() {
            Ok(buffer) => POOL.with(|pool| pool.put(buffer)),
            Err(still_held) => POOL.with(|pool| pool.hold(still_held)),
        }
    }
}

/// Free buffers, each fully initialized (`len` is the whole allocation in use), and buffers given
/// back while still partly held. Together at most `FRAME_POOL_BUFFERS_MAX`.
#[derive(Default)]
struct FramePool {
    free: RefCell<Vec<BytesMut>>,
    held: RefCell<Vec<Bytes>>,
}

impl FramePool {
    /// The smallest free buffer of at least `len` bytes, if any.
    fn take_free(&self, len: usize) -> Option<BytesMut> {
        self.reclaim();
        let mut free = self.free.borrow_mut();
        let best = free
            .iter()
            .enumerate()
            .filter(|(_, b)| b.len() >= len)
            .min_by_key(|(_, b)| b.len())
            .map(|(i, _)| i);
        best.map(|i| free.swap_remove(i))
    }

    /// Keeps a buffer given back while something still holds part of it, if there is room.
    fn hold(&self, whole: Bytes) {
        let kept = self.free.borrow().len() + self.held.borrow().len();
        if kept < FRAME_POOL_BUFFERS_MAX {
            self.held.borrow_mut().push(whole);
        }
    }

    /// Moves the held buffers that nothing else holds any more to the free ones.
    fn reclaim(&self) {
        let held = std::mem::take(&mut *self.held.borrow_mut());
        for whole in held {
            match whole.try_into_mut() {
                Ok(buffer) => self.put(buffer),
                Err(still_held) => self.held.borrow_mut().push(still_held),
            }
        }
    }

    /// Keeps `buffer` unless it is too large to keep or the pool is full; a full pool swaps out
    /// its smallest buffer for a larger one, since large frames gain the most from reuse.
    fn put(&self, buffer: BytesMut) {
        if buffer.len() > FRAME_POOL_BUFFER_MAX_BYTES {
            return;
        }
        let mut free = self.free.borrow_mut();
        if free.len() < FRAME_POOL_BUFFERS_MAX {
            free.push(buffer);
            return;
        }
        if let Some((i, _)) = free
            .iter()
            .enumerate()
            .min_by_key(|(_, b)| b.len())
            .filter(|(_, smallest)| smallest.len() < buffer.len())
        {
            free[i] = buffer;
        }
    }

    #[cfg(test)]
    fn free_lens(&self) -> Vec<usize> {
        let mut lens: Vec<usize> = self.free.borrow().iter().map(BytesMut::len).collect();
        lens.sort_unstable();
        lens
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIG: usize = FRAME_POOL_FRAME_MIN_BYTES * 3;

    fn free_lens() -> Vec<usize> {
        POOL.with(FramePool::free_lens)
    }

    fn lend(len: usize, fill: u8) -> (Bytes, Lent) {
        let mut buffer = FrameBuffer::take(len);
        while !buffer.is_full() {
            let unfilled = buffer.unfilled();
            unfilled.fill(fill);
            let n = unfilled.len();
            buffer.advance(n);
        }
        buffer.freeze()
    }

    #[test]
    fn a_returned_buffer_is_reused_for_the_next_frame_that_fits() {
        let (frame, lent) = lend(BIG, 7);
        assert_eq!(frame.len(), BIG);
        assert!(frame.iter().all(|b| *b == 7));
        let address = frame.as_ptr();
        drop(frame);
        lent.give_back();
        assert_eq!(
            free_lens(),
            vec![BIG.next_multiple_of(FRAME_POOL_ROUNDING_BYTES)]
        );

        let (again, lent) = lend(BIG - 100, 9);
        assert_eq!(again.as_ptr(), address, "the pooled buffer was reused");
        assert_eq!(again.len(), BIG - 100);
        assert!(free_lens().is_empty());
        drop(again);
        lent.give_back();
    }

    #[test]
    fn a_buffer_still_referenced_is_reused_only_once_let_go() {
        let (frame, lent) = lend(BIG, 1);
        let batch = frame.slice(10..20);
        let address = frame.as_ptr();
        drop(frame);
        lent.give_back();
        assert!(free_lens().is_empty(), "a slice still reads the buffer");
        let (other, other_lent) = lend(BIG, 2);
        assert!(
            batch.iter().all(|b| *b == 1),
            "the held bytes are untouched"
        );
        assert_ne!(other.as_ptr(), address);
        drop(other);
        other_lent.give_back();

        // Free now: `other`'s buffer and, once the slice is dropped, the first one.
        drop(batch);
        let (first, first_lent) = lend(BIG, 3);
        let (second, second_lent) = lend(BIG, 4);
        let addresses = [first.as_ptr(), second.as_ptr()];
        assert!(addresses.contains(&address), "the buffer let go is reused");
        drop((first, second));
        first_lent.give_back();
        second_lent.give_back();
    }

    #[test]
    fn a_frame_buffer_grows_with_the_bytes_received_not_the_size_announced() {
        let len = 100 << 20;
        let mut buffer = FrameBuffer::take(len);
        assert_eq!(buffer.unfilled().len(), FRAME_BUFFER_INITIAL_BYTES);
        buffer.advance(10);
        assert_eq!(buffer.unfilled().len(), FRAME_BUFFER_INITIAL_BYTES - 10);
        let mut received = 10;
        while !buffer.is_full() {
            let n = buffer.unfilled().len();
            assert!(buffer.buffer.len() - received <= CONNECTION_FRAME_AHEAD_MAX_BYTES);
            buffer.advance(n);
            received += n;
        }
        assert_eq!(buffer.buffer.len(), len);
        let (frame, _lent) = buffer.freeze();
        assert_eq!(frame.len(), len);
    }

    #[test]
    fn small_and_huge_frames_are_not_pooled() {
        let (small, lent) = lend(FRAME_POOL_FRAME_MIN_BYTES - 1, 0);
        drop(small);
        lent.give_back();
        let (huge, lent) = lend(FRAME_POOL_BUFFER_MAX_BYTES + 1, 0);
        drop(huge);
        lent.give_back();
        assert!(free_lens().is_empty());
    }

    #[test]
    fn a_full_pool_keeps_its_largest_buffers() {
        let pool = FramePool::default();
        for i in 0..FRAME_POOL_BUFFERS_MAX {
            pool.put(BytesMut::zeroed(FRAME_POOL_ROUNDING_BYTES * (i + 1)));
        }
        pool.put(BytesMut::zeroed(FRAME_POOL_ROUNDING_BYTES / 2));
        assert_eq!(pool.free_lens()[0], FRAME_POOL_ROUNDING_BYTES);
        pool.put(BytesMut::zeroed(FRAME_POOL_BUFFER_MAX_BYTES));
        let lens = pool.free_lens();
        assert_eq!(lens.len(), FRAME_POOL_BUFFERS_MAX);
        assert_eq!(lens[0], FRAME_POOL_ROUNDING_BYTES * 2);
        assert_eq!(*lens.last().unwrap(), FRAME_POOL_BUFFER_MAX_BYTES);
        assert_eq!(
            pool.take_free(1).unwrap().len(),
            FRAME_POOL_ROUNDING_BYTES * 2,
            "best fit"
        );
    }
}
