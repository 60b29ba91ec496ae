//! `fledge-manager validate -f FILE`.

use std::path::Path;

use fledge_core::validate::{Document, load_and_validate};

use super::{Exit, read_input, report_field_errors};

/// Validates a spec file; see [`super::Command::Validate`].
pub fn run(file: &Path) -> anyhow::Result<Exit> {
    let text = read_input(file)?;
    match load_and_validate(&text) {
        Ok(docs) => {
            let names: Vec<String> = docs
                .iter()
                .map(|d: &Document| format!("{}/{}", d.kind(), d.name()))
                .collect();
            println!("{}: OK ({})", file.display(), names.join(", "));
            Ok(Exit::Success)
        }
        Err(errors) => {
            report_field_errors(&errors);
            Ok(Exit::BadInput)
        }
    }
}
