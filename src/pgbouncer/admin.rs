//! PgBouncer's admin console (the `pgbouncer` pseudo-database), reached as the pooler's
//! dedicated admin user over the simple query protocol: `RELOAD`, `SHOW DATABASES`,
//! `SHOW POOLS`. The admin user exists only in PgBouncer's auth file; it is no server role, so
//! it can never be a superuser on the server.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio_postgres::{NoTls, SimpleQueryMessage};

/// How long a connection to the console may take: a pooler whose pods never run (no kubelet,
/// a crash loop) is reported, not waited for.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Where the console is and how to log in.
#[derive(Clone, PartialEq, Eq)]
pub struct Console {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// The admin user.
    pub user: String,
    /// Its password.
    pub password: String,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A failed console operation.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The console did not answer or refused the login.
    #[error("PgBouncer admin console {host}:{port} is unreachable: {message}")]
    Unreachable {
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// Cause.
        message: String,
    },
    /// A command failed.
    #[error("PgBouncer admin command {command} failed: {message}")]
    Command {
        /// The command.
        command: &'static str,
        /// Cause.
        message: String,
    },
}

/// One row of `SHOW DATABASES` or `SHOW POOLS`, by column name.
pub type Row = BTreeMap<String, String>;

impl Console {
    async fn connect(&self) -> Result<tokio_postgres::Client, AdminError> {
        let unreachable = |message: String| AdminError::Unreachable {
            host: self.host.clone(),
            port: self.port,
            message,
        };
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .user(&self.user)
            .password(&self.password)
            .dbname("pgbouncer")
            .ssl_mode(tokio_postgres::config::SslMode::Disable)
            .connect_timeout(CONNECT_TIMEOUT);
        let connect = config.connect(NoTls);
        let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| unreachable("timed out".to_owned()))?
            .map_err(|e| unreachable(e.to_string()))?;
        tokio::spawn(connection);
        Ok(client)
    }

    async fn run(&self, command: &'static str) -> Result<Vec<Row>, AdminError> {
        let client = self.connect().await?;
        let messages = client
            .simple_query(command)
            .await
            .map_err(|e| AdminError::Command {
                command,
                message: e.to_string(),
            })?;
        Ok(messages
            .into_iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(row) => Some(
                    row.columns()
                        .iter()
                        .enumerate()
                        .map(|(i, c)| {
                            (
                                c.name().to_owned(),
                                row.get(i).unwrap_or_default().to_owned(),
                            )
                        })
                        .collect(),
                ),
                _ => None,
            })
            .collect())
    }

    /// `RELOAD`: PgBouncer re-reads its files; established sessions stay.
    pub async fn reload(&self) -> Result<(), AdminError> {
        self.run("RELOAD").await.map(|_| ())
    }

    /// `SHOW DATABASES`, without the console's own `pgbouncer` entry.
    pub async fn show_databases(&self) -> Result<Vec<Row>, AdminError> {
        let mut rows = self.run("SHOW DATABASES").await?;
        rows.retain(|r| r.get("name").is_some_and(|n| n != "pgbouncer"));
        Ok(rows)
    }

    /// `SHOW POOLS`, without the console's own pool.
    pub async fn show_pools(&self) -> Result<Vec<Row>, AdminError> {
        let mut rows = self.run("SHOW POOLS").await?;
        rows.retain(|r| r.get("database").is_some_and(|n| n != "pgbouncer"));
        Ok(rows)
    }
}

impl Console {
    /// Brings PgBouncer in step with `desired`: `SHOW DATABASES`, and when it differs, `RELOAD`
    /// and look again. Returns whether it reloaded; `Err` says what still differs (its files may
    /// not have been refreshed yet) or why the console did not answer.
    pub async fn bring_in_step(
        &self,
        desired: &[super::config::PoolEntry],
    ) -> Result<bool, String> {
        let shown = self.show_databases().await.map_err(|e| e.to_string())?;
        if compare_databases(&shown, desired).is_ok() {
            return Ok(false);
        }
        self.reload().await.map_err(|e| e.to_string())?;
        let shown = self.show_databases().await.map_err(|e| e.to_string())?;
        compare_databases(&shown, desired).map(|()| true)
    }
}

/// Pure: whether `SHOW DATABASES` shows exactly `desired` (name, dbname, pool_mode, pool_size),
/// and if not, a sentence saying what differs.
pub fn compare_databases(
    shown: &[Row],
    desired: &[super::config::PoolEntry],
) -> Result<(), String> {
    let have: BTreeMap<&str, (&str, &str, &str)> = shown
        .iter()
        .map(|r| {
            let get = |k: &str| r.get(k).map(String::as_str).unwrap_or_default();
            (
                get("name"),
                (get("database"), get("pool_mode"), get("pool_size")),
            )
        })
        .collect();
    let sizes: Vec<String> = desired.iter().map(|d| d.size.to_string()).collect();
    let want: BTreeMap<&str, (&str, &str, &str)> = desired
        .iter()
        .zip(&sizes)
        .map(|(d, size)| {
            (
                d.name.as_str(),
                (d.dbname.as_str(), d.mode.as_str(), size.as_str()),
            )
        })
        .collect();
    if have == want {
        return Ok(());
    }
    let missing: Vec<&str> = want
        .iter()
        .filter(|(k, v)| have.get(*k) != Some(*v))
        .map(|(k, _)| *k)
        .collect();
    let extra: Vec<&str> = have
        .keys()
        .filter(|k| !want.contains_key(*k))
        .copied()
        .collect();
    Err(format!(
        "PgBouncer does not serve the pools as desired: missing or different {missing:?}, unexpected {extra:?}"
    ))
}

#[cfg(test)]
mod tests {
    use super::super::config::{Name, PoolEntry};
    use super::*;
    use crate::api::PoolMode;

    fn row(name: &str, db: &str, mode: &str, size: &str) -> Row {
        [
            ("name", name),
            ("database", db),
            ("pool_mode", mode),
            ("pool_size", size),
            ("host", "h"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn databases_compare_on_what_the_specs_say() {
        let desired = vec![PoolEntry {
            name: Name::new("n", "web").unwrap(),
            dbname: Name::new("n", "orders").unwrap(),
            mode: PoolMode::Transaction,
            size: 5,
        }];
        assert_eq!(
            compare_databases(&[row("web", "orders", "transaction", "5")], &desired),
            Ok(())
        );
        let err = compare_databases(&[row("web", "orders", "session", "5")], &desired).unwrap_err();
        assert!(err.contains("[\"web\"]"), "{err}");
        let err = compare_databases(
            &[
                row("web", "orders", "transaction", "5"),
                row("old", "x", "session", "1"),
            ],
            &desired,
        )
        .unwrap_err();
        assert!(err.contains("unexpected [\"old\"]"), "{err}");
        let secret = Console {
            host: "h".into(),
            port: 1,
            user: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{secret:?}").contains("hunter2"));
    }
}
