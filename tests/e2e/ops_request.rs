//! DatabaseOpsRequests on the real API server: the example's RotateCredentials request runs to
//! `Successful` with KubeDB's conditions and events, the Secret's new password is the one the
//! server holds; a ReconfigureTLS from a tenant's namespace is refused at apply time; two
//! requests on one user run one after the other; a finished request is not run again when the
//! controllers move to another replica.

use serde_json::Value;

use super::harness::{Cluster, eventually, psql};

const NS: &str = "team-a";

fn phase(cluster: &Cluster, name: &str) -> Option<String> {
    let request = cluster.get_json("databaseopsrequest", NS, name);
    request["status"]["phase"].as_str().map(String::from)
}

fn successful(cluster: &Cluster, name: &str) -> Value {
    eventually(&format!("DatabaseOpsRequest {name} is Successful"), || {
        let request = cluster.get_json("databaseopsrequest", NS, name);
        assert_ne!(
            request["status"]["phase"], "Failed",
            "{name} failed: {}",
            request["status"]
        );
        (request["status"]["phase"] == "Successful").then_some(request)
    })
}

/// The condition types with status True, in order, without the wait's own condition.
fn steps(request: &Value) -> Vec<String> {
    request["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["type"] != "Pending")
        .map(|c| {
            assert_eq!(c["status"], "True", "{c}");
            assert!(c["lastTransitionTime"].is_string(), "{c}");
            assert_eq!(c["reason"], c["type"], "{c}");
            c["type"].as_str().unwrap().to_owned()
        })
        .collect()
}

fn transition(request: &Value, type_: &str) -> String {
    request["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .and_then(|c| c["lastTransitionTime"].as_str())
        .unwrap_or_else(|| panic!("no {type_} condition in {request}"))
        .to_owned()
}

/// A key of a Secret, decoded.
fn secret_value(cluster: &Cluster, namespace: &str, name: &str, key: &str) -> Option<String> {
    use base64::Engine as _;
    let secret = cluster.get_json("secret", namespace, name);
    let encoded = secret["data"][key].as_str()?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    String::from_utf8(decoded).ok()
}

/// The password in the ServiceUser orders-app's Secret.
fn secret_password(cluster: &Cluster) -> String {
    secret_value(cluster, NS, "orders-app-db", "SERVICEUSER_PASSWORD").expect("a password")
}

/// Whether the server's stored SCRAM verifier of orders_app is `password`'s (the loopback
/// trusts every login, so a login would prove nothing).
fn server_holds(password: &str) -> bool {
    let stored = psql("SELECT rolpassword FROM pg_authid WHERE rolname = 'orders_app'");
    dbward::sql::password::pg_verify(Some(&stored), password) == dbward::sql::PasswordState::Matches
}

const ROTATE_STEPS: [&str; 4] = [
    "RotateCredentials",
    "CredentialsGenerated",
    "CredentialsRotated",
    "Successful",
];

/// The example file of the ops requests, applied by [`the_example_rotation_ran`].
pub const EXAMPLE: &str = "70-ops-request.yaml";

/// The example's requests (examples/70-ops-request.yaml) apply and its RotateCredentials runs.
/// Returns the request and the password.
pub fn the_example_rotation_ran(cluster: &Cluster) -> (Value, String) {
    let before = secret_password(cluster);
    let out = cluster.kubectl(&["apply", "-f", &format!("examples/{EXAMPLE}")]);
    assert!(out.ok(), "examples/{EXAMPLE} must apply: {}", out.text());
    // The example's request (examples/70-ops-request.yaml) ran once orders-app was Ready.
    let example = successful(cluster, "orders-app-rotate");
    assert_eq!(steps(&example), ROTATE_STEPS);
    assert_eq!(
        example["status"]["observedGeneration"],
        example["metadata"]["generation"]
    );
    let password = secret_password(cluster);
    assert_ne!(password, before, "the password was rotated");
    assert!(!server_holds(&before), "the old password stops working");
    assert!(
        server_holds(&password),
        "the Secret's password is the server's"
    );
    assert!(
        !cluster
            .kubectl(&["get", "secret", "orders-app-dbward-rotation", "-n", NS])
            .ok(),
        "the staging Secret is gone"
    );
    let events = cluster.kubectl(&[
        "get",
        "events",
        "-n",
        NS,
        "--field-selector",
        "involvedObject.name=orders-app-rotate",
        "-o",
        "json",
    ]);
    let events: Value = serde_json::from_str(&events.stdout).unwrap();
    let reasons: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["reason"].as_str())
        .collect();
    for reason in ROTATE_STEPS {
        assert!(
            reasons.contains(&reason),
            "no {reason} event in {reasons:?}"
        );
    }
    (example, password)
}

/// A tenant's ReconfigureTLS is refused; two requests on one user run one after the other.
/// Returns the password they leave.
pub fn one_request_per_target(cluster: &Cluster, password: &str) -> String {
    // ReconfigureTLS of a shared service's pooler is an admin action.
    let tls = super::harness::manifest(
        "DatabaseOpsRequest",
        NS,
        "tenant-tls",
        "type: ReconfigureTLS\n  serviceRef: {name: shared-pg}\n  tls: {sslMode: require}",
    );
    let out = cluster.apply_stdin(&tls, &[]);
    assert!(
        !out.ok()
            && out.text().contains(
                "metadata.namespace: Forbidden: ReconfigureTLS changes the pooler every tenant"
            ),
        "{}",
        out.text()
    );

    // Two requests on one user at once: one waits until the other has finished.
    let two = [
        super::harness::manifest(
            "DatabaseOpsRequest",
            NS,
            "rotate-one",
            "type: RotateCredentials\n  userRef: {name: orders-app}",
        ),
        super::harness::manifest(
            "DatabaseOpsRequest",
            NS,
            "rotate-two",
            "type: RotateCredentials\n  userRef: {name: orders-app}",
        ),
    ]
    .join("---\n");
    let out = cluster.apply_stdin(&two, &[]);
    assert!(out.ok(), "{}", out.text());
    let one = successful(cluster, "rotate-one");
    let two = successful(cluster, "rotate-two");
    assert_eq!(steps(&one), ROTATE_STEPS);
    assert_eq!(steps(&two), ROTATE_STEPS);
    // RFC 3339 in UTC compares as text.
    let (first, second) =
        if transition(&one, "RotateCredentials") <= transition(&two, "RotateCredentials") {
            (&one, &two)
        } else {
            (&two, &one)
        };
    assert!(
        transition(second, "RotateCredentials") >= transition(first, "Successful"),
        "the second started before the first had finished: {first} {second}"
    );
    let rotated = secret_password(cluster);
    assert_ne!(rotated, password);
    assert!(
        server_holds(&rotated),
        "the Secret's password is the server's"
    );
    assert!(!server_holds(password), "the old password is gone");
    assert_eq!(
        phase(cluster, "orders-app-rotate").as_deref(),
        Some("Successful")
    );
    rotated
}

/// After the controllers moved between replicas: the finished requests are as they were and the
/// password was not rotated again.
pub fn not_run_again(cluster: &Cluster, example: &Value, password: &str) {
    // The example's add-TLS request (from dbward's namespace) ran: dbward's CA issued the
    // pooler's certificate into the serving Secret the pool reconciler takes up. (It runs after
    // the pooler step deleted the last pool, so no pool Secret is left to carry it; what pool
    // Secrets and pgbouncer.ini make of it is tests/ops_request_tls.rs.)
    let tls = cluster.get_json("databaseopsrequest", "dbward-system", "shared-pg-add-tls");
    assert_eq!(tls["status"]["phase"], "Successful", "{}", tls["status"]);
    assert_eq!(
        steps(&tls),
        [
            "ReconfigureTLS",
            "IssueCertificatesSucceeded",
            "CertificateSynced",
            "Successful"
        ]
    );
    let serving = cluster.get_json("secret", "dbward-system", "shared-pg-pooler-tls");
    assert_eq!(serving["type"], "kubernetes.io/tls");
    assert_eq!(
        serving["metadata"]["annotations"]["dbward.dev/client-tls-sslmode"],
        "require"
    );
    assert_eq!(
        serving["metadata"]["ownerReferences"][0]["kind"],
        "DatabaseService"
    );
    for key in ["tls.crt", "ca.crt"] {
        assert!(
            secret_value(cluster, "dbward-system", "shared-pg-pooler-tls", key)
                .is_some_and(|pem| pem.starts_with("-----BEGIN CERTIFICATE-----")),
            "the serving Secret holds {key}"
        );
    }
    let now = cluster.get_json("databaseopsrequest", NS, "orders-app-rotate");
    assert_eq!(now["status"], example["status"]);
    assert_eq!(secret_password(cluster), password);
    assert!(server_holds(password));
}
