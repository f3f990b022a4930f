//! Mutated requests against the real broker. Realistic requests of every kind clients send
//! (naming a topic that holds records, a group, a transactional producer) are each mutated many
//! times (boundary values where counts, lengths, offsets and timeouts live, cuts, splices; the
//! mutations of `fuzz/src/lib.rs`) and sent over raw sockets, and so is the default request of
//! every other supported API and version, fewer times. Whatever still decodes reaches the
//! handlers with values no client sends. The broker must answer or close the connection, keep
//! serving every shard, and log no panic.

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod targets;

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;
use common::{Broker, SHARD_COUNTS};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use targets::mutations::{mutate, Rng};

/// Mutants sent per seed request.
const MUTANTS_PER_SEED: usize = 250;
/// Mutants sent per default request of every supported API and version (about 300 of them).
const DEFAULT_MUTANTS_PER_SEED: usize = 10;
/// How long a mutant's answer is waited for before its connection is dropped: a mutant may
/// legitimately wait (a long-polling Fetch, a JoinGroup), and the broker must cope with the
/// client going away meanwhile.
const ANSWER_WAIT: Duration = Duration::from_millis(300);
/// A seed is a valid request and must be answered, fsync included, however slow the disk.
const SEED_ANSWER_WAIT: Duration = Duration::from_secs(30);
const TOPIC: &str = "mutants";
const PARTITIONS: i32 = 4;

fn name(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn topic() -> TopicName {
    TopicName(name(TOPIC))
}

/// The requests mutated: (API, version, body), several versions where the encodings differ.
fn seed_requests() -> Vec<(ApiKey, i16, RequestKind)> {
    use RequestKind as R;
    let records = Bytes::from(common::one_record_batch());
    let produce = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(3000)
        .with_topic_data(vec![produce_request::TopicProduceData::default()
            .with_name(topic())
            .with_partition_data(
                (0..2)
                    .map(|p| {
                        produce_request::PartitionProduceData::default()
                            .with_index(p)
                            .with_records(Some(records.clone()))
                    })
                    .collect(),
            )]);
    let fetch = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(20)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![fetch_request::FetchTopic::default()
            .with_topic(topic())
            .with_partitions(
                (0..2)
                    .map(|p| {
                        fetch_request::FetchPartition::default()
                            .with_partition(p)
                            .with_fetch_offset(0)
                            .with_partition_max_bytes(65536)
                    })
                    .collect(),
            )]);
    let list_offsets = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
            .with_name(topic())
            .with_partitions(
                [-1i64, -2, 1000]
                    .iter()
                    .enumerate()
                    .map(|(p, &ts)| {
                        list_offsets_request::ListOffsetsPartition::default()
                            .with_partition_index(p as i32)
                            .with_timestamp(ts)
                    })
                    .collect(),
            )]);
    let metadata = MetadataRequest::default().with_topics(Some(vec![
        metadata_request::MetadataRequestTopic::default().with_name(Some(topic())),
    ]));
    let epoch_ends = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                .with_topic(topic())
                .with_partitions(
                    (0..PARTITIONS)
                        .map(|p| {
                            offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                                .with_partition(p)
                                .with_current_leader_epoch(-1)
                                .with_leader_epoch(p - 1)
                        })
                        .collect(),
                ),
        ]);
    let group = || GroupId(name("g"));
    let commit = OffsetCommitRequest::default()
        .with_group_id(group())
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![
            offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(topic())
                .with_partitions(vec![
                    offset_commit_request::OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(1)
                        .with_committed_metadata(Some(name("m"))),
                ]),
        ]);
    let offset_fetch = OffsetFetchRequest::default()
        .with_group_id(group())
        .with_topics(Some(vec![
            offset_fetch_request::OffsetFetchRequestTopic::default()
                .with_name(topic())
                .with_partition_indexes(vec![0, 1]),
        ]));
    let join = JoinGroupRequest::default()
        .with_group_id(group())
        .with_session_timeout_ms(6000)
        .with_rebalance_timeout_ms(100)
        .with_protocol_type(name("consumer"))
        .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
        )
        .with_name(name("range"))
        .with_metadata(Bytes::from_static(
            b"\x00\x01\x00\x00\x00\x01\x00\x07mutants",
        ))]);
    let create = CreateTopicsRequest::default()
        .with_validate_only(true)
        .with_timeout_ms(3000)
        .with_topics(vec![create_topics_request::CreatableTopic::default()
            .with_name(TopicName(name("fresh")))
            .with_num_partitions(3)
            .with_replication_factor(1)
            .with_configs(vec![
                create_topics_request::CreatableTopicConfig::default()
                    .with_name(name("retention.ms"))
                    .with_value(Some(name("60000"))),
            ])]);
    let create_partitions = CreatePartitionsRequest::default()
        .with_validate_only(true)
        .with_timeout_ms(3000)
        .with_topics(vec![
            create_partitions_request::CreatePartitionsTopic::default()
                .with_name(topic())
                .with_count(PARTITIONS + 2),
        ]);
    let delete_records = DeleteRecordsRequest::default()
        .with_timeout_ms(3000)
        .with_topics(vec![delete_records_request::DeleteRecordsTopic::default()
            .with_name(topic())
            .with_partitions(vec![
                delete_records_request::DeleteRecordsPartition::default()
                    .with_partition_index(3)
                    .with_offset(0),
            ])]);
    let describe_configs = DescribeConfigsRequest::default().with_resources(vec![
        describe_configs_request::DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(name(TOPIC)),
    ]);
    let alter_configs = IncrementalAlterConfigsRequest::default()
        .with_validate_only(true)
        .with_resources(vec![
            incremental_alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(name(TOPIC))
                .with_configs(vec![
                    incremental_alter_configs_request::AlterableConfig::default()
                        .with_name(name("segment.bytes"))
                        .with_config_operation(0)
                        .with_value(Some(name("1048576"))),
                ]),
        ]);
    let txn = || TransactionalId(name("t"));
    let init_producer = InitProducerIdRequest::default()
        .with_transactional_id(Some(txn()))
        .with_transaction_timeout_ms(60000);
    let add_partitions = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(txn())
        .with_v3_and_below_producer_id(ProducerId(0))
        .with_v3_and_below_topics(vec![
            add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                .with_name(topic())
                .with_partitions(vec![2]),
        ]);
    let end_txn = EndTxnRequest::default()
        .with_transactional_id(txn())
        .with_committed(true);
    let txn_commit = TxnOffsetCommitRequest::default()
        .with_transactional_id(txn())
        .with_group_id(group())
        .with_topics(vec![
            txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                .with_name(topic())
                .with_partitions(vec![
                    txn_offset_commit_request::TxnOffsetCommitRequestPartition::default()
                        .with_partition_index(2)
                        .with_committed_offset(0),
                ]),
        ]);
    let describe_partitions = DescribeTopicPartitionsRequest::default()
        .with_response_partition_limit(2)
        .with_topics(vec![
            describe_topic_partitions_request::TopicRequest::default().with_name(topic()),
        ]);
    vec![
        (ApiKey::Produce, 3, R::Produce(produce.clone())),
        (ApiKey::Produce, 9, R::Produce(produce)),
        (ApiKey::Fetch, 4, R::Fetch(fetch.clone())),
        (ApiKey::Fetch, 12, R::Fetch(fetch)),
        (ApiKey::ListOffsets, 1, R::ListOffsets(list_offsets.clone())),
        (ApiKey::ListOffsets, 6, R::ListOffsets(list_offsets)),
        (ApiKey::Metadata, 1, R::Metadata(metadata.clone())),
        (ApiKey::Metadata, 12, R::Metadata(metadata)),
        (
            ApiKey::OffsetForLeaderEpoch,
            4,
            R::OffsetForLeaderEpoch(epoch_ends),
        ),
        (ApiKey::OffsetCommit, 8, R::OffsetCommit(commit)),
        (ApiKey::OffsetFetch, 7, R::OffsetFetch(offset_fetch)),
        (ApiKey::JoinGroup, 7, R::JoinGroup(join)),
        (ApiKey::CreateTopics, 7, R::CreateTopics(create)),
        (
            ApiKey::CreatePartitions,
            3,
            R::CreatePartitions(create_partitions),
        ),
        (ApiKey::DeleteRecords, 2, R::DeleteRecords(delete_records)),
        (
            ApiKey::DescribeConfigs,
            4,
            R::DescribeConfigs(describe_configs),
        ),
        (
            ApiKey::IncrementalAlterConfigs,
            1,
            R::IncrementalAlterConfigs(alter_configs),
        ),
        (ApiKey::InitProducerId, 4, R::InitProducerId(init_producer)),
        (
            ApiKey::AddPartitionsToTxn,
            3,
            R::AddPartitionsToTxn(add_partitions),
        ),
        (ApiKey::EndTxn, 3, R::EndTxn(end_txn)),
        (ApiKey::TxnOffsetCommit, 3, R::TxnOffsetCommit(txn_commit)),
        (
            ApiKey::DescribeTopicPartitions,
            0,
            R::DescribeTopicPartitions(describe_partitions),
        ),
    ]
}

/// Sends one frame and waits up to `ANSWER_WAIT` for an answer; `None` when the broker closed
/// the connection or did not answer in time (then the connection is dropped).
fn exchange(stream: &mut TcpStream, frame: &[u8]) -> Option<()> {
    let mut sized = (frame.len() as i32).to_be_bytes().to_vec();
    sized.extend_from_slice(frame);
    stream.write_all(&sized).ok()?;
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).ok()?;
    let len = usize::try_from(i32::from_be_bytes(size)).ok()?;
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).ok()
}

fn open(broker: &Broker, wait: Duration) -> TcpStream {
    let stream = TcpStream::connect(broker.bootstrap()).unwrap();
    stream.set_read_timeout(Some(wait)).unwrap();
    stream
}

/// Every partition of the topic (more than it was created with, where a mutated
/// CreatePartitions got through) answers: every shard still serves.
fn every_partition_serves(broker: &Broker) {
    let mut s = common::connect(broker);
    let metadata: MetadataResponse = common::call(
        &mut s,
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(Some(vec![
            metadata_request::MetadataRequestTopic::default().with_name(Some(topic())),
        ])),
    );
    let partitions = metadata.topics[0].partitions.len() as i32;
    assert!(partitions >= PARTITIONS);
    for partition in 0..partitions {
        let start = common::earliest_offset(&mut s, TOPIC, partition);
        assert!(start >= 0, "partition {partition} answers ListOffsets");
    }
}

/// Sends `per_seed` mutants of each seed over one connection (a fresh one after each that got
/// no answer); returns how many were answered and how many were not.
fn send_mutants(
    broker: &mut Broker,
    seeds: &[Vec<u8>],
    per_seed: usize,
    rng: &mut Rng,
) -> (usize, usize) {
    let (mut answered, mut refused) = (0, 0);
    let mut stream = open(broker, ANSWER_WAIT);
    for seed in seeds {
        for _ in 0..per_seed {
            let other = &seeds[rng.below(seeds.len())];
            let frame = mutate(seed, other, rng);
            if exchange(&mut stream, &frame).is_some() {
                answered += 1;
            } else {
                refused += 1;
                stream = open(broker, ANSWER_WAIT);
            }
        }
        assert!(
            broker.is_running(),
            "{} shard(s): the broker died",
            broker.cores
        );
    }
    (answered, refused)
}

#[test]
fn mutated_requests_get_answers_or_closed_connections_and_the_broker_keeps_serving() {
    for cores in SHARD_COUNTS {
        let mut broker = Broker::start("mutants", cores, &[]);
        let mut s = common::connect(&broker);
        common::create_topic(&mut s, TOPIC, PARTITIONS);
        let seeds: Vec<Vec<u8>> = seed_requests()
            .iter()
            .map(|(api, version, body)| targets::seeds::frame(*api, *version, body))
            .collect();
        for (i, seed) in seeds.iter().enumerate() {
            assert!(
                exchange(&mut open(&broker, SEED_ANSWER_WAIT), seed).is_some(),
                "{cores} shard(s): seed request {i} is answered"
            );
        }
        let mut rng = Rng(0x6d75_7461 + cores as u64);
        let (answered, refused) = send_mutants(&mut broker, &seeds, MUTANTS_PER_SEED, &mut rng);
        assert!(
            answered > 0 && refused > 0,
            "{cores} shard(s): {answered} answered, {refused} refused"
        );
        eprintln!("{cores} shard(s): {answered} mutants answered, {refused} closed or unanswered");
        // Every other API and version too, from its default request.
        let defaults = targets::seeds::request_frames();
        send_mutants(&mut broker, &defaults, DEFAULT_MUTANTS_PER_SEED, &mut rng);
        every_partition_serves(&broker);
        let log = broker.log();
        assert!(
            !log.contains("panicked"),
            "{cores} shard(s): a panic was logged:\n{log}"
        );
    }
}
