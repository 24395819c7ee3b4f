//! Rules of PostgresCluster (the Zalando manifest's contract).

use k8s_openapi::api::core::v1::ResourceRequirements;
use serde_json::Value;

use super::checks::{Checker, Meta, is_dns_subdomain};
use super::field::{FieldError, key};
use super::policy::Rule;
use super::quantity;
use super::service_user::check_flags;
use super::tenancy::Reserved;
use crate::api::postgres_cluster::credentials_secret_name;
use crate::api::{Engine, PostgresClusterSpec};

pub(crate) fn validate(
    checker: &mut Checker<'_>,
    meta: &Meta,
    object: &Value,
    old: Option<&Value>,
) {
    let Some((spec, old_spec)) = checker.spec::<PostgresClusterSpec>(object, old) else {
        return;
    };
    let old_spec = old_spec.as_ref();
    let limits = checker.policy().limits.clone();

    checker.immutable("spec.teamId", &spec.team_id, old_spec.map(|o| &o.team_id));
    let prefix = format!("{}-", spec.team_id);
    if !meta.name.starts_with(&prefix) || meta.name.len() == prefix.len() {
        checker.report(
            Rule::TeamPrefix,
            FieldError::invalid(
                "metadata.name",
                meta.name.as_str(),
                format!("must start with teamId {prefix:?}"),
            ),
        );
    }

    if spec.number_of_instances < 0 {
        checker.structural(FieldError::invalid(
            "spec.numberOfInstances",
            spec.number_of_instances,
            "must be at least 0",
        ));
    }

    // Volume: a quantity, at least the minimum, never smaller than before.
    match quantity::parse(&spec.volume.size) {
        None => checker.structural(FieldError::invalid(
            "spec.volume.size",
            spec.volume.size.as_str(),
            "must be a quantity such as \"10Gi\"",
        )),
        Some(size) => {
            if let Some(min) = quantity::parse(&limits.min_volume_size)
                && size < min
            {
                checker.report(
                    Rule::MinVolume,
                    FieldError::invalid(
                        "spec.volume.size",
                        spec.volume.size.as_str(),
                        format!(
                            "must be at least {} (the AdmissionPolicy's limits.minVolumeSize)",
                            limits.min_volume_size
                        ),
                    ),
                );
            }
            if let Some(old) =
                old_spec.and_then(|o| quantity::parse(&o.volume.size).map(|q| (q, &o.volume.size)))
                && size < old.0
            {
                checker.report(
                    Rule::VolumeShrink,
                    FieldError::invalid(
                        "spec.volume.size",
                        spec.volume.size.as_str(),
                        format!("volumes may grow but never shrink; it was {}", old.1),
                    ),
                );
            }
        }
    }

    if !limits
        .allowed_postgres_versions
        .contains(&spec.postgresql.version)
    {
        checker.report(
            Rule::PostgresVersion,
            FieldError::not_supported(
                "spec.postgresql.version",
                spec.postgresql.version.as_str(),
                &limits.allowed_postgres_versions,
            ),
        );
    }

    // The cluster's own `postgres` superuser, predefined roles and template databases are the
    // image's, not the team's.
    let reserved = Reserved::postgres();

    // Users: names usable as roles and in the credential Secret's name; flags as for ServiceUser.
    for (user, flags) in &spec.users {
        let field = key("spec.users", user);
        reserved.check(checker, &field, user);
        let valid = user.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && user
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            && user.len() <= 63;
        if !valid {
            checker.report(
                Rule::Names,
                FieldError::invalid(&field, user.as_str(), "a user name must start with a lowercase letter or '_', contain only lowercase letters, digits, '_' and '-', and have at most 63 characters"),
            );
        } else if !is_dns_subdomain(&credentials_secret_name(user, &meta.name)) {
            checker.report(
                Rule::Names,
                FieldError::invalid(
                    &field,
                    user.as_str(),
                    format!(
                        "the credentials Secret {:?} would not be a valid name",
                        credentials_secret_name(user, &meta.name)
                    ),
                ),
            );
        }
        check_flags(
            checker,
            &field,
            flags.as_deref().unwrap_or_default(),
            Some(Engine::Postgres),
            limits.cluster_superuser_allowed,
            "limits.clusterSuperuserAllowed",
        );
    }
    for (database, owner) in &spec.databases {
        let field = key("spec.databases", database);
        reserved.check(checker, &field, database);
        if !super::checks::is_sql_name(database) || database.len() > 63 {
            checker.report(Rule::Names, FieldError::invalid(&field, database.as_str(), "a database name must match '^[a-zA-Z_][a-zA-Z0-9_-]*$' and have at most 63 characters"));
        }
        if !spec.users.contains_key(owner) {
            let users: Vec<&str> = spec.users.keys().map(String::as_str).collect();
            let message = if users.is_empty() {
                "the owner must be a user of spec.users, and spec.users is empty: add the owner there".to_string()
            } else {
                format!(
                    "the owner must be one of spec.users: {}",
                    users
                        .iter()
                        .map(|u| format!("{u:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            checker.report(
                Rule::DatabaseOwner,
                FieldError::invalid(&field, owner.as_str(), message),
            );
        }
    }

    check_resources(
        checker,
        "spec.resources",
        spec.resources.as_ref(),
        &limits.min_cpu,
        &limits.min_memory,
    );

    if !spec.sidecars.is_empty() && !limits.sidecars_enabled {
        checker.report(
            Rule::Sidecars,
            FieldError::forbidden(
                "spec.sidecars",
                "sidecars are disabled by the AdmissionPolicy (limits.sidecarsEnabled is false)",
            ),
        );
    }
    if !spec.init_containers.is_empty() && !limits.init_containers_enabled {
        checker.report(
            Rule::InitContainers,
            FieldError::forbidden("spec.initContainers", "init containers are disabled by the AdmissionPolicy (limits.initContainersEnabled is false)"),
        );
    }
    for (field, containers) in [
        ("spec.sidecars", &spec.sidecars),
        ("spec.initContainers", &spec.init_containers),
    ] {
        for (i, container) in containers.iter().enumerate() {
            for required in ["name", "image"] {
                if container
                    .get(required)
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    checker
                        .structural(FieldError::required(format!("{field}[{i}].{required}"), ""));
                }
            }
        }
    }

    if let Some(user) = spec.connection_pool.as_ref().and_then(|p| p.user.as_ref()) {
        reserved.check(checker, "spec.connectionPool.user", user);
    }
    if let Some(pool) = &spec.connection_pool
        && let Some(user) = &pool.user
        && spec.users.contains_key(user)
    {
        checker.report(
            Rule::Names,
            FieldError::invalid(
                "spec.connectionPool.user",
                user.as_str(),
                "must not be one of spec.users: the pooler's role is dbward's",
            ),
        );
    }

    if let Some(standby) = &spec.standby
        && standby.s3_wal_path.trim().is_empty()
    {
        checker.report(
            Rule::Standby,
            FieldError::required(
                "spec.standby.s3_wal_path",
                "a standby needs the S3 path of its source's WAL archive",
            ),
        );
    }

    if let Some(clone) = &spec.clone
        && let Some(timestamp) = &clone.timestamp
    {
        if !has_time_zone(timestamp) {
            checker.report(
                Rule::Clone,
                FieldError::invalid(
                    "spec.clone.timestamp",
                    timestamp.as_str(),
                    "must be RFC 3339 with a time zone, e.g. \"2017-12-19T12:40:33+01:00\"",
                ),
            );
        }
        if clone.uid.as_deref().is_none_or(str::is_empty) {
            checker.report(
                Rule::Clone,
                FieldError::required(
                    "spec.clone.uid",
                    "cloning to a timestamp needs the source cluster's metadata.uid",
                ),
            );
        }
    }
}

/// Requests and limits below the minimum are admitted with a warning; the reconciler gives the
/// StatefulSet the minimum (the object is never rewritten: GitOps tools would fight it).
fn check_resources(
    checker: &mut Checker<'_>,
    field: &str,
    resources: Option<&ResourceRequirements>,
    min_cpu: &str,
    min_memory: &str,
) {
    let Some(resources) = resources else { return };
    for (section, values) in [
        ("requests", &resources.requests),
        ("limits", &resources.limits),
    ] {
        for (resource, min, limit_field) in [
            ("cpu", min_cpu, "limits.minCpu"),
            ("memory", min_memory, "limits.minMemory"),
        ] {
            let Some(value) = values.as_ref().and_then(|v| v.get(resource)) else {
                continue;
            };
            let path = format!("{field}.{section}.{resource}");
            match (quantity::parse(&value.0), quantity::parse(min)) {
                (None, _) => checker.structural(FieldError::invalid(
                    path,
                    value.0.as_str(),
                    "must be a quantity",
                )),
                (Some(v), Some(m)) if v < m => checker.report(
                    Rule::MinResources,
                    FieldError::invalid(
                        path,
                        value.0.as_str(),
                        format!("below the minimum {min} (the AdmissionPolicy's {limit_field}); the StatefulSet gets {min}"),
                    ),
                ),
                _ => {}
            }
        }
    }
}

/// RFC 3339 date-time with a `Z` or `±hh:mm` offset.
fn has_time_zone(timestamp: &str) -> bool {
    let Some((date, time)) = timestamp.split_once(['T', 't']) else {
        return false;
    };
    let date_ok = date.len() == 10
        && date.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if !date_ok || time.len() < 8 {
        return false;
    }
    if let Some(clock) = time.strip_suffix(['Z', 'z']) {
        return clock.len() >= 8;
    }
    match time.rfind(['+', '-']) {
        Some(at) if at >= 8 => {
            let offset = &time[at + 1..];
            offset.len() == 5
                && offset.as_bytes()[2] == b':'
                && offset
                    .bytes()
                    .enumerate()
                    .all(|(i, b)| i == 2 || b.is_ascii_digit())
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::has_time_zone;

    #[test]
    fn time_zones() {
        assert!(has_time_zone("2017-12-19T12:40:33+01:00"));
        assert!(has_time_zone("2017-12-19T12:40:33Z"));
        assert!(has_time_zone("2017-12-19T12:40:33.5-05:30"));
        assert!(!has_time_zone("2017-12-19T12:40:33"));
        assert!(!has_time_zone("2017-12-19 12:40:33+01:00"));
        assert!(!has_time_zone("yesterday"));
    }
}
