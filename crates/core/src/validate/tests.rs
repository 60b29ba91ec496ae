//! Validation tests: each case is data (a fixture, edits, the error wanted); the `check_*`
//! helpers are the only callers of the API under test.

use expect_test::{Expect, expect};
use serde_json::Value;

use super::*;

/// The `edge-1` cluster: three control-plane nodes, a fixed pool and an autoscaled GPU pool.
const CLUSTER: &str = r#"
apiVersion: fledge.dev/v1alpha1
kind: WorkloadCluster
metadata:
  name: edge-1
  namespace: fleet
  labels:
    site: edge
spec:
  kubernetesVersion: v1.33.4
  infrastructure:
    vsphere:
      server: vcenter.example.com
      thumbprint: "5D:01:06:63:55:9D:DF:FE:38:81:6E:2C:FA:71:BC:63:82:C5:16:51"
      datacenter: dc1
      datastore: vsanDatastore
      network: VM Network
      resourcePool: edge
      folder: fledge
      template: ubuntu-2404-kube-v1.33.4
      credentialsSecret: vsphere-credentials
  controlPlane:
    replicas: 3
    endpoint:
      host: 10.0.0.10
      port: 6443
    machine: {cpus: 4, memoryMiB: 8192, diskGiB: 40}
  workers:
    - name: general
      replicas: 3
      machine: {cpus: 4, memoryMiB: 16384, diskGiB: 80}
      labels:
        tier: general
    - name: gpu
      autoscaling: {minReplicas: 0, maxReplicas: 4}
      machine: {cpus: 8, memoryMiB: 32768, diskGiB: 120}
      template: ubuntu-2404-kube-v1.33.4-nvidia
      taints:
        - {key: nvidia.com/gpu, value: "true", effect: NoSchedule}
  network:
    pods: 192.168.0.0/16
    services: 10.96.0.0/12
  profile: basic
  sshAuthorizedKeys:
    - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOq0Zq7kE1bq0Ck9m8rXnJp0aLqY2Q8Yb0Jx6z9Zr2bG ops@example.com
  certificates:
    renewBeforeExpiryDays: 30
"#;

/// The `basic` profile: a manifests add-on and a Helm add-on that depends on it.
const PROFILE: &str = r#"
apiVersion: fledge.dev/v1alpha1
kind: ClusterProfile
metadata:
  name: basic
  namespace: fleet
spec:
  addons:
    - name: cni
      manifests:
        - apiVersion: v1
          kind: Namespace
          metadata:
            name: cni-system
        - apiVersion: apps/v1
          kind: DaemonSet
          metadata:
            name: cni
            namespace: cni-system
          spec: {}
      health:
        deploymentsAvailable: true
        timeoutSeconds: 300
    - name: metrics-server
      order: 1
      dependsOn: [cni]
      helm:
        repository: https://kubernetes-sigs.github.io/metrics-server/
        chart: metrics-server
        version: 3.12.2
        namespace: kube-system
        values:
          args: [--kubelet-insecure-tls]
      health:
        helmReleaseReady: true
"#;

#[test]
fn good_specs_load_and_validate() {
    let file = format!("{CLUSTER}---{PROFILE}");
    let documents = load_and_validate(&file).unwrap_or_else(|errs| panic!("{}", render(&errs)));
    let summary: Vec<String> = documents
        .iter()
        .map(|d| format!("{}/{} in {:?}", d.kind(), d.name(), d.namespace()))
        .collect();
    assert_eq!(
        summary,
        [
            "WorkloadCluster/edge-1 in Some(\"fleet\")",
            "ClusterProfile/basic in Some(\"fleet\")"
        ]
    );
    let Document::WorkloadCluster(cluster) = &documents[0] else {
        panic!("first document is {}", documents[0].kind());
    };
    assert_eq!(cluster.spec.control_plane.replicas, 3);
    let pools: Vec<&str> = cluster
        .spec
        .workers
        .iter()
        .map(|w| w.name.as_str())
        .collect();
    assert_eq!(pools, ["general", "gpu"]);
    let Document::ClusterProfile(profile) = &documents[1] else {
        panic!("second document is {}", documents[1].kind());
    };
    assert!(profile.spec.addons[0].manifests.is_some() && profile.spec.addons[1].helm.is_some());
}

// === Bad specs: one edit, one error at an exact path ===

/// `(path, YAML value)` pairs applied to a fixture by `edit`.
type Edits<'a> = &'a [(&'a str, &'a str)];

#[derive(Clone, Copy)]
enum Fixture {
    Cluster,
    Profile,
}
use Fixture::{Cluster as C, Profile as P};

/// Edits `fixture` (`(path, YAML value)`; the value `<delete>` removes the field), loads and
/// validates it, and asserts that the only error is at `path` with a reason containing `reason`.
#[track_caller]
fn check_invalid(name: &str, fixture: Fixture, edits: Edits, path: &str, reason: &str) {
    let base = match fixture {
        Fixture::Cluster => CLUSTER,
        Fixture::Profile => PROFILE,
    };
    let errs = load_and_validate(&edit(base, edits))
        .err()
        .unwrap_or_default();
    assert!(
        errs.len() == 1 && errs[0].path == path && errs[0].reason.contains(reason),
        "{name}: want exactly `{path}: ...{reason}...`, got:\n{}",
        render(&errs)
    );
}

#[test]
fn rejects_each_bad_field_with_its_path() {
    let long_name = "a".repeat(64);
    let long_release = "r".repeat(54);
    let long_value = "v".repeat(64);
    #[rustfmt::skip]
    let cases: &[(&str, Fixture, Edits, &str, &str)] = &[
        // Names and versions.
        ("cluster name not DNS-1123", C, &[("metadata.name", "Edge_1")], "metadata.name", "must be a DNS-1123 label"),
        ("cluster name too long", C, &[("metadata.name", &long_name)], "metadata.name", "must be at most 63 characters (a DNS-1123 label), got 64"),
        ("cluster name missing", C, &[("metadata.name", "<delete>")], "metadata.name", "required field missing"),
        ("namespace not DNS-1123", C, &[("metadata.namespace", "Fleet")], "metadata.namespace", "must be a DNS-1123 label"),
        ("metadata label value bad", C, &[("metadata.labels[site]", "-edge")], "metadata.labels[site]", "must be a label value"),
        ("version without v", C, &[("spec.kubernetesVersion", "1.33.4")], "spec.kubernetesVersion", r#"must be a release version vX.Y.Z, got "1.33.4""#),
        ("version without patch", C, &[("spec.kubernetesVersion", "v1.33")], "spec.kubernetesVersion", "must be a release version vX.Y.Z"),
        ("pre-release version", C, &[("spec.kubernetesVersion", "v1.33.0-rc.1")], "spec.kubernetesVersion", "must be a release version vX.Y.Z"),
        ("version below window", C, &[("spec.kubernetesVersion", "v1.30.9")], "spec.kubernetesVersion", "must be within the supported versions v1.31.x to v1.37.x, got v1.30.9"),
        ("version above window", C, &[("spec.kubernetesVersion", "v1.38.0")], "spec.kubernetesVersion", "got v1.38.0"),
        ("version 2.x", C, &[("spec.kubernetesVersion", "v2.33.0")], "spec.kubernetesVersion", "must be within the supported versions"),
        // Infrastructure.
        ("no provider", C, &[("spec.infrastructure.vsphere", "<delete>")], "spec.infrastructure.vsphere", "exactly one infrastructure provider"),
        ("bad vCenter host", C, &[("spec.infrastructure.vsphere.server", "https://vcenter")], "spec.infrastructure.vsphere.server", "must be an IP address or a DNS name"),
        ("bad thumbprint", C, &[("spec.infrastructure.vsphere.thumbprint", "5D:01:06")], "spec.infrastructure.vsphere.thumbprint", "SHA-1 or SHA-256 fingerprint"),
        ("empty datacenter", C, &[("spec.infrastructure.vsphere.datacenter", "''")], "spec.infrastructure.vsphere.datacenter", "must not be empty"),
        ("blank folder", C, &[("spec.infrastructure.vsphere.folder", "' '")], "spec.infrastructure.vsphere.folder", "must not be empty"),
        ("credentials secret not a name", C, &[("spec.infrastructure.vsphere.credentialsSecret", "vSphere creds")], "spec.infrastructure.vsphere.credentialsSecret", "must be a DNS-1123 subdomain"),
        // Control plane.
        ("even control plane", C, &[("spec.controlPlane.replicas", "2")], "spec.controlPlane.replicas", "must be odd (1, 3, 5, 7), got 2"),
        ("no control plane", C, &[("spec.controlPlane.replicas", "0")], "spec.controlPlane.replicas", "must be odd (1, 3, 5, 7), got 0"),
        ("negative control plane", C, &[("spec.controlPlane.replicas", "-1")], "spec.controlPlane.replicas", "must be odd (1, 3, 5, 7), got -1"),
        ("control plane of 9", C, &[("spec.controlPlane.replicas", "9")], "spec.controlPlane.replicas", "must be at most 7 (1, 3, 5, 7), got 9"),
        ("endpoint port 0", C, &[("spec.controlPlane.endpoint.port", "0")], "spec.controlPlane.endpoint.port", "must be between 1 and 65535, got 0"),
        ("endpoint port 65536", C, &[("spec.controlPlane.endpoint.port", "65536")], "spec.controlPlane.endpoint.port", "got 65536"),
        ("endpoint host not a host", C, &[("spec.controlPlane.endpoint.host", "api server")], "spec.controlPlane.endpoint.host", "must be an IP address or a DNS name"),
        ("endpoint inside pods", C, &[("spec.controlPlane.endpoint.host", "192.168.3.4")], "spec.controlPlane.endpoint.host", "must not be inside spec.network.pods (192.168.0.0/16), got 192.168.3.4"),
        ("endpoint inside services", C, &[("spec.controlPlane.endpoint.host", "10.96.0.1")], "spec.controlPlane.endpoint.host", "must not be inside spec.network.services (10.96.0.0/12)"),
        ("control plane 1 cpu", C, &[("spec.controlPlane.machine.cpus", "1")], "spec.controlPlane.machine.cpus", "must be between 2 and 768, got 1"),
        ("control plane 2 GiB", C, &[("spec.controlPlane.machine.memoryMiB", "2048")], "spec.controlPlane.machine.memoryMiB", "must be between 4096 and 25165824, got 2048"),
        ("control plane negative disk", C, &[("spec.controlPlane.machine.diskGiB", "-40")], "spec.controlPlane.machine.diskGiB", "must be between 20 and 63488, got -40"),
        ("control plane empty template", C, &[("spec.controlPlane.template", "''")], "spec.controlPlane.template", "must not be empty"),
        // Workers.
        ("negative workers", C, &[("spec.workers[0].replicas", "-1")], "spec.workers[0].replicas", "must be between 0 and 1000, got -1"),
        ("pool named control-plane", C, &[("spec.workers[0].name", "control-plane")], "spec.workers[0].name", "reserved for the control plane"),
        ("cluster and pool name too long", C, &[("spec.workers[0].name", &"p".repeat(60))], "spec.workers[0].name", "must be at most 63 characters, got 67"),
        ("too many workers", C, &[("spec.workers[0].replicas", "1001")], "spec.workers[0].replicas", "must be between 0 and 1000, got 1001"),
        ("pool without size", C, &[("spec.workers[0].replicas", "<delete>")], "spec.workers[0].replicas", "set replicas or autoscaling"),
        ("pool name not DNS-1123", C, &[("spec.workers[1].name", "GPU")], "spec.workers[1].name", "must be a DNS-1123 label"),
        ("duplicate pool name", C, &[("spec.workers[1].name", "general")], "spec.workers[1].name", r#"duplicate worker pool name "general""#),
        ("worker 0 cpus", C, &[("spec.workers[0].machine.cpus", "0")], "spec.workers[0].machine.cpus", "must be between 1 and 768, got 0"),
        ("worker 1 GiB", C, &[("spec.workers[0].machine.memoryMiB", "1024")], "spec.workers[0].machine.memoryMiB", "must be between 2048"),
        ("worker 10 GiB disk", C, &[("spec.workers[1].machine.diskGiB", "10")], "spec.workers[1].machine.diskGiB", "must be between 20"),
        ("autoscaling min above max", C, &[("spec.workers[1].autoscaling.minReplicas", "5")], "spec.workers[1].autoscaling.maxReplicas", "must be at least minReplicas (5), got 4"),
        ("autoscaling max above 1000", C, &[("spec.workers[1].autoscaling.maxReplicas", "1001")], "spec.workers[1].autoscaling.maxReplicas", "must be between 0 and 1000, got 1001"),
        ("autoscaling negative min", C, &[("spec.workers[1].autoscaling.minReplicas", "-2")], "spec.workers[1].autoscaling.minReplicas", "must be between 0 and 1000, got -2"),
        ("replicas outside autoscaling", C, &[("spec.workers[1].replicas", "7")], "spec.workers[1].replicas", "must be within autoscaling bounds 0 to 4, got 7"),
        ("label key not qualified", C, &[("spec.workers[0].labels[bad key!]", "x")], "spec.workers[0].labels[bad key!]", "must be a qualified name"),
        ("label key bad prefix", C, &[("spec.workers[0].labels[Example.com/tier]", "x")], "spec.workers[0].labels[Example.com/tier]", "the prefix before '/' must be a DNS-1123 subdomain"),
        ("label value too long", C, &[("spec.workers[0].labels[tier]", &long_value)], "spec.workers[0].labels[tier]", "must be a label value"),
        ("taint key not qualified", C, &[("spec.workers[1].taints[0].key", "nvidia.com/gpu/extra")], "spec.workers[1].taints[0].key", "must be a qualified name"),
        ("taint value bad", C, &[("spec.workers[1].taints[0].value", "yes please")], "spec.workers[1].taints[0].value", "must be a label value"),
        ("taint effect unknown", C, &[("spec.workers[1].taints[0].effect", "NoScheduler")], "spec.workers[1].taints[0].effect", r#"must be one of "NoSchedule", "PreferNoSchedule", "NoExecute", got "NoScheduler""#),
        ("duplicate taint", C, &[("spec.workers[1].taints[1]", "{key: nvidia.com/gpu, effect: NoSchedule}")], "spec.workers[1].taints[1].key", r#"duplicate taint "nvidia.com/gpu" with effect NoSchedule"#),
        // Network.
        ("pods not a CIDR", C, &[("spec.network.pods", "192.168.0.0")], "spec.network.pods", r#"must be a CIDR such as 192.168.0.0/16, got "192.168.0.0""#),
        ("pods with host bits", C, &[("spec.network.pods", "192.168.1.0/16")], "spec.network.pods", "must be a network address (192.168.0.0/16)"),
        ("pods too small", C, &[("spec.network.pods", "192.168.0.0/26")], "spec.network.pods", "must be /24 or larger"),
        ("services garbage", C, &[("spec.network.services", "ten-ninety-six")], "spec.network.services", "must be a CIDR"),
        ("services too large", C, &[("spec.network.services", "100.64.0.0/10")], "spec.network.services", "must be /12 or smaller"),
        ("services overlap pods", C, &[("spec.network.services", "192.168.128.0/20")], "spec.network.services", "must not overlap spec.network.pods (192.168.0.0/16), got 192.168.128.0/20"),
        ("pods inside services", C, &[("spec.network.pods", "10.100.0.0/16")], "spec.network.services", "must not overlap spec.network.pods (10.100.0.0/16)"),
        ("mixed IP families", C, &[("spec.network.services", "fd00:10:96::/112")], "spec.network.services", "must be the same IP family"),
        ("service domain bad", C, &[("spec.network.serviceDomain", "Cluster.Local")], "spec.network.serviceDomain", "must be a DNS-1123 subdomain"),
        // Other spec fields.
        ("profile not a name", C, &[("spec.profile", "Basic Profile")], "spec.profile", "must be a DNS-1123 subdomain"),
        ("ssh key not a key", C, &[("spec.sshAuthorizedKeys[0]", "hunter2")], "spec.sshAuthorizedKeys[0]", "must be an OpenSSH public key"),
        ("renew too late", C, &[("spec.certificates.renewBeforeExpiryDays", "3")], "spec.certificates.renewBeforeExpiryDays", "must be at least 7, got 3"),
        ("rotateAfter not a time", C, &[("spec.certificates.rotateAfter", "yesterday")], "spec.certificates.rotateAfter", "must be an RFC 3339 time"),
        // Loading: kind, unknown fields, types.
        ("wrong apiVersion", C, &[("apiVersion", "fledge.dev/v1")], "apiVersion", r#"must be fledge.dev/v1alpha1, got "fledge.dev/v1""#),
        ("wrong kind", C, &[("kind", "Cluster")], "kind", r#"must be WorkloadCluster or ClusterProfile, got string "Cluster""#),
        ("unknown top-level field", C, &[("specs", "{}")], "specs", "unknown field"),
        ("unknown metadata field", C, &[("metadata.nmae", "edge-1")], "metadata.nmae", "unknown field"),
        ("unknown control plane field", C, &[("spec.controlPlane.replica", "3")], "spec.controlPlane.replica", "unknown field"),
        ("unknown pool field", C, &[("spec.workers[1].autoscale", "true")], "spec.workers[1].autoscale", "unknown field"),
        ("replicas as string", C, &[("spec.controlPlane.replicas", "three")], "spec.controlPlane.replicas", r#"must be an integer, got string "three""#),
        ("replicas as float", C, &[("spec.workers[0].replicas", "2.5")], "spec.workers[0].replicas", "must be an integer, got number 2.5"),
        ("replicas beyond int32", C, &[("spec.workers[0].replicas", "3000000000")], "spec.workers[0].replicas", "must be a 32-bit integer, got 3000000000"),
        ("replicas null", C, &[("spec.controlPlane.replicas", "~")], "spec.controlPlane.replicas", "must be an integer, got null"),
        ("workers not a list", C, &[("spec.workers", "{general: 3}")], "spec.workers", "must be a list, got an object"),
        ("metadata label not a string", C, &[("metadata.labels[site]", "5")], "metadata.labels[site]", "must be a string, got number 5"),
        ("bad creationTimestamp", C, &[("metadata.creationTimestamp", "yesterday")], "metadata.creationTimestamp", r#"must be an RFC 3339 time, got string "yesterday""#),
        ("YAML 1.1 boolean as a name", C, &[("spec.workers[1].name", "yes")], "spec.workers[1].name", "must be a string, got boolean true (quote it to keep it a string)"),
        ("missing network", C, &[("spec.network", "<delete>")], "spec.network", "required field missing"),
        ("missing spec", C, &[("spec", "<delete>")], "spec", "required field missing"),
        // Profiles.
        ("profile name not a name", P, &[("metadata.name", "Basic!")], "metadata.name", "must be a DNS-1123 subdomain"),
        ("add-on name not DNS-1123", P, &[("spec.addons[1].name", "Metrics_Server")], "spec.addons[1].name", "must be a DNS-1123 label"),
        ("duplicate add-on", P, &[("spec.addons[1].name", "cni")], "spec.addons[1].name", r#"duplicate add-on name "cni""#),
        ("negative order", P, &[("spec.addons[0].order", "-1")], "spec.addons[0].order", "must be at least 0, got -1"),
        ("unknown dependency", P, &[("spec.addons[1].dependsOn[0]", "calico")], "spec.addons[1].dependsOn[0]", r#"unknown add-on "calico""#),
        ("duplicate dependency", P, &[("spec.addons[1].dependsOn[1]", "cni")], "spec.addons[1].dependsOn[1]", r#"duplicate dependency "cni""#),
        ("depends on itself", P, &[("spec.addons[0].dependsOn", "[cni]")], "spec.addons[0].dependsOn", "dependency cycle: cni -> cni"),
        ("two-add-on cycle", P, &[("spec.addons[0].dependsOn", "[metrics-server]")], "spec.addons[0].dependsOn", "dependency cycle: cni -> metrics-server -> cni"),
        ("manifests and helm", P, &[("spec.addons[0].helm", "{repository: 'oci://ghcr.io/x', chart: x, version: '1.0.0'}")], "spec.addons[0]", "must set exactly one of manifests or helm, got both"),
        ("neither manifests nor helm", P, &[("spec.addons[1].helm", "<delete>"), ("spec.addons[1].health", "<delete>")], "spec.addons[1]", "must set exactly one of manifests or helm, got neither"),
        ("empty manifests", P, &[("spec.addons[0].manifests", "[]")], "spec.addons[0].manifests", "must not be empty"),
        ("manifest without apiVersion", P, &[("spec.addons[0].manifests[1].apiVersion", "<delete>")], "spec.addons[0].manifests[1].apiVersion", "required field missing"),
        ("manifest without kind", P, &[("spec.addons[0].manifests[0].kind", "''")], "spec.addons[0].manifests[0].kind", "must not be empty"),
        ("manifest without name", P, &[("spec.addons[0].manifests[1].metadata.name", "<delete>")], "spec.addons[0].manifests[1].metadata.name", "required field missing"),
        ("manifest name not a string", P, &[("spec.addons[0].manifests[1].metadata.name", "42")], "spec.addons[0].manifests[1].metadata.name", "must be a string, got number 42"),
        ("manifest a string", P, &[("spec.addons[0].manifests[0]", "just text")], "spec.addons[0].manifests[0]", r#"must be an object, got string "just text""#),
        ("duplicate manifest", P, &[("spec.addons[0].manifests[1]", "{apiVersion: v1, kind: Namespace, metadata: {name: cni-system}}")], "spec.addons[0].manifests[1]", "duplicate object v1 Namespace cni-system"),
        ("helm repository ftp", P, &[("spec.addons[1].helm.repository", "ftp://charts.example.com")], "spec.addons[1].helm.repository", "must be an http(s):// or oci:// URL"),
        ("helm repository without host", P, &[("spec.addons[1].helm.repository", "https:///charts")], "spec.addons[1].helm.repository", "must be a URL with a valid host"),
        ("helm chart empty", P, &[("spec.addons[1].helm.chart", "''")], "spec.addons[1].helm.chart", "must not be empty"),
        ("helm namespace bad", P, &[("spec.addons[1].helm.namespace", "Kube_System")], "spec.addons[1].helm.namespace", "must be a DNS-1123 label"),
        ("helm release name too long", P, &[("spec.addons[1].helm.releaseName", &long_release)], "spec.addons[1].helm.releaseName", "must be at most 53 characters, got 54"),
        ("helm values not an object", P, &[("spec.addons[1].helm.values", "[1, 2]")], "spec.addons[1].helm.values", "must be an object, got a list"),
        ("unknown helm field", P, &[("spec.addons[1].helm.value", "{}")], "spec.addons[1].helm.value", "unknown field"),
        ("unknown add-on field", P, &[("spec.addons[1].dependOn", "[cni]")], "spec.addons[1].dependOn", "unknown field"),
        ("health timeout 0", P, &[("spec.addons[0].health.timeoutSeconds", "0")], "spec.addons[0].health.timeoutSeconds", "must be at least 1, got 0"),
        ("helm health on manifests", P, &[("spec.addons[0].health.helmReleaseReady", "true")], "spec.addons[0].health.helmReleaseReady", "only applies to helm add-ons"),
    ];
    assert!(
        cases.len() >= 40,
        "the issue asks for at least 40 bad specs"
    );
    for &(name, fixture, edits, path, reason) in cases {
        check_invalid(name, fixture, edits, path, reason);
    }
}

// === Whole files ===

#[track_caller]
fn check_file(yaml: &str, expect: Expect) {
    let actual = match load_and_validate(yaml) {
        Ok(documents) => {
            let names: Vec<String> = documents
                .iter()
                .map(|d| format!("ok {}/{}", d.kind(), d.name()))
                .collect();
            names.join("\n")
        }
        Err(errs) => render(&errs),
    };
    expect.assert_eq(&actual);
}

#[test]
fn multi_document_errors_name_their_document() {
    let cluster = edit(
        CLUSTER,
        &[
            ("spec.controlPlane.replicas", "2"),
            ("spec.workers[0].machine.cpus", "0"),
        ],
    );
    let profile = edit(PROFILE, &[("spec.addons[1].dependsOn[0]", "dns")]);
    let nameless = "apiVersion: fledge.dev/v1alpha1\nspec: {}\n";
    check_file(
        &format!("{cluster}\n---\n{profile}\n---\n{nameless}"),
        expect![[r#"
            WorkloadCluster/edge-1: spec.controlPlane.replicas: must be odd (1, 3, 5, 7), got 2
            WorkloadCluster/edge-1: spec.workers[0].machine.cpus: must be between 1 and 768, got 0
            ClusterProfile/basic: spec.addons[1].dependsOn[0]: unknown add-on "dns"
            documents[2]: kind: required field missing"#]],
    );
}

#[test]
fn load_documents_prefixes_only_multi_document_files() {
    let typo = edit(CLUSTER, &[("spec.controlPlane.replica", "3")]);
    let render_load = |yaml: &str| match load_documents(yaml) {
        Ok(documents) => format!("{} documents", documents.len()),
        Err(errs) => render(&errs),
    };
    assert_eq!(
        render_load(&typo),
        "spec.controlPlane.replica: unknown field"
    );
    assert_eq!(
        render_load(&format!("{typo}\n---\n{PROFILE}")),
        "WorkloadCluster/edge-1: spec.controlPlane.replica: unknown field"
    );
    // Loading does not validate: an even control plane is well-formed YAML.
    assert_eq!(
        render_load(&edit(CLUSTER, &[("spec.controlPlane.replicas", "2")])),
        "1 documents"
    );
}

#[test]
fn duplicate_documents_are_rejected() {
    check_file(
        &format!("{PROFILE}---{PROFILE}"),
        expect![[
            r#"ClusterProfile/basic: metadata.name: duplicate ClusterProfile "basic" in this file"#
        ]],
    );
}

#[test]
fn empty_documents_are_skipped() {
    check_file(
        &format!("---\n---\n{CLUSTER}\n---\n"),
        expect!["ok WorkloadCluster/edge-1"],
    );
}

#[test]
fn a_file_without_documents_is_an_error() {
    check_file("# nothing here\n---\n", expect!["contains no documents"]);
    check_file("", expect!["contains no documents"]);
}

#[test]
fn invalid_yaml_is_an_error_for_the_whole_file() {
    let errs = load_and_validate("spec: [unclosed")
        .err()
        .unwrap_or_default();
    assert!(
        errs.len() == 1 && errs[0].path.is_empty() && errs[0].reason.starts_with("invalid YAML: "),
        "got {errs:?}"
    );
}

#[test]
fn a_document_that_is_not_a_mapping_is_an_error() {
    check_file(
        "- a\n- b\n",
        expect!["must be a mapping with apiVersion, kind, metadata and spec, got a list"],
    );
}

#[test]
fn duplicate_yaml_keys_are_rejected() {
    let errs = load_and_validate(&format!("{CLUSTER}\n  profile: other\n"))
        .err()
        .unwrap_or_default();
    assert!(
        errs.len() == 1 && errs[0].reason.contains("duplicate"),
        "got {errs:?}"
    );
}

#[test]
fn every_unknown_field_is_reported_not_just_the_first() {
    check_file(
        &edit(
            CLUSTER,
            &[
                ("metadata.nmae", "x"),
                ("spec.controlPlane.replicas", "<delete>"),
                ("spec.controlPlane.replica", "3"),
                ("spec.workers[0].lables", "{a: b}"),
                ("spec.network.pod", "10.0.0.0/8"),
            ],
        ),
        expect![[r#"
            spec.controlPlane.replicas: required field missing
            spec.controlPlane.replica: unknown field
            spec.workers[0].lables: unknown field
            spec.network.pod: unknown field
            metadata.nmae: unknown field"#]],
    );
}

#[test]
fn validation_collects_every_error() {
    check_file(
        &edit(
            CLUSTER,
            &[
                ("spec.controlPlane.replicas", "4"),
                ("spec.workers[0].replicas", "-3"),
                ("spec.workers[1].name", "general"),
                ("spec.network.services", "192.168.0.0/20"),
            ],
        ),
        expect![[r#"
            spec.controlPlane.replicas: must be odd (1, 3, 5, 7), got 4
            spec.workers[0].replicas: must be between 0 and 1000, got -3
            spec.workers[1].name: duplicate worker pool name "general"
            spec.network.services: must not overlap spec.network.pods (192.168.0.0/16), got 192.168.0.0/20"#]],
    );
}

#[test]
fn dependency_cycles_are_named() {
    check_file(
        r#"
apiVersion: fledge.dev/v1alpha1
kind: ClusterProfile
metadata: {name: cycles}
spec:
  addons:
    - {name: cni, manifests: [{apiVersion: v1, kind: Namespace, metadata: {name: cni}}]}
    - {name: a, dependsOn: [cni, b], manifests: [{apiVersion: v1, kind: Namespace, metadata: {name: a}}]}
    - {name: b, dependsOn: [a], manifests: [{apiVersion: v1, kind: Namespace, metadata: {name: b}}]}
    - {name: c1, dependsOn: [c3], manifests: [{apiVersion: v1, kind: Namespace, metadata: {name: c1}}]}
    - {name: c2, dependsOn: [c1], manifests: [{apiVersion: v1, kind: Namespace, metadata: {name: c2}}]}
    - {name: c3, dependsOn: [c2, cni], manifests: [{apiVersion: v1, kind: Namespace, metadata: {name: c3}}]}
"#,
        expect![[r#"
            spec.addons[1].dependsOn: dependency cycle: a -> b -> a
            spec.addons[3].dependsOn: dependency cycle: c1 -> c3 -> c2 -> c1"#]],
    );
}

#[test]
fn a_long_dependency_chain_is_fine() {
    let addons: Vec<String> = (0..2000)
        .map(|i| {
            // Each add-on depends on the next one, so the search goes 2000 deep from a0.
            let depends = if i == 1999 { String::new() } else { format!("dependsOn: [a{}], ", i + 1) };
            format!("    - {{name: a{i}, {depends}manifests: [{{apiVersion: v1, kind: Namespace, metadata: {{name: a{i}}}}}]}}")
        })
        .collect();
    let yaml = format!(
        "apiVersion: fledge.dev/v1alpha1\nkind: ClusterProfile\nmetadata: {{name: long}}\nspec:\n  addons:\n{}\n",
        addons.join("\n")
    );
    check_file(&yaml, expect!["ok ClusterProfile/long"]);
}

#[test]
fn field_errors_display_as_path_and_reason() {
    assert_eq!(
        FieldError::new("spec.workers[1].name", "must not be empty").to_string(),
        "spec.workers[1].name: must not be empty"
    );
    assert_eq!(
        FieldError::new("", "contains no documents").to_string(),
        "contains no documents"
    );
}

// === Day-2 updates ===

/// `(path, reason fragment)` of the one error wanted, or `None` for an allowed update.
type Want<'a> = Option<(&'a str, &'a str)>;

/// Validates the update from the `edge-1` spec to the same spec with `edits` applied;
/// `want` is `(path, reason fragment)` or `None` when the update is allowed.
#[track_caller]
fn check_update(name: &str, edits: Edits, want: Want) {
    let old = cluster_spec(CLUSTER);
    let new = cluster_spec(&edit(CLUSTER, edits));
    let errs = validate_update(&old, &new).err().unwrap_or_default();
    match want {
        None => assert!(
            errs.is_empty(),
            "{name}: want no errors, got:\n{}",
            render(&errs)
        ),
        Some((path, reason)) => assert!(
            errs.len() == 1 && errs[0].path == path && errs[0].reason.contains(reason),
            "{name}: want exactly `{path}: ...{reason}...`, got:\n{}",
            render(&errs)
        ),
    }
}

#[test]
fn updates_follow_the_day_2_rules() {
    #[rustfmt::skip]
    let cases: &[(&str, Edits, Want)] = &[
        ("no change", &[], None),
        ("patch upgrade", &[("spec.kubernetesVersion", "v1.33.9")], None),
        ("minor upgrade", &[("spec.kubernetesVersion", "v1.34.0")], None),
        ("build metadata", &[("spec.kubernetesVersion", "v1.33.4+vmware.1")], None),
        ("scale workers and control plane", &[("spec.workers[0].replicas", "10"), ("spec.controlPlane.replicas", "5")], None),
        ("new pool and template", &[("spec.workers[2]", "{name: extra, replicas: 1, machine: {cpus: 2, memoryMiB: 4096, diskGiB: 40}}"), ("spec.infrastructure.vsphere.template", "ubuntu-2404-kube-v1.34.0")], None),
        ("rotated vCenter certificate", &[("spec.infrastructure.vsphere.thumbprint", "AA:01:06:63:55:9D:DF:FE:38:81:6E:2C:FA:71:BC:63:82:C5:16:51")], None),
        ("explicit default service domain", &[("spec.network.serviceDomain", "cluster.local")], None),
        ("skip a minor", &[("spec.kubernetesVersion", "v1.35.0")], Some(("spec.kubernetesVersion", "must upgrade one minor version at a time: from v1.33.4 the next is v1.34.x, got v1.35.0"))),
        ("minor downgrade", &[("spec.kubernetesVersion", "v1.32.8")], Some(("spec.kubernetesVersion", "must not downgrade from v1.33.4, got v1.32.8"))),
        ("patch downgrade", &[("spec.kubernetesVersion", "v1.33.3")], Some(("spec.kubernetesVersion", "must not downgrade from v1.33.4, got v1.33.3"))),
        ("major upgrade", &[("spec.kubernetesVersion", "v2.0.0")], Some(("spec.kubernetesVersion", "must keep major version 1"))),
        ("other vCenter", &[("spec.infrastructure.vsphere.server", "vcenter2.example.com")], Some(("spec.infrastructure.vsphere.server", "is immutable: was vcenter.example.com, got vcenter2.example.com"))),
        ("other datacenter", &[("spec.infrastructure.vsphere.datacenter", "dc2")], Some(("spec.infrastructure.vsphere.datacenter", "is immutable"))),
        ("other credentials", &[("spec.infrastructure.vsphere.credentialsSecret", "other")], Some(("spec.infrastructure.vsphere.credentialsSecret", "is immutable"))),
        ("provider removed", &[("spec.infrastructure.vsphere", "<delete>")], Some(("spec.infrastructure.vsphere", "the infrastructure provider is immutable"))),
        ("pod CIDR", &[("spec.network.pods", "172.16.0.0/16")], Some(("spec.network.pods", "is immutable: was 192.168.0.0/16, got 172.16.0.0/16"))),
        ("service CIDR", &[("spec.network.services", "10.128.0.0/12")], Some(("spec.network.services", "is immutable"))),
        ("service domain", &[("spec.network.serviceDomain", "edge.local")], Some(("spec.network.serviceDomain", "is immutable: was cluster.local, got edge.local"))),
        ("endpoint host", &[("spec.controlPlane.endpoint.host", "10.0.0.11")], Some(("spec.controlPlane.endpoint.host", "is immutable"))),
        ("endpoint port", &[("spec.controlPlane.endpoint.port", "443")], Some(("spec.controlPlane.endpoint.port", "is immutable: was 6443, got 443"))),
        ("even control plane", &[("spec.controlPlane.replicas", "4")], Some(("spec.controlPlane.replicas", "must be odd (1, 3, 5, 7), got 4"))),
    ];
    for &(name, edits, want) in cases {
        check_update(name, edits, want);
    }
}

// === Fixture helpers ===

fn render(errs: &[FieldError]) -> String {
    errs.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

fn cluster_spec(yaml: &str) -> WorkloadClusterSpec {
    match load_documents(yaml) {
        Ok(mut documents) => match documents.pop() {
            Some(Document::WorkloadCluster(cluster)) => cluster.spec,
            other => panic!("fixture is not one WorkloadCluster: {other:?}"),
        },
        Err(errs) => panic!("fixture does not load:\n{}", render(&errs)),
    }
}

/// Applies `(path, YAML value)` edits to a one-document YAML fixture and returns the result
/// as JSON (which is YAML too). Paths use the notation of `FieldError`; `[n]` one past the end
/// of a list appends, and the value `<delete>` removes the field.
fn edit(yaml: &str, edits: Edits) -> String {
    let mut root: Value = serde_saphyr::from_str(yaml).expect("fixture parses");
    for &(path, value) in edits {
        let segments = parse_path(path);
        let (last, parents) = segments.split_last().expect("path is not empty");
        let mut node = &mut root;
        for (i, segment) in parents.iter().enumerate() {
            let next_is_index = matches!(segments[i + 1], Segment::Index(_));
            let empty = if next_is_index {
                Value::Array(Vec::new())
            } else {
                Value::Object(Default::default())
            };
            node = match segment {
                Segment::Key(key) => node
                    .as_object_mut()
                    .unwrap_or_else(|| panic!("{path}: {key} is not in an object"))
                    .entry(key.clone())
                    .or_insert(empty),
                Segment::Index(index) => node
                    .as_array_mut()
                    .and_then(|items| items.get_mut(*index))
                    .unwrap_or_else(|| panic!("{path}: no item {index}")),
            };
        }
        let new_value = (value != "<delete>")
            .then(|| serde_saphyr::from_str::<Value>(value).expect("edit value parses"));
        match (last, new_value) {
            (Segment::Key(key), Some(v)) => {
                node.as_object_mut()
                    .expect("parent is an object")
                    .insert(key.clone(), v);
            }
            (Segment::Key(key), None) => {
                node.as_object_mut()
                    .expect("parent is an object")
                    .shift_remove(key)
                    .expect("field to delete exists");
            }
            (Segment::Index(index), Some(v)) => {
                let items = node.as_array_mut().expect("parent is a list");
                if *index == items.len() {
                    items.push(v);
                } else {
                    items[*index] = v;
                }
            }
            (Segment::Index(index), None) => {
                node.as_array_mut()
                    .expect("parent is a list")
                    .remove(*index);
            }
        }
    }
    serde_json::to_string_pretty(&root).expect("JSON serializes")
}

enum Segment {
    Key(String),
    Index(usize),
}

/// `spec.workers[1].labels[node.kubernetes.io/x]` → keys and indexes; a bracket holding
/// digits is a list index, anything else a map key.
fn parse_path(path: &str) -> Vec<Segment> {
    let mut segments = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('[') {
            let (inside, tail) = after.split_once(']').expect("closing bracket");
            segments.push(match inside.parse() {
                Ok(index) => Segment::Index(index),
                Err(_) => Segment::Key(inside.to_string()),
            });
            rest = tail.strip_prefix('.').unwrap_or(tail);
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            segments.push(Segment::Key(rest[..end].to_string()));
            rest = rest[end..].strip_prefix('.').unwrap_or(&rest[end..]);
        }
    }
    segments
}
