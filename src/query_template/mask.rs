//! Masking a template's Jinja tags so that the rest can be parsed as YAML: each tag becomes a
//! token that YAML reads as part of a plain string, and comes back when the strings are compiled.

use std::collections::BTreeSet;

use super::tags::{Tag, TagKind};

/// The template with each tag replaced by a token that YAML reads as part of a plain string.
pub(crate) struct Masked {
    pub text: String,
    /// Tokens are `{prefix}{index}x`; the prefix does not occur in the template.
    prefix: String,
    /// Tags written plain right after `key: ` or `- `, alone on their line.
    pub native: BTreeSet<usize>,
}

impl Masked {
    pub fn new(source: &str, tags: &[Tag]) -> Masked {
        let prefix = (0..)
            .map(|n| format!("jinjaTag{n}Q"))
            .find(|p| !source.contains(p.as_str()))
            .expect("some prefix is not in the template");
        let mut text = String::with_capacity(source.len());
        let mut native = BTreeSet::new();
        let mut at = 0;
        for (index, tag) in tags.iter().enumerate() {
            text.push_str(&source[at..tag.start]);
            let (before, after) = line_around(source, tag);
            let alone = before.trim().is_empty() && after.trim().is_empty();
            if tag.kind == TagKind::Comment && alone {
                // A comment on a line of its own leaves the line empty, as Jinja would.
                text.extend(tag.text(source).chars().filter(|&c| c == '\n'));
            } else {
                text.push_str(&format!("{prefix}{index}x"));
            }
            if tag.kind == TagKind::Expression && plain_value_position(before, after) {
                native.insert(index);
            }
            at = tag.end;
        }
        text.push_str(&source[at..]);
        Masked {
            text,
            prefix,
            native,
        }
    }

    /// `text` as literal pieces and tag indexes.
    pub fn pieces<'t>(&self, text: &'t str, tag_count: usize) -> Vec<Piece<'t>> {
        let mut pieces = Vec::new();
        let mut literal_start = 0;
        let mut at = 0;
        while let Some(found) = text[at..].find(&self.prefix).map(|i| i + at) {
            let digits_start = found + self.prefix.len();
            let digits = text[digits_start..]
                .bytes()
                .take_while(u8::is_ascii_digit)
                .count();
            let index = text[digits_start..digits_start + digits].parse::<usize>();
            let end = digits_start + digits;
            match index {
                Ok(index) if index < tag_count && text[end..].starts_with('x') => {
                    if found > literal_start {
                        pieces.push(Piece::Literal(&text[literal_start..found]));
                    }
                    pieces.push(Piece::Tag(index));
                    literal_start = end + 1;
                    at = end + 1;
                }
                _ => at = digits_start,
            }
        }
        if literal_start < text.len() {
            pieces.push(Piece::Literal(&text[literal_start..]));
        }
        pieces
    }
}

pub(crate) enum Piece<'t> {
    Literal(&'t str),
    Tag(usize),
}

/// The text of the tag's line before and after it.
fn line_around<'s>(source: &'s str, tag: &Tag) -> (&'s str, &'s str) {
    let line_start = source[..tag.start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = source[tag.end..]
        .find('\n')
        .map_or(source.len(), |i| tag.end + i);
    (&source[line_start..tag.start], &source[tag.end..line_end])
}

/// `key: {{ x }}` or `- {{ x }}`, with nothing after but a comment.
fn plain_value_position(before: &str, after: &str) -> bool {
    let head = before.trim_end();
    let spaced = head.len() < before.len();
    let after_value = after.trim_start();
    let nothing_after = after_value.trim_end().is_empty()
        || (after_value.starts_with('#') && after_value.len() < after.len());
    spaced
        && nothing_after
        && (head.ends_with(':') || head.trim_start() == "-" || head.ends_with(" -"))
}
