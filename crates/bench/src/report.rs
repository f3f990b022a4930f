//! The results of a run as people and scripts read them: a short text summary, or one JSON
//! object (`--json`) with the workload's parameters, counts, throughput and latency
//! percentiles in milliseconds (null where the workload measures no latency).

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::clients::Topic;
use super::recorder::{Recorder, Timeline};
use super::schedule::Limit;
use super::{Keys, Options};
use sluice_client::Json;

/// Which latency a run measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Measured {
    /// Intended send time to acknowledgement.
    Delivery,
    /// Intended send time to receipt by a consumer.
    EndToEnd,
    /// None: throughput only.
    Throughput,
}

impl Measured {
    pub fn describe(self) -> Option<&'static str> {
        match self {
            Measured::Delivery => Some("delivery latency (intended send to acknowledgement)"),
            Measured::EndToEnd => Some("end-to-end latency (intended send to receipt)"),
            Measured::Throughput => None,
        }
    }

    fn json_name(self) -> Json {
        match self {
            Measured::Delivery => Json::str("delivery"),
            Measured::EndToEnd => Json::str("end-to-end"),
            Measured::Throughput => Json::Null,
        }
    }
}

/// A latency percentile the reports show.
pub struct Percentile {
    pub json: &'static str,
    pub label: &'static str,
    pub quantile: f64,
}

pub const PERCENTILES: [Percentile; 5] = [
    Percentile {
        json: "p50_ms",
        label: "p50",
        quantile: 0.5,
    },
    Percentile {
        json: "p90_ms",
        label: "p90",
        quantile: 0.9,
    },
    Percentile {
        json: "p99_ms",
        label: "p99",
        quantile: 0.99,
    },
    Percentile {
        json: "p999_ms",
        label: "p99.9",
        quantile: 0.999,
    },
    Percentile {
        json: "p9999_ms",
        label: "p99.99",
        quantile: 0.9999,
    },
];

/// Microseconds as milliseconds.
pub fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Everything a run reports.
#[derive(Debug)]
pub struct Report {
    pub workload: String,
    /// The workload's parameters, in the order printed.
    pub params: Vec<(&'static str, Json)>,
    pub measured: Measured,
    pub records: u64,
    pub bytes: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Latencies in microseconds; `None` when the workload measures none.
    pub latency: Option<Histogram<u64>>,
    pub timeline: Timeline,
}

impl Report {
    pub fn new(
        opts: &Options,
        topic: Option<&Topic>,
        measured: Measured,
        recorder: &Recorder,
    ) -> Report {
        Report {
            workload: opts.workload.clone(),
            params: params(opts, topic),
            measured,
            records: recorder.records,
            bytes: recorder.bytes,
            errors: recorder.errors,
            elapsed: recorder.elapsed(),
            latency: (measured != Measured::Throughput).then(|| recorder.latency.clone()),
            timeline: recorder.timeline.clone(),
        }
    }

    fn per_second(&self, amount: f64) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            amount / secs
        } else {
            0.0
        }
    }

    pub fn msgs_per_sec(&self) -> f64 {
        self.per_second(self.records as f64)
    }

    /// Millions of bytes per second.
    pub fn mb_per_sec(&self) -> f64 {
        self.per_second(self.bytes as f64) / 1e6
    }

    /// The latency histogram, when the workload measured latencies and there are some.
    pub fn latencies(&self) -> Option<&Histogram<u64>> {
        self.latency.as_ref().filter(|h| !h.is_empty())
    }

    /// `(percentile, ms)` pairs, then `("max", ms)`.
    fn percentiles_ms(&self) -> Option<Vec<(&'static Percentile, f64)>> {
        let h = self.latencies()?;
        Some(
            PERCENTILES
                .iter()
                .map(|p| (p, ms(h.value_at_quantile(p.quantile))))
                .collect(),
        )
    }

    pub fn summary(&self) -> String {
        let mut text = String::new();
        let params: Vec<String> = self
            .params
            .iter()
            .filter(|(_, v)| !matches!(v, Json::Null))
            .map(|(k, v)| format!("{k}={}", plain(v)))
            .collect();
        let _ = writeln!(text, "{} ({})", self.workload, params.join(" "));
        let _ = writeln!(
            text,
            "  {:.0} msgs/s  {:.1} MB/s  ({} records, {} bytes in {:.2} s, {} errors)",
            self.msgs_per_sec(),
            self.mb_per_sec(),
            self.records,
            self.bytes,
            self.elapsed.as_secs_f64(),
            self.errors
        );
        if let (Some(what), Some(percentiles)) = (self.measured.describe(), self.percentiles_ms()) {
            let max = ms(self.latencies().map_or(0, Histogram::max));
            let cells: Vec<String> = percentiles
                .iter()
                .map(|(p, v)| format!("{} {v:.3}", p.label))
                .chain([format!("max {max:.3}")])
                .collect();
            let _ = writeln!(text, "  {what}, ms: {}", cells.join("  "));
        }
        text
    }

    pub fn json(&self) -> Json {
        let mut fields: Vec<(String, Json)> = vec![("workload".into(), Json::str(&self.workload))];
        fields.extend(self.params.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let numbers = [
            ("latency", self.measured.json_name()),
            ("records", Json::Int(self.records as i64)),
            ("bytes", Json::Int(self.bytes as i64)),
            ("errors", Json::Int(self.errors as i64)),
            ("elapsed_s", Json::Float(self.elapsed.as_secs_f64())),
            ("msgs_per_sec", Json::Float(self.msgs_per_sec())),
            ("mb_per_sec", Json::Float(self.mb_per_sec())),
        ];
        fields.extend(numbers.into_iter().map(|(k, v)| (k.to_string(), v)));
        let percentiles = self.percentiles_ms();
        for (i, p) in PERCENTILES.iter().enumerate() {
            let value = percentiles
                .as_ref()
                .map_or(Json::Null, |v| Json::Float(v[i].1));
            fields.push((p.json.to_string(), value));
        }
        let max = self
            .latencies()
            .map_or(Json::Null, |h| Json::Float(ms(h.max())));
        fields.push(("max_ms".to_string(), max));
        Json::Object(fields)
    }
}

/// A parameter's value without JSON quotes.
pub fn plain(value: &Json) -> String {
    match value {
        Json::Str(s) => s.clone(),
        other => other.to_string(),
    }
}

fn params(opts: &Options, topic: Option<&Topic>) -> Vec<(&'static str, Json)> {
    let (records, duration) = match opts.limit {
        Limit::Records(n) => (Json::Int(n as i64), Json::Null),
        Limit::Duration(d) => (Json::Null, Json::Float(d.as_secs_f64())),
    };
    let keys = match opts.keys {
        Keys::None => "none",
        Keys::Random => "random",
        Keys::RoundRobin => "round-robin",
    };
    let broker = |v: Json| if topic.is_some() { v } else { Json::Null };
    vec![
        ("bootstrap", broker(Json::str(&opts.bootstrap))),
        ("topic", Json::opt_str(topic.map(|t| t.name.clone()))),
        (
            "partitions",
            topic.map_or(Json::Null, |t| Json::Int(t.partitions as i64)),
        ),
        ("size", Json::Int(opts.size as i64)),
        ("records_requested", records),
        ("duration_s", duration),
        ("rate", opts.rate.map_or(Json::Null, Json::Float)),
        ("warmup_s", Json::Float(opts.warmup.as_secs_f64())),
        ("acks", broker(Json::str(&opts.acks))),
        ("producers", broker(Json::Int(opts.producers as i64))),
        ("consumers", broker(Json::Int(opts.consumers as i64))),
        ("keys", broker(Json::str(keys))),
        ("batch_size", broker(Json::Int(opts.batch_size as i64))),
        ("linger_ms", broker(Json::Int(opts.linger_ms as i64))),
    ]
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn report(measured: Measured) -> Report {
        let args: Vec<String> = ["--records", "100", "--acks", "1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let opts = Options::parse("produce", &args).unwrap();
        let topic = Topic {
            name: "t".to_string(),
            partitions: 2,
        };
        let origin = Instant::now();
        let mut recorder = Recorder::new(origin);
        // 100 records of 1000 bytes over one second, latencies 1..=100 ms.
        for i in 1..=100u64 {
            let intended = origin + Duration::from_millis(10 * (i - 1));
            recorder.completed(intended, intended + Duration::from_millis(i), 1000);
        }
        recorder.last = Some(origin + Duration::from_secs(1));
        Report::new(&opts, Some(&topic), measured, &recorder)
    }

    fn field(json: &Json, key: &str) -> String {
        let Json::Object(fields) = json else {
            panic!("not an object: {json}")
        };
        fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.to_string())
            .unwrap_or_else(|| panic!("no {key} in {json}"))
    }

    #[test]
    fn json_has_throughput_percentiles_and_parameters() {
        let json = report(Measured::Delivery).json();
        assert_eq!(field(&json, "msgs_per_sec"), "100");
        assert_eq!(field(&json, "mb_per_sec"), "0.1");
        assert_eq!(field(&json, "records"), "100");
        assert_eq!(field(&json, "p50_ms"), "50.015");
        assert_eq!(field(&json, "p99_ms"), "99.007");
        assert_eq!(field(&json, "max_ms"), "100.031");
        assert_eq!(field(&json, "acks"), "\"1\"");
        assert_eq!(field(&json, "duration_s"), "null");
        assert_eq!(field(&json, "latency"), "\"delivery\"");
    }

    #[test]
    fn throughput_runs_report_no_latency() {
        let json = report(Measured::Throughput).json();
        for key in [
            "p50_ms", "p90_ms", "p99_ms", "p999_ms", "p9999_ms", "max_ms",
        ] {
            assert_eq!(field(&json, key), "null", "{key}");
        }
        assert!(!report(Measured::Throughput).summary().contains("latency"));
    }

    #[test]
    fn the_summary_names_the_workload_and_every_percentile() {
        let text = report(Measured::Delivery).summary();
        assert!(text.starts_with("produce (bootstrap=127.0.0.1:9092 topic=t partitions=2"));
        assert!(text.contains("100 msgs/s  0.1 MB/s  (100 records, 100000 bytes in 1.00 s"));
        assert!(text.contains(
            "p50 50.015  p90 90.047  p99 99.007  p99.9 100.031  p99.99 100.031  max 100.031"
        ));
    }
}
