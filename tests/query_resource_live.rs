//! DatabaseQueryResource on a real API server (`KUBECONFIG`) with the real PostgreSQL
//! (127.0.0.1:5432) and MariaDB (127.0.0.1:3306): konnektr's example adapted to Jinja (a
//! ConfigMap per user row, a status write-back), driven one poll at a time
//! ([`poll_and_record`]), so every step is checked on what the API server then holds.
//!
//! `scripts/test` runs it after the end-to-end suite, on the same control plane, when no dbward
//! controller runs there (a running one would poll these objects too); it installs dbward's
//! CRDs itself. Without `KUBECONFIG` it fails (`DBWARD_E2E=0` skips it, as the e2e suite).

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;

use dbward::api::database_query_resource::{DatabaseQueryResourceStatus, FINALIZER};
use dbward::api::{AdmissionPolicySpec, DatabaseQueryResource};
use dbward::reconcile::controller::State;
use dbward::reconcile::controller::query_resource::{
    QueryState, poll_and_record, reconcile_query_resource,
};
use dbward::reconcile::query_resource::UID_LABEL;
use dbward::reconcile::query_resource::kube::Discovery;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

/// A value a row may carry that must stay inside its field.
const HOSTILE: &str = "x'; DROP TABLE t;--\n\"q\" \\back\\slash\nkind: ClusterRole\nnamespace: kube-system\n{{ 7*7 }}";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Engine {
    Postgres,
    Mysql,
}

/// SQL on the test's database, as the server's administrator; stdout trimmed.
fn sql(engine: Engine, database: &str, statement: &str) -> String {
    let out = match engine {
        Engine::Postgres => Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", database])
            .args(["-v", "ON_ERROR_STOP=1", "-tAc", statement])
            .output(),
        Engine::Mysql => Command::new("mariadb")
            .args([
                "-h",
                "127.0.0.1",
                "-u",
                "root",
                "-N",
                "-B",
                database,
                "-e",
                statement,
            ])
            .output(),
    }
    .expect("the database client runs");
    assert!(
        out.status.success(),
        "{statement}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

struct Live {
    client: Client,
    qs: Arc<QueryState>,
    ns: String,
    engine: Engine,
    database: String,
    table: String,
    policy: AdmissionPolicySpec,
}

async fn client() -> Client {
    if std::env::var_os("KUBECONFIG").is_none() {
        panic!(
            "KUBECONFIG does not name a cluster; this suite needs the API server scripts/test starts (DBWARD_E2E=0 skips it)"
        );
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::try_default()
        .await
        .expect("a client for KUBECONFIG")
}

/// dbward's CRDs, applied and established.
async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in dbward::crds::all() {
        let name = crd.name_any();
        // Create or replace, not server-side apply: 1.20's typed schema of a CRD does not
        // know x-kubernetes-validations (a POST or PUT just drops it). The tests of this
        // binary run in parallel processes: a conflict means another one wrote it; again.
        for attempt in 0.. {
            let written = match crds.get_opt(&name).await.unwrap() {
                Some(stored) => {
                    let mut crd = crd.clone();
                    crd.metadata.resource_version = stored.resource_version();
                    crds.replace(&name, &PostParams::default(), &crd).await
                }
                None => crds.create(&PostParams::default(), &crd).await,
            };
            match written {
                Ok(_) => break,
                Err(kube::Error::Api(status)) if status.code == 409 && attempt < 10 => continue,
                Err(e) => panic!("CRD {name}: {e}"),
            }
        }
        for _ in 0..100 {
            let stored = crds.get(&name).await.unwrap();
            let established = stored
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

impl Live {
    async fn new(engine: Engine) -> Live {
        let client = client().await;
        install_crds(&client).await;
        let id = common::unique().trim_end_matches('_').to_owned();
        let ns = format!("dqr-{id}");
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
            )
            .await
            .unwrap();
        let (database, table) = match engine {
            Engine::Postgres => ("postgres".to_owned(), format!("dqr_users_{id}")),
            Engine::Mysql => {
                let db = format!("dqr_{id}");
                sql(engine, "mysql", &format!("CREATE DATABASE {db}"));
                (db, "users".to_owned())
            }
        };
        sql(
            engine,
            &database,
            &format!(
                "CREATE TABLE {table} (user_id INT PRIMARY KEY, username VARCHAR(100), email TEXT, \
                 status VARCHAR(20), tier VARCHAR(40), synced_config TEXT, echoed TEXT)"
            ),
        );
        let (port, user) = match engine {
            Engine::Postgres => ("5432", "postgres"),
            Engine::Mysql => ("3306", "root"),
        };
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "db-credentials", "namespace": ns},
            "stringData": {"host": "127.0.0.1", "port": port, "username": user, "password": "",
                           "dbname": database, "sslmode": "disable"}
        });
        Api::<Secret>::namespaced(client.clone(), &ns)
            .create(
                &PostParams::default(),
                &serde_json::from_value(secret).unwrap(),
            )
            .await
            .unwrap();
        let state = Arc::new(State::new(client.clone(), "dbward-system", false));
        let qs = Arc::new(QueryState {
            state,
            discovery: Discovery::default(),
        });
        Live {
            client,
            qs,
            ns,
            engine,
            database,
            table,
            policy: AdmissionPolicySpec::default(),
        }
    }

    fn sql(&self, statement: &str) -> String {
        sql(self.engine, &self.database, statement)
    }

    fn insert(&self, id: i64, username: &str, email: &str, status: &str) {
        let quote = |s: &str| match self.engine {
            Engine::Postgres => format!("'{}'", s.replace('\'', "''")),
            Engine::Mysql => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''")),
        };
        self.sql(&format!(
            "INSERT INTO {} (user_id, username, email, status, tier) VALUES ({id}, {}, {}, {}, 'gold')",
            self.table,
            quote(username),
            quote(email),
            quote(status)
        ));
    }

    fn manifest(&self, name: &str, template: &str, extra: Value) -> Value {
        let mut object = json!({
            "apiVersion": "dbward.dev/v1alpha1", "kind": "DatabaseQueryResource",
            "metadata": {"name": name, "namespace": self.ns, "finalizers": [FINALIZER]},
            "spec": {
                "pollInterval": "1m",
                "database": {"type": if self.engine == Engine::Postgres { "postgres" } else { "mysql" },
                             "connectionSecretRef": {"name": "db-credentials"}},
                "query": format!("SELECT user_id, username, email, status, tier FROM {} ORDER BY user_id", self.table),
                "template": template,
                "statusUpdateQueryTemplate": format!(
                    "UPDATE {} SET synced_config = {{{{ resource.metadata.name }}}}, echoed = {{{{ resource.data.email }}}} WHERE user_id = {{{{ resource.metadata.labels.user_id }}}}",
                    self.table),
            }
        });
        for (k, v) in extra.as_object().into_iter().flatten() {
            object["spec"][k] = v.clone();
        }
        object
    }

    async fn create(&self, manifest: Value) -> DatabaseQueryResource {
        self.api()
            .create(
                &PostParams::default(),
                &serde_json::from_value(manifest).unwrap(),
            )
            .await
            .unwrap()
    }

    fn api(&self) -> Api<DatabaseQueryResource> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// One poll of `name` as it is stored now.
    async fn poll(&self, name: &str) -> DatabaseQueryResourceStatus {
        let cr = self.api().get(name).await.unwrap();
        poll_and_record(&self.qs, &cr, &self.policy).await.unwrap()
    }

    /// The children: name → (resourceVersion, data).
    async fn children(&self) -> BTreeMap<String, (String, BTreeMap<String, String>)> {
        let maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.ns);
        maps.list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|m| m.labels().contains_key(UID_LABEL))
            .map(|m| {
                (
                    m.name_any(),
                    (
                        m.resource_version().unwrap_or_default(),
                        m.data.clone().unwrap_or_default(),
                    ),
                )
            })
            .collect()
    }

    async fn cleanup(&self) {
        // No controller runs here to honour the finalizer.
        for cr in self.api().list(&Default::default()).await.unwrap().items {
            let patch = json!({"metadata": {"finalizers": null}});
            let _ = self
                .api()
                .patch(
                    &cr.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await;
        }
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let _ = namespaces.delete(&self.ns, &DeleteParams::default()).await;
        match self.engine {
            Engine::Postgres => {
                self.sql(&format!("DROP TABLE IF EXISTS {}", self.table));
            }
            Engine::Mysql => {
                sql(
                    self.engine,
                    "mysql",
                    &format!("DROP DATABASE IF EXISTS {}", self.database),
                );
            }
        }
    }
}

/// konnektr's template, in Jinja: one ConfigMap per user.
const TEMPLATE: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: user-{{ row.username | lower }}-config
  labels:
    user_id: \"{{ row.user_id }}\"
    tier: \"{{ row.tier }}\"
data:
  email: \"{{ row.email }}\"
  status: \"{{ row.status }}\"
";

fn summary(s: &DatabaseQueryResourceStatus) -> (u32, u32, u32, u32, u32) {
    (s.rows, s.applied, s.unchanged, s.failed, s.pruned)
}

async fn rows_become_config_maps(live: &Live) {
    live.insert(1, "Alice", "alice@example.com", "active");
    live.insert(2, "bob", HOSTILE, "active");
    live.create(live.manifest("users", TEMPLATE, json!({})))
        .await;

    // Rows → ConfigMaps, values verbatim inside their fields, written back by the status query.
    let status = live.poll("users").await;
    assert_eq!(summary(&status), (2, 2, 0, 0, 0), "{status:?}");
    assert_eq!(status.conditions[0].status, "True", "{status:?}");
    let first = live.children().await;
    assert_eq!(
        first.keys().collect::<Vec<_>>(),
        ["user-alice-config", "user-bob-config"]
    );
    assert_eq!(first["user-bob-config"].1["email"], HOSTILE);
    let bob: ConfigMap = Api::namespaced(live.client.clone(), &live.ns)
        .get("user-bob-config")
        .await
        .unwrap();
    assert_eq!(bob.metadata.namespace.as_deref(), Some(live.ns.as_str()));
    assert_eq!(bob.metadata.owner_references.unwrap()[0].name, "users");
    let table = &live.table;
    assert_eq!(
        live.sql(&format!(
            "SELECT synced_config FROM {table} WHERE user_id = 2"
        )),
        "user-bob-config"
    );
    // The hostile value comes back exactly (psql/mariadb print the newline and backslashes
    // their own way, so it is compared on the server).
    let same = match live.engine {
        Engine::Postgres => format!("SELECT echoed = email FROM {table} WHERE user_id = 2"),
        Engine::Mysql => format!(
            "SELECT echoed = email AND email LIKE '%DROP TABLE%' FROM {table} WHERE user_id = 2"
        ),
    };
    assert!(matches!(live.sql(&same).as_str(), "t" | "1"));
    assert!(
        live.sql(&format!("SELECT count(*) FROM {table}")) == "2",
        "the table is intact"
    );

    // Nothing changed: nothing is written.
    let status = live.poll("users").await;
    assert_eq!(summary(&status), (2, 0, 2, 0, 0), "{status:?}");
    assert_eq!(live.children().await, first, "resourceVersions unchanged");

    // A row added: created; the others untouched.
    live.insert(3, "carol", "carol@example.com", "active");
    let status = live.poll("users").await;
    assert_eq!(summary(&status), (3, 1, 2, 0, 0), "{status:?}");
    let added = live.children().await;
    assert_eq!(added["user-alice-config"], first["user-alice-config"]);
    assert_eq!(added["user-bob-config"], first["user-bob-config"]);

    // A row changed: exactly that object is patched.
    live.sql(&format!(
        "UPDATE {table} SET status = 'suspended' WHERE user_id = 3"
    ));
    let status = live.poll("users").await;
    assert_eq!(summary(&status), (3, 1, 2, 0, 0), "{status:?}");
    let changed = live.children().await;
    assert_eq!(changed["user-carol-config"].1["status"], "suspended");
    assert_ne!(changed["user-carol-config"].0, added["user-carol-config"].0);
    assert_eq!(changed["user-alice-config"], first["user-alice-config"]);

    // A row removed: pruned.
    live.sql(&format!("DELETE FROM {table} WHERE user_id = 3"));
    let status = live.poll("users").await;
    assert_eq!(summary(&status), (2, 0, 2, 0, 1), "{status:?}");
    assert!(!live.children().await.contains_key("user-carol-config"));

    // A row the API server refuses (a label value it cannot hold): that row fails, its object
    // stays as it was, the others are untouched.
    live.sql(&format!(
        "UPDATE {table} SET tier = 'not a label!', status = 'x' WHERE user_id = 1"
    ));
    let status = live.poll("users").await;
    assert_eq!(summary(&status), (2, 0, 1, 1, 0), "{status:?}");
    assert_eq!(status.conditions[0].reason, "RowsFailed");
    assert_eq!(status.failed_rows[0].phase, "Apply", "{status:?}");
    assert_eq!(
        status.failed_rows[0].key.as_deref(),
        Some(format!("{}/user-alice-config", live.ns).as_str())
    );
    assert_eq!(live.children().await, first_without_carol(&first));
    live.sql(&format!(
        "UPDATE {table} SET tier = 'gold', status = 'active' WHERE user_id = 1"
    ));

    // An empty result deletes nothing.
    live.sql(&format!("DELETE FROM {table}"));
    let status = live.poll("users").await;
    assert_eq!(summary(&status), (0, 0, 0, 0, 0), "{status:?}");
    assert!(
        status
            .prune_held
            .as_deref()
            .unwrap()
            .contains("allowEmptyPrune")
    );
    assert_eq!(live.children().await.len(), 2);
}

fn first_without_carol(
    first: &BTreeMap<String, (String, BTreeMap<String, String>)>,
) -> BTreeMap<String, (String, BTreeMap<String, String>)> {
    first
        .iter()
        .filter(|(k, _)| *k != "user-carol-config")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// prune off keeps children; a name held by another object is a conflict, never adopted; a
/// kind or namespace rendered from a row is refused at render; deleting the CR deletes its
/// children.
async fn prune_conflicts_rules_and_deletion(live: &Live) {
    let table = &live.table;
    live.insert(1, "dave", "d@example.com", "active");
    live.insert(2, "erin", "e@example.com", "active");
    let foreign = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "user-erin-config", "namespace": live.ns},
        "data": {"owner": "someone else"}});
    let maps: Api<ConfigMap> = Api::namespaced(live.client.clone(), &live.ns);
    maps.create(
        &PostParams::default(),
        &serde_json::from_value(foreign).unwrap(),
    )
    .await
    .unwrap();
    live.create(live.manifest("keep", TEMPLATE, json!({"prune": false})))
        .await;
    let status = live.poll("keep").await;
    assert_eq!(summary(&status), (2, 1, 0, 1, 0), "{status:?}");
    assert_eq!(status.failed_rows[0].phase, "Conflict");
    let erin = maps.get("user-erin-config").await.unwrap();
    assert_eq!(
        erin.data.as_ref().unwrap()["owner"],
        "someone else",
        "never adopted"
    );
    assert!(!erin.labels().contains_key(UID_LABEL));
    live.sql(&format!("DELETE FROM {table} WHERE user_id = 1"));
    let status = live.poll("keep").await;
    assert_eq!(status.pruned, 0);
    assert!(
        maps.get_opt("user-dave-config").await.unwrap().is_some(),
        "prune off keeps it"
    );

    // Kind and namespace from a row: refused at render, whatever the value.
    let sneaky = "apiVersion: rbac.authorization.k8s.io/v1\nkind: \"{{ row.status }}\"\nmetadata:\n  name: \"r-{{ row.user_id }}\"\n  namespace: \"{{ row.tier }}\"\n";
    live.sql(&format!(
        "UPDATE {table} SET status = 'ClusterRole', tier = 'kube-system'"
    ));
    live.create(live.manifest("sneaky", sneaky, json!({})))
        .await;
    let status = live.poll("sneaky").await;
    assert_eq!(status.failed, 1, "{status:?}");
    assert_eq!(status.failed_rows[0].phase, "Rules", "{status:?}");
    assert_eq!(status.applied, 0);

    // A kind the policy does not allow, stored without the webhook: refused by the re-check.
    let secret_kind = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: \"s-{{ row.user_id }}\"\n";
    live.create(live.manifest("secrets", secret_kind, json!({})))
        .await;
    let status = live.poll("secrets").await;
    assert_eq!(status.conditions[0].reason, "Denied", "{status:?}");
    assert!(
        status.conditions[0].message.contains("Secret"),
        "{status:?}"
    );

    // Deleting the CR deletes its children first (the finalizer), then the CR is gone.
    live.api()
        .delete("keep", &DeleteParams::default())
        .await
        .unwrap();
    let deleting = live.api().get("keep").await.unwrap();
    reconcile_query_resource(Arc::new(deleting), live.qs.clone())
        .await
        .unwrap();
    assert!(maps.get_opt("user-dave-config").await.unwrap().is_none());
    assert!(
        maps.get_opt("user-erin-config").await.unwrap().is_some(),
        "not its child"
    );
    assert!(live.api().get_opt("keep").await.unwrap().is_none());
}

async fn scenario(engine: Engine, steps: impl AsyncFnOnce(&Live)) {
    if std::env::var("DBWARD_E2E").as_deref() == Ok("0") {
        eprintln!("skipped: DBWARD_E2E=0");
        return;
    }
    let live = Live::new(engine).await;
    let result = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(steps(&live))).await;
    live.cleanup().await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rows_become_config_maps() {
    scenario(Engine::Postgres, rows_become_config_maps).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_rows_become_config_maps() {
    scenario(Engine::Mysql, rows_become_config_maps).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_prune_conflicts_rules_and_deletion() {
    scenario(Engine::Postgres, prune_conflicts_rules_and_deletion).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_prune_conflicts_rules_and_deletion() {
    scenario(Engine::Mysql, prune_conflicts_rules_and_deletion).await;
}
