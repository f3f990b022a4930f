//! Every advertised version of every API, over a raw socket against the real broker: each gets a
//! well-formed answer. Old clients (Debian's librdkafka 2.0.2 in kcat, old kafka-python) pick
//! versions that the clients in the other tests never use.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;
use common::{call, Broker};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn batch() -> Bytes {
    Bytes::from(common::one_record_batch())
}

#[test]
fn every_advertised_version_is_answered() {
    let broker = Broker::start("versions", 2, &[]);
    let mut s = TcpStream::connect(broker.bootstrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();

    for v in 0..=4 {
        let r: ApiVersionsResponse = call(
            &mut s,
            ApiKey::ApiVersions,
            v,
            &ApiVersionsRequest::default(),
        );
        assert_eq!(r.error_code, 0);
    }
    for v in 2..=7 {
        let topic = CreatableTopic::default()
            .with_name(name(&format!("v{v}")))
            .with_num_partitions(2)
            .with_replication_factor(1);
        let r: CreateTopicsResponse = call(
            &mut s,
            ApiKey::CreateTopics,
            v,
            &CreateTopicsRequest::default()
                .with_topics(vec![topic])
                .with_timeout_ms(5000),
        );
        assert_eq!(r.topics[0].error_code, 0, "CreateTopics v{v}");
    }
    for v in 0..=12 {
        let topics = Some(vec![
            MetadataRequestTopic::default().with_name(Some(name("v2")))
        ]);
        let r: MetadataResponse = call(
            &mut s,
            ApiKey::Metadata,
            v,
            &MetadataRequest::default().with_topics(topics),
        );
        assert_eq!(r.topics[0].partitions.len(), 2, "Metadata v{v}");
    }
    // AlterPartition from the partition's leader (this broker: node 1, registered at epoch 0 on
    // its first start): a change to the ISR it has answers its state; a stale broker epoch is
    // refused whole; an ISR naming a broker that is not a replica is refused.
    {
        use kafka_protocol::messages::alter_partition_request::{
            BrokerState, PartitionData, TopicData,
        };
        let r: MetadataResponse = call(
            &mut s,
            ApiKey::Metadata,
            12,
            &MetadataRequest::default().with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(name("v2")))
            ])),
        );
        let topic_id = r.topics[0].topic_id;
        for v in 2..=3 {
            let ask = |epoch: i64, isr: &[i32], s: &mut TcpStream| -> AlterPartitionResponse {
                let mut partition = PartitionData::default().with_partition_index(0);
                if v >= 3 {
                    partition.new_isr_with_epochs = isr
                        .iter()
                        .map(|&id| {
                            BrokerState::default()
                                .with_broker_id(BrokerId(id))
                                .with_broker_epoch(-1)
                        })
                        .collect();
                } else {
                    partition.new_isr = isr.iter().map(|&id| BrokerId(id)).collect();
                }
                let topic = TopicData::default()
                    .with_topic_id(topic_id)
                    .with_partitions(vec![partition]);
                let request = AlterPartitionRequest::default()
                    .with_broker_id(BrokerId(1))
                    .with_broker_epoch(epoch)
                    .with_topics(vec![topic]);
                call(s, ApiKey::AlterPartition, v, &request)
            };
            let r = ask(0, &[1], &mut s);
            assert_eq!(r.error_code, 0, "AlterPartition v{v}");
            let p = &r.topics[0].partitions[0];
            assert_eq!(
                (p.error_code, p.leader_id.0, p.isr.len(), p.partition_epoch),
                (0, 1, 1, 0),
                "AlterPartition v{v}"
            );
            assert_eq!(ask(5, &[1], &mut s).error_code, 77, "AlterPartition v{v}");
            let r = ask(0, &[1, 2], &mut s);
            assert_eq!(
                r.topics[0].partitions[0].error_code, 42,
                "AlterPartition v{v}"
            );
        }
    }
    for v in 3..=11 {
        use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
        let data = PartitionProduceData::default()
            .with_index(0)
            .with_records(Some(batch()));
        let topic = TopicProduceData::default()
            .with_name(name("v2"))
            .with_partition_data(vec![data]);
        let r: ProduceResponse = call(
            &mut s,
            ApiKey::Produce,
            v,
            &ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(5000)
                .with_topic_data(vec![topic]),
        );
        assert_eq!(
            r.responses[0].partition_responses[0].error_code, 0,
            "Produce v{v}"
        );
    }
    let metadata: MetadataResponse = call(
        &mut s,
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name("v2")))
        ])),
    );
    let topic_id = metadata.topics[0].topic_id;
    for v in 4..=18 {
        let partition = FetchPartition::default()
            .with_partition(0)
            .with_fetch_offset(0)
            .with_partition_max_bytes(1 << 20);
        // By name up to v12, by id from v13.
        let topic = if v <= 12 {
            FetchTopic::default().with_topic(name("v2"))
        } else {
            FetchTopic::default().with_topic_id(topic_id)
        }
        .with_partitions(vec![partition]);
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(10)
            .with_max_bytes(1 << 20)
            .with_topics(vec![topic]);
        let r: FetchResponse = call(&mut s, ApiKey::Fetch, v, &request);
        if v >= 13 {
            assert_eq!(r.responses[0].topic_id, topic_id, "Fetch v{v}");
        }
        let p = &r.responses[0].partitions[0];
        assert_eq!((p.error_code, p.high_watermark), (0, 9), "Fetch v{v}");
        assert!(!p.records.as_ref().unwrap().is_empty());
    }
    for v in 1..=6 {
        let topic = ListOffsetsTopic::default()
            .with_name(name("v2"))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(-1)]);
        let r: ListOffsetsResponse = call(
            &mut s,
            ApiKey::ListOffsets,
            v,
            &ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![topic]),
        );
        assert_eq!(r.topics[0].partitions[0].offset, 9, "ListOffsets v{v}");
    }
    // OffsetForLeaderEpoch: partition 0 of v2 holds 9 records, all written under its current
    // leader epoch, whose end is therefore the log end; a newer epoch is undefined (-1, -1, no
    // error); a newer current epoch than the partition's is UNKNOWN_LEADER_EPOCH; partitions and
    // topics that do not exist are UNKNOWN_TOPIC_OR_PARTITION. A consumer (-1) and a follower (a
    // broker id, v3+) are answered alike.
    let epoch = metadata.topics[0].partitions[0].leader_epoch;
    for v in 2..=4 {
        use kafka_protocol::messages::offset_for_leader_epoch_request::{
            OffsetForLeaderPartition, OffsetForLeaderTopic,
        };
        let ask = |partition: i32, current: i32, asked: i32| {
            OffsetForLeaderPartition::default()
                .with_partition(partition)
                .with_current_leader_epoch(current)
                .with_leader_epoch(asked)
        };
        let topics = vec![
            OffsetForLeaderTopic::default()
                .with_topic(name("v2"))
                .with_partitions(vec![
                    ask(0, -1, epoch),
                    ask(0, epoch, epoch + 1),
                    ask(0, epoch + 1, epoch),
                    ask(2, -1, epoch),
                ]),
            OffsetForLeaderTopic::default()
                .with_topic(name("nope"))
                .with_partitions(vec![ask(0, -1, epoch)]),
        ];
        for replica in [-1, 1] {
            let r: OffsetForLeaderEpochResponse = call(
                &mut s,
                ApiKey::OffsetForLeaderEpoch,
                v,
                &OffsetForLeaderEpochRequest::default()
                    .with_replica_id(BrokerId(if v >= 3 { replica } else { -2 }))
                    .with_topics(topics.clone()),
            );
            let answers: Vec<(&str, i32, i16, i32, i64)> = r
                .topics
                .iter()
                .flat_map(|t| {
                    t.partitions.iter().map(|p| {
                        let topic = t.topic.0.as_str();
                        (
                            topic,
                            p.partition,
                            p.error_code,
                            p.leader_epoch,
                            p.end_offset,
                        )
                    })
                })
                .collect();
            assert_eq!(
                answers,
                [
                    ("v2", 0, 0, epoch, 9),
                    ("v2", 0, 0, -1, -1),
                    ("v2", 0, 75, -1, -1),
                    ("v2", 2, 3, -1, -1),
                    ("nope", 0, 3, -1, -1),
                ],
                "OffsetForLeaderEpoch v{v}, replica {replica}"
            );
        }
    }
    for v in 1..=4 {
        let resource = DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("v2"));
        let r: DescribeConfigsResponse = call(
            &mut s,
            ApiKey::DescribeConfigs,
            v,
            &DescribeConfigsRequest::default().with_resources(vec![resource]),
        );
        assert_eq!(r.results[0].error_code, 0, "DescribeConfigs v{v}");
    }
    for v in 0..=1 {
        let r: DescribeClusterResponse = call(
            &mut s,
            ApiKey::DescribeCluster,
            v,
            &DescribeClusterRequest::default(),
        );
        assert_eq!(r.brokers.len(), 1);
    }
    for v in 0..=5 {
        let r: InitProducerIdResponse = call(
            &mut s,
            ApiKey::InitProducerId,
            v,
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60000),
        );
        assert_eq!(r.error_code, 0, "InitProducerId v{v}");
        assert!(r.producer_id.0 >= 0);
    }
    for v in 0..=3 {
        use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
        let topic = CreatePartitionsTopic::default()
            .with_name(name("v3"))
            .with_count(3 + v as i32)
            .with_assignments(None);
        let r: CreatePartitionsResponse = call(
            &mut s,
            ApiKey::CreatePartitions,
            v,
            &CreatePartitionsRequest::default()
                .with_topics(vec![topic])
                .with_timeout_ms(5000),
        );
        assert_eq!(r.results[0].error_code, 0, "CreatePartitions v{v}");
    }
    for v in 0..=2 {
        use kafka_protocol::messages::delete_records_request::{
            DeleteRecordsPartition, DeleteRecordsTopic,
        };
        let topic = DeleteRecordsTopic::default()
            .with_name(name("v2"))
            .with_partitions(vec![DeleteRecordsPartition::default()
                .with_partition_index(0)
                .with_offset(1 + v as i64)]);
        let r: DeleteRecordsResponse = call(
            &mut s,
            ApiKey::DeleteRecords,
            v,
            &DeleteRecordsRequest::default()
                .with_topics(vec![topic])
                .with_timeout_ms(5000),
        );
        assert_eq!(
            r.topics[0].partitions[0].low_watermark,
            1 + v as i64,
            "DeleteRecords v{v}"
        );
    }
    for v in 0..=2 {
        use kafka_protocol::messages::alter_configs_request::{
            AlterConfigsResource, AlterableConfig,
        };
        let config = AlterableConfig::default()
            .with_name(StrBytes::from_static_str("retention.ms"))
            .with_value(Some(StrBytes::from_static_str("86400000")));
        let resource = AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("v4"))
            .with_configs(vec![config]);
        let r: AlterConfigsResponse = call(
            &mut s,
            ApiKey::AlterConfigs,
            v,
            &AlterConfigsRequest::default().with_resources(vec![resource]),
        );
        assert_eq!(r.responses[0].error_code, 0, "AlterConfigs v{v}");
    }
    for v in 0..=1 {
        use kafka_protocol::messages::incremental_alter_configs_request::{
            AlterConfigsResource, AlterableConfig,
        };
        let config = AlterableConfig::default()
            .with_name(StrBytes::from_static_str("retention.ms"))
            .with_value(Some(StrBytes::from_static_str("3600000")));
        let resource = AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("v4"))
            .with_configs(vec![config]);
        let r: IncrementalAlterConfigsResponse = call(
            &mut s,
            ApiKey::IncrementalAlterConfigs,
            v,
            &IncrementalAlterConfigsRequest::default().with_resources(vec![resource]),
        );
        assert_eq!(r.responses[0].error_code, 0, "IncrementalAlterConfigs v{v}");
    }
    for v in 1..=4 {
        let r: DescribeLogDirsResponse = call(
            &mut s,
            ApiKey::DescribeLogDirs,
            v,
            // Null topics: every partition.
            &DescribeLogDirsRequest::default().with_topics(None),
        );
        assert_eq!(r.results.len(), 1, "DescribeLogDirs v{v}");
        let dir = &r.results[0];
        let sizes: Vec<i64> = dir
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.partition_size))
            .collect();
        assert!(
            !sizes.is_empty() && sizes.iter().any(|s| *s > 0),
            "v{v}: {sizes:?}"
        );
        if v >= 4 {
            assert!(dir.total_bytes > 0 && dir.usable_bytes > 0);
        }
    }
    // No authorizer: every ACL API answers SECURITY_DISABLED, per ACL and per filter, as Kafka
    // does without one (MirrorMaker 2 depends on it to skip ACL syncing).
    const SECURITY_DISABLED: i16 = 54;
    for v in 1..=3 {
        let r: DescribeAclsResponse = call(
            &mut s,
            ApiKey::DescribeAcls,
            v,
            &DescribeAclsRequest::default()
                .with_resource_type_filter(1)
                .with_pattern_type_filter(1)
                .with_operation(1)
                .with_permission_type(1),
        );
        assert_eq!(r.error_code, SECURITY_DISABLED, "DescribeAcls v{v}");
        assert!(r.resources.is_empty() && r.error_message.is_some());
        use kafka_protocol::messages::create_acls_request::AclCreation;
        let creation = AclCreation::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("v2"))
            .with_resource_pattern_type(3)
            .with_principal(StrBytes::from_static_str("User:alice"))
            .with_host(StrBytes::from_static_str("*"))
            .with_operation(3)
            .with_permission_type(3);
        let r: CreateAclsResponse = call(
            &mut s,
            ApiKey::CreateAcls,
            v,
            &CreateAclsRequest::default().with_creations(vec![creation.clone(), creation]),
        );
        let codes: Vec<i16> = r.results.iter().map(|c| c.error_code).collect();
        assert_eq!(codes, [SECURITY_DISABLED; 2], "CreateAcls v{v}");
        use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
        let filter = DeleteAclsFilter::default()
            .with_resource_type_filter(1)
            .with_pattern_type_filter(1)
            .with_operation(1)
            .with_permission_type(1);
        let r: DeleteAclsResponse = call(
            &mut s,
            ApiKey::DeleteAcls,
            v,
            &DeleteAclsRequest::default().with_filters(vec![filter]),
        );
        let codes: Vec<i16> = r.filter_results.iter().map(|f| f.error_code).collect();
        assert_eq!(codes, [SECURITY_DISABLED], "DeleteAcls v{v}");
    }
    // DescribeTopicPartitions pages by partitions, topics in name order: an unknown topic gets its
    // error in place; v2 (2) and v4 (2) with a limit of 3 stop after v4's partition 0; the cursor
    // resumes there.
    {
        use kafka_protocol::messages::describe_topic_partitions_request::{Cursor, TopicRequest};
        let wanted: Vec<TopicRequest> = ["v4", "nope", "v2"]
            .iter()
            .map(|n| TopicRequest::default().with_name(name(n)))
            .collect();
        let page = |cursor: Option<Cursor>, s: &mut TcpStream| -> DescribeTopicPartitionsResponse {
            call(
                s,
                ApiKey::DescribeTopicPartitions,
                0,
                &DescribeTopicPartitionsRequest::default()
                    .with_topics(wanted.clone())
                    .with_response_partition_limit(3)
                    .with_cursor(cursor),
            )
        };
        let listed = |r: &DescribeTopicPartitionsResponse| -> Vec<(String, i16, Vec<i32>)> {
            r.topics
                .iter()
                .map(|t| {
                    let name = t.name.as_ref().map_or(String::new(), |n| n.to_string());
                    let parts = t.partitions.iter().map(|p| p.partition_index).collect();
                    (name, t.error_code, parts)
                })
                .collect()
        };
        let first = page(None, &mut s);
        assert_eq!(
            listed(&first),
            [
                ("nope".into(), 3, vec![]),
                ("v2".into(), 0, vec![0, 1]),
                ("v4".into(), 0, vec![0])
            ]
        );
        let next = first.next_cursor.expect("a cursor after 3 partitions");
        assert_eq!(
            (next.topic_name.to_string(), next.partition_index),
            ("v4".into(), 1)
        );
        let cursor = Cursor::default()
            .with_topic_name(next.topic_name)
            .with_partition_index(next.partition_index);
        let second = page(Some(cursor), &mut s);
        assert_eq!(listed(&second), [("v4".into(), 0, vec![1])]);
        assert!(second.next_cursor.is_none());
    }
    for v in 1..=6 {
        let r: DeleteTopicsResponse = if v >= 6 {
            use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
            let topic = DeleteTopicState::default().with_name(Some(name(&format!("v{}", v + 1))));
            call(
                &mut s,
                ApiKey::DeleteTopics,
                v,
                &DeleteTopicsRequest::default()
                    .with_topics(vec![topic])
                    .with_timeout_ms(5000),
            )
        } else {
            call(
                &mut s,
                ApiKey::DeleteTopics,
                v,
                &DeleteTopicsRequest::default()
                    .with_topic_names(vec![name(&format!("v{}", v + 1))])
                    .with_timeout_ms(5000),
            )
        };
        assert_eq!(r.responses[0].error_code, 0, "DeleteTopics v{v}");
    }
}
