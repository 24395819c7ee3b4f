//! DatabaseOpsRequest `RotateCredentials` through the controller's transitions
//! (`controller::advance`, one status write each) against the in-memory Kubernetes API and the
//! real PostgreSQL and MariaDB: the Secret and the server agree after every transition, the old
//! password stops working and the new one works, a finished request is not run again, a
//! restarted dbward resumes at its step, a second request waits for the first.

mod common;
mod fake_api;

use std::sync::Arc;

use dbward::api::{DatabaseOpsRequest, ServiceUser};
use dbward::reconcile::controller::{Advanced, State, advance, reconcile, reconcile_ops_request};
use dbward::reconcile::ops_request::staging_name;
use dbward::reconcile::secret::decoded_data;
use dbward::sql::{Engine, Password, PasswordState, Server, SqlAction};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use serde_json::{Value, json};

use fake_api::client;

const NS: &str = "dbward-system";
const TEAM: &str = "team";

fn base64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn objects(engine: Engine, username: &str) -> Vec<Value> {
    let (port, user, type_, engine_name) = match engine {
        Engine::Postgres => ("5432", "postgres", "postgres", "postgres"),
        Engine::Mysql => ("3306", "root", "mysql", "mysql"),
    };
    vec![
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "admin", "namespace": NS,
                         "labels": {"dbward.dev/connector-type": "shared-database"}},
            "data": {"endpoint": base64("127.0.0.1"), "port": base64(port),
                     "user": base64(user), "password": "", "type": base64(type_)}
        }),
        json!({
            "apiVersion": "dbward.dev/v1alpha1", "kind": "DatabaseService",
            "metadata": {"name": "svc"},
            "spec": {"engine": engine_name, "project": "proj",
                     "connectorSecretRef": {"name": "admin"},
                     "allowedNamespaces": {"names": ["*"]}}
        }),
        json!({
            "apiVersion": "dbward.dev/v1alpha1", "kind": "ServiceUser",
            "metadata": {"name": "app", "namespace": TEAM, "uid": "user-uid"},
            "spec": {"project": "proj", "serviceName": "svc", "username": username,
                     "connInfoSecretTarget": {"name": "app-creds"}}
        }),
    ]
}

fn rotation(name: &str, created: &str) -> Value {
    json!({
        "apiVersion": "dbward.dev/v1alpha1", "kind": "DatabaseOpsRequest",
        "metadata": {"name": name, "namespace": TEAM, "uid": format!("{name}-uid"),
                     "generation": 1, "creationTimestamp": created},
        "spec": {"type": "RotateCredentials", "userRef": {"name": "app"}, "apply": "IfReady"}
    })
}

fn server(engine: Engine) -> Server {
    match engine {
        Engine::Postgres => common::pg(),
        Engine::Mysql => common::my(),
    }
}

struct Fixture {
    client: kube::Client,
    state: Arc<State>,
    requests: Api<DatabaseOpsRequest>,
    secrets: Api<Secret>,
    users: Api<ServiceUser>,
    server: Server,
    username: String,
    engine: Engine,
}

impl Fixture {
    async fn new(engine: Engine, requests: Vec<Value>) -> Fixture {
        let username = format!("{}rot", common::unique());
        let mut all = objects(engine, &username);
        all.extend(requests);
        let client = client(all).await;
        Fixture {
            client: client.clone(),
            state: Arc::new(State::new(client.clone(), NS, false)),
            requests: Api::namespaced(client.clone(), TEAM),
            secrets: Api::namespaced(client.clone(), TEAM),
            users: Api::namespaced(client, TEAM),
            server: server(engine),
            username,
            engine,
        }
    }

    /// The ServiceUser reconciled once, as its controller does.
    async fn reconcile_user(&self) {
        let user = self.users.get("app").await.unwrap();
        reconcile(Arc::new(user), self.state.clone()).await.unwrap();
    }

    async fn secret_password(&self) -> String {
        let secret = self.secrets.get("app-creds").await.unwrap();
        decoded_data(&secret)["SERVICEUSER_PASSWORD"].clone()
    }

    async fn server_state(&self, password: &str) -> PasswordState {
        self.server
            .observe_role(&self.username, Some(password))
            .await
            .unwrap()
            .expect("role")
            .password
    }

    /// Whether the engine lets `password` log in (MariaDB checks passwords on the loopback;
    /// the local PostgreSQL trusts it, so there the stored SCRAM verifier is what is checked).
    async fn accepts(&self, password: &str) -> bool {
        match self.engine {
            Engine::Postgres => self.server_state(password).await == PasswordState::Matches,
            Engine::Mysql => {
                let opts = mysql_async::OptsBuilder::default()
                    .ip_or_hostname("127.0.0.1")
                    .tcp_port(3306)
                    .user(Some(self.username.clone()))
                    .pass(Some(password.to_owned()))
                    .prefer_socket(false);
                match mysql_async::Conn::new(opts).await {
                    Ok(conn) => {
                        let _ = conn.disconnect().await;
                        true
                    }
                    Err(_) => false,
                }
            }
        }
    }

    /// The invariant: the password the Secret holds is the one the server accepts.
    async fn assert_agree(&self, at: &str) {
        let password = self.secret_password().await;
        assert_eq!(
            self.server_state(&password).await,
            PasswordState::Matches,
            "at {at}: the Secret holds a password the server does not have"
        );
    }

    /// Advances `name` transition by transition until it stops, checking the invariant after
    /// each; returns the condition types recorded along the way.
    async fn step_through(&self, name: &str) -> Vec<String> {
        let mut request = self.requests.get(name).await.unwrap();
        let mut seen = Vec::new();
        for _ in 0..10 {
            let before = request.status.clone();
            let stop = match advance(&self.state, &request).await.unwrap() {
                Advanced::Next(updated) => {
                    request = *updated;
                    false
                }
                Advanced::Stop(_) => {
                    request = self.requests.get(name).await.unwrap();
                    true
                }
            };
            if request.status != before {
                let latest = request.status.as_ref().unwrap().conditions.last().unwrap();
                seen.push(latest.type_.clone());
                self.assert_agree(&latest.type_).await;
            }
            if stop {
                break;
            }
        }
        seen
    }

    async fn request(&self, name: &str) -> DatabaseOpsRequest {
        self.requests.get(name).await.unwrap()
    }

    /// `name` ended `Failed`, its condition `step` `False` with `reason`.
    async fn assert_failed(&self, name: &str, step: &str, reason: &str) {
        let failed = self.request(name).await;
        assert_eq!(
            failed.status.as_ref().unwrap().phase.as_deref(),
            Some("Failed")
        );
        assert!(
            conditions(&failed).contains(&(step.into(), "False".into(), reason.into())),
            "{:?}",
            conditions(&failed)
        );
    }

    async fn drop_role(&self) {
        self.server
            .apply(&[SqlAction::DropRole {
                name: self.username.clone(),
            }])
            .await
            .unwrap();
    }
}

fn conditions(request: &DatabaseOpsRequest) -> Vec<(String, String, String)> {
    request
        .status
        .iter()
        .flat_map(|s| &s.conditions)
        .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
        .collect()
}

async fn rotate_credentials(engine: Engine) {
    let f = Fixture::new(engine, vec![rotation("rot", "2026-01-01T00:00:00Z")]).await;

    // IfReady: the ServiceUser has not been reconciled, so the request waits.
    assert!(matches!(
        advance(&f.state, &f.request("rot").await).await.unwrap(),
        Advanced::Stop(_)
    ));
    let pending = f.request("rot").await;
    assert_eq!(
        pending.status.as_ref().unwrap().phase.as_deref(),
        Some("Pending")
    );
    assert_eq!(
        conditions(&pending),
        vec![("Pending".into(), "True".into(), "TargetNotReady".into())]
    );

    f.reconcile_user().await;
    let old = f.secret_password().await;
    assert!(f.accepts(&old).await);

    let steps = f.step_through("rot").await;
    assert_eq!(
        steps,
        [
            "RotateCredentials",
            "CredentialsGenerated",
            "CredentialsRotated",
            "Successful"
        ]
    );
    let done = f.request("rot").await;
    let status = done.status.clone().unwrap();
    assert_eq!(status.phase.as_deref(), Some("Successful"));
    assert!(status.observed_generation.is_some());
    assert_eq!(status.observed_generation, done.metadata.generation);
    assert_eq!(
        conditions(&done),
        vec![
            ("Pending".into(), "False".into(), "Started".into()),
            (
                "RotateCredentials".into(),
                "True".into(),
                "RotateCredentials".into()
            ),
            (
                "CredentialsGenerated".into(),
                "True".into(),
                "CredentialsGenerated".into()
            ),
            (
                "CredentialsRotated".into(),
                "True".into(),
                "CredentialsRotated".into()
            ),
            ("Successful".into(), "True".into(), "Successful".into()),
        ]
    );
    let new = f.secret_password().await;
    assert_ne!(new, old);
    assert_eq!(new.len(), 40);
    assert!(f.accepts(&new).await, "the new password works");
    assert!(!f.accepts(&old).await, "the old password stops working");
    let secret = f.secrets.get("app-creds").await.unwrap();
    let uri = &decoded_data(&secret)["SERVICEUSER_DATABASE_URI"];
    assert!(uri.contains(&new) && !uri.contains(&old));
    assert!(
        f.secrets
            .get_opt(&staging_name("app"))
            .await
            .unwrap()
            .is_none(),
        "the staging Secret is gone"
    );
    let status_text = serde_json::to_string(&status).unwrap();
    assert!(!status_text.contains(&new) && !status_text.contains(&old));

    // The ServiceUser's own reconcile keeps the new password.
    let writes = f.state.ctx.sql_writes();
    f.reconcile_user().await;
    assert_eq!(f.state.ctx.sql_writes(), writes);
    assert_eq!(f.secret_password().await, new);

    // A finished request is never run again, by a restarted dbward either.
    let restarted = Arc::new(State::new(f.client.clone(), NS, false));
    reconcile_ops_request(Arc::new(done.clone()), restarted)
        .await
        .unwrap();
    assert_eq!(f.secret_password().await, new);
    assert_eq!(f.request("rot").await.status, done.status);
    f.drop_role().await;
}

#[tokio::test]
async fn postgres_rotate_credentials() {
    rotate_credentials(Engine::Postgres).await;
}

#[tokio::test]
async fn mysql_rotate_credentials() {
    rotate_credentials(Engine::Mysql).await;
}

/// dbward stops between the two writes of the rotation (the server has the new password, the
/// Secret the old): the ServiceUser reconciler must not set the old one back, and a restarted
/// dbward finishes with the staged password.
#[tokio::test]
async fn restart_between_the_writes_resumes_with_the_staged_password() {
    let f = Fixture::new(
        Engine::Postgres,
        vec![rotation("rot", "2026-01-01T00:00:00Z")],
    )
    .await;
    f.reconcile_user().await;
    let old = f.secret_password().await;

    // Start and stage, then stop.
    let mut request = f.request("rot").await;
    for _ in 0..2 {
        let Advanced::Next(updated) = advance(&f.state, &request).await.unwrap() else {
            panic!("expected a transition");
        };
        request = *updated;
    }
    let staged = f.secrets.get(&staging_name("app")).await.unwrap();
    let staged = decoded_data(&staged)["PASSWORD"].clone();
    assert_eq!(
        f.secret_password().await,
        old,
        "staging leaves the Secret alone"
    );
    f.assert_agree("staged").await;

    // The server write happened, then dbward died.
    f.server
        .apply(&[SqlAction::SetPassword {
            name: f.username.clone(),
            password: Password::new(staged.clone()),
        }])
        .await
        .unwrap();
    // The ServiceUser reconciler leaves the staged password on the server.
    f.reconcile_user().await;
    assert_eq!(f.server_state(&staged).await, PasswordState::Matches);

    // A restarted dbward resumes at CredentialsRotated with the same password.
    let restarted = Arc::new(State::new(f.client.clone(), NS, false));
    reconcile_ops_request(Arc::new(f.request("rot").await), restarted)
        .await
        .unwrap();
    let done = f.request("rot").await;
    assert_eq!(
        done.status.as_ref().unwrap().phase.as_deref(),
        Some("Successful")
    );
    assert_eq!(f.secret_password().await, staged);
    f.assert_agree("done").await;
    let generated = done
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .filter(|c| c.type_ == "CredentialsGenerated")
        .count();
    assert_eq!(generated, 1, "completed steps are not repeated");
    f.drop_role().await;
}

/// Two requests on one user: the younger waits `Pending` until the older has finished.
#[tokio::test]
async fn a_second_request_waits_for_the_first() {
    let f = Fixture::new(
        Engine::Postgres,
        vec![
            rotation("first", "2026-01-01T00:00:00Z"),
            rotation("second", "2026-01-01T00:00:05Z"),
        ],
    )
    .await;
    f.reconcile_user().await;

    advance(&f.state, &f.request("second").await).await.unwrap();
    let second = f.request("second").await;
    assert_eq!(
        conditions(&second),
        vec![(
            "Pending".into(),
            "True".into(),
            "WaitingForOtherRequest".into()
        )]
    );
    assert!(
        second.status.as_ref().unwrap().conditions[0]
            .message
            .contains("\"first\"")
    );

    f.step_through("first").await;
    let after_first = f.secret_password().await;
    assert_eq!(
        f.request("first").await.status.unwrap().phase.as_deref(),
        Some("Successful")
    );
    let steps = f.step_through("second").await;
    assert_eq!(steps.last().map(String::as_str), Some("Successful"));
    assert_ne!(f.secret_password().await, after_first);
    f.assert_agree("second done").await;
    f.drop_role().await;
}

/// A request for a ServiceUser whose password is its own (`passwordSecretRef`) fails with a
/// reason and leaves the password alone.
#[tokio::test]
async fn a_user_with_its_own_password_is_not_rotated() {
    let f = Fixture::new(
        Engine::Postgres,
        vec![
            json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "own", "namespace": TEAM},
                "data": {"pw": base64("my-own-password")}
            }),
            rotation("rot", "2026-01-01T00:00:00Z"),
        ],
    )
    .await;
    let mut user = f.users.get("app").await.unwrap();
    user.spec.password_secret_ref =
        Some(serde_json::from_value(json!({"name": "own", "key": "pw"})).unwrap());
    let user = f
        .users
        .replace("app", &Default::default(), &user)
        .await
        .unwrap();
    reconcile(Arc::new(user), f.state.clone()).await.unwrap();
    assert_eq!(f.secret_password().await, "my-own-password");

    f.step_through("rot").await;
    f.assert_failed("rot", "CredentialsRotated", "PasswordSecretRefSet")
        .await;
    assert_eq!(f.secret_password().await, "my-own-password");
    assert_eq!(
        f.server_state("my-own-password").await,
        PasswordState::Matches
    );
    f.drop_role().await;
}

/// A Secret of the tenant's own that happens to carry the staging name is not used as the new
/// password, not written over and not deleted: the request fails saying so.
#[tokio::test]
async fn a_tenants_secret_with_the_staging_name_is_left_alone() {
    let f = Fixture::new(
        Engine::Postgres,
        vec![
            json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": staging_name("app"), "namespace": TEAM},
                "data": {"PASSWORD": base64("chosen-by-the-tenant"), "other": base64("kept")}
            }),
            rotation("rot", "2026-01-01T00:00:00Z"),
        ],
    )
    .await;
    f.reconcile_user().await;
    let before = f.secret_password().await;
    f.step_through("rot").await;
    f.assert_failed("rot", "CredentialsGenerated", "StagingSecretTaken")
        .await;
    let theirs = f.secrets.get(&staging_name("app")).await.unwrap();
    let data = decoded_data(&theirs);
    assert_eq!(data["PASSWORD"], "chosen-by-the-tenant");
    assert_eq!(data["other"], "kept");
    assert_eq!(
        f.secret_password().await,
        before,
        "the password is unchanged"
    );
    assert!(!f.accepts("chosen-by-the-tenant").await);
    f.drop_role().await;
}
