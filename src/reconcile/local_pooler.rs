//! `dbward reconcile --local` for ConnectionPools: per PostgreSQL DatabaseService with pools,
//! the server side ([`pooler::realise`]), PgBouncer's files under `--out/pooler/<service>/`
//! (`pgbouncer.ini`, `hba.conf`, `userlist.txt`, and `server-ca.crt` when the connector has a
//! CA), the auth Secret and a Secret per pool; for a service whose last pool is gone, all of it
//! removed ([`pooler::remove`]). Files are only written when their content changes, so a
//! re-run changes nothing. Run PgBouncer on them with `pgbouncer --out/pooler/<svc>/pgbouncer.ini`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::api::{ConnectionPool, DatabaseService, Engine};

use super::connection_pool::{Endpoint, POOLER_LABEL};
use super::local::LocalCluster;
use super::pooler::{self, AUTH_FILE, HBA_FILE, INI_FILE, Layout, SERVER_CA_FILE};
use super::service_user::secret_action;
use super::{Action, Cluster, Context, Error, act, display_ref};

/// What happened, for the command's output.
#[derive(Debug, Default)]
pub struct Report {
    /// `<object>: <change>` lines.
    pub changes: Vec<String>,
    /// `<object>: <error>` lines.
    pub errors: Vec<String>,
    /// Files to print when there is no `--out` (path, content).
    pub files: Vec<(String, String)>,
}

/// The directory of `service`'s files under `out`.
pub fn pooler_dir(out: &Path, service: &str) -> PathBuf {
    out.join("pooler").join(service)
}

/// Realises (or removes) the pooler of every PostgreSQL service among `services`, for the
/// `pools` that name it. PgBouncer listens on `listen`, which is also what pool Secrets say.
pub async fn reconcile_pools(
    ctx: &Context<LocalCluster>,
    services: &[DatabaseService],
    pools: &[ConnectionPool],
    out: Option<&Path>,
    listen: SocketAddr,
) -> Report {
    let mut report = Report::default();
    for service in services
        .iter()
        .filter(|s| s.spec.engine == Engine::Postgres)
    {
        let svc = service.metadata.name.clone().unwrap_or_default();
        let mine: Vec<ConnectionPool> = pools
            .iter()
            .filter(|p| p.spec.binding.service_name == svc)
            .cloned()
            .collect();
        let reference = display_ref("DatabaseService", None, &svc);
        let result = if mine.is_empty() {
            remove(ctx, service, out, &mut report).await
        } else {
            realise(ctx, service, &mine, out, listen, &mut report).await
        };
        if let Err(e) = result {
            report.errors.push(format!("{reference}: {e}"));
        }
    }
    for pool in pools {
        let known = services
            .iter()
            .any(|s| s.metadata.name.as_deref() == Some(&pool.spec.binding.service_name));
        if !known {
            let e = Error::ServiceNotFound {
                name: pool.spec.binding.service_name.clone(),
            };
            report.errors.push(format!("{}: {e}", pool_ref(pool)));
        }
    }
    report
}

fn pool_ref(pool: &ConnectionPool) -> String {
    display_ref(
        "ConnectionPool",
        pool.metadata.namespace.as_deref(),
        pool.metadata.name.as_deref().unwrap_or_default(),
    )
}

fn layout(out: Option<&Path>, service: &str, listen: SocketAddr) -> Result<Layout, Error> {
    let dir = match out {
        Some(out) => {
            let dir = pooler_dir(out, service);
            std::fs::create_dir_all(&dir).map_err(|e| file_error(&dir, e))?;
            dir.canonicalize().map_err(|e| file_error(&dir, e))?
        }
        // Printed only: the paths say where the files would be.
        None => PathBuf::from("/etc/pgbouncer").join(service),
    };
    let dir = dir.display().to_string();
    Ok(Layout {
        listen_addr: listen.ip().to_string(),
        listen_port: listen.port(),
        config_dir: dir.clone(),
        auth_dir: dir,
        tls_dir: None,
        tls_secret: None,
        tls_required: false,
        endpoint: Endpoint {
            host: listen.ip().to_string(),
            port: listen.port(),
            sslmode: "disable".to_owned(),
            ca_cert: String::new(),
        },
    })
}

async fn realise(
    ctx: &Context<LocalCluster>,
    service: &DatabaseService,
    pools: &[ConnectionPool],
    out: Option<&Path>,
    listen: SocketAddr,
    report: &mut Report,
) -> Result<(), Error> {
    let svc = service.metadata.name.clone().unwrap_or_default();
    let reference = display_ref("DatabaseService", None, &svc);
    let layout = layout(out, &svc, listen)?;
    let realised = pooler::realise(ctx, service, pools, &layout).await?;
    for change in &realised.changes {
        report.changes.push(format!("{reference}: {change}"));
    }
    let mut files = vec![
        (INI_FILE, realised.files.ini.as_str(), false),
        (HBA_FILE, realised.files.hba.as_str(), false),
        (AUTH_FILE, realised.files.userlist.as_str(), true),
    ];
    if let Some(ca) = &realised.files.server_ca {
        files.push((SERVER_CA_FILE, ca.as_str(), false));
    }
    for (file, content, private) in files {
        match out {
            Some(out) => {
                let path = pooler_dir(out, &svc).join(file);
                if write_if_changed(&path, content, private)? {
                    report
                        .changes
                        .push(format!("{reference}: write {}", path.display()));
                }
            }
            None => report
                .files
                .push((format!("pooler/{svc}/{file}"), content.to_owned())),
        }
    }
    let actions = secret_actions(ctx, &svc, &realised, report).await?;
    // Secret actions only; the SQL was applied by `realise`.
    let handle = ctx.server_for(service).await?;
    act(&handle.server, &ctx.cluster, &actions).await
}

/// The auth Secret and the pools' Secrets to apply, and the Secrets of pools that are gone (or
/// no longer served) to delete.
async fn secret_actions(
    ctx: &Context<LocalCluster>,
    svc: &str,
    realised: &pooler::Realised,
    report: &mut Report,
) -> Result<Vec<Action>, Error> {
    let reference = display_ref("DatabaseService", None, svc);
    let existing = ctx
        .cluster
        .get_secret(&ctx.operator_namespace, &pooler::object_name(svc))
        .await?;
    let mut actions: Vec<Action> = secret_action(Some(&realised.auth_secret), existing.as_ref())
        .into_iter()
        .collect();
    for action in &actions {
        report.changes.push(format!("{reference}: {action}"));
    }
    let mut wanted = Vec::new();
    for pool in &realised.pools {
        let reference = display_ref("ConnectionPool", Some(&pool.namespace), &pool.name);
        match &pool.result {
            Ok(Some(secret)) => {
                let ns = secret.metadata.namespace.clone().unwrap_or_default();
                let name = secret.metadata.name.clone().unwrap_or_default();
                let existing = ctx.cluster.get_secret(&ns, &name).await?;
                if let Some(action) = secret_action(Some(secret), existing.as_ref()) {
                    report.changes.push(format!("{reference}: {action}"));
                    actions.push(action);
                }
                wanted.push((ns, name));
            }
            Ok(None) => {}
            Err(e) => report.errors.push(format!("{reference}: {e}")),
        }
    }
    // Secrets of pools that are gone (or no longer served).
    for stale in ctx.cluster.secrets_labelled((POOLER_LABEL, svc)) {
        let key = (
            stale.metadata.namespace.clone().unwrap_or_default(),
            stale.metadata.name.clone().unwrap_or_default(),
        );
        let is_auth = key.1 == pooler::object_name(svc) && key.0 == ctx.operator_namespace;
        if !is_auth && !wanted.contains(&key) {
            let action = Action::DeleteSecret {
                namespace: key.0,
                name: key.1,
            };
            report.changes.push(format!("{reference}: {action}"));
            actions.push(action);
        }
    }
    Ok(actions)
}

async fn remove(
    ctx: &Context<LocalCluster>,
    service: &DatabaseService,
    out: Option<&Path>,
    report: &mut Report,
) -> Result<(), Error> {
    let svc = service.metadata.name.clone().unwrap_or_default();
    let reference = display_ref("DatabaseService", None, &svc);
    // Only a service that had a pooler here has anything to remove (a service without pools
    // whose server is down must not fail the run).
    let had_files = out.is_some_and(|o| pooler_dir(o, &svc).exists());
    let secrets = ctx.cluster.secrets_labelled((POOLER_LABEL, &svc));
    if !had_files && secrets.is_empty() {
        return Ok(());
    }
    for change in pooler::remove(ctx, service).await? {
        report.changes.push(format!("{reference}: {change}"));
    }
    for secret in secrets {
        let ns = secret.metadata.namespace.clone().unwrap_or_default();
        let name = secret.metadata.name.clone().unwrap_or_default();
        ctx.cluster.delete_secret(&ns, &name).await?;
        report
            .changes
            .push(format!("{reference}: delete Secret {ns}/{name}"));
    }
    if let Some(out) = out {
        let dir = pooler_dir(out, &svc);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| file_error(&dir, e))?;
            report
                .changes
                .push(format!("{reference}: remove {}", dir.display()));
        }
    }
    Ok(())
}

/// Writes `content` to `path` unless it already holds exactly that; whether it wrote.
fn write_if_changed(path: &Path, content: &str, private: bool) -> Result<bool, Error> {
    if std::fs::read(path).is_ok_and(|old| old == content.as_bytes()) {
        return Ok(false);
    }
    crate::private_file::write(path, content.as_bytes(), private)
        .map_err(|e| file_error(path, e))?;
    Ok(true)
}

fn file_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::LocalFile {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}
