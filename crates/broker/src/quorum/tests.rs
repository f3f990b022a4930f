//! openraft on glommio, end to end in one process: three voters elect a leader, replicate and
//! survive the loss of the leader; the metadata log store (and the in-memory double) pass
//! openraft's storage suite and keep what they acknowledged through a power cut.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::{AsyncRuntime, BasicNode, EntryPayload, RaftLogReader, StorageError};

use super::log_store::MetadataLogStore;
use super::mem::{Factory, MemLog, MemMachine, Router, TestRaft};
use super::state_machine::{command as metadata_command, MetadataMachine, Publish};
use crate::metadata::records::{BrokerId, MetadataRecord, PartitionState};
use crate::metadata::MetadataImage;
use std::cell::RefCell;

type MemRouter = Router<Rc<MemMachine>>;
type MetadataRouter = Router<SluiceMachine>;
type MetadataFactory = Factory<SluiceMachine>;
use super::heartbeats::Heartbeats;
use super::network::{self, QuorumNetwork};
use super::runtime::GlommioRuntime;
use super::types::{Command, QuorumTypes};
use crate::storage::mem::MemStorage;
use crate::storage::SystemClock;

/// How long a test waits for an election before it fails: generous, for a loaded 2-core CI
/// machine (an election takes one timeout, 0.4-0.8 s here, when the machine is idle).
const ELECTION_WAIT_MAX: Duration = Duration::from_secs(30);

struct MemBuilder;

impl StoreBuilder<QuorumTypes, Rc<MemLog>, Rc<MemMachine>, ()> for MemBuilder {
    async fn build(&self) -> Result<((), Rc<MemLog>, Rc<MemMachine>), StorageError<QuorumTypes>> {
        Ok(((), Rc::default(), Rc::default()))
    }
}

type SluiceLogStore = MetadataLogStore<MemStorage, SystemClock>;

/// A metadata log on a fresh simulated disk each time.
struct SluiceLogBuilder;

impl StoreBuilder<QuorumTypes, SluiceLogStore, Rc<MemMachine>, ()> for SluiceLogBuilder {
    async fn build(
        &self,
    ) -> Result<((), SluiceLogStore, Rc<MemMachine>), StorageError<QuorumTypes>> {
        let store = MetadataLogStore::open(MemStorage::default(), SystemClock, Path::new("/data"))
            .await
            .expect("open the metadata log");
        Ok(((), store, Rc::default()))
    }
}

#[test]
fn the_metadata_log_store_passes_openraft_storage_suite() {
    GlommioRuntime::new(1)
        .block_on(Suite::test_all(SluiceLogBuilder))
        .unwrap();
}

fn command(text: impl Into<String>) -> Command {
    Command(bytes::Bytes::from(text.into()))
}

#[test]
fn the_in_memory_log_store_passes_openraft_storage_suite() {
    GlommioRuntime::new(1)
        .block_on(Suite::test_all(MemBuilder))
        .unwrap();
}

async fn start_node(
    router: &MemRouter,
    id: u64,
    log: impl RaftLogStorage<QuorumTypes>,
) -> (TestRaft, Rc<MemMachine>) {
    let config = openraft::Config {
        heartbeat_interval: 100,
        election_timeout_min: 400,
        election_timeout_max: 800,
        enable_pre_vote: Some(true),
        ..Default::default()
    };
    let machine = Rc::new(MemMachine::default());
    let raft = TestRaft::new(
        id,
        Arc::new(config.validate().unwrap()),
        Factory {
            router: router.clone(),
            id,
        },
        log,
        machine.clone(),
    )
    .await
    .unwrap();
    router.nodes.borrow_mut().insert(id, raft.clone());
    (raft, machine)
}

/// The leader a node that is not cut off reports, other than `not`.
async fn elected_leader(router: &MemRouter, nodes: &[TestRaft], not: Option<u64>) -> u64 {
    let deadline = Instant::now() + ELECTION_WAIT_MAX;
    loop {
        for (id, raft) in (1..).zip(nodes) {
            if router.down.borrow().contains(&id) {
                continue;
            }
            match raft.current_leader().await {
                Some(leader) if Some(leader) != not => return leader,
                _ => {}
            }
        }
        assert!(Instant::now() < deadline, "no leader elected");
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_applied(machines: &[Rc<MemMachine>], count: usize) {
    eventually("commands applied everywhere", || {
        let applied = |m: &Rc<MemMachine>| m.state.borrow().commands.len() >= count;
        machines.iter().all(applied).then_some(())
    })
    .await
}

#[test]
fn three_voters_replicate_and_survive_the_loss_of_the_leader() {
    GlommioRuntime::new(1).block_on(async {
        let router = MemRouter::default();
        let mut nodes = Vec::new();
        let mut machines = Vec::new();
        for id in 1..=3 {
            let (raft, machine) = start_node(&router, id, Rc::new(MemLog::default())).await;
            nodes.push(raft);
            machines.push(machine);
        }
        let voters: BTreeMap<u64, BasicNode> =
            (1..=3).map(|id| (id, BasicNode::default())).collect();
        nodes[0].initialize(voters).await.unwrap();

        let leader = elected_leader(&router, &nodes, None).await;
        for i in 0..100 {
            nodes[leader as usize - 1]
                .client_write(command(format!("command {i}")))
                .await
                .unwrap();
        }
        wait_applied(&machines, 100).await;

        // Cut the leader off: the other two elect one of themselves and keep committing.
        router.down.borrow_mut().insert(leader);
        let next = elected_leader(&router, &nodes, Some(leader)).await;
        assert_ne!(next, leader);
        nodes[next as usize - 1]
            .client_write(command("after the failover"))
            .await
            .unwrap();

        // The old leader comes back as a follower and catches up.
        router.down.borrow_mut().remove(&leader);
        wait_applied(&machines, 101).await;
        for machine in &machines {
            let state = machine.state.borrow();
            assert_eq!(state.commands.len(), 101);
            assert_eq!(state.commands[100], command("after the failover"));
            assert_eq!(
                state.commands[..100],
                machines[0].state.borrow().commands[..100]
            );
        }
        for raft in &nodes {
            raft.shutdown().await.unwrap();
        }
    });
}

fn entry(term: u64, index: u64) -> EntryOf<QuorumTypes> {
    EntryOf::<QuorumTypes> {
        log_id: LogIdOf::<QuorumTypes>::new_term_index(term, index),
        payload: EntryPayload::Normal(command(format!("entry {index}"))),
    }
}

async fn open_on(disk: &MemStorage) -> std::io::Result<SluiceLogStore> {
    MetadataLogStore::open(disk.clone(), SystemClock, Path::new("/data")).await
}

#[test]
fn the_metadata_log_keeps_entries_vote_and_purge_point_through_a_power_cut() {
    GlommioRuntime::new(1).block_on(async {
        let disk = MemStorage::default();
        let mut store = open_on(&disk).await.unwrap();
        let vote = VoteOf::<QuorumTypes>::new_committed(3, 2);
        store.save_vote(&vote).await.unwrap();
        let written: Vec<_> = (0..20).map(|i| entry(1 + i / 10, i)).collect();
        store.blocking_append(written.clone()).await.unwrap();
        store
            .purge(LogIdOf::<QuorumTypes>::new_term_index(1, 4))
            .await
            .unwrap();
        drop(store);

        // Everything acknowledged was fsynced: a power cut that keeps no unsynced byte loses none.
        disk.crash(|_, _| 0);
        let mut again = open_on(&disk).await.unwrap();
        assert_eq!(again.read_vote().await.unwrap(), Some(vote));
        let state = again.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(written[4].log_id));
        assert_eq!(state.last_log_id, Some(written[19].log_id));
        let read = again.try_get_log_entries(0..100).await.unwrap();
        assert_eq!(read, written[5..]);
    });
}

#[test]
fn a_damaged_quorum_state_file_stops_the_open() {
    GlommioRuntime::new(1).block_on(async {
        let disk = MemStorage::default();
        let mut store = open_on(&disk).await.unwrap();
        store
            .save_vote(&VoteOf::<QuorumTypes>::new(2, 1))
            .await
            .unwrap();
        drop(store);
        // A flipped bit in the vote: guessing could let this node vote twice in one term.
        let path = Path::new("/data/__cluster_metadata-0/quorum-state");
        let original = disk.file_bytes(path).unwrap();
        disk.corrupt(path, 3, &[original[3] ^ 1]);
        let err = open_on(&disk).await.err().expect("the open fails");
        assert!(err.to_string().contains("CRC"), "{err}");
    });
}

#[test]
fn a_voter_restarted_from_its_metadata_log_rejoins_and_catches_up() {
    GlommioRuntime::new(1).block_on(async {
        let router = MemRouter::default();
        let disks: Vec<MemStorage> = (0..3).map(|_| MemStorage::default()).collect();
        let mut nodes = Vec::new();
        let mut machines = Vec::new();
        for (id, disk) in (1..=3).zip(&disks) {
            let log = open_on(disk).await.unwrap();
            let (raft, machine) = start_node(&router, id, log).await;
            nodes.push(raft);
            machines.push(machine);
        }
        let voters: BTreeMap<u64, BasicNode> =
            (1..=3).map(|id| (id, BasicNode::default())).collect();
        nodes[0].initialize(voters).await.unwrap();
        let leader = elected_leader(&router, &nodes, None).await;
        for i in 0..50 {
            nodes[leader as usize - 1]
                .client_write(command(format!("command {i}")))
                .await
                .unwrap();
        }

        // A follower stops (its memory is gone); the other two keep committing without it.
        let follower = (1..=3).find(|&id| id != leader).unwrap();
        let at = follower as usize - 1;
        nodes[at].shutdown().await.unwrap();
        router.nodes.borrow_mut().remove(&follower);
        for i in 50..60 {
            nodes[leader as usize - 1]
                .client_write(command(format!("command {i}")))
                .await
                .unwrap();
        }

        // It starts again from its disk: its vote and log are there, and it catches up.
        let log = open_on(&disks[at]).await.unwrap();
        let (raft, machine) = start_node(&router, follower, log).await;
        nodes[at] = raft;
        machines[at] = machine;
        wait_applied(&machines, 60).await;
        let expected: Vec<Command> = (0..60).map(|i| command(format!("command {i}"))).collect();
        for machine in &machines {
            assert_eq!(machine.state.borrow().commands, expected);
        }
        for raft in &nodes {
            raft.shutdown().await.unwrap();
        }
    });
}

/// Polls `ready` every few milliseconds until it yields, or fails the test.
async fn eventually<T>(what: &str, mut ready: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + ELECTION_WAIT_MAX;
    loop {
        if let Some(value) = ready() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
}

/// One member on its own executor thread: binds its controller listener, learns the voters,
/// joins the quorum, proposes if it leads, and reports its applied commands.
async fn run_member(
    id: u64,
    addr_tx: mpsc::Sender<(u64, std::net::SocketAddr)>,
    voters_rx: mpsc::Receiver<BTreeMap<u64, BasicNode>>,
    applied_tx: mpsc::Sender<(u64, Vec<Command>)>,
    stop: Arc<AtomicBool>,
) {
    const COMMANDS: usize = 30;
    let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
    addr_tx.send((id, listener.local_addr().unwrap())).unwrap();
    let voters = eventually("the voters", || voters_rx.try_recv().ok()).await;
    let log = open_on(&MemStorage::default()).await.unwrap();
    let machine = Rc::new(MemMachine::default());
    let heartbeats: Rc<RefCell<Heartbeats>> = Default::default();
    let transport = QuorumNetwork {
        heartbeats: heartbeats.clone(),
    };
    let raft = TestRaft::new(id, quorum_config(), transport, log, machine.clone())
        .await
        .unwrap();
    // These members run a test state machine: observers find no image here.
    let no_image: network::ImageSource = Rc::new(|| {
        let log = crate::config::Config::default().log;
        let empty = crate::metadata::MetadataImage::new(String::new(), log);
        (0, std::sync::Arc::new(empty))
    });
    glommio::spawn_local(network::serve(listener, raft.clone(), heartbeats, no_image)).detach();
    if id == 1 {
        raft.initialize(voters).await.unwrap();
    }
    let deadline = Instant::now() + ELECTION_WAIT_MAX;
    let mut proposed = 0;
    while machine.state.borrow().commands.len() < COMMANDS {
        assert!(
            Instant::now() < deadline,
            "member {id}: commands not applied"
        );
        if proposed < COMMANDS && raft.current_leader().await == Some(id) {
            // A leader that loses its leadership midway stops; the next one carries on.
            match raft
                .client_write(command(format!("{id}: {proposed}")))
                .await
            {
                Ok(_) => proposed += 1,
                Err(_) => glommio::timer::sleep(Duration::from_millis(50)).await,
            }
            continue;
        }
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    let applied = machine.state.borrow().commands.clone();
    applied_tx.send((id, applied)).unwrap();
    // Keeps serving the others until every member has reported.
    eventually("the end of the test", || {
        stop.load(Ordering::SeqCst).then_some(())
    })
    .await;
    raft.shutdown().await.unwrap();
}

fn quorum_config() -> Arc<openraft::Config> {
    let config = openraft::Config {
        heartbeat_interval: 100,
        election_timeout_min: 400,
        election_timeout_max: 800,
        enable_pre_vote: Some(true),
        ..Default::default()
    };
    Arc::new(config.validate().unwrap())
}

#[test]
fn three_members_on_their_own_threads_agree_over_tcp_and_drop_a_lying_peer() {
    let (addr_tx, addr_rx) = mpsc::channel();
    let (applied_tx, applied_rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let mut voters_txs = Vec::new();
    let mut members = Vec::new();
    for id in 1..=3u64 {
        let (voters_tx, voters_rx) = mpsc::channel();
        voters_txs.push(voters_tx);
        let (addr_tx, applied_tx, stop) = (addr_tx.clone(), applied_tx.clone(), stop.clone());
        let member = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .name(&format!("quorum-member-{id}"))
            .spawn(move || run_member(id, addr_tx, voters_rx, applied_tx, stop))
            .unwrap();
        members.push(member);
    }
    let wait = Duration::from_secs(60);
    let addrs: BTreeMap<u64, std::net::SocketAddr> = (0..3)
        .map(|_| addr_rx.recv_timeout(wait).unwrap())
        .collect();
    let voters: BTreeMap<u64, BasicNode> = addrs
        .iter()
        .map(|(id, addr)| (*id, BasicNode::new(addr)))
        .collect();
    for tx in &voters_txs {
        tx.send(voters.clone()).unwrap();
    }

    // A peer that sends a frame which is no quorum message is disconnected, unanswered.
    let mut liar = std::net::TcpStream::connect(addrs[&2]).unwrap();
    liar.set_read_timeout(Some(wait)).unwrap();
    liar.write_all(&[0, 0, 0, 5, 99, 1, 2, 3, 4]).unwrap();
    let mut answer = Vec::new();
    assert_eq!(
        liar.read_to_end(&mut answer).unwrap(),
        0,
        "no answer to a lie"
    );

    let reports: BTreeMap<u64, Vec<Command>> = (0..3)
        .map(|_| applied_rx.recv_timeout(wait).unwrap())
        .collect();
    stop.store(true, Ordering::SeqCst);
    for member in members {
        member.join().unwrap();
    }
    let first = &reports[&1];
    assert!(first.len() >= 30);
    for applied in reports.values() {
        let common = applied.len().min(first.len());
        assert_eq!(applied[..common], first[..common]);
    }
}

type SluiceMachine = MetadataMachine<MemStorage>;
type MetadataRaft = openraft::Raft<QuorumTypes, SluiceMachine>;

/// The images a member's state machine published, newest last.
type Published = Rc<RefCell<Vec<Arc<MetadataImage>>>>;

fn empty_image() -> MetadataImage {
    MetadataImage::new("test-cluster".into(), crate::config::Config::default().log)
}

async fn open_machine(disk: &MemStorage, published: &Published) -> SluiceMachine {
    let published = published.clone();
    let publish: Publish = Box::new(move |image| {
        published.borrow_mut().push(image);
        Box::pin(async {})
    });
    MetadataMachine::open(
        disk.clone(),
        Path::new("/data"),
        BrokerId(1),
        empty_image(),
        publish,
    )
    .await
    .unwrap()
}

/// A metadata log and its state machine on a fresh simulated disk each time.
struct MetadataBuilder;

impl StoreBuilder<QuorumTypes, SluiceLogStore, SluiceMachine, ()> for MetadataBuilder {
    async fn build(
        &self,
    ) -> Result<((), SluiceLogStore, SluiceMachine), StorageError<QuorumTypes>> {
        let disk = MemStorage::default();
        let log = open_on(&disk).await.unwrap();
        Ok(((), log, open_machine(&disk, &Published::default()).await))
    }
}

#[test]
fn the_metadata_log_and_state_machine_pass_openraft_storage_suite() {
    GlommioRuntime::new(1)
        .block_on(Suite::test_all(MetadataBuilder))
        .unwrap();
}

/// The records that create topic `name` with `partitions` partitions led by broker 1.
fn topic_records(name: &str, partitions: i32) -> Vec<MetadataRecord> {
    let id = uuid::Uuid::new_v4();
    let mut records = vec![MetadataRecord::Topic {
        name: name.to_string(),
        id,
    }];
    records.extend((0..partitions).map(|p| MetadataRecord::Partition {
        topic_id: id,
        partition: crate::types::PartitionId(p),
        state: PartitionState::online(vec![BrokerId(1)]),
    }));
    records
}

struct MetadataMember {
    raft: MetadataRaft,
    machine: SluiceMachine,
    published: Published,
}

async fn start_metadata_member(
    router: &MetadataRouter,
    id: u64,
    disk: &MemStorage,
) -> MetadataMember {
    let published = Published::default();
    let machine = open_machine(disk, &published).await;
    let raft = MetadataRaft::new(
        id,
        quorum_config(),
        MetadataFactory {
            router: router.clone(),
            id,
        },
        open_on(disk).await.unwrap(),
        machine.clone(),
    )
    .await
    .unwrap();
    router.nodes.borrow_mut().insert(id, raft.clone());
    MetadataMember {
        raft,
        machine,
        published,
    }
}

#[test]
fn members_apply_metadata_commands_alike_and_restart_from_a_snapshot() {
    GlommioRuntime::new(1).block_on(async {
        let router = MetadataRouter::default();
        let disks: Vec<MemStorage> = (0..3).map(|_| MemStorage::default()).collect();
        let mut members = Vec::new();
        for (id, disk) in (1..=3).zip(&disks) {
            members.push(start_metadata_member(&router, id, disk).await);
        }
        let voters: BTreeMap<u64, BasicNode> =
            (1..=3).map(|id| (id, BasicNode::default())).collect();
        members[0].raft.initialize(voters).await.unwrap();
        let leader = eventually_leader(&members).await;
        let propose = |records: Vec<MetadataRecord>| {
            let raft = members[leader].raft.clone();
            async move {
                raft.client_write(metadata_command("test-cluster", &records))
                    .await
                    .unwrap()
                    .data
            }
        };
        assert_eq!(propose(topic_records("orders", 3)).await, Ok(()));
        assert_eq!(propose(topic_records("payments", 1)).await, Ok(()));

        // Records decided against another image change nothing, on every member.
        let orphan = MetadataRecord::Partition {
            topic_id: uuid::Uuid::new_v4(),
            partition: crate::types::PartitionId(0),
            state: PartitionState::online(vec![BrokerId(1)]),
        };
        let refused = propose(vec![
            MetadataRecord::RemoveTopic {
                id: uuid::Uuid::new_v4(),
            },
            orphan,
        ]);
        assert!(refused.await.is_err());

        let expected: Vec<String> = vec!["orders".into(), "payments".into()];
        for member in &members {
            let topics = eventually("the topics on every member", || {
                let image = member.machine.image();
                (image.topics.len() == 2).then(|| image.topics.keys().cloned().collect::<Vec<_>>())
            })
            .await;
            assert_eq!(topics, expected);
            assert_eq!(member.machine.image().topics["orders"].partitions, 3);
            // Published to the broker once per applied command.
            assert_eq!(member.published.borrow().len(), 2);
        }

        // A snapshot lets the log go; a member restarted from its disk starts from it.
        let follower = (0..3).find(|&i| i != leader).unwrap();
        members[follower].raft.trigger().snapshot().await.unwrap();
        eventually("the snapshot", || {
            disks[follower]
                .file_len(Path::new("/data/__cluster_metadata-0/snapshot"))
                .filter(|&len| len > 0)
        })
        .await;
        members[follower].raft.shutdown().await.unwrap();
        router.nodes.borrow_mut().remove(&(follower as u64 + 1));
        assert_eq!(propose(topic_records("refunds", 2)).await, Ok(()));
        members[follower] =
            start_metadata_member(&router, follower as u64 + 1, &disks[follower]).await;
        let restarted = &members[follower];
        assert!(
            restarted.machine.image().topics.contains_key("orders"),
            "from the snapshot"
        );
        eventually("the command it missed", || {
            restarted
                .machine
                .image()
                .topics
                .contains_key("refunds")
                .then_some(())
        })
        .await;
        for member in &members {
            member.raft.shutdown().await.unwrap();
        }
    });
}

async fn eventually_leader(members: &[MetadataMember]) -> usize {
    let deadline = Instant::now() + ELECTION_WAIT_MAX;
    loop {
        for member in members {
            if let Some(leader) = member.raft.current_leader().await {
                return leader as usize - 1;
            }
        }
        assert!(Instant::now() < deadline, "no leader elected");
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
}
