//! The metadata quorum's consensus: openraft (pinned at `=0.10.0-alpha.37`, built
//! `single-threaded`) running on glommio.
//!
//! Why openraft: a Raft used in production (Databend's meta service) with a deterministic fuzzer and
//! a Jepsen suite in its CI, and a storage test suite (`openraft::testing::log::Suite`) that any log
//! store must pass. Its 0.10 line has a pluggable async runtime and, with `single-threaded`, no
//! `Send` bounds, so the Raft core can run as tasks of one shard (shard 0, beside the metadata
//! controller) without a second runtime. 0.10 is still in alpha: the version is pinned exactly and
//! moves only with a review of its changelog.
//!
//! Owns: the runtime adapter (`runtime`), the Raft types of the metadata quorum (`types`), the
//! byte encoding of its messages and log entries (`codec`), the metadata log on disk
//! (`log_store`), the transport between members (`network`), the state machine, the
//! `MetadataImage` moved by committed metadata records (`state_machine`), this broker as a
//! member: starting it, naming the cluster, committing or forwarding records (`member`), or as
//! an observer, a broker-only node following the voters' images (`observer`), and either seen
//! the same way by the rest of the broker (`link`). Lives on the shard that runs the Raft core
//! (shard 0); nothing here crosses threads.

pub mod codec;
pub mod heartbeats;
pub mod link;
pub mod log_store;
pub mod member;
pub mod network;
pub mod observer;
pub mod runtime;
pub mod state_machine;
pub mod types;

#[cfg(test)]
mod mem;
#[cfg(test)]
mod tests;
