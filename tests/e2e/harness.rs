//! The e2e suite's tools: kubectl, the dbward processes, and waiting.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const NAMESPACES: &str = "apiVersion: v1
kind: Namespace
metadata: {name: dbward-system}
---
apiVersion: v1
kind: Namespace
metadata: {name: team-a, labels: {dbward.dev/shared-mysql: allowed}}
---
apiVersion: v1
kind: Namespace
metadata: {name: team-b}
";

/// A real cluster's garbage collector reads every resource (its role grants `*/*`); the loopback
/// control plane runs the controller manager as a plain user without that, so it gets read
/// access to dbward's kinds to follow their owner references.
const GC_ACCESS: &str = "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: dbward-e2e-garbage-collector}
rules:
- {apiGroups: [dbward.dev], resources: ['*'], verbs: [get, list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: dbward-e2e-garbage-collector}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: dbward-e2e-garbage-collector}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: 'system:kube-controller-manager'}
";

/// What a command printed.
pub struct Run {
    pub status: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.status
    }

    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            status: o.status.success(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// The cluster `KUBECONFIG` names.
pub struct Cluster {
    kubeconfig: PathBuf,
    kubectl: PathBuf,
    work: PathBuf,
}

impl Cluster {
    pub fn from_env() -> Option<Cluster> {
        let kubeconfig = PathBuf::from(std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty())?);
        let cached = Path::new(&std::env::var("HOME").unwrap_or_default())
            .join(".cache/dbward-kube-1.20.2/bin/kubectl");
        let kubectl = std::env::var_os("KUBECTL")
            .map(PathBuf::from)
            .or_else(|| cached.exists().then_some(cached))
            .unwrap_or_else(|| PathBuf::from("kubectl"));
        let work = std::env::temp_dir().join(format!("dbward-e2e-{}", std::process::id()));
        std::fs::create_dir_all(&work).unwrap();
        Some(Cluster {
            kubeconfig,
            kubectl,
            work,
        })
    }

    pub fn kubectl(&self, args: &[&str]) -> Run {
        Command::new(&self.kubectl)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("kubectl runs")
            .into()
    }

    /// `kubectl apply -f -` of `manifest`, with extra flags.
    pub fn apply_stdin(&self, manifest: &str, extra: &[&str]) -> Run {
        let mut child = Command::new(&self.kubectl)
            .args(["apply", "-f", "-"])
            .args(extra)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(manifest.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap().into()
    }

    pub fn get_json(&self, kind: &str, namespace: &str, name: &str) -> Value {
        let out = self.kubectl(&["get", kind, name, "-n", namespace, "-o", "json"]);
        assert!(out.ok(), "get {kind} {namespace}/{name}: {}", out.text());
        serde_json::from_str(&out.stdout).unwrap()
    }

    /// `Some` once the object's `Ready` condition is True.
    pub fn ready(&self, kind: &str, namespace: &str, name: &str) -> Option<()> {
        let out = self.kubectl(&["get", kind, name, "-n", namespace, "-o", "json"]);
        let object: Value = serde_json::from_str(&out.stdout).ok()?;
        let conditions = object["status"]["conditions"].as_array()?;
        conditions
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
            .then_some(())
    }

    /// CRDs, namespaces, the webhook and the controller; webhook configurations pointing at it.
    pub fn install(&self) -> Dbward {
        let out = self.apply_stdin(NAMESPACES, &[]);
        assert!(out.ok(), "{}", out.text());
        let out = self.apply_stdin(GC_ACCESS, &[]);
        assert!(out.ok(), "{}", out.text());
        // kubectl before 1.25 does not know x-kubernetes-validations; the API server ignores it.
        let out = self.kubectl(&["apply", "--validate=false", "-f", "crds/"]);
        assert!(out.ok(), "{}", out.text());
        let out = self.kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd",
            "-l",
            "app.kubernetes.io/part-of!=nothing",
        ]);
        assert!(
            out.ok() || out.text().contains("no matching resources"),
            "{}",
            out.text()
        );

        // Where the API server reaches the webhook: this host's loopback, or for kind the
        // address of the host on the cluster's network (DBWARD_E2E_WEBHOOK_HOST, e.g. 172.17.0.1).
        let host = std::env::var("DBWARD_E2E_WEBHOOK_HOST").unwrap_or_else(|_| "127.0.0.1".into());
        let bind = if host == "127.0.0.1" {
            "127.0.0.1"
        } else {
            "0.0.0.0"
        };
        let certs = self.work.join("certs");
        run_dbward(&[
            "certs",
            "--service",
            "dbward-webhook",
            "--namespace",
            "dbward-system",
            "--ip",
            &host,
            "--out",
            certs.to_str().unwrap(),
        ]);
        let port = free_port();
        let metrics = free_port();
        let kubeconfig = self.kubeconfig.to_str().unwrap();
        let webhook = spawn_dbward(
            &[
                "webhook",
                "--listen",
                &format!("{bind}:{port}"),
                "--metrics-listen",
                &format!("127.0.0.1:{metrics}"),
                "--tls-cert",
                certs.join("tls.crt").to_str().unwrap(),
                "--tls-key",
                certs.join("tls.key").to_str().unwrap(),
                "--kubeconfig",
                kubeconfig,
            ],
            &self.work.join("webhook.log"),
        );
        let controller = spawn_dbward(
            &["controller", "--kubeconfig", kubeconfig],
            &self.work.join("controller.log"),
        );
        let mut dbward = Dbward {
            webhook: Some(webhook),
            controller,
            cluster_kubeconfig: self.kubeconfig.clone(),
            kubectl: self.kubectl.clone(),
            logs: self.work.clone(),
        };
        eventually("the webhook is ready", || {
            http_ok(metrics, "/readyz").then_some(())
        });

        let config = run_dbward(&[
            "webhook-config",
            "--url",
            &format!("https://{host}:{port}"),
            "--ca-bundle",
            certs.join("ca.crt").to_str().unwrap(),
            "--failure-policy",
            "Fail",
        ]);
        let out = self.apply_stdin(&config, &[]);
        assert!(out.ok(), "{}", out.text());
        // The API server picks webhook configurations up asynchronously.
        // Only the webhook knows that this service does not exist.
        let probe = manifest(
            "Database",
            "team-a",
            "probe",
            "project: platform\n  serviceName: no-such-service",
        );
        eventually("the API server calls the webhook", || {
            let out = self.apply_stdin(&probe, &["--dry-run=server"]);
            out.text()
                .contains("no DatabaseService has this name")
                .then_some(())
        });
        dbward.check_alive();
        dbward
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.work).ok();
    }
}

/// The dbward processes; stopped (and the webhook unregistered) when dropped, so a failed run
/// never leaves a cluster whose dbward objects cannot be changed.
pub struct Dbward {
    webhook: Option<Child>,
    controller: Child,
    cluster_kubeconfig: PathBuf,
    kubectl: PathBuf,
    logs: PathBuf,
}

impl Dbward {
    pub fn stop_webhook(&mut self) {
        if let Some(mut child) = self.webhook.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    fn check_alive(&mut self) {
        if let Some(webhook) = &mut self.webhook {
            assert!(
                webhook.try_wait().unwrap().is_none(),
                "dbward webhook exited"
            );
        }
        assert!(
            self.controller.try_wait().unwrap().is_none(),
            "dbward controller exited"
        );
    }
}

impl Drop for Dbward {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for log in ["webhook.log", "controller.log"] {
                let text = std::fs::read_to_string(self.logs.join(log)).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                eprintln!("--- last lines of {log} ---");
                tail.iter().rev().for_each(|l| eprintln!("{l}"));
            }
        }
        self.stop_webhook();
        self.controller.kill().ok();
        self.controller.wait().ok();
        for kind in [
            "validatingwebhookconfiguration",
            "mutatingwebhookconfiguration",
        ] {
            Command::new(&self.kubectl)
                .args(["delete", "--ignore-not-found", kind, "dbward"])
                .env("KUBECONFIG", &self.cluster_kubeconfig)
                .output()
                .ok();
        }
    }
}

fn run_dbward(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_dbward"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dbward {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn spawn_dbward(args: &[&str], log: &Path) -> Child {
    let file = std::fs::File::create(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_dbward"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_ok(port: u16, path: &str) -> bool {
    use std::io::Read;
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok();
    if write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    let mut response = String::new();
    stream.read_to_string(&mut response).ok();
    response.starts_with("HTTP/1.1 200")
}

/// Poll `check` until it gives `Some`, for at most 60 s.
pub fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A namespaced dbward manifest with `spec` given as indented YAML lines.
pub fn manifest(kind: &str, namespace: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: dbward.dev/v1alpha1\nkind: {kind}\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  {spec}\n"
    )
}

/// Run SQL on the local PostgreSQL as `postgres`.
pub fn psql(sql: &str) -> String {
    psql_in("postgres", sql)
}

/// Run SQL in one database of the local PostgreSQL as `postgres`.
pub fn psql_in(database: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            database,
            "-tAc",
            sql,
        ])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Run SQL on the local MariaDB as `root`.
pub fn mariadb(sql: &str) -> String {
    let out = Command::new("mariadb")
        .args(["-h", "127.0.0.1", "-u", "root", "-N", "-B", "-e", sql])
        .output()
        .expect("mariadb runs");
    assert!(
        out.status.success(),
        "mariadb {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
