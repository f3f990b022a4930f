//! Structured logs through `tracing`: every event on stderr, one line each, with UTC time, level,
//! thread (the shard) and module, as text or as one JSON object per line
//! (`sluice.log.format=json`, for log shippers; an event's fields become JSON fields). The level
//! comes from `sluice.log.level` (default info); the `SLUICE_LOG` environment variable overrides
//! it, so a debug run needs no config change.
//!
//! Installed once per process, before anything logs: `sluice serve` reads the two keys from its
//! properties before it builds the rest of the config; the client commands log at info as text.

use anyhow::{bail, Result};
use tracing::level_filters::LevelFilter;

fn parse_level(value: &str) -> Option<LevelFilter> {
    Some(match value.trim() {
        "debug" => LevelFilter::DEBUG,
        "info" => LevelFilter::INFO,
        "warn" => LevelFilter::WARN,
        "error" => LevelFilter::ERROR,
        _ => return None,
    })
}

/// The output format, validated before anything is installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Text,
    Json,
}

fn parse(level: &str, format: &str) -> Result<(LevelFilter, Format)> {
    let Some(level) = parse_level(level) else {
        bail!("sluice.log.level: {level:?} is not debug, info, warn or error");
    };
    let format = match format.trim() {
        "text" => Format::Text,
        "json" => Format::Json,
        other => bail!("sluice.log.format: {other:?} is not text or json"),
    };
    let level = std::env::var("SLUICE_LOG")
        .ok()
        .and_then(|v| parse_level(&v))
        .unwrap_or(level);
    Ok((level, format))
}

/// Installs the process's log subscriber (`sluice.log.level`, `sluice.log.format`); a second
/// call keeps the first one.
pub fn init(level: &str, format: &str) -> Result<()> {
    let (level, format) = parse(level, format)?;
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_thread_names(true)
        .with_ansi(false);
    // An error means a subscriber is already installed (a test harness, an earlier call).
    let _ = match format {
        Format::Text => builder.try_init(),
        Format::Json => builder.json().flatten_event(true).try_init(),
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_formats_are_validated() {
        assert!(parse("loud", "text").is_err());
        assert!(parse("info", "xml").is_err());
        assert_eq!(parse("warn", "json").unwrap().1, Format::Json);
    }
}
