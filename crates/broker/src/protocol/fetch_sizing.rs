//! Fetch sizing (KIP-74), as Kafka's ReplicaManager and log segments apply it: the whole answer
//! holds at most the request's `max_bytes` and each partition at most its `partition_max_bytes`,
//! filled in request order; the one exception is the first record batch of the first partition
//! that returns records, which goes out whole even when it is larger than both, so a consumer can
//! always make progress.
//!
//! A partition read is limited by min(`partition_max_bytes`, bytes left of `max_bytes`) and cut
//! at that many bytes, which may end inside a batch (clients drop a trailing partial batch). A
//! read whose limit cannot hold its first batch returns nothing (once the exception is spent).
//!
//! Pure arithmetic: the handler and the shards' reads share it. The shards read ahead in
//! parallel, each as if its partitions were the whole request; the handler then settles every
//! partition in request order with the bytes really left, keeping a prefix of what was read, or
//! asking for a read again in the rare case the guess read less than the exact limit allows.

use crate::limits;

/// What is left of a fetch answer's byte budget while partitions are filled in request order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Bytes of `max_bytes` not yet taken by earlier partitions.
    left: usize,
    /// No earlier partition returned records: the next read returns its first batch whole.
    first_batch_exception: bool,
}

/// The limit one partition read works under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimit {
    pub max_bytes: usize,
    /// The first batch goes out whole even when it is larger than `max_bytes`.
    pub min_one_batch: bool,
}

/// The sizes a partition read was cut from: the first batch's size and the bytes readable from
/// its start (to the end of its segment), and how many bytes the read took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadSpan {
    pub first_batch_bytes: usize,
    pub available_bytes: usize,
    pub read_bytes: usize,
}

/// How much of a read made ahead of time the exact answer keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// The answer is the first this-many bytes of what was read.
    Keep(usize),
    /// The read took less than the exact limit allows while more was available: read again.
    ReadAgain,
}

impl Budget {
    /// The budget of a whole answer: the request's `max_bytes`, capped by
    /// `FETCH_RESPONSE_MAX_BYTES` (Kafka's broker-side `fetch.max.bytes`).
    pub fn new(request_max_bytes: i32) -> Budget {
        Budget {
            left: clamp_bytes(request_max_bytes).min(limits::FETCH_RESPONSE_MAX_BYTES),
            first_batch_exception: true,
        }
    }

    /// The limit of the next partition read: its own limit, or what is left if less.
    pub fn limit(&self, partition_max_bytes: usize) -> ReadLimit {
        ReadLimit {
            max_bytes: partition_max_bytes.min(self.left),
            min_one_batch: self.first_batch_exception,
        }
    }

    /// Takes a partition's records out of the budget. Once a partition has returned records,
    /// the first-batch exception is spent.
    pub fn take(&mut self, record_bytes: usize) {
        if record_bytes > 0 {
            self.first_batch_exception = false;
        }
        self.left = self.left.saturating_sub(record_bytes);
    }
}

/// A request's `partition_max_bytes`, as a byte count (negative counts as 0).
pub fn partition_max_bytes(requested: i32) -> usize {
    clamp_bytes(requested).min(limits::FETCH_RESPONSE_MAX_BYTES)
}

/// The `min_bytes` a fetch waits for: never more than the answer may hold (Kafka caps it by the
/// fetch's max bytes, so a larger `min_bytes` cannot turn every fetch into a full wait).
pub fn min_bytes(requested_min_bytes: i32, budget: &Budget) -> usize {
    clamp_bytes(requested_min_bytes).min(budget.left)
}

fn clamp_bytes(requested: i32) -> usize {
    requested.max(0) as usize
}

/// The bytes a read under `limit` returns from a position whose first batch is
/// `first_batch_bytes` long with `available_bytes` readable: up to the limit (the first batch
/// whole when the exception applies), possibly ending inside a batch, and nothing when the limit
/// cannot hold the first batch.
pub fn read_len(limit: ReadLimit, first_batch_bytes: usize, available_bytes: usize) -> usize {
    debug_assert!(first_batch_bytes <= available_bytes);
    let max = if limit.min_one_batch {
        limit.max_bytes.max(first_batch_bytes)
    } else {
        limit.max_bytes
    };
    if max == 0 || max < first_batch_bytes {
        return 0;
    }
    max.min(available_bytes)
}

/// What the exact answer under `limit` keeps of a read made ahead under a guessed limit, whose
/// records (after any cut at the last stable offset) are `records_len` bytes.
pub fn settle(limit: ReadLimit, span: &ReadSpan, records_len: usize) -> Settled {
    debug_assert!(records_len <= span.read_bytes);
    let exact = read_len(limit, span.first_batch_bytes, span.available_bytes);
    if exact <= span.read_bytes {
        Settled::Keep(exact.min(records_len))
    } else {
        Settled::ReadAgain
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KB: usize = 1000;

    fn limit(max_bytes: usize, min_one_batch: bool) -> ReadLimit {
        ReadLimit {
            max_bytes,
            min_one_batch,
        }
    }

    #[test]
    fn partition_limit_above_the_total_is_cut_to_the_total() {
        // The reported case: partition limit 20 MB, answer limit 1 MB, batches of 900 KB.
        let mut budget = Budget::new(1_000_000);
        let first = budget.limit(20_000_000);
        assert_eq!(first, limit(1_000_000, true));
        let len = read_len(first, 900 * KB, 20 * 900 * KB);
        assert_eq!(len, 1_000_000, "cut at the total, inside the second batch");
        budget.take(len);
        let second = budget.limit(20_000_000);
        assert_eq!(second, limit(0, false));
        assert_eq!(read_len(second, 900 * KB, 20 * 900 * KB), 0);
    }

    #[test]
    fn first_batch_larger_than_both_limits_goes_out_whole() {
        let budget = Budget::new(1000);
        let len = read_len(budget.limit(500), 5000, 9000);
        assert_eq!(len, 5000);
    }

    #[test]
    fn first_batch_exception_holds_only_until_a_partition_returns_records() {
        let mut budget = Budget::new(10_000);
        // Empty partitions do not spend the exception.
        budget.take(0);
        assert!(budget.limit(100).min_one_batch);
        budget.take(100);
        let next = budget.limit(1000);
        assert_eq!(next, limit(1000, false));
        // A later partition whose first batch does not fit returns nothing, not a partial batch.
        assert_eq!(read_len(next, 1500, 3000), 0);
        // One that fits is cut at the limit, inside a later batch.
        assert_eq!(read_len(next, 600, 3000), 1000);
    }

    #[test]
    fn reads_stop_at_what_is_available() {
        let budget = Budget::new(1_000_000);
        assert_eq!(read_len(budget.limit(1_000_000), 100, 350), 350);
        assert_eq!(read_len(limit(0, true), 100, 350), 100);
        assert_eq!(read_len(limit(0, false), 100, 350), 0);
    }

    #[test]
    fn the_budget_never_goes_below_zero() {
        let mut budget = Budget::new(1000);
        budget.take(5000);
        assert_eq!(budget.limit(1000), limit(0, false));
    }

    #[test]
    fn negative_and_huge_requests_are_bounded() {
        assert_eq!(Budget::new(-1).limit(100), limit(0, true));
        assert_eq!(
            Budget::new(i32::MAX).limit(usize::MAX).max_bytes,
            limits::FETCH_RESPONSE_MAX_BYTES
        );
        assert_eq!(partition_max_bytes(-5), 0);
        assert_eq!(
            partition_max_bytes(i32::MAX),
            limits::FETCH_RESPONSE_MAX_BYTES
        );
    }

    #[test]
    fn min_bytes_is_capped_by_the_answer_limit() {
        let budget = Budget::new(1000);
        assert_eq!(min_bytes(5000, &budget), 1000);
        assert_eq!(min_bytes(1, &budget), 1);
        assert_eq!(min_bytes(-3, &budget), 0);
    }

    #[test]
    fn settling_keeps_a_prefix_of_a_larger_read() {
        // Read ahead as if first (exception open, whole budget): 1 MB of 5 MB.
        let span = ReadSpan {
            first_batch_bytes: 900 * KB,
            available_bytes: 5_000_000,
            read_bytes: 1_000_000,
        };
        // Another partition took 400 KB first: 600 KB left, the first batch no longer fits.
        assert_eq!(
            settle(limit(600 * KB, false), &span, 1_000_000),
            Settled::Keep(0)
        );
        // Nothing before it: the read stands.
        assert_eq!(
            settle(limit(1_000_000, true), &span, 1_000_000),
            Settled::Keep(1_000_000)
        );
    }

    #[test]
    fn settling_a_complete_read_never_reads_again() {
        let span = ReadSpan {
            first_batch_bytes: 100,
            available_bytes: 300,
            read_bytes: 300,
        };
        assert_eq!(settle(limit(10_000, false), &span, 300), Settled::Keep(300));
        // Records cut at the last stable offset keep no more than the cut.
        assert_eq!(settle(limit(10_000, false), &span, 200), Settled::Keep(200));
        assert_eq!(settle(limit(250, false), &span, 200), Settled::Keep(200));
    }

    #[test]
    fn settling_a_short_read_reads_again() {
        // Read ahead under a smaller limit than the exact one turned out to be.
        let span = ReadSpan {
            first_batch_bytes: 100,
            available_bytes: 5000,
            read_bytes: 0,
        };
        assert_eq!(settle(limit(1000, false), &span, 0), Settled::ReadAgain);
        assert_eq!(settle(limit(50, false), &span, 0), Settled::Keep(0));
    }

    #[test]
    fn many_partitions_with_small_limits_fill_in_request_order() {
        let mut budget = Budget::new(1000);
        let mut got = Vec::new();
        for _ in 0..6 {
            let len = read_len(budget.limit(300), 100, 10_000);
            budget.take(len);
            got.push(len);
        }
        assert_eq!(got, vec![300, 300, 300, 100, 0, 0]);
    }
}
