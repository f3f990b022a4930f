//! No client can stall the others: connections that announce a 100 MiB request and stall, or
//! send it a byte at a time, hold none of a shard's request memory beyond what they sent and are
//! closed by `sluice.request.receive.timeout.ms`, while librdkafka clients on both shards are
//! answered; idle connections close after `connections.max.idle.ms`; `max.connections`,
//! `max.connections.per.ip` and its overrides refuse connections over them.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::time::{Duration, Instant};

use common::deliveries::{producer, send_waiting};
use common::{consumer, Broker};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, BrokerId, FetchRequest, FetchResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrIn};
use rdkafka::producer::{BaseRecord, Producer};
use sluice_client::blocking::read_frame;
use sluice_client::frame::{self, RequestId};

/// What the stalling clients announce: `socket.request.max.bytes`, the largest legal frame.
const ANNOUNCED_BYTES: i32 = 100 * 1024 * 1024;

/// The receive timeout the first test runs with.
const RECEIVE_TIMEOUT_MS: u64 = 2_000;

/// How long a connection that should be closed may take to see it: the timeout and then some,
/// on a loaded machine.
const CLOSE_WITHIN: Duration = Duration::from_secs(15);

const SLOW_SENDERS: usize = 1_000;
const TOPIC: &str = "normal";
const PARTITIONS: i32 = 4;
const PRODUCERS: usize = 4;
const RECORDS_PER_PRODUCER: usize = 50;

/// Raises the open-file limit to its hard limit, for the test's sockets and (inherited) the
/// broker's.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    assert!(
        hard as usize > SLOW_SENDERS + 200,
        "the hard open-file limit ({hard}) leaves no room for {SLOW_SENDERS} connections"
    );
}

/// A connection that has sent a 100 MiB frame's size and a request header, and nothing more.
fn stalled(broker: &Broker) -> TcpStream {
    let mut stream = TcpStream::connect(broker.bootstrap()).unwrap();
    let mut head = ANNOUNCED_BYTES.to_be_bytes().to_vec();
    head.extend_from_slice(&0i16.to_be_bytes()); // Produce
    head.extend_from_slice(&9i16.to_be_bytes());
    head.extend_from_slice(&7i32.to_be_bytes());
    head.extend_from_slice(&5i16.to_be_bytes());
    head.extend_from_slice(b"stall");
    stream.write_all(&head).unwrap();
    stream
}

/// Whether the broker closes `stream` within `limit` (an end of stream or a reset).
fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => panic!("the broker answered a request that never arrived whole"),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => true,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(e) => panic!("reading: {e}"),
    }
}

/// Holds `SLOW_SENDERS` stalled connections that each send one more byte every 100 ms, until
/// the broker has closed them all or `CLOSE_WITHIN` has passed; returns how many it closed.
fn slow_senders(broker: &Broker) -> std::thread::JoinHandle<usize> {
    let mut open: Vec<TcpStream> = (0..SLOW_SENDERS).map(|_| stalled(broker)).collect();
    std::thread::spawn(move || {
        for stream in &open {
            stream.set_nonblocking(true).unwrap();
        }
        let deadline = Instant::now() + CLOSE_WITHIN;
        let mut closed = 0;
        while !open.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            open.retain_mut(|stream| {
                let mut byte = [0u8; 1];
                let gone = match stream.read(&mut byte) {
                    Ok(0) => true,
                    Ok(_) => panic!("the broker answered a request that never arrived whole"),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => stream.write(&[0]).is_err(),
                    Err(_) => true,
                };
                closed += gone as usize;
                !gone
            });
        }
        closed
    })
}

/// Several librdkafka producers (so their connections land on both shards) write to every
/// partition, then a consumer reads it all back: every request is answered.
fn normal_clients_are_served(broker: &Broker, round: usize) {
    let mut sent = 0;
    for p in 0..PRODUCERS {
        let (producer, deliveries) = producer(
            broker,
            &[
                ("client.id", &format!("normal-{round}-{p}")),
                ("linger.ms", "5"),
            ],
        );
        for i in 0..RECORDS_PER_PRODUCER {
            let value = format!("r{round}-p{p}-{i}");
            let partition = (i as i32) % PARTITIONS;
            send_waiting(
                &producer,
                BaseRecord::<(), _>::to(TOPIC)
                    .payload(&value)
                    .partition(partition),
            );
        }
        producer.flush(Duration::from_secs(20)).unwrap();
        assert_eq!(
            deliveries.failed.lock().unwrap().as_slice(),
            &[] as &[String]
        );
        assert_eq!(deliveries.acked.lock().unwrap().len(), RECORDS_PER_PRODUCER);
        sent += RECORDS_PER_PRODUCER;
    }
    let read: usize = consumer::read_partitions(broker, TOPIC, PARTITIONS)
        .values()
        .map(Vec::len)
        .sum();
    assert_eq!(read, sent * round, "every record of every round reads back");
}

#[test]
fn stalled_and_slow_requests_stall_no_one_and_are_closed_by_the_receive_timeout() {
    raise_open_files_limit();
    let receive_timeout = format!("sluice.request.receive.timeout.ms={RECEIVE_TIMEOUT_MS}");
    let broker = Broker::start("stalls", 2, &[&receive_timeout]);
    common::create_topic(&mut common::connect(&broker), TOPIC, PARTITIONS);

    let mut first = stalled(&broker);
    normal_clients_are_served(&broker, 1);

    let mut stalls: Vec<TcpStream> = (0..8).map(|_| stalled(&broker)).collect();
    let slow = slow_senders(&broker);
    normal_clients_are_served(&broker, 2);

    assert!(closed_within(&mut first, CLOSE_WITHIN));
    for stream in &mut stalls {
        assert!(
            closed_within(stream, CLOSE_WITHIN),
            "a stalled request was closed"
        );
    }
    assert_eq!(
        slow.join().unwrap(),
        SLOW_SENDERS,
        "every slow sender was closed"
    );
    let log = broker.log();
    assert!(
        log.contains("did not arrive within sluice.request.receive.timeout.ms"),
        "the closes are logged"
    );
    normal_clients_are_served(&broker, 3);
}

/// A stream to `broker` from the local address `from` (any of 127.0.0.0/8).
fn connect_from(from: [u8; 4], broker: &Broker) -> TcpStream {
    let fd = socket::socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .unwrap();
    let [a, b, c, d] = from;
    socket::bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::new(a, b, c, d, 0),
    )
    .unwrap();
    let to: SocketAddr = broker.bootstrap().parse().unwrap();
    let SocketAddr::V4(to) = to else {
        unreachable!("tests listen on 127.0.0.1")
    };
    socket::connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(to)).unwrap();
    // SAFETY: `fd` is a connected stream socket this function owns and hands over.
    let stream = unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Whether the broker answers an ApiVersions request on `stream` (a refused connection is
/// closed instead).
fn answered(stream: &mut TcpStream) -> bool {
    let id = RequestId {
        correlation_id: 1,
        client_id: "limits",
    };
    let request =
        frame::encode_request(ApiKey::ApiVersions, 0, id, &ApiVersionsRequest::default()).unwrap();
    stream.write_all(&request).is_ok() && read_frame(stream, 1 << 20).is_ok()
}

/// Connects from `from` until the broker answers (a closed connection's count is given back
/// once the broker has seen the close).
fn eventually_answered(from: [u8; 4], broker: &Broker) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut stream = connect_from(from, broker);
        if answered(&mut stream) {
            return stream;
        }
        assert!(
            Instant::now() < deadline,
            "a freed connection slot was never reused"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the broker counts no open connection: the start-up probe's (`Broker::start`
/// connects once to see the port open) counts against the limits until the broker has seen it
/// closed, which a loaded machine may delay past the test's first connections.
fn wait_until_no_connections(broker: &Broker) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = broker.admin_get("/metrics");
        let open: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("sluice_connections_open{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if open == 0.0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the start-up probe's connection stays open:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn connections_over_the_broker_and_per_address_limits_are_refused() {
    let broker = Broker::start(
        "limits",
        2,
        &[
            "max.connections=6",
            "max.connections.per.ip=2",
            "max.connections.per.ip.overrides=127.0.0.2:3",
        ],
    );
    wait_until_no_connections(&broker);
    let connect_all = |from: [u8; 4], n: usize| -> Vec<TcpStream> {
        (0..n)
            .map(|_| {
                let mut s = connect_from(from, &broker);
                assert!(
                    answered(&mut s),
                    "a connection within the limits from {from:?}"
                );
                s
            })
            .collect()
    };
    let mut one = connect_all([127, 0, 0, 1], 2);
    assert!(
        !answered(&mut connect_from([127, 0, 0, 1], &broker)),
        "a third from .1"
    );
    let _two = connect_all([127, 0, 0, 2], 3);
    assert!(
        !answered(&mut connect_from([127, 0, 0, 2], &broker)),
        "a fourth from .2"
    );
    let _three = connect_all([127, 0, 0, 3], 1);
    assert!(
        !answered(&mut connect_from([127, 0, 0, 4], &broker)),
        "a seventh, over max.connections, counted across both shards"
    );
    drop(one.pop());
    let _four = eventually_answered([127, 0, 0, 4], &broker);
    assert!(broker
        .log()
        .contains("refused a connection from 127.0.0.1:"));
    let metrics = broker.admin_get("/metrics");
    assert!(metrics.contains("sluice_connections_refused_total"));
}

/// A Fetch of an empty partition that waits `max_wait_ms` for records.
fn long_fetch(stream: &mut TcpStream, topic: &str, max_wait_ms: i32) {
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    let r: FetchResponse = common::call(stream, ApiKey::Fetch, 4, &request);
    assert_eq!(r.responses[0].partitions[0].error_code, 0);
}

#[test]
fn idle_connections_are_closed_and_busy_ones_are_not() {
    let broker = Broker::start("idle", 2, &["connections.max.idle.ms=1000"]);
    let mut setup = common::connect(&broker);
    common::create_topic(&mut setup, "idle", 1);

    let mut idle = common::connect(&broker);
    assert!(answered(&mut idle));
    let mut busy = common::connect(&broker);
    // Requests every 300 ms for 3 s: never idle for a second.
    for _ in 0..10 {
        assert!(answered(&mut busy), "a connection in use stays open");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        closed_within(&mut idle, CLOSE_WITHIN),
        "the idle one was closed"
    );
    // Waiting on the broker is not idling: a fetch parked longer than the idle limit is answered.
    let mut waiting = common::connect(&broker);
    long_fetch(&mut waiting, "idle", 2_500);
    assert!(broker
        .log()
        .contains("idle for connections.max.idle.ms (1000 ms)"));
    assert!(closed_within(&mut setup, CLOSE_WITHIN));
}

/// How many Fetch requests the client that reads nothing sends, each answered with the whole
/// partition.
const UNREAD_FETCHES: usize = 10;

#[test]
fn a_client_that_reads_no_answers_is_closed_as_idle() {
    let broker = Broker::start("unread", 2, &["connections.max.idle.ms=1000"]);
    common::create_topic(&mut common::connect(&broker), "big", 1);
    let (producer, deliveries) = producer(&broker, &[("linger.ms", "20")]);
    let value = vec![b'x'; 100 * 1024];
    for _ in 0..40 {
        send_waiting(
            &producer,
            BaseRecord::<(), _>::to("big").payload(&value).partition(0),
        );
    }
    producer.flush(Duration::from_secs(20)).unwrap();
    assert_eq!(deliveries.acked.lock().unwrap().len(), 40);

    let mut client = common::connect(&broker);
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_max_bytes(50 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str("big")))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(50 << 20)])]);
    for correlation_id in 0..UNREAD_FETCHES as i32 {
        let id = RequestId {
            correlation_id,
            client_id: "unread",
        };
        let frame = frame::encode_request(ApiKey::Fetch, 4, id, &request).unwrap();
        client.write_all(&frame).unwrap();
    }
    // The broker's writer is stuck on a full socket; the client has been idle meanwhile.
    std::thread::sleep(Duration::from_secs(3));
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buffered = 0usize;
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        match client.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buffered += n,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the broker never closed a client that read nothing ({e})"),
        }
    }
    let whole_answers = UNREAD_FETCHES * value.len() * 40;
    assert!(
        buffered < whole_answers,
        "closed before sending every answer ({buffered} of over {whole_answers} bytes)"
    );
    assert!(broker.log().contains("idle for connections.max.idle.ms"));
}
