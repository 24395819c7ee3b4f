//! `dbward crds`: print the CRDs, or write them to a directory, one file per kind.

use std::path::PathBuf;
use std::process::ExitCode;

/// Print the CustomResourceDefinitions of every dbward kind.
#[derive(clap::Args, Debug)]
pub struct CrdsArgs {
    /// Write one file per kind into this directory instead of printing a multi-document stream.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

pub fn run(args: &CrdsArgs) -> ExitCode {
    let Some(dir) = &args.out else {
        print!("{}", crate::crds::all_yaml());
        return ExitCode::SUCCESS;
    };
    if let Err(e) = std::fs::create_dir_all(dir) {
        eprintln!("error: cannot create {}: {e}", dir.display());
        return ExitCode::from(2);
    }
    for crd in crate::crds::all() {
        let path = dir.join(crate::crds::file_name(&crd));
        if let Err(e) = std::fs::write(&path, crate::crds::to_yaml(&crd)) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}
