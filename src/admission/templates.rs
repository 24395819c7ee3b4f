//! The Jinja environments of DatabaseQueryResource templates, shared by admission (which compiles
//! them) and the reconciler (which renders them), so what is admitted is what runs.

use minijinja::value::Value;
use minijinja::{Environment, Error, ErrorKind, Output, State};

use crate::api::Engine;

/// The environment of `spec.template`: plain Jinja, strict about undefined values, so a typo in
/// a column name fails loudly instead of rendering an empty string.
pub fn resource_environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env
}

/// The environment of `spec.statusUpdateQueryTemplate`: every interpolated value becomes a quoted
/// SQL literal for `engine`, so a value can never inject SQL.
pub fn status_query_environment(engine: Engine) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_formatter(
        move |out: &mut Output<'_>, _state: &State<'_, '_>, value: &Value| {
            out.write_str(&sql_literal(value, engine))
                .map_err(|e| Error::new(ErrorKind::WriteFailure, e.to_string()))
        },
    );
    env
}

/// Compile a template in `env`; the error says where it fails.
pub fn compile(env: &Environment<'static>, source: &str) -> Result<(), String> {
    env.template_from_str(source)
        .map(|_| ())
        .map_err(|e| describe(&e))
}

/// Render a template in `env` with `context`.
pub fn render(env: &Environment<'static>, source: &str, context: Value) -> Result<String, String> {
    env.render_str(source, context).map_err(|e| describe(&e))
}

fn describe(error: &Error) -> String {
    match error.line() {
        Some(line) => format!(
            "line {line}: {}",
            error.detail().unwrap_or(&error.kind().to_string())
        ),
        None => error.to_string(),
    }
}

/// A value as an SQL literal: NULL, TRUE/FALSE, a number, or a quoted string.
pub fn sql_literal(value: &Value, engine: Engine) -> String {
    if value.is_none() || value.is_undefined() {
        return "NULL".into();
    }
    if value.kind() == minijinja::value::ValueKind::Bool {
        return if value.is_true() { "TRUE" } else { "FALSE" }.into();
    }
    if value.kind() == minijinja::value::ValueKind::Number {
        let text = value.to_string();
        if text.parse::<f64>().is_ok_and(f64::is_finite) {
            return text;
        }
    }
    let text = match value.as_str() {
        Some(s) => s.to_string(),
        None => value.to_string(),
    };
    quote_string(&text, engine)
}

/// A string literal: `'` doubled; on MySQL also `\` (which it treats as an escape by default).
pub fn quote_string(text: &str, engine: Engine) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('\'');
    for c in text.chars() {
        match c {
            '\'' => quoted.push_str("''"),
            '\\' if engine == Engine::Mysql => quoted.push_str("\\\\"),
            '\0' => {} // neither engine accepts NUL in a literal
            c => quoted.push(c),
        }
    }
    quoted.push('\'');
    quoted
}

#[cfg(test)]
mod tests {
    use minijinja::context;

    use super::*;

    #[test]
    fn interpolated_values_are_literals() {
        let env = status_query_environment(Engine::Postgres);
        let resource = serde_json::json!({"metadata": {"name": "x'; DROP TABLE users; --"}, "status": {"n": 3}});
        let sql = render(
            &env,
            "UPDATE t SET n = {{ resource.status.n }} WHERE name = {{ resource.metadata.name }} AND gone = {{ none }}",
            context! { resource => Value::from_serialize(&resource), none => Value::from(()) },
        )
        .unwrap();
        assert_eq!(
            sql,
            "UPDATE t SET n = 3 WHERE name = 'x''; DROP TABLE users; --' AND gone = NULL"
        );
        let mysql = status_query_environment(Engine::Mysql);
        let sql = render(&mysql, "{{ v }}", context! { v => "a\\' OR 1=1 --" }).unwrap();
        assert_eq!(sql, "'a\\\\'' OR 1=1 --'");
    }

    #[test]
    fn compile_errors_name_the_line() {
        let env = resource_environment();
        assert!(compile(&env, "kind: ConfigMap\nname: {{ row.name }}").is_ok());
        let error = compile(&env, "kind: ConfigMap\nname: {{ row.name ").unwrap_err();
        assert!(error.starts_with("line 2"), "{error}");
    }
}
