//! `sluice serve`'s flags, and the config properties they make with the properties file; `main`
//! starts the broker on them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use sluice_broker::config::{parse_properties, split_assignment};

/// Start the broker
///
/// Any config key can be given in a Kafka-style properties file (--config) or with --set;
/// flags (and their environment variables) win over the file.
#[derive(Args, Debug)]
#[command(after_help = "Environment: SLUICE_LOG=debug|info|warn|error overrides the log level.")]
pub struct ServeArgs {
    /// Address to accept Kafka clients on: replaces `listeners` with PLAINTEXT://HOST:PORT
    /// [default: 127.0.0.1:9092]
    #[arg(long, value_name = "HOST:PORT", env = "SLUICE_LISTEN")]
    listen: Option<String>,
    /// Where logs and metadata live [default: ./sluice-data]
    #[arg(long, value_name = "DIR", env = "SLUICE_DATA_DIR")]
    data_dir: Option<String>,
    /// Shards, one pinned thread each [default: one per CPU of the cpuset]
    #[arg(long, value_name = "N", env = "SLUICE_CORES")]
    cores: Option<String>,
    /// CPUs to pin the shards to, as taskset writes them (0-3,8), or `unpinned`
    /// [default: the CPUs the process may run on]
    #[arg(long, value_name = "LIST", env = "SLUICE_CPUSET")]
    cpuset: Option<String>,
    /// Kafka-style key=value properties file
    #[arg(long, value_name = "FILE", env = "SLUICE_CONFIG")]
    config: Option<PathBuf>,
    /// Any config key, overriding the file (repeatable)
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = split_assignment)]
    settings: Vec<(String, String)>,
}

impl ServeArgs {
    /// The properties file merged with the flags (flags win). The flags' values are checked by
    /// `Config::from_properties`, so that every invalid setting is reported the same way,
    /// naming its key.
    pub fn properties(&self) -> Result<BTreeMap<String, String>> {
        let mut props = match &self.config {
            Some(path) => read_properties(path)?,
            None => BTreeMap::new(),
        };
        let flags = [
            ("listen", &self.listen),
            ("data.dir", &self.data_dir),
            ("cores", &self.cores),
            ("cpuset", &self.cpuset),
        ];
        if self.listen.is_some() {
            // The flag wins over the file, whichever of the two spellings the file uses.
            props.remove("listeners");
        }
        for (key, value) in flags {
            if let Some(value) = value {
                props.insert(key.to_string(), value.clone());
            }
        }
        props.extend(self.settings.iter().cloned());
        Ok(props)
    }
}

fn read_properties(path: &std::path::Path) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    parse_properties(&text).with_context(|| format!("config file {}", path.display()))
}
