use super::*;

#[test]
fn parses_every_kind_of_key() {
    let s = Scenario::parse(
        r#"
        name = "x"
        nodes = 5
        duration = "10s"
        [topology]
        degree = 3
        [network]
        latency = ["10ms", "50ms"]
        loss = 0.1
        bandwidth = 1000000
        [[network.site]]
        name = "a"
        nodes = "0..3"
        [[network.site]]
        name = "b"
        nodes = [3, 4]
        [[network.wan]]
        between = ["a", "b"]
        latency = "100ms"
        [[write]]
        at = "1s"
        count = 10
        nodes = [0]
        [[fault]]
        at = "2s"
        kind = "partition"
        groups = ["0..3"]
        [[fault]]
        at = "3s"
        kind = "flap"
        a = [0]
        b = [1]
        down = "1s"
        up = "1s"
        count = 2
        [[fault]]
        at = "4s"
        kind = "skew"
        nodes = [2]
        offset-ms = -500
        [[fault]]
        at = "5s"
        kind = "heal"
        "#,
    )
    .unwrap();
    assert_eq!(s.faults.len(), 4);
    assert_eq!(s.site_of().unwrap(), vec![0, 0, 0, 1, 1]);
    assert_eq!(
        s.latency_between(0, 1),
        &Latency::Fixed(Duration::from_millis(100))
    );
}

#[test]
fn every_shipped_scenario_reads_back_what_it_writes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let s = Scenario::load(&path).unwrap();
        let text = s.to_toml().unwrap();
        let back = Scenario::parse(&text).unwrap_or_else(|e| panic!("{e:#}\n{text}"));
        assert_eq!(back.to_toml().unwrap(), text, "{}", path.display());
        assert_eq!(format!("{back:?}"), format!("{s:?}"), "{}", path.display());
    }
}

#[test]
fn refuses_unknown_keys_and_nodes_out_of_range() {
    let base = "name = \"x\"\nnodes = 2\nduration = \"1s\"\n";
    assert!(Scenario::parse(&format!("{base}lossy = 1\n")).is_err());
    assert!(
        Scenario::parse(&format!(
            "{base}[[fault]]\nat = \"0s\"\nkind = \"crash\"\nnodes = [2]\n"
        ))
        .is_err()
    );
    assert!(
        Scenario::parse(&format!(
            "{base}[[fault]]\nat = \"0s\"\nkind = \"heal\"\ngroups = []\n"
        ))
        .is_err()
    );
}

#[test]
fn a_scenario_file_is_bounded_and_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.toml");
    for (bytes, want) in [
        (vec![b'#'; MAX_SCENARIO_FILE as usize + 1], "over the limit"),
        (vec![0xff, 0xfe], "not UTF-8 text"),
        (b"nodes = 2\n".to_vec(), "parsing the scenario"),
    ] {
        std::fs::write(&path, bytes).unwrap();
        let err = format!("{:#}", Scenario::load(&path).unwrap_err());
        assert!(err.contains(want), "{err}");
    }
    let err = format!("{:#}", Scenario::load(Path::new("/dev/zero")).unwrap_err());
    assert!(err.contains("over the limit"), "{err}");
}

#[test]
fn a_failover_needs_an_existing_node_and_a_retry_of_at_least_10ms() {
    let base =
        "name = \"x\"\nnodes = 3\nduration = \"1s\"\n[[fault]]\nat = \"1s\"\nkind = \"failover\"\n";
    let s = Scenario::parse(&format!("{base}node = 2\n")).unwrap();
    assert_eq!(
        s.faults[0].kind,
        FaultKind::Failover {
            node: 2,
            retry: Duration::from_secs(1)
        }
    );
    let err = Scenario::parse(&format!("{base}node = 3\n")).unwrap_err();
    assert!(
        format!("{err:#}").contains("failover names node 3"),
        "{err:#}"
    );
    let err = Scenario::parse(&format!("{base}node = 0\nretry = \"0s\"\n")).unwrap_err();
    assert!(format!("{err:#}").contains("at least 10ms"), "{err:#}");
    let err = Scenario::parse("name = \"x\"\nnodes = 20001\nduration = \"1s\"\n").unwrap_err();
    assert!(format!("{err:#}").contains("at most 20000"), "{err:#}");
}
