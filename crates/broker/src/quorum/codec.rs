//! The byte encoding of the quorum's Raft messages (and whole snapshots) and log entries, for the wire between
//! controllers and for the metadata log on disk.
//!
//! Big-endian fixed-width fields, as Kafka's own record fields (`internal_log`). Decoding reads
//! only bytes that are there, allocates no more than the input holds or a named bound allows
//! (`QUORUM_MEMBERS_MAX`, `QUORUM_APPEND_ENTRIES_MAX`), refuses trailing bytes, and answers a
//! `DecodeError` naming what is wrong: a peer that lies or a damaged file never panics the broker.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::{EntryOf, LogIdOf, SnapshotMetaOf, StoredMembershipOf, VoteOf};
use openraft::{BasicNode, EntryPayload, Membership};

use super::types::{Command, CommandOutcome, QuorumTypes as Q};
use crate::internal_log::{put_bytes, put_string, FieldReader};
use crate::limits;
use crate::metadata::records::{BrokerEpoch, BrokerId};

/// A message between two controllers: a request or its answer.
#[derive(Debug)]
pub enum QuorumMessage {
    AppendEntries(AppendEntriesRequest<Q>),
    AppendEntriesAnswer(AppendEntriesResponse<Q>),
    Vote(VoteRequest<Q>),
    PreVote(VoteRequest<Q>),
    VoteAnswer(VoteResponse<Q>),
    /// A whole snapshot of the state machine, for a follower too far behind the leader's log.
    InstallSnapshot {
        vote: VoteOf<Q>,
        meta: SnapshotMetaOf<Q>,
        data: Bytes,
    },
    SnapshotAnswer(SnapshotResponse<Q>),
    /// A member that is not the leader hands the leader a command to commit.
    Propose(Command),
    ProposeAnswer(CommandOutcome),
    /// A broker tells the leader it is alive at its registration epoch, or that it is shutting
    /// down (and wants to lead nothing from now on).
    Heartbeat(BrokerHeartbeat),
    /// Whether the leader took the heartbeat (a member that does not lead refuses it).
    HeartbeatAnswer(Result<(), String>),
    /// A broker that is not a voter (`process.roles=broker`, an observer) asks a member for its
    /// metadata image if it is newer than the one applied at log index `known` (0: none yet),
    /// waiting at most `wait_ms` for one.
    FetchImage {
        known: u64,
        wait_ms: u32,
    },
    /// The member's image (the metadata file's encoding) when newer than asked, the log index
    /// it was applied at, and the quorum leader the member knows of.
    ImageAnswer {
        leader: Option<u64>,
        applied: u64,
        image: Option<Bytes>,
    },
}

/// One broker heartbeat (Kafka's BrokerHeartbeatRequest, the fields Sluice needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokerHeartbeat {
    pub broker: BrokerId,
    pub epoch: BrokerEpoch,
    pub shutting_down: bool,
}

/// Why bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad quorum message: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

impl From<String> for DecodeError {
    fn from(message: String) -> Self {
        DecodeError(message)
    }
}

mod tag {
    pub const APPEND_ENTRIES: i8 = 1;
    pub const APPEND_ENTRIES_ANSWER: i8 = 2;
    pub const VOTE: i8 = 3;
    pub const PRE_VOTE: i8 = 4;
    pub const VOTE_ANSWER: i8 = 5;
    pub const INSTALL_SNAPSHOT: i8 = 6;
    pub const SNAPSHOT_ANSWER: i8 = 7;
    pub const PROPOSE: i8 = 8;
    pub const PROPOSE_ANSWER: i8 = 9;
    pub const HEARTBEAT: i8 = 10;
    pub const HEARTBEAT_ANSWER: i8 = 11;
    pub const FETCH_IMAGE: i8 = 12;
    pub const IMAGE_ANSWER: i8 = 13;

    pub const PAYLOAD_BLANK: i8 = 0;
    pub const PAYLOAD_COMMAND: i8 = 1;
    pub const PAYLOAD_MEMBERSHIP: i8 = 2;

    pub const ANSWER_SUCCESS: i8 = 0;
    pub const ANSWER_PARTIAL: i8 = 1;
    pub const ANSWER_CONFLICT: i8 = 2;
    pub const ANSWER_HIGHER_VOTE: i8 = 3;
}

pub fn encode(message: &QuorumMessage) -> Bytes {
    let mut out = BytesMut::new();
    match message {
        QuorumMessage::AppendEntries(request) => {
            out.put_i8(tag::APPEND_ENTRIES);
            put_vote(&mut out, &request.vote);
            put_log_id(&mut out, request.prev_log_id.as_ref());
            put_log_id(&mut out, request.leader_commit.as_ref());
            out.put_u32(request.entries.len() as u32);
            for entry in &request.entries {
                put_entry(&mut out, entry);
            }
        }
        QuorumMessage::AppendEntriesAnswer(answer) => {
            out.put_i8(tag::APPEND_ENTRIES_ANSWER);
            put_append_answer(&mut out, answer);
        }
        QuorumMessage::Vote(request) | QuorumMessage::PreVote(request) => {
            let is_pre_vote = matches!(message, QuorumMessage::PreVote(_));
            out.put_i8(if is_pre_vote {
                tag::PRE_VOTE
            } else {
                tag::VOTE
            });
            put_vote(&mut out, &request.vote);
            put_log_id(&mut out, request.last_log_id.as_ref());
            out.put_u8(request.leadership_transfer as u8);
        }
        QuorumMessage::VoteAnswer(answer) => {
            out.put_i8(tag::VOTE_ANSWER);
            put_vote(&mut out, &answer.vote);
            out.put_u8(answer.vote_granted as u8);
            put_log_id(&mut out, answer.last_log_id.as_ref());
        }
        QuorumMessage::InstallSnapshot { vote, meta, data } => {
            out.put_i8(tag::INSTALL_SNAPSHOT);
            put_vote(&mut out, vote);
            put_snapshot_meta(&mut out, meta);
            put_bytes(&mut out, data);
        }
        QuorumMessage::SnapshotAnswer(answer) => {
            out.put_i8(tag::SNAPSHOT_ANSWER);
            put_vote(&mut out, &answer.vote);
        }
        QuorumMessage::Propose(Command(bytes)) => {
            out.put_i8(tag::PROPOSE);
            put_bytes(&mut out, bytes);
        }
        QuorumMessage::ProposeAnswer(outcome) => {
            out.put_i8(tag::PROPOSE_ANSWER);
            put_outcome(&mut out, outcome);
        }
        QuorumMessage::Heartbeat(beat) => {
            out.put_i8(tag::HEARTBEAT);
            out.put_i32(beat.broker.0);
            out.put_i64(beat.epoch.0);
            out.put_u8(beat.shutting_down as u8);
        }
        QuorumMessage::HeartbeatAnswer(outcome) => {
            out.put_i8(tag::HEARTBEAT_ANSWER);
            put_outcome(&mut out, outcome);
        }
        QuorumMessage::FetchImage { known, wait_ms } => {
            out.put_i8(tag::FETCH_IMAGE);
            out.put_u64(*known);
            out.put_u32(*wait_ms);
        }
        QuorumMessage::ImageAnswer {
            leader,
            applied,
            image,
        } => {
            out.put_i8(tag::IMAGE_ANSWER);
            out.put_u8(leader.is_some() as u8);
            out.put_u64(leader.unwrap_or(0));
            out.put_u64(*applied);
            out.put_u8(image.is_some() as u8);
            if let Some(image) = image {
                put_bytes(&mut out, image);
            }
        }
    }
    out.freeze()
}

pub fn decode(bytes: &[u8]) -> Result<QuorumMessage, DecodeError> {
    let mut r = FieldReader(bytes);
    let message = match r.i8()? {
        tag::APPEND_ENTRIES => {
            let vote = vote(&mut r)?;
            let prev_log_id = log_id(&mut r)?;
            let leader_commit = log_id(&mut r)?;
            let count = bounded_count(&mut r, limits::QUORUM_APPEND_ENTRIES_MAX, "entries")?;
            let entries = (0..count)
                .map(|_| entry(&mut r))
                .collect::<Result<_, _>>()?;
            QuorumMessage::AppendEntries(AppendEntriesRequest {
                vote,
                prev_log_id,
                entries,
                leader_commit,
            })
        }
        tag::APPEND_ENTRIES_ANSWER => QuorumMessage::AppendEntriesAnswer(append_answer(&mut r)?),
        kind @ (tag::VOTE | tag::PRE_VOTE) => {
            let request = VoteRequest {
                vote: vote(&mut r)?,
                last_log_id: log_id(&mut r)?,
                leadership_transfer: flag(&mut r)?,
            };
            if kind == tag::VOTE {
                QuorumMessage::Vote(request)
            } else {
                QuorumMessage::PreVote(request)
            }
        }
        tag::VOTE_ANSWER => QuorumMessage::VoteAnswer(VoteResponse {
            vote: vote(&mut r)?,
            vote_granted: flag(&mut r)?,
            last_log_id: log_id(&mut r)?,
        }),
        tag::INSTALL_SNAPSHOT => {
            let vote = vote(&mut r)?;
            let meta = snapshot_meta(&mut r)?;
            QuorumMessage::InstallSnapshot {
                vote,
                meta,
                data: r.bytes()?,
            }
        }
        tag::SNAPSHOT_ANSWER => QuorumMessage::SnapshotAnswer(SnapshotResponse {
            vote: vote(&mut r)?,
        }),
        tag::PROPOSE => QuorumMessage::Propose(Command(r.bytes()?)),
        tag::PROPOSE_ANSWER => QuorumMessage::ProposeAnswer(outcome(&mut r)?),
        tag::HEARTBEAT => QuorumMessage::Heartbeat(BrokerHeartbeat {
            broker: BrokerId(r.i32()?),
            epoch: BrokerEpoch(r.i64()?),
            shutting_down: flag(&mut r)?,
        }),
        tag::HEARTBEAT_ANSWER => QuorumMessage::HeartbeatAnswer(outcome(&mut r)?),
        tag::FETCH_IMAGE => QuorumMessage::FetchImage {
            known: r.i64()? as u64,
            wait_ms: r.i32()? as u32,
        },
        tag::IMAGE_ANSWER => {
            let has_leader = flag(&mut r)?;
            let leader = r.i64()? as u64;
            let applied = r.i64()? as u64;
            let image = if flag(&mut r)? {
                Some(r.bytes()?)
            } else {
                None
            };
            QuorumMessage::ImageAnswer {
                leader: has_leader.then_some(leader),
                applied,
                image,
            }
        }
        other => return Err(DecodeError(format!("unknown message kind {other}"))),
    };
    finished(&r)?;
    Ok(message)
}

/// One log entry, as the metadata log stores it (the value of its record).
pub fn encode_entry(entry: &EntryOf<Q>) -> Bytes {
    let mut out = BytesMut::new();
    put_entry(&mut out, entry);
    out.freeze()
}

pub fn decode_entry(bytes: &[u8]) -> Result<EntryOf<Q>, DecodeError> {
    let mut r = FieldReader(bytes);
    let decoded = entry(&mut r)?;
    finished(&r)?;
    Ok(decoded)
}

fn finished(r: &FieldReader) -> Result<(), DecodeError> {
    match r.0.len() {
        0 => Ok(()),
        left => Err(DecodeError(format!("{left} bytes after the message"))),
    }
}

fn put_outcome(out: &mut BytesMut, outcome: &Result<(), String>) {
    match outcome {
        Ok(()) => out.put_u8(0),
        Err(why) => {
            out.put_u8(1);
            put_string(out, why);
        }
    }
}

fn outcome(r: &mut FieldReader) -> Result<Result<(), String>, DecodeError> {
    Ok(match flag(r)? {
        false => Ok(()),
        true => Err(r.string()?),
    })
}

fn u64_field(r: &mut FieldReader) -> Result<u64, DecodeError> {
    Ok(r.i64()? as u64)
}

fn flag(r: &mut FieldReader) -> Result<bool, DecodeError> {
    match r.i8()? {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(DecodeError(format!("flag {other} is neither 0 nor 1"))),
    }
}

fn bounded_count(r: &mut FieldReader, max: usize, what: &str) -> Result<usize, DecodeError> {
    let count = r.i32()? as u32 as usize;
    if count > max {
        return Err(DecodeError(format!("{count} {what}, more than {max}")));
    }
    Ok(count)
}

fn put_vote(out: &mut BytesMut, vote: &VoteOf<Q>) {
    out.put_u64(vote.leader_id.term);
    out.put_u64(vote.leader_id.voted_for);
    out.put_u8(vote.committed as u8);
}

fn vote(r: &mut FieldReader) -> Result<VoteOf<Q>, DecodeError> {
    let term = u64_field(r)?;
    let node = u64_field(r)?;
    Ok(if flag(r)? {
        VoteOf::<Q>::new_committed(term, node)
    } else {
        VoteOf::<Q>::new(term, node)
    })
}

fn put_log_id(out: &mut BytesMut, id: Option<&LogIdOf<Q>>) {
    match id {
        None => out.put_u8(0),
        Some(id) => {
            out.put_u8(1);
            out.put_u64(id.leader_id.term);
            out.put_u64(id.index);
        }
    }
}

fn log_id(r: &mut FieldReader) -> Result<Option<LogIdOf<Q>>, DecodeError> {
    if !flag(r)? {
        return Ok(None);
    }
    let term = u64_field(r)?;
    let index = u64_field(r)?;
    Ok(Some(LogIdOf::<Q>::new_term_index(term, index)))
}

/// A snapshot's description (its last log id and the membership it holds), as the
/// `InstallSnapshot` message and the snapshot file carry it.
pub fn put_snapshot_meta(out: &mut BytesMut, meta: &SnapshotMetaOf<Q>) {
    put_log_id(out, meta.last_log_id.as_ref());
    put_log_id(out, meta.last_membership.log_id().as_ref());
    put_membership(out, meta.last_membership.membership());
}

pub fn snapshot_meta(r: &mut FieldReader) -> Result<SnapshotMetaOf<Q>, DecodeError> {
    let last_log_id = log_id(r)?;
    let membership_log_id = log_id(r)?;
    let membership = membership(r)?;
    Ok(SnapshotMetaOf::<Q> {
        last_log_id,
        last_membership: StoredMembershipOf::<Q>::new(membership_log_id, membership),
    })
}

fn put_entry(out: &mut BytesMut, entry: &EntryOf<Q>) {
    put_log_id(out, Some(&entry.log_id));
    match &entry.payload {
        EntryPayload::Blank => out.put_i8(tag::PAYLOAD_BLANK),
        EntryPayload::Normal(Command(bytes)) => {
            out.put_i8(tag::PAYLOAD_COMMAND);
            put_bytes(out, bytes);
        }
        EntryPayload::Membership(membership) => {
            out.put_i8(tag::PAYLOAD_MEMBERSHIP);
            put_membership(out, membership);
        }
    }
}

fn entry(r: &mut FieldReader) -> Result<EntryOf<Q>, DecodeError> {
    let log_id = log_id(r)?.ok_or_else(|| DecodeError("an entry without a log id".into()))?;
    let payload = match r.i8()? {
        tag::PAYLOAD_BLANK => EntryPayload::Blank,
        tag::PAYLOAD_COMMAND => EntryPayload::Normal(Command(r.bytes()?)),
        tag::PAYLOAD_MEMBERSHIP => EntryPayload::Membership(membership(r)?),
        other => return Err(DecodeError(format!("unknown entry payload {other}"))),
    };
    Ok(EntryOf::<Q> { log_id, payload })
}

fn put_membership(out: &mut BytesMut, membership: &Membership<u64, BasicNode>) {
    let configs = membership.get_joint_config();
    out.put_u32(configs.len() as u32);
    for voters in configs {
        out.put_u32(voters.len() as u32);
        for id in voters {
            out.put_u64(*id);
        }
    }
    let nodes: Vec<_> = membership.nodes().collect();
    out.put_u32(nodes.len() as u32);
    for (id, node) in nodes {
        out.put_u64(*id);
        put_string(out, &node.addr);
    }
}

fn membership(r: &mut FieldReader) -> Result<Membership<u64, BasicNode>, DecodeError> {
    // A joint configuration has two sets, the old and the new.
    let config_count = bounded_count(r, 2, "voter sets")?;
    let mut configs = Vec::with_capacity(config_count);
    for _ in 0..config_count {
        let voter_count = bounded_count(r, limits::QUORUM_MEMBERS_MAX, "voters")?;
        let voters = (0..voter_count)
            .map(|_| u64_field(r))
            .collect::<Result<BTreeSet<_>, _>>()?;
        configs.push(voters);
    }
    let node_count = bounded_count(r, limits::QUORUM_MEMBERS_MAX, "nodes")?;
    let mut nodes = BTreeMap::new();
    for _ in 0..node_count {
        let id = u64_field(r)?;
        nodes.insert(id, BasicNode::new(r.string()?));
    }
    Membership::new(configs, nodes).map_err(|err| DecodeError(format!("membership: {err}")))
}

fn put_append_answer(out: &mut BytesMut, answer: &AppendEntriesResponse<Q>) {
    match answer {
        AppendEntriesResponse::Success => out.put_i8(tag::ANSWER_SUCCESS),
        AppendEntriesResponse::PartialSuccess(matched) => {
            out.put_i8(tag::ANSWER_PARTIAL);
            put_log_id(out, matched.as_ref());
        }
        AppendEntriesResponse::Conflict => out.put_i8(tag::ANSWER_CONFLICT),
        AppendEntriesResponse::HigherVote(vote) => {
            out.put_i8(tag::ANSWER_HIGHER_VOTE);
            put_vote(out, vote);
        }
    }
}

fn append_answer(r: &mut FieldReader) -> Result<AppendEntriesResponse<Q>, DecodeError> {
    Ok(match r.i8()? {
        tag::ANSWER_SUCCESS => AppendEntriesResponse::Success,
        tag::ANSWER_PARTIAL => AppendEntriesResponse::PartialSuccess(log_id(r)?),
        tag::ANSWER_CONFLICT => AppendEntriesResponse::Conflict,
        tag::ANSWER_HIGHER_VOTE => AppendEntriesResponse::HigherVote(vote(r)?),
        other => return Err(DecodeError(format!("unknown append answer {other}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(term: u64, index: u64) -> LogIdOf<Q> {
        LogIdOf::<Q>::new_term_index(term, index)
    }

    fn entries() -> Vec<EntryOf<Q>> {
        let voters: BTreeMap<u64, BasicNode> = (1..=3)
            .map(|n| (n, BasicNode::new(format!("127.0.0.{n}:9093"))))
            .collect();
        let joint = vec![BTreeSet::from([1, 2, 3]), BTreeSet::from([2, 3, 4])];
        let mut nodes = voters.clone();
        nodes.insert(4, BasicNode::new("127.0.0.4:9093"));
        vec![
            EntryOf::<Q> {
                log_id: id(1, 0),
                payload: EntryPayload::Membership(
                    Membership::new(vec![voters.keys().copied().collect()], voters).unwrap(),
                ),
            },
            EntryOf::<Q> {
                log_id: id(2, 1),
                payload: EntryPayload::Blank,
            },
            EntryOf::<Q> {
                log_id: id(2, 2),
                payload: EntryPayload::Normal(Command(Bytes::from_static(b"records"))),
            },
            EntryOf::<Q> {
                log_id: id(3, 3),
                payload: EntryPayload::Membership(Membership::new(joint, nodes).unwrap()),
            },
        ]
    }

    fn messages() -> Vec<QuorumMessage> {
        let vote = VoteOf::<Q>::new_committed(3, 2);
        let request = VoteRequest {
            vote: VoteOf::<Q>::new(4, 1),
            last_log_id: Some(id(3, 9)),
            leadership_transfer: true,
        };
        vec![
            QuorumMessage::AppendEntries(AppendEntriesRequest {
                vote,
                prev_log_id: None,
                entries: entries(),
                leader_commit: Some(id(2, 1)),
            }),
            QuorumMessage::AppendEntriesAnswer(AppendEntriesResponse::Success),
            QuorumMessage::AppendEntriesAnswer(AppendEntriesResponse::PartialSuccess(Some(id(
                2, 5,
            )))),
            QuorumMessage::AppendEntriesAnswer(AppendEntriesResponse::Conflict),
            QuorumMessage::AppendEntriesAnswer(AppendEntriesResponse::HigherVote(vote)),
            QuorumMessage::Vote(request.clone()),
            QuorumMessage::PreVote(request),
            QuorumMessage::VoteAnswer(VoteResponse {
                vote,
                vote_granted: false,
                last_log_id: None,
            }),
            QuorumMessage::InstallSnapshot {
                vote,
                meta: SnapshotMetaOf::<Q> {
                    last_log_id: Some(id(3, 40)),
                    last_membership: StoredMembershipOf::<Q>::new(
                        Some(id(1, 0)),
                        match &entries()[0].payload {
                            EntryPayload::Membership(m) => m.clone(),
                            _ => unreachable!("the first entry is a membership"),
                        },
                    ),
                },
                data: Bytes::from_static(b"the image"),
            },
            QuorumMessage::SnapshotAnswer(SnapshotResponse { vote }),
            QuorumMessage::Propose(Command(Bytes::from_static(b"records"))),
            QuorumMessage::ProposeAnswer(Ok(())),
            QuorumMessage::ProposeAnswer(Err("record 0 of the command: no such topic".into())),
            QuorumMessage::Heartbeat(BrokerHeartbeat {
                broker: BrokerId(2),
                epoch: BrokerEpoch(7),
                shutting_down: true,
            }),
            QuorumMessage::HeartbeatAnswer(Ok(())),
            QuorumMessage::HeartbeatAnswer(Err("not the leader".into())),
            QuorumMessage::FetchImage {
                known: 17,
                wait_ms: 500,
            },
            QuorumMessage::ImageAnswer {
                leader: Some(0),
                applied: 18,
                image: Some(Bytes::from_static(b"SLUICEMD image")),
            },
            QuorumMessage::ImageAnswer {
                leader: None,
                applied: 17,
                image: None,
            },
        ]
    }

    #[test]
    fn every_message_and_entry_survives_a_round_trip() {
        for message in messages() {
            let bytes = encode(&message);
            let again = decode(&bytes).unwrap();
            assert_eq!(format!("{again:?}"), format!("{message:?}"));
            assert_eq!(encode(&again), bytes);
        }
        for entry in entries() {
            assert_eq!(decode_entry(&encode_entry(&entry)).unwrap(), entry);
        }
    }

    #[test]
    fn cut_short_or_trailing_bytes_are_errors() {
        for message in messages() {
            let bytes = encode(&message);
            for cut in 0..bytes.len() {
                assert!(decode(&bytes[..cut]).is_err(), "{message:?} cut at {cut}");
            }
            let mut longer = bytes.to_vec();
            longer.push(0);
            assert!(decode(&longer).is_err());
        }
    }

    #[test]
    fn damaged_bytes_never_panic_and_counts_are_bounded() {
        // Every single-byte change of every message: an error or some message, never a panic.
        for message in messages() {
            let bytes = encode(&message);
            for at in 0..bytes.len() {
                for value in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                    let mut damaged = bytes.to_vec();
                    damaged[at] = value;
                    let _ = decode(&damaged);
                }
            }
        }
        // An entry count past the bound is refused before anything is allocated for it.
        let mut huge = BytesMut::new();
        huge.put_i8(tag::APPEND_ENTRIES);
        put_vote(&mut huge, &VoteOf::<Q>::new(1, 1));
        put_log_id(&mut huge, None);
        put_log_id(&mut huge, None);
        huge.put_u32(u32::MAX);
        let err = decode(&huge).unwrap_err();
        assert!(err.0.contains("entries"), "{err}");
    }
}
