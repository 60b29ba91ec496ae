//! The Pod side of the runtime: binding pending Pods to Nodes, starting them after the start
//! delay (real processes for agent containers, nothing for the others), their status, graceful
//! termination and eviction from dead Nodes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::time::Instant;

use kube_sim::api_server::{DeleteOptions, PatchType, WriteOptions, now_rfc3339};
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use super::agent::{LaunchContext, Phase, Stop, Supervisor, is_agent_image};
use super::objects::{cond, conditions_with_times, is_deleting, name, namespace, uid};
use super::scheduling::{choose, node_ready, tolerates};
use super::{Kubelet, Snapshot};

/// What the runtime keeps about a Pod it runs.
pub(crate) struct PodRuntime {
    namespace: String,
    name: String,
    start_at: Instant,
    start_time: String,
    started_at: Option<String>,
    pod_ip: String,
    host_ip: String,
    agents: BTreeMap<String, Supervisor>,
}

impl PodRuntime {
    /// Asks every agent container to stop.
    pub(crate) fn stop(&self, how: Stop) {
        for s in self.agents.values() {
            s.stop(how);
        }
    }

    /// Whether every agent process has ended.
    fn stopped(&self) -> bool {
        self.agents.values().all(|s| s.snapshot().done)
    }

    /// Waits for the agent supervisors to end.
    pub(crate) async fn join(self) {
        for (_, s) in self.agents {
            s.join().await;
        }
    }
}

fn pod_key(pod: &Value) -> String {
    format!("{}/{}", namespace(pod), name(pod))
}

impl Kubelet {
    /// Binds unscheduled Pods to feasible Nodes, or reports why none fits.
    pub(super) fn schedule(&mut self, snap: &Snapshot) {
        let mut load: BTreeMap<String, usize> = BTreeMap::new();
        for pod in &snap.pods {
            if let Some(n) = pod["spec"]["nodeName"].as_str() {
                *load.entry(n.to_owned()).or_default() += 1;
            }
        }
        for pod in &snap.pods {
            let scheduler = pod["spec"]["schedulerName"]
                .as_str()
                .unwrap_or("default-scheduler");
            if !pod["spec"]["nodeName"]
                .as_str()
                .unwrap_or_default()
                .is_empty()
                || is_deleting(pod)
                || scheduler != "default-scheduler"
                || matches!(
                    pod["status"]["phase"].as_str(),
                    Some("Succeeded" | "Failed")
                )
            {
                continue;
            }
            match choose(&snap.nodes, &pod["spec"], &load) {
                Ok(node) => {
                    let node_name = name(node).to_owned();
                    let patch = json!({"spec": {"nodeName": node_name}});
                    match self.api.patch_object(
                        "v1",
                        "Pod",
                        Some(namespace(pod)),
                        name(pod),
                        PatchType::Merge,
                        &patch,
                        &WriteOptions {
                            field_manager: Some("default-scheduler".into()),
                            ..WriteOptions::default()
                        },
                    ) {
                        Ok(_) => {
                            debug!(pod = %pod_key(pod), node = %node_name, "scheduled");
                            *load.entry(node_name).or_default() += 1;
                        }
                        Err(err) => debug!(pod = %pod_key(pod), %err, "binding failed"),
                    }
                }
                Err(message) => {
                    let mut status = pod["status"].clone();
                    if !status.is_object() {
                        status = json!({});
                    }
                    status["phase"] = json!("Pending");
                    let mut c = cond("PodScheduled", false, "Unschedulable", &message);
                    c["lastProbeTime"] = Value::Null;
                    status["conditions"] = conditions_with_times(
                        &pod["status"]["conditions"],
                        vec![c],
                        &now_rfc3339(),
                    );
                    self.write_pod_status(pod, status);
                }
            }
        }
    }

    /// Writes a Pod's status if it changed; conflicts are retried by the next pass.
    fn write_pod_status(&self, pod: &Value, status: Value) {
        if pod["status"] == status {
            return;
        }
        let mut obj = pod.clone();
        obj["apiVersion"] = json!("v1");
        obj["kind"] = json!("Pod");
        obj["status"] = status;
        if let Err(err) = self.api.update_object_status(obj)
            && !err.is_not_found()
            && !err.is_conflict()
        {
            warn!(pod = %pod_key(pod), %err, "updating pod status failed");
        }
    }

    /// Removes a Pod for good (the kubelet's final delete, or the Pod GC's for a lost Node).
    fn force_delete(&self, pod: &Value, why: &str) {
        let opts = DeleteOptions {
            grace_period_seconds: Some(0),
            precondition_uid: Some(uid(pod).to_owned()),
            ..DeleteOptions::default()
        };
        match self
            .api
            .delete_object("v1", "Pod", Some(namespace(pod)), name(pod), &opts)
        {
            Ok(_) => info!(pod = %pod_key(pod), why, "pod deleted"),
            Err(err) if err.is_not_found() || err.is_conflict() => {}
            Err(err) => warn!(pod = %pod_key(pod), %err, "deleting pod failed"),
        }
    }

    fn pod_dir(&self, ns: &str, pod: &str) -> PathBuf {
        self.cfg.work_dir.join("pods").join(ns).join(pod)
    }

    /// An address for a new Pod on `node`: from the Node's `podCIDR` if it has one, else from
    /// `10.244.<node index>.0/24`.
    fn allocate_ip(&mut self, node: &Value) -> String {
        let node_name = name(node).to_owned();
        let next = self.next_ip.entry(node_name.clone()).or_insert(1);
        *next = if *next >= 254 { 2 } else { *next + 1 };
        let host = *next;
        if let Some(cidr) = node["spec"]["podCIDR"].as_str()
            && let Some((base, _)) = cidr.split_once('/')
            && let Some((prefix, _)) = base.rsplit_once('.')
        {
            return format!("{prefix}.{host}");
        }
        let count = self.node_index.len();
        let index = *self.node_index.entry(node_name).or_insert(count);
        format!("10.244.{}.{host}", index % 256)
    }

    /// Runs the Pods bound to Nodes: start, status, termination, eviction.
    pub(super) fn sync_pods(&mut self, snap: &Snapshot, next: &mut Option<Instant>) {
        let now = Instant::now();
        let nodes: HashMap<&str, &Value> = snap.nodes.iter().map(|n| (name(n), n)).collect();
        for node in &snap.nodes {
            if node_ready(node) {
                self.not_ready_since.remove(name(node));
            } else {
                self.not_ready_since
                    .entry(name(node).to_owned())
                    .or_insert(now);
            }
        }
        self.not_ready_since
            .retain(|n, _| nodes.contains_key(n.as_str()));
        let mut seen: HashSet<String> = HashSet::new();
        for pod in &snap.pods {
            let node_name = pod["spec"]["nodeName"].as_str().unwrap_or_default();
            if node_name.is_empty() {
                continue;
            }
            let pod_uid = uid(pod).to_owned();
            seen.insert(pod_uid.clone());
            let node = nodes.get(node_name).copied();
            if is_deleting(pod) {
                let grace = pod["metadata"]["deletionGracePeriodSeconds"]
                    .as_i64()
                    .or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64())
                    .unwrap_or(30)
                    .max(0);
                let grace = self
                    .cfg
                    .delay(std::time::Duration::from_secs(grace.unsigned_abs()));
                let node_alive = node.is_some_and(node_ready);
                match self.pods.get(&pod_uid) {
                    Some(rt) if node_alive && !rt.stopped() => rt.stop(Stop::Graceful(grace)),
                    Some(rt) => {
                        rt.stop(Stop::Kill);
                        if rt.stopped() || !node_alive {
                            self.remove_runtime(&pod_uid);
                            self.force_delete(pod, "terminated");
                        }
                    }
                    // A Pod on a dead Node has nobody to confirm its termination: the API
                    // server's grace period ends it.
                    None if node_alive => self.force_delete(pod, "terminated"),
                    None => {}
                }
                continue;
            }
            let Some(node) = node else {
                self.remove_runtime(&pod_uid);
                self.force_delete(pod, "node is gone");
                continue;
            };
            if !node_ready(node) {
                // The node died: its processes with it.
                self.remove_runtime(&pod_uid);
                self.node_not_ready(pod, node_name, now, next);
                continue;
            }
            if matches!(
                pod["status"]["phase"].as_str(),
                Some("Succeeded" | "Failed")
            ) && !self.pods.contains_key(&pod_uid)
            {
                continue;
            }
            if !self.pods.contains_key(&pod_uid) {
                let pod_ip = self.allocate_ip(node);
                let host_ip = node["status"]["addresses"]
                    .as_array()
                    .and_then(|a| a.iter().find(|a| a["type"] == "InternalIP").or(a.first()))
                    .and_then(|a| a["address"].as_str())
                    .unwrap_or("127.0.0.1")
                    .to_owned();
                let start_time = pod["status"]["startTime"]
                    .as_str()
                    .map_or_else(now_rfc3339, str::to_owned);
                self.pods.insert(
                    pod_uid.clone(),
                    PodRuntime {
                        namespace: namespace(pod).to_owned(),
                        name: name(pod).to_owned(),
                        start_at: now + self.cfg.delay(self.cfg.timings.pod_start),
                        start_time,
                        started_at: None,
                        pod_ip,
                        host_ip,
                        agents: BTreeMap::new(),
                    },
                );
            }
            let ready_to_start = self
                .pods
                .get(&pod_uid)
                .is_some_and(|rt| rt.started_at.is_none() && now >= rt.start_at);
            if ready_to_start {
                self.start_containers(pod, &pod_uid);
            }
            let Some(rt) = self.pods.get(&pod_uid) else {
                continue;
            };
            if rt.started_at.is_none() {
                *next = Some(next.map_or(rt.start_at, |n| n.min(rt.start_at)));
            }
            let status = pod_status(pod, rt);
            self.write_pod_status(pod, status);
        }
        let gone: Vec<String> = self
            .pods
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for k in gone {
            self.remove_runtime(&k);
        }
    }

    /// Kills a Pod's processes and forgets it (its directory too).
    fn remove_runtime(&mut self, pod_uid: &str) {
        if let Some(rt) = self.pods.remove(pod_uid) {
            rt.stop(Stop::Kill);
            let dir = self.pod_dir(&rt.namespace, &rt.name);
            // Dropping the supervisors lets their tasks finish killing on their own.
            drop(rt);
            if let Err(err) = std::fs::remove_dir_all(&dir)
                && err.kind() != std::io::ErrorKind::NotFound
            {
                debug!(dir = %dir.display(), %err, "removing pod directory failed");
            }
        }
    }

    fn start_containers(&mut self, pod: &Value, pod_uid: &str) {
        let ns = namespace(pod).to_owned();
        let pod_name = name(pod).to_owned();
        let pod_dir = self.pod_dir(&ns, &pod_name);
        let log_path = self.cfg.pod_log_dir.join(format!("{pod_name}.log"));
        let backoff = self.backoff();
        let Some(rt) = self.pods.get_mut(pod_uid) else {
            return;
        };
        rt.started_at = Some(now_rfc3339());
        for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
            if !is_agent_image(c["image"].as_str().unwrap_or_default()) {
                continue;
            }
            let cname = c["name"].as_str().unwrap_or_default().to_owned();
            let ctx = LaunchContext {
                cluster: self.cluster.clone(),
                api: self.api.clone(),
                pod: pod.clone(),
                container: c.clone(),
                pod_ip: rt.pod_ip.clone(),
                host_ip: rt.host_ip.clone(),
                agent_bin: self.cfg.agent_bin.clone(),
                pod_dir: pod_dir.clone(),
                log_path: log_path.clone(),
                network_file: self.cfg.network_file.clone(),
            };
            let sup = Supervisor::start(ctx, self.processes.clone(), self.notify.clone(), backoff);
            rt.agents.insert(cname, sup);
        }
        info!(pod = %format!("{ns}/{pod_name}"), agents = rt.agents.len(), "pod started");
    }

    /// A Pod on a NotReady Node: not ready any more, and evicted once the Node has been NotReady
    /// for the eviction timeout unless it tolerates that (DaemonSet Pods do).
    fn node_not_ready(
        &self,
        pod: &Value,
        node_name: &str,
        now: Instant,
        next: &mut Option<Instant>,
    ) {
        let since = self.not_ready_since.get(node_name).copied().unwrap_or(now);
        let not_ready_taint = json!({"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"});
        let unreachable_taint =
            json!({"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"});
        let forever = |taint: &Value| {
            pod["spec"]["tolerations"].as_array().is_some_and(|ts| {
                ts.iter()
                    .any(|t| tolerates(t, taint) && t["tolerationSeconds"].is_null())
            })
        };
        let tolerated = forever(&not_ready_taint) && forever(&unreachable_taint);
        let deadline = since + self.cfg.delay(self.cfg.timings.eviction_timeout);
        if !tolerated {
            if now >= deadline {
                self.force_delete(pod, "evicted from a NotReady node");
                return;
            }
            *next = Some(next.map_or(deadline, |n| n.min(deadline)));
        }
        let mut status = pod["status"].clone();
        if let Some(conds) = status["conditions"].as_array_mut() {
            for c in conds.iter_mut() {
                if (c["type"] == "Ready" || c["type"] == "ContainersReady")
                    && c["status"] != "False"
                {
                    c["status"] = json!("False");
                    c["lastTransitionTime"] = json!(now_rfc3339());
                }
            }
        }
        if let Some(cs) = status["containerStatuses"].as_array_mut() {
            for c in cs.iter_mut() {
                c["ready"] = json!(false);
            }
        }
        self.write_pod_status(pod, status);
    }
}

/// The status of a Pod the runtime runs.
fn pod_status(pod: &Value, rt: &PodRuntime) -> Value {
    let now = now_rfc3339();
    let started = rt.started_at.as_deref();
    let mut statuses = Vec::new();
    let mut all_ready = true;
    let mut terminated: Vec<i32> = Vec::new();
    let mut never_started = false;
    let containers = pod["spec"]["containers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    for c in containers {
        let cname = c["name"].as_str().unwrap_or_default();
        let image = c["image"].as_str().unwrap_or_default();
        let waiting = |reason: &str, message: &str| {
            let mut w = json!({"reason": reason});
            if !message.is_empty() {
                w["message"] = json!(message);
            }
            json!({"waiting": w})
        };
        let (state, ready, restarts, last) = match (started, rt.agents.get(cname)) {
            (None, _) => (waiting("ContainerCreating", ""), false, 0, json!({})),
            (Some(at), None) => (json!({"running": {"startedAt": at}}), true, 0, json!({})),
            (Some(_), Some(sup)) => {
                let s = sup.snapshot();
                let last = s.last_terminated.unwrap_or_else(|| json!({}));
                match s.phase {
                    Phase::Waiting { reason, message } => {
                        // Never started (missing Secret, ServiceAccount…): the Pod is Pending.
                        never_started |= s.restart_count == 0 && last.get("terminated").is_none();
                        (waiting(&reason, &message), false, s.restart_count, last)
                    }
                    Phase::Running { started_at } => (
                        json!({"running": {"startedAt": started_at}}),
                        true,
                        s.restart_count,
                        last,
                    ),
                    Phase::Terminated {
                        exit_code,
                        reason,
                        started_at,
                        finished_at,
                    } => {
                        terminated.push(exit_code);
                        (
                            json!({"terminated": {
                                "exitCode": exit_code,
                                "reason": reason,
                                "startedAt": started_at,
                                "finishedAt": finished_at,
                            }}),
                            false,
                            s.restart_count,
                            last,
                        )
                    }
                }
            }
        };
        all_ready &= ready;
        statuses.push(json!({
            "name": cname,
            "image": image,
            "imageID": format!("sim://{image}"),
            "containerID": format!("sim://{}/{cname}", uid(pod)),
            "ready": ready,
            "started": state["running"].is_object(),
            "restartCount": restarts,
            "state": state,
            "lastState": last,
        }));
    }
    let phase = if started.is_none() || never_started {
        "Pending"
    } else if !containers.is_empty() && terminated.len() == containers.len() {
        if terminated.iter().all(|c| *c == 0) {
            "Succeeded"
        } else {
            "Failed"
        }
    } else {
        "Running"
    };
    let ready = started.is_some() && all_ready && phase == "Running";
    let mut conditions = vec![
        cond("PodReadyToStartContainers", started.is_some(), "", ""),
        cond("Initialized", true, "", ""),
        cond(
            "Ready",
            ready,
            if ready { "" } else { "ContainersNotReady" },
            "",
        ),
        cond(
            "ContainersReady",
            ready,
            if ready { "" } else { "ContainersNotReady" },
            "",
        ),
        cond("PodScheduled", true, "", ""),
    ];
    for c in &mut conditions {
        c["lastProbeTime"] = Value::Null;
    }
    let mut status = json!({
        "phase": phase,
        "conditions": conditions_with_times(&pod["status"]["conditions"], conditions, &now),
        "hostIP": rt.host_ip,
        "hostIPs": [{"ip": rt.host_ip}],
        "startTime": rt.start_time,
        "containerStatuses": statuses,
        "qosClass": "BestEffort",
    });
    if started.is_some() {
        status["podIP"] = json!(rt.pod_ip);
        status["podIPs"] = json!([{"ip": rt.pod_ip}]);
    }
    status
}
