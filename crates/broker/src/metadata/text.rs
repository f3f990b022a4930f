//! The text metadata file of earlier versions ("sluice-metadata v1"): one line per topic and
//! setting. Read into the records that rebuild the image it describes, once, at start; the
//! file is then rewritten as records (`codec`).

use anyhow::{bail, Context, Result};
use uuid::Uuid;

use super::records::{BrokerId, ConfigResource, MetadataRecord, PartitionState};
use super::{is_valid_topic_name, MetadataImage};
use crate::config::LogConfig;
use crate::limits;
use crate::types::{PartitionId, ProducerId};

pub const HEADER: &str = "sluice-metadata v1";

/// Parses a text metadata file into its cluster id and the records that rebuild it; each
/// partition gets `broker` (the one broker that wrote the file) as its replica and leader.
pub fn decode(text: &str, broker: BrokerId) -> Result<(String, Vec<MetadataRecord>)> {
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        bail!("not a sluice metadata file (expected first line {HEADER:?})");
    }
    let mut cluster_id = None;
    let mut records = Vec::new();
    let mut producer_ids = None;
    for line in lines {
        let mut words = line.split(' ');
        match words.next() {
            Some("cluster.id") => {
                let id = words.next().context("cluster.id without value")?;
                // What `new_cluster_id` makes is printable ASCII; anything else is damage
                // (a control character would not even survive the file's next rewrite).
                if id.is_empty() || !id.bytes().all(|b| b.is_ascii_graphic()) {
                    bail!("cluster.id {id:?} is not printable ASCII");
                }
                cluster_id = Some(id.to_string());
            }
            Some("producer.ids.reserved.to") => {
                let next: i64 = words
                    .next()
                    .context("missing value")?
                    .parse()
                    .context("producer ids")?;
                producer_ids = Some(next);
            }
            Some("broker.config") => {
                let pair = words.next().context("broker.config without value")?;
                let (k, v) = pair.split_once('=').context("config without '='")?;
                records.push(MetadataRecord::Config {
                    resource: ConfigResource::Brokers,
                    key: unescape(k)?,
                    value: Some(unescape(v)?),
                });
            }
            Some("topic") => {
                let name = words.next().context("topic without name")?.to_string();
                let id = Uuid::parse_str(words.next().context("topic without id")?)
                    .context("topic id")?;
                let partitions: i32 = words
                    .next()
                    .context("topic without partitions")?
                    .parse()
                    .context("partition count")?;
                // A damaged file must not name directories outside the data dir, nor make
                // the broker open more partitions than a topic can have.
                if !is_valid_topic_name(&name) {
                    bail!("topic name {name:?} breaks Kafka's naming rules");
                }
                if !(1..=limits::TOPIC_PARTITIONS_MAX).contains(&partitions) {
                    bail!(
                        "topic {name}: {partitions} partitions, outside 1..={}",
                        limits::TOPIC_PARTITIONS_MAX
                    );
                }
                records.push(MetadataRecord::Topic {
                    name: name.clone(),
                    id,
                });
                for pair in words {
                    let (k, v) = pair.split_once('=').context("config without '='")?;
                    records.push(MetadataRecord::Config {
                        resource: ConfigResource::Topic(name.clone()),
                        key: unescape(k)?,
                        value: Some(unescape(v)?),
                    });
                }
                records.extend((0..partitions).map(|p| MetadataRecord::Partition {
                    topic_id: id,
                    partition: PartitionId(p),
                    state: PartitionState::online(vec![broker]),
                }));
            }
            Some("") | None => {}
            Some(other) => bail!("unknown metadata line kind {other:?}"),
        }
    }
    let cluster_id = cluster_id.context("no cluster.id line")?;
    if let Some(next) = producer_ids.filter(|next| *next > 0) {
        records.push(MetadataRecord::ProducerIds {
            broker,
            broker_epoch: super::records::BrokerEpoch(-1),
            next_producer_id: ProducerId(next),
        });
    }
    Ok((cluster_id, records))
}

/// The image a text file describes, under the broker's static log settings.
pub fn decode_image(text: &str, broker: BrokerId, static_log: &LogConfig) -> Result<MetadataImage> {
    let (cluster_id, records) = decode(text, broker)?;
    let mut image = MetadataImage::new(cluster_id, static_log.clone());
    for record in &records {
        image.apply(record).context("applying the metadata file")?;
    }
    Ok(image)
}

fn unescape(s: &str) -> Result<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            let hex: String = chars.by_ref().take(2).collect();
            out.push(u8::from_str_radix(&hex, 16).context("bad escape")? as char);
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const NODE: BrokerId = BrokerId(1);

    #[test]
    fn a_text_file_reads_as_records_with_escaped_config_values() {
        let broker = Config::default().log;
        let id = Uuid::new_v4();
        let text = format!(
            "{HEADER}\ncluster.id abc\nproducer.ids.reserved.to 2000\n\
             broker.config log.retention.ms=5000\n\
             topic t.1_x-y {id} 2 compression.type=delete%20compact%3D%25 segment.bytes=1048576\n"
        );
        let image = decode_image(&text, NODE, &broker).unwrap();
        let topic = &image.topics["t.1_x-y"];
        assert_eq!(topic.id, id);
        assert_eq!(topic.configs["compression.type"], "delete compact=%");
        assert_eq!(topic.log_config.segment_bytes, 1048576);
        assert_eq!(topic.log_config.retention_ms, 5000);
        assert_eq!(
            topic.partition_states[1],
            PartitionState::online(vec![NODE])
        );
        assert_eq!(image.broker_configs["log.retention.ms"], "5000");
        assert_eq!(image.next_producer_id, ProducerId(2000));
        assert_eq!(image.cluster_id, "abc");
    }

    #[test]
    fn a_damaged_file_cannot_name_paths_huge_topics_or_unprintable_cluster_ids() {
        let broker = Config::default().log;
        let id = Uuid::new_v4();
        for topic in [
            format!("../../etc {id} 1"),
            format!("a/b {id} 1"),
            format!("t {id} 0"),
            format!("t {id} -3"),
            format!("t {id} 2147483647"),
        ] {
            let text = format!("{HEADER}\ncluster.id c\ntopic {topic}\n");
            assert!(decode_image(&text, NODE, &broker).is_err(), "{topic}");
        }
        for damaged in [
            "cluster.id c\r\0",
            "cluster.id ",
            "producer.ids.reserved.to 5",
        ] {
            let text = format!("{HEADER}\n{damaged}\n");
            assert!(decode_image(&text, NODE, &broker).is_err(), "{damaged:?}");
        }
        let text = format!("{HEADER}\ncluster.id c\ntopic t {id} 10000\n");
        let image = decode_image(&text, NODE, &broker).unwrap();
        assert_eq!(image.topics["t"].partitions, 10_000);
        assert_eq!(image.topics["t"].partition_states[9_999].leader, NODE);
    }
}
