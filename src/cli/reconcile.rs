//! `dbward reconcile --local`: the admission rules, plans and SQL of the controllers, without a
//! cluster. The manifests (connector Secrets inline) name the servers; the credential Secrets
//! dbward would write are printed, or written to `--out DIR` and read back from there on the
//! next run, so a re-run changes nothing and keeps every password. ConnectionPools get their
//! service's PgBouncer files under `--out/pooler/<service>/` (see
//! [`crate::reconcile::local_pooler`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::admission;
use crate::api::admission_policy::POLICY_NAME;
use crate::api::{
    self, AdmissionPolicy, ConnectionPool, Database, DatabaseClaim, DatabaseQueryResource,
    DatabaseService, ServiceUser,
};
use crate::cli::validate;
use crate::manifests::{self, Manifest};
use crate::reconcile::local::{self, LocalCluster};
use crate::reconcile::local_pooler;
use crate::reconcile::secret::decoded_data;
use crate::reconcile::{
    Applied, Cluster, Context, Error, database, database_claim, database_service, display_ref,
    query_resource, service_user,
};

/// Apply the database side of manifests to the servers they name, without a cluster.
///
/// Exit status: 0 when everything was applied, 1 when an object was denied or failed, 2 when an
/// input cannot be read.
#[derive(clap::Args, Debug)]
pub struct ReconcileArgs {
    /// Run without a cluster (the only mode this command has).
    #[arg(long, required = true)]
    pub local: bool,
    /// Files or directories (recursively *.yaml, *.yml, *.json); `-` reads standard input.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// Write the Secrets to DIR as `<namespace>.<name>.yaml` (and read the existing ones from
    /// there first) instead of printing them.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Where the PgBouncer of each service with ConnectionPools listens (`listen_addr`,
    /// `listen_port` of the `pgbouncer.ini` written to `--out/pooler/<service>/`), and what the
    /// pool Secrets tell clients.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:6432")]
    pub pooler_listen: std::net::SocketAddr,
    /// dbward's namespace (where connector Secrets live).
    #[arg(long, default_value = admission::DEFAULT_OPERATOR_NAMESPACE)]
    pub namespace: String,
}

/// Kinds local mode reconciles, in the order it does (databases before the users granted on
/// them).
const ORDER: [&str; 4] = [
    "DatabaseService",
    "Database",
    "DatabaseClaim",
    "ServiceUser",
];

pub fn run(args: &ReconcileArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(run_local(args))
}

async fn run_local(args: &ReconcileArgs) -> ExitCode {
    let (inputs, read_errors) = manifests::read_paths(&args.files);
    for error in &read_errors {
        eprintln!("error: {error}");
    }
    if !read_errors.is_empty() {
        return ExitCode::from(2);
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut failed = false;

    // Admission, exactly as `dbward validate` reports it.
    let reports = validate::validate(&inputs, &[], None, &args.namespace);
    let dbward_objects = inputs.iter().filter(|m| m.is_dbward());
    let mut admitted: Vec<(Manifest, Value)> = Vec::new();
    for (manifest, report) in dbward_objects.zip(&reports) {
        if !report.allowed {
            failed = true;
            if let Err(e) = validate::write_text(&mut out, report) {
                eprintln!("error: cannot write the output: {e}");
                return ExitCode::from(2);
            }
            continue;
        }
        let mut object = manifest.object.clone();
        if json_patch::patch(&mut object, &report.patch).is_err() {
            eprintln!(
                "error: {}: cannot apply the defaults",
                object_ref(manifest.kind(), manifest.namespace(), manifest.name())
            );
            failed = true;
            continue;
        }
        admitted.push((manifest.clone(), object));
    }

    let mut cluster = LocalCluster::new();
    for manifest in inputs
        .iter()
        .filter(|m| m.api_version() == "v1" && m.kind() == "Secret")
    {
        match serde_json::from_value::<Secret>(manifest.object.clone()) {
            Ok(mut secret) => {
                if secret.metadata.namespace.is_none() {
                    secret.metadata.namespace = Some("default".to_owned());
                }
                cluster.add_secret(secret);
            }
            Err(e) => eprintln!("warning: {}: not a Secret: {e}", manifest.source),
        }
    }
    for (_, object) in admitted
        .iter()
        .filter(|(m, _)| m.kind() == "DatabaseService")
    {
        if let Ok(service) = serde_json::from_value::<DatabaseService>(object.clone()) {
            cluster.add_service(service);
        }
    }
    // A ConnectionPool's `username` reads its ServiceUser's Secret through the ServiceUser.
    for (_, object) in admitted.iter().filter(|(m, _)| m.kind() == "ServiceUser") {
        if let Ok(user) = parse::<ServiceUser>(object) {
            cluster.add_service_user(user);
        }
    }
    // What the reconcilers' own admission re-check and ownership checks read.
    for manifest in &inputs {
        match (manifest.api_version(), manifest.kind()) {
            ("v1", "Namespace") => {
                if let Ok(ns) = serde_json::from_value::<Namespace>(manifest.object.clone()) {
                    cluster.add_namespace(ns);
                }
            }
            (api::API_VERSION, "AdmissionPolicy") if manifest.name() == POLICY_NAME => {
                if let Ok(policy) =
                    serde_json::from_value::<AdmissionPolicy>(manifest.object.clone())
                {
                    cluster.set_policy(policy.spec);
                }
            }
            _ => {}
        }
    }
    if let Some(dir) = &args.out
        && let Err(e) = cluster.load_dir(dir)
    {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let ctx = Context::new(cluster, args.namespace.clone());

    let mut changes = 0usize;
    for kind in ORDER {
        for (manifest, object) in admitted.iter().filter(|(m, _)| m.kind() == kind) {
            let reference = display_ref(kind, Some(manifest.namespace()), manifest.name());
            match reconcile_one(&ctx, kind, object).await {
                Ok(applied) => {
                    for action in &applied.actions {
                        changes += 1;
                        let _ = writeln!(out, "{reference}: {action}");
                    }
                    for warning in &applied.warnings {
                        eprintln!("warning: {reference}: {warning}");
                    }
                }
                Err(e) => {
                    failed = true;
                    eprintln!("error: {reference}: {e}");
                }
            }
        }
    }
    let services: Vec<DatabaseService> = admitted
        .iter()
        .filter(|(m, _)| m.kind() == "DatabaseService")
        .filter_map(|(_, o)| serde_json::from_value::<DatabaseService>(o.clone()).ok())
        .collect();
    let pools: Vec<ConnectionPool> = admitted
        .iter()
        .filter(|(m, _)| m.kind() == "ConnectionPool")
        .filter_map(|(_, o)| parse::<ConnectionPool>(o).ok())
        .collect();
    let pooled = local_pooler::reconcile_pools(
        &ctx,
        &services,
        &pools,
        args.out.as_deref(),
        args.pooler_listen,
    )
    .await;
    for line in &pooled.changes {
        changes += 1;
        let _ = writeln!(out, "{line}");
    }
    for line in &pooled.errors {
        failed = true;
        eprintln!("error: {line}");
    }
    let previews = preview_query_resources(&ctx, &admitted).await;
    for line in &previews.errors {
        failed = true;
        eprintln!("error: {line}");
    }
    for (manifest, _) in admitted.iter().filter(|(m, _)| {
        !ORDER.contains(&m.kind())
            && !matches!(
                m.kind(),
                "AdmissionPolicy" | "ConnectionPool" | "DatabaseQueryResource"
            )
    }) {
        let _ = writeln!(
            out,
            "{}: skipped (local mode does not reconcile {})",
            display_ref(manifest.kind(), Some(manifest.namespace()), manifest.name()),
            manifest.kind()
        );
    }
    if changes == 0 {
        let _ = writeln!(out, "no changes");
    }

    let applied = ctx.cluster.applied();
    let written = match &args.out {
        Some(dir) => write_secrets(dir, &applied)
            .and_then(|()| remove_secrets(dir, &ctx.cluster.deleted()))
            .and_then(|()| write_previews(dir, &previews.files)),
        None => print_secrets(&mut out, &applied).and_then(|()| {
            for (path, content) in pooled.files.iter().chain(&previews.files) {
                writeln!(out, "--- # {path}\n{}", content.trim_end()).map_err(|e| e.to_string())?;
            }
            Ok(())
        }),
    };
    if let Err(e) = written {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// What the DatabaseQueryResources would apply: their files (under `query/`) and the rows
/// that would fail.
#[derive(Default)]
struct Previews {
    files: Vec<(String, String)>,
    errors: Vec<String>,
}

/// Each admitted DatabaseQueryResource's rows rendered ([`query_resource::preview`]); one line
/// per object on stdout.
async fn preview_query_resources(
    ctx: &Context<LocalCluster>,
    admitted: &[(Manifest, Value)],
) -> Previews {
    let mut previews = Previews::default();
    let policy = ctx.cluster.get_policy().await.unwrap_or_default();
    for (manifest, object) in admitted
        .iter()
        .filter(|(m, _)| m.kind() == "DatabaseQueryResource")
    {
        let reference = display_ref(manifest.kind(), Some(manifest.namespace()), manifest.name());
        let cr: DatabaseQueryResource = match parse(object) {
            Ok(cr) => cr,
            Err(e) => {
                previews.errors.push(format!("{reference}: {e}"));
                continue;
            }
        };
        let secret_ref = &cr.spec.database.connection_secret_ref;
        let ns = query_resource::connection::secret_namespace(secret_ref, manifest.namespace());
        let secret = ctx
            .cluster
            .get_secret(ns, &secret_ref.name)
            .await
            .ok()
            .flatten()
            .map(|s| decoded_data(&s));
        let found = query_resource::preview::preview(&cr, secret.as_ref(), &policy).await;
        let dir = format!("query/{}.{}", manifest.namespace(), manifest.name());
        for (file, yaml) in found.manifests {
            println!(
                "{reference}: would apply {}",
                file.trim_end_matches(".yaml")
            );
            previews.files.push((format!("{dir}/{file}"), yaml));
        }
        previews.errors.extend(
            found
                .errors
                .into_iter()
                .map(|e| format!("{reference}: {e}")),
        );
    }
    previews
}

/// Writes the previews under `dir`, replacing what an earlier run wrote there.
fn write_previews(dir: &Path, files: &[(String, String)]) -> Result<(), String> {
    let root = dir.join("query");
    if root.exists() {
        std::fs::remove_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    }
    for (path, content) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(&path, content).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

async fn reconcile_one(
    ctx: &Context<LocalCluster>,
    kind: &str,
    object: &Value,
) -> Result<Applied, Error> {
    match kind {
        "DatabaseService" => {
            let service: DatabaseService = parse(object)?;
            database_service::probe(ctx, &service).await?;
            Ok(Applied::default())
        }
        "Database" => database::reconcile(ctx, &parse::<Database>(object)?).await,
        "DatabaseClaim" => {
            let claim: DatabaseClaim = parse(object)?;
            Ok(database_claim::reconcile(ctx, &claim).await?.0)
        }
        "ServiceUser" => service_user::reconcile(ctx, &parse::<ServiceUser>(object)?).await,
        _ => Ok(Applied::default()),
    }
}

/// Parses an admitted object, giving a namespaced one the namespace `kubectl` would.
fn parse<K: DeserializeOwned + kube::Resource>(object: &Value) -> Result<K, Error> {
    let mut parsed: K = serde_json::from_value(object.clone()).map_err(|e| Error::Invalid {
        message: format!("cannot read the object: {e}"),
    })?;
    if parsed.meta().namespace.is_none() {
        parsed.meta_mut().namespace = Some("default".to_owned());
    }
    Ok(parsed)
}

fn object_ref(kind: &str, namespace: &str, name: &str) -> String {
    display_ref(kind, Some(namespace), name)
}

fn write_secrets(dir: &Path, secrets: &[Secret]) -> Result<(), String> {
    if secrets.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for secret in secrets {
        let path = dir.join(local::file_name(secret));
        let yaml = local::to_yaml(secret).map_err(|e| format!("{}: {e}", path.display()))?;
        crate::private_file::write(&path, yaml.as_bytes(), true)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Removes the files of Secrets that were deleted (a pool that is gone).
fn remove_secrets(dir: &Path, deleted: &[(String, String)]) -> Result<(), String> {
    for (namespace, name) in deleted {
        let path = dir.join(format!("{namespace}.{name}.yaml"));
        match std::fs::remove_file(&path) {
            Ok(()) => eprintln!("removed {}", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
    }
    Ok(())
}

fn print_secrets(out: &mut impl Write, secrets: &[Secret]) -> Result<(), String> {
    for secret in secrets {
        let yaml = local::to_yaml(secret).map_err(|e| e.to_string())?;
        writeln!(out, "---\n{}", yaml.trim_end()).map_err(|e| e.to_string())?;
    }
    Ok(())
}
