//! What each shard counts about itself, and the Prometheus text format the admin endpoint
//! (`admin`) serves. Every shard keeps its own numbers (plain cells, never shared across
//! threads); a scrape asks every shard for a snapshot over the mesh and renders them together,
//! each sample labelled with its shard.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Latencies above this are recorded as this (one hour, in microseconds).
const LATENCY_MAX_US: u64 = 3_600_000_000;
/// Flush sizes above this are recorded as this (bytes).
const FLUSH_BYTES_MAX: u64 = 1 << 40;
/// Quantiles every latency and size summary reports.
const QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];

fn histogram(max: u64) -> Histogram<u64> {
    Histogram::new_with_bounds(1, max, 2).expect("valid histogram bounds")
}

/// One Kafka API's requests on this shard.
pub struct RequestStats {
    pub count: u64,
    pub latency_us: Histogram<u64>,
}

/// A shard's own counters.
pub struct ShardMetrics {
    pub connections_open: Cell<i64>,
    pub connections_total: Cell<u64>,
    /// Connections closed because of a malformed, oversized or unsupported frame.
    pub frames_refused: Cell<u64>,
    /// Connections closed at once for being over `max.connections` or `max.connections.per.ip`.
    pub connections_refused: Cell<u64>,
    /// Connections closed for idling past `connections.max.idle.ms` or sending a request slower
    /// than `sluice.request.receive.timeout.ms`.
    pub connections_timed_out: Cell<u64>,
    /// By API key.
    pub requests: RefCell<BTreeMap<i16, RequestStats>>,
    pub flush_latency_us: RefCell<Histogram<u64>>,
    pub flush_bytes: RefCell<Histogram<u64>>,
    /// Compactions that rewrote segments, and the bytes they read and wrote.
    pub cleanings: Cell<u64>,
    pub cleaned_bytes_read: Cell<u64>,
    pub cleaned_bytes_written: Cell<u64>,
    /// Fetched record bytes the kernel sent from the page cache (sendfile).
    pub fetch_sendfile_bytes: Cell<u64>,
    /// Fetched record bytes read into memory and written: small or uncached record sets,
    /// read_committed cuts, `sluice.fetch.zero.copy=false`, and pieces sent while a socket is full.
    pub fetch_copied_bytes: Cell<u64>,
    /// Damaged ranges found in segments: batches failing their CRC check, unreadable tails,
    /// files cut short (see `storage::segment_check`).
    pub log_damaged_ranges: Cell<u64>,
}

impl Default for ShardMetrics {
    fn default() -> Self {
        ShardMetrics {
            connections_open: Cell::new(0),
            connections_total: Cell::new(0),
            frames_refused: Cell::new(0),
            connections_refused: Cell::new(0),
            connections_timed_out: Cell::new(0),
            requests: RefCell::new(BTreeMap::new()),
            flush_latency_us: RefCell::new(histogram(LATENCY_MAX_US)),
            flush_bytes: RefCell::new(histogram(FLUSH_BYTES_MAX)),
            cleanings: Cell::new(0),
            cleaned_bytes_read: Cell::new(0),
            cleaned_bytes_written: Cell::new(0),
            fetch_sendfile_bytes: Cell::new(0),
            fetch_copied_bytes: Cell::new(0),
            log_damaged_ranges: Cell::new(0),
        }
    }
}

impl ShardMetrics {
    pub fn request_served(&self, api: i16, took: Duration) {
        let mut requests = self.requests.borrow_mut();
        let stats = requests.entry(api).or_insert_with(|| RequestStats {
            count: 0,
            latency_us: histogram(LATENCY_MAX_US),
        });
        stats.count += 1;
        record(
            &mut stats.latency_us,
            took.as_micros() as u64,
            LATENCY_MAX_US,
        );
    }

    pub fn log_damage_found(&self, ranges: u64) {
        self.log_damaged_ranges
            .set(self.log_damaged_ranges.get() + ranges);
    }

    pub fn cleaned(&self, bytes_before: u64, bytes_after: u64) {
        self.cleanings.set(self.cleanings.get() + 1);
        let read = self.cleaned_bytes_read.get() + bytes_before;
        self.cleaned_bytes_read.set(read);
        let written = self.cleaned_bytes_written.get() + bytes_after;
        self.cleaned_bytes_written.set(written);
    }

    pub fn fetch_sent(&self, sendfile_bytes: usize, copied_bytes: usize) {
        let sent = self.fetch_sendfile_bytes.get() + sendfile_bytes as u64;
        self.fetch_sendfile_bytes.set(sent);
        let copied = self.fetch_copied_bytes.get() + copied_bytes as u64;
        self.fetch_copied_bytes.set(copied);
    }

    pub fn flushed(&self, bytes: u64, took: Duration) {
        record(&mut self.flush_bytes.borrow_mut(), bytes, FLUSH_BYTES_MAX);
        record(
            &mut self.flush_latency_us.borrow_mut(),
            took.as_micros() as u64,
            LATENCY_MAX_US,
        );
    }
}

thread_local! {
    /// This shard's metrics: one thread per shard, so no sharing and no locks.
    static SHARD: ShardMetrics = ShardMetrics::default();
}

/// Runs `f` on the calling shard's metrics.
pub fn with<T>(f: impl FnOnce(&ShardMetrics) -> T) -> T {
    SHARD.with(f)
}

fn record(h: &mut Histogram<u64>, value: u64, max: u64) {
    h.record(value.clamp(1, max)).expect("clamped into bounds");
}

/// Counters a partition keeps about its traffic.
#[derive(Debug, Default, Clone, Copy)]
pub struct PartitionStats {
    pub bytes_in: u64,
    pub records_in: u64,
    pub batches_in: u64,
    pub bytes_out: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Summary,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Summary => "summary",
        }
    }
}

/// One sample of one metric family.
#[derive(Debug, Clone)]
pub struct Sample {
    pub family: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    /// Appended to the family name (`_count`, `_sum`) or empty.
    pub suffix: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

/// Samples being collected on one shard.
#[derive(Debug, Default)]
pub struct Samples(pub Vec<Sample>);

impl Samples {
    pub fn push(
        &mut self,
        (family, help, kind): (&'static str, &'static str, Kind),
        labels: Vec<(&'static str, String)>,
        value: f64,
    ) {
        self.0.push(Sample {
            family,
            help,
            kind,
            suffix: "",
            labels,
            value,
        });
    }

    /// A histogram as a Prometheus summary: quantiles, count and sum, values divided by `divisor`
    /// (1e6 turns microseconds into seconds).
    pub fn summary(
        &mut self,
        (family, help): (&'static str, &'static str),
        labels: Vec<(&'static str, String)>,
        h: &Histogram<u64>,
        divisor: f64,
    ) {
        if h.is_empty() {
            return;
        }
        for q in QUANTILES {
            let mut with_q = labels.clone();
            with_q.push(("quantile", q.to_string()));
            self.0.push(Sample {
                family,
                help,
                kind: Kind::Summary,
                suffix: "",
                labels: with_q,
                value: h.value_at_quantile(q) as f64 / divisor,
            });
        }
        for (suffix, value) in [
            ("_count", h.len() as f64),
            ("_sum", h.mean() * h.len() as f64 / divisor),
        ] {
            self.0.push(Sample {
                family,
                help,
                kind: Kind::Summary,
                suffix,
                labels: labels.clone(),
                value,
            });
        }
    }
}

/// A group's committed offset for a partition (labels group, topic, partition).
pub const COMMITTED_OFFSET: (&str, &str, Kind) = (
    "sluice_group_committed_offset",
    "A consumer group's committed offset.",
    Kind::Gauge,
);
/// A partition's high watermark (labels shard, topic, partition).
pub const HIGH_WATERMARK: (&str, &str, Kind) = (
    "sluice_partition_high_watermark",
    "High watermark: what consumers may read (on one replica, the end of what is on disk).",
    Kind::Gauge,
);
const LAG: (&str, &str, Kind) = (
    "sluice_group_lag",
    "Records between a group's committed offset and the partition's high watermark.",
    Kind::Gauge,
);

/// Adds each group's lag per partition: the partition's high watermark (from the shard that
/// owns it) minus the group's committed offset (from the shard that coordinates the group).
pub fn add_consumer_lag(samples: &mut Vec<Sample>) {
    let label = |s: &Sample, key: &str| {
        s.labels
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let mut high_watermarks = BTreeMap::new();
    for s in samples.iter().filter(|s| s.family == HIGH_WATERMARK.0) {
        high_watermarks.insert((label(s, "topic"), label(s, "partition")), s.value);
    }
    let mut lags = Samples::default();
    for s in samples.iter().filter(|s| s.family == COMMITTED_OFFSET.0) {
        let key = (label(s, "topic"), label(s, "partition"));
        if let Some(hw) = high_watermarks.get(&key) {
            lags.push(LAG, s.labels.clone(), (hw - s.value).max(0.0));
        }
    }
    samples.append(&mut lags.0);
}

/// Prometheus text exposition of every shard's samples: one HELP and TYPE per family.
pub fn render(samples: &[Sample]) -> String {
    let mut families: Vec<&'static str> = Vec::new();
    let mut by_family: BTreeMap<&'static str, Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        if !by_family.contains_key(s.family) {
            families.push(s.family);
        }
        by_family.entry(s.family).or_default().push(s);
    }
    let mut out = String::new();
    for family in families {
        let group = &by_family[family];
        let first = group[0];
        let _ = writeln!(out, "# HELP {family} {}", first.help);
        let _ = writeln!(out, "# TYPE {family} {}", first.kind.name());
        for s in group {
            let labels: Vec<String> = s
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let _ = writeln!(
                out,
                "{family}{}{{{}}} {}",
                s.suffix,
                labels.join(","),
                s.value
            );
        }
    }
    out
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_declared_once_and_labels_escaped() {
        let mut s = Samples::default();
        let bytes = ("sluice_bytes_in_total", "Bytes appended.", Kind::Counter);
        s.push(
            bytes,
            vec![("shard", "0".into()), ("topic", "a\"b".into())],
            5.0,
        );
        s.push(
            bytes,
            vec![("shard", "1".into()), ("topic", "c".into())],
            7.0,
        );
        let mut h = histogram(LATENCY_MAX_US);
        h.record(1000).unwrap();
        s.summary(
            ("sluice_flush_seconds", "Flush time."),
            vec![("shard", "0".into())],
            &h,
            1e6,
        );
        let text = render(&s.0);
        assert_eq!(
            text.matches("# TYPE sluice_bytes_in_total counter").count(),
            1
        );
        assert!(text.contains("sluice_bytes_in_total{shard=\"0\",topic=\"a\\\"b\"} 5"));
        assert!(text.contains("sluice_flush_seconds{shard=\"0\",quantile=\"0.99\"} 0.001"));
        assert!(text.contains("sluice_flush_seconds_count{shard=\"0\"} 1"));
    }
}
