use std::collections::BTreeMap;

use super::*;
use crate::config::Config;

fn config(pairs: &[(&str, &str)]) -> Result<Config> {
    let props: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_properties(&props)
}

/// The error of a config that must be refused, as text (with its causes).
fn refused(pairs: &[(&str, &str)]) -> String {
    format!("{:#}", config(pairs).expect_err("refused"))
}

fn listener(name: &str, host: &str, port: u16) -> Listener {
    Listener {
        name: name.to_string(),
        host: host.to_string(),
        port,
    }
}

#[test]
fn the_defaults_are_one_loopback_client_listener_and_no_quorum() {
    let c = Config::default();
    assert_eq!(
        c.process_roles,
        ProcessRoles {
            broker: true,
            controller: true
        }
    );
    assert_eq!(c.listeners, vec![listener("PLAINTEXT", "127.0.0.1", 9092)]);
    assert_eq!(c.advertised_listeners, c.listeners);
    assert!(c.controller_listener_names.is_empty());
    assert_eq!(c.inter_broker_listener_name, "PLAINTEXT");
    assert!(c.quorum_voters.is_empty() && c.quorum_bootstrap_servers.is_empty());
    assert_eq!(c.client_listener(), &c.listeners[0]);
    assert_eq!(c.controller_listener(), None);
    assert_eq!(c.value_of("listeners").unwrap(), LISTENERS_DEFAULT);
    assert_eq!(c.value_of("process.roles").unwrap(), "broker,controller");
}

#[test]
fn listen_is_one_plaintext_listener_and_excludes_listeners() {
    let c = config(&[("listen", "0.0.0.0:9100")]).unwrap();
    assert_eq!(c.listeners, vec![listener("PLAINTEXT", "0.0.0.0", 9100)]);
    // A wildcard is advertised as loopback, as before listeners existed.
    assert_eq!(
        c.advertised_listeners,
        vec![listener("PLAINTEXT", "127.0.0.1", 9100)]
    );
    assert_eq!(c.value_of("listeners").unwrap(), "PLAINTEXT://0.0.0.0:9100");
    assert!(c.overrides.contains_key("listeners"));
    let err = refused(&[
        ("listen", "127.0.0.1:9092"),
        ("listeners", "PLAINTEXT://127.0.0.1:9092"),
    ]);
    assert!(err.contains("listen and listeners are both set"), "{err}");
    assert!(refused(&[("listen", "nowhere")]).contains("listen:"));
}

#[test]
fn a_combined_node_with_a_quorum_parses_every_key() {
    let c = config(&[
        ("node.id", "2"),
        (
            "listeners",
            "plaintext://:9092,CONTROLLER://[::1]:9093,INTERNAL://10.0.0.2:9094",
        ),
        (
            "advertised.listeners",
            "PLAINTEXT://kafka-2.example:9092,INTERNAL://10.0.0.2:9094",
        ),
        ("controller.listener.names", "CONTROLLER"),
        (
            "listener.security.protocol.map",
            "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT",
        ),
        ("inter.broker.listener.name", "INTERNAL"),
        ("controller.quorum.voters", "1@a:9093,2@[::1]:9093,3@c:9093"),
        ("controller.quorum.bootstrap.servers", "a:9093, c:9093"),
    ])
    .unwrap();
    assert_eq!(
        c.listeners,
        vec![
            listener("PLAINTEXT", "", 9092),
            listener("CONTROLLER", "::1", 9093),
            listener("INTERNAL", "10.0.0.2", 9094),
        ]
    );
    assert_eq!(
        c.listeners[0].socket_addr().unwrap().to_string(),
        "0.0.0.0:9092"
    );
    assert_eq!(c.client_listener().name, "INTERNAL");
    assert_eq!(c.controller_listener().unwrap().port, 9093);
    assert_eq!(
        c.broker_listeners().map(|l| l.port).collect::<Vec<_>>(),
        vec![9092, 9094]
    );
    assert_eq!(c.advertised_for("PLAINTEXT").host, "kafka-2.example");
    assert_eq!(c.advertised_for("ELSEWHERE").name, "INTERNAL");
    assert_eq!(
        c.quorum_voters[1],
        QuorumVoter {
            id: 2,
            host: "::1".to_string(),
            port: 9093
        }
    );
    assert_eq!(
        c.quorum_bootstrap_servers,
        vec![("a".to_string(), 9093), ("c".to_string(), 9093)]
    );
    assert_eq!(
        c.value_of("controller.quorum.voters").unwrap(),
        "1@a:9093,2@[::1]:9093,3@c:9093"
    );
    assert_eq!(
        c.value_of("listeners").unwrap(),
        "PLAINTEXT://:9092,CONTROLLER://[::1]:9093,INTERNAL://10.0.0.2:9094"
    );
    assert_eq!(
        c.value_of("controller.listener.names").unwrap(),
        "CONTROLLER"
    );
}

#[test]
fn advertised_listeners_default_to_listeners_less_the_controllers() {
    let c = config(&[
        (
            "listeners",
            "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093",
        ),
        ("controller.listener.names", "CONTROLLER"),
    ])
    .unwrap();
    assert_eq!(
        c.advertised_listeners,
        vec![listener("PLAINTEXT", "127.0.0.1", 9092)]
    );
    assert_eq!(
        c.value_of("advertised.listeners").unwrap(),
        "PLAINTEXT://127.0.0.1:9092"
    );
}

#[test]
fn a_broker_only_node_and_a_controller_only_node() {
    let broker = config(&[
        ("process.roles", "broker"),
        ("controller.listener.names", "CONTROLLER"),
        ("controller.quorum.bootstrap.servers", "c1:9093"),
    ])
    .unwrap();
    assert!(broker.process_roles.broker && !broker.process_roles.controller);
    assert_eq!(broker.controller_listener(), None);
    let controller = config(&[
        ("process.roles", "controller"),
        ("listeners", "CONTROLLER://127.0.0.1:9093"),
        ("controller.listener.names", "CONTROLLER"),
        ("controller.quorum.voters", "1@127.0.0.1:9093"),
    ])
    .unwrap();
    assert_eq!(controller.controller_listener().unwrap().port, 9093);
    assert!(controller.advertised_listeners.is_empty());
    assert_eq!(controller.client_listener().name, "CONTROLLER");
}

#[test]
fn malformed_values_are_refused_naming_the_key() {
    for (pairs, needle) in [
        (vec![("process.roles", "leader")], "process.roles"),
        (vec![("process.roles", "broker,broker")], "process.roles"),
        (vec![("process.roles", "")], "process.roles"),
        (vec![("listeners", "127.0.0.1:9092")], "listeners"),
        (vec![("listeners", "PLAINTEXT://127.0.0.1")], "listeners"),
        (
            vec![("listeners", "PLAINTEXT://127.0.0.1:99999")],
            "listeners",
        ),
        (vec![("listeners", "PLAINTEXT://::1:9092")], "listeners"),
        (vec![("listeners", "://127.0.0.1:9092")], "listeners"),
        (vec![("listeners", "")], "listeners"),
        (vec![("listeners", "PLAINTEXT://127.0.0.1:0")], "port 0"),
        (
            vec![("advertised.listeners", "PLAINTEXT//x:1")],
            "advertised.listeners",
        ),
        (
            vec![("listener.security.protocol.map", "PLAINTEXT")],
            "listener.security.protocol.map",
        ),
        (
            vec![("listener.security.protocol.map", "PLAINTEXT:TLS")],
            "listener.security.protocol.map",
        ),
        (
            vec![(
                "listener.security.protocol.map",
                "PLAINTEXT:PLAINTEXT,plaintext:PLAINTEXT",
            )],
            "mapped twice",
        ),
        (
            vec![("controller.quorum.voters", "a@h:9093")],
            "controller.quorum.voters",
        ),
        (
            vec![("controller.quorum.voters", "1h:9093")],
            "controller.quorum.voters",
        ),
        (
            vec![("controller.quorum.voters", "1@h")],
            "controller.quorum.voters",
        ),
        (
            vec![("controller.quorum.bootstrap.servers", "h")],
            "controller.quorum.bootstrap.servers",
        ),
        (
            vec![("controller.quorum.bootstrap.servers", ":9093")],
            "controller.quorum.bootstrap.servers",
        ),
    ] {
        let err = refused(&pairs);
        assert!(err.contains(needle), "{pairs:?}: {err}");
    }
}

#[test]
fn duplicate_names_and_ports_are_refused() {
    let err = refused(&[(
        "listeners",
        "PLAINTEXT://127.0.0.1:9092,plaintext://127.0.0.1:9093",
    )]);
    assert!(err.contains("PLAINTEXT is used twice"), "{err}");
    let err = refused(&[(
        "listeners",
        "PLAINTEXT://127.0.0.1:9092,OTHER://127.0.0.2:9092",
    )]);
    assert!(err.contains("share port 9092"), "{err}");
    // One IPv4 and one IPv6 listener may share a port, as in Kafka.
    let split = [
        ("listeners", "PLAINTEXT://127.0.0.1:9092,OTHER://[::1]:9092"),
        (
            "listener.security.protocol.map",
            "PLAINTEXT:PLAINTEXT,OTHER:PLAINTEXT",
        ),
    ];
    assert_eq!(config(&split).unwrap().listeners.len(), 2);
    let err = refused(&[(
        "advertised.listeners",
        "PLAINTEXT://a:9092,PLAINTEXT://b:9092",
    )]);
    assert!(err.contains("advertised.listeners"), "{err}");
    let err = refused(&[
        ("controller.quorum.voters", "1@a:9093,1@b:9093"),
        ("controller.listener.names", "CONTROLLER"),
    ]);
    assert!(err.contains("node id 1 is given twice"), "{err}");
}

#[test]
fn security_protocols_other_than_plaintext_are_not_yet_supported() {
    let err = refused(&[("listeners", "SSL://127.0.0.1:9093")]);
    assert!(err.contains("security is not yet supported"), "{err}");
    let err = refused(&[
        ("listeners", "CLIENT://127.0.0.1:9093"),
        ("listener.security.protocol.map", "CLIENT:SASL_SSL"),
        ("inter.broker.listener.name", "CLIENT"),
    ]);
    assert!(err.contains("CLIENT uses SASL_SSL"), "{err}");
    let err = refused(&[("listeners", "CLIENT://127.0.0.1:9093")]);
    assert!(
        err.contains("no security protocol for listener CLIENT"),
        "{err}"
    );
    // Unset, the map gives each controller listener PLAINTEXT, as Kafka's does.
    config(&[
        (
            "listeners",
            "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093",
        ),
        ("controller.listener.names", "CONTROLLER"),
    ])
    .unwrap();
}

#[test]
fn advertised_listeners_must_be_routable_and_known() {
    let err = refused(&[("advertised.listeners", "PLAINTEXT://0.0.0.0:9092")]);
    assert!(err.contains("non-routable meta-address 0.0.0.0"), "{err}");
    let err = refused(&[("advertised.listeners", "PLAINTEXT://:9092")]);
    assert!(err.contains("has no host"), "{err}");
    let err = refused(&[
        ("advertised.listeners", "PLAINTEXT://a:9092,OTHER://b:9093"),
        (
            "listener.security.protocol.map",
            "PLAINTEXT:PLAINTEXT,OTHER:PLAINTEXT",
        ),
    ]);
    assert!(err.contains("names no listener in listeners"), "{err}");
    let err = refused(&[
        (
            "listeners",
            "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093",
        ),
        ("controller.listener.names", "CONTROLLER"),
        (
            "advertised.listeners",
            "PLAINTEXT://a:9092,CONTROLLER://a:9093",
        ),
    ]);
    assert!(err.contains("a broker must not advertise it"), "{err}");
}

#[test]
fn the_roles_rules_of_kafka_hold() {
    let both = "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093";
    // A controller listens on its controller listeners.
    let err = refused(&[("controller.listener.names", "CONTROLLER")]);
    assert!(err.contains("CONTROLLER is not in listeners"), "{err}");
    // A broker-only node does not.
    let err = refused(&[
        ("process.roles", "broker"),
        ("listeners", both),
        ("controller.listener.names", "CONTROLLER"),
    ]);
    assert!(err.contains("broker-only node must not listen"), "{err}");
    // A controller-only node listens on nothing else.
    let err = refused(&[
        ("process.roles", "controller"),
        ("listeners", both),
        ("controller.listener.names", "CONTROLLER"),
    ]);
    assert!(err.contains("is not a controller listener"), "{err}");
    // A quorum needs controller listeners.
    let err = refused(&[("controller.quorum.bootstrap.servers", "a:9093")]);
    assert!(err.contains("controller.listener.names"), "{err}");
    // The inter-broker listener is a client one, and advertised.
    let err = refused(&[
        ("listeners", both),
        ("controller.listener.names", "CONTROLLER,PLAINTEXT"),
    ]);
    assert!(
        err.contains("inter-broker listener name PLAINTEXT"),
        "{err}"
    );
    let err = refused(&[("inter.broker.listener.name", "INTERNAL")]);
    assert!(
        err.contains("inter.broker.listener.name: INTERNAL"),
        "{err}"
    );
    let err = refused(&[
        ("listeners", "CLIENT://127.0.0.1:9092"),
        ("listener.security.protocol.map", "CLIENT:PLAINTEXT"),
    ]);
    assert!(
        err.contains("inter.broker.listener.name: PLAINTEXT"),
        "{err}"
    );
    // node.id is a voter exactly when the node is a controller.
    let err = refused(&[
        ("node.id", "4"),
        ("listeners", both),
        ("controller.listener.names", "CONTROLLER"),
        ("controller.quorum.voters", "1@a:9093"),
    ]);
    assert!(err.contains("node.id 4 must be among the voters"), "{err}");
    let err = refused(&[
        ("node.id", "1"),
        ("process.roles", "broker"),
        ("controller.listener.names", "CONTROLLER"),
        ("controller.quorum.voters", "1@a:9093"),
    ]);
    assert!(
        err.contains("node.id 1 must not be among the voters"),
        "{err}"
    );
}
