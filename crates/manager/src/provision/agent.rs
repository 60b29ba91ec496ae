//! `InstallingAgent`: the manifests of `deploy/agent/` filled in for this cluster (its client
//! certificate from the manager's CA, the CA, the manager's endpoint, the version) and applied
//! to the workload cluster.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use fledge_core::names;
use fledge_core::spec::WorkloadCluster;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};

use super::{Context, Error, Progress, objects};

/// The templates, in apply order (the namespace first, the Deployment last).
const TEMPLATES: &[(&str, &str)] = &[
    (
        "namespace.yaml",
        include_str!("../../../../deploy/agent/namespace.yaml"),
    ),
    (
        "rbac.yaml",
        include_str!("../../../../deploy/agent/rbac.yaml"),
    ),
    (
        "secret.yaml",
        include_str!("../../../../deploy/agent/secret.yaml"),
    ),
    (
        "deployment.yaml",
        include_str!("../../../../deploy/agent/deployment.yaml"),
    ),
];

/// Name of the agent's Deployment (in `fledge-system`).
pub const AGENT_DEPLOYMENT: &str = "fledge-agent";
/// Name of the Secret holding the agent's identity.
pub const AGENT_IDENTITY_SECRET: &str = "fledge-agent-identity";
/// The agent image's tag: the manager's own version, so both ends speak the same API.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Done when the agent's Deployment and identity Secret exist in the workload cluster;
/// otherwise issues a certificate and applies every template. The agent's readiness is not
/// awaited here (the handover checks that the agent connected).
///
/// # Errors
/// No CA to sign with, a template problem, or a read or an apply failed.
pub async fn run(ctx: &Context, cluster: &WorkloadCluster) -> Result<Progress, Error> {
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_default();
    let Some(target) =
        objects::workload_client(&ctx.client, &namespace, &name, ctx.call_timeout).await?
    else {
        return Ok(Progress::waiting(
            "WaitingForKubeconfig",
            format!("Secret {namespace}/{name}-kubeconfig does not exist"),
        ));
    };
    let deployments: Api<Deployment> = Api::namespaced(target.clone(), names::FLEDGE_NAMESPACE);
    let secrets: Api<Secret> = Api::namespaced(target.clone(), names::FLEDGE_NAMESPACE);
    let deployment = deployments
        .get_opt(AGENT_DEPLOYMENT)
        .await
        .map_err(Error::workload(
            "reading",
            format!("Deployment {}/{AGENT_DEPLOYMENT}", names::FLEDGE_NAMESPACE),
        ))?;
    let secret = secrets
        .get_opt(AGENT_IDENTITY_SECRET)
        .await
        .map_err(Error::workload(
            "reading",
            format!("Secret {}/{AGENT_IDENTITY_SECRET}", names::FLEDGE_NAMESPACE),
        ))?;
    if deployment.is_some() && secret.is_some() {
        return Ok(Progress::Done);
    }
    let Some(ca) = ctx.ca.as_ref() else {
        return Ok(Progress::waiting(
            "NoManagerCa",
            "the manager has no CA to sign the agent's certificate (serve with --tls-dir)",
        ));
    };
    // A certificate is issued only when no identity Secret exists, so re-running this phase
    // does not rotate the agent's certificate behind its back.
    let issued = match secret {
        Some(_) => None,
        None => Some(ca.issue_agent(&namespace, &name, &cluster.uid().unwrap_or_default())?),
    };
    let version = AGENT_VERSION.to_string();
    let mut vars = vec![
        ("version", version),
        ("cluster_name", name.clone()),
        ("cluster_namespace", namespace.clone()),
        ("ca_crt_b64", STANDARD.encode(ca.cert_pem())),
        ("manager_endpoint_b64", STANDARD.encode(&ctx.agent_endpoint)),
    ];
    if let Some(issued) = &issued {
        vars.push(("tls_crt_b64", STANDARD.encode(&issued.cert_pem)));
        vars.push(("tls_key_b64", STANDARD.encode(&issued.key_pem.0)));
    }
    tracing::info!(
        namespace = names::FLEDGE_NAMESPACE,
        "Installing the agent into the workload cluster"
    );
    for (file, template) in TEMPLATES {
        if *file == "secret.yaml" && issued.is_none() {
            continue;
        }
        for obj in manifests(file, template, &vars)? {
            objects::apply(&target, &obj, true).await?;
        }
    }
    Ok(Progress::Done)
}

/// Fills in `template` and parses it into one object per `---`-separated document.
///
/// # Errors
/// A placeholder has no value, or a document is not a YAML object.
pub fn manifests(
    file: &str,
    template: &str,
    vars: &[(&str, String)],
) -> Result<Vec<serde_json::Value>, Error> {
    let text = fill(template, vars).map_err(|e| Error::Template(format!("{file}: {e}")))?;
    let mut out = Vec::new();
    for doc in text.split("\n---\n") {
        if doc
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            continue;
        }
        let value: serde_json::Value =
            serde_saphyr::from_str(doc).map_err(|e| Error::Template(format!("{file}: {e}")))?;
        if !value.is_object() {
            return Err(Error::Template(format!(
                "{file}: a document is not an object"
            )));
        }
        out.push(value);
    }
    Ok(out)
}

/// Replaces each `{{name}}` in `template` with its value from `vars`.
///
/// # Errors
/// A placeholder is not in `vars`, or a `{{` is not closed.
pub fn fill(template: &str, vars: &[(&str, String)]) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| "unclosed {{ placeholder".to_string())?;
        let key = after[..end].trim();
        let value = vars
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| format!("no value for placeholder {key}"))?;
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vec<(&'static str, String)> {
        [
            "version",
            "cluster_name",
            "cluster_namespace",
            "ca_crt_b64",
            "manager_endpoint_b64",
            "tls_crt_b64",
            "tls_key_b64",
        ]
        .into_iter()
        .map(|k| (k, format!("v-{k}")))
        .collect()
    }

    #[test]
    fn fill_replaces_placeholders_and_rejects_unknown_ones() {
        let vars = vec![("a", "1".to_string())];
        assert_eq!(fill("x {{a}} y {{ a }}", &vars), Ok("x 1 y 1".to_string()));
        assert_eq!(
            fill("{{b}}", &vars),
            Err("no value for placeholder b".to_string())
        );
        assert!(fill("{{a", &vars).is_err());
    }

    #[test]
    fn templates_fill_into_the_agent_objects() {
        let mut kinds = Vec::new();
        for (file, template) in TEMPLATES {
            for obj in manifests(file, template, &vars()).expect("template fills") {
                kinds.push(format!(
                    "{}/{}",
                    obj["kind"].as_str().unwrap_or_default(),
                    obj["metadata"]["name"].as_str().unwrap_or_default()
                ));
                if obj["kind"] == "Deployment" {
                    let spec = &obj["spec"]["template"]["spec"];
                    assert_eq!(
                        spec["containers"][0]["image"],
                        "ghcr.io/fledge-dev/fledge-agent:v-version"
                    );
                    assert_eq!(
                        spec["tolerations"][0]["key"],
                        "node-role.kubernetes.io/control-plane"
                    );
                }
            }
        }
        assert_eq!(
            kinds,
            [
                "Namespace/fledge-system",
                "ServiceAccount/fledge-agent",
                "ClusterRole/fledge-agent",
                "ClusterRoleBinding/fledge-agent",
                "Secret/fledge-agent-identity",
                "Deployment/fledge-agent",
            ]
        );
    }
}
