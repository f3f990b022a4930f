//! The metadata quorum's state machine: the `MetadataImage`, moved by the records each committed
//! command carries, on every member alike; and its snapshots.
//!
//! A command is a batch of metadata records (`metadata::codec`), applied all or nothing: records
//! decided against an image that has moved since change nothing anywhere, and the proposer hears
//! why. Each new image is handed to `publish` (the broker installs it on every shard) before the
//! command counts as applied.
//!
//! A snapshot is the image written as the records that rebuild it (the metadata file's format).
//! The latest is kept in `snapshot` beside the metadata log, with the last log id and the
//! membership it covers, CRC'd and replaced atomically, so a restart starts from it and openraft
//! may purge the log below it. Lives on the shard that runs the Raft core.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::type_config::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};

use super::codec;
use super::log_store::METADATA_LOG_DIR;
use super::types::{Command, CommandOutcome, QuorumTypes as Q};
use crate::config::LogConfig;
use crate::internal_log::FieldReader;
use crate::limits;
use crate::metadata::records::{BrokerId, MetadataRecord};
use crate::metadata::{self, MetadataImage};
use crate::storage::{read_whole, write_atomically, Storage};

/// The latest snapshot, beside the metadata log.
const SNAPSHOT_FILE: &str = "snapshot";
const SNAPSHOT_VERSION: i8 = 1;

/// Hands a new image to the broker (every shard), finishing when it is installed.
pub type Publish = Box<dyn Fn(Arc<MetadataImage>) -> Pin<Box<dyn Future<Output = ()>>>>;

/// The command that names a new cluster: no records, only its id. The quorum's first leader
/// proposes it; once one is applied, any other is refused (it names another cluster).
pub fn bootstrap_command(cluster_id: &str) -> Command {
    command(cluster_id, &[])
}

/// The records of one command, for `client_write`.
pub fn command(cluster_id: &str, records: &[MetadataRecord]) -> Command {
    Command(Bytes::from(metadata::codec::encode(cluster_id, records)))
}

struct State {
    image: Arc<MetadataImage>,
    last_applied: Option<LogIdOf<Q>>,
    membership: StoredMembershipOf<Q>,
    /// The latest snapshot's description and bytes (the image's encoding).
    snapshot: Option<(SnapshotMetaOf<Q>, Bytes)>,
}

struct Shared<S: Storage> {
    storage: S,
    dir: PathBuf,
    node: BrokerId,
    static_log: LogConfig,
    state: RefCell<State>,
    publish: Publish,
}

/// The state machine openraft applies to, and builds snapshots from (a clone).
pub struct MetadataMachine<S: Storage> {
    shared: Rc<Shared<S>>,
}

impl<S: Storage> Clone for MetadataMachine<S> {
    fn clone(&self) -> Self {
        MetadataMachine {
            shared: self.shared.clone(),
        }
    }
}

fn invalid(err: impl ToString) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err.to_string())
}

impl<S: Storage> MetadataMachine<S> {
    /// Opens the state machine of the metadata log under `data_dir`: from its latest snapshot if
    /// there is one, else from `empty` (an image with the cluster id and no records applied).
    pub async fn open(
        storage: S,
        data_dir: &Path,
        node: BrokerId,
        empty: MetadataImage,
        publish: Publish,
    ) -> io::Result<Self> {
        let dir = data_dir.join(METADATA_LOG_DIR);
        let static_log = empty.static_log_config.clone();
        let saved = read_snapshot(&storage, &dir, node, &static_log).await?;
        let state = match saved {
            Some((meta, data, image)) => State {
                image: Arc::new(image),
                last_applied: meta.last_log_id,
                membership: meta.last_membership.clone(),
                snapshot: Some((meta, data)),
            },
            None => State {
                image: Arc::new(empty),
                last_applied: None,
                membership: StoredMembershipOf::<Q>::default(),
                snapshot: None,
            },
        };
        Ok(MetadataMachine {
            shared: Rc::new(Shared {
                storage,
                dir,
                node,
                static_log,
                state: RefCell::new(state),
                publish,
            }),
        })
    }

    /// The image as of the last applied command.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.shared.state.borrow().image.clone()
    }

    /// The image with the log index it was applied at (0: none applied yet).
    pub fn applied(&self) -> (u64, Arc<MetadataImage>) {
        let state = self.shared.state.borrow();
        let index = state.last_applied.as_ref().map_or(0, |id| id.index);
        (index, state.image.clone())
    }

    /// Applies one command's records to a copy of the image: all of them, or none.
    fn apply_command(&self, Command(bytes): &Command) -> Result<MetadataImage, String> {
        let (cluster_id, records) =
            metadata::codec::decode(bytes).map_err(|err| format!("undecodable command: {err}"))?;
        let mut image = (*self.image()).clone();
        if image.cluster_id.is_empty() {
            // The first command a new quorum commits names the cluster (`bootstrap_command`).
            image.cluster_id = cluster_id;
        } else if cluster_id != image.cluster_id {
            return Err(format!(
                "a command for cluster {cluster_id} in cluster {}",
                image.cluster_id
            ));
        }
        for (i, record) in records.iter().enumerate() {
            image
                .apply(record)
                .map_err(|err| format!("record {i} of the command: {err}"))?;
        }
        Ok(image)
    }

    async fn save_snapshot(&self, meta: &SnapshotMetaOf<Q>, data: &Bytes) -> io::Result<()> {
        let mut out = BytesMut::new();
        out.put_i8(SNAPSHOT_VERSION);
        codec::put_snapshot_meta(&mut out, meta);
        crate::internal_log::put_bytes(&mut out, data);
        let crc = crc32c::crc32c(&out);
        out.put_u32(crc);
        let shared = &self.shared;
        shared.storage.create_dir_all(&shared.dir)?;
        write_atomically(
            &shared.storage,
            &shared.dir.join(SNAPSHOT_FILE),
            out.to_vec(),
        )
        .await
    }
}

/// The saved snapshot, if any: its description, its bytes and the image they rebuild. A damaged
/// file stops the start: the log below it may be purged, so nothing could replace it.
async fn read_snapshot<S: Storage>(
    storage: &S,
    dir: &Path,
    node: BrokerId,
    static_log: &LogConfig,
) -> io::Result<Option<(SnapshotMetaOf<Q>, Bytes, MetadataImage)>> {
    let path = dir.join(SNAPSHOT_FILE);
    let Some(bytes) = read_whole(storage, &path, limits::QUORUM_FRAME_MAX_BYTES).await? else {
        return Ok(None);
    };
    let damaged = |why: String| invalid(format!("{}: {why}", path.display()));
    let Some((body, crc)) = bytes.split_last_chunk::<4>() else {
        return Err(damaged("too short".into()));
    };
    if crc32c::crc32c(body) != u32::from_be_bytes(*crc) {
        return Err(damaged("CRC mismatch".into()));
    }
    let mut r = FieldReader(body);
    if r.i8().map_err(damaged)? != SNAPSHOT_VERSION {
        return Err(damaged("unknown version".into()));
    }
    let meta = codec::snapshot_meta(&mut r).map_err(|e| damaged(e.to_string()))?;
    let data = r.bytes().map_err(damaged)?;
    if !r.0.is_empty() {
        return Err(damaged("bytes after the snapshot".into()));
    }
    let image = metadata::decode(&data, node, static_log).map_err(|e| damaged(format!("{e:#}")))?;
    Ok(Some((meta, data, image)))
}

impl<S: Storage> RaftSnapshotBuilder<Q> for MetadataMachine<S> {
    type SnapshotData = Bytes;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<Q, Bytes>, io::Error> {
        let (meta, data) = {
            let state = self.shared.state.borrow();
            let meta = SnapshotMetaOf::<Q> {
                last_log_id: state.last_applied,
                last_membership: state.membership.clone(),
            };
            (meta, Bytes::from(metadata::encode(&state.image)))
        };
        self.save_snapshot(&meta, &data).await?;
        self.shared.state.borrow_mut().snapshot = Some((meta.clone(), data.clone()));
        Ok(SnapshotOf::<Q, Bytes> {
            meta,
            snapshot: data,
        })
    }
}

impl<S: Storage> RaftStateMachine<Q> for MetadataMachine<S> {
    type SnapshotData = Bytes;
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<Q>>, StoredMembershipOf<Q>), io::Error> {
        let state = self.shared.state.borrow();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<St>(&mut self, mut entries: St) -> Result<(), io::Error>
    where
        St: Stream<Item = Result<EntryResponder<Q>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let outcome: CommandOutcome = match &entry.payload {
                EntryPayload::Blank => Ok(()),
                EntryPayload::Membership(membership) => {
                    self.shared.state.borrow_mut().membership =
                        StoredMembershipOf::<Q>::new(Some(entry.log_id), membership.clone());
                    Ok(())
                }
                EntryPayload::Normal(command) => match self.apply_command(command) {
                    Ok(image) => {
                        let image = Arc::new(image);
                        self.shared.state.borrow_mut().image = image.clone();
                        (self.shared.publish)(image).await;
                        Ok(())
                    }
                    Err(why) => {
                        tracing::warn!(log_id = %entry.log_id, "metadata command not applied: {why}");
                        Err(why)
                    }
                },
            };
            self.shared.state.borrow_mut().last_applied = Some(entry.log_id);
            if let Some(responder) = responder {
                responder.send(outcome);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<Q>,
        data: Bytes,
    ) -> Result<(), io::Error> {
        let shared = &self.shared;
        let image = metadata::decode(&data, shared.node, &shared.static_log)
            .map_err(|err| invalid(format!("snapshot from the leader: {err:#}")))?;
        self.save_snapshot(meta, &data).await?;
        let image = Arc::new(image);
        {
            let mut state = shared.state.borrow_mut();
            state.image = image.clone();
            state.last_applied = meta.last_log_id;
            state.membership = meta.last_membership.clone();
            state.snapshot = Some((meta.clone(), data));
        }
        (shared.publish)(image).await;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf<Q, Bytes>>, io::Error> {
        Ok(self.shared.state.borrow().snapshot.as_ref().map(
            |(meta, data)| SnapshotOf::<Q, Bytes> {
                meta: meta.clone(),
                snapshot: data.clone(),
            },
        ))
    }
}
