//! "Exactly one read-only statement", decided by parsing the query in the engine's dialect.

use sqlparser::ast::{Query, SetExpr, Statement};
use sqlparser::dialect::{Dialect, MySqlDialect, PostgreSqlDialect};
use sqlparser::parser::Parser;

use crate::api::Engine;

/// `Ok` when `sql` is one read-only statement for `engine`; otherwise what is wrong.
pub fn check_read_only(sql: &str, engine: Engine) -> Result<(), String> {
    let statements = parse(sql, engine)?;
    let statement = one(&statements)?;
    match statement {
        Statement::Query(query) => check_query(query),
        other => Err(format!(
            "must be a read-only query (SELECT, WITH … SELECT, VALUES or TABLE), found {}",
            statement_name(other)
        )),
    }
}

/// `Ok` when `sql` (with `$n` or `?` placeholders) is one data statement for `engine` — UPDATE,
/// INSERT (or MySQL's REPLACE), DELETE, MERGE, CALL or SELECT — as a status write-back is;
/// otherwise what is wrong.
pub fn check_one_write(sql: &str, engine: Engine) -> Result<(), String> {
    let statements = parse(sql, engine)?;
    match one(&statements)? {
        Statement::Update { .. }
        | Statement::Insert(_)
        | Statement::Delete(_)
        | Statement::Merge { .. }
        | Statement::Call(_)
        | Statement::Query(_) => Ok(()),
        other => Err(format!(
            "must be one data statement (UPDATE, INSERT, DELETE, MERGE, CALL or SELECT), found {}",
            statement_name(other)
        )),
    }
}

fn parse(sql: &str, engine: Engine) -> Result<Vec<Statement>, String> {
    let dialect: &dyn Dialect = match engine {
        Engine::Postgres => &PostgreSqlDialect {},
        Engine::Mysql => &MySqlDialect {},
    };
    Parser::parse_sql(dialect, sql)
        .map_err(|e| format!("does not parse as {} SQL: {e}", engine.as_str()))
}

fn one(statements: &[Statement]) -> Result<&Statement, String> {
    match statements {
        [one] => Ok(one),
        [] => Err("must contain one statement, found none".into()),
        many => Err(format!(
            "must be exactly one statement, found {}",
            many.len()
        )),
    }
}

fn check_query(query: &Query) -> Result<(), String> {
    if !query.locks.is_empty() {
        return Err("must not lock rows (FOR UPDATE / FOR SHARE)".into());
    }
    if let Some(with) = &query.with {
        for cte in &with.cte_tables {
            check_query(&cte.query)?;
        }
    }
    check_set_expr(&query.body)
}

fn check_set_expr(body: &SetExpr) -> Result<(), String> {
    match body {
        SetExpr::Select(select) => {
            if select.into.is_some() {
                return Err("must not SELECT … INTO".into());
            }
            Ok(())
        }
        SetExpr::Query(query) => check_query(query),
        SetExpr::SetOperation { left, right, .. } => {
            check_set_expr(left)?;
            check_set_expr(right)
        }
        SetExpr::Values(_) | SetExpr::Table(_) => Ok(()),
        SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s) | SetExpr::Merge(s) => {
            Err(format!(
                "must be read-only, found {} inside the query",
                statement_name(s)
            ))
        }
    }
}

/// The statement's leading keywords, for messages.
fn statement_name(statement: &Statement) -> String {
    let text = statement.to_string();
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
        .to_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_queries_pass() {
        for sql in [
            "SELECT username, user_id FROM users WHERE status = 'active';",
            "WITH a AS (SELECT 1 AS x) SELECT x FROM a",
            "SELECT 1 UNION SELECT 2",
            "VALUES (1), (2)",
        ] {
            assert_eq!(check_read_only(sql, Engine::Postgres), Ok(()), "{sql}");
        }
        assert_eq!(
            check_read_only("SELECT `name` FROM t", Engine::Mysql),
            Ok(())
        );
    }

    #[test]
    fn one_data_statement_with_placeholders() {
        for sql in [
            "UPDATE users SET synced = $1 WHERE id = $2",
            "INSERT INTO t (a) VALUES ($1) ON CONFLICT (a) DO NOTHING",
            "DELETE FROM t WHERE a = $1",
            "SELECT set_status($1)",
        ] {
            assert_eq!(check_one_write(sql, Engine::Postgres), Ok(()), "{sql}");
        }
        assert_eq!(
            check_one_write("REPLACE INTO t (a) VALUES (?)", Engine::Mysql),
            Ok(())
        );
        assert_eq!(
            check_one_write("UPDATE t SET a = $1; DROP TABLE t", Engine::Postgres),
            Err("must be exactly one statement, found 2".into())
        );
        let error = check_one_write("DROP TABLE t", Engine::Postgres).unwrap_err();
        assert!(error.ends_with("found DROP TABLE"), "{error}");
    }

    #[test]
    fn writes_and_batches_fail() {
        for sql in [
            "DELETE FROM users",
            "SELECT 1; DROP TABLE users",
            "SELECT * FROM users FOR UPDATE",
            "SELECT * INTO copy FROM users",
            "WITH d AS (DELETE FROM users RETURNING *) SELECT * FROM d",
            "",
            "SELEC 1",
        ] {
            assert!(check_read_only(sql, Engine::Postgres).is_err(), "{sql}");
        }
    }
}
