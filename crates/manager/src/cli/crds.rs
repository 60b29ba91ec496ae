//! `fledge-manager crds [--output-dir DIR]`.

use std::path::Path;

use anyhow::Context;

use super::Exit;
use crate::crds;

/// Prints the CRDs, or writes one file per CRD into `output_dir`.
pub fn run(output_dir: Option<&Path>) -> anyhow::Result<Exit> {
    match output_dir {
        None => print!("{}", crds::all_yaml()?),
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            for (file, crd) in crds::all() {
                let path = dir.join(file);
                std::fs::write(&path, crds::to_yaml(&crd)?)
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
        }
    }
    Ok(Exit::Success)
}
