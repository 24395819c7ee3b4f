//! The webhook over real HTTPS: a server on 127.0.0.1 with certificates from `dbward certs`,
//! a rustls client that trusts only that CA, and AdmissionReviews shaped as the API server
//! sends them. What the engine decides is tested in `webhook_reviews.rs`; this file covers
//! the transport: uid echo, bad input, limits, timeouts, certificate reload, metrics.

mod webhook_support;

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use webhook_support::{Client, fixture, start_webhook};

const FIXTURES: [&str; 8] = [
    "create-connectionpool.json",
    "create-connectionpool-dryrun.json",
    "update-connectionpool-immutable.json",
    "delete-database-protected.json",
    "update-connectionpool-status.json",
    "create-unknown-kind.json",
    "create-serviceuser-invalid.json",
    "create-postgrescluster-low-resources.json",
];

fn json_of(body: &Bytes) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

#[tokio::test]
async fn every_answer_echoes_the_uid_on_one_keep_alive_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client, _) = start_webhook(dir.path(), |_| {}).await;
    let mut connection = client.connect().await.unwrap();
    for name in FIXTURES {
        let review = json_of(&Bytes::from(fixture(name)));
        for path in ["/validate", "/mutate"] {
            let (status, body) = connection.post(path, fixture(name).into()).await.unwrap();
            assert_eq!(status, 200, "{name} {path}");
            let answer = json_of(&body);
            assert_eq!(answer["apiVersion"], "admission.k8s.io/v1", "{name} {path}");
            assert_eq!(answer["kind"], "AdmissionReview", "{name} {path}");
            assert_eq!(
                answer["response"]["uid"], review["request"]["uid"],
                "{name} {path}"
            );
            assert!(answer["response"]["allowed"].is_boolean(), "{name} {path}");
            if path == "/mutate" {
                assert_eq!(
                    answer["response"]["allowed"], true,
                    "{name}: /mutate never denies"
                );
                assert!(answer["response"].get("warnings").is_none(), "{name}");
            }
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn kinds_it_does_not_know_are_allowed_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client, _) = start_webhook(dir.path(), |_| {}).await;
    let mut connection = client.connect().await.unwrap();
    let expected = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": "a1b2c3d4-0006-4000-8000-000000000006", "allowed": true}
    });
    for path in ["/validate", "/mutate"] {
        let (status, body) = connection
            .post(path, fixture("create-unknown-kind.json").into())
            .await
            .unwrap();
        assert_eq!((status, json_of(&body)), (200, expected.clone()), "{path}");
    }
    // Another API group with one of our kind names is not ours either.
    let mut review = json_of(&Bytes::from(fixture("create-serviceuser-invalid.json")));
    review["request"]["kind"]["group"] = json!("example.com");
    let (status, body) = connection
        .post("/validate", serde_json::to_vec(&review).unwrap().into())
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(json_of(&body)["response"]["allowed"], true);
    assert!(json_of(&body)["response"].get("status").is_none());
    server.shutdown().await;
}

#[tokio::test]
async fn malformed_bodies_are_answered_not_crashed_on() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client, _) = start_webhook(dir.path(), |_| {}).await;
    let mut connection = client.connect().await.unwrap();
    let cases: [(&str, &[u8], &str); 6] = [
        ("empty", b"", "not JSON"),
        ("not JSON", b"{\"apiVersion\": ", "not JSON"),
        ("binary", &[0xff, 0xfe, 0x00, 0x12], "not JSON"),
        ("a JSON array", b"[1, 2, 3]", "malformed"),
        (
            "another kind",
            br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"}}"#,
            "not an admission.k8s.io/v1 AdmissionReview",
        ),
        (
            "no request",
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
            "no request",
        ),
    ];
    for (what, body, message) in cases {
        for path in ["/validate", "/mutate"] {
            let (status, answer) = connection
                .post(path, Bytes::from_static(body))
                .await
                .unwrap();
            let text = String::from_utf8_lossy(&answer);
            assert_eq!(status, 400, "{what} {path}: {text}");
            assert!(text.contains(message), "{what} {path}: {text}");
        }
    }
    // A request without a uid cannot be answered as a review.
    let mut review = json_of(&Bytes::from(fixture("create-connectionpool.json")));
    review["request"].as_object_mut().unwrap().remove("uid");
    let (status, answer) = connection
        .post("/validate", serde_json::to_vec(&review).unwrap().into())
        .await
        .unwrap();
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&answer));
    // With a readable uid, a malformed request is denied as a review, with the reason.
    let mut review = json_of(&Bytes::from(fixture("create-connectionpool.json")));
    review["request"]["kind"] = json!("ConnectionPool");
    let (status, answer) = connection
        .post("/validate", serde_json::to_vec(&review).unwrap().into())
        .await
        .unwrap();
    assert_eq!(status, 200);
    let answer = json_of(&answer);
    assert_eq!(
        answer["response"]["uid"],
        "a1b2c3d4-0001-4000-8000-000000000001"
    );
    assert_eq!(answer["response"]["allowed"], false);
    assert_eq!(answer["response"]["status"]["code"], 400);
    let message = answer["response"]["status"]["message"].as_str().unwrap();
    assert!(message.contains("malformed"), "{message}");
    // An operation the API does not have.
    let mut review = json_of(&Bytes::from(fixture("create-connectionpool.json")));
    review["request"]["operation"] = json!("PATCH");
    let (status, answer) = connection
        .post("/validate", serde_json::to_vec(&review).unwrap().into())
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(json_of(&answer)["response"]["allowed"], false);
    // The connection survived all of it.
    let (status, _) = connection
        .post("/validate", fixture("create-unknown-kind.json").into())
        .await
        .unwrap();
    assert_eq!(status, 200);
    server.shutdown().await;
}

#[tokio::test]
async fn bodies_over_three_mebibytes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client, _) = start_webhook(dir.path(), |_| {}).await;
    // A review padded to just over the limit inside an annotation.
    let mut review = json_of(&Bytes::from(fixture("create-connectionpool.json")));
    let size = serde_json::to_vec(&review).unwrap().len();
    let limit = dbward::webhook::MAX_BODY_BYTES;
    review["request"]["object"]["metadata"]["annotations"]["padding"] =
        json!("x".repeat(limit - size - 20));
    let body = serde_json::to_vec(&review).unwrap();
    assert!(body.len() <= limit, "{}", body.len());
    let mut connection = client.connect().await.unwrap();
    let (status, _) = connection.post("/validate", body.into()).await.unwrap();
    assert_eq!(status, 200, "a review of just under 3 MiB is judged");

    review["request"]["object"]["metadata"]["annotations"]["padding"] =
        json!("x".repeat(limit - size));
    let body = serde_json::to_vec(&review).unwrap();
    assert!(body.len() > limit);
    let mut connection = client.connect().await.unwrap();
    let (status, answer) = connection.post("/validate", body.into()).await.unwrap();
    assert_eq!(status, 400);
    assert!(
        String::from_utf8_lossy(&answer).contains("larger than"),
        "{answer:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn slow_and_half_open_clients_time_out() {
    let dir = tempfile::tempdir().unwrap();
    let short = Duration::from_millis(300);
    let (server, client, _) = start_webhook(dir.path(), |args| {
        args.handshake_timeout = short;
        args.idle_timeout = short;
        args.body_timeout = short;
    })
    .await;
    let deadline = Duration::from_secs(5);

    // TCP only, no handshake: closed.
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(deadline, tcp.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "handshake timeout: {read:?}"
    );

    // TLS up, half a request head, then silence: closed.
    let tls = raw_tls(&client, server.addr).await;
    let (mut read_half, mut write_half) = tokio::io::split(tls);
    write_half
        .write_all(b"POST /validate HTTP/1.1\r\nhost: loc")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(deadline, read_half.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "a half-sent head is cut off");

    // An idle keep-alive connection: closed.
    let connection = client.connect().await.unwrap();
    let started = std::time::Instant::now();
    tokio::time::timeout(deadline, async {
        while !connection.is_closed() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("an idle connection is closed");
    assert!(started.elapsed() >= short / 2);

    // A head promising a body that never comes: answered 408 and closed.
    let tls = raw_tls(&client, server.addr).await;
    let (mut read_half, mut write_half) = tokio::io::split(tls);
    write_half
        .write_all(b"POST /validate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"apiVersion\":")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(deadline, read_half.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    server.shutdown().await;
}

async fn raw_tls(
    client: &Client,
    addr: std::net::SocketAddr,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    client.raw(addr).await
}

#[tokio::test]
async fn a_replaced_certificate_serves_new_connections_while_old_ones_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let (server, old_client, old_bundle) = start_webhook(dir.path(), |args| {
        args.tls_reload_interval = Duration::from_millis(100);
    })
    .await;
    let mut held = old_client.connect().await.unwrap();
    let (status, _) = held
        .post("/validate", fixture("create-unknown-kind.json").into())
        .await
        .unwrap();
    assert_eq!(status, 200);

    // Replace all four files with a new CA and serving certificate.
    let new_bundle = webhook_support::make_certs(dir.path());
    assert_ne!(new_bundle.tls_cert_pem, old_bundle.tls_cert_pem);
    let new_client = Client::trusting(&new_bundle.ca_cert_pem, server.addr);
    let new_leaf =
        rustls::pki_types::CertificateDer::from_pem_slice(new_bundle.tls_cert_pem.as_bytes())
            .unwrap();

    let mut connection = None;
    for _ in 0..100 {
        if let Ok(c) = new_client.connect().await {
            connection = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut connection = connection.expect("new connections get the new certificate");
    assert_eq!(connection.peer_certificate, new_leaf);
    let (status, _) = connection
        .post("/mutate", fixture("create-unknown-kind.json").into())
        .await
        .unwrap();
    assert_eq!(status, 200);

    // The connection opened before the change still works, with its old certificate …
    let (status, _) = held
        .post("/validate", fixture("create-unknown-kind.json").into())
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_ne!(held.peer_certificate, new_leaf);
    // … and a new client that trusts only the old CA can no longer connect. (A client holding
    // a TLS session ticket may still resume its old session, as TLS allows.)
    let old_only = Client::trusting(&old_bundle.ca_cert_pem, server.addr);
    assert!(old_only.connect().await.is_err());

    let metrics = http_get(server.metrics_addr, "/metrics").await;
    assert!(
        metrics.contains("dbward_webhook_tls_certificate_reloads_total 1\n"),
        "{metrics}"
    );
    server.shutdown().await;
}

use rustls::pki_types::pem::PemObject as _;

/// A plain-HTTP GET on the admin port; returns the whole response.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client, bundle) = start_webhook(dir.path(), |_| {}).await;
    assert!(
        http_get(server.metrics_addr, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert!(
        http_get(server.metrics_addr, "/readyz")
            .await
            .starts_with("HTTP/1.1 200")
    );

    let mut connection = client.connect().await.unwrap();
    for name in ["create-connectionpool.json", "create-unknown-kind.json"] {
        connection
            .post("/validate", fixture(name).into())
            .await
            .unwrap();
    }
    connection
        .post("/mutate", Bytes::from_static(b"nope"))
        .await
        .unwrap();

    let metrics = http_get(server.metrics_addr, "/metrics").await;
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains("content-type: text/plain; version=0.0.4"),
        "{metrics}"
    );
    assert!(metrics.contains(
        "dbward_webhook_requests_total{kind=\"other\",operation=\"CREATE\",endpoint=\"validate\",verdict=\"allowed\"} 1\n"
    ), "{metrics}");
    assert!(
        metrics.contains("kind=\"ConnectionPool\",operation=\"CREATE\",endpoint=\"validate\""),
        "{metrics}"
    );
    assert!(metrics.contains(
        "dbward_webhook_requests_total{kind=\"other\",operation=\"unknown\",endpoint=\"mutate\",verdict=\"bad_request\"} 1\n"
    ), "{metrics}");
    assert!(
        metrics
            .contains("dbward_webhook_request_duration_seconds_count{endpoint=\"validate\"} 2\n"),
        "{metrics}"
    );
    let leaf =
        rustls::pki_types::CertificateDer::from_pem_slice(bundle.tls_cert_pem.as_bytes()).unwrap();
    let expiry = dbward::webhook::tls::not_after_unix(&leaf).unwrap();
    assert!(
        metrics.contains(&format!(
            "dbward_webhook_tls_certificate_expiry_seconds {expiry}\n"
        )),
        "{metrics}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn refuses_to_start_with_a_key_that_does_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = webhook_support::make_certs(dir.path());
    std::fs::write(dir.path().join("tls.key"), &bundle.ca_key_pem).unwrap();
    let args = dbward::webhook::WebhookArgs::local(
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
        dbward::webhook::TlsFiles {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
        },
    );
    let error = dbward::webhook::start(&args).await.unwrap_err();
    assert!(error.to_string().contains("does not fit"), "{error}");
}

#[tokio::test]
async fn only_tls_1_2_and_1_3_are_spoken() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _, _) = start_webhook(dir.path(), |_| {}).await;
    // A TLS 1.1 ClientHello (record version 0x0302, client version 0x0302) gets an alert.
    let mut hello = vec![0x16, 0x03, 0x02, 0x00, 0x00];
    let mut body = vec![0x01, 0x00, 0x00, 0x00, 0x03, 0x02];
    body.extend_from_slice(&[0u8; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x02, 0x00, 0x2f]); // TLS_RSA_WITH_AES_128_CBC_SHA
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    let len = body.len() - 4;
    body[1..4].copy_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8]);
    hello[3..5].copy_from_slice(&(body.len() as u16).to_be_bytes());
    hello.extend_from_slice(&body);
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(&hello).await.unwrap();
    let mut answer = [0u8; 7];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(
        n >= 1 && answer[0] == 0x15,
        "expected a TLS alert, got {:?}",
        &answer[..n]
    );
    server.shutdown().await;
}
