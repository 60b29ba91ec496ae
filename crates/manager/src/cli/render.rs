//! `fledge-manager render -f FILE [--phase bootstrap|full] [-o yaml|json]`.

use std::path::Path;

use anyhow::Context;
use fledge_core::render::{Phase, render, to_yaml_stream};
use fledge_core::validate::{Document, load_and_validate};

use super::{Exit, read_input, report_field_errors};

/// Renders every WorkloadCluster of a spec file; see [`super::Command::Render`].
pub fn run(file: &Path, phase: &str, output: &str) -> anyhow::Result<Exit> {
    let phase: Phase = phase.parse().map_err(|e| anyhow::anyhow!("--phase: {e}"))?;
    let text = read_input(file)?;
    let docs = match load_and_validate(&text) {
        Ok(docs) => docs,
        Err(errors) => {
            report_field_errors(&errors);
            return Ok(Exit::BadInput);
        }
    };
    let mut objects = Vec::new();
    for doc in &docs {
        if let Document::WorkloadCluster(cluster) = doc {
            let rendered = render(cluster, phase)
                .with_context(|| format!("rendering WorkloadCluster/{}", doc.name()))?;
            objects.extend(rendered);
        }
    }
    if objects.is_empty() {
        eprintln!("{}: no WorkloadCluster to render", file.display());
        return Ok(Exit::BadInput);
    }
    match output {
        "json" => {
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects});
            println!("{}", serde_json::to_string_pretty(&list)?);
        }
        _ => print!("{}", to_yaml_stream(&objects)),
    }
    Ok(Exit::Success)
}
