//! Job definitions: the validated form of a job file.
//!
//! A job file is parsed into [`raw`] shapes (TOML with spans) and then
//! validated into a [`JobSpec`]. A `JobSpec` never holds a secret, only where
//! to read it, so it can be stored in the state file and logged.

mod raw;
mod spec;
mod validate;

use std::path::{Path, PathBuf};

pub use spec::*;
pub use validate::parse_job;

/// A job file path or directory given on the command line, expanded.
pub fn job_files(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    Ok(files)
}

/// Reads and validates one job file.
pub fn load_job(path: &Path) -> Result<JobSpec, JobError> {
    let text = std::fs::read_to_string(path).map_err(|e| JobError {
        file: path.display().to_string(),
        line: 0,
        column: 0,
        field: String::new(),
        message: format!("cannot read the job file: {e}"),
    })?;
    parse_job(&path.display().to_string(), &text)
}
