//! A DatabaseQueryResource's session with its database: the query, read inside a read-only
//! transaction with a statement timeout and at most a bounded number of rows, each row as a
//! JSON object (column → value); then the status update statements, every value a bound
//! parameter. One connection per poll, with the CR's own credentials (never a connector's).

use std::time::Duration;

use futures_util::{StreamExt, pin_mut};
use mysql_async::prelude::Queryable;
use serde_json::{Map, Value};
use tokio_postgres::types::{Format, IsNull, ToSql, Type, to_sql_checked};

use super::connector::rustls_client_config;
use super::{ConnectionInfo, Engine, SslMode, chain};
use crate::query_template::status_query::Param;

/// One row: column name → value.
pub type Row = Map<String, Value>;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a query resource connects: the server, and the database its query runs in.
#[derive(Clone, Debug)]
pub struct QueryTarget {
    /// Server and credentials.
    pub info: ConnectionInfo,
    /// The database (`dbname`).
    pub database: String,
}

/// Why a poll or a status update failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    /// The server could not be reached, or refused the login.
    #[error("connecting to {engine} at {host}:{port} failed: {message}")]
    Connect {
        /// Engine.
        engine: Engine,
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// The driver's words.
        message: String,
    },
    /// More rows than the limit came back; nothing was applied.
    #[error(
        "the query returned more than {limit} rows (the AdmissionPolicy's limits.maxQueryRows); nothing was applied: narrow the query or ask the cluster admin for a higher limit"
    )]
    TooManyRows {
        /// The limit.
        limit: usize,
    },
    /// The server refused or failed the statement (syntax, permissions, timeout, a write in
    /// the read-only transaction).
    #[error("{what} failed: {message}")]
    Statement {
        /// `the query` or `the status update query`.
        what: &'static str,
        /// The server's words.
        message: String,
    },
}

/// An open session.
pub enum Session {
    /// PostgreSQL.
    Postgres(tokio_postgres::Client),
    /// MySQL or MariaDB.
    Mysql(mysql_async::Conn),
}

impl Session {
    /// Connects to `target` with its TLS mode.
    pub async fn open(target: &QueryTarget) -> Result<Session, QueryError> {
        let info = &target.info;
        let failed = |message: String| QueryError::Connect {
            engine: info.engine,
            host: info.host.clone(),
            port: info.port,
            message,
        };
        let mode = info.ssl_mode().map_err(|e| failed(e.to_string()))?;
        match info.engine {
            Engine::Postgres => {
                let mut config = tokio_postgres::Config::new();
                config
                    .host(&info.host)
                    .port(info.port)
                    .user(&info.user)
                    .password(&info.password)
                    .dbname(&target.database)
                    .application_name("dbward-query")
                    .connect_timeout(CONNECT_TIMEOUT);
                let tls = rustls_client_config(mode, info.ca_cert.as_deref())
                    .map_err(|e| failed(e.to_string()))?;
                let client = match tls {
                    Some(tls) => {
                        config.ssl_mode(if mode == SslMode::Prefer {
                            tokio_postgres::config::SslMode::Prefer
                        } else {
                            tokio_postgres::config::SslMode::Require
                        });
                        let connector = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
                        let (client, connection) = config
                            .connect(connector)
                            .await
                            .map_err(|e| failed(chain(&e)))?;
                        tokio::spawn(connection);
                        client
                    }
                    None => {
                        config.ssl_mode(tokio_postgres::config::SslMode::Disable);
                        let (client, connection) = config
                            .connect(tokio_postgres::NoTls)
                            .await
                            .map_err(|e| failed(chain(&e)))?;
                        tokio::spawn(connection);
                        client
                    }
                };
                Ok(Session::Postgres(client))
            }
            Engine::Mysql => {
                let opts = mysql_async::OptsBuilder::default()
                    .ip_or_hostname(info.host.clone())
                    .tcp_port(info.port)
                    .user(Some(info.user.clone()))
                    .pass(Some(info.password.clone()))
                    .db_name(Some(target.database.clone()))
                    .prefer_socket(false)
                    .ssl_opts(super::mysql::ssl_opts(mode, info.ca_cert.as_deref()));
                let connect = mysql_async::Conn::new(opts);
                let conn = tokio::time::timeout(CONNECT_TIMEOUT, connect)
                    .await
                    .map_err(|_| failed(format!("no answer within {CONNECT_TIMEOUT:?}")))?
                    .map_err(|e| failed(chain(&e)))?;
                Ok(Session::Mysql(conn))
            }
        }
    }

    /// Runs `query` (one read-only statement) inside a read-only transaction whose statements
    /// time out after `timeout`, and returns its rows; more than `max_rows` is an error and
    /// the rest is not read.
    pub async fn fetch(
        &mut self,
        query: &str,
        max_rows: usize,
        timeout: Duration,
    ) -> Result<Vec<Row>, QueryError> {
        let failed = |e: &(dyn std::error::Error + 'static)| QueryError::Statement {
            what: "the query",
            message: chain(e),
        };
        let query = query.trim().trim_end_matches(';');
        let mut rows = Vec::new();
        match self {
            Session::Postgres(client) => {
                let millis = timeout.as_millis().max(1);
                client
                    .batch_execute(&format!(
                        "BEGIN READ ONLY; SET LOCAL statement_timeout = {millis}"
                    ))
                    .await
                    .map_err(|e| failed(&e))?;
                // Every column becomes JSON on the server (numbers stay numbers, NULL is null,
                // other types their text); the newlines keep a trailing comment inside.
                let wrapped = format!("SELECT row_to_json(q)::text FROM (\n{query}\n) AS q");
                let stream = client
                    .query_raw(wrapped.as_str(), std::iter::empty::<&str>())
                    .await
                    .map_err(|e| failed(&e))?;
                pin_mut!(stream);
                while let Some(row) = stream.next().await {
                    let row = row.map_err(|e| failed(&e))?;
                    if rows.len() == max_rows {
                        return Err(QueryError::TooManyRows { limit: max_rows });
                    }
                    let text: String = row.try_get(0).map_err(|e| failed(&e))?;
                    let object = serde_json::from_str(&text).map_err(|e| failed(&e))?;
                    rows.push(object);
                }
                client
                    .batch_execute("ROLLBACK")
                    .await
                    .map_err(|e| failed(&e))?;
            }
            Session::Mysql(conn) => {
                let version: Option<String> = conn
                    .query_first("SELECT VERSION()")
                    .await
                    .map_err(|e| failed(&e))?;
                let set_timeout = if version.is_some_and(|v| v.contains("MariaDB")) {
                    format!("SET SESSION max_statement_time = {}", timeout.as_secs_f64())
                } else {
                    format!("SET SESSION max_execution_time = {}", timeout.as_millis())
                };
                conn.query_drop(set_timeout).await.map_err(|e| failed(&e))?;
                conn.query_drop("START TRANSACTION READ ONLY")
                    .await
                    .map_err(|e| failed(&e))?;
                let mut result = conn.exec_iter(query, ()).await.map_err(|e| failed(&e))?;
                while let Some(row) = result.next().await.map_err(|e| failed(&e))? {
                    if rows.len() == max_rows {
                        return Err(QueryError::TooManyRows { limit: max_rows });
                    }
                    rows.push(mysql_row(row));
                }
                drop(result);
                conn.query_drop("ROLLBACK").await.map_err(|e| failed(&e))?;
            }
        }
        Ok(rows)
    }

    /// Runs one status update statement (`?`/`$n` placeholders) with `params` bound; returns
    /// the rows it changed.
    pub async fn execute(&mut self, sql: &str, params: &[Param]) -> Result<u64, QueryError> {
        let failed = |e: &(dyn std::error::Error + 'static)| QueryError::Statement {
            what: "the status update query",
            message: chain(e),
        };
        match self {
            Session::Postgres(client) => {
                let texts: Vec<TextParam> = params.iter().map(TextParam::of).collect();
                client
                    .execute_raw(sql, texts.iter())
                    .await
                    .map_err(|e| failed(&e))
            }
            Session::Mysql(conn) => {
                let values: Vec<mysql_async::Value> = params.iter().map(mysql_value).collect();
                conn.exec_drop(sql, mysql_async::Params::Positional(values))
                    .await
                    .map_err(|e| failed(&e))?;
                Ok(conn.affected_rows())
            }
        }
    }

    /// Closes the session.
    pub async fn close(self) {
        match self {
            Session::Postgres(client) => drop(client),
            Session::Mysql(conn) => {
                let _ = conn.disconnect().await;
            }
        }
    }
}

/// A parameter sent as text, which the server parses as whatever type the statement gives
/// the placeholder: the same as a quoted literal would be, without ever being SQL text.
#[derive(Debug)]
struct TextParam(Option<String>);

impl TextParam {
    fn of(param: &Param) -> TextParam {
        TextParam(match param {
            Param::Null => None,
            Param::Bool(b) => Some(b.to_string()),
            Param::Int(i) => Some(i.to_string()),
            Param::Float(f) => Some(f.to_string()),
            Param::Text(t) => Some(t.clone()),
        })
    }
}

impl ToSql for TextParam {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match &self.0 {
            None => Ok(IsNull::Yes),
            Some(text) => {
                out.extend_from_slice(text.as_bytes());
                Ok(IsNull::No)
            }
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        Format::Text
    }

    to_sql_checked!();
}

fn mysql_value(param: &Param) -> mysql_async::Value {
    match param {
        Param::Null => mysql_async::Value::NULL,
        Param::Bool(b) => mysql_async::Value::Int(i64::from(*b)),
        Param::Int(i) => mysql_async::Value::Int(*i),
        Param::Float(f) => mysql_async::Value::Double(*f),
        Param::Text(t) => mysql_async::Value::Bytes(t.clone().into_bytes()),
    }
}

/// A MySQL row (binary protocol: typed values) as JSON: numbers stay numbers, NULL is null,
/// dates and times are text as MySQL prints them, bytes are text (lossy outside UTF-8).
fn mysql_row(row: mysql_async::Row) -> Row {
    let names: Vec<String> = row
        .columns_ref()
        .iter()
        .map(|c| c.name_str().into_owned())
        .collect();
    names
        .into_iter()
        .zip(row.unwrap())
        .map(|(name, value)| (name, mysql_json(value)))
        .collect()
}

fn mysql_json(value: mysql_async::Value) -> Value {
    use mysql_async::Value as V;
    match value {
        V::NULL => Value::Null,
        V::Bytes(bytes) => Value::String(String::from_utf8_lossy(&bytes).into_owned()),
        V::Int(i) => Value::from(i),
        V::UInt(u) => Value::from(u),
        V::Float(f) => {
            serde_json::Number::from_f64(f64::from(f)).map_or(Value::Null, Value::Number)
        }
        V::Double(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        date @ V::Date(..) | date @ V::Time(..) => {
            Value::String(date.as_sql(true).trim_matches('\'').to_owned())
        }
    }
}
