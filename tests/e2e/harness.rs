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

    /// Namespaces, then the chart (CRDs, ServiceAccount, RBAC, webhook configurations by URL),
    /// then two `dbward run` replicas on this host authenticating as the chart's ServiceAccount
    /// with the chart's own arguments: `replica-b` first, so that it leads, then `replica-a`,
    /// whose webhook the configurations name.
    pub fn install(&self) -> Dbward {
        let out = self.apply_stdin(NAMESPACES, &[]);
        assert!(out.ok(), "{}", out.text());
        let out = self.apply_stdin(GC_ACCESS, &[]);
        assert!(out.ok(), "{}", out.text());

        // Where the API server reaches the webhook: this host's loopback, or for kind the
        // address of the host on the cluster's network (DBWARD_E2E_WEBHOOK_HOST, e.g. 172.17.0.1).
        let host = std::env::var("DBWARD_E2E_WEBHOOK_HOST").unwrap_or_else(|_| "127.0.0.1".into());
        let bind = if host == "127.0.0.1" {
            "127.0.0.1"
        } else {
            "0.0.0.0"
        };
        let port = free_port();
        let rendered = render_chart(
            &self.server_version(),
            &[
                &format!("webhook.url=https://{host}:{port}/"),
                "webhook.failurePolicy=Fail",
                &format!("certificates.selfManaged.extraIPs={{{host}}}"),
            ],
        );
        let chart = self.work.join("chart.yaml");
        std::fs::write(&chart, &rendered).unwrap();
        // kubectl before 1.25 does not know x-kubernetes-validations; the API server ignores it.
        let out = self.kubectl(&["apply", "--validate=false", "-f", chart.to_str().unwrap()]);
        assert!(out.ok(), "the rendered chart must apply: {}", out.text());
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

        let args = chart_container_args(&rendered);
        let kubeconfig = self.service_account_kubeconfig(&rendered);
        let mut dbward = Dbward {
            replicas: Vec::new(),
            cluster_kubeconfig: self.kubeconfig.clone(),
            kubectl: self.kubectl.clone(),
            logs: self.work.clone(),
            kubeconfig,
            args,
            configurations: rendered_names(&rendered, "ValidatingWebhookConfiguration"),
        };
        let b = dbward.add_replica("replica-b", bind, free_port());
        dbward.start(b);
        eventually("replica-b holds the lease", || {
            (dbward.lease_holder(self).as_deref() == Some("replica-b")).then_some(())
        });
        let a = dbward.add_replica("replica-a", bind, port);
        dbward.start(a);
        for replica in [a, b] {
            let metrics = dbward.replicas[replica].metrics;
            eventually("the webhook is ready", || {
                http_ok(metrics, "/readyz").then_some(())
            });
        }
        // The replicas inject their CA into the configurations, and the API server picks them up
        // asynchronously. Only the webhook knows that this service does not exist.
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

    /// The API server's version (`1.20.2`), for the chart's choice of API versions.
    fn server_version(&self) -> String {
        let out = self.kubectl(&["version", "-o", "json"]);
        assert!(out.ok(), "{}", out.text());
        let version: Value = serde_json::from_str(&out.stdout).unwrap();
        let git = version["serverVersion"]["gitVersion"].as_str().unwrap();
        git.trim_start_matches('v')
            .split(['-', '+'])
            .next()
            .unwrap()
            .to_owned()
    }

    /// A kubeconfig for the chart's ServiceAccount: the API server of `KUBECONFIG`, the
    /// account's token (from the token Secret the controller manager makes on clusters < 1.24).
    fn service_account_kubeconfig(&self, rendered: &str) -> PathBuf {
        let account = rendered_names(rendered, "ServiceAccount")
            .pop()
            .expect("the chart renders a ServiceAccount");
        let token = eventually("the ServiceAccount has a token", || {
            let out = self.kubectl(&[
                "get", "secret", "-n", "dbward-system", "-o",
                "jsonpath={range .items[?(@.type==\"kubernetes.io/service-account-token\")]}{.metadata.annotations.kubernetes\\.io/service-account\\.name} {.data.token}{\"\\n\"}{end}",
            ]);
            out.stdout.lines().find_map(|line| {
                let (name, token) = line.split_once(' ')?;
                (name == account && !token.is_empty()).then(|| token.to_owned())
            })
        });
        let token = String::from_utf8(base64_decode(&token)).unwrap();
        let view = |path: &str| {
            let out = self.kubectl(&[
                "config",
                "view",
                "--raw",
                "--minify",
                "-o",
                &format!("jsonpath={path}"),
            ]);
            assert!(out.ok(), "{}", out.text());
            out.stdout
        };
        let server = view("{.clusters[0].cluster.server}");
        let ca = view("{.clusters[0].cluster.certificate-authority-data}");
        let ca = if ca.is_empty() {
            let file = view("{.clusters[0].cluster.certificate-authority}");
            base64_encode(&std::fs::read(file).unwrap())
        } else {
            ca
        };
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster: {{server: '{server}', certificate-authority-data: {ca}}}\nusers:\n- name: {account}\n  user: {{token: '{token}'}}\ncontexts:\n- name: e2e\n  context: {{cluster: e2e, user: {account}}}\ncurrent-context: e2e\n"
        );
        let path = self.work.join("service-account.kubeconfig");
        std::fs::write(&path, config).unwrap();
        path
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.work).ok();
    }
}

/// One `dbward run` process.
pub struct Replica {
    pub name: String,
    pub port: u16,
    pub metrics: u16,
    bind: String,
    child: Option<Child>,
    starts: usize,
}

/// The dbward replicas; stopped (and the webhook unregistered) when dropped, so a failed run
/// never leaves a cluster whose dbward objects cannot be changed.
pub struct Dbward {
    pub replicas: Vec<Replica>,
    cluster_kubeconfig: PathBuf,
    kubectl: PathBuf,
    logs: PathBuf,
    kubeconfig: PathBuf,
    args: Vec<String>,
    configurations: Vec<String>,
}

impl Dbward {
    fn add_replica(&mut self, name: &str, bind: &str, port: u16) -> usize {
        self.replicas.push(Replica {
            name: name.to_owned(),
            port,
            metrics: free_port(),
            bind: bind.to_owned(),
            child: None,
            starts: 0,
        });
        self.replicas.len() - 1
    }

    /// The replica called `name`.
    pub fn replica(&self, name: &str) -> usize {
        self.replicas
            .iter()
            .position(|r| r.name == name)
            .expect("a known replica")
    }

    /// Starts replica `i` with the chart's arguments, its own ports and TLS directory, and the
    /// ServiceAccount's kubeconfig.
    pub fn start(&mut self, i: usize) {
        let replica = &mut self.replicas[i];
        assert!(replica.child.is_none(), "{} runs already", replica.name);
        replica.starts += 1;
        let tls = self.logs.join(format!("{}-tls", replica.name));
        std::fs::create_dir_all(&tls).unwrap();
        let mut args = self.args.clone();
        args.extend([
            "--listen".to_owned(),
            format!("{}:{}", replica.bind, replica.port),
            "--metrics-listen".to_owned(),
            format!("127.0.0.1:{}", replica.metrics),
            "--tls-cert".to_owned(),
            tls.join("tls.crt").to_str().unwrap().to_owned(),
            "--tls-key".to_owned(),
            tls.join("tls.key").to_str().unwrap().to_owned(),
            "--kubeconfig".to_owned(),
            self.kubeconfig.to_str().unwrap().to_owned(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let log = self
            .logs
            .join(format!("{}.{}.log", replica.name, replica.starts));
        let file = std::fs::File::create(log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_dbward"))
            .args(&args)
            .env("RUST_LOG", "info")
            .env("POD_NAME", &replica.name)
            .env("POD_NAMESPACE", "dbward-system")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        replica.child = Some(child);
    }

    /// Sends `signal` (`KILL`, `TERM`) to replica `i` and waits for it to exit.
    pub fn signal(&mut self, i: usize, signal: &str) {
        if let Some(mut child) = self.replicas[i].child.take() {
            Command::new("kill")
                .args([&format!("-{signal}"), &child.id().to_string()])
                .status()
                .unwrap();
            child.wait().ok();
        }
    }

    /// Whether replica `i` answers an AdmissionReview on its HTTPS port.
    pub fn answers_reviews(&self, i: usize) -> bool {
        let review = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"e2e","kind":{"group":"dbward.dev","version":"v1alpha1","kind":"Database"},"resource":{"group":"dbward.dev","version":"v1alpha1","resource":"databases"},"namespace":"team-a","operation":"CREATE","userInfo":{"username":"e2e"},"object":{"apiVersion":"dbward.dev/v1alpha1","kind":"Database","metadata":{"name":"probe","namespace":"team-a"},"spec":{"project":"platform","serviceName":"shared-pg"}}}}"#;
        let out = Command::new("curl")
            .args([
                "-sk",
                "--max-time",
                "2",
                "-H",
                "content-type: application/json",
                "--data",
                review,
                &format!("https://127.0.0.1:{}/validate", self.replicas[i].port),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains("\"uid\":\"e2e\"")
    }

    /// Whether replica `i` says it is ready.
    pub fn ready(&self, i: usize) -> bool {
        http_ok(self.replicas[i].metrics, "/readyz")
    }

    /// The holder of the controllers' Lease, if any.
    pub fn lease_holder(&self, cluster: &Cluster) -> Option<String> {
        let name = self.lease_name();
        let out = cluster.kubectl(&[
            "get",
            "lease",
            &name,
            "-n",
            "dbward-system",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ]);
        (out.ok() && !out.stdout.trim().is_empty()).then(|| out.stdout.trim().to_owned())
    }

    fn lease_name(&self) -> String {
        let at = self
            .args
            .iter()
            .position(|a| a == "--lease-name")
            .expect("the chart names the lease");
        self.args[at + 1].clone()
    }

    /// Stops the replica the webhook configurations call (as when the webhook is down).
    pub fn stop_webhook(&mut self) {
        let a = self.replica("replica-a");
        self.signal(a, "KILL");
    }

    fn check_alive(&mut self) {
        for replica in &mut self.replicas {
            if let Some(child) = &mut replica.child {
                assert!(
                    child.try_wait().unwrap().is_none(),
                    "dbward run ({}) exited",
                    replica.name
                );
            }
        }
    }

    /// Every API call dbward made was allowed by the chart's RBAC: no replica's log mentions a
    /// refusal.
    pub fn assert_no_call_was_forbidden(&self) {
        for entry in std::fs::read_dir(&self.logs).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let denied: Vec<&str> = text
                    .lines()
                    .filter(|l| l.contains("forbidden") || l.contains("Forbidden"))
                    .collect();
                assert!(
                    denied.is_empty(),
                    "the chart's RBAC refused calls dbward makes ({}):\n{}",
                    path.display(),
                    denied.join("\n")
                );
            }
        }
    }
}

impl Drop for Dbward {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut logs: Vec<PathBuf> = std::fs::read_dir(&self.logs)
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "log"))
                .collect();
            logs.sort();
            for log in logs {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                eprintln!("--- last lines of {} ---", log.display());
                tail.iter().rev().for_each(|l| eprintln!("{l}"));
            }
        }
        for i in 0..self.replicas.len() {
            self.signal(i, "KILL");
        }
        for kind in [
            "validatingwebhookconfiguration",
            "mutatingwebhookconfiguration",
        ] {
            for name in &self.configurations {
                Command::new(&self.kubectl)
                    .args(["delete", "--ignore-not-found", kind, name])
                    .env("KUBECONFIG", &self.cluster_kubeconfig)
                    .output()
                    .ok();
            }
        }
    }
}

/// The chart rendered with `--set` values (`scripts/chart-render`, which uses Helm's own SDK).
fn render_chart(kube_version: &str, values: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/chart-render");
    let mut command = Command::new(&script);
    command.args([
        "--namespace",
        "dbward-system",
        "--kube-version",
        kube_version,
    ]);
    for value in values {
        command.args(["--set", value]);
    }
    let out = command.output().expect("scripts/chart-render runs");
    assert!(
        out.status.success(),
        "scripts/chart-render: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The rendered objects of `kind`.
fn rendered_objects<'a>(rendered: &'a str, kind: &'a str) -> impl Iterator<Item = Value> + 'a {
    rendered
        .split("\n---")
        .filter_map(|doc| serde_yaml::from_str::<Value>(doc).ok())
        .filter(move |object| object["kind"] == kind)
}

fn rendered_names(rendered: &str, kind: &str) -> Vec<String> {
    rendered_objects(rendered, kind)
        .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_owned))
        .collect()
}

/// The Deployment's dbward arguments, without the ones each replica sets for itself.
fn chart_container_args(rendered: &str) -> Vec<String> {
    let deployment = rendered_objects(rendered, "Deployment")
        .next()
        .expect("the chart renders a Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<String> = container["args"]
        .as_array()
        .or_else(|| container["command"].as_array())
        .expect("the container has arguments")
        .iter()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    let own = ["--listen", "--metrics-listen", "--tls-cert", "--tls-key"];
    let mut kept = Vec::new();
    let mut skip = false;
    for arg in args {
        if skip {
            skip = false;
            continue;
        }
        if own.contains(&arg.as_str()) {
            skip = true;
            continue;
        }
        if own.iter().any(|o| arg.starts_with(&format!("{o}="))) {
            continue;
        }
        kept.push(arg);
    }
    assert_eq!(
        kept.first().map(String::as_str),
        Some("run"),
        "the chart runs `dbward run`: {kept:?}"
    );
    kept
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .unwrap()
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
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
