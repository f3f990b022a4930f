//! What Sluice's client-side tools share: the Kafka wire framing, without I/O (`frame`), one
//! blocking connection over it (`blocking`), the JSON their `--json` output prints (`json`), and
//! the one Sluice extension to a Kafka message, the damaged ranges DescribeLogDirs reports
//! (`damaged_ranges`, which the broker encodes with the same code).
//!
//! The admin CLI, the load generator's plain Fetch reader, the integration tests and the fuzz
//! targets all frame requests and read responses through this crate, so a fix to the framing (a
//! bound, a check of the correlation id) reaches every one of them. Nothing here depends on the
//! broker: it speaks to any Kafka-compatible cluster.

pub mod blocking;
pub mod damaged_ranges;
pub mod frame;
pub mod json;

pub use blocking::Connection;
pub use frame::FrameError;
pub use json::Json;
