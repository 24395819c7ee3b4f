use serde_json::json;

use super::*;

const EXAMPLE: &str = "UPDATE users SET synced_config = {{ resource.metadata.name }} WHERE user_id = {{ resource.metadata.labels.user_id }}";

fn error(source: &str, engine: Engine) -> String {
    StatusQuery::compile(source, engine).unwrap_err()
}

#[test]
fn values_become_numbered_placeholders_on_postgres() {
    let query = StatusQuery::compile(EXAMPLE, Engine::Postgres).unwrap();
    assert_eq!(
        query.sql(),
        "UPDATE users SET synced_config = $1 WHERE user_id = $2"
    );
    let resource = json!({"metadata": {"name": "user-a-config", "labels": {"user_id": "7"}}});
    assert_eq!(
        query.bind(&resource).unwrap(),
        [Param::Text("user-a-config".into()), Param::Text("7".into())]
    );
}

#[test]
fn values_become_question_marks_on_mysql() {
    let query = StatusQuery::compile(EXAMPLE, Engine::Mysql).unwrap();
    assert_eq!(
        query.sql(),
        "UPDATE users SET synced_config = ? WHERE user_id = ?"
    );
}

#[test]
fn hostile_values_are_parameters_never_sql() {
    let query = StatusQuery::compile(
        "UPDATE t SET note = {{ resource.data.note }} WHERE name = {{ resource.metadata.name }}",
        Engine::Postgres,
    )
    .unwrap();
    for hostile in [
        "'; DROP TABLE t;--",
        "\\' OR 1=1 -- ",
        "x\nkind: ClusterRole",
        "$1",
        "{{ 7*7 }}",
        "*/ /*",
    ] {
        let resource = json!({"data": {"note": hostile}, "metadata": {"name": hostile}});
        assert_eq!(query.sql(), "UPDATE t SET note = $1 WHERE name = $2");
        assert_eq!(
            query.bind(&resource).unwrap(),
            [Param::Text(hostile.into()), Param::Text(hostile.into())]
        );
    }
}

#[test]
fn parameters_keep_their_types() {
    let query = StatusQuery::compile(
        "UPDATE t SET a = {{ resource.n }}, b = {{ resource.f }}, c = {{ resource.b }}, \
         d = {{ resource.none }}, e = {{ resource.map }}, f = {{ resource.big }}, \
         g = {{ resource.n + 1 }}",
        Engine::Postgres,
    )
    .unwrap();
    let resource =
        json!({"n": 3, "f": 1.5, "b": false, "none": null, "map": {"k": [1]}, "big": u64::MAX});
    assert_eq!(
        query.bind(&resource).unwrap(),
        [
            Param::Int(3),
            Param::Float(1.5),
            Param::Bool(false),
            Param::Null,
            Param::Text("{\"k\":[1]}".into()),
            Param::Float(u64::MAX as f64),
            Param::Int(4),
        ]
    );
}

#[test]
fn undefined_values_name_the_expression() {
    let query = StatusQuery::compile(EXAMPLE, Engine::Postgres).unwrap();
    let missing_label = json!({"metadata": {"name": "x", "labels": {}}});
    assert_eq!(
        query.bind(&missing_label).unwrap_err(),
        "`{{ resource.metadata.labels.user_id }}` is undefined"
    );
    let no_labels = json!({"metadata": {"name": "x"}});
    let error = query.bind(&no_labels).unwrap_err();
    assert!(
        error.starts_with("`{{ resource.metadata.labels.user_id }}`: undefined value"),
        "{error}"
    );
}

#[test]
fn values_inside_quotes_or_comments_are_errors() {
    let cases = [
        (
            "UPDATE t SET a = '{{ resource.x }}'",
            Engine::Postgres,
            "a string literal ('…')",
        ),
        (
            "UPDATE t SET a = 'it''s {{ resource.x }}'",
            Engine::Postgres,
            "a string literal",
        ),
        (
            "UPDATE t SET a = E'\\'{{ resource.x }}'",
            Engine::Postgres,
            "a string literal",
        ),
        (
            "UPDATE t SET a = $$ {{ resource.x }} $$",
            Engine::Postgres,
            "a dollar-quoted string ($$…$$)",
        ),
        (
            "UPDATE t SET a = $q$ {{ resource.x }} $q$",
            Engine::Postgres,
            "a dollar-quoted string ($q$…$q$)",
        ),
        (
            "UPDATE t SET \"{{ resource.x }}\" = 1",
            Engine::Postgres,
            "a quoted identifier (\"…\")",
        ),
        (
            "UPDATE t SET a = 1 -- {{ resource.x }}",
            Engine::Postgres,
            "a comment (-- …)",
        ),
        (
            "UPDATE t SET a = 1 /* /* */ {{ resource.x }} */",
            Engine::Postgres,
            "a comment (/* … */)",
        ),
        (
            "UPDATE t SET a = \"{{ resource.x }}\"",
            Engine::Mysql,
            "a string literal (\"…\")",
        ),
        (
            "UPDATE t SET a = '\\{{ resource.x }}'",
            Engine::Mysql,
            "a string literal ('…')",
        ),
        (
            "UPDATE t SET `{{ resource.x }}` = 1",
            Engine::Mysql,
            "a quoted identifier (`…`)",
        ),
        (
            "UPDATE t SET a = 1 # {{ resource.x }}",
            Engine::Mysql,
            "a comment (# …)",
        ),
        (
            "UPDATE t SET a = 1 -- {{ resource.x }}",
            Engine::Mysql,
            "a comment (-- …)",
        ),
    ];
    for (sql, engine, inside) in cases {
        let error = error(sql, engine);
        assert!(
            error.contains(&format!("is inside {inside}")),
            "{sql}: {error}"
        );
        assert!(
            error.contains("it would be sent as text inside the"),
            "{sql}: {error}"
        );
        assert!(error.contains("write `{{ x }}` bare, it is bound as a value"));
    }
    let positioned = error("UPDATE t\nSET a = '{{ resource.x }}'", Engine::Postgres);
    assert!(
        positioned.starts_with("`{{ resource.x }}` at line 2, column 10 is inside a string literal ('…') opened at line 2, column 9"),
        "{positioned}"
    );
}

#[test]
fn quotes_and_comments_that_close_leave_values_bare() {
    for (sql, engine, expected) in [
        (
            "UPDATE t SET a = 'x''y', b = {{ resource.x }} -- done",
            Engine::Postgres,
            "UPDATE t SET a = 'x''y', b = $1 -- done",
        ),
        (
            "UPDATE t SET a = $tag$ it's $$ $tag$ || {{ resource.x }}",
            Engine::Postgres,
            "UPDATE t SET a = $tag$ it's $$ $tag$ || $1",
        ),
        (
            "UPDATE t SET a = E'\\'' || {{ resource.x }} /* c */ WHERE b = {{ resource.y }}",
            Engine::Postgres,
            "UPDATE t SET a = E'\\'' || $1 /* c */ WHERE b = $2",
        ),
        (
            "UPDATE t SET a = '\\'' , b = {{ resource.x }}, c=1--{{ resource.y }}",
            Engine::Mysql,
            "UPDATE t SET a = '\\'' , b = ?, c=1--?",
        ),
        (
            "UPDATE `t` SET `a` = {{ resource.x }} {# dropped #}WHERE id = {{ resource.y }}",
            Engine::Mysql,
            "UPDATE `t` SET `a` = ? WHERE id = ?",
        ),
        // A placeholder stays one token: `b =$1AND` would be an identifier on PostgreSQL.
        (
            "UPDATE t SET a = 1 WHERE b ={{ resource.x }}AND c = 2",
            Engine::Postgres,
            "UPDATE t SET a = 1 WHERE b =$1 AND c = 2",
        ),
    ] {
        let query = StatusQuery::compile(sql, engine).unwrap();
        assert_eq!(query.sql(), expected, "{sql}");
    }
}

#[test]
fn statements_placeholders_and_batches_are_refused() {
    let statement = error(
        "UPDATE t SET a = {% if resource.x %}1{% else %}2{% endif %}",
        Engine::Postgres,
    );
    assert!(
        statement.starts_with(
            "`{% if resource.x %}` at line 1, column 18: statements are not supported here"
        ),
        "{statement}"
    );
    assert!(statement.contains("CASE or COALESCE"));
    let own = error(
        "UPDATE t SET a = $1 WHERE b = {{ resource.x }}",
        Engine::Postgres,
    );
    assert!(
        own.starts_with("the SQL text has a placeholder of its own ($n) at line 1, column 18"),
        "{own}"
    );
    let own = error(
        "UPDATE t SET a = ? WHERE b = {{ resource.x }}",
        Engine::Mysql,
    );
    assert!(own.contains("placeholder of its own (?)"), "{own}");
    // `?` is an operator on PostgreSQL and text inside quotes on both.
    assert!(StatusQuery::compile("UPDATE t SET a = '?' WHERE b ? 'k'", Engine::Postgres).is_ok());
    assert!(
        StatusQuery::compile("UPDATE t SET a = '?', b = {{ resource.x }}", Engine::Mysql).is_ok()
    );
    let batch = error(
        "UPDATE t SET a = {{ resource.x }}; DROP TABLE t",
        Engine::Postgres,
    );
    assert_eq!(batch, "must be exactly one statement, found 2");
    let ddl = error("DROP TABLE t", Engine::Postgres);
    assert!(ddl.starts_with("must be one data statement"), "{ddl}");
    let open = error("UPDATE t SET a = 'x", Engine::Postgres);
    assert_eq!(
        open,
        "a string literal ('…') opened at line 1, column 18 does not close"
    );
    let bad = error("UPDATE t SET a = {{ resource. }}", Engine::Postgres);
    assert!(
        bad.starts_with("`{{ resource. }}` at line 1, column 18: syntax error"),
        "{bad}"
    );
}

#[test]
fn compiled_queries_cross_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<StatusQuery>();
}
