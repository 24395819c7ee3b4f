//! Pure: a DatabaseQueryResource's connection Secret as a [`QueryTarget`], with konnektr's key
//! names (`host`, `port`, `username`, `password`, `dbname`, `sslmode`), each overridable in
//! `connectionSecretRef`.

use std::collections::BTreeMap;

use crate::api::database_query_resource::{ConnectionSecretRef, QueryDatabase};
use crate::sql::query::QueryTarget;
use crate::sql::{ConnectionInfo, Engine, SslMode};

/// The namespace the Secret is read from: its own, or the CR's.
pub fn secret_namespace<'a>(reference: &'a ConnectionSecretRef, cr_namespace: &'a str) -> &'a str {
    reference.namespace.as_deref().unwrap_or(cr_namespace)
}

/// The target described by the Secret's decoded `data`; the error names the Secret's key and
/// the `connectionSecretRef` field that chose it.
pub fn target(
    database: &QueryDatabase,
    data: &BTreeMap<String, String>,
) -> Result<QueryTarget, String> {
    let r = &database.connection_secret_ref;
    let key = |chosen: &Option<String>, default: &'static str, field: &'static str| {
        (chosen.clone().unwrap_or_else(|| default.to_owned()), field)
    };
    let required = |(key, field): (String, &'static str)| -> Result<String, String> {
        data.get(&key)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                format!(
                    "Secret {:?} has no key {key:?} (spec.database.connectionSecretRef.{field}); it needs host, port, username, password and dbname keys, or the fields naming other keys",
                    r.name
                )
            })
    };
    let host = required(key(&r.host_key, "host", "hostKey"))?;
    let port_text = required(key(&r.port_key, "port", "portKey"))?;
    let port = port_text
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| {
            format!(
                "Secret {:?}: the port {port_text:?} is not a TCP port number (1-65535)",
                r.name
            )
        })?;
    let user = required(key(&r.user_key, "username", "userKey"))?;
    let (password_key, _) = key(&r.password_key, "password", "passwordKey");
    // A password is taken as is (it may be empty on a development server).
    let password = data.get(&password_key).cloned().ok_or_else(|| {
        format!(
            "Secret {:?} has no key {password_key:?} (spec.database.connectionSecretRef.passwordKey)",
            r.name
        )
    })?;
    let database_name = required(key(&r.db_name_key, "dbname", "dbNameKey"))?;
    // konnektr: without the key, and without `sslModeKey` naming one, `prefer`.
    let sslmode = match &r.ssl_mode_key {
        Some(k) => Some(required((k.clone(), "sslModeKey"))?),
        None => data
            .get("sslmode")
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty()),
    };
    if let Some(mode) = &sslmode {
        SslMode::parse(mode).map_err(|e| format!("Secret {:?}: {e}", r.name))?;
    }
    let ca_cert = data.get("ca.crt").filter(|c| !c.trim().is_empty()).cloned();
    Ok(QueryTarget {
        info: ConnectionInfo {
            engine: match database.engine {
                crate::api::Engine::Postgres => Engine::Postgres,
                crate::api::Engine::Mysql => Engine::Mysql,
            },
            host,
            port,
            user,
            password,
            sslmode,
            ca_cert,
        },
        database: database_name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database(reference: ConnectionSecretRef) -> QueryDatabase {
        QueryDatabase {
            engine: crate::api::Engine::Postgres,
            connection_secret_ref: reference,
        }
    }

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn konnektrs_keys_and_prefer_by_default() {
        let reference = ConnectionSecretRef {
            name: "db".into(),
            ..Default::default()
        };
        let t = target(
            &database(reference),
            &data(&[
                ("host", "db.example"),
                ("port", "5433"),
                ("username", "app"),
                ("password", ""),
                ("dbname", "orders"),
            ]),
        )
        .unwrap();
        assert_eq!(
            (t.info.host.as_str(), t.info.port, t.info.user.as_str()),
            ("db.example", 5433, "app")
        );
        assert_eq!(t.database, "orders");
        assert_eq!(t.info.ssl_mode().unwrap(), SslMode::Prefer);
    }

    #[test]
    fn overridden_keys_are_required_and_named() {
        let reference = ConnectionSecretRef {
            name: "db".into(),
            host_key: Some("DB_HOST".into()),
            ssl_mode_key: Some("DB_SSLMODE".into()),
            ..Default::default()
        };
        let base = [
            ("DB_HOST", "h"),
            ("port", "5432"),
            ("username", "u"),
            ("password", "p"),
            ("dbname", "d"),
        ];
        let error = target(&database(reference.clone()), &data(&base)).unwrap_err();
        assert!(
            error.contains("\"DB_SSLMODE\"") && error.contains("sslModeKey"),
            "{error}"
        );
        let mut with_mode = base.to_vec();
        with_mode.push(("DB_SSLMODE", "verify-full"));
        let t = target(&database(reference.clone()), &data(&with_mode)).unwrap();
        assert_eq!(t.info.ssl_mode().unwrap(), SslMode::VerifyFull);
        let error = target(&database(reference), &data(&[("port", "99999")])).unwrap_err();
        assert!(
            error.contains("\"DB_HOST\"") && error.contains("hostKey"),
            "{error}"
        );
    }

    #[test]
    fn a_bad_port_or_mode_is_refused() {
        let reference = ConnectionSecretRef {
            name: "db".into(),
            ..Default::default()
        };
        let mut d = data(&[
            ("host", "h"),
            ("port", "0"),
            ("username", "u"),
            ("password", "p"),
            ("dbname", "d"),
        ]);
        assert!(
            target(&database(reference.clone()), &d)
                .unwrap_err()
                .contains("port")
        );
        d.insert("port".into(), "5432".into());
        d.insert("sslmode".into(), "sometimes".into());
        assert!(
            target(&database(reference), &d)
                .unwrap_err()
                .contains("sslmode")
        );
    }
}
