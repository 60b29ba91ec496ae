//! The node runtime against an in-memory cluster: scheduling, workload status, real agent
//! processes (a shell script stands in for the agent), restarts, eviction and clean shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::Duration;

use fledge_sim::kubelet::{self, KubeletConfig, KubeletHandle};
use kube_sim::api_server::{DeleteOptions, ListOptions};
use kube_sim::sim::{ClusterHandle, ClusterOptions, Sim};
use serde_json::{Value, json};

const SPEED: f64 = 100.0;
const DEADLINE: Duration = Duration::from_secs(30);

struct Env {
    _sim: Sim,
    cluster: ClusterHandle,
    kubelet: Option<KubeletHandle>,
    dir: tempfile::TempDir,
}

impl Env {
    fn logs(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    fn log_of(&self, pod: &str) -> String {
        std::fs::read_to_string(self.logs().join(format!("{pod}.log"))).unwrap_or_default()
    }

    fn create(&self, obj: Value) -> Value {
        self.cluster.api().create_object(obj).unwrap()
    }

    fn pods(&self, label: &str) -> Vec<Value> {
        let opts = ListOptions {
            label_selector: Some(label.to_owned()),
            ..ListOptions::default()
        };
        let list = self
            .cluster
            .api()
            .list_objects("v1", "Pod", Some("default"), &opts)
            .unwrap();
        list["items"].as_array().cloned().unwrap_or_default()
    }

    fn get(&self, api_version: &str, kind: &str, name: &str) -> Option<Value> {
        self.cluster
            .api()
            .get_object(api_version, kind, Some("default"), name)
            .ok()
    }

    fn processes(&self) -> &kubelet::AgentProcesses {
        self.kubelet.as_ref().unwrap().processes()
    }
}

/// A cluster with a tainted control-plane Node and two workers, and its node runtime.
async fn env(agent_script: &str) -> Env {
    let sim = Sim::in_memory();
    let cluster = sim.add_cluster(ClusterOptions::new("w1")).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let agent_bin = dir.path().join("agent.sh");
    std::fs::write(&agent_bin, agent_script).unwrap();
    let mut perms = std::fs::metadata(&agent_bin).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&agent_bin, perms).unwrap();
    let api = cluster.api();
    for (i, (name, cp)) in [("cp-0", true), ("worker-0", false), ("worker-1", false)]
        .into_iter()
        .enumerate()
    {
        let mut labels = json!({"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"});
        let mut spec = json!({"podCIDR": format!("10.244.{i}.0/24")});
        if cp {
            labels["node-role.kubernetes.io/control-plane"] = json!("");
            spec["taints"] =
                json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]);
        }
        let node = api
            .create_object(json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": labels},
                "spec": spec,
            }))
            .unwrap();
        set_node_ready(&cluster, &node, true, &format!("10.0.0.{}", 10 + i));
    }
    let cfg = KubeletConfig::new(&agent_bin, dir.path().join("logs"), dir.path().join("work"))
        .with_speed(SPEED);
    let kubelet = kubelet::spawn(cluster.clone(), cfg);
    Env {
        _sim: sim,
        cluster,
        kubelet: Some(kubelet),
        dir,
    }
}

fn set_node_ready(cluster: &ClusterHandle, node: &Value, ready: bool, ip: &str) {
    let mut node = node.clone();
    node["apiVersion"] = json!("v1");
    node["kind"] = json!("Node");
    node["status"] = json!({
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "Unknown" },
                        "reason": if ready { "KubeletReady" } else { "NodeStatusUnknown" },
                        "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        "addresses": [{"type": "InternalIP", "address": ip}],
    });
    cluster.api().update_object_status(node).unwrap();
}

/// Polls `f` until it returns `Some`, failing after [`DEADLINE`].
async fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn deployment(name: &str, replicas: i64, image: &str, pod_spec_extra: Value) -> Value {
    let mut spec = json!({"containers": [{"name": "main", "image": image}]});
    merge(&mut spec, &pod_spec_extra);
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
        },
    })
}

fn merge(target: &mut Value, patch: &Value) {
    if let (Some(t), Some(p)) = (target.as_object_mut(), patch.as_object()) {
        for (k, v) in p {
            match t.get_mut(k) {
                Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                _ => {
                    t.insert(k.clone(), v.clone());
                }
            }
        }
    }
}

fn running(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
        && pod["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        && pod["metadata"]["deletionTimestamp"].is_null()
}

/// Whether the process is gone (or a zombie nobody reaped yet: it no longer runs).
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| {
            rest.trim_start().starts_with('Z') || rest.trim_start().starts_with('X')
        }),
    }
}

const SLEEPER: &str = "#!/bin/sh\nexec sleep 1000\n";

#[tokio::test]
async fn deployment_pods_run_on_workers_and_status_follows() {
    let env = env(SLEEPER).await;
    env.create(deployment("web", 3, "nginx:1.27", json!({})));
    let d = wait_for("deployment available", || {
        env.get("apps/v1", "Deployment", "web")
            .filter(|d| d["status"]["availableReplicas"] == 3)
    })
    .await;
    assert_eq!(d["status"]["readyReplicas"], 3);
    assert_eq!(d["status"]["updatedReplicas"], 3);
    assert_eq!(
        d["status"]["observedGeneration"],
        d["metadata"]["generation"]
    );
    let conds = d["status"]["conditions"].as_array().unwrap();
    assert!(
        conds
            .iter()
            .any(|c| c["type"] == "Available" && c["status"] == "True")
    );
    assert!(
        conds
            .iter()
            .any(|c| c["type"] == "Progressing" && c["reason"] == "NewReplicaSetAvailable")
    );

    let pods = env.pods("app=web");
    assert_eq!(pods.len(), 3);
    for pod in &pods {
        assert!(running(pod), "{pod}");
        let node = pod["spec"]["nodeName"].as_str().unwrap();
        assert!(node.starts_with("worker-"), "scheduled on {node}");
        let hash = pod["metadata"]["labels"]["pod-template-hash"]
            .as_str()
            .unwrap();
        let owner = &pod["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "ReplicaSet");
        assert_eq!(owner["name"], format!("web-{hash}"));
        assert!(
            pod["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with(&format!("web-{hash}-"))
        );
        assert!(
            pod["status"]["podIP"]
                .as_str()
                .unwrap()
                .starts_with("10.244.")
        );
        assert!(
            pod["status"]["hostIP"]
                .as_str()
                .unwrap()
                .starts_with("10.0.0.")
        );
        assert!(pod["status"]["startTime"].is_string());
        assert_eq!(pod["status"]["containerStatuses"][0]["ready"], true);
        assert!(pod["status"]["containerStatuses"][0]["state"]["running"].is_object());
    }

    // A template change rolls the Pods onto a new ReplicaSet.
    let mut d = env.get("apps/v1", "Deployment", "web").unwrap();
    d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.28");
    env.cluster.api().update_object(d).unwrap();
    wait_for("rollout", || {
        let pods = env.pods("app=web");
        (pods.len() == 3
            && pods
                .iter()
                .all(|p| running(p) && p["spec"]["containers"][0]["image"] == "nginx:1.28"))
        .then_some(())
    })
    .await;
    wait_for("rolled deployment status", || {
        env.get("apps/v1", "Deployment", "web").filter(|d| {
            d["status"]["updatedReplicas"] == 3
                && d["status"]["availableReplicas"] == 3
                && d["status"]["replicas"] == 3
        })
    })
    .await;
}

#[tokio::test]
async fn daemonsets_node_selectors_and_unschedulable_pods() {
    let env = env(SLEEPER).await;
    env.create(json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "everywhere", "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": {"app": "everywhere"}},
            "template": {"metadata": {"labels": {"app": "everywhere"}}, "spec": {
                "tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}],
                "containers": [{"name": "c", "image": "busybox"}],
            }},
        },
    }));
    env.create(json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "workers", "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": {"app": "workers"}},
            "template": {"metadata": {"labels": {"app": "workers"}}, "spec": {
                "containers": [{"name": "c", "image": "busybox"}],
            }},
        },
    }));
    env.create(deployment(
        "pinned",
        2,
        "busybox",
        json!({"nodeSelector": {"kubernetes.io/hostname": "worker-1"}}),
    ));
    env.create(deployment(
        "nowhere",
        1,
        "busybox",
        json!({"nodeSelector": {"disk": "ssd"}}),
    ));

    let ds = wait_for("daemonset everywhere ready", || {
        env.get("apps/v1", "DaemonSet", "everywhere")
            .filter(|d| d["status"]["numberReady"] == 3)
    })
    .await;
    assert_eq!(ds["status"]["desiredNumberScheduled"], 3);
    let mut nodes: Vec<String> = env
        .pods("app=everywhere")
        .iter()
        .map(|p| p["spec"]["nodeName"].as_str().unwrap().to_owned())
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["cp-0", "worker-0", "worker-1"]);

    wait_for("daemonset workers ready", || {
        env.get("apps/v1", "DaemonSet", "workers").filter(|d| {
            d["status"]["numberReady"] == 2 && d["status"]["desiredNumberScheduled"] == 2
        })
    })
    .await;
    assert!(
        env.pods("app=workers")
            .iter()
            .all(|p| p["spec"]["nodeName"] != "cp-0")
    );

    wait_for("pinned deployment available", || {
        env.get("apps/v1", "Deployment", "pinned")
            .filter(|d| d["status"]["availableReplicas"] == 2)
    })
    .await;
    assert!(
        env.pods("app=pinned")
            .iter()
            .all(|p| p["spec"]["nodeName"] == "worker-1")
    );

    let pending = wait_for("unschedulable pod", || {
        env.pods("app=nowhere").into_iter().find(|p| {
            p["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "PodScheduled" && c["status"] == "False")
            })
        })
    })
    .await;
    assert_eq!(pending["status"]["phase"], "Pending");
    assert!(pending["spec"]["nodeName"].is_null());
    let cond = &pending["status"]["conditions"][0];
    assert_eq!(cond["reason"], "Unschedulable");
    let message = cond["message"].as_str().unwrap();
    assert!(message.starts_with("0/3 nodes are available:"), "{message}");
    let d = env.get("apps/v1", "Deployment", "nowhere").unwrap();
    assert!(
        d["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Available" && c["status"] == "False")
    );
}

#[tokio::test]
async fn statefulset_pods_come_up_in_order() {
    let env = env(SLEEPER).await;
    env.create(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": "default"},
        "spec": {
            "replicas": 3,
            "serviceName": "db",
            "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}}, "spec": {
                "containers": [{"name": "c", "image": "postgres"}],
            }},
        },
    }));
    let sts = wait_for("statefulset ready", || {
        env.get("apps/v1", "StatefulSet", "db")
            .filter(|s| s["status"]["readyReplicas"] == 3)
    })
    .await;
    assert_eq!(
        sts["status"]["currentRevision"],
        sts["status"]["updateRevision"]
    );
    let mut pods: Vec<Value> = env.pods("app=db");
    pods.sort_by_key(|p| p["metadata"]["name"].as_str().unwrap().to_owned());
    let names: Vec<&str> = pods
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["db-0", "db-1", "db-2"]);
    // OrderedReady: each Pod was created only after the previous one was Ready.
    for pair in pods.windows(2) {
        let ready_at = pair[0]["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap()["lastTransitionTime"]
            .as_str()
            .unwrap()
            .to_owned();
        let created = pair[1]["metadata"]["creationTimestamp"].as_str().unwrap();
        assert!(created >= ready_at.as_str(), "{created} < {ready_at}");
    }
}

/// Prints its arguments, env and mounted files, then waits on a child process.
const AGENT: &str = r#"#!/bin/sh
echo "args: $*"
echo "FOO=$FOO CFG_MODE=$CFG_MODE"
echo "POD=$POD_NAME NODE=$NODE_NAME"
for a in "$@"; do
  case "$a" in
    --token-file=*) echo "token-via-arg: $(cat "${a#--token-file=}")" ;;
  esac
done
echo "token-via-root: $(cat "$FLEDGE_SIM_ROOT/etc/agent/token")"
test -f "$KUBECONFIG" && echo "kubeconfig: present"
echo "pid: $$"
sleep 1000 &
echo "child: $!"
trap 'echo "got SIGTERM"; exit 0' TERM
wait
"#;

fn agent_deployment() -> Value {
    deployment(
        "agent",
        1,
        "example.com/fledge-agent:test",
        json!({
            "volumes": [{"name": "creds", "secret": {"secretName": "agent-creds"}}],
            "containers": [{
                "name": "main",
                "image": "example.com/fledge-agent:test",
                "args": ["--hello", "world", "--token-file=/etc/agent/token", "--pod=$(POD_NAME)"],
                "envFrom": [{"configMapRef": {"name": "agent-config"}, "prefix": "CFG_"}],
                "env": [
                    {"name": "FOO", "valueFrom": {"secretKeyRef": {"name": "agent-creds", "key": "foo"}}},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                ],
                "volumeMounts": [{"name": "creds", "mountPath": "/etc/agent", "readOnly": true}],
            }],
        }),
    )
}

/// The Secret and ConfigMap the agent Deployment reads.
fn create_agent_inputs(env: &Env) {
    env.create(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "agent-config", "namespace": "default"},
        "data": {"MODE": "sim"},
    }));
    env.create(agent_secret());
}

fn agent_secret() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "agent-creds", "namespace": "default"},
        "stringData": {"foo": "bar", "token": "s3cret"},
    })
}

/// The pids the script logged after its `n`-th start.
fn logged_pids(log: &str, n: usize) -> Option<(u32, u32)> {
    let pid = log
        .lines()
        .filter_map(|l| l.strip_prefix("pid: "))
        .nth(n)?
        .parse()
        .ok()?;
    let child = log
        .lines()
        .filter_map(|l| l.strip_prefix("child: "))
        .nth(n)?
        .parse()
        .ok()?;
    Some((pid, child))
}

#[tokio::test]
async fn agent_containers_run_restart_and_stop() {
    let env = env(AGENT).await;
    create_agent_inputs(&env);
    env.create(agent_deployment());
    let pod = wait_for("agent pod running", || {
        env.pods("app=agent").into_iter().find(running)
    })
    .await;
    let pod_name = pod["metadata"]["name"].as_str().unwrap().to_owned();
    let node = pod["spec"]["nodeName"].as_str().unwrap().to_owned();
    let (pid, child) = wait_for("agent log", || logged_pids(&env.log_of(&pod_name), 0)).await;
    let log = env.log_of(&pod_name);
    let volume = env
        .dir
        .path()
        .join("work/pods/default")
        .join(&pod_name)
        .join("volumes/creds");
    assert!(
        log.contains(&format!(
            "args: --hello world --token-file={}/token --pod={pod_name}",
            volume.display()
        )),
        "{log}"
    );
    assert!(log.contains("FOO=bar CFG_MODE=sim"), "{log}");
    assert!(
        log.contains(&format!("POD={pod_name} NODE={node}")),
        "{log}"
    );
    assert!(log.contains("token-via-arg: s3cret"), "{log}");
    assert!(log.contains("token-via-root: s3cret"), "{log}");
    assert!(log.contains("kubeconfig: present"), "{log}");
    assert_eq!(env.processes().pids("default", &pod_name), vec![pid]);
    let listed = env.processes().list();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].cluster.as_str(), listed[0].container.as_str()),
        ("w1", "main")
    );
    assert_eq!(
        env.processes().pids_in("other", "default", &pod_name),
        Vec::<u32>::new()
    );

    // The fault knob: the process dies, the runtime restarts it and counts.
    assert_eq!(env.processes().kill_agent("default", &pod_name), 1);
    let pod = wait_for("restarted agent", || {
        env.pods("app=agent")
            .into_iter()
            .find(|p| running(p) && p["status"]["containerStatuses"][0]["restartCount"] == 1)
    })
    .await;
    let last = &pod["status"]["containerStatuses"][0]["lastState"]["terminated"];
    assert_eq!(last["exitCode"], 137, "{pod}");
    let (pid2, child2) = wait_for("second start", || logged_pids(&env.log_of(&pod_name), 1)).await;
    assert_ne!(pid, pid2);
    assert!(
        process_gone(pid) && process_gone(child),
        "the first container's processes are gone"
    );
    assert!(!process_gone(pid2) && !process_gone(child2));

    // Deleting the Pod stops its processes gracefully (SIGTERM first); the ReplicaSet replaces it.
    env.cluster
        .api()
        .delete_object(
            "v1",
            "Pod",
            Some("default"),
            &pod_name,
            &DeleteOptions::default(),
        )
        .unwrap();
    wait_for("processes of the deleted pod gone", || {
        (process_gone(pid2) && process_gone(child2)).then_some(())
    })
    .await;
    assert!(
        env.log_of(&pod_name).contains("got SIGTERM"),
        "{}",
        env.log_of(&pod_name)
    );
    let replacement = wait_for("replacement pod", || {
        env.pods("app=agent")
            .into_iter()
            .find(|p| running(p) && p["metadata"]["name"] != pod_name.as_str())
    })
    .await;
    let replacement = replacement["metadata"]["name"].as_str().unwrap().to_owned();
    let (pid3, child3) = wait_for("replacement runs", || {
        logged_pids(&env.log_of(&replacement), 0)
    })
    .await;

    // Deleting the Deployment stops the processes, children included, and the Pod goes.
    env.cluster
        .api()
        .delete_object(
            "apps/v1",
            "Deployment",
            Some("default"),
            "agent",
            &DeleteOptions::default(),
        )
        .unwrap();
    wait_for("processes gone", || {
        (process_gone(pid3) && process_gone(child3)).then_some(())
    })
    .await;
    wait_for("pod gone", || {
        env.pods("app=agent").is_empty().then_some(())
    })
    .await;
    assert!(env.processes().list().is_empty());
}

#[tokio::test]
async fn agents_wait_for_their_secrets() {
    let env = env(AGENT).await;
    env.create(agent_deployment());
    let pod = wait_for("waiting agent", || {
        env.pods("app=agent").into_iter().find(|p| {
            p["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("not found"))
        })
    })
    .await;
    assert_eq!(pod["status"]["phase"], "Pending", "{pod}");
    assert!(
        env.processes()
            .pids("default", pod["metadata"]["name"].as_str().unwrap())
            .is_empty()
    );
    create_agent_inputs(&env);
    let pod = wait_for("agent running", || {
        env.pods("app=agent").into_iter().find(running)
    })
    .await;
    let name = pod["metadata"]["name"].as_str().unwrap().to_owned();
    let log = wait_for("agent log", || {
        let log = env.log_of(&name);
        log.contains("token-via-root").then_some(log)
    })
    .await;
    assert!(log.contains("token-via-root: s3cret"), "{log}");
}

#[tokio::test]
async fn crash_looping_agents_back_off() {
    let env = env("#!/bin/sh\necho crashing\nexit 3\n").await;
    env.create(deployment(
        "crash",
        1,
        "ghcr.io/fledge-dev/fledge-agent:0.1.0",
        json!({}),
    ));
    let pod = wait_for("crash loop", || {
        env.pods("app=crash").into_iter().find(|p| {
            let cs = &p["status"]["containerStatuses"][0];
            cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"
                && cs["restartCount"].as_u64().is_some_and(|n| n >= 2)
        })
    })
    .await;
    let cs = &pod["status"]["containerStatuses"][0];
    assert_eq!(cs["ready"], false);
    assert_eq!(cs["lastState"]["terminated"]["exitCode"], 3);
    assert_eq!(pod["status"]["phase"], "Running");
    let d = env.get("apps/v1", "Deployment", "crash").unwrap();
    assert!(d["status"]["availableReplicas"].is_null() || d["status"]["availableReplicas"] == 0);
    assert!(
        env.log_of(pod["metadata"]["name"].as_str().unwrap())
            .matches("crashing")
            .count()
            >= 2
    );
}

#[tokio::test]
async fn agents_authenticate_as_their_service_account() {
    let script = "#!/bin/sh\n/usr/bin/kubectl --kubeconfig \"$KUBECONFIG\" get configmaps -n default -o name\necho \"kubectl-exit: $?\"\n/usr/bin/kubectl --kubeconfig \"$KUBECONFIG\" auth whoami -o jsonpath='{.status.userInfo.username}'\necho\nexec sleep 1000\n";
    let env = env(script).await;
    env.create(json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "agent", "namespace": "default"},
    }));
    env.create(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "hello", "namespace": "default"},
        "data": {"a": "b"},
    }));
    env.create(deployment(
        "authn",
        1,
        "fledge-agent:dev",
        json!({"serviceAccountName": "agent"}),
    ));
    let pod = wait_for("pod", || env.pods("app=authn").into_iter().find(running)).await;
    let pod_name = pod["metadata"]["name"].as_str().unwrap().to_owned();
    let log = wait_for("kubectl output", || {
        let log = env.log_of(&pod_name);
        log.contains("system:serviceaccount").then_some(log)
    })
    .await;
    assert!(log.contains("configmap/hello"), "{log}");
    assert!(log.contains("kubectl-exit: 0"), "{log}");
    assert!(log.contains("system:serviceaccount:default:agent"), "{log}");
}

#[tokio::test]
async fn pods_on_a_not_ready_node_are_evicted_and_rescheduled() {
    let env = env(AGENT).await;
    create_agent_inputs(&env);
    env.create(deployment("web", 4, "nginx", json!({})));
    env.create(agent_deployment());
    env.create(json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "daemon", "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": {"app": "daemon"}},
            "template": {"metadata": {"labels": {"app": "daemon"}}, "spec": {
                "containers": [{"name": "c", "image": "busybox"}],
            }},
        },
    }));
    wait_for("daemon pods", || {
        env.get("apps/v1", "DaemonSet", "daemon")
            .filter(|d| d["status"]["numberReady"] == 2)
    })
    .await;
    wait_for("available", || {
        env.get("apps/v1", "Deployment", "web")
            .filter(|d| d["status"]["availableReplicas"] == 4)
    })
    .await;
    let agent = wait_for("agent", || env.pods("app=agent").into_iter().find(running)).await;
    let agent_name = agent["metadata"]["name"].as_str().unwrap().to_owned();
    let (pid, child) = wait_for("agent log", || logged_pids(&env.log_of(&agent_name), 0)).await;
    let dead = agent["spec"]["nodeName"].as_str().unwrap().to_owned();
    let node = env
        .cluster
        .api()
        .get_object("v1", "Node", None, &dead)
        .unwrap();
    set_node_ready(&env.cluster, &node, false, "10.0.0.99");

    // The node's processes die with it, its pods move to the other worker.
    wait_for("agent process killed", || {
        (process_gone(pid) && process_gone(child)).then_some(())
    })
    .await;
    wait_for("pods rescheduled", || {
        let web = env.pods("app=web");
        let agents = env.pods("app=agent");
        (web.len() == 4
            && web
                .iter()
                .chain(agents.iter())
                .all(|p| running(p) && p["spec"]["nodeName"] != dead.as_str())
            && agents.len() == 1)
            .then_some(())
    })
    .await;
    wait_for("deployment available again", || {
        env.get("apps/v1", "Deployment", "web")
            .filter(|d| d["status"]["availableReplicas"] == 4)
    })
    .await;
    // DaemonSet Pods tolerate a NotReady Node: they stay, not ready.
    let daemons = env.pods("app=daemon");
    assert_eq!(daemons.len(), 2);
    let on_dead = daemons
        .iter()
        .find(|p| p["spec"]["nodeName"] == dead.as_str())
        .expect("the daemon pod of the NotReady node stays");
    assert!(!running(on_dead));
    wait_for("daemonset status", || {
        env.get("apps/v1", "DaemonSet", "daemon").filter(|d| {
            d["status"]["numberReady"] == 1 && d["status"]["desiredNumberScheduled"] == 2
        })
    })
    .await;
    let moved = env.pods("app=agent").remove(0);
    let moved_name = moved["metadata"]["name"].as_str().unwrap().to_owned();
    assert_ne!(moved_name, agent_name);
    wait_for("agent runs again", || {
        logged_pids(&env.log_of(&moved_name), 0)
    })
    .await;

    // A deleted Node's pods go as well.
    let live = moved["spec"]["nodeName"].as_str().unwrap().to_owned();
    env.cluster
        .api()
        .delete_object("v1", "Node", None, &live, &DeleteOptions::default())
        .unwrap();
    wait_for("pods of the deleted node gone", || {
        env.pods("app=web")
            .iter()
            .all(|p| p["spec"]["nodeName"] != live.as_str())
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn shutting_down_the_runtime_leaves_no_process_behind() {
    let mut env = env(AGENT).await;
    create_agent_inputs(&env);
    let mut d = agent_deployment();
    d["spec"]["replicas"] = json!(2);
    env.create(d);
    let pods = wait_for("agents running", || {
        let pods: Vec<Value> = env.pods("app=agent").into_iter().filter(running).collect();
        (pods.len() == 2).then_some(pods)
    })
    .await;
    let mut pids = Vec::new();
    for p in &pods {
        let name = p["metadata"]["name"].as_str().unwrap().to_owned();
        let (pid, child) = wait_for("agent log", || logged_pids(&env.log_of(&name), 0)).await;
        pids.extend([pid, child]);
    }
    assert!(pids.iter().all(|p| !process_gone(*p)));
    env.kubelet.take().unwrap().shutdown().await;
    // Signals are delivered asynchronously: give the kernel the deadline to finish them off.
    wait_for("no process survives the runtime", || {
        pids.iter().all(|p| process_gone(*p)).then_some(())
    })
    .await;
}
