//! The check of a sealed segment a start did not read: every batch's CRC, once, at the segment's
//! first read after the start, remembered for every later read. Recovery trusts sealed segments
//! after a clean stop (it reads none of them, so that a start with 100,000 segments is quick), but
//! a failing disk or a careless operator can damage one while the broker is down; reads must then
//! never serve a batch whose CRC fails, nor stall on a file cut short.
//!
//! What the check finds decides what reads get:
//! - a batch whose CRC (or structure) fails: reads stop before it, and a read at its offsets
//!   fails with `DamagedBatches` (the fetch answers CORRUPT_MESSAGE, as Kafka's broker does for
//!   a corrupt batch; clients surface it, and an operator moves the log start past it with
//!   DeleteRecords). Reads after it go on where the next batch starts.
//! - bytes from which no batch header makes sense (damage in a length or an offset): the same
//!   for every offset from there to the segment's end, since nothing there can be found.
//! - bytes the disk cannot read (a bad sector): the same, from the batch whose read failed;
//! - a file that ends inside a batch (cut short): trimmed to its last whole batch, as recovery
//!   trims the active segment; the offsets from there to the segment's end are lost, and reads
//!   of them go on in the next segment (as over a gap compaction leaves).
//!
//! Each finding is logged once, with file, position and offsets, counted in /metrics and listed
//! per partition (`DamagedRange`, which DescribeLogDirs reports). A background scrub (the shard's `scrub_loop`) runs the checks reads have not, at a bounded rate,
//! so that damage is found before a consumer reaches it.
//! Owned by the partition's shard, like the segment it belongs to.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::path::Path;
use std::rc::Rc;

use bytes::Bytes;
use futures::future::LocalBoxFuture;

use super::batch::{self, BatchHeader, HEADER_BYTES};
use super::segment;
use super::StorageFile;
use crate::limits;
use crate::metrics;
use crate::types::Offset;

/// A range of a segment that reads must not serve: its bytes and the offsets it held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Damage {
    pub position: u64,
    pub len: u64,
    pub first: Offset,
    /// The offset after the range: where DeleteRecords moves the log start to get past it.
    pub next: Offset,
}

/// What a check found in a segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// Where the readable batches end: the file's end, or where unreadable bytes start.
    pub end: u64,
    /// Damaged ranges in file order; an unreadable tail is the last one and starts at `end`.
    pub damaged: Vec<Damage>,
    /// Where a file cut short was trimmed, and the first offset lost with the trimmed bytes.
    pub trimmed: Option<(u64, Offset)>,
    /// How many bytes the trim removed (0 unless `trimmed`).
    pub trimmed_bytes: u64,
    /// Why the unreadable tail could not be read, when the disk said so.
    pub read_error: Option<String>,
}

impl Health {
    /// The damaged range starting at `position`, where a read found a batch.
    pub fn damage_at(&self, position: u64) -> Option<&Damage> {
        self.damaged.iter().find(|d| d.position == position)
    }

    /// Where the first damaged range after `position` starts (a read stops there).
    pub fn next_damage_after(&self, position: u64) -> Option<u64> {
        self.damaged
            .iter()
            .map(|d| d.position)
            .find(|&p| p > position)
    }

    /// The unreadable tail, when it holds `offset`.
    pub fn tail_holding(&self, offset: Offset) -> Option<&Damage> {
        self.damaged
            .last()
            .filter(|d| d.position == self.end && d.first <= offset && offset < d.next)
    }
}

/// What reads get for the offsets of a damaged range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DamageKind {
    /// Batches that fail their check in a sealed segment: fetches there answer CORRUPT_MESSAGE.
    Corrupt,
    /// A sealed segment cut short and trimmed: the offsets are gone, fetches skip them.
    Lost,
    /// An active segment truncated at a start after a clean stop: the offsets from `first` on
    /// were written again by later records, so how far the lost ones went is unknown.
    Truncated,
}

/// A damaged range of one partition, as an operator needs it: which file, where in it, and
/// which offsets readers cannot get (first..next; `next` is where DeleteRecords gets past it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DamagedRange {
    pub kind: DamageKind,
    /// The base offset of the segment holding the range (its file's name).
    pub segment: Offset,
    pub position: u64,
    pub bytes: u64,
    pub first: Offset,
    /// `None` for `Truncated`, whose end is unknown.
    pub next: Option<Offset>,
}

/// The error a read gets for offsets in a damaged range: the fetch answers CORRUPT_MESSAGE.
#[derive(Debug)]
pub struct DamagedBatches(pub Damage);

impl fmt::Display for DamagedBatches {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.0;
        write!(
            f,
            "offsets {}..{} fail their CRC check (position {}, {} bytes)",
            d.first, d.next, d.position, d.len
        )
    }
}

impl std::error::Error for DamagedBatches {}

/// Whether `err` says the read wanted damaged batches (see `DamagedBatches`).
pub fn is_damaged(err: &io::Error) -> bool {
    err.get_ref().is_some_and(|e| e.is::<DamagedBatches>())
}

pub fn damaged(damage: Damage) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, DamagedBatches(damage))
}

/// Called with the bytes each chunk of a check read, before the next read: the scrub sleeps
/// there to keep to its rate.
pub type Pace<'a> = dyn FnMut(usize) -> LocalBoxFuture<'static, ()> + 'a;

/// A sealed segment's check: run by its first read (or the scrub), shared by all later ones.
#[derive(Debug)]
pub struct SegmentCheck {
    base_offset: Offset,
    dir: Rc<Path>,
    /// The next segment's base: this segment's offsets end below it.
    bound: Offset,
    /// A batch longer than this is damage, not data.
    batch_max_bytes: u64,
    found: RefCell<Option<Rc<Health>>>,
    /// Held while a check runs, so that reads arriving meanwhile wait for it instead of
    /// reading the segment again.
    running: futures::lock::Mutex<()>,
    /// Set by a read that waits for the check: a scrub running it stops pacing itself, so the
    /// read waits for the disk, not for the scrub's rate.
    hurry: Cell<bool>,
}

impl SegmentCheck {
    pub fn new(base_offset: Offset, dir: Rc<Path>, bound: Offset, batch_max_bytes: u64) -> Self {
        assert!(bound > base_offset, "a sealed segment ends above its base");
        SegmentCheck {
            base_offset,
            dir,
            bound,
            batch_max_bytes,
            found: RefCell::new(None),
            running: futures::lock::Mutex::new(()),
            hurry: Cell::new(false),
        }
    }

    /// What the check found, once it ran.
    pub fn found(&self) -> Option<Rc<Health>> {
        self.found.borrow().clone()
    }

    /// The damaged ranges the check found, in file order (none before it ran).
    pub fn damaged(&self) -> Vec<DamagedRange> {
        let Some(health) = self.found() else {
            return Vec::new();
        };
        let corrupt = health.damaged.iter().map(|d| DamagedRange {
            kind: DamageKind::Corrupt,
            segment: self.base_offset,
            position: d.position,
            bytes: d.len,
            first: d.first,
            next: Some(d.next),
        });
        let lost = health.trimmed.map(|(at, first)| DamagedRange {
            kind: DamageKind::Lost,
            segment: self.base_offset,
            position: at,
            bytes: health.trimmed_bytes,
            first,
            next: Some(self.bound),
        });
        corrupt.chain(lost).collect()
    }

    /// What the check found in `file` (the segment's log), running it first if no read did.
    pub async fn health<F: StorageFile>(&self, file: &F) -> io::Result<Rc<Health>> {
        if let Some(health) = self.found() {
            return Ok(health);
        }
        self.hurry.set(true);
        self.health_paced(file, &mut |_| Box::pin(async {})).await
    }

    /// `health`, calling `pace` after each chunk the check reads.
    pub async fn health_paced<F: StorageFile>(
        &self,
        file: &F,
        pace: &mut Pace<'_>,
    ) -> io::Result<Rc<Health>> {
        let _running = self.running.lock().await;
        if let Some(health) = self.found() {
            return Ok(health);
        }
        let health = Rc::new(self.run(file, pace).await?);
        self.report(&health);
        *self.found.borrow_mut() = Some(health.clone());
        Ok(health)
    }

    async fn run<F: StorageFile>(&self, file: &F, pace: &mut Pace<'_>) -> io::Result<Health> {
        let size = file.size().await?;
        let mut health = Health::default();
        let mut position = 0u64;
        let mut expected = self.base_offset;
        let mut chunk = Chunk::default();
        let pace = &mut |bytes: usize| -> LocalBoxFuture<'static, ()> {
            if self.hurry.get() {
                Box::pin(async {})
            } else {
                pace(bytes)
            }
        };
        while position < size {
            let unreadable = Damage {
                position,
                len: size - position,
                first: expected,
                next: self.bound,
            };
            if size - position < HEADER_BYTES as u64 {
                health.trimmed = Some((position, expected));
                break;
            }
            let header_bytes = match chunk.get(file, position, HEADER_BYTES, pace).await {
                Err(err) if is_bad_read(&err) => {
                    health.read_error = Some(err.to_string());
                    health.damaged.push(unreadable);
                    break;
                }
                read => read?,
            };
            let header = BatchHeader::parse(&header_bytes);
            let Some(header) = header.filter(|h| self.plausible(h, expected)) else {
                health.damaged.push(unreadable);
                break;
            };
            let total = header.total_bytes() as u64;
            if position + total > size {
                health.trimmed = Some((position, expected));
                break;
            }
            let whole = match chunk.get(file, position, total as usize, pace).await {
                Err(err) if is_bad_read(&err) => {
                    health.read_error = Some(err.to_string());
                    health.damaged.push(unreadable);
                    break;
                }
                read => read?,
            };
            if batch::check_stored_batch(&whole).is_err() {
                health.damaged.push(Damage {
                    position,
                    len: total,
                    first: header.base_offset,
                    next: header.next_offset(),
                });
            }
            expected = header.next_offset();
            position += total;
        }
        health.end = position;
        if let Some((at, _)) = health.trimmed {
            health.trimmed_bytes = size - at;
            file.truncate(at).await?;
            file.sync_data().await?;
        }
        Ok(health)
    }

    /// Whether a header can be a batch of this segment after offset `expected`: offsets go up
    /// and stay below the next segment's base (the base offset and length lie outside the CRC).
    fn plausible(&self, header: &BatchHeader, expected: Offset) -> bool {
        let total = header.total_bytes() as u64;
        header.magic == 2
            && total >= HEADER_BYTES as u64
            && total <= self.batch_max_bytes
            && header.base_offset >= expected
            && header.last_offset() >= header.base_offset
            && header.next_offset() <= self.bound
    }

    /// Logs and counts what the check found, once.
    fn report(&self, health: &Health) {
        let path = segment::log_path(&self.dir, self.base_offset);
        if let Some(err) = &health.read_error {
            tracing::error!("{}: the disk could not read it: {err}", path.display());
        }
        for d in &health.damaged {
            tracing::error!(
                "{}: {} bytes at position {} fail their check; offsets {}..{} are not served \
                 (fetches there answer CORRUPT_MESSAGE; DeleteRecords to {} moves past them)",
                path.display(),
                d.len,
                d.position,
                d.first,
                d.next,
                d.next
            );
        }
        if let Some((at, first_lost)) = health.trimmed {
            tracing::error!(
                "{}: cut short inside a batch; trimmed to its last whole batch at position {at}; \
                 offsets {first_lost}..{} are lost (reads go on at {})",
                path.display(),
                self.bound,
                self.bound
            );
        }
        let ranges = health.damaged.len() + usize::from(health.trimmed.is_some());
        if ranges > 0 {
            metrics::with(|m| m.log_damage_found(ranges as u64));
        }
    }
}

/// Whether a read failed because of the disk (a bad sector: EIO), not because the file went away
/// (retention, a cleaning swap: the caller looks again) or came out short.
fn is_bad_read(err: &io::Error) -> bool {
    !matches!(
        err.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::UnexpectedEof
    )
}

/// Reads a segment in large chunks, handing out slices of them.
#[derive(Default)]
struct Chunk {
    bytes: Bytes,
    start: u64,
}

impl Chunk {
    /// `len` bytes at `position`; `pace` hears of every read.
    async fn get<F: StorageFile>(
        &mut self,
        file: &F,
        position: u64,
        len: usize,
        pace: &mut Pace<'_>,
    ) -> io::Result<Bytes> {
        let end = self.start + self.bytes.len() as u64;
        if position < self.start || position + len as u64 > end {
            self.bytes = file
                .read_at(position, len.max(limits::RECOVERY_READ_CHUNK_BYTES))
                .await?;
            self.start = position;
            pace(self.bytes.len()).await;
            if self.bytes.len() < len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "segment shorter than its size",
                ));
            }
        }
        let at = (position - self.start) as usize;
        Ok(self.bytes.slice(at..at + len))
    }
}
