//! The start-up window: from the first connection a starting broker accepts, a request for a
//! topic that exists gets an answer or a retriable error, never UNKNOWN_TOPIC_OR_PARTITION. With
//! two shards, the one that finishes loading first used to accept connections while the other
//! was still opening its partitions, and ListOffsets for those answered that the topic did not
//! exist: a client may give up on such a topic, or create it again.

mod common;

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::Broker;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, ListOffsetsRequest, ListOffsetsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

const TOPIC: &str = "starting";
/// Enough partitions that opening them takes each shard a while, and the two shards rarely
/// finish at the same moment.
const PARTITIONS: i32 = 200;
const RESTARTS: usize = 6;
/// ListOffsets calls made after the broker reports itself started, per restart.
const POLLS_AFTER_START: usize = 20;

/// Kafka's retriable answers for a partition whose leader is not serving it yet.
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const LEADER_NOT_AVAILABLE: i16 = 5;
const LIST_OFFSETS_VERSION: i16 = 6;

fn list_latest_offsets() -> ListOffsetsRequest {
    let partitions = (0..PARTITIONS)
        .map(|p| {
            ListOffsetsPartition::default()
                .with_partition_index(p)
                .with_timestamp(-1)
        })
        .collect();
    ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partitions(partitions)])
}

/// A connection to whatever listens at `bootstrap`, if anything does. Test ports are in the
/// ephemeral range, so a connect retried in a tight loop while nothing listens can pick the
/// destination port as its own source port and connect to itself (TCP simultaneous open):
/// such a connection is dropped.
fn connect_to_listener(bootstrap: &str) -> Option<TcpStream> {
    let stream = TcpStream::connect(bootstrap).ok()?;
    (stream.local_addr().ok()? != stream.peer_addr().ok()?).then_some(stream)
}

/// Polls ListOffsets for every partition from the first connection the broker accepts until
/// `started` is set and `POLLS_AFTER_START` more calls are answered; returns every error code
/// seen that is not a retriable one, with how many answers were read.
///
/// A connection that fails before its first answer is made again: the broker that just stopped
/// can leave its listening socket open for a moment after it exits (io_uring tears its pending
/// accepts down asynchronously), and a connection queued there is reset, never answered. Once
/// the new broker has answered on a connection, that connection must keep working.
fn poll_from_first_connection(bootstrap: String, started: Arc<AtomicBool>) -> (Vec<i16>, usize) {
    let request = list_latest_offsets();
    let (mut wrong, mut answers, mut after_start) = (Vec::new(), 0, 0);
    while after_start < POLLS_AFTER_START {
        let Some(mut stream) = connect_to_listener(&bootstrap) else {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut answered_here = false;
        while after_start < POLLS_AFTER_START {
            let response = match common::try_call::<ListOffsetsResponse>(
                &mut stream,
                ApiKey::ListOffsets,
                LIST_OFFSETS_VERSION,
                &request,
            ) {
                Ok(response) => response,
                Err(err) if !answered_here => {
                    eprintln!(
                        "a connection closed before its first answer ({err}): connecting again"
                    );
                    break;
                }
                Err(err) => panic!("the broker dropped a connection it had answered on: {err}"),
            };
            answered_here = true;
            answers += 1;
            let codes = response.topics.iter().flat_map(|t| &t.partitions);
            wrong.extend(
                codes
                    .map(|p| p.error_code)
                    .filter(|c| ![0, NOT_LEADER_OR_FOLLOWER, LEADER_NOT_AVAILABLE].contains(c)),
            );
            if started.load(Ordering::Acquire) {
                after_start += 1;
            }
        }
    }
    (wrong, answers)
}

#[test]
fn a_starting_broker_never_denies_a_topic_that_exists() {
    let mut broker = Broker::start("startup-window", 2, &[]);
    common::create_topic(&mut common::connect(&broker), TOPIC, PARTITIONS);
    for restart in 0..RESTARTS {
        // Unclean stops too: recovery makes a shard's loading longer.
        if restart % 2 == 0 {
            assert!(broker.terminate(), "restart {restart}: a clean stop");
        } else {
            broker.kill9();
        }
        let started = Arc::new(AtomicBool::new(false));
        let poller = {
            let (bootstrap, started) = (broker.bootstrap(), started.clone());
            std::thread::spawn(move || poll_from_first_connection(bootstrap, started))
        };
        broker.restart();
        started.store(true, Ordering::Release);
        let (wrong, answers) = poller.join().unwrap();
        assert!(answers >= POLLS_AFTER_START, "restart {restart}");
        assert!(
            wrong.is_empty(),
            "restart {restart}: non-retriable errors for a topic that exists: {:?}",
            &wrong[..wrong.len().min(10)]
        );
    }
}
