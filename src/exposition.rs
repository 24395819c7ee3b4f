//! Pure: the Prometheus text exposition format (version 0.0.4), the one writer behind every
//! `/metrics` dbward serves (the webhook's, the controllers', the leader gauge of `dbward run`).

use std::fmt::{Display, Write as _};

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    Counter,
    Gauge,
    Histogram,
}

impl Type {
    fn as_str(self) -> &'static str {
        match self {
            Type::Counter => "counter",
            Type::Gauge => "gauge",
            Type::Histogram => "histogram",
        }
    }
}

/// Text being written: families (`# HELP`, `# TYPE`), then their samples.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    pub fn new() -> Self {
        Exposition {
            out: String::with_capacity(4096),
        }
    }

    /// Starts the family `name`: its help text and type.
    pub fn family(&mut self, name: &str, type_: Type, help: &str) -> &mut Self {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(
            self.out,
            "# HELP {name} {help}\n# TYPE {name} {}",
            type_.as_str()
        );
        self
    }

    /// One sample of `name` (the family's name, or with `_bucket`, `_sum`, `_count`), its
    /// label values escaped as the format asks.
    pub fn sample(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        value: impl Display,
    ) -> &mut Self {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, text)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{label}=\"");
                for c in text.chars() {
                    match c {
                        '\\' => self.out.push_str("\\\\"),
                        '"' => self.out.push_str("\\\""),
                        '\n' => self.out.push_str("\\n"),
                        c => self.out.push(c),
                    }
                }
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
        self
    }

    /// A family with a single unlabelled sample.
    pub fn single(
        &mut self,
        name: &str,
        type_: Type,
        help: &str,
        value: impl Display,
    ) -> &mut Self {
        self.family(name, type_, help).sample(name, &[], value)
    }

    /// Appends text another writer produced (it must be whole families).
    pub fn extend(&mut self, text: &str) -> &mut Self {
        self.out.push_str(text);
        self
    }

    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_escaping() {
        let mut text = Exposition::new();
        text.family("dbward_x_total", Type::Counter, "Things.\nCounted.")
            .sample("dbward_x_total", &[("kind", "a\"b\\c\nd"), ("k", "v")], 3)
            .single("dbward_up", Type::Gauge, "Up.", 1);
        assert_eq!(
            text.finish(),
            "# HELP dbward_x_total Things.\\nCounted.\n# TYPE dbward_x_total counter\n\
             dbward_x_total{kind=\"a\\\"b\\\\c\\nd\",k=\"v\"} 3\n\
             # HELP dbward_up Up.\n# TYPE dbward_up gauge\ndbward_up 1\n"
        );
    }
}
