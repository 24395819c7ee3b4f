//! DatabaseQueryResource templates, shared by admission (which compiles them) and the reconciler
//! (which renders them), so what is admitted is what runs.
//!
//! - [`object`]: `spec.template` → one Kubernetes object per row. The template is parsed as YAML
//!   with its Jinja tags masked, and each string is rendered on its own, so a row value can never
//!   change the object's structure.
//! - [`status_query`]: `spec.statusUpdateQueryTemplate` → SQL text with placeholders and the
//!   values to bind; nothing interpolated is ever spliced into the SQL text.

mod child;
mod mask;
pub mod object;
pub mod status_query;
mod tags;

use minijinja::value::{Value, ValueKind};
use minijinja::{AutoEscape, Environment, Error, Output, State, UndefinedBehavior};

pub use child::{Child, ChildError, ChildRules, check_child, qualified_kind};
pub use object::ObjectTemplate;
pub use status_query::{Param, StatusQuery};

/// Instructions one rendering of one string (or one status-query value) may execute. A string's
/// template is a few dozen instructions; this leaves room for a loop over a JSON column of a few
/// thousand items, and stops an endless or quadratic one after a few milliseconds — at 10,000
/// rows per poll a runaway template costs seconds, not the controller.
pub const FUEL: u64 = 100_000;

/// Nesting depth of macro calls, loops and conditions. minijinja's own cap is 500; the
/// reconciler renders on Tokio's worker threads, whose stacks are smaller than a main thread's.
const RECURSION_LIMIT: usize = 100;

/// The environment every template runs in: strict about undefined values (a missing column is
/// an error, not an empty string), no loader, no HTML escaping, trailing newlines kept (a YAML
/// block scalar's last newline is part of its value), fuel-limited.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(RECURSION_LIMIT);
    env.set_keep_trailing_newline(true);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_formatter(format_value);
    env
}

/// Maps and lists (JSON columns, `resource.metadata.labels`) print as JSON, the form a
/// Kubernetes field or an SQL `json` column accepts; everything else as minijinja prints it.
fn format_value(out: &mut Output<'_>, state: &State<'_, '_>, value: &Value) -> Result<(), Error> {
    match value.kind() {
        ValueKind::Map | ValueKind::Seq => {
            let json = serde_json::to_string(value)
                .map_err(|e| Error::new(minijinja::ErrorKind::BadSerialization, e.to_string()))?;
            out.write_str(&json).map_err(Error::from)
        }
        _ => minijinja::escape_formatter(out, state, value),
    }
}

/// The shared environment of compiled expressions (status-query values and typed scalars), which
/// must outlive the templates that hold them.
fn expressions() -> &'static Environment<'static> {
    static ENV: std::sync::LazyLock<Environment<'static>> = std::sync::LazyLock::new(environment);
    &ENV
}

/// A minijinja error as one line: its detail, and where in `source` it points when known.
fn describe(error: &Error, source: &str) -> String {
    let detail = match error.detail() {
        Some(detail) => format!("{}: {detail}", error.kind()),
        None => error.kind().to_string(),
    };
    let at = error
        .range()
        .and_then(|range| source.get(range))
        .filter(|text| !text.trim().is_empty());
    match at {
        Some(text) => format!("{detail} (at `{}`)", text.trim()),
        None => detail,
    }
}

/// A JSON value, as what an expression produced when it is a plain value; undefined is `None`.
fn to_json(value: &Value) -> Result<Option<serde_json::Value>, String> {
    if value.is_undefined() {
        return Ok(None);
    }
    serde_json::to_value(value)
        .map(Some)
        .map_err(|e| format!("cannot be represented as JSON: {e}"))
}
