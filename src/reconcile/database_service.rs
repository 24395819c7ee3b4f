//! `DatabaseService`: probe the server (connect, read its version and whether TLS is used) and
//! report it in `status` (`reachable`, `serverVersion`, `transport`, `lastProbeTime`, `Ready`).
//!
//! `lastProbeTime` is refreshed when something else changes or when it is older than
//! [`PROBE_REFRESH`], so a steady service costs one status write every few minutes rather than
//! one per probe.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tracing::instrument;

use crate::api::DatabaseService;
use crate::api::database_service::DatabaseServiceStatus;
use crate::sql::ServerInfo;

use super::status::{Readiness, with_ready};
use super::{Cluster, Context, Error};

/// How often the controller probes a service.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(60);
/// How old `lastProbeTime` may get before a probe that changed nothing still refreshes it.
pub const PROBE_REFRESH: Duration = Duration::from_secs(300);

/// Connects to the service's server and reads its version.
#[instrument(skip_all, fields(kind = "DatabaseService", name = service.metadata.name.as_deref()))]
pub async fn probe<C: Cluster>(
    ctx: &Context<C>,
    service: &DatabaseService,
) -> Result<ServerInfo, Error> {
    let handle = ctx.server_for(service).await?;
    Ok(handle.server.probe().await?)
}

/// `status.transport`: how dbward's connections to the server travel.
pub fn transport(info: &ServerInfo) -> &'static str {
    if info.tls { "tls" } else { "plaintext" }
}

/// Pure: the status after a probe.
pub fn status_after(
    old: Option<&DatabaseServiceStatus>,
    generation: Option<i64>,
    probe: &Result<ServerInfo, Error>,
    now: &Time,
) -> DatabaseServiceStatus {
    let old = old.cloned().unwrap_or_default();
    let (reachable, version, transport, readiness) = match probe {
        Ok(info) => (
            true,
            Some(info.version.clone()),
            Some(transport(info).to_owned()),
            Readiness::ready(format!(
                "reachable over {}, version {}",
                if info.tls {
                    "TLS"
                } else {
                    "plaintext (no TLS)"
                },
                info.version
            )),
        ),
        Err(e) => (
            false,
            old.server_version.clone(),
            old.transport.clone(),
            Readiness::failed(e),
        ),
    };
    let mut next = DatabaseServiceStatus {
        conditions: with_ready(&old.conditions, &readiness, generation, now),
        observed_generation: generation,
        reachable: Some(reachable),
        server_version: version,
        transport,
        last_probe_time: old.last_probe_time.clone(),
    };
    let stale = old
        .last_probe_time
        .as_deref()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .is_none_or(|t| {
            now.0.duration_since(t)
                >= jiff::SignedDuration::try_from(PROBE_REFRESH).unwrap_or_default()
        });
    if stale || next != old {
        next.last_probe_time = Some(now.0.to_string());
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql;

    fn at(seconds: i64) -> Time {
        Time(jiff::Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn steady_probes_do_not_rewrite_status_until_refresh() {
        let ok: Result<ServerInfo, Error> = Ok(ServerInfo {
            version: "16.4".into(),
            tls: false,
        });
        let first = status_after(None, Some(1), &ok, &at(1_000));
        assert_eq!(first.reachable, Some(true));
        assert_eq!(first.server_version.as_deref(), Some("16.4"));
        assert_eq!(first.transport.as_deref(), Some("plaintext"));
        assert!(first.last_probe_time.is_some());
        assert_eq!(status_after(Some(&first), Some(1), &ok, &at(1_060)), first);
        assert_ne!(status_after(Some(&first), Some(1), &ok, &at(1_400)), first);

        let down: Result<ServerInfo, Error> = Err(Error::Sql(sql::Error::Unreachable {
            engine: sql::Engine::Postgres,
            host: "h".into(),
            port: 1,
            source: "refused".into(),
        }));
        let after = status_after(Some(&first), Some(1), &down, &at(1_060));
        assert_eq!(after.reachable, Some(false));
        assert_eq!(after.conditions[0].reason, "ServiceUnreachable");
        assert_eq!(after.server_version.as_deref(), Some("16.4"));
    }
}
