//! Kafka error codes, as a plain enum the hot path returns. Each variant maps onto the wire code
//! Kafka gives the same condition, so a client sees exactly what it would see from Kafka.

/// A Kafka error code (see Kafka's `Errors` enum for the numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    None,
    UnknownServerError,
    OffsetOutOfRange,
    CorruptMessage,
    UnknownTopicOrPartition,
    NotLeaderOrFollower,
    /// The partition has no leader now (its only replica's broker is fenced): retriable.
    LeaderNotAvailable,
    /// The client names an older leader epoch than the partition's (KIP-320).
    FencedLeaderEpoch,
    /// The client names a newer leader epoch than this broker knows.
    UnknownLeaderEpoch,
    MessageTooLarge,
    InvalidTopicException,
    InvalidRequiredAcks,
    UnsupportedVersion,
    TopicAlreadyExists,
    InvalidPartitions,
    InvalidReplicationFactor,
    InvalidReplicaAssignment,
    /// A reassignment cancelled where none is under way.
    NoReassignmentInProgress,
    InvalidConfig,
    /// The metadata quorum has no leader to commit a change yet (retriable).
    NotController,
    InvalidRequest,
    UnsupportedForMessageFormat,
    OutOfOrderSequenceNumber,
    InvalidProducerEpoch,
    InvalidTxnState,
    KafkaStorageError,
    UnsupportedCompressionType,
    InvalidRecord,
    InvalidTimestamp,
    OffsetMetadataTooLarge,
    InvalidCommitOffsetSize,
    CoordinatorLoadInProgress,
    CoordinatorNotAvailable,
    NotCoordinator,
    IllegalGeneration,
    InconsistentGroupProtocol,
    InvalidGroupId,
    UnknownMemberId,
    InvalidSessionTimeout,
    RebalanceInProgress,
    NonEmptyGroup,
    GroupIdNotFound,
    MemberIdRequired,
    GroupMaxSizeReached,
    FencedInstanceId,
    GroupSubscribedToTopic,
    InvalidProducerIdMapping,
    InvalidTransactionTimeout,
    ConcurrentTransactions,
    TransactionCoordinatorFenced,
    OperationNotAttempted,
    SecurityDisabled,
    UnstableOffsetCommit,
    ProducerFenced,
    /// A broker asked with a registration epoch that is not its current one.
    StaleBrokerEpoch,
    /// DescribeCluster for endpoints this node does not have (KIP-919).
    UnsupportedEndpointType,
    /// ElectLeaders: the partition already has the leader the election would give it.
    ElectionNotNeeded,
    /// ElectLeaders (preferred): the preferred replica is fenced or out of the ISR.
    PreferredLeaderNotAvailable,
    /// ElectLeaders (unclean): no live replica could lead.
    EligibleLeadersNotAvailable,
    /// Produce: retriable; also what a transactional batch gets when its coordinator could not
    /// be asked whether the partition is in the transaction (as Kafka answers).
    NotEnoughReplicas,
    /// Produce with acks=all: appended, but the ISR fell below `min.insync.replicas` before the
    /// records were committed (a retry may duplicate them unless the producer is idempotent).
    NotEnoughReplicasAfterAppend,
    /// A request names a topic by an id the metadata does not know (KIP-516).
    UnknownTopicId,
    /// AlterPartition: the partition epoch sent is older than the controller's (the sender
    /// missed a change and must wait for the newer metadata).
    InvalidUpdateVersion,
    /// AlterPartition: a new ISR member is fenced, shutting down, unregistered, or at another
    /// registration epoch.
    IneligibleReplica,
}

impl ErrorCode {
    /// The number Kafka puts on the wire for this error.
    pub fn code(self) -> i16 {
        match self {
            ErrorCode::None => 0,
            ErrorCode::UnknownServerError => -1,
            ErrorCode::OffsetOutOfRange => 1,
            ErrorCode::CorruptMessage => 2,
            ErrorCode::UnknownTopicOrPartition => 3,
            ErrorCode::NotLeaderOrFollower => 6,
            ErrorCode::LeaderNotAvailable => 5,
            ErrorCode::FencedLeaderEpoch => 74,
            ErrorCode::UnknownLeaderEpoch => 75,
            ErrorCode::UnknownTopicId => 100,
            ErrorCode::MessageTooLarge => 10,
            ErrorCode::InvalidTopicException => 17,
            ErrorCode::InvalidRequiredAcks => 21,
            ErrorCode::UnsupportedVersion => 35,
            ErrorCode::TopicAlreadyExists => 36,
            ErrorCode::InvalidPartitions => 37,
            ErrorCode::InvalidReplicationFactor => 38,
            ErrorCode::InvalidReplicaAssignment => 39,
            ErrorCode::NoReassignmentInProgress => 85,
            ErrorCode::InvalidConfig => 40,
            ErrorCode::NotController => 41,
            ErrorCode::InvalidRequest => 42,
            ErrorCode::UnsupportedForMessageFormat => 43,
            ErrorCode::OutOfOrderSequenceNumber => 45,
            ErrorCode::InvalidProducerEpoch => 47,
            ErrorCode::InvalidTxnState => 48,
            ErrorCode::KafkaStorageError => 56,
            ErrorCode::UnsupportedCompressionType => 76,
            ErrorCode::InvalidRecord => 87,
            ErrorCode::InvalidTimestamp => 32,
            ErrorCode::OffsetMetadataTooLarge => 12,
            ErrorCode::InvalidCommitOffsetSize => 28,
            ErrorCode::CoordinatorLoadInProgress => 14,
            ErrorCode::CoordinatorNotAvailable => 15,
            ErrorCode::NotCoordinator => 16,
            ErrorCode::IllegalGeneration => 22,
            ErrorCode::InconsistentGroupProtocol => 23,
            ErrorCode::InvalidGroupId => 24,
            ErrorCode::UnknownMemberId => 25,
            ErrorCode::InvalidSessionTimeout => 26,
            ErrorCode::RebalanceInProgress => 27,
            ErrorCode::NonEmptyGroup => 68,
            ErrorCode::GroupIdNotFound => 69,
            ErrorCode::MemberIdRequired => 79,
            ErrorCode::GroupMaxSizeReached => 81,
            ErrorCode::FencedInstanceId => 82,
            ErrorCode::GroupSubscribedToTopic => 86,
            ErrorCode::InvalidProducerIdMapping => 49,
            ErrorCode::InvalidTransactionTimeout => 50,
            ErrorCode::ConcurrentTransactions => 51,
            ErrorCode::TransactionCoordinatorFenced => 52,
            ErrorCode::OperationNotAttempted => 55,
            ErrorCode::SecurityDisabled => 54,
            ErrorCode::UnstableOffsetCommit => 88,
            ErrorCode::ProducerFenced => 90,
            ErrorCode::StaleBrokerEpoch => 77,
            ErrorCode::UnsupportedEndpointType => 115,
            ErrorCode::ElectionNotNeeded => 84,
            ErrorCode::PreferredLeaderNotAvailable => 80,
            ErrorCode::EligibleLeadersNotAvailable => 83,
            ErrorCode::NotEnoughReplicas => 19,
            ErrorCode::NotEnoughReplicasAfterAppend => 20,
            ErrorCode::InvalidUpdateVersion => 95,
            ErrorCode::IneligibleReplica => 107,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} ({})", self, self.code())
    }
}

/// A refused produce to one partition: its code and, where Kafka explains the refusal record by
/// record (KIP-467), which records and why. Built only on the refusal path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceError {
    pub code: ErrorCode,
    pub records: Option<Box<RecordErrors>>,
}

/// The per-record part of a refusal: Produce v8+ carries it as `record_errors` and
/// `error_message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordErrors {
    /// At most `limits::PRODUCE_RECORD_ERRORS_MAX`, in batch order.
    pub errors: Vec<RecordError>,
    pub message: String,
}

/// One refused record: its index in its batch, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    pub batch_index: i32,
    pub message: String,
}

impl From<ErrorCode> for ProduceError {
    fn from(code: ErrorCode) -> ProduceError {
        ProduceError {
            code,
            records: None,
        }
    }
}
