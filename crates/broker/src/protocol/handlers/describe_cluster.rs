//! DescribeCluster (key 60): this broker, as the whole cluster and its controller.

use kafka_protocol::messages::describe_cluster_response::{
    DescribeClusterBroker, DescribeClusterResponse,
};
use kafka_protocol::messages::BrokerId;
use kafka_protocol::protocol::StrBytes;

use super::{advertised, coordinator::Client};
use crate::shard::Shard;

pub const VERSIONS: (i16, i16) = (0, 1);

pub fn handle(shard: &Shard, client: &Client) -> DescribeClusterResponse {
    let (host, port) = advertised(shard, client);
    let node = BrokerId(shard.config.node_id);
    DescribeClusterResponse::default()
        .with_endpoint_type(1)
        .with_cluster_id(StrBytes::from_string(shard.image().cluster_id.clone()))
        .with_controller_id(node)
        .with_cluster_authorized_operations(i32::MIN)
        .with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(node)
            .with_host(host)
            .with_port(port)])
}
