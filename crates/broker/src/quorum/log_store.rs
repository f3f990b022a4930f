//! The metadata quorum's Raft log, kept as a Sluice log (`__cluster_metadata-0`, Kafka's name):
//! one CRC-32C'd batch per Raft entry, the entry's index as the batch's offset and its term as the
//! batch's partition leader epoch; the record's value is the entry (`codec::encode_entry`).
//!
//! An append returns, and tells openraft the entries are durable, only after they are fsynced.
//! The vote and the last purged log id live in a small file replaced atomically (write a temp file,
//! fsync, rename, fsync the directory). At open every batch is CRC-checked and the log is cut at
//! the first damaged one, as for any partition.
//!
//! Lives on the shard that runs the Raft core. The reader openraft asks for shares the log with
//! the store (`Rc`) behind an async read-write lock: a truncation holds the log across its file
//! I/O while readers wait.

use std::cell::{Cell, RefCell};

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use tokio::sync::RwLock;

use bytes::{BufMut, Bytes, BytesMut};
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::type_config::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::{LogState, RaftLogReader};

use super::codec::{self, DecodeError};
use super::types::QuorumTypes as Q;
use crate::config::{Config, LogConfig};
use crate::internal_log::FieldReader;
use crate::limits;
use crate::storage::batch::{self, BatchHeader, HEADER_BYTES};
use crate::storage::log::Log;
use crate::storage::record_walk::RecordWalker;
use crate::storage::{read_whole, segment, write_atomically, Clock, Storage, StorageFile};
use crate::types::Offset;

/// The metadata log's directory under the data dir.
pub const METADATA_LOG_DIR: &str = "__cluster_metadata-0";

/// The vote and the last purged log id, beside the log.
const QUORUM_STATE_FILE: &str = "quorum-state";
const QUORUM_STATE_VERSION: i8 = 1;

/// Settings of the metadata log: every append fsynced (the log's default), segments of
/// `QUORUM_LOG_SEGMENT_BYTES`, entries of at most `QUORUM_ENTRY_MAX_BYTES`, no retention
/// (openraft purges what a snapshot covers).
fn metadata_log_config() -> LogConfig {
    let mut config = Config::default().log;
    config.segment_bytes = limits::QUORUM_LOG_SEGMENT_BYTES;
    config.segment_ms = i64::MAX;
    config.retention_ms = -1;
    config.retention_bytes = -1;
    config.cleanup_delete = false;
    config.cleanup_compact = false;
    config.max_message_bytes = limits::QUORUM_ENTRY_MAX_BYTES;
    config
}

/// What survives a restart besides the entries.
#[derive(Debug, Clone, Default, PartialEq)]
struct QuorumState {
    vote: Option<VoteOf<Q>>,
    purged: Option<LogIdOf<Q>>,
}

/// The log store openraft writes to, and its reader (a clone).
pub struct MetadataLogStore<S: Storage, K: Clock> {
    shared: Rc<Shared<S, K>>,
}

impl<S: Storage, K: Clock> Clone for MetadataLogStore<S, K> {
    fn clone(&self) -> Self {
        MetadataLogStore {
            shared: self.shared.clone(),
        }
    }
}

struct Shared<S: Storage, K: Clock> {
    storage: S,
    clock: K,
    dir: PathBuf,
    log: RwLock<Log<S>>,
    state: RefCell<QuorumState>,
    /// The id of the last entry in the log, or the last purged one when the log is empty.
    last: Cell<Option<LogIdOf<Q>>>,
}

fn invalid(err: impl ToString) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err.to_string())
}

impl<S: Storage, K: Clock> MetadataLogStore<S, K> {
    /// Opens (or creates) the metadata log under `data_dir`.
    pub async fn open(storage: S, clock: K, data_dir: &Path) -> io::Result<Self> {
        let dir = data_dir.join(METADATA_LOG_DIR);
        let log = open_log(&storage, &dir, clock.now_ms()).await?;
        let state = read_state(&storage, &dir).await?;
        let store = MetadataLogStore {
            shared: Rc::new(Shared {
                storage,
                clock,
                dir,
                log: RwLock::new(log),
                last: Cell::new(state.purged),
                state: RefCell::new(state),
            }),
        };
        let (start, end) = {
            let log = store.shared.log.read().await;
            (log.log_start(), log.end())
        };
        if end > start {
            let last = store.read_entries(end.0 as u64 - 1, end.0 as u64).await?;
            store.shared.last.set(last.last().map(|e| e.log_id));
        }
        Ok(store)
    }

    /// Entries with indexes in `from..to`, read in bounded chunks.
    async fn read_entries(&self, from: u64, to: u64) -> io::Result<Vec<EntryOf<Q>>> {
        let log = self.shared.log.read().await;
        let mut next = from.max(log.log_start().0 as u64);
        let to = to.min(log.durable_end().0 as u64);
        let mut entries = Vec::new();
        while next < to {
            let cursor = log
                .cursor_at(Offset(next as i64), log.durable_end())
                .map_err(|code| io::Error::other(format!("metadata log read: {code:?}")))?;
            let Some(cursor) = cursor else { break };
            let bytes = cursor
                .read(Offset(next as i64), limits::QUORUM_LOG_READ_BYTES)
                .await?;
            let before = entries.len();
            decode_batches(&bytes, next, to, &mut entries)?;
            if entries.len() == before {
                return Err(invalid(format!("no metadata log entry at {next}")));
            }
            next = entries.last().map_or(next, |e| e.log_id.index + 1);
        }
        Ok(entries)
    }

    async fn save_state(&self) -> io::Result<()> {
        let bytes = encode_state(&self.shared.state.borrow());
        write_atomically(
            &self.shared.storage,
            &self.shared.dir.join(QUORUM_STATE_FILE),
            bytes,
        )
        .await
    }

    /// Writes whatever is pending and fsyncs it.
    async fn flush(&self) -> io::Result<()> {
        let job = self.shared.log.write().await.take_flush();
        if let Some(job) = job {
            let done = job.run().await;
            self.shared
                .log
                .write()
                .await
                .complete_flush(done)
                .map_err(|code| io::Error::other(format!("metadata log flush: {code:?}")))?;
        }
        Ok(())
    }

    /// An empty log starts wherever its first entry is (after a snapshot, past index 0); a
    /// log with entries takes only the next index.
    async fn start_at_if_empty(&self, index: u64) -> io::Result<()> {
        let (start, end) = {
            let log = self.shared.log.read().await;
            (log.log_start().0 as u64, log.end().0 as u64)
        };
        if index == end {
            return Ok(());
        }
        if start != end {
            return Err(invalid(format!(
                "entry {index} appended to a metadata log that ends at {end}"
            )));
        }
        self.restart_empty_at(index).await
    }

    /// Drops every entry and starts the log empty at `index` (what a follower does when a
    /// snapshot it installed reaches past its log).
    async fn restart_empty_at(&self, index: u64) -> io::Result<()> {
        let shared = &self.shared;
        let mut log = shared.log.write().await;
        log.delete()?;
        shared.storage.create_dir_all(&shared.dir)?;
        let first = shared
            .storage
            .open(&segment::log_path(&shared.dir, Offset(index as i64)))
            .await?;
        first.sync_data().await?;
        drop(first);
        shared.storage.sync_dir(&shared.dir)?;
        *log = open_log(&shared.storage, &shared.dir, shared.clock.now_ms()).await?;
        Ok(())
    }
}

async fn open_log<S: Storage>(storage: &S, dir: &Path, now_ms: i64) -> io::Result<Log<S>> {
    // Offset(0): no segment is trusted, every batch is CRC-checked (the log is small).
    let (log, _report) = Log::open(
        storage.clone(),
        dir.to_path_buf(),
        metadata_log_config(),
        Offset(0),
        now_ms,
        &mut |_, _| None,
    )
    .await?;
    Ok(log)
}

/// Decodes the whole batches in `bytes` whose offsets fall in `from..to` into `out`; a batch cut
/// off at the end of the read is left for the next one.
fn decode_batches(bytes: &Bytes, from: u64, to: u64, out: &mut Vec<EntryOf<Q>>) -> io::Result<()> {
    let mut at = 0;
    while let Some(header) = BatchHeader::parse(&bytes[at..]) {
        let len = header.total_bytes();
        if at + len > bytes.len() {
            break;
        }
        let batch = &bytes[at..at + len];
        at += len;
        batch::check_stored_batch(batch).map_err(|code| invalid(format!("{code:?}")))?;
        let index = header.base_offset.0 as u64;
        if index < from {
            continue;
        }
        if index >= to {
            break;
        }
        let entry = entry_of(batch, &header)?;
        if entry.log_id.index != index
            || entry.log_id.leader_id.term != header.partition_leader_epoch as u64
        {
            return Err(invalid(format!(
                "metadata log batch at {index} holds entry {}",
                entry.log_id
            )));
        }
        out.push(entry);
    }
    Ok(())
}

fn entry_of(batch: &[u8], header: &BatchHeader) -> io::Result<EntryOf<Q>> {
    let mut records = RecordWalker::new(batch, header);
    let record = records
        .next()
        .ok_or_else(|| invalid("empty metadata log batch"))?
        .map_err(|err| invalid(err.describe()))?;
    let value = record
        .value
        .ok_or_else(|| invalid("metadata log record without a value"))?;
    codec::decode_entry(&batch[value]).map_err(invalid)
}

fn encode_state(state: &QuorumState) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.put_i8(QUORUM_STATE_VERSION);
    match &state.vote {
        None => out.put_u8(0),
        Some(vote) => {
            out.put_u8(1);
            out.put_u64(vote.leader_id.term);
            out.put_u64(vote.leader_id.voted_for);
            out.put_u8(vote.committed as u8);
        }
    }
    match &state.purged {
        None => out.put_u8(0),
        Some(id) => {
            out.put_u8(1);
            out.put_u64(id.leader_id.term);
            out.put_u64(id.index);
        }
    }
    let crc = crc32c::crc32c(&out);
    out.put_u32(crc);
    out.to_vec()
}

fn decode_state(bytes: &[u8]) -> Result<QuorumState, DecodeError> {
    let Some((body, crc)) = bytes.split_last_chunk::<4>() else {
        return Err(DecodeError("quorum state too short".into()));
    };
    if crc32c::crc32c(body) != u32::from_be_bytes(*crc) {
        return Err(DecodeError("quorum state CRC mismatch".into()));
    }
    let mut r = FieldReader(body);
    if r.i8()? != QUORUM_STATE_VERSION {
        return Err(DecodeError("unknown quorum state version".into()));
    }
    let vote = match r.i8()? {
        0 => None,
        _ => {
            let term = r.i64()? as u64;
            let node = r.i64()? as u64;
            Some(match r.i8()? {
                0 => VoteOf::<Q>::new(term, node),
                _ => VoteOf::<Q>::new_committed(term, node),
            })
        }
    };
    let purged = match r.i8()? {
        0 => None,
        _ => {
            let term = r.i64()? as u64;
            Some(LogIdOf::<Q>::new_term_index(term, r.i64()? as u64))
        }
    };
    if !r.0.is_empty() {
        return Err(DecodeError("bytes after the quorum state".into()));
    }
    Ok(QuorumState { vote, purged })
}

/// A missing file is a new quorum member; a damaged one stops the start: guessing a vote could
/// let this node vote twice in one term.
async fn read_state<S: Storage>(storage: &S, dir: &Path) -> io::Result<QuorumState> {
    let path = dir.join(QUORUM_STATE_FILE);
    match read_whole(storage, &path, limits::QUORUM_STATE_MAX_BYTES).await? {
        None => Ok(QuorumState::default()),
        Some(bytes) => {
            decode_state(&bytes).map_err(|err| invalid(format!("{}: {err}", path.display())))
        }
    }
}

fn index_range(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let from = match range.start_bound() {
        Bound::Included(&i) => i,
        Bound::Excluded(&i) => i.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let to = match range.end_bound() {
        Bound::Included(&i) => i.saturating_add(1),
        Bound::Excluded(&i) => i,
        Bound::Unbounded => u64::MAX,
    };
    (from, to)
}

impl<S: Storage, K: Clock> RaftLogReader<Q> for MetadataLogStore<S, K> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug>(
        &mut self,
        range: RB,
    ) -> Result<Vec<EntryOf<Q>>, io::Error> {
        let (from, to) = index_range(&range);
        self.read_entries(from, to).await
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<Q>>, io::Error> {
        Ok(self.shared.state.borrow().vote)
    }
}

impl<S: Storage, K: Clock> RaftLogStorage<Q> for MetadataLogStore<S, K> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<Q>, io::Error> {
        Ok(LogState {
            last_purged_log_id: self.shared.state.borrow().purged,
            last_log_id: self.shared.last.get(),
        })
    }

    async fn get_log_reader(&mut self) -> Self {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<Q>) -> Result<(), io::Error> {
        self.shared.state.borrow_mut().vote = Some(*vote);
        self.save_state().await
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<Q>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = EntryOf<Q>>,
    {
        let now_ms = self.shared.clock.now_ms();
        for entry in entries {
            let term = i32::try_from(entry.log_id.leader_id.term)
                .map_err(|_| invalid("a term past 2^31 does not fit a batch's leader epoch"))?;
            self.start_at_if_empty(entry.log_id.index).await?;
            let value = codec::encode_entry(&entry);
            if value.len() > limits::QUORUM_ENTRY_MAX_BYTES {
                return Err(invalid(format!(
                    "a metadata log entry of {} bytes, over {}",
                    value.len(),
                    limits::QUORUM_ENTRY_MAX_BYTES
                )));
            }
            let bytes = Bytes::from(batch::build_batch(&[(None, Some(&value))], now_ms));
            let header = BatchHeader::parse(&bytes[..HEADER_BYTES]).expect("a batch just built");
            let mut log = self.shared.log.write().await;
            assert_eq!(log.end().0 as u64, entry.log_id.index, "checked just above");
            log.append(bytes, &header, term, now_ms)
                .map_err(|code| io::Error::other(format!("metadata log append: {code:?}")))?;
            self.shared.last.set(Some(entry.log_id));
        }
        let flushed = self.flush().await;
        let result = flushed
            .as_ref()
            .map(|_| ())
            .map_err(|err| io::Error::new(err.kind(), err.to_string()));
        callback.io_completed(result);
        flushed
    }

    async fn truncate_after(&mut self, last: Option<LogIdOf<Q>>) -> Result<(), io::Error> {
        let keep_to = last.map_or(0, |id| id.index + 1);
        let mut log = self.shared.log.write().await;
        if keep_to < log.log_start().0 as u64 {
            return Err(invalid("truncate below the purged entries"));
        }
        log.truncate_to(Offset(keep_to as i64)).await?;
        drop(log);
        // Truncating after an entry past the end removes nothing.
        let purged = self.shared.state.borrow().purged;
        let kept_last = match last {
            Some(id) if Some(id) < self.shared.last.get() => Some(id),
            Some(_) => self.shared.last.get(),
            None => purged,
        };
        self.shared.last.set(kept_last);
        Ok(())
    }

    async fn purge(&mut self, upto: LogIdOf<Q>) -> Result<(), io::Error> {
        assert!(
            self.shared.state.borrow().purged <= Some(upto),
            "purges only move forward"
        );
        self.shared.state.borrow_mut().purged = Some(upto);
        self.save_state().await?;
        let next = upto.index + 1;
        let end = self.shared.log.read().await.end().0 as u64;
        if next > end {
            self.restart_empty_at(next).await?;
            self.shared.last.set(Some(upto));
            return Ok(());
        }
        let checkpoint = self
            .shared
            .log
            .write()
            .await
            .advance_log_start(Offset(next as i64))
            .map_err(|code| io::Error::other(format!("metadata log purge: {code:?}")))?
            .1;
        checkpoint.write().await
    }
}
