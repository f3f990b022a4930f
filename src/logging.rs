//! A minimal logger for the `log` facade: one line per record on stderr, with UTC time, level and
//! thread (the shard) name, as text or as one JSON object per line (`sluice.log.format=json`,
//! for log shippers). The level comes from `sluice.log.level` (default info); the `SLUICE_LOG`
//! environment variable overrides it, so a debug run needs no config change.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Result};

struct StderrLogger;

/// Whether lines are written as JSON objects instead of text.
static JSON: AtomicBool = AtomicBool::new(false);

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) || !record.target().starts_with("sluice") {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("main");
        let line = if JSON.load(Ordering::Relaxed) {
            format!(
                "{{\"ts_ms\":{},\"level\":\"{}\",\"thread\":\"{}\",\"msg\":\"{}\"}}\n",
                now.as_millis(),
                record.level(),
                json_escape(name),
                json_escape(&record.args().to_string())
            )
        } else {
            let (secs, millis) = (now.as_secs(), now.subsec_millis());
            format!(
                "{:02}:{:02}:{:02}.{millis:03} {:5} [{name}] {}\n",
                secs / 3600 % 24,
                secs / 60 % 60,
                secs % 60,
                record.level(),
                record.args()
            )
        };
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

static LOGGER: StderrLogger = StderrLogger;

fn parse_level(value: &str) -> Option<log::LevelFilter> {
    Some(match value.trim() {
        "debug" => log::LevelFilter::Debug,
        "info" => log::LevelFilter::Info,
        "warn" => log::LevelFilter::Warn,
        "error" => log::LevelFilter::Error,
        _ => return None,
    })
}

/// Installs the logger at info level (or `SLUICE_LOG`'s), before the config is read.
pub fn init() {
    let level = std::env::var("SLUICE_LOG")
        .ok()
        .and_then(|v| parse_level(&v))
        .unwrap_or(log::LevelFilter::Info);
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}

/// Applies `sluice.log.level` and `sluice.log.format` from the config (`SLUICE_LOG`, when set,
/// still wins for the level).
pub fn configure(level: &str, format: &str) -> Result<()> {
    let Some(level) = parse_level(level) else {
        bail!("sluice.log.level: {level:?} is not debug, info, warn or error");
    };
    match format.trim() {
        "text" => JSON.store(false, Ordering::Relaxed),
        "json" => JSON.store(true, Ordering::Relaxed),
        other => bail!("sluice.log.format: {other:?} is not text or json"),
    }
    if std::env::var("SLUICE_LOG")
        .ok()
        .and_then(|v| parse_level(&v))
        .is_none()
    {
        log::set_max_level(level);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_escape_what_json_needs() {
        assert_eq!(json_escape("a\"b\\c\nd\u{1}"), "a\\\"b\\\\c\\nd\\u0001");
        assert!(configure("loud", "text").is_err());
        assert!(configure("info", "xml").is_err());
    }
}
