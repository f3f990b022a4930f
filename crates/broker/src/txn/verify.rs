//! Transaction verification, the partition leader's side (KIP-890, on by default since Kafka
//! 3.6): before a producer's first transactional batch of a transaction is appended here, the
//! transactional id's coordinator is asked whether the transaction is open and includes this
//! partition, on this broker through its shard, on another with AddPartitionsToTxn v4
//! (`verify_only`). Only then may the batch start a transaction here, so a batch that arrives
//! after its transaction ended (a retry, a zombie) cannot leave a transaction open forever.
//!
//! Runs on the partition's owning shard. A producer's batches waiting on one verification keep
//! their order: verifications take turns per partition (`Partition::admission_turn`), and the
//! verified batch is appended before the turn is given up.

use std::rc::Rc;

use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, TopicName, TransactionalId};
use kafka_protocol::protocol::StrBytes;

use super::state::TXN_TOPIC;
use super::{coordinator_of, TxnAnswer, TxnOp};
use crate::error::ErrorCode;
use crate::metadata::records::BrokerId;
use crate::partition::{AdmissionTicket, PartitionRef};
use crate::shard::{Shard, ShardRequest, ShardResponse};
use crate::storage::fs::UringStorage;
use crate::types::{ProducerEpoch, ProducerId, TopicPartition};

/// The first AddPartitionsToTxn version brokers send one another (KIP-890's `verify_only`).
pub const ADD_PARTITIONS_TO_TXN_BROKER_VERSION: i16 = 4;

/// Makes sure `producer` at `epoch` may write a transactional batch to `partition`, asking the
/// coordinator of `txn_id` if this partition has not admitted it yet. The ticket, when one comes
/// back, must be held until the batch is appended.
pub async fn admit(
    shard: &Rc<Shard>,
    partition: &PartitionRef<UringStorage>,
    txn_id: Option<&str>,
    producer: ProducerId,
    epoch: ProducerEpoch,
) -> Result<Option<AdmissionTicket>, ErrorCode> {
    if !partition.borrow().needs_admission(producer, epoch) {
        return Ok(None);
    }
    // A transactional batch outside a request naming its transaction cannot be verified.
    let txn_id = txn_id.ok_or(ErrorCode::InvalidTxnState)?;
    let turn = partition.borrow().admission_turn();
    let permit = turn
        .acquire_static_permit(1)
        .await
        .map_err(|_| ErrorCode::NotLeaderOrFollower)?;
    if !partition.borrow().needs_admission(producer, epoch) {
        return Ok(None);
    }
    let tp = partition.borrow().tp.clone();
    let ticket = partition
        .borrow_mut()
        .begin_verification(producer, epoch, permit);
    let verdict = ask_coordinator(shard, txn_id, producer, epoch, &tp).await;
    let admitted = partition
        .borrow_mut()
        .finish_verification(producer, &ticket, verdict.is_ok());
    match verdict {
        Err(code) => Err(code),
        // A marker ended the transaction while the coordinator was being asked.
        Ok(()) if !admitted => Err(ErrorCode::InvalidTxnState),
        Ok(()) => Ok(Some(ticket)),
    }
}

/// Asks the coordinator of `txn_id` whether `producer`'s open transaction includes `tp`.
async fn ask_coordinator(
    shard: &Rc<Shard>,
    txn_id: &str,
    producer: ProducerId,
    epoch: ProducerEpoch,
    tp: &TopicPartition,
) -> Result<(), ErrorCode> {
    let image = shard.image();
    let (owner, partition) =
        coordinator_of(shard, txn_id).map_err(|_| ErrorCode::InvalidTxnState)?;
    let leader = image
        .topic(TXN_TOPIC)
        .and_then(|t| t.partition_states.get(partition as usize))
        .map_or(BrokerId::NONE, |state| state.leader);
    let code = if leader.0 == shard.config.node_id {
        let op = TxnOp::Verify {
            txn_id: txn_id.to_string(),
            producer,
            epoch,
            partitions: vec![tp.clone()],
        };
        match shard.call(owner, ShardRequest::Txn(op)).await {
            ShardResponse::Txn(TxnAnswer::Verified(codes)) => codes
                .first()
                .map_or(ErrorCode::UnknownServerError.code(), |c| c.code()),
            _ => ErrorCode::CoordinatorNotAvailable.code(),
        }
    } else if leader == BrokerId::NONE {
        ErrorCode::CoordinatorNotAvailable.code()
    } else {
        ask_remote(shard, leader, txn_id, producer, epoch, tp).await
    };
    verdict(code)
}

/// AddPartitionsToTxn v4 with `verify_only` to the coordinator's broker: the partition's code.
async fn ask_remote(
    shard: &Rc<Shard>,
    to: BrokerId,
    txn_id: &str,
    producer: ProducerId,
    epoch: ProducerEpoch,
    tp: &TopicPartition,
) -> i16 {
    let topic = AddPartitionsToTxnTopic::default()
        .with_name(TopicName(StrBytes::from_string(tp.topic.to_string())))
        .with_partitions(vec![tp.partition.0]);
    let transaction = AddPartitionsToTxnTransaction::default()
        .with_transactional_id(TransactionalId(StrBytes::from_string(txn_id.to_string())))
        .with_producer_id(kafka_protocol::messages::ProducerId(producer.0))
        .with_producer_epoch(epoch.0)
        .with_verify_only(true)
        .with_topics(vec![topic]);
    let request = AddPartitionsToTxnRequest::default().with_transactions(vec![transaction]);
    let answer = shard
        .peers
        .call(
            &shard.image(),
            to,
            ADD_PARTITIONS_TO_TXN_BROKER_VERSION,
            &request,
        )
        .await;
    let response = match answer {
        Ok(response) => response,
        Err(err) => {
            tracing::warn!(
                "verifying transaction {txn_id} for {tp} with broker {}: {err}",
                to.0
            );
            return ErrorCode::CoordinatorNotAvailable.code();
        }
    };
    if response.error_code != 0 {
        return response.error_code;
    }
    response
        .results_by_transaction
        .iter()
        .filter(|r| r.transactional_id.0.as_str() == txn_id)
        .flat_map(|r| &r.topic_results)
        .filter(|t| t.name.0.as_str() == tp.topic.as_str())
        .flat_map(|t| &t.results_by_partition)
        .find(|p| p.partition_index == tp.partition.0)
        .map_or(ErrorCode::UnknownServerError.code(), |p| {
            p.partition_error_code
        })
}

/// What the producer's batch gets for the coordinator's answer: as Kafka answers, a coordinator
/// that could not be asked is NOT_ENOUGH_REPLICAS, which the producer retries.
fn verdict(code: i16) -> Result<(), ErrorCode> {
    match code {
        0 => Ok(()),
        c if c == ErrorCode::ProducerFenced.code()
            || c == ErrorCode::InvalidProducerEpoch.code() =>
        {
            Err(ErrorCode::InvalidProducerEpoch)
        }
        c if c == ErrorCode::InvalidTxnState.code()
            || c == ErrorCode::InvalidProducerIdMapping.code() =>
        {
            Err(ErrorCode::InvalidTxnState)
        }
        _ => Err(ErrorCode::NotEnoughReplicas),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_coordinator_that_could_not_answer_makes_the_producer_retry() {
        assert_eq!(verdict(0), Ok(()));
        for code in [
            ErrorCode::NotCoordinator,
            ErrorCode::CoordinatorLoadInProgress,
        ] {
            assert_eq!(verdict(code.code()), Err(ErrorCode::NotEnoughReplicas));
        }
        assert_eq!(
            verdict(ErrorCode::ProducerFenced.code()),
            Err(ErrorCode::InvalidProducerEpoch)
        );
        assert_eq!(
            verdict(ErrorCode::InvalidProducerIdMapping.code()),
            Err(ErrorCode::InvalidTxnState)
        );
    }
}
