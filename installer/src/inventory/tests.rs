use super::*;

fn env() -> Env<'static> {
    Env {
        home: Some(Path::new("/home/ops")),
    }
}

fn parse_text(text: &str) -> Result<Inventory, InventoryError> {
    parse(text, "cluster.yaml", Path::new("/etc/clusters"), &env())
}

fn error_of(text: &str) -> InventoryError {
    parse_text(text).expect_err("the file must be refused")
}

#[test]
fn the_documented_example_parses_with_its_defaults() {
    let text = include_str!("../../../config/cluster.yaml");
    let inventory = parse_text(text).unwrap();
    assert_eq!(inventory.name, "demo");
    assert_eq!(inventory.state_dir, Path::new("/etc/clusters/dcos-rs-demo"));
    let names: Vec<_> = inventory
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.role, n.master_id))
        .collect();
    assert_eq!(
        names,
        [
            ("m1", Role::Master, Some(1)),
            ("m2", Role::Master, Some(2)),
            ("m3", Role::Master, Some(3)),
            ("a1", Role::Agent, None),
            ("big-1", Role::Agent, None),
        ]
    );
    let big = inventory.node("big-1").unwrap();
    assert_eq!(big.ssh.user, "admin");
    assert_eq!(
        big.ssh.key.as_deref(),
        Some(Path::new("/home/ops/.ssh/id_ed25519"))
    );
    assert_eq!(big.resources.cpus, Some(8.0));
    assert_eq!(big.host_paths, [PathBuf::from("/srv/data")]);
    assert_eq!(big.url(&inventory), "https://10.77.0.15:5051");
    assert_eq!(inventory.master_urls()[2], "https://10.77.0.13:5050");
    assert_eq!(inventory.timeouts.quorum_s, 120);
}

#[test]
fn a_minimal_file_takes_every_default() {
    let inventory = parse_text("name: c1\nmasters:\n  - address: m1.example.com\n").unwrap();
    let m1 = &inventory.nodes[0];
    assert_eq!(
        m1.ssh,
        SshTarget {
            user: "root".into(),
            port: 22,
            key: None
        }
    );
    assert_eq!(
        inventory.ports,
        Ports {
            master: 5050,
            agent: 5051
        }
    );
    assert_eq!(
        inventory.data_dirs.agent,
        Path::new("/var/lib/dcos-rs/agent")
    );
    assert_eq!(inventory.state_dir, Path::new("/etc/clusters/dcos-rs-c1"));
    assert_eq!(inventory.agents().count(), 0);
}

#[test]
fn an_unknown_key_is_refused_with_its_line_and_name() {
    let e = error_of("name: c1\nmasters:\n  - address: 10.0.0.1\n    adress: 10.0.0.2\n");
    assert_eq!(e.line, Some(4), "{e}");
    assert_eq!(e.key, "adress", "{e}");
    assert!(
        e.to_string().starts_with("cluster.yaml line 4: adress: "),
        "{e}"
    );
}

#[test]
fn a_wrong_type_is_refused_with_its_line() {
    let e = error_of("name: c1\nports:\n  master: http\nmasters:\n  - address: 10.0.0.1\n");
    assert_eq!(e.line, Some(3), "{e}");
}

#[test]
fn each_mistake_names_its_line_and_key() {
    let cases: &[(&str, u64, &str, &str)] = &[
        ("name: 1abc\nmasters:\n  - address: 10.0.0.1\n", 1, "name", "not a cluster name"),
        ("name: c\nmasters:\n  - address: 10.0.0.1\n  - address: 10.0.0.2\n", 3, "masters", "2 masters listed"),
        ("name: c\nmasters:\n  - address: 'bad host'\n", 3, "masters[0].address", "neither an IP"),
        ("name: c\nmasters:\n  - address: 10.0.0.1\nagents:\n  - address: 10.0.0.2\n  - address: 10.0.0.2\n", 6, "agents[1].address", "listed twice"),
        ("name: c\nmasters:\n  - address: 10.0.0.1\nagents:\n  - address: 10.0.0.2\n    name: m1\n", 5, "agents[0].name", "names two nodes"),
        ("name: c\nmasters:\n  - address: 10.0.0.1\n    attributes:\n      rack: r1\n", 5, "masters[0].attributes", "masters run no tasks"),
        ("name: c\nmasters:\n  - address: 10.0.0.1\nagents:\n  - address: 10.0.0.2\n    resources:\n      cpus: 0\n", 7, "agents[0].resources.cpus", "out of range"),
        ("name: c\nmasters:\n  - address: 10.0.0.1\nagents:\n  - address: 10.0.0.2\n    host_paths: [srv]\n", 6, "agents[0].host_paths", "absolute path"),
        ("name: c\ndata_dirs:\n  agent: /var/lib/$x\nmasters:\n  - address: 10.0.0.1\n", 3, "data_dirs.agent", "absolute path"),
        ("name: c\ntimeouts:\n  quorum_s: 0\nmasters:\n  - address: 10.0.0.1\n", 3, "timeouts.quorum_s", "out of range"),
        ("name: c\nmasters:\n  - address: 10.0.0.1\n    ssh:\n      user: '-oProxyCommand=x'\n", 5, "masters[0].ssh.user", "not a user name"),
        ("name: c\nmasters:\n  - address: 10.0.0.1\nagents:\n  - address: 10.0.0.2\n    attributes:\n      hostname: x\n", 7, "agents[0].attributes.hostname", "always set"),
    ];
    for (text, line, key, reason) in cases {
        let e = error_of(text);
        assert_eq!(
            (e.line, e.key.as_str()),
            (Some(*line), *key),
            "{text}\n-> {e}"
        );
        assert!(e.reason.contains(reason), "{text}\n-> {e}");
    }
}

#[test]
fn ipv6_addresses_are_bracketed_in_urls() {
    let inventory = parse_text("name: c\nmasters:\n  - address: 'fd00::1'\n").unwrap();
    assert_eq!(inventory.nodes[0].url(&inventory), "https://[fd00::1]:5050");
}

#[test]
fn added_nodes_follow_the_files_own_with_the_next_ids_and_names() {
    let text = "name: c\nssh:\n  user: ops\nmasters:\n  - address: 10.0.0.1\nagents:\n  - address: 10.0.0.2\n";
    let added = "masters:\n  - {\"address\": \"10.0.0.9\"}\nagents:\n  - {\"address\": \"10.0.0.3\", \"attributes\": {\"rack\": \"r1\"}}\n";
    let inventory = parse_with_added(
        text,
        "cluster.yaml",
        Path::new("/"),
        &env(),
        Some((added, "added-nodes.yaml")),
    )
    .unwrap();
    let nodes: Vec<_> = inventory
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.master_id, n.added, n.ssh.user.as_str()))
        .collect();
    assert_eq!(
        nodes,
        [
            ("m1", Some(1), false, "ops"),
            ("m2", Some(2), true, "ops"),
            ("a1", None, false, "ops"),
            ("a2", None, true, "ops")
        ]
    );
    assert_eq!(inventory.node("a2").unwrap().attributes["rack"], "r1");

    let twice = "agents:\n  - {\"address\": \"10.0.0.2\"}\n";
    let e = parse_with_added(
        text,
        "cluster.yaml",
        Path::new("/"),
        &env(),
        Some((twice, "added-nodes.yaml")),
    )
    .unwrap_err();
    assert!(e.reason.contains("listed twice"), "{e}");
}

#[test]
fn nodes_keep_their_names_when_others_leave_the_file() {
    let first = parse_text("name: c\nmasters:\n  - address: 10.0.0.1\nagents:\n  - address: 10.0.0.2\n  - address: 10.0.0.3\n").unwrap();
    let mut first = first;
    let pins = pin(&mut first, &Pins::new()).unwrap();
    assert_eq!(pins["agent 10.0.0.3"].name, "a2");
    assert_eq!(
        pins["master 10.0.0.1"],
        Pin {
            name: "m1".into(),
            id: Some(1)
        }
    );

    // 10.0.0.2 leaves; 10.0.0.3 stays a2, and a newcomer gets a3: a1 stays 10.0.0.2's (its
    // certificate names it).
    let mut second = parse_text("name: c\nmasters:\n  - address: 10.0.0.1\nagents:\n  - address: 10.0.0.3\n  - address: 10.0.0.4\n").unwrap();
    // Unpinned, 10.0.0.3 would be a1 and 10.0.0.4 a2.
    let again = pin(&mut second, &pins).unwrap();
    let names: Vec<_> = second
        .nodes
        .iter()
        .map(|n| (n.address.as_str(), n.name.as_str()))
        .collect();
    assert_eq!(
        names,
        [("10.0.0.1", "m1"), ("10.0.0.3", "a2"), ("10.0.0.4", "a3")]
    );
    assert_eq!(again["agent 10.0.0.4"].name, "a3");

    // A name given in the file wins over the pin, but may not take another node's.
    let mut clash = parse_text("name: c\nmasters:\n  - address: 10.0.0.1\nagents:\n  - address: 10.0.0.3\n  - address: 10.0.0.4\n    name: a2\n").unwrap();
    assert!(pin(&mut clash, &pins).unwrap_err().contains("\"a2\""));
}

#[test]
fn a_data_dir_may_not_be_a_system_directory_and_a_host_has_one_role() {
    for dir in ["/", "/var/lib", "/home/", "/usr"] {
        let e = error_of(&format!(
            "name: c\ndata_dirs:\n  agent: {dir}\nmasters:\n  - address: 10.0.0.1\n"
        ));
        assert!(e.reason.contains("system directory"), "{dir}: {e}");
    }
    assert!(parse_text(
        "name: c\ndata_dirs:\n  agent: /data/dcos\nmasters:\n  - address: 10.0.0.1\n"
    )
    .is_ok());
    let e = error_of("name: c\nmasters:\n  - address: 10.0.0.1\nagents:\n  - address: 10.0.0.1\n");
    assert!(e.reason.contains("not both"), "{e}");
}

#[test]
fn a_new_master_never_takes_an_id_a_former_one_had() {
    let mut first = parse_text("name: c\nmasters:\n  - address: 10.0.0.1\n").unwrap();
    let mut pins = pin(&mut first, &Pins::new()).unwrap();
    // A master added then removed had id 2.
    pins.insert(
        "master 10.0.0.9".into(),
        Pin {
            name: "m2".into(),
            id: Some(2),
        },
    );
    let mut later = parse_text(
        "name: c\nmasters:\n  - address: 10.0.0.1\n  - address: 10.0.0.2\n  - address: 10.0.0.3\n",
    )
    .unwrap();
    pin(&mut later, &pins).unwrap();
    let got: Vec<_> = later
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.master_id))
        .collect();
    assert_eq!(got, [("m1", Some(1)), ("m3", Some(3)), ("m4", Some(4))]);
}
