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
    MessageTooLarge,
    InvalidTopicException,
    InvalidRequiredAcks,
    UnsupportedVersion,
    TopicAlreadyExists,
    InvalidPartitions,
    InvalidReplicationFactor,
    InvalidConfig,
    InvalidRequest,
    UnsupportedForMessageFormat,
    OutOfOrderSequenceNumber,
    InvalidProducerEpoch,
    InvalidTxnState,
    KafkaStorageError,
    UnsupportedCompressionType,
    InvalidRecord,
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
            ErrorCode::MessageTooLarge => 10,
            ErrorCode::InvalidTopicException => 17,
            ErrorCode::InvalidRequiredAcks => 21,
            ErrorCode::UnsupportedVersion => 35,
            ErrorCode::TopicAlreadyExists => 36,
            ErrorCode::InvalidPartitions => 37,
            ErrorCode::InvalidReplicationFactor => 38,
            ErrorCode::InvalidConfig => 40,
            ErrorCode::InvalidRequest => 42,
            ErrorCode::UnsupportedForMessageFormat => 43,
            ErrorCode::OutOfOrderSequenceNumber => 45,
            ErrorCode::InvalidProducerEpoch => 47,
            ErrorCode::InvalidTxnState => 48,
            ErrorCode::KafkaStorageError => 56,
            ErrorCode::UnsupportedCompressionType => 76,
            ErrorCode::InvalidRecord => 87,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} ({})", self, self.code())
    }
}
