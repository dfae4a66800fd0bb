//! The setup endpoint over real QUIC on 127.0.0.0/8: certificates, frames, slots per source,
//! the gate and how connections end. (127.0.0.2 and up are loopback on Linux: a client bound
//! there is another source.)

use std::net::{IpAddr, Ipv4Addr};

use super::*;

struct Pki {
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca = params.self_signed(&ca_key).unwrap();
        Pki { ca, ca_key }
    }

    fn issue(&self, san: &str) -> TlsIdentity {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![san.to_string()]).unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        TlsIdentity {
            cert: cert.der().to_vec(),
            key: key.serialize_der(),
            ca: self.ca.der().to_vec(),
        }
    }
}

/// Lets every certificate through.
fn open_gate() -> Arc<dyn Gate> {
    Arc::new(|_: &[u8]| Ok(()))
}

/// A server whose node answers every request with `answer(connection, request)`.
fn server_with(pki: &Pki, gate: Arc<dyn Gate>, answer: fn(u64, &[u8]) -> Answer) -> SetupServer {
    let (server, mut rx) = SetupServer::listen(
        "127.0.0.1:0".parse().unwrap(),
        &pki.issue("127.0.0.1"),
        gate,
    )
    .unwrap();
    tokio::spawn(async move {
        while let Some(incoming) = rx.recv().await {
            let _ = incoming
                .reply
                .send(answer(incoming.connection, &incoming.request));
        }
    });
    server
}

/// Bytes naming the connection, and the connection goes on.
fn next(connection: u64) -> Answer {
    Answer {
        bytes: vec![connection as u8; 32],
        then: Then::Next,
    }
}

/// A server that answers every request with bytes naming its connection.
fn echo_server(pki: &Pki) -> SetupServer {
    server_with(pki, open_gate(), |connection, _| next(connection))
}

const HELLO: &[u8] = b"hello";

fn loopback(last: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)), 0)
}

/// Waits (at most 10 s) until the server holds `n` connections.
async fn until_open(server: &SetupServer, n: u64) {
    for _ in 0..200 {
        if server.metrics().open == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} connections open, not {n}", server.metrics().open);
}

#[tokio::test]
async fn a_client_of_the_cluster_ca_gets_answers() {
    let pki = Pki::new("cluster");
    let server = echo_server(&pki);
    let client = SetupClient::connect(server.local_addr(), "127.0.0.1", &pki.issue("joiner"))
        .await
        .unwrap();
    for _ in 0..2 {
        let reply = client.request(HELLO).await.unwrap();
        assert_eq!(reply, vec![1; 32]);
    }
    client.close().await;
    assert_eq!(server.metrics().requests, 2);
    until_open(&server, 0).await;
}

#[tokio::test]
async fn a_client_certificate_of_another_ca_is_refused_at_the_handshake() {
    let pki = Pki::new("cluster");
    let server = echo_server(&pki);
    let mut stranger = Pki::new("other").issue("joiner");
    stranger.ca = pki.ca.der().to_vec(); // trusts the server, but its cert is foreign
    let result = match SetupClient::connect(server.local_addr(), "127.0.0.1", &stranger).await {
        Ok(client) => client.request(HELLO).await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(result.is_err(), "a foreign client certificate was served");
    assert_eq!(server.metrics().requests, 0);
}

#[tokio::test]
async fn a_connection_over_the_limit_is_refused_and_counted() {
    let pki = Pki::new("cluster");
    let server = echo_server(&pki);
    let identity = pki.issue("joiner");
    let mut open = Vec::new();
    // MAX_CONNECTIONS from as many sources as it takes.
    for i in 0..MAX_CONNECTIONS {
        let from = loopback(2 + (i / SOURCE_CONNECTIONS) as u8);
        open.push(
            SetupClient::connect_from(from, server.local_addr(), "127.0.0.1", &identity)
                .await
                .unwrap(),
        );
    }
    assert_eq!(server.metrics().refused_full, 0);
    assert_eq!(server.metrics().open, MAX_CONNECTIONS as u64);
    let over = SetupClient::connect(server.local_addr(), "127.0.0.1", &identity).await;
    let Err(SetupError::Refused { reason, .. }) = over else {
        panic!(
            "connection {} was not refused: {over:?}",
            MAX_CONNECTIONS + 1
        );
    };
    assert!(
        reason.contains("as many connections as it allows"),
        "{reason}"
    );
    assert_eq!(server.metrics().refused_full, 1);
    assert_eq!(server.metrics().refused_source, 0);
}

#[tokio::test]
async fn one_source_holds_at_most_its_share_and_another_source_is_still_served() {
    let pki = Pki::new("cluster");
    let server = echo_server(&pki);
    let identity = pki.issue("joiner");
    let addr = server.local_addr();
    let mut held = Vec::new();
    for _ in 0..SOURCE_CONNECTIONS {
        held.push(
            SetupClient::connect_from(loopback(2), addr, "127.0.0.1", &identity)
                .await
                .unwrap(),
        );
    }
    let over = SetupClient::connect_from(loopback(2), addr, "127.0.0.1", &identity).await;
    assert!(
        matches!(over, Err(SetupError::Refused { .. })),
        "a connection over the source's share: {over:?}"
    );
    assert_eq!(server.metrics().refused_source, 1);
    // Another source is served at once.
    let other = SetupClient::connect_from(loopback(3), addr, "127.0.0.1", &identity)
        .await
        .unwrap();
    assert!(other.request(HELLO).await.is_ok());
    // A slot given back is free again for the first source.
    held.pop().unwrap().close().await;
    until_open(&server, SOURCE_CONNECTIONS as u64).await;
    let again = SetupClient::connect_from(loopback(2), addr, "127.0.0.1", &identity)
        .await
        .unwrap();
    assert!(again.request(HELLO).await.is_ok());
    assert_eq!(server.metrics().refused_full, 0);
}

#[tokio::test]
async fn a_certificate_the_gate_refuses_is_closed_at_once_with_the_gates_reason() {
    let pki = Pki::new("cluster");
    let refused = pki.issue("old bundle");
    let fingerprint: [u8; 32] = Sha256::digest(&refused.cert).into();
    let gate: Arc<dyn Gate> = Arc::new(move |cert: &[u8]| {
        if <[u8; 32]>::from(Sha256::digest(cert)) == fingerprint {
            Err("this joining bundle was superseded".to_string())
        } else {
            Ok(())
        }
    });
    let server = server_with(&pki, gate, |connection, _| next(connection));
    // The client holds on to its connection; the server closes it anyway.
    let result = match SetupClient::connect(server.local_addr(), "127.0.0.1", &refused).await {
        Ok(client) => {
            let result = client.request(HELLO).await;
            until_open(&server, 0).await;
            result
        }
        Err(e) => Err(e),
    };
    let Err(SetupError::Refused { reason, .. }) = result else {
        panic!("a refused certificate was served: {result:?}");
    };
    assert_eq!(reason, "this joining bundle was superseded");
    assert_eq!(server.metrics().refused_certificate, 1);
    assert_eq!(server.metrics().requests, 0);
    // Another certificate of the CA is let through.
    let client = SetupClient::connect(server.local_addr(), "127.0.0.1", &pki.issue("new"))
        .await
        .unwrap();
    assert!(client.request(HELLO).await.is_ok());
}

#[tokio::test]
async fn a_refusal_ends_the_connection_even_if_the_client_keeps_it() {
    let pki = Pki::new("cluster");
    let server = server_with(&pki, open_gate(), |_, _| Answer {
        bytes: b"refused".to_vec(),
        then: Then::Refused("the licence allows 3 nodes".into()),
    });
    let client = SetupClient::connect(server.local_addr(), "127.0.0.1", &pki.issue("joiner"))
        .await
        .unwrap();
    let reply = client.request(HELLO).await.unwrap();
    assert_eq!(reply, b"refused");
    // The client does not close; the server does, within its grace, with the reason.
    let closed = tokio::time::timeout(Duration::from_secs(10), client.connection.closed())
        .await
        .expect("the server closed the connection");
    let quinn::ConnectionError::ApplicationClosed(close) = closed else {
        panic!("{closed:?}");
    };
    assert_eq!(close.error_code, CLOSE_REFUSED.into());
    assert_eq!(&close.reason[..], b"the licence allows 3 nodes");
    until_open(&server, 0).await;
    // A request on it now names the reason.
    let again = client.request(HELLO).await;
    assert!(
        matches!(&again, Err(SetupError::Refused { reason, .. }) if reason.contains("licence")),
        "{again:?}"
    );
}

#[tokio::test]
async fn a_dropped_client_gives_its_slot_back_at_once() {
    let pki = Pki::new("cluster");
    let server = echo_server(&pki);
    let client = SetupClient::connect(server.local_addr(), "127.0.0.1", &pki.issue("joiner"))
        .await
        .unwrap();
    assert!(client.request(HELLO).await.is_ok());
    assert_eq!(server.metrics().open, 1);
    drop(client);
    // Far sooner than IDLE_TIMEOUT.
    until_open(&server, 0).await;
}

#[tokio::test]
async fn a_server_of_another_ca_is_not_trusted() {
    let pki = Pki::new("cluster");
    let server = echo_server(&Pki::new("impostor"));
    let err = SetupClient::connect(server.local_addr(), "127.0.0.1", &pki.issue("joiner"))
        .await
        .unwrap_err();
    assert!(matches!(err, SetupError::Connection { .. }), "{err}");
}

#[tokio::test]
async fn a_request_the_node_finds_malformed_is_counted_and_oversize_frames_never_reach_it() {
    let pki = Pki::new("cluster");
    let server = server_with(&pki, open_gate(), |connection, request| {
        if request == HELLO {
            next(connection)
        } else {
            Answer {
                bytes: b"malformed".to_vec(),
                then: Then::Malformed("malformed setup request".into()),
            }
        }
    });
    let identity = pki.issue("joiner");
    let client = SetupClient::connect(server.local_addr(), "127.0.0.1", &identity)
        .await
        .unwrap();
    assert_eq!(client.request(&[0xff; 100]).await.unwrap(), b"malformed");
    // That refusal ended the connection; an oversize length on a new one ends it too.
    let client = SetupClient::connect(server.local_addr(), "127.0.0.1", &identity)
        .await
        .unwrap();
    let (mut send, mut recv) = client.connection.open_bi().await.unwrap();
    send.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    let _ = send.finish();
    assert!(read_frame(&mut recv, MAX_RESPONSE_FRAME).await.is_err());
    assert_eq!(server.metrics().requests, 1);
    assert_eq!(server.metrics().malformed, 2);
}
