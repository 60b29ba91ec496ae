//! Flux stand-ins, running where the `helm-controller` Deployment is available: the
//! source-controller part makes HelmRepositories and OCIRepositories Ready with an artifact
//! after a short fetch delay; the helm-controller part installs a HelmRelease (Ready and
//! Released, `status.history`, `lastAttemptedRevision`) after an install delay once its source
//! (`spec.chart.spec.sourceRef` or `spec.chartRef`) is Ready. Charts named in
//! [`HelmFaults`] fail to install (`Ready=False`, reason `InstallFailed`).

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tracing::info;

use super::machineset::age;
use super::{Cond, Ctx, Result, condition, deleting, get, name, ns, set_conditions, write_status};
use crate::world::World;

/// `helm.toolkit.fluxcd.io/v2`.
pub const HELM: &str = "helm.toolkit.fluxcd.io/v2";
/// `source.toolkit.fluxcd.io/v1`.
pub const SOURCE: &str = "source.toolkit.fluxcd.io/v1";

/// How long fetching a source's index or artifact takes (realistic).
const FETCH_DELAY: Duration = Duration::from_secs(3);
/// How long a Helm install takes (realistic).
const INSTALL_DELAY: Duration = Duration::from_secs(20);

/// Fault knob: the chart names whose installs fail.
#[derive(Debug, Default)]
pub struct HelmFaults {
    charts: Mutex<BTreeSet<String>>,
}

impl HelmFaults {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.charts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes installs of chart `chart` fail from now on.
    pub fn fail_chart(&self, chart: &str) {
        self.lock().insert(chart.to_owned());
    }

    /// Lets installs of chart `chart` succeed again.
    pub fn heal_chart(&self, chart: &str) {
        self.lock().remove(chart);
    }

    /// Whether installs of chart `chart` fail.
    pub fn fails(&self, chart: &str) -> bool {
        self.lock().contains(chart)
    }
}

impl World {
    /// Fault knob: HelmReleases of chart `chart` fail to install (in every cluster).
    pub fn fail_helm_chart(&self, chart: &str) {
        self.helm_faults.fail_chart(chart);
    }

    /// Undoes [`World::fail_helm_chart`].
    pub fn heal_helm_chart(&self, chart: &str) {
        self.helm_faults.heal_chart(chart);
    }

    /// The Helm fault knobs.
    pub fn helm_faults(&self) -> &HelmFaults {
        &self.helm_faults
    }
}

fn sha256(data: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data.as_bytes())))
}

fn ready_since(o: &Value) -> Option<Duration> {
    o["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready" && c["status"] == "True")
        .map(|c| age(&c["lastTransitionTime"]))
}

/// Reconciles a HelmRepository or OCIRepository (source-controller).
pub fn reconcile_source(ctx: &Ctx<'_>, src: &Value) -> Result {
    if deleting(src) || src["spec"]["suspend"] == true {
        return Ok(());
    }
    let generation = &src["metadata"]["generation"];
    if condition(src, "Ready") == Some("True") && src["status"]["observedGeneration"] == *generation
    {
        return Ok(());
    }
    let delay = ctx.world.speed().delay(FETCH_DELAY);
    let waited = age(&src["metadata"]["creationTimestamp"]);
    if waited < delay && condition(src, "Ready") != Some("True") {
        ctx.requeue_at(std::time::Instant::now() + (delay - waited));
        let mut status = json!({"observedGeneration": -1});
        let conds = [
            Cond {
                type_: "Reconciling",
                status: "True",
                reason: "Progressing".into(),
                message: "building artifact".into(),
            },
            Cond {
                type_: "Ready",
                status: "Unknown",
                reason: "Progressing".into(),
                message: "reconciliation in progress".into(),
            },
        ];
        set_conditions(&mut status, &src["status"], generation, &conds);
        return write_status(ctx.api, src, status);
    }
    let url = src["spec"]["url"].as_str().unwrap_or_default();
    let kind = src["kind"].as_str().unwrap_or_default();
    let revision = match kind {
        "OCIRepository" => format!(
            "{}@{}",
            src["spec"]["ref"]["tag"].as_str().unwrap_or("latest"),
            sha256(url)
        ),
        _ => sha256(&format!("{url}/index.yaml")),
    };
    let now = kube_sim::api_server::now_rfc3339();
    let path = format!(
        "{}/{}/{}/{}.tar.gz",
        kind.to_lowercase(),
        ns(src),
        name(src),
        revision.rsplit(':').next().unwrap_or_default()
    );
    let mut status = json!({
        "observedGeneration": generation,
        "url": format!("http://source-controller.flux-system.svc.cluster.local./{path}"),
        "artifact": {
            "path": path,
            "url": format!("http://source-controller.flux-system.svc.cluster.local./{path}"),
            "revision": revision,
            "digest": sha256(&revision),
            "lastUpdateTime": now,
            "size": 10240,
        },
    });
    let conds = [
        Cond::new(
            "Ready",
            true,
            "Succeeded",
            format!("stored artifact: revision '{revision}'"),
        ),
        Cond::new(
            "ArtifactInStorage",
            true,
            "Succeeded",
            format!("stored artifact: revision '{revision}'"),
        ),
    ];
    info!(source = %format!("{}/{}", ns(src), name(src)), kind, "Source ready");
    set_conditions(&mut status, &src["status"], generation, &conds);
    write_status(ctx.api, src, status)
}

/// The source a HelmRelease installs from and the chart's name and version.
fn chart_of(hr: &Value) -> Option<(&'static str, String, String, String, String)> {
    let hr_ns = ns(hr);
    if let Some(r) = hr["spec"]["chartRef"].as_object() {
        let kind = match r.get("kind").and_then(Value::as_str) {
            Some("OCIRepository") => "OCIRepository",
            Some("HelmChart") => "HelmChart",
            _ => return None,
        };
        let src_name = r.get("name")?.as_str()?.to_owned();
        let src_ns = r
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or(hr_ns)
            .to_owned();
        return Some((kind, src_ns, src_name, String::new(), String::new()));
    }
    let spec = &hr["spec"]["chart"]["spec"];
    let r = &spec["sourceRef"];
    let kind = match r["kind"].as_str() {
        Some("HelmRepository") => "HelmRepository",
        Some("GitRepository") => "GitRepository",
        Some("Bucket") => "Bucket",
        _ => return None,
    };
    Some((
        kind,
        r["namespace"].as_str().unwrap_or(hr_ns).to_owned(),
        r["name"].as_str()?.to_owned(),
        spec["chart"].as_str().unwrap_or_default().to_owned(),
        spec["version"].as_str().unwrap_or("*").to_owned(),
    ))
}

/// Reconciles one HelmRelease (helm-controller).
pub fn reconcile_release(ctx: &Ctx<'_>, hr: &Value) -> Result {
    if deleting(hr) || hr["spec"]["suspend"] == true {
        return Ok(());
    }
    let generation = &hr["metadata"]["generation"];
    let old = &hr["status"];
    if condition(hr, "Ready") == Some("True") && old["lastAttemptedGeneration"] == *generation {
        return Ok(());
    }
    let Some((kind, src_ns, src_name, mut chart, mut version)) = chart_of(hr) else {
        return not_ready(ctx, hr, "InvalidChartReference", "invalid chart reference");
    };
    let source = match kind {
        "OCIRepository" => get(ctx.api, SOURCE, "OCIRepository", &src_ns, &src_name)?,
        "HelmRepository" => get(ctx.api, SOURCE, "HelmRepository", &src_ns, &src_name)?,
        _ => None,
    };
    let Some(source) = source else {
        return not_ready(
            ctx,
            hr,
            "ArtifactFailed",
            &format!("could not get Source object: {kind} '{src_ns}/{src_name}' not found"),
        );
    };
    let Some(source_age) = ready_since(&source) else {
        return not_ready(
            ctx,
            hr,
            "ArtifactFailed",
            &format!("{kind} '{src_ns}/{src_name}' is not ready"),
        );
    };
    if kind == "OCIRepository" {
        let url = source["spec"]["url"].as_str().unwrap_or_default();
        chart = url.rsplit('/').next().unwrap_or_default().to_owned();
        version = source["spec"]["ref"]["tag"]
            .as_str()
            .unwrap_or("0.0.0")
            .to_owned();
    }
    if version == "*" || version.is_empty() {
        version = "1.0.0".to_owned();
    }
    // Upgrades (a new generation after a release) go at once; first installs take time.
    let delay = ctx.world.speed().delay(INSTALL_DELAY);
    let waited = source_age.min(age(&hr["metadata"]["creationTimestamp"]));
    let first = !old["history"]
        .as_array()
        .is_some_and(|h| h.iter().any(|r| r["status"] == "deployed"));
    if first && waited < delay {
        ctx.requeue_at(std::time::Instant::now() + (delay - waited));
        return progressing(ctx, hr, &chart, &version);
    }
    let release_name = hr["spec"]["releaseName"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| name(hr).to_owned());
    let target_ns = hr["spec"]["targetNamespace"]
        .as_str()
        .unwrap_or(ns(hr))
        .to_owned();
    let storage_ns = hr["spec"]["storageNamespace"]
        .as_str()
        .unwrap_or(ns(hr))
        .to_owned();
    let config_digest = sha256(&hr["spec"]["values"].to_string());
    let action = if first { "install" } else { "upgrade" };
    let now = kube_sim::api_server::now_rfc3339();
    let mut history: Vec<Value> = old["history"].as_array().cloned().unwrap_or_default();
    let release_version = history
        .first()
        .and_then(|h| h["version"].as_i64())
        .unwrap_or(0)
        + 1;
    let failed = ctx.world.helm_faults.fails(&chart);
    let first_deployed = history
        .iter()
        .find_map(|h| h["firstDeployed"].as_str().map(str::to_owned))
        .unwrap_or_else(|| now.clone());
    let snapshot = json!({
        "name": release_name,
        "namespace": target_ns,
        "version": release_version,
        "status": if failed { "failed" } else { "deployed" },
        "chartName": chart,
        "chartVersion": version,
        "appVersion": version,
        "configDigest": config_digest,
        "digest": sha256(&format!("{release_name}{release_version}{chart}{version}{config_digest}")),
        "firstDeployed": first_deployed,
        "lastDeployed": now,
    });
    if failed && old["history"][0]["status"] == "failed" && condition(hr, "Ready") == Some("False")
    {
        // Already reported; retry when the fault is healed (the resync comes back).
        return Ok(());
    }
    history.insert(0, snapshot);
    history.truncate(5);
    let mut status = json!({
        "observedGeneration": generation,
        "lastAttemptedGeneration": generation,
        "lastAttemptedRevision": version,
        "lastAttemptedConfigDigest": config_digest,
        "lastAttemptedReleaseAction": action,
        "storageNamespace": storage_ns,
        "history": history,
    });
    if kind == "HelmRepository" {
        status["helmChart"] = json!(format!("{src_ns}/{}-{}", ns(hr), name(hr)));
    }
    let verb = if first { "install" } else { "upgrade" };
    let title = if first { "Install" } else { "Upgrade" };
    let conds = if failed {
        status["failures"] = json!(old["failures"].as_i64().unwrap_or(0) + 1);
        status[if first {
            "installFailures"
        } else {
            "upgradeFailures"
        }] = json!(1);
        let msg = format!(
            "Helm {verb} failed for release {target_ns}/{release_name} with chart {chart}@{version}: simulated failure"
        );
        info!(release = %format!("{}/{}", ns(hr), name(hr)), chart, "Helm release failed (fault knob)");
        [
            Cond::new("Ready", false, &format!("{title}Failed"), &*msg),
            Cond::new("Released", false, &format!("{title}Failed"), msg),
        ]
    } else {
        let msg = format!(
            "Helm {verb} succeeded for release {target_ns}/{release_name}.v{release_version} with chart {chart}@{version}"
        );
        info!(release = %format!("{}/{}", ns(hr), name(hr)), chart, "Helm release deployed");
        if first && hr["spec"]["install"]["createNamespace"] == true {
            let _ = ctx.api.create_object(json!({
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": target_ns},
            }));
        }
        [
            Cond::new("Ready", true, &format!("{title}Succeeded"), &*msg),
            Cond::new("Released", true, &format!("{title}Succeeded"), msg),
        ]
    };
    set_conditions(&mut status, old, generation, &conds);
    write_status(ctx.api, hr, status)
}

fn progressing(ctx: &Ctx<'_>, hr: &Value, chart: &str, version: &str) -> Result {
    let mut status = hr["status"].clone();
    if !status.is_object() {
        status = json!({});
    }
    status["observedGeneration"] = hr["metadata"]["generation"].clone();
    status["lastAttemptedRevision"] = json!(version);
    let msg = format!("Running 'install' action with timeout of 5m0s for chart {chart}");
    let conds = [
        Cond {
            type_: "Reconciling",
            status: "True",
            reason: "Progressing".into(),
            message: msg.clone(),
        },
        Cond {
            type_: "Ready",
            status: "Unknown",
            reason: "Progressing".into(),
            message: msg,
        },
    ];
    let old = hr["status"].clone();
    set_conditions(&mut status, &old, &hr["metadata"]["generation"], &conds);
    write_status(ctx.api, hr, status)
}

fn not_ready(ctx: &Ctx<'_>, hr: &Value, reason: &str, message: &str) -> Result {
    let mut status = hr["status"].clone();
    if !status.is_object() {
        status = json!({});
    }
    status["observedGeneration"] = hr["metadata"]["generation"].clone();
    let conds = [Cond::new("Ready", false, reason, message)];
    let old = hr["status"].clone();
    set_conditions(&mut status, &old, &hr["metadata"]["generation"], &conds);
    // Sources are not watched from here; come back.
    ctx.requeue_after(Duration::from_secs(5));
    write_status(ctx.api, hr, status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_reference_forms() {
        let hr = json!({"metadata": {"namespace": "flux-system"}, "spec": {"chart": {"spec": {
            "chart": "kube-prometheus-stack", "version": "65.1.0",
            "sourceRef": {"kind": "HelmRepository", "name": "monitoring"}}}}});
        let (kind, src_ns, src, chart, version) = chart_of(&hr).unwrap();
        assert_eq!(
            (
                kind,
                src_ns.as_str(),
                src.as_str(),
                chart.as_str(),
                version.as_str()
            ),
            (
                "HelmRepository",
                "flux-system",
                "monitoring",
                "kube-prometheus-stack",
                "65.1.0"
            )
        );
        let oci = json!({"metadata": {"namespace": "a"}, "spec": {"chartRef": {
            "kind": "OCIRepository", "name": "podinfo", "namespace": "b"}}});
        assert_eq!(chart_of(&oci).unwrap().1, "b");
        assert!(chart_of(&json!({"spec": {}})).is_none());
    }

    #[test]
    fn faults_are_per_chart() {
        let f = HelmFaults::default();
        f.fail_chart("broken");
        assert!(f.fails("broken"));
        assert!(!f.fails("fine"));
        f.heal_chart("broken");
        assert!(!f.fails("broken"));
    }
}
