//! Quoting of identifiers and literals for each engine, and the name limits checked before any
//! SQL is sent.
//!
//! Every identifier that reaches a statement goes through one of the `*_ident` functions; every
//! value that a statement cannot take as a bound parameter (DDL) goes through a `*_literal`
//! function. The MySQL functions assume the session's `sql_mode` does not contain
//! `NO_BACKSLASH_ESCAPES` (the MySQL server module clears it on every connection).

/// PostgreSQL's identifier limit (`NAMEDATALEN - 1`), in bytes.
pub const PG_MAX_NAME_BYTES: usize = 63;
/// MySQL's user name limit, in characters (MariaDB allows 128; 32 keeps names portable).
pub const MYSQL_MAX_USER_CHARS: usize = 32;
/// MySQL's database (schema) name limit, in characters.
pub const MYSQL_MAX_DATABASE_CHARS: usize = 64;

/// A name the SQL layer refuses before sending anything to the server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("{kind} name must not be empty")]
    Empty {
        /// What the name names (`role`, `database`, …).
        kind: &'static str,
    },
    /// The name is longer than the engine allows.
    #[error("{kind} name {name:?} is {len} {unit} long; the limit is {limit} {unit}")]
    TooLong {
        /// What the name names.
        kind: &'static str,
        /// The refused name.
        name: String,
        /// Its length in `unit`.
        len: usize,
        /// The engine's limit in `unit`.
        limit: usize,
        /// `bytes` or `characters`.
        unit: &'static str,
    },
    /// The name contains something the engine cannot store.
    #[error("{kind} name {name:?} is invalid: {reason}")]
    Invalid {
        /// What the name names.
        kind: &'static str,
        /// The refused name.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
}

impl NameError {
    /// A short, bounded label for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            NameError::Empty { .. } => "name_empty",
            NameError::TooLong { .. } => "name_too_long",
            NameError::Invalid { .. } => "name_invalid",
        }
    }
}

fn check_common(kind: &'static str, name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { kind });
    }
    if name.contains('\0') {
        return Err(NameError::Invalid {
            kind,
            name: name.to_owned(),
            reason: "contains a NUL character",
        });
    }
    Ok(())
}

/// Checks a PostgreSQL identifier (role, database, parameter): non-empty, no NUL, at most 63
/// bytes (PostgreSQL would silently truncate a longer one, and then act on another name).
pub fn check_pg_name(kind: &'static str, name: &str) -> Result<(), NameError> {
    check_common(kind, name)?;
    if name.len() > PG_MAX_NAME_BYTES {
        return Err(NameError::TooLong {
            kind,
            name: name.to_owned(),
            len: name.len(),
            limit: PG_MAX_NAME_BYTES,
            unit: "bytes",
        });
    }
    Ok(())
}

/// Checks a MySQL user or role name: non-empty, no NUL, at most 32 characters.
pub fn check_mysql_user(kind: &'static str, name: &str) -> Result<(), NameError> {
    check_common(kind, name)?;
    let len = name.chars().count();
    if len > MYSQL_MAX_USER_CHARS {
        return Err(NameError::TooLong {
            kind,
            name: name.to_owned(),
            len,
            limit: MYSQL_MAX_USER_CHARS,
            unit: "characters",
        });
    }
    Ok(())
}

/// Checks a MySQL database name: non-empty, no NUL, no trailing space (MySQL refuses it), at
/// most 64 characters.
pub fn check_mysql_database(name: &str) -> Result<(), NameError> {
    let kind = "database";
    check_common(kind, name)?;
    if name.ends_with(' ') {
        return Err(NameError::Invalid {
            kind,
            name: name.to_owned(),
            reason: "ends with a space",
        });
    }
    let len = name.chars().count();
    if len > MYSQL_MAX_DATABASE_CHARS {
        return Err(NameError::TooLong {
            kind,
            name: name.to_owned(),
            len,
            limit: MYSQL_MAX_DATABASE_CHARS,
            unit: "characters",
        });
    }
    Ok(())
}

/// Checks that a MySQL database can be named in `GRANT … ON db.*`: the name with its pattern
/// characters (`_`, `%`, `\`) escaped must still fit in 64 characters.
pub fn check_mysql_grant_database(name: &str) -> Result<(), NameError> {
    check_mysql_database(name)?;
    let escaped = name.chars().count()
        + name
            .chars()
            .filter(|c| matches!(c, '_' | '%' | '\\'))
            .count();
    if escaped > MYSQL_MAX_DATABASE_CHARS {
        return Err(NameError::Invalid {
            kind: "database",
            name: name.to_owned(),
            reason: "escaped for GRANT (each '_', '%' and '\\' doubled) it exceeds 64 characters",
        });
    }
    Ok(())
}

/// Checks a per-role parameter name (`work_mem`, `myapp.setting`): letters, digits, `_`, `.`
/// and `$` only, as PostgreSQL's configuration names are.
pub fn check_parameter_name(name: &str) -> Result<(), NameError> {
    check_pg_name("parameter", name)?;
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '$'))
    {
        return Err(NameError::Invalid {
            kind: "parameter",
            name: name.to_owned(),
            reason: "only ASCII letters, digits, '_', '.' and '$' are allowed",
        });
    }
    Ok(())
}

/// Quotes a PostgreSQL identifier: `a"b` → `"a""b"`.
pub fn pg_ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Quotes a PostgreSQL string literal: `it's` → `'it''s'`; a value with a backslash becomes an
/// escape string (`E'a\\b'`) so the result is the same whatever `standard_conforming_strings` is.
pub fn pg_literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 3);
    if value.contains('\\') {
        out.push('E');
    }
    out.push('\'');
    for c in value.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Quotes a MySQL identifier: ``a`b`` → ``` `a``b` ```.
pub fn mysql_ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('`');
    for c in name.chars() {
        if c == '`' {
            out.push('`');
        }
        out.push(c);
    }
    out.push('`');
    out
}

/// Quotes a MySQL string literal, escaping `'` and `\` (and NUL, CR, LF, Ctrl-Z for
/// readability of logs).
pub fn mysql_literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\u{1a}' => out.push_str("\\Z"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// The host part dbward gives every MySQL account it manages.
pub const MYSQL_ACCOUNT_HOST: &str = "%";

/// A MySQL account: `'name'@'%'`.
pub fn mysql_account(user: &str) -> String {
    format!(
        "{}@{}",
        mysql_literal(user),
        mysql_literal(MYSQL_ACCOUNT_HOST)
    )
}

/// A database name as a `GRANT … ON db.*` pattern: quoted, with the pattern characters `_`,
/// `%` and `\` escaped, so that a grant on `my_db` never also matches `myXdb`.
pub fn mysql_grant_database(name: &str) -> String {
    let mut escaped = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        if matches!(c, '_' | '%' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    mysql_ident(&escaped)
}

/// The inverse of the escaping in [`mysql_grant_database`], for names read back from
/// `mysql.db`: `my\_db` → `my_db`. Returns `None` for a pattern with an unescaped wildcard
/// (a grant on several databases, which dbward never makes).
pub fn mysql_unescape_grant_database(pattern: &str) -> Option<String> {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next().unwrap_or('\\')),
            '_' | '%' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_quoting() {
        assert_eq!(pg_ident("plain"), r#""plain""#);
        assert_eq!(
            pg_ident(r#"x"; DROP TABLE t; --"#),
            r#""x""; DROP TABLE t; --""#
        );
        assert_eq!(pg_literal("it's"), "'it''s'");
        assert_eq!(pg_literal(r"a\b'"), r"E'a\\b'''");
    }

    #[test]
    fn mysql_quoting() {
        assert_eq!(mysql_ident("a`b"), "`a``b`");
        assert_eq!(mysql_literal(r"it's \ "), r"'it''s \\ '");
        assert_eq!(mysql_account("u'1"), "'u''1'@'%'");
        assert_eq!(mysql_grant_database("my_db%"), r"`my\_db\%`");
        assert_eq!(mysql_grant_database("a`b"), "`a``b`");
    }

    #[test]
    fn grant_pattern_round_trip() {
        for name in ["my_db", "a%b", r"back\slash", "plain", "ü_ß"] {
            let escaped = mysql_grant_database(name);
            let inner = &escaped[1..escaped.len() - 1];
            assert_eq!(mysql_unescape_grant_database(inner).as_deref(), Some(name));
        }
        assert_eq!(mysql_unescape_grant_database("my_db"), None);
    }

    #[test]
    fn limits() {
        assert!(check_pg_name("role", &"a".repeat(63)).is_ok());
        assert!(matches!(
            check_pg_name("role", &"a".repeat(64)),
            Err(NameError::TooLong { limit: 63, .. })
        ));
        // 32 two-byte characters are 64 bytes: too long for PostgreSQL.
        assert!(check_pg_name("role", &"é".repeat(32)).is_err());
        assert!(check_mysql_user("user", &"é".repeat(32)).is_ok());
        assert!(check_mysql_user("user", &"a".repeat(33)).is_err());
        assert!(check_mysql_database(&"d".repeat(64)).is_ok());
        assert!(check_mysql_database(&"d".repeat(65)).is_err());
        assert!(check_mysql_database("trailing ").is_err());
        assert!(check_mysql_grant_database(&"d".repeat(64)).is_ok());
        assert!(check_mysql_grant_database(&format!("_{}", "d".repeat(63))).is_err());
        assert!(check_pg_name("role", "").is_err());
        assert!(check_pg_name("role", "a\0b").is_err());
        assert!(check_parameter_name("work_mem").is_ok());
        assert!(check_parameter_name("x = 1; --").is_err());
    }
}
