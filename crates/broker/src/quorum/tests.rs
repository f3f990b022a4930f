//! openraft on glommio, end to end in one process: three voters elect a leader, replicate,
//! survive the loss of the leader, and the log store passes openraft's storage suite.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::testing::log::{StoreBuilder, Suite};
use openraft::{AsyncRuntime, BasicNode, StorageError};

use super::mem::{Factory, MemLog, MemMachine, Router, TestConfig, TestRaft};
use super::runtime::GlommioRuntime;

/// How long a test waits for an election before it fails: generous, for a loaded 2-core CI
/// machine (an election takes one timeout, 0.4-0.8 s here, when the machine is idle).
const ELECTION_WAIT_MAX: Duration = Duration::from_secs(30);

struct MemBuilder;

impl StoreBuilder<TestConfig, Rc<MemLog>, Rc<MemMachine>, ()> for MemBuilder {
    async fn build(&self) -> Result<((), Rc<MemLog>, Rc<MemMachine>), StorageError<TestConfig>> {
        Ok(((), Rc::default(), Rc::default()))
    }
}

#[test]
fn the_in_memory_log_store_passes_openraft_storage_suite() {
    GlommioRuntime::new(1)
        .block_on(Suite::test_all(MemBuilder))
        .unwrap();
}

async fn start_node(router: &Router, id: u64) -> (TestRaft, Rc<MemMachine>) {
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
        Rc::new(MemLog::default()),
        machine.clone(),
    )
    .await
    .unwrap();
    router.nodes.borrow_mut().insert(id, raft.clone());
    (raft, machine)
}

/// The leader a node that is not cut off reports, other than `not`.
async fn elected_leader(router: &Router, nodes: &[TestRaft], not: Option<u64>) -> u64 {
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
    let deadline = Instant::now() + ELECTION_WAIT_MAX;
    while machines
        .iter()
        .any(|m| m.state.borrow().commands.len() < count)
    {
        assert!(Instant::now() < deadline, "commands not applied everywhere");
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn three_voters_replicate_and_survive_the_loss_of_the_leader() {
    GlommioRuntime::new(1).block_on(async {
        let router = Router::default();
        let mut nodes = Vec::new();
        let mut machines = Vec::new();
        for id in 1..=3 {
            let (raft, machine) = start_node(&router, id).await;
            nodes.push(raft);
            machines.push(machine);
        }
        let voters: BTreeMap<u64, BasicNode> =
            (1..=3).map(|id| (id, BasicNode::default())).collect();
        nodes[0].initialize(voters).await.unwrap();

        let leader = elected_leader(&router, &nodes, None).await;
        for i in 0..100 {
            let answer = nodes[leader as usize - 1]
                .client_write(format!("command {i}"))
                .await
                .unwrap();
            assert_eq!(answer.data, format!("command {i}"));
        }
        wait_applied(&machines, 100).await;

        // Cut the leader off: the other two elect one of themselves and keep committing.
        router.down.borrow_mut().insert(leader);
        let next = elected_leader(&router, &nodes, Some(leader)).await;
        assert_ne!(next, leader);
        nodes[next as usize - 1]
            .client_write("after the failover".to_string())
            .await
            .unwrap();

        // The old leader comes back as a follower and catches up.
        router.down.borrow_mut().remove(&leader);
        wait_applied(&machines, 101).await;
        for machine in &machines {
            let state = machine.state.borrow();
            assert_eq!(state.commands.len(), 101);
            assert_eq!(state.commands[100], "after the failover");
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
