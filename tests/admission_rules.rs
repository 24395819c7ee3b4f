//! Every admission rule, through the public engine API: a case it accepts and one it denies.

use dbward::admission::{Operation, Request, Snapshot, Verdict, admit};
use serde_json::{Value, json};

const CONTEXT: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: pg-admin, namespace: dbward-system, labels: {dbward.dev/connector-type: shared-database}}
stringData: {endpoint: pg.example, port: "5432", user: admin, password: x, type: postgres}
---
apiVersion: v1
kind: Secret
metadata: {name: my-admin, namespace: dbward-system, labels: {dbward.dev/connector-type: shared-database}}
stringData: {endpoint: my.example, port: "3306", user: root, password: x}
---
apiVersion: dbward.dev/v1alpha1
kind: DatabaseService
metadata: {name: shared-pg}
spec:
  engine: postgres
  project: platform
  connectorSecretRef: {name: pg-admin, namespace: dbward-system}
  allowedNamespaces: {names: [team-a]}
---
apiVersion: dbward.dev/v1alpha1
kind: DatabaseService
metadata: {name: shared-mysql}
spec:
  engine: mysql
  project: platform
  connectorSecretRef: {name: my-admin, namespace: dbward-system}
  allowedNamespaces: {selector: {matchLabels: {mysql: allowed}}}
---
apiVersion: dbward.dev/v1alpha1
kind: DatabaseService
metadata: {name: private-pg}
spec:
  engine: postgres
  project: platform
  connectorSecretRef: {name: pg-admin}
---
apiVersion: v1
kind: Namespace
metadata: {name: team-a, labels: {mysql: allowed}}
---
apiVersion: v1
kind: Namespace
metadata: {name: team-b}
"#;

fn yaml(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap())
        .collect()
}

fn obj(text: &str) -> Value {
    yaml(text).remove(0)
}

fn snapshot_with(extra: &str, complete: bool) -> Snapshot {
    let mut objects = yaml(CONTEXT);
    if !extra.is_empty() {
        objects.extend(yaml(extra));
    }
    Snapshot::from_objects(objects, "dbward-system", complete)
}

fn cluster() -> Snapshot {
    snapshot_with("", true)
}

fn policy(spec: &str) -> Snapshot {
    snapshot_with(
        &format!(
            "apiVersion: dbward.dev/v1alpha1\nkind: AdmissionPolicy\nmetadata: {{name: default}}\nspec: {spec}\n"
        ),
        true,
    )
}

fn request<'a>(
    operation: Operation,
    object: Option<&'a Value>,
    old: Option<&'a Value>,
) -> Request<'a> {
    let o = object.or(old).unwrap();
    Request {
        operation,
        kind: o["kind"].as_str().unwrap(),
        namespace: o["metadata"]["namespace"].as_str(),
        name: o["metadata"]["name"].as_str().unwrap_or_default(),
        object,
        old_object: old,
        subresource: None,
    }
}

fn create(object: &Value, snapshot: &Snapshot) -> Verdict {
    admit(&request(Operation::Create, Some(object), None), snapshot)
}

fn update(old: &Value, object: &Value, snapshot: &Snapshot) -> Verdict {
    admit(
        &request(Operation::Update, Some(object), Some(old)),
        snapshot,
    )
}

/// `base` with the value at `pointer` replaced (parents created).
fn with(base: &Value, pointer: &str, value: Value) -> Value {
    let mut v = base.clone();
    let mut cur = &mut v;
    let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    for part in &parts[..parts.len() - 1] {
        cur = cur
            .as_object_mut()
            .unwrap()
            .entry(part.to_string())
            .or_insert(json!({}));
    }
    cur.as_object_mut()
        .unwrap()
        .insert(parts.last().unwrap().to_string(), value);
    v
}

#[track_caller]
fn allowed(v: &Verdict) {
    assert!(
        v.allowed,
        "expected allowed, got {:?}",
        v.errors.iter().map(ToString::to_string).collect::<Vec<_>>()
    );
}

#[track_caller]
fn denied(v: &Verdict, expected: &str) {
    let errors: Vec<String> = v.errors.iter().map(ToString::to_string).collect();
    assert!(
        !v.allowed,
        "expected denial with {expected:?}, but it was allowed (warnings {:?})",
        v.warnings
    );
    assert!(
        errors.iter().any(|e| e.contains(expected)),
        "expected {expected:?} among {errors:#?}"
    );
}

#[track_caller]
fn warned(v: &Verdict, expected: &str) {
    allowed(v);
    assert!(
        v.warnings.iter().any(|w| w.contains(expected)),
        "expected a warning {expected:?} among {:#?}",
        v.warnings
    );
}

fn pool() -> Value {
    obj(
        "apiVersion: dbward.dev/v1alpha1\nkind: ConnectionPool\nmetadata: {name: my-pool, namespace: team-a}\nspec: {project: platform, serviceName: shared-pg, databaseName: app, username: app_user, poolMode: transaction, poolSize: 25}\n",
    )
}

fn database() -> Value {
    obj(
        "apiVersion: dbward.dev/v1alpha1\nkind: Database\nmetadata: {name: orders, namespace: team-a}\nspec: {project: platform, serviceName: shared-pg, lcCollate: C, lcCtype: C}\n",
    )
}

fn user() -> Value {
    obj(
        "apiVersion: dbward.dev/v1alpha1\nkind: ServiceUser\nmetadata: {name: app, namespace: team-a}\nspec: {project: platform, serviceName: shared-pg, flags: [login], privileges: [{database: orders, level: readWrite}]}\n",
    )
}

fn claim() -> Value {
    obj(
        "apiVersion: dbward.dev/v1alpha1\nkind: DatabaseClaim\nmetadata: {name: store, namespace: team-a}\nspec: {project: platform, serviceName: shared-pg}\n",
    )
}

fn service() -> Value {
    obj(
        "apiVersion: dbward.dev/v1alpha1\nkind: DatabaseService\nmetadata: {name: new-pg}\nspec: {engine: postgres, project: platform, connectorSecretRef: {name: pg-admin, namespace: dbward-system}}\n",
    )
}

fn pg_cluster() -> Value {
    obj(r#"
apiVersion: dbward.dev/v1alpha1
kind: PostgresCluster
metadata: {name: acid-minimal, namespace: team-a}
spec:
  teamId: acid
  numberOfInstances: 2
  volume: {size: 2Gi}
  postgresql: {version: "16"}
  users: {zalando: [superuser, createdb], foo_user: []}
  databases: {foo: zalando}
  resources: {requests: {cpu: 500m, memory: 500Mi}}
"#)
}

fn query_resource() -> Value {
    obj(r#"
apiVersion: dbward.dev/v1alpha1
kind: DatabaseQueryResource
metadata: {name: users, namespace: team-a}
spec:
  pollInterval: 1m
  database: {type: postgres, connectionSecretRef: {name: db-credentials}}
  query: "SELECT username, email FROM users WHERE status = 'active'"
  template: |
    apiVersion: v1
    kind: ConfigMap
    metadata:
      name: user-{{ row.username | lower }}
    data:
      email: "{{ row.email }}"
  statusUpdateQueryTemplate: "UPDATE users SET synced = {{ resource.metadata.name }}"
"#)
}

fn ops_tls() -> Value {
    obj(
        "apiVersion: dbward.dev/v1alpha1\nkind: DatabaseOpsRequest\nmetadata: {name: add-tls, namespace: dbward-system}\nspec: {type: ReconfigureTLS, serviceRef: {name: shared-pg}, tls: {sslMode: require, clientAuthMode: cert, issuerRef: {name: ca, kind: Issuer, apiGroup: cert-manager.io}}}\n",
    )
}

// ---- immutables ---------------------------------------------------------------------------

#[test]
fn project_and_service_name_are_immutable() {
    let old = pool();
    allowed(&update(
        &old,
        &with(&old, "/spec/poolSize", json!(30)),
        &cluster(),
    ));
    denied(
        &update(&old, &with(&old, "/spec/project", json!("b")), &cluster()),
        r#"spec.project: Invalid value: "b": field is immutable"#,
    );
    denied(
        &update(
            &old,
            &with(&old, "/spec/serviceName", json!("private-pg")),
            &cluster(),
        ),
        "spec.serviceName: Invalid value: \"private-pg\": field is immutable",
    );
}

#[test]
fn engine_is_immutable() {
    let old = service();
    allowed(&update(
        &old,
        &with(&old, "/spec/terminationProtection", json!(true)),
        &cluster(),
    ));
    denied(
        &update(
            &old,
            &with(&old, "/spec/engine", json!("mysql")),
            &cluster(),
        ),
        "spec.engine: Invalid value: \"mysql\": field is immutable",
    );
}

#[test]
fn username_database_name_and_locales_are_immutable() {
    let old = with(&user(), "/spec/username", json!("app"));
    denied(
        &update(
            &old,
            &with(&old, "/spec/username", json!("other")),
            &cluster(),
        ),
        "spec.username: Invalid value: \"other\": field is immutable",
    );
    let old = with(&database(), "/spec/databaseName", json!("orders"));
    allowed(&update(
        &old,
        &with(&old, "/spec/terminationProtection", json!(true)),
        &cluster(),
    ));
    denied(
        &update(
            &old,
            &with(&old, "/spec/databaseName", json!("orders2")),
            &cluster(),
        ),
        "spec.databaseName: Invalid value: \"orders2\": field is immutable",
    );
    denied(
        &update(
            &old,
            &with(&old, "/spec/lcCollate", json!("en_US.UTF-8")),
            &cluster(),
        ),
        "spec.lcCollate: Invalid value",
    );
    denied(
        &update(
            &old,
            &with(&old, "/spec/lcCtype", json!("en_US.UTF-8")),
            &cluster(),
        ),
        "spec.lcCtype: Invalid value",
    );
}

#[test]
fn secret_target_name_and_disabled_are_immutable() {
    let old = with(
        &pool(),
        "/spec/connInfoSecretTarget",
        json!({"name": "pool-secret", "prefix": "P_"}),
    );
    allowed(&update(
        &old,
        &with(&old, "/spec/connInfoSecretTarget/prefix", json!("Q_")),
        &cluster(),
    ));
    denied(
        &update(
            &old,
            &with(&old, "/spec/connInfoSecretTarget/name", json!("other")),
            &cluster(),
        ),
        "spec.connInfoSecretTarget.name: Invalid value: \"other\": field is immutable",
    );
    denied(
        &update(
            &old,
            &with(&old, "/spec/connInfoSecretTargetDisabled", json!(true)),
            &cluster(),
        ),
        "spec.connInfoSecretTargetDisabled: Invalid value: true: field is immutable",
    );
}

#[test]
fn team_id_is_immutable() {
    let old = pg_cluster();
    let renamed = with(
        &with(&old, "/spec/teamId", json!("acid2")),
        "/metadata/name",
        json!("acid2-minimal"),
    );
    denied(
        &update(&old, &renamed, &cluster()),
        "spec.teamId: Invalid value: \"acid2\": field is immutable",
    );
}

#[test]
fn reconfigure_tls_is_an_admin_action() {
    // From dbward's namespace: accepted.
    allowed(&create(&ops_tls(), &cluster()));
    // From a tenant's namespace: the pooler is every tenant's, so no.
    let tenant = with(&ops_tls(), "/metadata/namespace", json!("team-a"));
    denied(
        &create(&tenant, &cluster()),
        "metadata.namespace: Forbidden: ReconfigureTLS changes the pooler every tenant of the DatabaseService shares; it is accepted only from dbward's namespace \"dbward-system\"",
    );
    // Unless the policy names the namespace; another namespace stays refused.
    let allowing = policy("{limits: {poolerTlsNamespaces: [team-a]}}");
    allowed(&create(&tenant, &allowing));
    denied(
        &create(
            &with(&ops_tls(), "/metadata/namespace", json!("team-b")),
            &allowing,
        ),
        "or one of spec.limits.poolerTlsNamespaces [\"team-a\"]",
    );
    // The rule can be made a warning like any other.
    let warned = policy("{rules: {admin-actions: Warn}}");
    let v = create(&tenant, &warned);
    allowed(&v);
    assert!(
        v.warnings.iter().any(|w| w.contains("poolerTlsNamespaces")),
        "{:?}",
        v.warnings
    );
    // RotateCredentials is a tenant's own business: its userRef has only a name, so it always
    // names a ServiceUser of the request's own namespace.
    let rotate = obj(
        "apiVersion: dbward.dev/v1alpha1\nkind: DatabaseOpsRequest\nmetadata: {name: r, namespace: team-a}\nspec: {type: RotateCredentials, userRef: {name: app}}\n",
    );
    allowed(&create(&rotate, &cluster()));
}

#[test]
fn ops_request_spec_is_immutable() {
    let old = ops_tls();
    allowed(&update(
        &old,
        &with(&old, "/metadata/labels", json!({"a": "b"})),
        &cluster(),
    ));
    denied(
        &update(
            &old,
            &with(&old, "/spec/tls/sslMode", json!("verify-full")),
            &cluster(),
        ),
        "spec: Forbidden: a DatabaseOpsRequest cannot be changed once created",
    );
}

// ---- names, patterns, lengths, enums ---------------------------------------------------------

#[test]
fn project_and_service_name_patterns() {
    allowed(&create(&pool(), &cluster()));
    denied(
        &create(&with(&pool(), "/spec/project", json!("a b")), &cluster()),
        "spec.project: Invalid value: \"a b\": must contain only",
    );
    denied(
        &create(
            &with(&pool(), "/spec/serviceName", json!("Shared_PG")),
            &cluster(),
        ),
        "spec.serviceName: Invalid value: \"Shared_PG\"",
    );
    denied(
        &create(
            &with(&pool(), "/spec/project", json!("p".repeat(64))),
            &cluster(),
        ),
        "spec.project: Too long: must have at most 63 bytes",
    );
}

#[test]
fn database_and_user_names_within_engine_limits() {
    allowed(&create(
        &with(&database(), "/spec/databaseName", json!("d".repeat(40))),
        &cluster(),
    ));
    denied(
        &create(
            &with(&database(), "/spec/databaseName", json!("d".repeat(41))),
            &cluster(),
        ),
        "spec.databaseName: Too long: must have at most 40 bytes",
    );
    denied(
        &create(
            &with(
                &database(),
                "/spec/databaseName",
                json!("x\"; DROP TABLE t; --"),
            ),
            &cluster(),
        ),
        "spec.databaseName: Invalid value",
    );
    let mysql_user = with(
        &with(&user(), "/spec/serviceName", json!("shared-mysql")),
        "/spec/privileges",
        json!([]),
    );
    allowed(&create(
        &with(&mysql_user, "/spec/username", json!("u".repeat(32))),
        &cluster(),
    ));
    denied(
        &create(
            &with(&mysql_user, "/spec/username", json!("u".repeat(33))),
            &cluster(),
        ),
        "spec.username: Too long: must have at most 32 bytes",
    );
    allowed(&create(
        &with(&user(), "/spec/username", json!("u".repeat(63))),
        &cluster(),
    ));
    denied(
        &create(
            &with(&user(), "/spec/username", json!("u".repeat(64))),
            &cluster(),
        ),
        "spec.username: Too long: must have at most 63 bytes",
    );
}

#[test]
fn pool_mode_enum_and_policy() {
    denied(
        &create(&with(&pool(), "/spec/poolMode", json!("bulk")), &cluster()),
        r#"spec.poolMode: Unsupported value: "bulk": supported values: "session", "statement", "transaction""#,
    );
    let p = policy("{limits: {allowedPoolModes: [transaction]}}");
    allowed(&create(&pool(), &p));
    denied(
        &create(&with(&pool(), "/spec/poolMode", json!("session")), &p),
        r#"spec.poolMode: Unsupported value: "session": supported values: "transaction""#,
    );
}

#[test]
fn pool_usernames_stop_where_postgresql_role_names_do() {
    allowed(&create(
        &with(&pool(), "/spec/username", json!("u".repeat(63))),
        &cluster(),
    ));
    denied(
        &create(
            &with(&pool(), "/spec/username", json!("u".repeat(64))),
            &cluster(),
        ),
        "spec.username: Too long: must have at most 63 bytes",
    );
}

#[test]
fn pool_size_bounds() {
    allowed(&create(
        &with(&pool(), "/spec/poolSize", json!(100)),
        &cluster(),
    ));
    denied(
        &create(&with(&pool(), "/spec/poolSize", json!(101)), &cluster()),
        "spec.poolSize: Invalid value: 101: must be between 1 and 100",
    );
    denied(
        &create(&with(&pool(), "/spec/poolSize", json!(0)), &cluster()),
        "spec.poolSize: Invalid value: 0",
    );
    denied(
        &create(
            &with(&pool(), "/spec/poolSize", json!(60)),
            &policy("{limits: {maxPoolSize: 50}}"),
        ),
        "must be between 1 and 50",
    );
}

#[test]
fn cluster_name_starts_with_team_id() {
    allowed(&create(&pg_cluster(), &cluster()));
    denied(
        &create(
            &with(&pg_cluster(), "/metadata/name", json!("x-db")),
            &cluster(),
        ),
        r#"metadata.name: Invalid value: "x-db": must start with teamId "acid-""#,
    );
    denied(
        &create(
            &with(&pg_cluster(), "/metadata/name", json!("acid-")),
            &cluster(),
        ),
        "must start with teamId",
    );
}

// ---- role flags ---------------------------------------------------------------------------

#[test]
fn login_and_nologin_conflict() {
    allowed(&create(
        &with(&user(), "/spec/flags", json!(["nologin", "createdb"])),
        &cluster(),
    ));
    denied(
        &create(
            &with(&user(), "/spec/flags", json!(["login", "nologin"])),
            &cluster(),
        ),
        "spec.flags: Invalid value: [\"login\",\"nologin\"]: login and nologin are mutually exclusive",
    );
    denied(
        &create(
            &with(&user(), "/spec/flags", json!(["login", "login"])),
            &cluster(),
        ),
        "spec.flags[1]: Duplicate value: \"login\"",
    );
    denied(
        &create(&with(&user(), "/spec/flags", json!(["sudo"])), &cluster()),
        "spec.flags[0]: Unsupported value: \"sudo\"",
    );
}

#[test]
fn postgres_only_flags_and_parameters_on_mysql() {
    let mysql_user = with(
        &with(&user(), "/spec/serviceName", json!("shared-mysql")),
        "/spec/privileges",
        json!([]),
    );
    allowed(&create(
        &with(&mysql_user, "/spec/flags", json!(["login", "createdb"])),
        &policy("{limits: {serverWideFlagsAllowed: true}}"),
    ));
    denied(
        &create(
            &with(&mysql_user, "/spec/flags", json!(["bypassrls"])),
            &cluster(),
        ),
        "spec.flags[0]: Unsupported value: \"bypassrls\"",
    );
    denied(
        &create(
            &with(
                &mysql_user,
                "/spec/parameters",
                json!({"statement_timeout": "1s"}),
            ),
            &cluster(),
        ),
        "spec.parameters: Forbidden: per-role settings exist only on PostgreSQL",
    );
    allowed(&create(
        &with(
            &user(),
            "/spec/parameters",
            json!({"statement_timeout": "1s"}),
        ),
        &cluster(),
    ));
}

#[test]
fn superuser_on_shared_services_only_where_policy_allows() {
    let su = with(&user(), "/spec/flags", json!(["superuser"]));
    denied(
        &create(&su, &cluster()),
        "spec.flags[0]: Forbidden: superuser is not allowed by the AdmissionPolicy (limits.superuserAllowed is false)",
    );
    allowed(&create(&su, &policy("{limits: {superuserAllowed: true}}")));
}

#[test]
fn superuser_in_own_cluster_unless_policy_forbids() {
    allowed(&create(&pg_cluster(), &cluster()));
    denied(
        &create(
            &pg_cluster(),
            &policy("{limits: {clusterSuperuserAllowed: false}}"),
        ),
        "spec.users[zalando][0]: Forbidden: superuser is not allowed",
    );
}

#[test]
fn database_owners_are_listed_users() {
    denied(
        &create(
            &with(&pg_cluster(), "/spec/databases", json!({"foo": "bob"})),
            &cluster(),
        ),
        r#"spec.databases[foo]: Invalid value: "bob": the owner must be one of spec.users: "foo_user", "zalando""#,
    );
    // With no users at all the message still reads as a sentence and says what to do.
    let mut no_users = with(&pg_cluster(), "/spec/databases", json!({"foo": "nobody"}));
    no_users["spec"]["users"] = json!({});
    denied(
        &create(&no_users, &cluster()),
        r#"spec.databases[foo]: Invalid value: "nobody": the owner must be a user of spec.users, and spec.users is empty: add the owner there"#,
    );
}

// ---- PostgresCluster -------------------------------------------------------------------------

#[test]
fn volume_grows_never_shrinks() {
    let old = pg_cluster();
    allowed(&update(
        &old,
        &with(&old, "/spec/volume/size", json!("5Gi")),
        &cluster(),
    ));
    denied(
        &update(
            &old,
            &with(&old, "/spec/volume/size", json!("1500Mi")),
            &cluster(),
        ),
        "spec.volume.size: Invalid value: \"1500Mi\": volumes may grow but never shrink; it was 2Gi",
    );
    denied(
        &create(
            &with(&pg_cluster(), "/spec/volume/size", json!("500Mi")),
            &cluster(),
        ),
        "must be at least 1Gi",
    );
    denied(
        &create(
            &with(&pg_cluster(), "/spec/volume/size", json!("big")),
            &cluster(),
        ),
        "spec.volume.size: Invalid value: \"big\"",
    );
}

#[test]
fn resources_below_minimum_warn_and_are_not_rewritten() {
    let small = with(
        &pg_cluster(),
        "/spec/resources",
        json!({"requests": {"cpu": "10m", "memory": "100Mi"}}),
    );
    let v = create(&small, &cluster());
    warned(
        &v,
        "spec.resources.requests.cpu: Invalid value: \"10m\": below the minimum 250m",
    );
    warned(&v, "spec.resources.requests.memory");
    assert!(
        v.patch.0.is_empty(),
        "the object must not be rewritten: {:?}",
        v.patch
    );
    denied(
        &create(&small, &policy("{rules: {min-resources: Enforce}}")),
        "spec.resources.requests.cpu",
    );
    assert!(
        create(&small, &policy("{rules: {min-resources: Off}}"))
            .warnings
            .is_empty()
    );
    assert!(create(&pg_cluster(), &cluster()).warnings.is_empty());
}

#[test]
fn sidecars_and_init_containers_gated_by_policy() {
    let c = with(
        &pg_cluster(),
        "/spec/sidecars",
        json!([{"name": "exporter", "image": "exporter:1"}]),
    );
    denied(
        &create(&c, &cluster()),
        "spec.sidecars: Forbidden: sidecars are disabled by the AdmissionPolicy",
    );
    allowed(&create(&c, &policy("{limits: {sidecarsEnabled: true}}")));
    let c = with(
        &pg_cluster(),
        "/spec/initContainers",
        json!([{"name": "init", "image": "busybox"}]),
    );
    denied(&create(&c, &cluster()), "spec.initContainers: Forbidden");
    allowed(&create(
        &c,
        &policy("{limits: {initContainersEnabled: true}}"),
    ));
}

#[test]
fn postgres_version_from_policy() {
    denied(
        &create(
            &with(&pg_cluster(), "/spec/postgresql/version", json!("12")),
            &cluster(),
        ),
        "spec.postgresql.version: Unsupported value: \"12\"",
    );
    allowed(&create(
        &with(&pg_cluster(), "/spec/postgresql/version", json!("12")),
        &policy("{limits: {allowedPostgresVersions: [\"12\"]}}"),
    ));
}

#[test]
fn standby_path_must_not_be_empty() {
    allowed(&create(
        &with(
            &pg_cluster(),
            "/spec/standby",
            json!({"s3_wal_path": "s3://bucket/acid"}),
        ),
        &cluster(),
    ));
    denied(
        &create(
            &with(&pg_cluster(), "/spec/standby", json!({"s3_wal_path": " "})),
            &cluster(),
        ),
        "spec.standby.s3_wal_path: Required value",
    );
}

#[test]
fn clone_timestamp_needs_zone_and_uid() {
    let ok = json!({"cluster": "acid-batman", "uid": "efd12e58-5786-11e8-b5a7-06148230260c", "timestamp": "2017-12-19T12:40:33+01:00"});
    allowed(&create(&with(&pg_cluster(), "/spec/clone", ok), &cluster()));
    allowed(&create(
        &with(
            &pg_cluster(),
            "/spec/clone",
            json!({"cluster": "acid-batman"}),
        ),
        &cluster(),
    ));
    denied(
        &create(
            &with(
                &pg_cluster(),
                "/spec/clone",
                json!({"cluster": "a", "uid": "u", "timestamp": "2017-12-19T12:40:33"}),
            ),
            &cluster(),
        ),
        "spec.clone.timestamp: Invalid value",
    );
    denied(
        &create(
            &with(
                &pg_cluster(),
                "/spec/clone",
                json!({"cluster": "a", "timestamp": "2017-12-19T12:40:33Z"}),
            ),
            &cluster(),
        ),
        "spec.clone.uid: Required value",
    );
}

// ---- DatabaseQueryResource --------------------------------------------------------------------

#[test]
fn query_is_one_read_only_statement() {
    allowed(&create(&query_resource(), &cluster()));
    denied(
        &create(
            &with(
                &query_resource(),
                "/spec/query",
                json!("SELECT 1; DELETE FROM users"),
            ),
            &cluster(),
        ),
        "spec.query: Invalid value: \"SELECT 1; DELETE FROM users\": must be exactly one statement, found 2",
    );
    denied(
        &create(
            &with(
                &query_resource(),
                "/spec/query",
                json!("UPDATE users SET a = 1"),
            ),
            &cluster(),
        ),
        "must be a read-only query",
    );
    let mysql = with(&query_resource(), "/spec/database/type", json!("mysql"));
    allowed(&create(
        &with(&mysql, "/spec/query", json!("SELECT `name` FROM t")),
        &cluster(),
    ));
}

#[test]
fn templates_compile() {
    denied(
        &create(
            &with(
                &query_resource(),
                "/spec/template",
                json!("kind: ConfigMap\nname: {{ row.name"),
            ),
            &cluster(),
        ),
        "spec.template: Invalid value",
    );
    denied(
        &create(
            &with(
                &query_resource(),
                "/spec/statusUpdateQueryTemplate",
                json!("UPDATE t SET a = {% if %}"),
            ),
            &cluster(),
        ),
        "spec.statusUpdateQueryTemplate: Invalid value",
    );
    denied(
        &create(
            &with(
                &query_resource(),
                "/spec/statusUpdateQueryTemplate",
                json!("UPDATE t SET a = '{{ resource.x }}'"),
            ),
            &cluster(),
        ),
        "`{{ resource.x }}` at line 1, column 19 is inside a string literal ('…') opened at line 1, column 18: it would be sent as text inside the literal, not as a parameter",
    );
}

#[test]
fn templates_are_one_yaml_mapping_with_tags_inside_values() {
    for (template, expected) in [
        (
            "kind: ConfigMap\n---\nkind: Secret\n",
            "must be one YAML document, found 2",
        ),
        (
            "- kind: ConfigMap\n",
            "must be a YAML mapping (one Kubernetes object), found a list",
        ),
        (
            "kind: ConfigMap\ndata:\n{% for k in row %}\n  {{ k }}: x\n{% endfor %}\n",
            "must open and close within one YAML value: the template is parsed as YAML before rendering",
        ),
    ] {
        denied(
            &create(
                &with(&query_resource(), "/spec/template", json!(template)),
                &cluster(),
            ),
            "spec.template: Invalid value",
        );
        denied(
            &create(
                &with(&query_resource(), "/spec/template", json!(template)),
                &cluster(),
            ),
            expected,
        );
    }
}

#[test]
fn status_queries_bind_values_outside_quotes() {
    let status = |sql: &str| {
        with(
            &query_resource(),
            "/spec/statusUpdateQueryTemplate",
            json!(sql),
        )
    };
    allowed(&create(
        &status(
            "UPDATE users SET synced = {{ resource.metadata.name }} WHERE note = 'it''s {done}'",
        ),
        &cluster(),
    ));
    denied(
        &create(
            &status("UPDATE users SET a = $tag$ {{ resource.x }} $tag$"),
            &cluster(),
        ),
        "is inside a dollar-quoted string ($tag$…$tag$)",
    );
    denied(
        &create(
            &status("UPDATE users SET a = 1 -- {{ resource.x }}"),
            &cluster(),
        ),
        "is inside a comment (-- …)",
    );
    denied(
        &create(&status("DROP TABLE users"), &cluster()),
        "spec.statusUpdateQueryTemplate: Invalid value: \"DROP TABLE users\": does not compile: must be one data statement",
    );
    let mysql = with(&query_resource(), "/spec/database/type", json!("mysql"));
    allowed(&create(
        &with(
            &mysql,
            "/spec/statusUpdateQueryTemplate",
            json!("UPDATE `users` SET synced = {{ resource.metadata.name }} # done"),
        ),
        &cluster(),
    ));
    denied(
        &create(
            &with(
                &mysql,
                "/spec/statusUpdateQueryTemplate",
                json!("UPDATE users SET synced = \"{{ resource.metadata.name }}\""),
            ),
            &cluster(),
        ),
        "is inside a string literal (\"…\")",
    );
}

#[test]
fn poll_interval_is_a_duration_above_the_minimum() {
    denied(
        &create(
            &with(&query_resource(), "/spec/pollInterval", json!("5s")),
            &cluster(),
        ),
        "spec.pollInterval: Invalid value: \"5s\": must be at least 10s",
    );
    denied(
        &create(
            &with(&query_resource(), "/spec/pollInterval", json!("often")),
            &cluster(),
        ),
        "must be a duration",
    );
    allowed(&create(
        &with(&query_resource(), "/spec/pollInterval", json!("5s")),
        &policy("{limits: {minPollInterval: 1s}}"),
    ));
}

#[test]
fn rendered_kinds_and_namespaces_follow_policy() {
    let deployment = with(
        &query_resource(),
        "/spec/template",
        json!("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ row.username }}\n"),
    );
    denied(
        &create(&deployment, &cluster()),
        r#"spec.template: Unsupported value: "kind: apps/Deployment""#,
    );
    allowed(&create(
        &deployment,
        &policy("{limits: {allowedQueryResourceKinds: [ConfigMap, apps/Deployment]}}"),
    ));
    let elsewhere = with(
        &query_resource(),
        "/spec/template",
        json!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  namespace: kube-system\n"),
    );
    denied(
        &create(&elsewhere, &cluster()),
        "spec.template: Forbidden: renders objects in namespace \"kube-system\"",
    );
    let secret_elsewhere = with(
        &query_resource(),
        "/spec/database/connectionSecretRef/namespace",
        json!("databases"),
    );
    denied(
        &create(&secret_elsewhere, &cluster()),
        "spec.database.connectionSecretRef.namespace: Forbidden",
    );
    allowed(&create(
        &secret_elsewhere,
        &policy("{limits: {crossNamespaceAllowed: true}}"),
    ));
}

// ---- cross-object rules -------------------------------------------------------------------

#[test]
fn service_must_exist_in_the_cluster_and_only_warns_offline() {
    let missing = with(&pool(), "/spec/serviceName", json!("nowhere"));
    denied(
        &create(&missing, &cluster()),
        r#"spec.serviceName: Not found: "nowhere""#,
    );
    warned(
        &create(&missing, &snapshot_with("", false)),
        "spec.serviceName: Not found: \"nowhere\"",
    );
}

#[test]
fn project_must_match_the_service() {
    denied(
        &create(&with(&pool(), "/spec/project", json!("other")), &cluster()),
        r#"spec.project: Invalid value: "other": must equal the project of DatabaseService "shared-pg", which is "platform""#,
    );
}

#[test]
fn namespace_must_be_allowed_by_the_service() {
    denied(
        &create(
            &with(&pool(), "/metadata/namespace", json!("team-b")),
            &cluster(),
        ),
        r#"metadata.namespace: Forbidden: namespace "team-b" may not use DatabaseService "shared-pg""#,
    );
    // selector
    let mysql_db = with(
        &with(&database(), "/spec/serviceName", json!("shared-mysql")),
        "/spec/lcCtype",
        Value::Null,
    );
    allowed(&create(&mysql_db, &cluster()));
    denied(
        &create(
            &with(&mysql_db, "/metadata/namespace", json!("team-b")),
            &cluster(),
        ),
        "metadata.namespace: Forbidden: namespace \"team-b\" may not use DatabaseService \"shared-mysql\"",
    );
    // a service without allowedNamespaces admits only dbward's namespace
    let private = with(&database(), "/spec/serviceName", json!("private-pg"));
    denied(
        &create(&private, &cluster()),
        "only dbward's namespace \"dbward-system\" may use it",
    );
    allowed(&create(
        &with(&private, "/metadata/namespace", json!("dbward-system")),
        &cluster(),
    ));
}

#[test]
fn pools_only_on_postgres() {
    let mysql_pool = with(&pool(), "/spec/serviceName", json!("shared-mysql"));
    denied(
        &create(&mysql_pool, &cluster()),
        r#"spec.serviceName: Invalid value: "shared-mysql": ConnectionPools need a postgres service"#,
    );
}

#[test]
fn mysql_databases_have_no_ctype_or_owner() {
    let mysql_db = with(&database(), "/spec/serviceName", json!("shared-mysql"));
    denied(
        &create(&mysql_db, &cluster()),
        "spec.lcCtype: Forbidden: MySQL has no LC_CTYPE",
    );
}

#[test]
fn connector_secret_exists_and_agrees_with_the_engine() {
    allowed(&create(&service(), &cluster()));
    denied(
        &create(
            &with(&service(), "/spec/connectorSecretRef/name", json!("nope")),
            &cluster(),
        ),
        "spec.connectorSecretRef.name: Not found: \"nope\"",
    );
    // the MySQL connector's blank type means mysql
    denied(
        &create(
            &with(
                &service(),
                "/spec/connectorSecretRef/name",
                json!("my-admin"),
            ),
            &cluster(),
        ),
        "the connector Secret \"my-admin\" says type \"\" (blank means mysql)",
    );
    let incomplete = snapshot_with(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: half, namespace: dbward-system, labels: {dbward.dev/connector-type: shared-database}}\ndata: {endpoint: YQ==, type: cG9zdGdyZXM=}\n",
        true,
    );
    denied(
        &create(
            &with(&service(), "/spec/connectorSecretRef/name", json!("half")),
            &incomplete,
        ),
        "the connector Secret has no key \"password\"",
    );
    denied(
        &create(
            &with(
                &service(),
                "/spec/connectorSecretRef/namespace",
                json!("default"),
            ),
            &cluster(),
        ),
        "connector Secrets must be in dbward's namespace",
    );
}

#[test]
fn ops_request_fields_fit_the_type() {
    allowed(&create(&ops_tls(), &cluster()));
    denied(
        &create(
            &with(
                &ops_tls(),
                "/spec/tls/issuerRef/apiGroup",
                json!("example.com"),
            ),
            &cluster(),
        ),
        "spec.tls.issuerRef.apiGroup: Unsupported value",
    );
    denied(
        &create(
            &with(&ops_tls(), "/spec/tls/sslMode", json!("prefer")),
            &cluster(),
        ),
        "client certificates need sslMode require",
    );
    denied(
        &create(
            &with(&ops_tls(), "/spec/tls/remove", json!(true)),
            &cluster(),
        ),
        "spec.tls.remove: Forbidden",
    );
    denied(
        &create(
            &with(&ops_tls(), "/spec/serviceRef/name", json!("shared-mysql")),
            &cluster(),
        ),
        "only postgres services have",
    );
    let rotate = obj(
        "apiVersion: dbward.dev/v1alpha1\nkind: DatabaseOpsRequest\nmetadata: {name: r, namespace: team-a}\nspec: {type: RotateCredentials, userRef: {name: app}}\n",
    );
    allowed(&create(&rotate, &cluster()));
    denied(
        &create(&with(&rotate, "/spec/userRef", Value::Null), &cluster()),
        "spec.userRef: Required value",
    );
}

// ---- DELETE, status, bookkeeping ------------------------------------------------------------

#[test]
fn termination_protection_refuses_delete() {
    let protected = with(&database(), "/spec/terminationProtection", json!(true));
    let v = admit(
        &request(Operation::Delete, None, Some(&protected)),
        &cluster(),
    );
    denied(&v, "spec.terminationProtection: Forbidden");
    allowed(&admit(
        &request(Operation::Delete, None, Some(&database())),
        &cluster(),
    ));
}

#[test]
fn status_and_bookkeeping_updates_are_never_denied() {
    // An object that breaks today's rules (written before they existed) can still get status
    // and finalizer updates.
    let old = with(&pool(), "/spec/poolSize", json!(500));
    let mut finalized = with(
        &old,
        "/metadata/finalizers",
        json!(["dbward.dev/finalizer"]),
    );
    finalized = with(&finalized, "/status", json!({"observedGeneration": 2}));
    allowed(&update(&old, &finalized, &cluster()));
    let mut status = request(Operation::Update, Some(&finalized), Some(&old));
    status.subresource = Some("status");
    allowed(&admit(&status, &cluster()));
    denied(
        &update(
            &old,
            &with(&old, "/spec/poolMode", json!("session")),
            &cluster(),
        ),
        "spec.poolSize",
    );
}

// ---- defaults -------------------------------------------------------------------------------

fn apply_patch(object: &Value, verdict: &Verdict) -> Value {
    let mut patched = object.clone();
    json_patch::patch(&mut patched, &verdict.patch).unwrap();
    patched
}

#[test]
fn defaults_fill_only_what_is_missing_and_are_idempotent() {
    let v = create(&pool(), &cluster());
    let defaulted = apply_patch(&pool(), &v);
    assert_eq!(
        defaulted["spec"]["connInfoSecretTarget"],
        json!({"name": "my-pool", "prefix": "CONNECTIONPOOL_"})
    );
    assert!(
        create(&defaulted, &cluster()).patch.0.is_empty(),
        "a second pass must give an empty patch"
    );

    let bare = with(
        &with(&pool(), "/spec/poolMode", Value::Null),
        "/spec/poolSize",
        Value::Null,
    );
    let defaulted = apply_patch(&bare, &create(&bare, &cluster()));
    assert_eq!(
        (
            defaulted["spec"]["poolMode"].clone(),
            defaulted["spec"]["poolSize"].clone()
        ),
        (json!("transaction"), json!(10))
    );

    // A value the user set is never rewritten, even one a rule rejects.
    let custom = with(
        &pool(),
        "/spec/connInfoSecretTarget",
        json!({"name": "mine", "prefix": ""}),
    );
    let v = create(&custom, &cluster());
    assert!(v.patch.0.is_empty(), "{:?}", v.patch);
    let odd = with(&custom, "/spec/poolSize", json!(1000));
    assert!(create(&odd, &cluster()).patch.0.is_empty());

    // Disabled Secrets get no target.
    let disabled = with(&pool(), "/spec/connInfoSecretTargetDisabled", json!(true));
    assert!(create(&disabled, &cluster()).patch.0.is_empty());

    for (object, pointer, expected) in [
        (
            user(),
            "/spec/connInfoSecretTarget/prefix",
            json!("SERVICEUSER_"),
        ),
        (user(), "/spec/username", json!("app")),
        (
            claim(),
            "/spec/connInfoSecretTarget/prefix",
            json!("DATABASECLAIM_"),
        ),
        (database(), "/spec/databaseName", json!("orders")),
        (database(), "/spec/deletionPolicy", json!("Retain")),
    ] {
        let v = create(&object, &cluster());
        allowed(&v);
        let defaulted = apply_patch(&object, &v);
        assert_eq!(defaulted.pointer(pointer), Some(&expected), "{pointer}");
        assert!(
            create(&defaulted, &cluster()).patch.0.is_empty(),
            "{pointer}: not idempotent"
        );
    }
}

// ---- the policy --------------------------------------------------------------------------

#[test]
fn policy_modes_enforce_warn_off() {
    let big = with(&pool(), "/spec/poolSize", json!(500));
    denied(&create(&big, &cluster()), "spec.poolSize");
    warned(
        &create(&big, &policy("{rules: {pool-size: Warn}}")),
        "spec.poolSize: Invalid value: 500",
    );
    let off = create(&big, &policy("{rules: {pool-size: Off}}"));
    allowed(&off);
    assert!(off.warnings.is_empty());
}

#[test]
fn policy_objects_are_checked() {
    let good = obj(
        "apiVersion: dbward.dev/v1alpha1\nkind: AdmissionPolicy\nmetadata: {name: default}\nspec: {rules: {pool-size: Warn}, limits: {minCpu: 100m}}\n",
    );
    allowed(&create(&good, &cluster()));
    denied(
        &create(
            &with(&good, "/spec/rules", json!({"pool-sise": "Warn"})),
            &cluster(),
        ),
        "spec.rules[pool-sise]: Unsupported value: \"pool-sise\"",
    );
    denied(
        &create(
            &with(&good, "/spec/limits/minCpu", json!("lots")),
            &cluster(),
        ),
        "spec.limits.minCpu: Invalid value",
    );
    denied(
        &create(&with(&good, "/metadata/name", json!("strict")), &cluster()),
        "dbward reads only the AdmissionPolicy named \"default\"",
    );
}

#[test]
fn every_error_is_reported_at_once() {
    let bad = with(
        &with(&pool(), "/spec/poolMode", json!("bulk")),
        "/spec/poolSize",
        json!(0),
    );
    let v = create(&bad, &cluster());
    assert_eq!(v.errors.len(), 1, "serde stops at the enum; {:?}", v.errors);
    let bad = with(
        &with(&pool(), "/spec/project", json!("a b")),
        "/spec/poolSize",
        json!(0),
    );
    let v = create(&bad, &cluster());
    assert!(v.errors.len() >= 2, "{:?}", v.errors);
    assert!(
        v.message("ConnectionPool", "my-pool")
            .starts_with("ConnectionPool.dbward.dev \"my-pool\" is invalid: [spec.project")
    );
}

#[test]
fn kinds_that_are_not_dbwards_are_allowed_untouched() {
    let cm =
        obj("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: a}\ndata: {a: b}\n");
    let v = create(&cm, &cluster());
    allowed(&v);
    assert!(v.patch.0.is_empty());
}

#[test]
fn the_webhooks_halves_agree_with_the_whole() {
    use dbward::admission::{admit_for_mutation, admit_for_validation};
    for object in [
        pool(),
        with(&pool(), "/spec/poolMode", json!("bulk")),
        with(&pool(), "/spec/project", json!("x y")),
        user(),
        pg_cluster(),
    ] {
        let request = request(Operation::Create, Some(&object), None);
        let whole = admit(&request, &cluster());
        let mutation = admit_for_mutation(&request, &cluster());
        let validation = admit_for_validation(&request, &cluster());
        assert!(
            mutation.allowed && mutation.errors.is_empty(),
            "/mutate never denies"
        );
        assert_eq!(mutation.patch, whole.patch);
        assert_eq!(
            (validation.allowed, &validation.errors, &validation.warnings),
            (whole.allowed, &whole.errors, &whole.warnings)
        );
        assert!(validation.patch.0.is_empty());
    }
}

// ---- tenant isolation ----------------------------------------------------------------------

const RESERVED_WHY: &str =
    "(the server's own roles and databases and the connector's user cannot be managed by dbward)";

fn mysql_user() -> Value {
    with(
        &with(&user(), "/spec/serviceName", json!("shared-mysql")),
        "/spec/privileges",
        json!([]),
    )
}

#[test]
fn reserved_usernames_are_refused_per_engine() {
    let named = |base: &Value, name: &str| with(base, "/spec/username", json!(name));
    denied(
        &create(&named(&user(), "postgres"), &cluster()),
        &format!(
            "spec.username: Invalid value: \"postgres\": is reserved on PostgreSQL services {RESERVED_WHY}"
        ),
    );
    for name in ["pg_monitor", "PG_signal_backend", "template0", "_dbward"] {
        denied(
            &create(&named(&user(), name), &cluster()),
            "is reserved on PostgreSQL services",
        );
    }
    // The connector's user (`admin` in the context's pg-admin Secret).
    denied(
        &create(&named(&user(), "admin"), &cluster()),
        "spec.username: Invalid value: \"admin\": is reserved on DatabaseService \"shared-pg\": its connector Secret's user",
    );
    allowed(&create(&named(&user(), "root"), &cluster()));

    for name in ["root", "mysql", "sys", "_dbward"] {
        denied(
            &create(&named(&mysql_user(), name), &cluster()),
            &format!("spec.username: Invalid value: \"{name}\": is reserved on MySQL services"),
        );
    }
    denied(
        &create(&named(&mysql_user(), "mysql.sys"), &cluster()),
        "is reserved on MySQL services",
    );
    allowed(&create(&named(&mysql_user(), "postgres"), &cluster()));

    // The engine unknown (the service is not among the inputs): both engines' names.
    let offline = snapshot_with("", false);
    let elsewhere = with(
        &named(&user(), "root"),
        "/spec/serviceName",
        json!("other-pg"),
    );
    denied(
        &create(&elsewhere, &offline),
        "is reserved on PostgreSQL and MySQL services",
    );

    // The rule can be tuned like any other.
    warned(
        &create(
            &named(&user(), "postgres"),
            &policy("{rules: {reserved-names: Warn}}"),
        ),
        "spec.username: Invalid value: \"postgres\"",
    );
}

#[test]
fn the_connector_user_is_read_from_base64_data_too() {
    let snapshot = snapshot_with(
        r#"
apiVersion: v1
kind: Secret
metadata: {name: b64-admin, namespace: dbward-system, labels: {dbward.dev/connector-type: shared-database}}
data: {endpoint: cGcuZXhhbXBsZQ==, port: NTQzMg==, user: ZGJ3YXJkX2FkbWlu, password: aHVudGVyMg==, type: cG9zdGdyZXM=}
---
apiVersion: dbward.dev/v1alpha1
kind: DatabaseService
metadata: {name: b64-pg}
spec:
  engine: postgres
  project: platform
  connectorSecretRef: {name: b64-admin, namespace: dbward-system}
  allowedNamespaces: {names: [team-a]}
"#,
        true,
    );
    let secret =
        &snapshot.connector_secrets[&("dbward-system".to_string(), "b64-admin".to_string())];
    assert_eq!(secret.user.as_deref(), Some("dbward_admin"));
    assert!(
        !format!("{snapshot:?}").contains("hunter2"),
        "the password is never kept"
    );
    let su = with(
        &with(&user(), "/spec/serviceName", json!("b64-pg")),
        "/spec/username",
        json!("dbward_admin"),
    );
    denied(
        &create(&su, &snapshot),
        "is reserved on DatabaseService \"b64-pg\": its connector Secret's user",
    );
    let pool = with(
        &with(&pool(), "/spec/serviceName", json!("b64-pg")),
        "/spec/username",
        json!("dbward_admin"),
    );
    denied(
        &create(&pool, &snapshot),
        "spec.username: Invalid value: \"dbward_admin\"",
    );
}

#[test]
fn in_roles_pg_roles_only_from_allowed_in_roles() {
    let member = |roles: Value| with(&user(), "/spec/inRoles", roles);
    denied(
        &create(&member(json!(["pg_read_server_files"])), &cluster()),
        "spec.inRoles[0]: Invalid value: \"pg_read_server_files\": is reserved on PostgreSQL services",
    );
    denied(
        &create(&member(json!(["pg_read_server_files"])), &cluster()),
        "limits.allowedInRoles",
    );
    let stats = policy("{limits: {allowedInRoles: [pg_read_all_stats, pg_read_server_files]}}");
    allowed(&create(&member(json!(["pg_read_server_files"])), &stats));
    allowed(&create(
        &member(json!(["pg_read_all_stats", "readers"])),
        &stats,
    ));
    denied(
        &create(&member(json!(["pg_write_server_files"])), &stats),
        "spec.inRoles[0]: Invalid value: \"pg_write_server_files\"",
    );
    // Never a member of the server's own roles or the connector's, whatever the policy lists.
    let listed = policy("{limits: {allowedInRoles: [postgres, admin]}}");
    denied(
        &create(&member(json!(["postgres"])), &listed),
        "spec.inRoles[0]: Invalid value: \"postgres\": is reserved on PostgreSQL services",
    );
    denied(
        &create(&member(json!(["readers", "admin"])), &listed),
        "spec.inRoles[1]: Invalid value: \"admin\": is reserved on DatabaseService \"shared-pg\"",
    );
    denied(
        &create(
            &with(&mysql_user(), "/spec/inRoles", json!(["root"])),
            &cluster(),
        ),
        "spec.inRoles[0]: Invalid value: \"root\": is reserved on MySQL services",
    );
    allowed(&create(&member(json!(["readers"])), &cluster()));
}

#[test]
fn reserved_databases_are_refused_everywhere_a_database_is_named() {
    let privileges = |base: &Value, database: &str| {
        with(
            base,
            "/spec/privileges",
            json!([{"database": database, "level": "owner"}]),
        )
    };
    denied(
        &create(&privileges(&mysql_user(), "mysql"), &cluster()),
        "spec.privileges[0].database: Invalid value: \"mysql\": is reserved on MySQL services",
    );
    for database in ["_dbward", "information_schema", "performance_schema", "sys"] {
        denied(
            &create(&privileges(&mysql_user(), database), &cluster()),
            "spec.privileges[0].database: Invalid value",
        );
    }
    for database in ["_dbward", "template1", "postgres"] {
        denied(
            &create(&privileges(&user(), database), &cluster()),
            "is reserved on PostgreSQL services",
        );
    }
    allowed(&create(&privileges(&mysql_user(), "inventory"), &cluster()));

    // Database: name and owner.
    let mysql_db = with(
        &with(&database(), "/spec/serviceName", json!("shared-mysql")),
        "/spec/lcCtype",
        Value::Null,
    );
    denied(
        &create(
            &with(&mysql_db, "/spec/databaseName", json!("_dbward")),
            &cluster(),
        ),
        "spec.databaseName: Invalid value: \"_dbward\": is reserved on MySQL services",
    );
    denied(
        &create(
            &with(&database(), "/spec/databaseName", json!("template1")),
            &cluster(),
        ),
        "spec.databaseName: Invalid value: \"template1\"",
    );
    denied(
        &create(
            &with(&database(), "/spec/owner", json!("postgres")),
            &cluster(),
        ),
        "spec.owner: Invalid value: \"postgres\": is reserved on PostgreSQL services",
    );
    denied(
        &create(
            &with(&database(), "/spec/owner", json!("admin")),
            &cluster(),
        ),
        "spec.owner: Invalid value: \"admin\": is reserved on DatabaseService \"shared-pg\"",
    );
    allowed(&create(
        &with(&database(), "/spec/owner", json!("app")),
        &cluster(),
    ));

    // ConnectionPool: database and user.
    denied(
        &create(
            &with(&pool(), "/spec/databaseName", json!("postgres")),
            &cluster(),
        ),
        "spec.databaseName: Invalid value: \"postgres\"",
    );
    denied(
        &create(&with(&pool(), "/spec/username", json!("admin")), &cluster()),
        "spec.username: Invalid value: \"admin\"",
    );

    // A team's own PostgresCluster: PostgreSQL's names, not the image's superuser.
    denied(
        &create(
            &with(&pg_cluster(), "/spec/users/postgres", json!([])),
            &cluster(),
        ),
        "spec.users[postgres]: Invalid value: \"postgres\": is reserved on PostgreSQL services",
    );
    denied(
        &create(
            &with(&pg_cluster(), "/spec/databases/template1", json!("zalando")),
            &cluster(),
        ),
        "spec.databases[template1]: Invalid value: \"template1\"",
    );
}

#[test]
fn parameters_come_from_the_allow_list() {
    let params = |p: Value| with(&user(), "/spec/parameters", p);
    let v = create(&params(json!({"log_statement": "all"})), &cluster());
    denied(
        &v,
        "spec.parameters[log_statement]: Unsupported value: \"log_statement\": supported values: \"application_name\", ",
    );
    denied(&v, "\"statement_timeout\"");
    allowed(&create(
        &params(json!({"statement_timeout": "30s", "search_path": "app, public"})),
        &cluster(),
    ));
    let loud = policy("{limits: {allowedParameters: [log_statement]}}");
    allowed(&create(&params(json!({"log_statement": "all"})), &loud));
    denied(
        &create(&params(json!({"statement_timeout": "30s"})), &loud),
        "spec.parameters[statement_timeout]: Unsupported value: \"statement_timeout\": supported values: \"log_statement\"",
    );
    warned(
        &create(
            &params(json!({"log_statement": "all"})),
            &policy("{rules: {parameters: Warn}}"),
        ),
        "spec.parameters[log_statement]: Unsupported value",
    );
    // A value that would break out of its line is refused whatever the policy says.
    for value in ["1s\nlog_statement = all", "1s\r", "1s\u{0}"] {
        denied(
            &create(
                &params(json!({"statement_timeout": value})),
                &policy("{rules: {parameters: Off}}"),
            ),
            "spec.parameters[statement_timeout]: Invalid value",
        );
    }
}

#[test]
fn server_wide_flags_only_where_policy_allows() {
    let flags = |base: &Value, f: Value| with(base, "/spec/flags", f);
    denied(
        &create(&flags(&user(), json!(["login", "createrole"])), &cluster()),
        "spec.flags[1]: Forbidden: createrole is not allowed on shared services by the AdmissionPolicy (limits.serverWideFlagsAllowed is false)",
    );
    denied(
        &create(&flags(&user(), json!(["replication"])), &cluster()),
        "spec.flags[0]: Forbidden: replication is not allowed on shared services by the AdmissionPolicy (limits.serverWideFlagsAllowed is false): it can stream every tenant's data",
    );
    denied(
        &create(&flags(&mysql_user(), json!(["createrole"])), &cluster()),
        "spec.flags[0]: Forbidden: createrole is not allowed",
    );
    denied(
        &create(&flags(&mysql_user(), json!(["createdb"])), &cluster()),
        "spec.flags[0]: Forbidden: createdb is not allowed on shared services",
    );
    // replication is PostgreSQL's alone: on MySQL one error says so, not two.
    let v = create(&flags(&mysql_user(), json!(["replication"])), &cluster());
    denied(&v, "spec.flags[0]: Unsupported value: \"replication\"");
    assert_eq!(v.errors.len(), 1, "{:?}", v.errors);
    allowed(&create(
        &flags(&user(), json!(["login", "createdb"])),
        &cluster(),
    ));
    let open = policy("{limits: {serverWideFlagsAllowed: true}}");
    allowed(&create(
        &flags(&user(), json!(["createrole", "replication"])),
        &open,
    ));
    allowed(&create(
        &flags(&mysql_user(), json!(["createrole", "createdb"])),
        &open,
    ));
    // A team's own cluster is not shared.
    allowed(&create(
        &with(
            &pg_cluster(),
            "/spec/users/repl",
            json!(["replication", "createrole"]),
        ),
        &cluster(),
    ));
}

#[test]
fn auth_secret_ref_is_refused() {
    let token = json!({"name": "aiven-token", "key": "token"});
    for object in [user(), database(), pool(), claim()] {
        denied(
            &create(
                &with(&object, "/spec/authSecretRef", token.clone()),
                &cluster(),
            ),
            "spec.authSecretRef: Forbidden: not supported: dbward administers a service only through its connector Secret",
        );
    }
    warned(
        &create(
            &with(&user(), "/spec/authSecretRef", token),
            &policy("{rules: {auth-secret-ref: Warn}}"),
        ),
        "spec.authSecretRef: Forbidden",
    );
}

const REFERENCE_SERVICE: &str = r#"
apiVersion: dbward.dev/v1alpha1
kind: DatabaseService
metadata: {name: ref-pg}
spec:
  engine: postgres
  project: platform
  connectorSecretRef: {name: pg-admin, namespace: dbward-system}
  allowedNamespaces: {names: [team-a]}
  sharedDatabases: [{name: reference}, {name: scratch, maxLevel: readWrite}]
"#;

#[test]
fn shared_databases_up_to_their_max_level() {
    let snapshot = snapshot_with(REFERENCE_SERVICE, true);
    let grant = |database: &str, level: &str| {
        with(
            &with(&user(), "/spec/serviceName", json!("ref-pg")),
            "/spec/privileges",
            json!([{"database": "orders", "level": "owner"}, {"database": database, "level": level}]),
        )
    };
    allowed(&create(&grant("reference", "readOnly"), &snapshot));
    denied(
        &create(&grant("reference", "readWrite"), &snapshot),
        "spec.privileges[1].level: Forbidden: database \"reference\" is shared by DatabaseService \"ref-pg\" up to readOnly",
    );
    allowed(&create(&grant("scratch", "readWrite"), &snapshot));
    denied(
        &create(&grant("scratch", "owner"), &snapshot),
        "spec.privileges[1].level: Forbidden: database \"scratch\" is shared by DatabaseService \"ref-pg\" up to readWrite",
    );
    warned(
        &create(
            &grant("scratch", "owner"),
            &snapshot_with(
                &format!(
                    "{REFERENCE_SERVICE}---\napiVersion: dbward.dev/v1alpha1\nkind: AdmissionPolicy\nmetadata: {{name: default}}\nspec: {{rules: {{shared-databases: Warn}}}}\n"
                ),
                true,
            ),
        ),
        "spec.privileges[1].level: Forbidden",
    );
    // No tenant's Database may take a shared one over.
    let db = with(
        &with(&database(), "/spec/serviceName", json!("ref-pg")),
        "/spec/databaseName",
        json!("reference"),
    );
    denied(
        &create(&db, &snapshot),
        "spec.databaseName: Forbidden: database \"reference\" is one of DatabaseService \"ref-pg\"'s sharedDatabases",
    );
}

#[test]
fn shared_databases_of_a_service_are_checked() {
    let shared = |list: Value| with(&service(), "/spec/sharedDatabases", list);
    allowed(&create(
        &shared(json!([{"name": "reference"}, {"name": "scratch", "maxLevel": "readWrite"}])),
        &cluster(),
    ));
    denied(
        &create(&shared(json!([{"name": "ref;drop"}])), &cluster()),
        "spec.sharedDatabases[0].name: Invalid value: \"ref;drop\"",
    );
    denied(
        &create(
            &shared(json!([{"name": "reference"}, {"name": "reference"}])),
            &cluster(),
        ),
        "spec.sharedDatabases[1].name: Duplicate value: \"reference\"",
    );
    denied(
        &create(&shared(json!([{"name": "template1"}])), &cluster()),
        "spec.sharedDatabases[0].name: Invalid value: \"template1\": is reserved on PostgreSQL services",
    );
}

#[test]
fn policy_adoptions_and_allow_lists_are_checked() {
    let good = obj(r#"
apiVersion: dbward.dev/v1alpha1
kind: AdmissionPolicy
metadata: {name: default}
spec:
  limits:
    allowedInRoles: [pg_read_all_stats, readers]
    allowedParameters: [statement_timeout, auto_explain.log_min_duration]
  adoptions:
    - {serviceName: shared-pg, namespace: team-a, role: legacy_app}
    - {serviceName: shared-pg, namespace: team-a, database: legacy}
"#);
    allowed(&create(&good, &cluster()));
    let adoption = |entry: Value| with(&good, "/spec/adoptions", json!([entry]));
    denied(
        &create(
            &adoption(
                json!({"serviceName": "shared-pg", "namespace": "team-a", "role": "a", "database": "b"}),
            ),
            &cluster(),
        ),
        "spec.adoptions[0].database: Forbidden: an adoption names exactly one of role and database",
    );
    denied(
        &create(
            &adoption(json!({"serviceName": "shared-pg", "namespace": "team-a"})),
            &cluster(),
        ),
        "spec.adoptions[0]: Required value: an adoption names exactly one of role and database",
    );
    denied(
        &create(
            &adoption(json!({"serviceName": "Shared_PG", "namespace": "team-a", "role": "a"})),
            &cluster(),
        ),
        "spec.adoptions[0].serviceName: Invalid value: \"Shared_PG\"",
    );
    denied(
        &create(
            &adoption(json!({"serviceName": "shared-pg", "namespace": "Team.A", "role": "a"})),
            &cluster(),
        ),
        "spec.adoptions[0].namespace: Invalid value: \"Team.A\"",
    );
    for role in ["postgres", "admin", "pg_monitor"] {
        denied(
            &create(
                &adoption(json!({"serviceName": "shared-pg", "namespace": "team-a", "role": role})),
                &cluster(),
            ),
            &format!("spec.adoptions[0].role: Invalid value: \"{role}\": is reserved"),
        );
    }
    denied(
        &create(
            &adoption(
                json!({"serviceName": "shared-mysql", "namespace": "team-a", "database": "mysql"}),
            ),
            &cluster(),
        ),
        "spec.adoptions[0].database: Invalid value: \"mysql\": is reserved",
    );
    denied(
        &create(
            &with(
                &good,
                "/spec/limits/allowedParameters",
                json!(["statement_timeout", "Log Statement"]),
            ),
            &cluster(),
        ),
        "spec.limits.allowedParameters[1]: Invalid value: \"Log Statement\"",
    );
    denied(
        &create(
            &with(&good, "/spec/limits/allowedInRoles", json!(["a;b"])),
            &cluster(),
        ),
        "spec.limits.allowedInRoles[0]: Invalid value: \"a;b\"",
    );
    denied(
        &create(
            &with(
                &good,
                "/spec/limits/allowedInRoles",
                json!(["readers", "root"]),
            ),
            &cluster(),
        ),
        "spec.limits.allowedInRoles[1]: Invalid value: \"root\": is a reserved role",
    );
}

#[test]
fn every_rule_is_documented_in_the_readme() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for rule in dbward::admission::policy::rule_names() {
        assert!(
            readme.contains(&format!("`{rule}`")),
            "README lacks rule {rule}"
        );
    }
}

#[test]
fn reserved_name_helper_for_the_reconcilers() {
    use dbward::admission::{reserved_for_service, reserved_name};
    use dbward::api::Engine;
    assert!(reserved_name(Engine::Postgres, "pg_read_all_data"));
    assert!(reserved_name(Engine::Mysql, "mariadb.sys"));
    assert!(reserved_name(Engine::Mysql, "_dbward") && reserved_name(Engine::Postgres, "_dbward"));
    assert!(!reserved_name(Engine::Mysql, "orders"));
    assert!(reserved_for_service(
        Engine::Mysql,
        Some("dbward"),
        "DBWARD"
    ));
}
