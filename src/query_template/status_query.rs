//! `spec.statusUpdateQueryTemplate` with bound parameters: every `{{ expr }}` becomes a
//! placeholder (`$1`, `$2`, … on PostgreSQL, `?` on MySQL) and its value a parameter, so
//! nothing a child object holds is ever part of the SQL text.

use minijinja::Expression;
use minijinja::value::Value as Jinja;

use super::tags::{self, TagKind};
use crate::admission::sqlcheck;
use crate::api::Engine;

/// A value bound to a placeholder.
#[derive(Clone, Debug, PartialEq)]
pub enum Param {
    Null,
    Bool(bool),
    Int(i64),
    /// Also integers beyond `i64`.
    Float(f64),
    /// Strings, and maps and lists as their JSON.
    Text(String),
}

/// A compiled status query.
pub struct StatusQuery {
    sql: String,
    /// In placeholder order, with the tag as written (for messages).
    values: Vec<(String, Expression<'static, 'static>)>,
}

impl std::fmt::Debug for StatusQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusQuery")
            .field("sql", &self.sql)
            .field(
                "values",
                &self.values.iter().map(|(t, _)| t).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl StatusQuery {
    /// The SQL of `source` with placeholders, checked to be one statement, and its values'
    /// expressions compiled.
    pub fn compile(source: &str, engine: Engine) -> Result<StatusQuery, String> {
        let tags = tags::scan(source)?;
        let mut sql = String::with_capacity(source.len());
        let mut values = Vec::new();
        // Where each placeholder is in `sql`, and where its tag is in `source`.
        let mut placeholders = Vec::new();
        let mut origins = Origins(Vec::new());
        let mut at = 0;
        for tag in &tags {
            origins.0.push((sql.len(), at));
            sql.push_str(&source[at..tag.start]);
            at = tag.end;
            match tag.kind {
                TagKind::Comment => {}
                TagKind::Statement => {
                    return Err(format!(
                        "`{}` at {}: statements are not supported here, only {{{{ … }}}} values \
                         (each bound as a parameter); choose in SQL with CASE or COALESCE",
                        tag.text(source),
                        tags::position(source, tag.start)
                    ));
                }
                TagKind::Expression => {
                    let expression = super::expressions()
                        .compile_expression_owned(tag.inner(source).to_string())
                        .map_err(|e| {
                            format!(
                                "`{}` at {}: {}",
                                tag.text(source),
                                tags::position(source, tag.start),
                                super::describe(&e, tag.inner(source))
                            )
                        })?;
                    values.push((tag.text(source).to_string(), expression));
                    let placeholder = match engine {
                        Engine::Postgres => format!("${}", values.len()),
                        Engine::Mysql => "?".to_string(),
                    };
                    // Keep the placeholder one token: `a{{ x }}` must not become `a$1`.
                    if sql.ends_with(|c: char| is_word(c) || c == '$' || c == '?') {
                        sql.push(' ');
                    }
                    placeholders.push((sql.len(), tag.start));
                    sql.push_str(&placeholder);
                    if source[at..].starts_with(|c: char| is_word(c) || c == '$' || c == '?') {
                        sql.push(' ');
                    }
                }
            }
        }
        origins.0.push((sql.len(), at));
        sql.push_str(&source[at..]);
        check_placement(&sql, engine, &placeholders, source, &origins)?;
        sqlcheck::check_one_write(&sql, engine)?;
        Ok(StatusQuery { sql, values })
    }

    /// The SQL text with placeholders.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// The parameters for `resource`, in placeholder order (undefined → an error naming the
    /// expression).
    pub fn bind(&self, resource: &serde_json::Value) -> Result<Vec<Param>, String> {
        let context = minijinja::context! { resource => Jinja::from_serialize(resource) };
        self.values
            .iter()
            .map(|(text, expression)| {
                let value = expression
                    .eval(&context)
                    .map_err(|e| format!("`{text}`: {}", super::describe(&e, text)))?;
                match super::to_json(&value).map_err(|e| format!("`{text}` {e}"))? {
                    None => Err(format!("`{text}` is undefined")),
                    Some(json) => Ok(param(json)),
                }
            })
            .collect()
    }
}

fn param(value: serde_json::Value) -> Param {
    use serde_json::Value as Json;
    match value {
        Json::Null => Param::Null,
        Json::Bool(b) => Param::Bool(b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Param::Int(i),
            None => Param::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Param::Text(s),
        other => Param::Text(other.to_string()),
    }
}

/// Where the pieces of the SQL text come from: (offset in the SQL, offset in the template).
struct Origins(Vec<(usize, usize)>);

impl Origins {
    /// The position in the template of an offset in the SQL text (outside placeholders).
    fn position(&self, source: &str, offset: usize) -> String {
        let (sql_start, source_start) = self
            .0
            .iter()
            .rev()
            .find(|(sql_start, _)| *sql_start <= offset)
            .copied()
            .unwrap_or_default();
        let at = (source_start + offset - sql_start).min(source.len());
        tags::position(source, at)
    }
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Where the lexer is in the SQL text.
#[derive(Clone, Debug, PartialEq)]
enum Context {
    Code,
    /// A string literal; `backslash` when `\` escapes (MySQL, PostgreSQL's `E'…'`).
    Literal {
        quote: u8,
        backslash: bool,
    },
    Identifier {
        quote: u8,
    },
    Dollar {
        tag: String,
    },
    LineComment {
        marker: &'static str,
    },
    BlockComment {
        depth: usize,
    },
}

impl Context {
    fn describe(&self) -> String {
        match self {
            Context::Code => "SQL code".into(),
            Context::Literal { quote, .. } => {
                format!("a string literal ({0}…{0})", *quote as char)
            }
            Context::Identifier { quote } => {
                format!("a quoted identifier ({0}…{0})", *quote as char)
            }
            Context::Dollar { tag } => format!("a dollar-quoted string (${tag}$…${tag}$)"),
            Context::LineComment { marker } => format!("a comment ({marker} …)"),
            Context::BlockComment { .. } => "a comment (/* … */)".into(),
        }
    }
}

/// Every placeholder is in SQL code, and no other placeholder is.
fn check_placement(
    sql: &str,
    engine: Engine,
    placeholders: &[(usize, usize)],
    source: &str,
    origins: &Origins,
) -> Result<(), String> {
    let mut lexer = Lexer {
        sql: sql.as_bytes(),
        engine,
        at: 0,
        context: Context::Code,
        opened: 0,
    };
    let mut next = placeholders.iter().peekable();
    while lexer.at < sql.len() {
        if let Some(&&(offset, tag_start)) = next.peek()
            && offset == lexer.at
        {
            next.next();
            if lexer.context != Context::Code {
                return Err(misplaced(
                    source,
                    tag_start,
                    &lexer.context,
                    origins.position(source, lexer.opened),
                ));
            }
            lexer.at += if engine == Engine::Mysql {
                1
            } else {
                1 + sql[offset + 1..]
                    .bytes()
                    .take_while(u8::is_ascii_digit)
                    .count()
            };
            continue;
        }
        if lexer.context == Context::Code && lexer.written_placeholder() {
            return Err(format!(
                "the SQL text has a placeholder of its own ({}) at {}; only {{{{ … }}}} values \
                 are bound, write the value as {{{{ resource.… }}}}",
                if engine == Engine::Mysql { "?" } else { "$n" },
                origins.position(source, lexer.at)
            ));
        }
        let (before, opened) = (lexer.context.clone(), lexer.opened);
        lexer.step();
        // A two-byte step (`\?`, `''`) may pass over a placeholder; it was inside `before`.
        if let Some(&&(offset, tag_start)) = next.peek()
            && offset < lexer.at
        {
            return Err(misplaced(
                source,
                tag_start,
                &before,
                origins.position(source, opened),
            ));
        }
    }
    match lexer.context {
        Context::Code | Context::LineComment { .. } => Ok(()),
        other => Err(format!(
            "{} opened at {} does not close",
            other.describe(),
            origins.position(source, lexer.opened)
        )),
    }
}

fn misplaced(source: &str, tag_start: usize, context: &Context, opened: String) -> String {
    let tag = &source[tag_start..];
    let tag = &tag[..tag.find("}}").map_or(tag.len(), |i| i + 2)];
    format!(
        "`{tag}` at {} is inside {} opened at {}: it would be sent as text inside the {}, not as \
         a parameter; write `{{{{ x }}}}` bare, it is bound as a value",
        tags::position(source, tag_start),
        context.describe(),
        opened,
        kind_word(context),
    )
}

fn kind_word(context: &Context) -> &'static str {
    match context {
        Context::Literal { .. } | Context::Dollar { .. } => "literal",
        Context::Identifier { .. } => "identifier",
        _ => "comment",
    }
}

struct Lexer<'s> {
    sql: &'s [u8],
    engine: Engine,
    at: usize,
    context: Context,
    /// Where the current quote or comment opened.
    opened: usize,
}

impl Lexer<'_> {
    fn rest(&self) -> &[u8] {
        &self.sql[self.at..]
    }

    fn after_word(&self) -> bool {
        self.at > 0 && {
            let c = self.sql[self.at - 1];
            c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
        }
    }

    /// `?` on MySQL, `$1` on PostgreSQL, in code.
    fn written_placeholder(&self) -> bool {
        match self.engine {
            Engine::Mysql => self.rest()[0] == b'?',
            Engine::Postgres => {
                self.rest()[0] == b'$'
                    && !self.after_word()
                    && self.rest().get(1).is_some_and(u8::is_ascii_digit)
            }
        }
    }

    /// One step in the current context.
    fn step(&mut self) {
        let context = std::mem::replace(&mut self.context, Context::Code);
        self.context = match context {
            Context::Code => return self.code(),
            Context::Literal { quote, backslash } => {
                match self.rest() {
                    [b'\\', _, ..] if backslash => self.at += 2,
                    [a, b, ..] if *a == quote && *b == quote => self.at += 2,
                    [a, ..] if *a == quote => {
                        self.at += 1;
                        return;
                    }
                    _ => self.at += 1,
                }
                Context::Literal { quote, backslash }
            }
            Context::Identifier { quote } => {
                match self.rest() {
                    [a, b, ..] if *a == quote && *b == quote => self.at += 2,
                    [a, ..] if *a == quote => {
                        self.at += 1;
                        return;
                    }
                    _ => self.at += 1,
                }
                Context::Identifier { quote }
            }
            Context::Dollar { tag } => {
                let close = format!("${tag}$");
                if self.rest().starts_with(close.as_bytes()) {
                    self.at += close.len();
                    return;
                }
                self.at += 1;
                Context::Dollar { tag }
            }
            Context::LineComment { marker } => {
                self.at += 1;
                if self.sql[self.at - 1] == b'\n' {
                    return;
                }
                Context::LineComment { marker }
            }
            Context::BlockComment { depth } => match self.rest() {
                [b'*', b'/', ..] => {
                    self.at += 2;
                    if depth == 1 {
                        return;
                    }
                    Context::BlockComment { depth: depth - 1 }
                }
                [b'/', b'*', ..] if self.engine == Engine::Postgres => {
                    self.at += 2;
                    Context::BlockComment { depth: depth + 1 }
                }
                _ => {
                    self.at += 1;
                    Context::BlockComment { depth }
                }
            },
        };
    }

    /// In code: what opens here, if anything.
    fn code(&mut self) {
        let mysql = self.engine == Engine::Mysql;
        let start = self.at;
        let (context, width) = match self.rest() {
            [b'\'', ..] => (
                Context::Literal {
                    quote: b'\'',
                    backslash: mysql,
                },
                1,
            ),
            [b'e' | b'E', b'\'', ..] if !mysql && !self.after_word() => (
                Context::Literal {
                    quote: b'\'',
                    backslash: true,
                },
                2,
            ),
            [b'"', ..] if mysql => (
                Context::Literal {
                    quote: b'"',
                    backslash: true,
                },
                1,
            ),
            [b'"', ..] => (Context::Identifier { quote: b'"' }, 1),
            [b'`', ..] if mysql => (Context::Identifier { quote: b'`' }, 1),
            [b'-', b'-', rest @ ..]
                if !mysql
                    || rest
                        .first()
                        .is_none_or(|c| c.is_ascii_whitespace() || c.is_ascii_control()) =>
            {
                (Context::LineComment { marker: "--" }, 2)
            }
            [b'#', ..] if mysql => (Context::LineComment { marker: "#" }, 1),
            [b'/', b'*', ..] => (Context::BlockComment { depth: 1 }, 2),
            [b'$', ..] if !mysql && !self.after_word() => match dollar_tag(self.rest()) {
                Some(tag) => {
                    let width = tag.len() + 2;
                    (Context::Dollar { tag }, width)
                }
                None => (Context::Code, 1),
            },
            _ => (Context::Code, 1),
        };
        if context != Context::Code {
            self.opened = start;
        }
        self.context = context;
        self.at += width;
    }
}

/// `$tag$` or `$$` at the start of `rest`: the tag.
fn dollar_tag(rest: &[u8]) -> Option<String> {
    let body = &rest[1..];
    let len = body
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_' || **c >= 0x80)
        .count();
    if body.first().is_some_and(u8::is_ascii_digit) || body.get(len) != Some(&b'$') {
        return None;
    }
    std::str::from_utf8(&body[..len]).ok().map(str::to_string)
}

#[cfg(test)]
#[path = "status_query_tests.rs"]
mod tests;
