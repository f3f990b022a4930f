//! DescribeCluster (key 60): the cluster id and its live brokers (as Metadata lists them), this
//! broker named as the controller (any broker takes admin requests and hands them to the
//! quorum). Endpoint type 2 (KIP-919, controllers) is refused: no controller serves clients.

use kafka_protocol::messages::describe_cluster_response::{
    DescribeClusterBroker, DescribeClusterResponse,
};
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest};
use kafka_protocol::protocol::StrBytes;

use super::{coordinator::Client, live_brokers};
use crate::error::ErrorCode;
use crate::shard::Shard;

pub const VERSIONS: (i16, i16) = (0, 1);

/// KIP-919's endpoint types: brokers (1) and controllers (2).
const BROKER_ENDPOINTS: i8 = 1;

pub fn handle(
    shard: &Shard,
    request: DescribeClusterRequest,
    client: &Client,
) -> DescribeClusterResponse {
    let image = shard.image();
    let response = DescribeClusterResponse::default()
        .with_endpoint_type(request.endpoint_type)
        .with_cluster_id(StrBytes::from_string(image.cluster_id.clone()))
        .with_cluster_authorized_operations(i32::MIN);
    if request.endpoint_type != BROKER_ENDPOINTS {
        return response
            .with_error_code(ErrorCode::UnsupportedEndpointType.code())
            .with_error_message(Some(StrBytes::from_static_str(
                "only broker endpoints are described",
            )));
    }
    let brokers = live_brokers(shard, &image, client)
        .into_iter()
        .map(|b| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.id))
                .with_host(b.host)
                .with_port(b.port)
        })
        .collect();
    response
        .with_controller_id(BrokerId(shard.config.node_id))
        .with_brokers(brokers)
}
