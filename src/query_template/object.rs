//! `spec.template` → one Kubernetes object per row.
//!
//! The template is parsed as YAML once, at compile time, with every Jinja tag masked by a plain
//! token; each string (value or key) holding tokens then becomes a small template of its own.
//! Rendering fills those strings in place, so whatever a row holds — a newline followed by
//! `kind: ClusterRole`, quotes, `{{ 7*7 }}` — stays text inside the field it was written to.

use std::io::Write;

use minijinja::value::{Value as Jinja, ValueKind};
use minijinja::{Environment, Expression};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::mask::{Masked, Piece};
use super::tags::{self, Tag, TagKind};

pub use super::child::{Child, ChildError, ChildRules, check_child, qualified_kind};

/// Text rendered from templates into one object, at most: what Kubernetes allows a ConfigMap's
/// or Secret's data. It bounds a loop that would otherwise build gigabytes before failing.
pub const MAX_RENDERED_BYTES: usize = 1 << 20;

/// A compiled `spec.template`.
pub struct ObjectTemplate {
    /// Holds one template per string with tags, named by its index.
    env: Environment<'static>,
    root: Node,
    api_version: Option<String>,
    kind: Option<String>,
    namespace: Option<String>,
}

impl std::fmt::Debug for ObjectTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectTemplate")
            .field("api_version", &self.api_version)
            .field("kind", &self.kind)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

enum Node {
    /// Written without Jinja.
    Literal(Value),
    /// A string with tags: a template in `env`.
    Text(Scalar),
    /// Exactly one `{{ expr }}` written plain after `key: ` (or `- `): a number, bool or null
    /// keeps its type (`replicas: {{ row.n }}`), anything else becomes a string.
    Native(Native),
    Map(Vec<(Key, Node)>),
    List(Vec<Node>),
}

enum Key {
    Literal(String),
    Text(Scalar),
}

struct Scalar {
    /// The template's name in the environment.
    name: String,
    /// Where it is in the object, for messages.
    path: String,
}

struct Native {
    expression: Expression<'static, 'static>,
    text: String,
    path: String,
}

impl ObjectTemplate {
    /// Parse `source` as one YAML mapping with its tags masked, and compile every string that
    /// holds tags.
    pub fn compile(source: &str) -> Result<ObjectTemplate, String> {
        let tags = tags::scan(source)?;
        refuse_other_templates(source, &tags)?;
        let masked = Masked::new(source, &tags);
        let document = parse_document(&masked.text, source, &tags)?;
        let serde_yaml::Value::Mapping(_) = &document else {
            return Err(format!(
                "must be a YAML mapping (one Kubernetes object), found {}",
                yaml_kind(&document)
            ));
        };
        let mut compiler = Compiler {
            env: super::environment(),
            source,
            tags: &tags,
            masked: &masked,
            count: 0,
        };
        let root = compiler.node(document, "")?;
        let field = |name: &str| literal_string(&root, &[name]);
        let (api_version, kind) = (field("apiVersion"), field("kind"));
        let namespace = literal_string(&root, &["metadata", "namespace"]);
        Ok(ObjectTemplate {
            env: compiler.env,
            root,
            api_version,
            kind,
            namespace,
        })
    }

    /// apiVersion of the template when written without Jinja.
    pub fn static_api_version(&self) -> Option<&str> {
        self.api_version.as_deref()
    }

    /// kind of the template when written without Jinja.
    pub fn static_kind(&self) -> Option<&str> {
        self.kind.as_deref()
    }

    /// metadata.namespace of the template when written without Jinja.
    pub fn static_namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The object for one row; `metadata` is the DatabaseQueryResource's. The error names the
    /// field (`metadata.name: …`).
    pub fn render(&self, row: &Map<String, Value>, metadata: &Value) -> Result<Value, String> {
        let context = minijinja::context! {
            row => Jinja::from_serialize(row),
            metadata => Jinja::from_serialize(metadata),
        };
        let mut renderer = Renderer {
            env: &self.env,
            context,
            budget: MAX_RENDERED_BYTES,
        };
        renderer.node(&self.root)
    }
}

/// Without a loader there are no other templates; but the strings of one object are templates
/// of one environment, and must not include each other.
fn refuse_other_templates(source: &str, tags: &[Tag]) -> Result<(), String> {
    for tag in tags.iter().filter(|t| t.kind == TagKind::Statement) {
        let keyword = tag.keyword(source);
        if matches!(keyword, "include" | "import" | "from" | "extends") {
            return Err(format!(
                "`{}` at {}: there are no other templates to {keyword}; write the object in this one",
                tag.text(source),
                tags::position(source, tag.start)
            ));
        }
    }
    Ok(())
}

/// Exactly one YAML document (empty ones, as around a `---`, are skipped as kubectl does).
fn parse_document(masked: &str, source: &str, tags: &[Tag]) -> Result<serde_yaml::Value, String> {
    let mut documents = Vec::new();
    for document in serde_yaml::Deserializer::from_str(masked) {
        let value = serde_yaml::Value::deserialize(document).map_err(|e| {
            let hint = statement_hint(source, tags);
            format!("is not valid YAML (with each Jinja tag read as a word): {e}{hint}")
        })?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    match documents.len() {
        0 => Err("is empty: it must render one Kubernetes object".into()),
        1 => {
            let mut document = documents.remove(0);
            document
                .apply_merge()
                .map_err(|e| format!("has an invalid YAML merge key (<<): {e}"))?;
            Ok(document)
        }
        n => Err(format!(
            "must be one YAML document, found {n} (separated by ---): each row renders one object"
        )),
    }
}

/// Why YAML may have failed: a `{% … %}` standing on a line of its own.
fn statement_hint(source: &str, tags: &[Tag]) -> String {
    tags.iter()
        .find(|t| t.kind == TagKind::Statement)
        .map(|tag| format!("; {}", statement_rule(source, tag)))
        .unwrap_or_default()
}

/// The rule for `{% … %}`, and why.
fn statement_rule(source: &str, tag: &Tag) -> String {
    format!(
        "`{}` at {} must open and close within one YAML value: the template is parsed as YAML \
         before rendering, so that a row cannot change its structure; for a value that depends \
         on the row write an inline `{{{{ a if c else b }}}}`",
        tag.text(source),
        tags::position(source, tag.start)
    )
}

struct Compiler<'a> {
    env: Environment<'static>,
    source: &'a str,
    tags: &'a [Tag],
    masked: &'a Masked,
    count: usize,
}

impl Compiler<'_> {
    fn node(&mut self, value: serde_yaml::Value, path: &str) -> Result<Node, String> {
        use serde_yaml::Value as Yaml;
        Ok(match value {
            Yaml::Null => Node::Literal(Value::Null),
            Yaml::Bool(b) => Node::Literal(Value::Bool(b)),
            Yaml::Number(n) => Node::Literal(
                json_number(&n)
                    .ok_or_else(|| format!("{}: {n} is not a number JSON can hold", shown(path)))?,
            ),
            Yaml::String(text) => self.string(text, path, true)?,
            Yaml::Sequence(items) => Node::List(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| self.node(item, &format!("{path}[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
            Yaml::Mapping(mapping) => {
                let mut entries = Vec::with_capacity(mapping.len());
                for (key, value) in mapping {
                    let (key, key_text) = self.key(key, path)?;
                    let child_path = join(path, &key_text);
                    entries.push((key, self.node(value, &child_path)?));
                }
                Node::Map(entries)
            }
            Yaml::Tagged(tagged) => {
                return Err(format!(
                    "{}: YAML tags ({}) are not supported; write the value without one",
                    shown(path),
                    tagged.tag
                ));
            }
        })
    }

    /// A mapping key, and how it is shown in paths.
    fn key(&mut self, key: serde_yaml::Value, path: &str) -> Result<(Key, String), String> {
        use serde_yaml::Value as Yaml;
        let text = match key {
            Yaml::String(text) => text,
            Yaml::Bool(b) => b.to_string(),
            Yaml::Number(n) => n.to_string(),
            other => {
                return Err(format!(
                    "{}: a key must be a string, found {}",
                    shown(path),
                    yaml_kind(&other)
                ));
            }
        };
        let shown_key = self.restore(&text);
        match self.string(text, &join(path, &shown_key), false)? {
            Node::Text(scalar) => Ok((Key::Text(scalar), shown_key)),
            Node::Literal(Value::String(text)) => Ok((Key::Literal(text), shown_key)),
            _ => unreachable!("a key is a literal or a text template"),
        }
    }

    /// A string: literal, a template, or (where `typed` allows) a typed `{{ expr }}`.
    fn string(&mut self, text: String, path: &str, typed: bool) -> Result<Node, String> {
        let pieces = self.masked.pieces(&text, self.tags.len());
        if !pieces.iter().any(|p| matches!(p, Piece::Tag(_))) {
            return Ok(Node::Literal(Value::String(text)));
        }
        if let [Piece::Tag(index)] = pieces[..]
            && typed
            && self.masked.native.contains(&index)
        {
            let tag = &self.tags[index];
            let expression = super::expressions()
                .compile_expression_owned(tag.inner(self.source).to_string())
                .map_err(|e| self.compile_error(path, &e, tag.text(self.source), &[index]))?;
            return Ok(Node::Native(Native {
                expression,
                text: tag.text(self.source).to_string(),
                path: path.to_string(),
            }));
        }
        let mut jinja = String::with_capacity(text.len());
        let mut used = Vec::new();
        for piece in &pieces {
            match piece {
                // A `{` the YAML text spelled with an escape must stay text.
                Piece::Literal(literal) => jinja.push_str(&literal.replace('{', "{{ '{' }}")),
                Piece::Tag(index) => {
                    jinja.push_str(self.tags[*index].text(self.source));
                    used.push(*index);
                }
            }
        }
        let name = self.count.to_string();
        self.count += 1;
        if let Err(e) = self.env.add_template_owned(name.clone(), jinja.clone()) {
            return Err(self.compile_error(path, &e, &jinja, &used));
        }
        Ok(Node::Text(Scalar {
            name,
            path: path.to_string(),
        }))
    }

    fn compile_error(
        &self,
        path: &str,
        error: &minijinja::Error,
        jinja: &str,
        used: &[usize],
    ) -> String {
        let detail = super::describe(error, jinja);
        let statement = used
            .iter()
            .map(|&i| &self.tags[i])
            .find(|t| t.kind == TagKind::Statement);
        match statement {
            Some(tag) => format!(
                "{}: {detail}; {}",
                shown(path),
                statement_rule(self.source, tag)
            ),
            None => format!("{}: {detail}", shown(path)),
        }
    }

    /// A masked string with its tags written back, for paths in messages.
    fn restore(&self, text: &str) -> String {
        self.masked
            .pieces(text, self.tags.len())
            .iter()
            .map(|piece| match piece {
                Piece::Literal(literal) => *literal,
                Piece::Tag(index) => self.tags[*index].text(self.source),
            })
            .collect()
    }
}

struct Renderer<'a> {
    env: &'a Environment<'static>,
    context: Jinja,
    /// Bytes still allowed for this object.
    budget: usize,
}

impl Renderer<'_> {
    fn node(&mut self, node: &Node) -> Result<Value, String> {
        Ok(match node {
            Node::Literal(value) => value.clone(),
            Node::Text(scalar) => Value::String(self.text(scalar)?),
            Node::Native(native) => self.native(native)?,
            Node::List(items) => Value::Array(
                items
                    .iter()
                    .map(|item| self.node(item))
                    .collect::<Result<_, _>>()?,
            ),
            Node::Map(entries) => {
                let mut object = Map::with_capacity(entries.len());
                for (key, value) in entries {
                    let (key, path) = match key {
                        Key::Literal(key) => (key.clone(), None),
                        Key::Text(scalar) => (self.text(scalar)?, Some(&scalar.path)),
                    };
                    let value = self.node(value)?;
                    if object.contains_key(&key) {
                        let path = path.map_or(key.as_str(), String::as_str);
                        return Err(format!(
                            "{}: renders the key {key:?}, which the object already has; a key \
                             may appear once",
                            shown(path)
                        ));
                    }
                    object.insert(key, value);
                }
                Value::Object(object)
            }
        })
    }

    fn text(&mut self, scalar: &Scalar) -> Result<String, String> {
        let template = self
            .env
            .get_template(&scalar.name)
            .map_err(|e| format!("{}: {e}", shown(&scalar.path)))?;
        let mut out = Limited {
            buffer: Vec::new(),
            budget: self.budget,
        };
        let rendered = template.render_captured_to(&self.context, &mut out);
        if out.budget == 0 && rendered.is_err() {
            return Err(self.too_large(&scalar.path));
        }
        rendered.map_err(|e| {
            format!(
                "{}: {}",
                shown(&scalar.path),
                super::describe(&e, template.source())
            )
        })?;
        self.budget = out.budget;
        String::from_utf8(out.buffer).map_err(|e| format!("{}: {e}", shown(&scalar.path)))
    }

    fn native(&mut self, native: &Native) -> Result<Value, String> {
        let path = shown(&native.path);
        let value = native
            .expression
            .eval(&self.context)
            .map_err(|e| format!("{path}: {}", super::describe(&e, &native.text)))?;
        let text = match value.kind() {
            ValueKind::Undefined => {
                return Err(format!("{path}: `{}` is undefined", native.text));
            }
            ValueKind::None | ValueKind::Bool | ValueKind::Number => {
                return super::to_json(&value)
                    .map(|json| json.unwrap_or(Value::Null))
                    .map_err(|e| format!("{path}: `{}` {e}", native.text));
            }
            ValueKind::String => value.as_str().unwrap_or_default().to_string(),
            ValueKind::Map | ValueKind::Seq => serde_json::to_string(&value)
                .map_err(|e| format!("{path}: `{}` {e}", native.text))?,
            _ => value.to_string(),
        };
        if text.len() > self.budget {
            return Err(self.too_large(&native.path));
        }
        self.budget -= text.len();
        Ok(Value::String(text))
    }

    fn too_large(&self, path: &str) -> String {
        format!(
            "{}: the rendered object is larger than {MAX_RENDERED_BYTES} bytes of templated text",
            shown(path)
        )
    }
}

/// A writer that refuses to grow past its budget.
struct Limited {
    buffer: Vec<u8>,
    budget: usize,
}

impl Write for Limited {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if bytes.len() > self.budget {
            self.budget = 0;
            return Err(std::io::Error::other("rendered text too large"));
        }
        self.budget -= bytes.len();
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A top-level literal string at `path` of the template (`["metadata", "namespace"]`).
fn literal_string(root: &Node, path: &[&str]) -> Option<String> {
    let mut node = root;
    for field in path {
        let Node::Map(entries) = node else {
            return None;
        };
        node = entries
            .iter()
            .find(|(key, _)| matches!(key, Key::Literal(k) if k == field))
            .map(|(_, value)| value)?;
    }
    match node {
        Node::Literal(Value::String(text)) => Some(text.clone()),
        _ => None,
    }
}

fn json_number(n: &serde_yaml::Number) -> Option<Value> {
    if let Some(i) = n.as_i64() {
        Some(Value::from(i))
    } else if let Some(u) = n.as_u64() {
        Some(Value::from(u))
    } else {
        n.as_f64()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
    }
}

fn yaml_kind(value: &serde_yaml::Value) -> &'static str {
    use serde_yaml::Value as Yaml;
    match value {
        Yaml::Null => "nothing",
        Yaml::Bool(_) => "a boolean",
        Yaml::Number(_) => "a number",
        Yaml::String(_) => "a string",
        Yaml::Sequence(_) => "a list",
        Yaml::Mapping(_) => "a mapping",
        Yaml::Tagged(_) => "a tagged value",
    }
}

/// `metadata.name`, `data[app.conf]`, `spec.ports[0]`.
fn join(path: &str, key: &str) -> String {
    let simple = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (path.is_empty(), simple) {
        (true, true) => key.to_string(),
        (false, true) => format!("{path}.{key}"),
        (_, false) => format!("{path}[{key}]"),
    }
}

/// The path as messages show it; the root is "the template".
fn shown(path: &str) -> &str {
    if path.is_empty() {
        "the template"
    } else {
        path
    }
}

#[cfg(test)]
#[path = "object_tests.rs"]
mod tests;
