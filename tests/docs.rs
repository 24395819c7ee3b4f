//! The documentation stays honest: every relative link in `docs/` and the READMEs resolves (file
//! and heading), every repository path the docs name exists, every example and kind has its
//! page, and the AdmissionPolicy page lists every rule.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The Markdown files whose links are checked: `docs/**/*.md` and the READMEs.
fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![
        root().join("README.md"),
        root().join("certs/README.md"),
        root().join("webhooks/README.md"),
    ];
    files.extend(docs_files());
    files
}

fn docs_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&root().join("docs"), &mut out);
    out
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The lines outside fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    let mut lines = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            lines.push(line);
        }
    }
    lines
}

/// The targets of `[text](target)` links.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in prose(text) {
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    out
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces to `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(path: &Path) -> BTreeSet<String> {
    prose(&read(path))
        .into_iter()
        .filter_map(|line| {
            let hashes = line.chars().take_while(|c| *c == '#').count();
            (hashes > 0 && line[hashes..].starts_with(' ')).then(|| slug(&line[hashes..]))
        })
        .collect()
}

#[test]
fn relative_links_resolve_to_files_and_headings() {
    let mut broken = Vec::new();
    for file in markdown_files() {
        let dir = file.parent().unwrap();
        for link in links(&read(&file)) {
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            let (target, anchor) = match link.split_once('#') {
                Some((target, anchor)) => (target, Some(anchor)),
                None => (link.as_str(), None),
            };
            let path = if target.is_empty() {
                file.clone()
            } else {
                dir.join(target)
            };
            if !path.exists() {
                broken.push(format!("{}: {link}: no such file", file.display()));
                continue;
            }
            if let Some(anchor) = anchor
                && path.extension().is_some_and(|e| e == "md")
                && !anchors(&path).contains(anchor)
            {
                broken.push(format!("{}: {link}: no such heading", file.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// Repository paths written in backticks in `docs/` (`src/reconcile/guard.rs`,
/// `examples/30-pool.yaml`, …) exist, so a moved or renamed file breaks the docs' test, not
/// their reader.
#[test]
fn repository_paths_named_in_the_docs_exist() {
    const TOP: [&str; 9] = [
        "src/",
        "examples/",
        "charts/",
        "crds/",
        "tests/",
        "scripts/",
        "webhooks/",
        "certs/",
        "docs/",
    ];
    let mut missing = Vec::new();
    for file in docs_files() {
        for line in prose(&read(&file)) {
            for (i, quoted) in line.split('`').enumerate() {
                let is_path = i % 2 == 1
                    && TOP.iter().any(|top| quoted.starts_with(top))
                    && !quoted.contains([' ', '<', '*', '…']);
                if is_path && !root().join(quoted).exists() {
                    missing.push(format!("{}: `{quoted}`", file.display()));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "paths that do not exist:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_kind_and_example_has_its_page() {
    let kinds = root().join("docs/kinds");
    for kind in dbward::api::KINDS {
        let page = kinds.join(format!("{}.md", kind.kind.to_lowercase()));
        assert!(
            page.exists(),
            "{} has no page {}",
            kind.kind,
            page.display()
        );
    }
    let pages: String = docs_files().iter().map(|f| read(f)).collect();
    let mut examples: Vec<PathBuf> = std::fs::read_dir(root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    examples.sort();
    assert!(!examples.is_empty());
    for example in examples {
        let name = format!(
            "examples/{}",
            example.file_name().unwrap().to_str().unwrap()
        );
        assert!(pages.contains(&name), "no page in docs/ shows {name}");
    }
}

#[test]
fn the_admission_policy_page_lists_every_rule() {
    let page = read(&root().join("docs/kinds/admissionpolicy.md"));
    for rule in dbward::admission::Rule::ALL {
        let row = format!("| `{}` | ", rule.name());
        assert!(
            page.contains(&row),
            "docs/kinds/admissionpolicy.md does not list the rule {}",
            rule.name()
        );
    }
}
