//! Test doubles for the quorum: an in-memory Raft log and state machine (the state is the list
//! of applied commands) and an in-process network in which a node can be cut off. They check the
//! runtime adapter and openraft's behaviour on it; the broker's own log store is tested with the
//! same storage suite.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::future::Future;
use std::io;
use std::ops::RangeBounds;
use std::rc::Rc;

use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use openraft::error::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::storage::{EntryResponder, IOFlushed, RaftLogStorage, RaftStateMachine};
use openraft::type_config::alias::{
    EntryOf, LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf, VoteOf,
};
use openraft::{
    BasicNode, EntryPayload, LogState, OptionalSend, RaftLogReader, RaftNetworkFactory,
    RaftNetworkV2, RaftSnapshotBuilder,
};

use super::types::{Command, QuorumTypes as C};
pub type TestRaft = openraft::Raft<C, Rc<MemMachine>>;

#[derive(Debug, Default)]
pub struct MemLog {
    purged: RefCell<Option<LogIdOf<C>>>,
    entries: RefCell<BTreeMap<u64, EntryOf<C>>>,
    committed: RefCell<Option<LogIdOf<C>>>,
    vote: RefCell<Option<VoteOf<C>>>,
}

#[derive(Debug, Default, Clone)]
pub struct Applied {
    pub last: Option<LogIdOf<C>>,
    pub membership: StoredMembershipOf<C>,
    pub commands: Vec<Command>,
}

#[derive(Debug, Default)]
pub struct MemMachine {
    pub state: RefCell<Applied>,
    snapshot: RefCell<Option<(SnapshotMetaOf<C>, Vec<u8>)>>,
}

/// A snapshot's bytes: each command with a 4-byte length before it.
fn encode(state: &Applied) -> Vec<u8> {
    let mut out = Vec::new();
    for Command(bytes) in &state.commands {
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

fn decode(mut data: &[u8]) -> io::Result<Vec<Command>> {
    let mut commands = Vec::new();
    while let Some((len, rest)) = data.split_first_chunk::<4>() {
        let len = u32::from_be_bytes(*len) as usize;
        if rest.len() < len {
            return Err(io::Error::other("snapshot cut short"));
        }
        commands.push(Command(Bytes::copy_from_slice(&rest[..len])));
        data = &rest[len..];
    }
    Ok(commands)
}

impl RaftLogReader<C> for Rc<MemLog> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug>(
        &mut self,
        range: RB,
    ) -> Result<Vec<EntryOf<C>>, io::Error> {
        Ok(self
            .entries
            .borrow()
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<C>>, io::Error> {
        Ok(*self.vote.borrow())
    }
}

impl RaftLogStorage<C> for Rc<MemLog> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, io::Error> {
        let purged = *self.purged.borrow();
        let last = self
            .entries
            .borrow()
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(purged);
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<C>) -> Result<(), io::Error> {
        *self.vote.borrow_mut() = Some(*vote);
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        *self.committed.borrow_mut() = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<C>>, io::Error> {
        Ok(*self.committed.borrow())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = EntryOf<C>>,
    {
        let mut log = self.entries.borrow_mut();
        for entry in entries {
            log.insert(entry.log_id.index(), entry);
        }
        callback.io_completed(Ok(()));
        Ok(())
    }

    async fn truncate_after(&mut self, last: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        let from = last.map_or(0, |id| id.index() + 1);
        self.entries.borrow_mut().split_off(&from);
        Ok(())
    }

    async fn purge(&mut self, upto: LogIdOf<C>) -> Result<(), io::Error> {
        assert!(*self.purged.borrow() <= Some(upto));
        *self.purged.borrow_mut() = Some(upto);
        let mut log = self.entries.borrow_mut();
        *log = log.split_off(&(upto.index() + 1));
        Ok(())
    }
}

impl RaftSnapshotBuilder<C> for Rc<MemMachine> {
    type SnapshotData = Bytes;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<C, Bytes>, io::Error> {
        let state = self.state.borrow().clone();
        let meta = SnapshotMetaOf::<C> {
            last_log_id: state.last,
            last_membership: state.membership.clone(),
        };
        let data = encode(&state);
        *self.snapshot.borrow_mut() = Some((meta.clone(), data.clone()));
        Ok(SnapshotOf::<C, _> {
            meta,
            snapshot: Bytes::from(data),
        })
    }
}

impl RaftStateMachine<C> for Rc<MemMachine> {
    type SnapshotData = Bytes;
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<C>>, StoredMembershipOf<C>), io::Error> {
        let state = self.state.borrow();
        Ok((state.last, state.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<C>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let mut state = self.state.borrow_mut();
            state.last = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(command) => state.commands.push(command),
                EntryPayload::Membership(m) => {
                    state.membership = StoredMembershipOf::<C>::new(Some(entry.log_id), m);
                }
            }
            if let Some(responder) = responder {
                responder.send(Ok(()));
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<C>,
        snapshot: Bytes,
    ) -> Result<(), io::Error> {
        let data = snapshot.to_vec();
        *self.state.borrow_mut() = Applied {
            last: meta.last_log_id,
            membership: meta.last_membership.clone(),
            commands: decode(&data)?,
        };
        *self.snapshot.borrow_mut() = Some((meta.clone(), data));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf<C, Bytes>>, io::Error> {
        Ok(self
            .snapshot
            .borrow()
            .as_ref()
            .map(|(meta, data)| SnapshotOf::<C, _> {
                meta: meta.clone(),
                snapshot: Bytes::from(data.clone()),
            }))
    }
}

/// The members of an in-process quorum whose state machines are `SM`.
pub struct Router<SM: RaftStateMachine<C>> {
    pub nodes: Rc<RefCell<BTreeMap<u64, openraft::Raft<C, SM>>>>,
    pub down: Rc<RefCell<BTreeSet<u64>>>,
}

impl<SM: RaftStateMachine<C>> Clone for Router<SM> {
    fn clone(&self) -> Self {
        Router {
            nodes: self.nodes.clone(),
            down: self.down.clone(),
        }
    }
}

impl<SM: RaftStateMachine<C>> Default for Router<SM> {
    fn default() -> Self {
        Router {
            nodes: Rc::default(),
            down: Rc::default(),
        }
    }
}

pub struct Link<SM: RaftStateMachine<C>> {
    router: Router<SM>,
    from: u64,
    to: u64,
}

#[derive(Debug)]
struct Down;
impl std::fmt::Display for Down {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("node down")
    }
}
impl std::error::Error for Down {}

impl<SM: RaftStateMachine<C>> Link<SM> {
    fn target(&self) -> Result<openraft::Raft<C, SM>, Unreachable<C>> {
        let down = self.router.down.borrow();
        if down.contains(&self.from) || down.contains(&self.to) {
            return Err(Unreachable::new(&Down));
        }
        self.router
            .nodes
            .borrow()
            .get(&self.to)
            .cloned()
            .ok_or_else(|| Unreachable::new(&Down))
    }
}

pub struct Factory<SM: RaftStateMachine<C>> {
    pub router: Router<SM>,
    pub id: u64,
}

impl<SM: RaftStateMachine<C, SnapshotData = Bytes>> RaftNetworkFactory<C> for Factory<SM> {
    type Network = Link<SM>;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> Link<SM> {
        Link {
            router: self.router.clone(),
            from: self.id,
            to: target,
        }
    }
}

impl<SM: RaftStateMachine<C, SnapshotData = Bytes>> RaftNetworkV2<C> for Link<SM> {
    type SnapshotData = Bytes;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError<C>> {
        let raft = self.target()?;
        raft.append_entries(rpc)
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<C>,
        _option: RPCOption,
    ) -> Result<VoteResponse<C>, RPCError<C>> {
        let raft = self.target()?;
        raft.vote(rpc)
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<C>,
        snapshot: SnapshotOf<C, Bytes>,
        _cancel: impl Future<Output = ReplicationClosed> + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<C>, StreamingError<C>> {
        let raft = self.target()?;
        raft.install_full_snapshot(vote, snapshot)
            .await
            .map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))
    }
}
