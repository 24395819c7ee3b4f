//! `dbward validate` end to end: the binary on the fixtures under tests/fixtures/validate and on
//! examples/.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

fn dbward(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dbward"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

fn text(output: &Output) -> (i32, String, String) {
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

const FIXTURES: &str = "tests/fixtures/validate";

#[test]
fn every_example_is_valid() {
    let (code, stdout, stderr) = text(&dbward(&["validate", "-f", "examples/"]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    for kind in [
        "databaseservice/",
        "database/",
        "serviceuser/",
        "connectionpool/",
        "databaseclaim/",
        "postgrescluster/",
        "databasequeryresource/",
        "databaseopsrequest/",
        "admissionpolicy/",
    ] {
        assert!(stdout.contains(kind), "examples/ has no {kind}: {stdout}");
    }
    assert!(!stdout.contains("Warning"), "{stdout}");
}

#[test]
fn the_seed_connection_pool_is_defaulted() {
    let output = dbward(&[
        "validate",
        "-f",
        "examples/aiven-seed/connection-pool.yaml",
        "-o",
        "json",
    ]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reports: Value = serde_json::from_slice(&output.stdout).unwrap();
    let pool = reports
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "ConnectionPool")
        .unwrap();
    assert_eq!(pool["kind"], "ConnectionPool");
    assert_eq!(pool["namespace"], "default");
    assert_eq!(pool["operation"], "CREATE");
    assert_eq!(pool["allowed"], true);
    assert_eq!(
        pool["patch"],
        json!([{"op": "add", "path": "/spec/connInfoSecretTarget", "value": {"name": "my-connection-pool", "prefix": "CONNECTIONPOOL_"}}])
    );
}

#[test]
fn a_bad_pool_mode_is_denied_as_kubectl_would_say() {
    let (code, stdout, _) = text(&dbward(&[
        "validate",
        "-f",
        &format!("{FIXTURES}/bad-pool.yaml"),
    ]));
    assert_eq!(code, 1);
    assert_eq!(
        stdout,
        "connectionpool/my-pool denied: spec.poolMode: Unsupported value: \"bulk\": supported values: \"session\", \"statement\", \"transaction\"\n"
    );
    let output = dbward(&[
        "validate",
        "-f",
        &format!("{FIXTURES}/bad-pool.yaml"),
        "-o",
        "json",
    ]);
    let reports: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        reports[0]["errors"],
        json!([{"field": "spec.poolMode", "type": "FieldValueNotSupported", "message": "Unsupported value: \"bulk\": supported values: \"session\", \"statement\", \"transaction\""}])
    );
}

#[test]
fn all_errors_of_an_object_are_listed() {
    let (code, stdout, _) = text(&dbward(&[
        "validate",
        "-f",
        &format!("{FIXTURES}/two-errors.yaml"),
    ]));
    assert_eq!(code, 1);
    assert!(
        stdout.starts_with("postgrescluster/x-db denied:\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "  * metadata.name: Invalid value: \"x-db\": must start with teamId \"acid-\"\n"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("  * spec.users[app]: Invalid value: [\"login\",\"nologin\"]: login and nologin are mutually exclusive\n"), "{stdout}");
}

#[test]
fn objects_under_old_are_checked_as_updates() {
    let new = format!("{FIXTURES}/new");
    let old = format!("{FIXTURES}/old");
    let output = dbward(&["validate", "-f", &new, "--old", &old, "-o", "json"]);
    assert_eq!(output.status.code(), Some(1));
    let reports: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(reports[0]["operation"], "UPDATE");
    assert_eq!(
        reports[0]["errors"][0]["message"],
        "Invalid value: \"another-project\": field is immutable"
    );
    // The same object without --old is a CREATE, and the missing service only warns.
    let (code, stdout, _) = text(&dbward(&["validate", "-f", &old]));
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains(
            "Warning: connectionpool/my-connection-pool: spec.serviceName: Not found: \"my-pg\""
        ),
        "{stdout}"
    );
}

#[test]
fn a_policy_file_applies() {
    let seed = "examples/aiven-seed/connection-pool.yaml";
    let (code, stdout, _) = text(&dbward(&[
        "validate",
        "-f",
        seed,
        "--policy",
        &format!("{FIXTURES}/strict-policy.yaml"),
    ]));
    assert_eq!(code, 1);
    assert!(stdout.contains("connectionpool/my-connection-pool denied: spec.poolSize: Invalid value: 25: must be between 1 and 20"), "{stdout}");
    // The same policy among the inputs applies too.
    let (code, _, _) = text(&dbward(&[
        "validate",
        "-f",
        seed,
        &format!("{FIXTURES}/strict-policy.yaml"),
    ]));
    assert_eq!(code, 1);
}

#[test]
fn standard_input_is_read_with_dash() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dbward"))
        .args(["validate", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            std::fs::read(format!(
                "{}/{FIXTURES}/bad-pool.yaml",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap()
            .as_slice(),
        )
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("connectionpool/my-pool denied"));
}

#[test]
fn unreadable_input_exits_2_naming_file_and_document() {
    let (code, stdout, stderr) = text(&dbward(&[
        "validate",
        "-f",
        &format!("{FIXTURES}/broken.yaml"),
    ]));
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(
        stderr.contains("tests/fixtures/validate/broken.yaml: document 2 (line"),
        "{stderr}"
    );
    assert!(
        stdout.contains("database/ok allowed"),
        "the readable document is still checked: {stdout}"
    );

    let (code, _, stderr) = text(&dbward(&[
        "validate",
        "-f",
        &format!("{FIXTURES}/no-kind.yaml"),
    ]));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("no-kind.yaml: document 1 (line 1): no kind"),
        "{stderr}"
    );

    let (code, _, stderr) = text(&dbward(&[
        "validate",
        "-f",
        &format!("{FIXTURES}/garbage.yaml"),
    ]));
    assert_eq!(code, 2);
    assert!(stderr.contains("garbage.yaml: not UTF-8 text"), "{stderr}");

    let (code, _, stderr) = text(&dbward(&["validate", "-f", "does/not/exist.yaml"]));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("does/not/exist.yaml: cannot read"),
        "{stderr}"
    );
}

#[test]
fn a_ten_megabyte_document_is_refused_cleanly() {
    let dir = std::env::temp_dir().join(format!("dbward-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("huge.yaml");
    let huge = format!(
        "apiVersion: dbward.dev/v1alpha1\nkind: Database\nmetadata:\n  name: huge\n  annotations:\n    blob: \"{}\"\n",
        "x".repeat(10 * 1024 * 1024)
    );
    std::fs::write(&path, huge).unwrap();
    let (code, _, stderr) = text(&dbward(&["validate", "-f", path.to_str().unwrap()]));
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(code, 2);
    assert!(
        stderr.contains("is larger than the 3145728 bytes the API server accepts"),
        "{stderr}"
    );
}

#[test]
fn a_misspelt_kind_in_our_group_is_denied() {
    let (code, stdout, _) = text(&dbward(&[
        "validate",
        "-f",
        &format!("{FIXTURES}/unknown-kind.yaml"),
    ]));
    assert_eq!(code, 1);
    assert!(
        stdout
            .contains("connectionpools/typo denied: kind: Unsupported value: \"ConnectionPools\""),
        "{stdout}"
    );
}

#[test]
fn a_hostile_tenant_is_refused_without_leaking_the_connector() {
    let fixture = format!("{FIXTURES}/hostile.yaml");
    let (code, stdout, stderr) = text(&dbward(&["validate", "-f", &fixture]));
    assert_eq!(code, 1, "{stdout}{stderr}");
    for line in [
        "serviceuser/become-postgres denied: spec.username: Invalid value: \"postgres\": is reserved on PostgreSQL services (the server's own roles and databases and the connector's user cannot be managed by dbward)",
        "serviceuser/become-the-connector denied: spec.username: Invalid value: \"dbward_admin\": is reserved on DatabaseService \"shared-pg\": its connector Secret's user",
        "serviceuser/read-server-files denied: spec.inRoles[0]: Invalid value: \"pg_read_server_files\": is reserved on PostgreSQL services",
        "serviceuser/log-everything denied: spec.parameters[log_statement]: Unsupported value: \"log_statement\"",
        "serviceuser/stream-everything denied: spec.flags[1]: Forbidden: replication is not allowed on shared services",
        "serviceuser/write-reference denied: spec.privileges[0].level: Forbidden: database \"reference\" is shared by DatabaseService \"shared-pg\" up to readOnly",
        "serviceuser/own-the-catalog denied: spec.privileges[0].database: Invalid value: \"_dbward\": is reserved on PostgreSQL services",
        "database/template denied: spec.databaseName: Invalid value: \"template1\": is reserved on PostgreSQL services",
        "database/with-token denied: spec.authSecretRef: Forbidden: not supported: dbward administers a service only through its connector Secret",
        "serviceuser/reader allowed",
    ] {
        assert!(stdout.contains(line), "expected {line:?} in\n{stdout}");
    }
    assert!(!stdout.contains("Warning"), "{stdout}");
    let json = dbward(&["validate", "-f", &fixture, "-o", "json"]);
    for output in [&json.stdout, &json.stderr] {
        let output = String::from_utf8_lossy(output);
        assert!(
            !output.contains("s3cret-never-printed"),
            "the connector's password leaked: {output}"
        );
    }
    let (_, stdout, _) = text(&dbward(&["validate", "-f", &fixture]));
    assert!(!stdout.contains("s3cret-never-printed"));
}

/// A document that starts on its `---` line is read, not skipped: PyYAML and kubectl read it as
/// one object, so a pipeline must get its verdict.
#[test]
fn a_document_on_the_marker_line_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("inline.yaml");
    std::fs::write(
        &file,
        "--- {apiVersion: dbward.dev/v1alpha1, kind: Database, metadata: {name: a, namespace: team-a}, spec: {project: \"b!\", serviceName: shared-pg}}\n",
    )
    .unwrap();
    let (code, stdout, _) = text(&dbward(&["validate", "-f", file.to_str().unwrap()]));
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.starts_with("database/a denied: spec.project"),
        "{stdout}"
    );
}

/// A file whose objects are all of other kinds is named in a warning: nothing in it was checked.
#[test]
fn a_file_without_dbward_objects_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("typo.yaml");
    std::fs::write(
        &file,
        "apiVersion: dbward.io/v1alpha1\nkind: Database\nmetadata: {name: a, namespace: team-a}\nspec: {project: \"b!\"}\n",
    )
    .unwrap();
    let (code, stdout, stderr) = text(&dbward(&["validate", "-f", file.to_str().unwrap()]));
    assert_eq!((code, stdout.as_str()), (0, ""), "{stderr}");
    assert!(
        stderr.contains("typo.yaml: 1 object(s), none of a dbward kind"),
        "{stderr}"
    );
}

/// `dbward run` shares the webhook's flags but refuses those of a run without a cluster: its
/// help does not offer them, and using one still says why it is refused.
#[test]
fn run_help_lists_only_the_flags_run_accepts() {
    let (code, stdout, _) = text(&dbward(&["run", "--help"]));
    assert_eq!(code, 0);
    for refused in ["--no-kube", "--policy", "--context"] {
        assert!(!stdout.contains(refused), "{refused} in:\n{stdout}");
    }
    for accepted in [
        "--listen",
        "--kubeconfig",
        "--namespace",
        "--lease-duration",
    ] {
        assert!(
            stdout.contains(accepted),
            "{accepted} missing from:\n{stdout}"
        );
    }
    let (code, _, stderr) = text(&dbward(&["run", "--no-kube"]));
    assert_ne!(code, 0);
    assert!(
        stderr.contains("--no-kube is for `dbward webhook`"),
        "{stderr}"
    );
    // The webhook keeps them.
    let (_, stdout, _) = text(&dbward(&["webhook", "--help"]));
    assert!(
        stdout.contains("--no-kube") && stdout.contains("--policy"),
        "{stdout}"
    );
}
