//! Bad input over a raw socket against the real broker: oversized, truncated and garbage frames,
//! unknown APIs and versions, corrupt batches and unknown topics each get their Kafka error code
//! or a closed connection, and the broker keeps serving.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Buf, Bytes};
use common::{Broker, SHARD_COUNTS};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, CreateTopicsRequest, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use sluice_client::blocking::read_frame;
use sluice_client::frame;
use sluice_client::frame::RequestId;

/// The correlation id of every request `request_frame` builds.
const CORRELATION_ID: i32 = 42;

fn connect(broker: &Broker) -> TcpStream {
    let stream = TcpStream::connect(broker.bootstrap()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

fn send_raw(stream: &mut TcpStream, frame: &[u8]) {
    stream
        .write_all(&(frame.len() as i32).to_be_bytes())
        .unwrap();
    stream.write_all(frame).unwrap();
}

/// A request frame without its size prefix, for tests that send it damaged.
fn request_frame(api: ApiKey, version: i16, body: &impl Encodable) -> Vec<u8> {
    let id = RequestId {
        correlation_id: CORRELATION_ID,
        client_id: "raw",
    };
    let frame = frame::encode_request(api, version, id, body).unwrap();
    frame[frame::SIZE_PREFIX_BYTES..].to_vec()
}

/// Reads one response frame; `None` if the broker closed the connection.
fn read_response(stream: &mut TcpStream) -> Option<Bytes> {
    read_frame(stream, common::RESPONSE_MAX_BYTES).ok()
}

fn assert_closed(stream: &mut TcpStream, what: &str) {
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) | Err(_) => {}
        Ok(_) => panic!("{what}: the broker answered instead of closing"),
    }
}

fn call<R: Decodable>(broker: &Broker, api: ApiKey, version: i16, body: &impl Encodable) -> R {
    let mut stream = connect(broker);
    send_raw(&mut stream, &request_frame(api, version, body));
    let response = read_response(&mut stream).expect("a response");
    frame::decode_response(api, version, CORRELATION_ID, response).unwrap()
}

fn still_serving(broker: &Broker) {
    let metadata: MetadataResponse =
        call(broker, ApiKey::Metadata, 12, &MetadataRequest::default());
    assert_eq!(metadata.brokers.len(), 1);
}

#[test]
fn malformed_frames_close_the_connection_and_nothing_else() {
    for cores in SHARD_COUNTS {
        let broker = Broker::start("frames", cores, &["socket.request.max.bytes=65536"]);
        let mut oversized = connect(&broker);
        oversized.write_all(&(1_000_000i32).to_be_bytes()).unwrap();
        assert_closed(&mut oversized, "frame over socket.request.max.bytes");

        let mut negative = connect(&broker);
        negative.write_all(&(-5i32).to_be_bytes()).unwrap();
        assert_closed(&mut negative, "negative frame size");

        let mut unknown_api = connect(&broker);
        send_raw(&mut unknown_api, &[0x7f, 0x7f, 0, 0, 0, 0, 0, 1]);
        assert_closed(&mut unknown_api, "unknown API key");

        let mut garbage = connect(&broker);
        let mut frame = request_frame(ApiKey::Metadata, 12, &MetadataRequest::default());
        frame.truncate(12);
        frame.extend_from_slice(&[0xff; 7]);
        send_raw(&mut garbage, &frame);
        assert_closed(&mut garbage, "garbage Metadata body");

        // An array count of 2^31 in a tiny frame: refused before any allocation.
        let mut huge_count = connect(&broker);
        let mut frame = request_frame(ApiKey::CreateTopics, 2, &CreateTopicsRequest::default());
        let header_len = frame.len() - 9; // topics count (4) + timeout (4) + validate_only (1)
        frame[header_len..header_len + 4].copy_from_slice(&i32::MAX.to_be_bytes());
        send_raw(&mut huge_count, &frame);
        assert_closed(&mut huge_count, "absurd array count");

        let mut truncated = connect(&broker);
        truncated.write_all(&(100i32).to_be_bytes()).unwrap();
        truncated.write_all(&[0, 3, 0, 12]).unwrap();
        drop(truncated); // the broker sees a truncated frame and closes its side

        let mut old_produce = connect(&broker);
        send_raw(&mut old_produce, &[0, 0, 0, 1, 0, 0, 0, 9, 0, 0]);
        assert_closed(&mut old_produce, "Produce v1 (message format 0/1)");

        still_serving(&broker);
    }
}

#[test]
fn api_versions_too_new_gets_the_v0_answer_with_unsupported_version() {
    let broker = Broker::start("apiversions", 1, &[]);
    let mut stream = connect(&broker);
    let mut frame = Vec::new();
    frame.extend_from_slice(&(ApiKey::ApiVersions as i16).to_be_bytes());
    frame.extend_from_slice(&99i16.to_be_bytes());
    frame.extend_from_slice(&7i32.to_be_bytes());
    frame.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
    send_raw(&mut stream, &frame);
    let mut response = read_response(&mut stream).unwrap();
    assert_eq!(response.get_i32(), 7, "correlation id");
    let body = ApiVersionsResponse::decode(&mut response, 0).unwrap();
    assert_eq!(body.error_code, 35);
    let produce = body.api_keys.iter().find(|k| k.api_key == 0).unwrap();
    assert_eq!((produce.min_version, produce.max_version), (0, 11));
}

fn produce_to(topic: &str, records: Bytes) -> ProduceRequest {
    let partition = PartitionProduceData::default()
        .with_index(0)
        .with_records(Some(records));
    let topic = TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_string(topic.to_string())))
        .with_partition_data(vec![partition]);
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![topic])
}

fn valid_batch() -> Vec<u8> {
    common::one_record_batch()
}

fn produce_error(broker: &Broker, topic: &str, records: Vec<u8>) -> i16 {
    let response: ProduceResponse = call(
        broker,
        ApiKey::Produce,
        9,
        &produce_to(topic, Bytes::from(records)),
    );
    response.responses[0].partition_responses[0].error_code
}

#[test]
fn bad_batches_and_unknown_topics_get_kafka_error_codes() {
    for cores in SHARD_COUNTS {
        let broker = Broker::start(
            "batches",
            cores,
            &["message.max.bytes=1000", "auto.create.topics.enable=false"],
        );
        let _: MetadataResponse = call(&broker, ApiKey::Metadata, 12, &MetadataRequest::default());
        let create = kafka_protocol::messages::create_topics_request::CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("t")))
            .with_num_partitions(1)
            .with_replication_factor(1);
        let _: kafka_protocol::messages::CreateTopicsResponse = call(
            &broker,
            ApiKey::CreateTopics,
            5,
            &CreateTopicsRequest::default()
                .with_topics(vec![create])
                .with_timeout_ms(5000),
        );

        assert_eq!(produce_error(&broker, "t", valid_batch()), 0);
        let mut bad_crc = valid_batch();
        *bad_crc.last_mut().unwrap() ^= 0xff;
        assert_eq!(produce_error(&broker, "t", bad_crc), 2, "CORRUPT_MESSAGE");
        let mut bad_magic = valid_batch();
        bad_magic[16] = 1;
        assert_eq!(
            produce_error(&broker, "t", bad_magic),
            43,
            "UNSUPPORTED_FOR_MESSAGE_FORMAT"
        );
        let mut bad_count = valid_batch();
        bad_count[57..61].copy_from_slice(&5i32.to_be_bytes());
        let crc = crc32c::crc32c(&bad_count[21..]);
        bad_count[17..21].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(
            produce_error(&broker, "t", bad_count),
            87,
            "INVALID_RECORD: lastOffsetDelta vs count, as Kafka's validateBatch"
        );
        let mut control = valid_batch();
        control[22] |= 0x20;
        let crc = crc32c::crc32c(&control[21..]);
        control[17..21].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(
            produce_error(&broker, "t", control),
            87,
            "INVALID_RECORD: clients may not write control batches"
        );
        let mut big = valid_batch();
        big.truncate(61);
        let value = vec![b'x'; 2000];
        let mut record = vec![];
        let len = (7 + value.len() + 2) as i64; // attrs, ts, off, key, varint len (2 bytes), value, headers
        record.extend(zigzag(len));
        record.extend_from_slice(&[0, 0, 0, 1]);
        record.extend(zigzag(value.len() as i64));
        record.extend_from_slice(&value);
        record.push(0);
        big.extend_from_slice(&record);
        let total = big.len() as i32 - 12;
        big[8..12].copy_from_slice(&total.to_be_bytes());
        let crc = crc32c::crc32c(&big[21..]);
        big[17..21].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(
            produce_error(&broker, "t", big),
            10,
            "MESSAGE_TOO_LARGE over message.max.bytes"
        );
        assert_eq!(
            produce_error(&broker, "t", valid_batch()[..30].to_vec()),
            2,
            "truncated batch"
        );
        assert_eq!(
            produce_error(&broker, "nope", valid_batch()),
            3,
            "UNKNOWN_TOPIC_OR_PARTITION"
        );

        let request = MetadataRequest::default().with_topics(Some(vec![
            kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                .with_name(Some(TopicName(StrBytes::from_static_str("nope")))),
        ]));
        let metadata: MetadataResponse = call(&broker, ApiKey::Metadata, 12, &request);
        assert_eq!(
            metadata.topics[0].error_code, 3,
            "no auto-create when disabled"
        );
        still_serving(&broker);
    }
}

/// A batch of one record whose bytes after the length prefix are `body`, its length prefix
/// `length`: valid CRC, header counting one record at offset delta 0.
fn one_record(length: &[u8], body: &[u8], timestamp_ms: i64) -> Vec<u8> {
    let mut b = valid_batch();
    b.truncate(61);
    b.extend_from_slice(length);
    b.extend_from_slice(body);
    b[27..35].copy_from_slice(&timestamp_ms.to_be_bytes());
    b[35..43].copy_from_slice(&timestamp_ms.to_be_bytes());
    let total = b.len() as i32 - 12;
    b[8..12].copy_from_slice(&total.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

fn create_topic(broker: &Broker, name: &'static str, configs: &[(&'static str, &'static str)]) {
    use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
    let configs = configs
        .iter()
        .map(|(k, v)| {
            CreatableTopicConfig::default()
                .with_name(StrBytes::from_static_str(k))
                .with_value(Some(StrBytes::from_static_str(v)))
        })
        .collect();
    let create = CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_static_str(name)))
        .with_num_partitions(1)
        .with_replication_factor(1)
        .with_configs(configs);
    let response: kafka_protocol::messages::CreateTopicsResponse = call(
        broker,
        ApiKey::CreateTopics,
        5,
        &CreateTopicsRequest::default()
            .with_topics(vec![create])
            .with_timeout_ms(5000),
    );
    assert_eq!(response.topics[0].error_code, 0, "{name} created");
}

fn produce_at(
    broker: &Broker,
    topic: &str,
    records: Vec<u8>,
    version: i16,
) -> kafka_protocol::messages::produce_response::PartitionProduceResponse {
    let response: ProduceResponse = call(
        broker,
        ApiKey::Produce,
        version,
        &produce_to(topic, Bytes::from(records)),
    );
    response.responses[0].partition_responses[0].clone()
}

#[test]
fn broken_records_are_refused_and_nothing_of_them_is_stored() {
    let broker = Broker::start("records", 1, &["auto.create.topics.enable=false"]);
    create_topic(&broker, "r", &[]);
    // attributes, timestamp delta, offset delta, key "k", value "v", no headers
    let body = [0, 0, 0, 2, b'k', 2, b'v', 0];
    let length = zigzag(body.len() as i64);
    assert_eq!(
        produce_error(&broker, "r", one_record(&length, &body, 1000)),
        0
    );
    let overflowing_length = one_record(&[0xff; 10], &body, 1000);
    let huge_key = [
        &[0, 0, 0][..],
        &zigzag(i32::MAX as i64),
        &[b'k', 2, b'v', 0],
    ]
    .concat();
    let huge_key = one_record(&zigzag(huge_key.len() as i64), &huge_key, 1000);
    let endless_headers = [
        &[0, 0, 0, 2, b'k', 2, b'v'][..],
        &[0xff, 0xff, 0xff, 0xff, 0x07],
    ]
    .concat();
    let endless_headers = one_record(
        &zigzag(endless_headers.len() as i64),
        &endless_headers,
        1000,
    );
    // The fuzzer's batch: the header covers one offset, its only record says offset delta 16.
    let delta_16 = [0, 0, 32, 2, b'k', 2, b'v', 0];
    let delta_16 = one_record(&length, &delta_16, 1000);
    for (what, batch) in [
        ("a length varint that overflows", overflowing_length),
        ("a key of 2^31-1 bytes", huge_key),
        ("a header count that never ends", endless_headers),
        ("offset delta 16 in a one-offset batch", delta_16.clone()),
    ] {
        let response = produce_at(&broker, "r", batch, 9);
        assert_eq!(response.error_code, 87, "INVALID_RECORD: {what}");
        assert_eq!(response.base_offset, -1, "{what}");
    }
    let response = produce_at(&broker, "r", delta_16, 9);
    assert_eq!(
        response
            .record_errors
            .iter()
            .map(|e| e.batch_index)
            .collect::<Vec<_>>(),
        [0],
        "the out-of-sequence delta is explained per record"
    );
    let stored = fetch(&broker, "r", 0, 0);
    assert_eq!(stored.high_watermark, 1, "only the valid batch is stored");
    assert_eq!(
        produce_error(&broker, "r", one_record(&length, &body, 1000)),
        0
    );
    assert_eq!(fetch(&broker, "r", 0, 0).high_watermark, 2);
    still_serving(&broker);
}

#[test]
fn per_record_refusals_carry_record_errors_from_produce_v8() {
    let broker = Broker::start(
        "record-errors",
        1,
        &[
            "auto.create.topics.enable=false",
            "log.message.timestamp.after.max.ms=60000",
        ],
    );
    create_topic(&broker, "compacted", &[("cleanup.policy", "compact")]);
    create_topic(
        &broker,
        "recent",
        &[("message.timestamp.before.max.ms", "86400000")],
    );
    let keyless = [0, 0, 0, 1, 2, b'v', 0];
    let keyless = one_record(&zigzag(keyless.len() as i64), &keyless, 1000);
    for version in [8, 9, 11] {
        let response = produce_at(&broker, "compacted", keyless.clone(), version);
        assert_eq!(response.error_code, 87, "v{version}");
        assert_eq!(response.record_errors.len(), 1, "v{version}");
        assert_eq!(response.record_errors[0].batch_index, 0);
        let message = response.record_errors[0]
            .batch_index_error_message
            .as_ref()
            .unwrap();
        assert_eq!(
            message.as_str(),
            "Compacted topic cannot accept message without key in topic partition compacted-0."
        );
        assert!(response
            .error_message
            .unwrap()
            .starts_with("One or more records have been rejected due to 1 record errors"));
    }
    let older = produce_at(&broker, "compacted", keyless, 7);
    assert_eq!(older.error_code, 87);
    assert!(older.record_errors.is_empty() && older.error_message.is_none());

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let body = [0, 0, 0, 1, 2, b'v', 0];
    let length = zigzag(body.len() as i64);
    assert_eq!(
        produce_error(&broker, "recent", one_record(&length, &body, now)),
        0
    );
    for (what, timestamp) in [
        (
            "two days old (topic's before.max.ms: one day)",
            now - 2 * 86_400_000,
        ),
        (
            "an hour ahead (broker's after.max.ms: a minute)",
            now + 3_600_000,
        ),
    ] {
        let response = produce_at(&broker, "recent", one_record(&length, &body, timestamp), 9);
        assert_eq!(response.error_code, 32, "INVALID_TIMESTAMP: {what}");
        assert_eq!(response.record_errors.len(), 1, "{what}");
        assert_eq!(
            response.error_message.unwrap().as_str(),
            "One or more records have been rejected due to invalid timestamp"
        );
    }
    assert_eq!(fetch(&broker, "recent", 0, 0).high_watermark, 1);
    assert_eq!(fetch(&broker, "compacted", 0, 0).high_watermark, 0);
}

fn zigzag(v: i64) -> Vec<u8> {
    let mut out = Vec::new();
    sluice_broker::storage::batch::put_varlong(&mut out, v);
    out
}

fn fetch_request(
    topic: &str,
    offset: i64,
    max_wait_ms: i32,
) -> kafka_protocol::messages::FetchRequest {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    let partition = FetchPartition::default()
        .with_partition(0)
        .with_fetch_offset(offset)
        .with_partition_max_bytes(1 << 20);
    let topic = FetchTopic::default()
        .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
        .with_partitions(vec![partition]);
    kafka_protocol::messages::FetchRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![topic])
}

fn fetch(
    broker: &Broker,
    topic: &str,
    offset: i64,
    max_wait_ms: i32,
) -> kafka_protocol::messages::fetch_response::PartitionData {
    let response: kafka_protocol::messages::FetchResponse = call(
        broker,
        ApiKey::Fetch,
        12,
        &fetch_request(topic, offset, max_wait_ms),
    );
    response.responses[0].partitions[0].clone()
}

#[test]
fn fetch_long_polls_until_an_append_and_refuses_out_of_range_offsets() {
    for cores in SHARD_COUNTS {
        let broker = Broker::start("fetch", cores, &[]);
        let _: MetadataResponse = call(
            &broker,
            ApiKey::Metadata,
            12,
            &MetadataRequest::default()
                .with_allow_auto_topic_creation(true)
                .with_topics(Some(vec![
                    kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_static_str("poll")))),
                ])),
        );
        assert_eq!(
            fetch(&broker, "poll", 5, 0).error_code,
            1,
            "OFFSET_OUT_OF_RANGE past the log end"
        );
        assert_eq!(
            fetch(&broker, "missing", 0, 0).error_code,
            3,
            "UNKNOWN_TOPIC_OR_PARTITION"
        );

        // An empty partition: the fetch waits max_wait_ms, then answers with no records.
        let started = std::time::Instant::now();
        let empty = fetch(&broker, "poll", 0, 300);
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "long poll waited {:?}",
            started.elapsed()
        );
        assert_eq!((empty.error_code, empty.high_watermark), (0, 0));
        assert!(empty.records.unwrap_or_default().is_empty());

        // A parked fetch is woken by an append well before its 10 s timeout.
        let bootstrap_broker = std::thread::scope(|scope| {
            let waiter = scope.spawn(|| {
                let started = std::time::Instant::now();
                (fetch(&broker, "poll", 0, 10_000), started.elapsed())
            });
            std::thread::sleep(Duration::from_millis(200));
            assert_eq!(produce_error(&broker, "poll", valid_batch()), 0);
            waiter.join().unwrap()
        });
        let (woken, waited) = bootstrap_broker;
        assert!(
            waited < Duration::from_secs(5),
            "woken by the append, not the timeout ({waited:?})"
        );
        assert_eq!(woken.high_watermark, 1);
        let records = woken.records.unwrap();
        assert_eq!(
            &records[..8],
            &0i64.to_be_bytes(),
            "the batch, as stored, with base offset 0"
        );
        assert_eq!(records.len(), valid_batch().len());
    }
}

/// A connection that announces a maximal frame (65,536 bytes here) and sends `body` bytes of it.
fn partial_frame(broker: &Broker, body: usize) -> TcpStream {
    let mut stream = connect(broker);
    stream.write_all(&65536i32.to_be_bytes()).unwrap();
    stream.write_all(&vec![0u8; body]).unwrap();
    stream
}

#[test]
fn request_memory_is_charged_as_bytes_arrive_bounded_per_shard_and_released_on_close() {
    let broker = Broker::start(
        "queued",
        1,
        &[
            "socket.request.max.bytes=65536",
            "queued.max.request.bytes=65536",
        ],
    );
    // Announcing the largest frame and sending 2 bytes of it holds 2 bytes, not the budget.
    let _announced = partial_frame(&broker, 2);
    std::thread::sleep(Duration::from_millis(100));
    still_serving(&broker);
    // A client that sends nearly a whole budget's worth holds it...
    let _hog = partial_frame(&broker, 65536 - 16);
    std::thread::sleep(Duration::from_millis(100));
    // ...and one more frame may go past it (so half-read frames cannot wait on each other)...
    let overdraft = partial_frame(&broker, 100);
    std::thread::sleep(Duration::from_millis(100));
    // ...but no other: a request waits for memory instead of allocating past the bound...
    let mut waiting = connect(&broker);
    waiting
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    send_raw(
        &mut waiting,
        &request_frame(ApiKey::Metadata, 12, &MetadataRequest::default()),
    );
    let mut byte = [0u8; 1];
    assert!(
        waiting.read(&mut byte).is_err(),
        "no answer while the budget and the one frame past it are held"
    );
    // ...and is served as soon as a holder goes away.
    drop(overdraft);
    waiting
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = [0u8; 3];
    waiting.read_exact(&mut rest).unwrap();
}

#[test]
fn altered_topic_configs_apply_to_live_partitions() {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    use kafka_protocol::messages::{
        IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    };
    for cores in SHARD_COUNTS {
        let broker = Broker::start("alter", cores, &[]);
        let create = kafka_protocol::messages::create_topics_request::CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("live")))
            .with_num_partitions(1)
            .with_replication_factor(1);
        let _: kafka_protocol::messages::CreateTopicsResponse = call(
            &broker,
            ApiKey::CreateTopics,
            5,
            &CreateTopicsRequest::default()
                .with_topics(vec![create])
                .with_timeout_ms(5000),
        );
        assert_eq!(produce_error(&broker, "live", valid_batch()), 0);
        let alter = |key: &'static str, value: &'static str| {
            let config = AlterableConfig::default()
                .with_name(StrBytes::from_static_str(key))
                .with_config_operation(0)
                .with_value(Some(StrBytes::from_static_str(value)));
            let resource = AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("live"))
                .with_configs(vec![config]);
            let response: IncrementalAlterConfigsResponse = call(
                &broker,
                ApiKey::IncrementalAlterConfigs,
                1,
                &IncrementalAlterConfigsRequest::default().with_resources(vec![resource]),
            );
            response.responses[0].error_code
        };
        assert_eq!(alter("max.message.bytes", "nonsense"), 40, "INVALID_CONFIG");
        assert_eq!(alter("max.message.bytes", "60"), 0);
        assert_eq!(
            produce_error(&broker, "live", valid_batch()),
            10,
            "the new limit applies at once"
        );
        assert_eq!(alter("max.message.bytes", "1000"), 0);
        assert_eq!(produce_error(&broker, "live", valid_batch()), 0);
    }
}
