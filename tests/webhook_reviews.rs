//! What the webhook answers, end to end over HTTPS, for AdmissionReviews shaped as the API
//! server sends them: verdicts, messages and causes, warnings, and JSON Patches that give the
//! defaulted object.

mod webhook_support;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Value, json};
use webhook_support::{Connection, fixture, start_webhook};

async fn ask(connection: &mut Connection, path: &str, review: &Value) -> Value {
    let body = Bytes::from(serde_json::to_vec(review).unwrap());
    let (status, answer) = connection.post(path, body).await.unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(answer["response"]["uid"], review["request"]["uid"]);
    answer["response"].clone()
}

fn review(name: &str) -> Value {
    serde_json::from_slice(&fixture(name)).unwrap()
}

/// What `/validate` should answer: the engine's verdict for the review, computed in-process
/// with the same snapshot the test webhook uses, in the wire format.
fn engine_answer(review: &Value) -> Value {
    let request = &review["request"];
    let kind = request["kind"]["kind"].as_str().unwrap();
    let name = request["name"].as_str().unwrap();
    let verdict = engine_verdict(review);
    let mut answer = json!({"uid": request["uid"], "allowed": verdict.allowed});
    if !verdict.allowed {
        let causes: Vec<Value> = verdict
            .errors
            .iter()
            .map(|e| {
                let full = e.to_string();
                let message = full.strip_prefix(&format!("{}: ", e.field)).unwrap();
                json!({"reason": e.reason(), "message": message, "field": e.field})
            })
            .collect();
        answer["status"] = json!({
            "code": 422,
            "message": verdict.message(kind, name),
            "reason": "Invalid",
            "details": {"name": name, "group": "dbward.dev", "kind": kind, "causes": causes},
        });
    }
    if !verdict.warnings.is_empty() {
        answer["warnings"] = json!(verdict.warnings);
    }
    answer
}

/// The engine's verdict on the review's objects as the API server sent them, whole.
fn engine_verdict(review: &Value) -> dbward::admission::Verdict {
    let dir = webhook_support::fixture_dir();
    let snapshot = dbward::webhook::snapshot::offline(
        Some(&dir.join("policy.yaml")),
        &[dir.join("context.yaml")],
        "dbward-system",
    )
    .unwrap();
    let request = &review["request"];
    dbward::admission::admit(
        &dbward::admission::Request {
            operation: dbward::admission::Operation::parse(request["operation"].as_str().unwrap())
                .unwrap(),
            kind: request["kind"]["kind"].as_str().unwrap(),
            namespace: request["namespace"].as_str(),
            name: request["name"].as_str().unwrap(),
            object: Some(&request["object"]).filter(|o| !o.is_null()),
            old_object: Some(&request["oldObject"]).filter(|o| !o.is_null()),
            subresource: request["subResource"].as_str(),
        },
        &snapshot,
    )
}

/// The JSON Patch of a /mutate answer, decoded; `None` when there is none.
fn patch_of(response: &Value) -> Option<json_patch::Patch> {
    let encoded = response.get("patch")?.as_str().unwrap();
    assert_eq!(response["patchType"], "JSONPatch");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    Some(serde_json::from_slice(&decoded).unwrap())
}

/// The webhook reads only the parts of an object the engine reads (no status, managedFields
/// or last-applied copy); for every fixture both endpoints answer as the engine does on the
/// whole objects.
#[tokio::test]
async fn skipping_what_the_engine_does_not_read_changes_no_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client, _) = start_webhook(dir.path(), |_| {}).await;
    let mut connection = client.connect().await.unwrap();
    let mut fixtures: Vec<_> = std::fs::read_dir(webhook_support::fixture_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".json"))
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 8, "{fixtures:?}");
    for name in fixtures {
        let review = review(&name);
        let is_dbward = review["request"]["kind"]["group"] == "dbward.dev";
        if is_dbward {
            let validated = ask(&mut connection, "/validate", &review).await;
            assert_eq!(validated, engine_answer(&review), "{name}");
        }
        let mutated = ask(&mut connection, "/mutate", &review).await;
        let expected = if is_dbward {
            engine_verdict(&review).patch
        } else {
            json_patch::Patch(Vec::new())
        };
        assert_eq!(
            patch_of(&mutated).unwrap_or(json_patch::Patch(Vec::new())),
            expected,
            "{name}"
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn create_is_admitted_and_defaulted_by_an_idempotent_patch() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client, _) = start_webhook(dir.path(), |_| {}).await;
    let mut connection = client.connect().await.unwrap();
    let mut review = review("create-connectionpool.json");

    let validated = ask(&mut connection, "/validate", &review).await;
    assert_eq!(validated["allowed"], true);
    assert!(validated.get("status").is_none(), "{validated}");
    assert!(validated.get("warnings").is_none(), "{validated}");
    assert!(validated.get("patch").is_none(), "/validate never patches");

    let mutated = ask(&mut connection, "/mutate", &review).await;
    assert_eq!(mutated["allowed"], true);
    let patch = patch_of(&mutated).expect("defaults to fill");
    let mut object = review["request"]["object"].clone();
    json_patch::patch(&mut object, &patch).unwrap();
    let mut expected = review["request"]["object"].clone();
    expected["spec"]["poolMode"] = json!("transaction");
    expected["spec"]["poolSize"] = json!(10);
    expected["spec"]["connInfoSecretTarget"] =
        json!({"name": "orders-pool", "prefix": "CONNECTIONPOOL_"});
    assert_eq!(
        object, expected,
        "the patch only fills what the user left out"
    );

    // The API server re-invokes with the defaulted object (reinvocationPolicy: IfNeeded):
    // nothing more to fill, and the defaulted object is valid.
    review["request"]["object"] = object;
    let again = ask(&mut connection, "/mutate", &review).await;
    assert_eq!(
        again,
        json!({"uid": review["request"]["uid"], "allowed": true})
    );
    let validated = ask(&mut connection, "/validate", &review).await;
    assert_eq!(validated["allowed"], true);
    server.shutdown().await;
}

#[tokio::test]
async fn dry_run_gets_the_same_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client, _) = start_webhook(dir.path(), |_| {}).await;
    let mut connection = client.connect().await.unwrap();
    let real = review("create-connectionpool.json");
    let dry = review("create-connectionpool-dryrun.json");
    assert_eq!(dry["request"]["dryRun"], true);
    for path in ["/validate", "/mutate"] {
        let mut a = ask(&mut connection, path, &real).await;
        let mut b = ask(&mut connection, path, &dry).await;
        a["uid"] = Value::Null;
        b["uid"] = Value::Null;
        assert_eq!(a, b, "{path}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn an_update_of_immutable_fields_is_denied_with_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client, _) = start_webhook(dir.path(), |_| {}).await;
    let mut connection = client.connect().await.unwrap();
    let review = review("update-connectionpool-immutable.json");
    assert!(review["request"]["oldObject"].is_object());

    let response = ask(&mut connection, "/validate", &review).await;
    assert_eq!(response["allowed"], false);
    let status = &response["status"];
    assert_eq!(status["code"], 422);
    assert_eq!(status["reason"], "Invalid");
    let message = status["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "ConnectionPool.dbward.dev \"orders-pool\" is invalid: [\
             spec.project: Invalid value: \"other\": field is immutable, \
             spec.serviceName: Invalid value: \"pg-other\": field is immutable, \
             spec.poolSize: Invalid value: 0: "
        ),
        "{message}"
    );
    assert_eq!(status["details"]["name"], "orders-pool");
    assert_eq!(status["details"]["group"], "dbward.dev");
    assert_eq!(status["details"]["kind"], "ConnectionPool");
    let causes = status["details"]["causes"].as_array().unwrap();
    assert_eq!(
        causes[..2],
        [
            json!({"reason": "FieldValueInvalid", "field": "spec.project", "message": "Invalid value: \"other\": field is immutable"}),
            json!({"reason": "FieldValueInvalid", "field": "spec.serviceName", "message": "Invalid value: \"pg-other\": field is immutable"}),
        ]
    );
    assert_eq!(causes[2]["field"], "spec.poolSize");
    assert_eq!(causes[2]["reason"], "FieldValueInvalid");
    assert!(
        causes[2]["message"]
            .as_str()
            .unwrap()
            .starts_with("Invalid value: 0: ")
    );
    // Every cause is in the message, and the answer is exactly the engine's verdict.
    for cause in causes {
        let line = format!(
            "{}: {}",
            cause["field"].as_str().unwrap(),
            cause["message"].as_str().unwrap()
        );
        assert!(message.contains(&line), "{line} not in {message}");
    }
    assert_eq!(
        response,
        engine_answer(&review),
        "the webhook carries the engine's verdict as is"
    );
    // Offline, a service missing from the context is a warning, not an error.
    let warnings = response["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("pg-other")),
        "{warnings:?}"
    );

    // /mutate leaves denying to /validate and never rewrites values the user set.
    let mutated = ask(&mut connection, "/mutate", &review).await;
    assert_eq!(mutated["allowed"], true);
    if let Some(patch) = patch_of(&mutated) {
        let mut object = review["request"]["object"].clone();
        json_patch::patch(&mut object, &patch).unwrap();
        for field in [
            "project",
            "serviceName",
            "poolSize",
            "poolMode",
            "databaseName",
        ] {
            assert_eq!(
                object["spec"][field], review["request"]["object"]["spec"][field],
                "{field}"
            );
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_delete_under_termination_protection_is_denied() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client, _) = start_webhook(dir.path(), |_| {}).await;
    let mut connection = client.connect().await.unwrap();
    let mut review = review("delete-database-protected.json");
    assert!(review["request"]["object"].is_null());

    let response = ask(&mut connection, "/validate", &review).await;
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 422);
    let causes = response["status"]["details"]["causes"].as_array().unwrap();
    assert_eq!(causes.len(), 1, "{causes:?}");
    assert_eq!(causes[0]["reason"], "FieldValueForbidden");
    assert_eq!(causes[0]["field"], "spec.terminationProtection");
    let cause = causes[0]["message"].as_str().unwrap();
    assert!(cause.starts_with("Forbidden: "), "{cause}");
    // One error: no brackets, as the API server words it.
    assert_eq!(
        response["status"]["message"],
        format!("Database.dbward.dev \"orders\" is invalid: spec.terminationProtection: {cause}")
    );
    assert_eq!(response, engine_answer(&review));

    review["request"]["oldObject"]["spec"]["terminationProtection"] = json!(false);
    let response = ask(&mut connection, "/validate", &review).await;
    assert_eq!(response["allowed"], true, "{response}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_status_update_is_never_denied_for_spec_rules() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client, _) = start_webhook(dir.path(), |_| {}).await;
    let mut connection = client.connect().await.unwrap();
    let mut review = review("update-connectionpool-status.json");
    assert_eq!(review["request"]["subResource"], "status");
    assert_eq!(
        review["request"]["object"]["spec"]["poolSize"], 0,
        "the spec breaks a rule"
    );
    for path in ["/validate", "/mutate"] {
        let response = ask(&mut connection, path, &review).await;
        assert_eq!(
            response,
            json!({"uid": review["request"]["uid"], "allowed": true}),
            "{path}"
        );
    }
    // The same spec on the main resource is denied.
    review["request"]
        .as_object_mut()
        .unwrap()
        .remove("subResource");
    review["request"]["object"]["spec"]["poolSize"] = json!(-1);
    let response = ask(&mut connection, "/validate", &review).await;
    assert_eq!(response["allowed"], false, "{response}");
    server.shutdown().await;
}

#[tokio::test]
async fn every_error_of_an_invalid_object_is_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client, _) = start_webhook(dir.path(), |_| {}).await;
    let mut connection = client.connect().await.unwrap();
    let response = ask(
        &mut connection,
        "/validate",
        &review("create-serviceuser-invalid.json"),
    )
    .await;
    assert_eq!(response["allowed"], false);
    let causes = response["status"]["details"]["causes"].as_array().unwrap();
    let fields: Vec<&str> = causes
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["spec.username", "spec.flags"]);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.starts_with("ServiceUser.dbward.dev \"reporting\" is invalid: [spec.username: Invalid value: \"Bad Name!\": "), "{message}");
    assert!(
        message.contains(", spec.flags: Invalid value: [\"login\",\"nologin\"]: "),
        "{message}"
    );
    assert!(message.ends_with(']'), "{message}");
    server.shutdown().await;
}

#[tokio::test]
async fn warnings_ride_on_an_allowed_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client, _) = start_webhook(dir.path(), |_| {}).await;
    let mut connection = client.connect().await.unwrap();
    let review = review("create-postgrescluster-low-resources.json");
    let response = ask(&mut connection, "/validate", &review).await;
    assert_eq!(response["allowed"], true);
    assert!(response.get("status").is_none());
    let warnings: Vec<&str> = response["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].starts_with("spec.resources.requests.cpu: Invalid value: \"10m\": "),
        "{warnings:?}"
    );
    assert!(warnings[0].contains("250m"), "{warnings:?}");
    assert!(
        warnings[1].starts_with("spec.resources.requests.memory: Invalid value: \"100Mi\": "),
        "{warnings:?}"
    );
    assert_eq!(
        response,
        engine_answer(&review),
        "the webhook carries the engine's warnings as is"
    );
    // GitOps: the object itself is not rewritten to the minimum.
    let mutated = ask(&mut connection, "/mutate", &review).await;
    assert!(patch_of(&mutated).is_none(), "{mutated}");
    assert!(
        mutated.get("warnings").is_none(),
        "warnings come once, from /validate"
    );
    server.shutdown().await;
}
