//! `dbward validate`: the cluster's admission verdict, offline, for CI and GitOps pipelines.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use serde::Serialize;
use serde_json::Value;

use crate::admission::{self, FieldError, Operation, Request, Snapshot};
use crate::api;
use crate::manifests::{self, Manifest};

/// Check manifests as the admission webhook would: the CRD schema, then defaults, then every rule.
///
/// Exit status: 0 when every dbward object is allowed, 1 when any is denied, 2 when an input
/// cannot be read.
#[derive(clap::Args, Debug)]
pub struct ValidateArgs {
    /// Files or directories (recursively *.yaml, *.yml, *.json) to check; `-` reads standard input.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// The objects as they are now: an object also found here is checked as an UPDATE of it.
    #[arg(long, value_name = "PATH", num_args = 1..)]
    pub old: Vec<PathBuf>,
    /// An AdmissionPolicy to apply (default: one found among the inputs, else the built-in one).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// dbward's namespace (where connector Secrets live).
    #[arg(long, default_value = admission::DEFAULT_OPERATOR_NAMESPACE)]
    pub namespace: String,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// The verdict on one object, as `-o json` prints it.
#[derive(Serialize, Debug)]
pub struct Report {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub operation: &'static str,
    pub allowed: bool,
    pub errors: Vec<ErrorReport>,
    pub warnings: Vec<String>,
    pub patch: json_patch::Patch,
}

/// A field error in `-o json`.
#[derive(Serialize, Debug)]
pub struct ErrorReport {
    pub field: String,
    #[serde(rename = "type")]
    pub error_type: &'static str,
    pub message: String,
}

impl From<&FieldError> for ErrorReport {
    fn from(e: &FieldError) -> Self {
        ErrorReport {
            field: e.field.clone(),
            error_type: e.reason(),
            message: e.message.clone(),
        }
    }
}

pub fn run(args: &ValidateArgs) -> ExitCode {
    let (inputs, mut read_errors) = manifests::read_paths(&args.files);
    let (old, old_errors) = manifests::read_paths(&args.old);
    read_errors.extend(old_errors);
    let mut policy_objects = Vec::new();
    if let Some(path) = &args.policy {
        let (objects, errors) = manifests::read_paths(std::slice::from_ref(path));
        read_errors.extend(errors);
        match objects.into_iter().find(|m| m.kind() == "AdmissionPolicy") {
            Some(policy) => policy_objects.push(policy),
            None if read_errors.is_empty() => {
                eprintln!("error: {}: no AdmissionPolicy in it", path.display());
                return ExitCode::from(2);
            }
            None => {}
        }
    }
    for error in &read_errors {
        eprintln!("error: {error}");
    }
    for warning in files_without_dbward_objects(&inputs) {
        eprintln!("warning: {warning}");
    }

    let reports = validate(&inputs, &old, policy_objects.first(), &args.namespace);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let written = match args.output {
        Format::Json => serde_json::to_writer_pretty(&mut out, &reports)
            .map_err(std::io::Error::from)
            .and_then(|_| writeln!(out)),
        Format::Text => reports.iter().try_for_each(|r| write_text(&mut out, r)),
    };
    if let Err(e) = written.and_then(|_| out.flush()) {
        eprintln!("error: cannot write the output: {e}");
        return ExitCode::from(2);
    }
    if !read_errors.is_empty() {
        ExitCode::from(2)
    } else if reports.iter().any(|r| !r.allowed) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// The verdicts on every dbward object among `inputs`, in input order.
pub fn validate(
    inputs: &[Manifest],
    old: &[Manifest],
    policy: Option<&Manifest>,
    operator_namespace: &str,
) -> Vec<Report> {
    let mut snapshot = Snapshot::from_objects(
        old.iter().chain(inputs).map(|m| m.object.clone()),
        operator_namespace,
        false,
    );
    if let Some(policy) = policy {
        snapshot.insert(&policy.object);
        if policy.name() != api::admission_policy::POLICY_NAME {
            // An explicitly given policy applies whatever its name.
            if let Some(Ok(spec)) = policy
                .object
                .get("spec")
                .map(|s| serde_json::from_value(s.clone()))
            {
                snapshot.policy = spec;
            }
        }
    }
    let old_by_key: HashMap<(&str, &str, &str), &Manifest> = old
        .iter()
        .map(|m| ((m.kind(), m.namespace(), m.name()), m))
        .collect();

    inputs
        .iter()
        .filter(|m| m.is_dbward())
        .map(|m| {
            let previous = old_by_key
                .get(&(m.kind(), m.namespace(), m.name()))
                .map(|o| &o.object);
            check_one(m, previous, &snapshot)
        })
        .collect()
}

/// Pure: a line for each input file whose objects are all of other kinds (nothing in it was
/// checked: a mistyped `apiVersion` or the wrong file, most likely).
pub fn files_without_dbward_objects(inputs: &[Manifest]) -> Vec<String> {
    let mut files: Vec<(&str, usize, bool)> = Vec::new();
    for manifest in inputs {
        let ours = manifest.is_dbward();
        match files
            .iter_mut()
            .find(|(file, ..)| *file == manifest.source.file)
        {
            Some((_, count, any)) => {
                *count += 1;
                *any |= ours;
            }
            None => files.push((&manifest.source.file, 1, ours)),
        }
    }
    files
        .into_iter()
        .filter(|(_, _, any)| !any)
        .map(|(file, count, _)| {
            format!(
                "{file}: {count} object(s), none of a dbward kind (apiVersion {}/…): nothing in it was checked",
                api::GROUP
            )
        })
        .collect()
}

fn check_one(manifest: &Manifest, old: Option<&Value>, snapshot: &Snapshot) -> Report {
    let operation = if old.is_some() {
        Operation::Update
    } else {
        Operation::Create
    };
    let mut report = Report {
        api_version: manifest.api_version().to_string(),
        kind: manifest.kind().to_string(),
        namespace: manifest.namespace().to_string(),
        name: manifest.name().to_string(),
        operation: operation.as_str(),
        allowed: false,
        errors: Vec::new(),
        warnings: Vec::new(),
        patch: json_patch::Patch(Vec::new()),
    };
    if manifest.api_version() != api::API_VERSION || api::kind_info(manifest.kind()).is_none() {
        let kinds: Vec<&str> = api::KINDS.iter().map(|k| k.kind).collect();
        let error = if manifest.api_version() != api::API_VERSION {
            FieldError::not_supported("apiVersion", manifest.api_version(), &[api::API_VERSION])
        } else {
            FieldError::not_supported("kind", manifest.kind(), &kinds)
        };
        report.errors.push(ErrorReport::from(&error));
        return report;
    }
    let mut errors = admission::schema::check(manifest.kind(), &manifest.object);
    if manifest.name().is_empty() {
        errors.insert(0, FieldError::required("metadata.name", ""));
    }
    if !errors.is_empty() {
        report.errors = errors.iter().map(ErrorReport::from).collect();
        return report;
    }
    let namespace = manifest.namespace();
    let request = Request {
        operation,
        kind: manifest.kind(),
        namespace: (!namespace.is_empty()).then_some(namespace),
        name: manifest.name(),
        object: Some(&manifest.object),
        old_object: old,
        subresource: None,
    };
    let verdict = admission::admit(&request, snapshot);
    report.allowed = verdict.allowed;
    report.errors = verdict.errors.iter().map(ErrorReport::from).collect();
    report.warnings = verdict.warnings;
    report.patch = verdict.patch;
    report
}

/// What kubectl would show.
pub fn write_text(out: &mut impl Write, report: &Report) -> std::io::Result<()> {
    let object = format!("{}/{}", report.kind.to_lowercase(), report.name);
    for warning in &report.warnings {
        writeln!(out, "Warning: {object}: {warning}")?;
    }
    match report.errors.as_slice() {
        [] => {
            let defaulted: Vec<String> = report
                .patch
                .0
                .iter()
                .map(|op| op.path().to_string())
                .collect();
            if defaulted.is_empty() {
                writeln!(out, "{object} allowed")
            } else {
                writeln!(out, "{object} allowed (defaults: {})", defaulted.join(", "))
            }
        }
        [one] => writeln!(out, "{object} denied: {}: {}", one.field, one.message),
        many => {
            writeln!(out, "{object} denied:")?;
            many.iter()
                .try_for_each(|e| writeln!(out, "  * {}: {}", e.field, e.message))
        }
    }
}
