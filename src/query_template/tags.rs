//! Finding the Jinja tags of a template the way minijinja's lexer does (default syntax), so that
//! the text around them can be parsed as YAML or SQL before any rendering.

/// What a tag is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TagKind {
    /// `{{ … }}`
    Expression,
    /// `{% … %}`, including a whole `{% raw %}…{% endraw %}` block
    Statement,
    /// `{# … #}`
    Comment,
}

/// One tag: `source[start..end]`, delimiters included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tag {
    pub kind: TagKind,
    pub start: usize,
    pub end: usize,
}

impl Tag {
    /// The tag as written.
    pub fn text<'s>(&self, source: &'s str) -> &'s str {
        &source[self.start..self.end]
    }

    /// Between the delimiters, without whitespace-control markers (`{{- x +}}` → ` x `).
    pub fn inner<'s>(&self, source: &'s str) -> &'s str {
        let inner = &source[self.start + 2..self.end - 2];
        let inner = inner.strip_prefix(['-', '+']).unwrap_or(inner);
        inner.strip_suffix(['-', '+']).unwrap_or(inner)
    }

    /// The first word of a statement (`if`, `for`, `raw`, …).
    pub fn keyword<'s>(&self, source: &'s str) -> &'s str {
        self.inner(source)
            .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .find(|word| !word.is_empty())
            .unwrap_or_default()
    }
}

/// `line L, column C` (1-based) of a byte offset.
pub(crate) fn position(source: &str, offset: usize) -> String {
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .unwrap_or_default()
        .chars()
        .count()
        + 1;
    format!("line {line}, column {column}")
}

/// Every tag of `source`, in order; an error for one that does not close.
pub(crate) fn scan(source: &str) -> Result<Vec<Tag>, String> {
    let bytes = source.as_bytes();
    let mut tags = Vec::new();
    let mut at = 0;
    while let Some(found) = find(bytes, at, b"{") {
        let (kind, end) = match bytes.get(found + 1) {
            Some(b'{') => (TagKind::Expression, block_end(source, found, b"}}")),
            Some(b'%') => (TagKind::Statement, statement_end(source, found)),
            Some(b'#') => (
                TagKind::Comment,
                find(bytes, found + 2, b"#}").map(|end| end + 2),
            ),
            _ => {
                at = found + 1;
                continue;
            }
        };
        let Some(end) = end else {
            return Err(format!(
                "`{}` at {} does not close",
                excerpt(&source[found..]),
                position(source, found)
            ));
        };
        tags.push(Tag {
            kind,
            start: found,
            end,
        });
        at = end;
    }
    Ok(tags)
}

/// The end of `{% … %}`; a `{% raw %}` tag extends to its `{% endraw %}`.
fn statement_end(source: &str, start: usize) -> Option<usize> {
    let end = block_end(source, start, b"%}")?;
    let tag = Tag {
        kind: TagKind::Statement,
        start,
        end,
    };
    if tag.keyword(source) != "raw" || tag.inner(source).trim() != "raw" {
        return Some(end);
    }
    let mut at = end;
    while let Some(open) = find(source.as_bytes(), at, b"{%") {
        let close = block_end(source, open, b"%}")?;
        let inner = Tag {
            kind: TagKind::Statement,
            start: open,
            end: close,
        };
        if inner.inner(source).trim() == "endraw" {
            return Some(close);
        }
        at = open + 2;
    }
    None
}

/// The end (exclusive) of the tag opened at `start`: the first `closing` outside string literals
/// and brackets, as minijinja's lexer decides it.
fn block_end(source: &str, start: usize, closing: &[u8]) -> Option<usize> {
    let bytes = source.as_bytes();
    let mut at = start + 2;
    if matches!(bytes.get(at), Some(b'-' | b'+')) {
        at += 1;
    }
    let mut depth = 0usize;
    while at < bytes.len() {
        let rest = &bytes[at..];
        if depth == 0 {
            if rest.starts_with(closing) {
                return Some(at + 2);
            }
            if matches!(rest[0], b'-' | b'+') && rest[1..].starts_with(closing) {
                return Some(at + 3);
            }
        }
        match rest[0] {
            quote @ (b'\'' | b'"') => at = string_end(bytes, at, quote)?,
            b'(' | b'[' | b'{' => {
                depth += 1;
                at += 1;
            }
            b')' | b']' | b'}' => {
                depth = depth.saturating_sub(1);
                at += 1;
            }
            _ => at += 1,
        }
    }
    None
}

/// Past the string literal opened by `quote` at `start` (backslash escapes).
fn string_end(bytes: &[u8], start: usize, quote: u8) -> Option<usize> {
    let mut at = start + 1;
    while at < bytes.len() {
        match bytes[at] {
            b'\\' => at += 2,
            c if c == quote => return Some(at + 1),
            _ => at += 1,
        }
    }
    None
}

fn find(haystack: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|window| window == needle)
        .map(|found| found + from)
}

/// The start of a tag, cut for messages.
fn excerpt(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() > 40 {
        format!("{}…", line.chars().take(40).collect::<String>())
    } else {
        line.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(source: &str) -> Vec<(TagKind, &str)> {
        scan(source)
            .unwrap()
            .iter()
            .map(|tag| (tag.kind, tag.text(source)))
            .collect()
    }

    #[test]
    fn tags_end_where_minijinja_ends_them() {
        assert_eq!(
            texts("a {{ x }} b {%- if y -%} c {# note #} {{ {'k': {'v': 1}} }} {{ \"}}\" }}"),
            [
                (TagKind::Expression, "{{ x }}"),
                (TagKind::Statement, "{%- if y -%}"),
                (TagKind::Comment, "{# note #}"),
                (TagKind::Expression, "{{ {'k': {'v': 1}} }}"),
                (TagKind::Expression, "{{ \"}}\" }}"),
            ]
        );
        assert_eq!(
            texts("{% raw %}{{ not a tag }}{% endraw %} {{ y }}"),
            [
                (TagKind::Statement, "{% raw %}{{ not a tag }}{% endraw %}"),
                (TagKind::Expression, "{{ y }}"),
            ]
        );
        assert_eq!(texts("{ a } {x} }}"), []);
    }

    #[test]
    fn inner_text_and_keywords() {
        let source = "{{- row.name +}} {%- for x in y %}";
        let tags = scan(source).unwrap();
        assert_eq!(tags[0].inner(source), " row.name ");
        assert_eq!(tags[1].keyword(source), "for");
    }

    #[test]
    fn unclosed_tags_are_errors_with_their_position() {
        assert_eq!(
            scan("kind: ConfigMap\nname: {{ row.name").unwrap_err(),
            "`{{ row.name` at line 2, column 7 does not close"
        );
        assert!(scan("{# open").is_err());
        assert!(scan("{% raw %} never ends").is_err());
        assert!(scan("{{ 'unterminated }}").is_err());
    }
}
