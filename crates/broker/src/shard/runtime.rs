//! Starting and stopping the shards: one glommio executor pinned per core, joined into a mesh,
//! each opening the partitions it owns and accepting connections on the shared listen port
//! (SO_REUSEPORT, so the kernel spreads connections across shards).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use futures::future::{select, Either};
use glommio::channels::channel_mesh::{Full, MeshBuilder, Receivers, Senders};
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};
use uuid::Uuid;

use super::controller::Controller;
use super::liveness;
use super::router::{self, Envelope, Router};
use super::{Shard, ShardRequest};
use crate::config::Config;
use crate::group::GroupCoordinator;
use crate::limits;
use crate::metadata::records::MetadataRecord;
use crate::metadata::{self, MetadataImage};
use crate::network;
use crate::quorum::link::QuorumLink;
use crate::quorum::member::QuorumMember;
use crate::quorum::observer::QuorumObserver;
use crate::quorum::state_machine::Publish;
use crate::storage::SystemClock;
use crate::txn::TxnCoordinator;
use crate::types::ShardId;

/// How often a shard checks whether the process was asked to stop.
const STOP_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How often a shard's executor wakes to re-check its cross-shard channels, bounding the delay
/// a missed cross-executor wake-up can cause (see `wake_periodically`).
const SHARED_CHANNEL_RECHECK_INTERVAL: Duration = Duration::from_millis(20);

/// How often a shard waiting to accept clients checks whether its metadata has caught up (see
/// `accept_once_caught_up`).
const CATCH_UP_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// How often a loaded shard checks whether the others have loaded too (see `StartGate`).
const START_GATE_POLL_INTERVAL: Duration = Duration::from_millis(2);

/// Holds every shard's listener back until all shards have opened their partitions, groups and
/// transactions. Connections spread over the shards (SO_REUSEPORT) and any shard routes to any
/// other: a shard accepting early would hand clients partitions that their owner is still
/// loading, and clients would see errors for topics that exist.
struct StartGate {
    shards: usize,
    loaded: AtomicUsize,
}

impl StartGate {
    fn new(shards: usize) -> StartGate {
        StartGate {
            shards,
            loaded: AtomicUsize::new(0),
        }
    }

    /// Counts this shard as loaded and waits for the rest; false if the broker is stopping
    /// first (a shard that failed to load stops them all).
    async fn pass(&self, stop: &AtomicBool) -> bool {
        let loaded = self.loaded.fetch_add(1, Ordering::AcqRel) + 1;
        assert!(loaded <= self.shards, "each shard passes the gate once");
        while self.loaded.load(Ordering::Acquire) < self.shards {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            glommio::timer::sleep(START_GATE_POLL_INTERVAL).await;
        }
        true
    }
}

/// Runs the broker until `stop` is set. Returns whether every shard closed its partitions
/// cleanly, or the first shard's failure (which stops the others).
pub fn run(
    config: Config,
    image: MetadataImage,
    incarnation: Uuid,
    clean_start: bool,
    stop: Arc<AtomicBool>,
) -> Result<bool> {
    let config = Arc::new(config);
    let image = Arc::new(image);
    let gate = Arc::new(StartGate::new(config.cores));
    let mut connection_limits = network::ConnectionLimits::new(
        config.max_connections,
        config.max_connections_per_ip,
        config.max_connections_per_ip_overrides.clone(),
    );
    if let Some(rate) = config.max_connection_creation_rate {
        connection_limits = connection_limits.with_creation_rate(rate);
    }
    let connection_limits = Arc::new(connection_limits);
    let mesh = (config.cores > 1)
        .then(|| MeshBuilder::<Envelope, _>::full(config.cores, limits::CROSS_SHARD_QUEUE_DEPTH));
    let mut handles = Vec::new();
    for core in 0..config.cores {
        let (config, image, mesh, gate, stop) = (
            config.clone(),
            image.clone(),
            mesh.clone(),
            gate.clone(),
            stop.clone(),
        );
        let connection_limits = connection_limits.clone();
        let placement = match config.placement.cpu_of(core) {
            Some(cpu) => Placement::Fixed(cpu),
            None => Placement::Unbound,
        };
        let builder = LocalExecutorBuilder::new(placement)
            .name(&format!("sluice-shard-{core}"))
            .spin_before_park(Duration::from_micros(config.spin_before_park_us));
        let handle = builder
            .spawn(move || async move {
                let started = Started {
                    config,
                    image,
                    incarnation,
                    connection_limits,
                    gate,
                    clean_start,
                };
                let result = shard_main(started, mesh, stop.clone()).await;
                if result.is_err() {
                    // One shard down means the broker cannot serve its partitions: stop them all.
                    stop.store(true, Ordering::Relaxed);
                }
                result
            })
            .map_err(|e| {
                anyhow::anyhow!("starting a shard: {e} (glommio needs io_uring and at least 512 KiB of locked memory: ulimit -l)")
            })?;
        handles.push(handle);
    }
    let mut clean = true;
    let mut failure = None;
    for handle in handles {
        match handle.join() {
            Ok(Ok(shard_clean)) => clean &= shard_clean,
            Ok(Err(err)) => failure = failure.or(Some(err)),
            Err(err) => failure = failure.or(Some(anyhow::anyhow!("shard executor failed: {err}"))),
        }
    }
    match failure {
        Some(err) => Err(err),
        None => Ok(clean),
    }
}

/// Serves `/metrics`, `/health` and `/ready` on shard 0. A busy port is logged and the broker
/// serves Kafka clients without it.
fn start_admin_endpoint(shard: &Rc<Shard>) {
    let Some(addr) = shard.config.admin_listen else {
        return;
    };
    match crate::network::bind_exclusive(addr) {
        Ok(listener) => {
            let bound = listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            tracing::info!("admin endpoint (metrics, health) at http://{bound}");
            glommio::spawn_local(crate::admin::serve(shard.clone(), listener)).detach();
        }
        Err(err) => {
            tracing::error!("admin endpoint: cannot listen on {addr}: {err}; metrics are off")
        }
    }
}

/// glommio can miss the wake-up one executor sends another that is going to sleep: brokers with
/// more shards than cores hung at start now and then (about 1 start in 16 with 6 shards on 2
/// cores, seen too with 2 shards on a loaded machine), every shard parked inside the mesh join,
/// none listening. Each time the reactor wakes it re-checks every shared channel and wakes the
/// tasks that can proceed, so a periodic timer turns a missed wake-up into a short delay. The
/// task ends with the executor.
async fn wake_periodically() {
    loop {
        glommio::timer::sleep(SHARED_CHANNEL_RECHECK_INTERVAL).await;
    }
}

/// Joins the cross-shard mesh, or fails once `limit` has passed without every shard joining.
async fn join_mesh(
    mesh: MeshBuilder<Envelope, Full>,
    limit: Duration,
) -> Result<(Senders<Envelope>, Receivers<Envelope>)> {
    let joined = std::pin::pin!(mesh.join());
    let deadline = std::pin::pin!(glommio::timer::sleep(limit));
    match select(joined, deadline).await {
        Either::Left((Ok(channels), _)) => Ok(channels),
        Either::Left((Err(err), _)) => bail!("joining the shard mesh failed: {err}"),
        Either::Right(_) => bail!(
            "not every shard joined the mesh within {limit:?}: a shard's executor failed to start"
        ),
    }
}

/// What every shard starts from.
struct Started {
    config: Arc<Config>,
    image: Arc<MetadataImage>,
    incarnation: Uuid,
    connection_limits: Arc<network::ConnectionLimits>,
    gate: Arc<StartGate>,
    clean_start: bool,
}

async fn shard_main(
    started: Started,
    mesh: Option<MeshBuilder<Envelope, Full>>,
    stop: Arc<AtomicBool>,
) -> Result<bool> {
    let Started {
        config,
        image,
        incarnation,
        connection_limits,
        gate,
        clean_start,
    } = started;
    glommio::spawn_local(wake_periodically()).detach();
    if let Err(err) = super::io_workers::set_blocking_workers_bound() {
        // Older kernels (before 5.15) keep their own bound: slower flushes, nothing worse.
        tracing::warn!("could not set the bound on io_uring's file workers: {err}");
    }
    let (router, id, receivers) = match mesh {
        Some(mesh) => {
            let (senders, receivers) = join_mesh(
                mesh,
                Duration::from_millis(limits::SHARD_MESH_JOIN_TIMEOUT_MS),
            )
            .await?;
            let id = senders.peer_id();
            (Router::new(senders), id, Some(receivers))
        }
        None => (Router::single(), 0, None),
    };
    let controller = (id == 0).then(Controller::default);
    let shard = Rc::new(Shard {
        id: ShardId(id),
        count: config.cores,
        config: config.clone(),
        image: RefCell::new(image),
        incarnation,
        partitions: RefCell::new(HashMap::new()),
        router,
        controller,
        producer_ids: Default::default(),
        groups: GroupCoordinator::new(&config),
        txns: TxnCoordinator::new(&config),
        peers: network::peers::Peers::new(&config.inter_broker_listener_name, config.node_id),
        fetchers: RefCell::new(HashSet::new()),
        clock: SystemClock,
        stopping: Cell::new(false),
        strays_removed: Cell::new(false),
        request_memory: Rc::new(network::RequestMemory::new(
            config.queued_max_request_bytes as u64,
            config.socket_request_max_bytes as u64,
        )),
        connection_limits,
    });
    if let Some(receivers) = receivers {
        router::serve(&shard, receivers);
    }
    shard.open_owned_partitions(clean_start).await;
    shard.groups.follow_leadership(&shard).await;
    shard.txns.follow_leadership(&shard).await;
    if !gate.pass(&stop).await {
        return Ok(shard.close_all().await);
    }
    // Every listener but the controllers' takes clients; the quorum serves its own.
    let mut bound = Vec::new();
    for listener in config.broker_listeners() {
        let addr = listener.socket_addr()?;
        let socket = glommio::net::TcpListener::bind(addr)
            .map_err(|e| anyhow::anyhow!("listening on {listener}: {e}"))?;
        let name: Rc<str> = listener.name.as_str().into();
        glommio::spawn_local(accept_once_caught_up(shard.clone(), socket, name)).detach();
        bound.push(listener.to_string());
    }
    tracing::info!(
        "shard {id} serving {} partitions, listening on {}",
        shard.partitions.borrow().len(),
        bound.join(",")
    );
    let mut link = None;
    if id == 0 {
        start_admin_endpoint(&shard);
        if config.in_quorum() {
            link = Some(join_metadata_quorum(&shard).await?);
        }
    }
    glommio::spawn_local(shard.clone().retention_loop()).detach();
    glommio::spawn_local(shard.clone().cleaner_loop()).detach();
    glommio::spawn_local(shard.clone().scrub_loop()).detach();
    glommio::spawn_local(shard.clone().isr_expiration_loop()).detach();
    if !config.quorum_voters.is_empty() {
        glommio::spawn_local(liveness::stop_on_storage_failure(
            shard.clone(),
            link.clone(),
            stop.clone(),
        ))
        .detach();
    }
    glommio::spawn_local(TxnCoordinator::timer_loop(shard.clone())).detach();
    glommio::spawn_local(GroupCoordinator::timer_loop(
        shard.clone(),
        config.offsets_retention_check_interval_ms,
    ))
    .detach();
    while !stop.load(Ordering::Relaxed) {
        glommio::timer::sleep(STOP_POLL_INTERVAL).await;
    }
    if let Some(link) = &link {
        liveness::leave(&shard, link).await;
    } else if config.in_quorum() {
        // Serve until shard 0's controlled shutdown has fenced the broker (or given up).
        liveness::wait_until_fenced(&shard).await;
    }
    // A quorum member whose Raft core died left its metadata log failed: not a clean stop.
    let member_failed = link.as_ref().is_some_and(|l| l.fatal().is_some());
    let clean = shard.close_all().await && !member_failed;
    if let Some(stats) = shard.router.stats_summary() {
        tracing::info!("shard {id} {stats}");
    }
    tracing::info!(
        "shard {id} stopped ({})",
        if clean { "clean" } else { "with errors" }
    );
    Ok(clean)
}

/// Accepts clients on `socket` once this shard's metadata has caught up and the broker is in
/// service: its image holds this broker's registration of this run, unfenced. Images apply the
/// quorum's log in order, so everything committed before the registration is in it too. Until
/// then the socket is bound and the kernel queues connections, but no request is read: a
/// broker restarting in a cluster starts from an empty image, and an answer from it (a topic
/// missing from Metadata, say) would make clients drop records for partitions that exist. Nor
/// may it answer while fenced: Metadata lists only unfenced brokers, and a client that reads a
/// broker list without the broker it asked (librdkafka decommissions every broker a Metadata
/// answer leaves out) can be left with no broker to ask at all after a restart of the whole
/// cluster. Kafka's brokers likewise enable request processing only once caught up and
/// unfenced. A broker without a quorum registered, unfenced, before its shards started.
async fn accept_once_caught_up(shard: Rc<Shard>, socket: TcpListener, name: Rc<str>) {
    let waiting_since = Instant::now();
    while !shard.in_service_this_run() {
        if shard.is_stopping() {
            return;
        }
        glommio::timer::sleep(CATCH_UP_POLL_INTERVAL).await;
    }
    if shard.config.in_quorum() {
        tracing::info!(
            "shard {}: metadata caught up and broker unfenced in {} ms; accepting clients on {name}",
            shard.id.0,
            waiting_since.elapsed().as_millis()
        );
    }
    network::accept_loop(shard, socket, name).await
}

/// Shard 0 of a broker whose metadata is a quorum's: starts this broker's part in it (a voter
/// runs a member of the Raft; a broker-only node observes the voters), commits this broker's
/// metadata changes through it from now on, and registers the broker once the cluster is named.
/// Every image the quorum applies is installed on every shard.
async fn join_metadata_quorum(shard: &Rc<Shard>) -> Result<Rc<QuorumLink>> {
    let weak = Rc::downgrade(shard);
    let publish: Publish = Box::new(move |image| {
        let weak = weak.clone();
        Box::pin(async move {
            if let Some(shard) = weak.upgrade() {
                let calls = (0..shard.count)
                    .map(|to| shard.call(ShardId(to), ShardRequest::ApplyMetadata(image.clone())));
                futures::future::join_all(calls).await;
            }
        })
    });
    let link = if shard.config.is_quorum_voter() {
        let member = QuorumMember::start(&shard.config, publish).await?;
        glommio::spawn_local(liveness::fence_silent_brokers(
            shard.clone(),
            member.clone(),
        ))
        .detach();
        Rc::new(QuorumLink::Voter(member))
    } else {
        Rc::new(QuorumLink::Observer(QuorumObserver::start(
            &shard.config,
            publish,
        )))
    };
    shard
        .controller
        .as_ref()
        .expect("shard 0 runs the controller")
        .join_quorum(link.clone());
    // A controller-only node (`process.roles=controller`) votes and decides, but is no broker:
    // it never registers, so no partition is placed on it and clients never hear of it.
    if shard.config.process_roles.broker {
        glommio::spawn_local(register_broker(shard.clone(), link.clone())).detach();
    }
    Ok(link)
}

/// Registers this broker (its endpoints, a new incarnation, the next broker epoch) with the
/// quorum, retrying until the quorum has a leader and a cluster id; then heartbeats.
async fn register_broker(shard: Rc<Shard>, member: Rc<QuorumLink>) {
    let retry = Duration::from_millis(limits::QUORUM_RETRY_INTERVAL_MS);
    loop {
        let image = member.image();
        if !image.cluster_id.is_empty() {
            // Fenced until its first heartbeat at the new epoch reaches the leader (as Kafka's
            // brokers register), so that it leads under a new term.
            let registration =
                metadata::registration(&shard.config, &image, true, shard.incarnation);
            let epoch = registration.epoch;
            match member
                .propose(&[MetadataRecord::RegisterBroker(registration)])
                .await
            {
                Ok(()) => {
                    tracing::info!(
                        "registered with cluster {} at broker epoch {}",
                        image.cluster_id,
                        epoch.0
                    );
                    liveness::heartbeat(shard, member, epoch).await;
                    return;
                }
                Err(err) => tracing::debug!("registering: {err}"),
            }
        }
        if shard.is_stopping() {
            return;
        }
        glommio::timer::sleep(retry).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_that_never_joins_fails_the_others_instead_of_hanging_them() {
        let mesh = MeshBuilder::<Envelope, Full>::full(2, limits::CROSS_SHARD_QUEUE_DEPTH);
        let limit = Duration::from_millis(200);
        let (result, waited) = LocalExecutorBuilder::default()
            .spawn(move || async move {
                let started = std::time::Instant::now();
                let result = join_mesh(mesh, limit).await;
                (result.map(|_| ()), started.elapsed())
            })
            .unwrap()
            .join()
            .unwrap();
        let err = result.expect_err("the second shard never joined");
        assert!(err.to_string().contains("within"), "{err}");
        assert!(waited >= limit, "{waited:?}");
    }

    /// Sluice's glommio copy replaces the process-wide barrier an executor issued before parking
    /// with fences on both sides (third_party/glommio/PATCHED.md). A wake-up lost to a wrong
    /// barrier would leave a message unread with its receiver parked: here nothing else wakes
    /// either executor (no periodic timer), so the exchange would stop and the test fail.
    #[test]
    fn a_parked_shard_wakes_for_every_cross_shard_message() {
        const ROUND_TRIPS: u64 = 20_000;
        let mesh = MeshBuilder::<u64, Full>::full(2, limits::CROSS_SHARD_QUEUE_DEPTH);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        for _ in 0..2 {
            let (mesh, done_tx) = (mesh.clone(), done_tx.clone());
            LocalExecutorBuilder::default()
                .spawn(move || async move {
                    let (senders, mut receivers) = mesh.join().await.unwrap();
                    let me = senders.peer_id();
                    let peer = 1 - me;
                    let inbox = receivers.streams().pop().unwrap().1;
                    for i in 0..ROUND_TRIPS {
                        if me == 0 {
                            // Now and then a pause long enough for the peer to park first.
                            if i % 7 == 0 {
                                glommio::timer::sleep(Duration::from_micros(i % 50)).await;
                            }
                            senders.send_to(peer, i).await.unwrap();
                            assert_eq!(inbox.recv().await, Some(i));
                        } else {
                            let got = inbox.recv().await.unwrap();
                            senders.send_to(peer, got).await.unwrap();
                        }
                    }
                    done_tx.send(me).unwrap();
                })
                .unwrap();
        }
        for _ in 0..2 {
            done_rx
                .recv_timeout(Duration::from_secs(120))
                .expect("a cross-shard message was left unread: lost wake-up");
        }
    }

    /// Sluice's glommio copy keeps the reactor's timeout armed across loop iterations and
    /// replaces it only when it would fire later than the earliest timer
    /// (third_party/glommio/PATCHED.md, patch 3). Keeping one that fires too late would leave a
    /// parked executor asleep past a short sleep's deadline. Here the preemption period and a
    /// concurrent sleep are both `LONG`, so a wrongly kept timeout overshoots a sleep by about
    /// `LONG`, far beyond `WORST_OVERSHOOT`. During the first half, messages from a second
    /// executor wake the sleeper at other times too, so kept timeouts meet both fresh and
    /// stale deadlines; in the second half nothing but its timers wakes it.
    #[test]
    fn a_parked_executor_wakes_for_its_earliest_timer() {
        const SLEEPS: u64 = 2_000;
        const LONG: Duration = Duration::from_secs(30);
        const WORST_OVERSHOOT: Duration = Duration::from_secs(10);
        let (tx, rx) = glommio::channels::shared_channel::new_bounded::<u64>(16);
        let messages_done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sender = LocalExecutorBuilder::default()
            .spawn({
                let messages_done = messages_done.clone();
                move || async move {
                    let tx = tx.connect().await;
                    let mut i = 0;
                    while !messages_done.load(std::sync::atomic::Ordering::Relaxed) {
                        glommio::timer::sleep(Duration::from_micros(300 + i % 700)).await;
                        // Never waits: the receiving executor stops draining when it is done.
                        let _ = tx.try_send(i);
                        i += 1;
                    }
                }
            })
            .unwrap();
        LocalExecutorBuilder::default()
            .preempt_timer(LONG)
            .spawn(move || async move {
                let rx = rx.connect().await;
                let _long = glommio::spawn_local(glommio::timer::sleep(LONG)).detach();
                let _drain =
                    glommio::spawn_local(async move { while rx.recv().await.is_some() {} })
                        .detach();
                for i in 0..SLEEPS {
                    if i == SLEEPS / 2 {
                        messages_done.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    let asked = Duration::from_micros(i * 7 % 1_500);
                    let started = std::time::Instant::now();
                    glommio::timer::sleep(asked).await;
                    let overshoot = started.elapsed().saturating_sub(asked);
                    assert!(
                        overshoot < WORST_OVERSHOOT,
                        "sleep {i} ended {overshoot:?} late: a parked executor kept a later \
                         timeout armed"
                    );
                }
            })
            .unwrap()
            .join()
            .expect("a sleep ended too late");
        sender.join().unwrap();
    }

    #[test]
    fn shards_that_all_join_get_their_channels() {
        let mesh = MeshBuilder::<Envelope, Full>::full(2, limits::CROSS_SHARD_QUEUE_DEPTH);
        let shards: Vec<_> = (0..2)
            .map(|_| {
                let mesh = mesh.clone();
                LocalExecutorBuilder::default()
                    .spawn(move || async move {
                        let (senders, _) = join_mesh(mesh, Duration::from_secs(30)).await?;
                        Ok::<_, anyhow::Error>(senders.peer_id())
                    })
                    .unwrap()
            })
            .collect();
        let mut ids: Vec<usize> = shards
            .into_iter()
            .map(|s| s.join().unwrap().unwrap())
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, [0, 1]);
    }
}
