//! The rules of a `ClusterProfile`: add-on names, sources and the dependency graph.

use std::collections::{HashMap, HashSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use super::cluster::{check_common_metadata, push};
use super::{FieldError, syntax};
use crate::spec::{Addon, ClusterProfileSpec, HelmChart};

/// Helm stores a release in Secrets labelled with its name and limits names to 53 characters.
const MAX_RELEASE_NAME: usize = 53;

pub(crate) fn check_metadata(metadata: &ObjectMeta, errors: &mut Vec<FieldError>) {
    // Clusters refer to a profile by name (`spec.profile`), which is a subdomain like most
    // object names.
    match metadata.name.as_deref() {
        None | Some("") => errors.push(FieldError::new("metadata.name", "required field missing")),
        Some(name) => {
            push(errors, "metadata.name", syntax::dns1123_subdomain(name));
        }
    }
    check_common_metadata(metadata, errors);
}

pub(crate) fn check_spec(spec: &ClusterProfileSpec, errors: &mut Vec<FieldError>) {
    let mut names = HashSet::new();
    for (index, addon) in spec.addons.iter().enumerate() {
        let base = format!("spec.addons[{index}]");
        match syntax::dns1123_label(&addon.name) {
            Err(reason) => errors.push(FieldError::new(format!("{base}.name"), reason)),
            Ok(()) if !names.insert(addon.name.as_str()) => errors.push(FieldError::new(
                format!("{base}.name"),
                format!("duplicate add-on name {:?}", addon.name),
            )),
            Ok(()) => {}
        }
        check_addon(addon, &base, errors);
    }
    check_dependencies(&spec.addons, errors);
}

fn check_addon(addon: &Addon, base: &str, errors: &mut Vec<FieldError>) {
    if addon.order < 0 {
        errors.push(FieldError::new(
            format!("{base}.order"),
            format!("must be at least 0, got {}", addon.order),
        ));
    }
    match (&addon.manifests, &addon.helm) {
        (Some(_), Some(_)) => errors.push(FieldError::new(
            base,
            "must set exactly one of manifests or helm, got both",
        )),
        (None, None) => errors.push(FieldError::new(
            base,
            "must set exactly one of manifests or helm, got neither",
        )),
        (Some(manifests), None) => check_manifests(manifests, &format!("{base}.manifests"), errors),
        (None, Some(helm)) => check_helm(helm, &format!("{base}.helm"), errors),
    }
    if let Some(health) = &addon.health {
        if let Some(timeout) = health.timeout_seconds
            && timeout < 1
        {
            errors.push(FieldError::new(
                format!("{base}.health.timeoutSeconds"),
                format!("must be at least 1, got {timeout}"),
            ));
        }
        if health.helm_release_ready && addon.helm.is_none() && addon.manifests.is_some() {
            errors.push(FieldError::new(
                format!("{base}.health.helmReleaseReady"),
                "only applies to helm add-ons",
            ));
        }
    }
}

fn check_manifests(manifests: &[Value], base: &str, errors: &mut Vec<FieldError>) {
    if manifests.is_empty() {
        errors.push(FieldError::new(base, "must not be empty"));
    }
    let mut seen = HashSet::new();
    for (index, manifest) in manifests.iter().enumerate() {
        let path = format!("{base}[{index}]");
        let mut complete = true;
        for (field, pointer) in [
            ("apiVersion", "/apiVersion"),
            ("kind", "/kind"),
            ("metadata.name", "/metadata/name"),
        ] {
            match manifest.pointer(pointer) {
                Some(Value::String(s)) if !s.trim().is_empty() => {}
                Some(Value::String(_)) => {
                    errors.push(FieldError::new(
                        format!("{path}.{field}"),
                        "must not be empty",
                    ));
                    complete = false;
                }
                Some(other) => {
                    errors.push(FieldError::new(
                        format!("{path}.{field}"),
                        format!("must be a string, got {}", super::schema::describe(other)),
                    ));
                    complete = false;
                }
                None => {
                    errors.push(FieldError::new(
                        format!("{path}.{field}"),
                        "required field missing",
                    ));
                    complete = false;
                }
            }
        }
        if let Some(namespace) = manifest.pointer("/metadata/namespace") {
            match namespace.as_str() {
                Some(namespace) => {
                    push(
                        errors,
                        &format!("{path}.metadata.namespace"),
                        syntax::dns1123_label(namespace),
                    );
                }
                None => errors.push(FieldError::new(
                    format!("{path}.metadata.namespace"),
                    format!(
                        "must be a string, got {}",
                        super::schema::describe(namespace)
                    ),
                )),
            }
        }
        // Two copies of one object would fight over the same fields under server-side apply.
        if complete {
            let identity = [
                "/apiVersion",
                "/kind",
                "/metadata/namespace",
                "/metadata/name",
            ]
            .map(|p| {
                manifest
                    .pointer(p)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            });
            if !seen.insert(identity) {
                let [api_version, kind, namespace, name] = identity;
                let object = if namespace.is_empty() {
                    format!("{api_version} {kind} {name}")
                } else {
                    format!("{api_version} {kind} {namespace}/{name}")
                };
                errors.push(FieldError::new(path, format!("duplicate object {object}")));
            }
        }
    }
}

fn check_helm(helm: &HelmChart, base: &str, errors: &mut Vec<FieldError>) {
    push(
        errors,
        &format!("{base}.repository"),
        syntax::chart_repository_url(&helm.repository),
    );
    for (field, value) in [("chart", &helm.chart), ("version", &helm.version)] {
        if value.trim().is_empty() {
            errors.push(FieldError::new(
                format!("{base}.{field}"),
                "must not be empty",
            ));
        }
    }
    if let Some(namespace) = &helm.namespace {
        push(
            errors,
            &format!("{base}.namespace"),
            syntax::dns1123_label(namespace),
        );
    }
    if let Some(release_name) = &helm.release_name {
        let path = format!("{base}.releaseName");
        if release_name.len() > MAX_RELEASE_NAME {
            errors.push(FieldError::new(
                path,
                format!(
                    "must be at most {MAX_RELEASE_NAME} characters, got {}",
                    release_name.len()
                ),
            ));
        } else {
            push(errors, &path, syntax::dns1123_subdomain(release_name));
        }
    }
}

/// `dependsOn` must name other add-ons of the profile, and the graph must be acyclic; each
/// cycle is reported once, at its first add-on, spelled out (`a -> b -> a`).
fn check_dependencies(addons: &[Addon], errors: &mut Vec<FieldError>) {
    // With duplicate names the graph is ambiguous; the first add-on of a name wins, and the
    // duplicate itself is already an error.
    let mut index_of: HashMap<&str, usize> = HashMap::new();
    for (index, addon) in addons.iter().enumerate() {
        index_of.entry(addon.name.as_str()).or_insert(index);
    }
    let mut edges: Vec<Vec<usize>> = vec![Vec::new(); addons.len()];
    for (index, addon) in addons.iter().enumerate() {
        for (dep_index, dep) in addon.depends_on.iter().enumerate() {
            let path = format!("spec.addons[{index}].dependsOn[{dep_index}]");
            if addon.depends_on[..dep_index].contains(dep) {
                errors.push(FieldError::new(
                    path,
                    format!("duplicate dependency {dep:?}"),
                ));
            } else if let Some(&target) = index_of.get(dep.as_str()) {
                edges[index].push(target);
            } else {
                errors.push(FieldError::new(path, format!("unknown add-on {dep:?}")));
            }
        }
    }
    for cycle in find_cycles(&edges) {
        let Some(&first) = cycle.first() else {
            continue;
        };
        let names: Vec<&str> = cycle
            .iter()
            .chain(std::iter::once(&first))
            .map(|&i| addons[i].name.as_str())
            .collect();
        errors.push(FieldError::new(
            format!("spec.addons[{first}].dependsOn"),
            format!("dependency cycle: {}", names.join(" -> ")),
        ));
    }
}

/// Finds cycles by depth-first search: every strongly connected component with a cycle
/// yields at least one. Each cycle is rotated to start at its lowest index, and cycles are
/// returned in order of that index.
fn find_cycles(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        New,
        OnStack,
        Done,
    }
    let mut state = vec![State::New; edges.len()];
    let mut cycles: Vec<Vec<usize>> = Vec::new();
    for root in 0..edges.len() {
        if state[root] != State::New {
            continue;
        }
        // An explicit stack of (node, next edge to follow) instead of recursion, so that a
        // long chain of add-ons cannot overflow the thread's stack.
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        state[root] = State::OnStack;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&target) = edges[node].get(*next) {
                *next += 1;
                match state[target] {
                    State::New => {
                        state[target] = State::OnStack;
                        stack.push((target, 0));
                    }
                    State::OnStack => {
                        let start = stack.iter().position(|&(n, _)| n == target).unwrap_or(0);
                        let mut cycle: Vec<usize> =
                            stack[start..].iter().map(|&(n, _)| n).collect();
                        let lowest = cycle
                            .iter()
                            .enumerate()
                            .min_by_key(|&(_, n)| *n)
                            .map_or(0, |(pos, _)| pos);
                        cycle.rotate_left(lowest);
                        if !cycles.contains(&cycle) {
                            cycles.push(cycle);
                        }
                    }
                    State::Done => {}
                }
            } else {
                state[node] = State::Done;
                stack.pop();
            }
        }
    }
    cycles.sort();
    cycles
}
