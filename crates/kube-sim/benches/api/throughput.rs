//! Create/get/update throughput on one cluster through kube-rs over HTTPS, serial and with
//! concurrent clients, plus the same creates in-process (no HTTP, TLS or client) to show what
//! the transport costs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, PostParams};
use kube_sim::sim::{ClusterOptions, Sim};
use tokio::task::JoinSet;

use crate::report::{Figure, Report, ratio, thousands};
use crate::{NAMESPACE, Scale, client_from_kubeconfig, ms, quantile};

/// etcd 3.2 on 3 × 8 vCPU (etcd benchmark docs, "Performance" op guide): serial writes and
/// reads with one client over one connection, 256-byte values, and the same with 1,000 clients
/// over 100 connections. The bar a real cluster's storage sets before kube-apiserver adds its
/// own work.
const ETCD_SERIAL_WRITES: f64 = 583.0;
const ETCD_SERIAL_READS: f64 = 1_353.0;
const ETCD_CONCURRENT_WRITES: f64 = 44_341.0;
const ETCD_CONCURRENT_READS: f64 = 141_578.0;

/// The payload that makes each ConfigMap about 1 KiB of data.
fn payload(seed: usize) -> String {
    // Varying content so nothing can be shared between objects.
    let line = format!("{seed:08}-0123456789abcdefghijklmnopqrstuvwxyz-");
    line.repeat(1024 / line.len() + 1)[..1024].to_owned()
}

/// A ConfigMap of about 1 KiB.
pub fn config_map(name: &str, seed: usize) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([("app".to_owned(), "bench".to_owned())])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("payload".to_owned(), payload(seed))])),
        ..ConfigMap::default()
    }
}

/// Creates namespace `name` (idempotent enough for a fresh cluster).
pub async fn create_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    Ok(())
}

/// Rate and latency percentiles of a serial run.
struct Serial {
    per_second: f64,
    latencies: Vec<Duration>,
}

impl Serial {
    fn new(elapsed: Duration, mut latencies: Vec<Duration>) -> Serial {
        latencies.sort();
        Serial {
            per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
            latencies,
        }
    }

    fn display(&self) -> String {
        format!(
            "{} objects/s (p50 {}, p99 {})",
            thousands(self.per_second),
            ms(quantile(&self.latencies, 0.5)),
            ms(quantile(&self.latencies, 0.99))
        )
    }
}

/// Runs `n` requests one after the other, timing each.
async fn serial<F, Fut>(n: usize, mut request: F) -> anyhow::Result<Serial>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut latencies = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        request(i).await?;
        latencies.push(t.elapsed());
    }
    Ok(Serial::new(start.elapsed(), latencies))
}

/// Runs `n` requests split across `clients` kube-rs clients (each with its own connection
/// pool), all at once; returns requests per second.
async fn concurrent<F, Fut>(clients: &[Client], n: usize, request: F) -> anyhow::Result<f64>
where
    F: Fn(Api<ConfigMap>, usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let per_client = n / clients.len();
    let mut tasks = JoinSet::new();
    let start = Instant::now();
    for (c, client) in clients.iter().enumerate() {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
        let request = request.clone();
        tasks.spawn(async move {
            for i in 0..per_client {
                request(api.clone(), c * per_client + i).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    Ok((per_client * clients.len()) as f64 / start.elapsed().as_secs_f64())
}

/// Measures and records the throughput figures.
pub async fn run(report: &mut Report, scale: &Scale) -> anyhow::Result<()> {
    let sim = Sim::in_memory();
    let cluster = sim.add_cluster(ClusterOptions::new("throughput")).await?;
    let kubeconfig = cluster.admin_kubeconfig().to_yaml()?;
    let client = client_from_kubeconfig(&kubeconfig).await?;
    create_namespace(&client, NAMESPACE).await?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
    let pp = PostParams::default();

    // Warm-up: connection, TLS session, allocator and the server's per-type structures.
    for i in 0..200 {
        let name = format!("warmup-{i}");
        api.create(&pp, &config_map(&name, i)).await?;
        api.get(&name).await?;
    }

    let n = scale.serial;
    let mut created = Vec::with_capacity(n);
    let create = {
        let start = Instant::now();
        let mut latencies = Vec::with_capacity(n);
        for i in 0..n {
            let t = Instant::now();
            created.push(
                api.create(&pp, &config_map(&format!("serial-{i}"), i))
                    .await?,
            );
            latencies.push(t.elapsed());
        }
        Serial::new(start.elapsed(), latencies)
    };
    report.add(Figure {
        id: "serial-create",
        figure: format!(
            "Serial create, 1 client (ConfigMap ~1 KiB, n={})",
            thousands(n as f64)
        ),
        value: create.per_second,
        unit: "objects/s",
        display: create.display(),
        baseline: format!(
            "etcd alone: {} serial writes/s → {}",
            thousands(ETCD_SERIAL_WRITES),
            ratio(create.per_second, ETCD_SERIAL_WRITES)
        ),
    })?;

    let get = serial(n, |i| {
        let api = api.clone();
        async move {
            api.get(&format!("serial-{i}")).await?;
            Ok(())
        }
    })
    .await?;
    report.add(Figure {
        id: "serial-get",
        figure: format!("Serial get, 1 client (n={})", thousands(n as f64)),
        value: get.per_second,
        unit: "objects/s",
        display: get.display(),
        baseline: format!(
            "etcd alone: {} linearizable reads/s → {}",
            thousands(ETCD_SERIAL_READS),
            ratio(get.per_second, ETCD_SERIAL_READS)
        ),
    })?;

    let mut created = created.into_iter();
    let update = serial(n, |i| {
        let api = api.clone();
        let object = created.next();
        async move {
            let mut object = object.context("created object")?;
            object.data = Some(BTreeMap::from([("payload".to_owned(), payload(i + 1))]));
            // PUT with the object's resourceVersion: optimistic concurrency, like a controller.
            api.replace(&format!("serial-{i}"), &PostParams::default(), &object)
                .await?;
            Ok(())
        }
    })
    .await?;
    report.add(Figure {
        id: "serial-update",
        figure: format!(
            "Serial update (PUT with resourceVersion), 1 client (n={})",
            thousands(n as f64)
        ),
        value: update.per_second,
        unit: "objects/s",
        display: update.display(),
        baseline: format!(
            "etcd alone: {} serial writes/s → {}",
            thousands(ETCD_SERIAL_WRITES),
            ratio(update.per_second, ETCD_SERIAL_WRITES)
        ),
    })?;

    let clients = scale.clients;
    let mut pool = Vec::with_capacity(clients);
    for _ in 0..clients {
        let client = client_from_kubeconfig(&kubeconfig).await?;
        // Connect before timing.
        Api::<ConfigMap>::namespaced(client.clone(), NAMESPACE)
            .get("warmup-0")
            .await?;
        pool.push(client);
    }
    let n = scale.concurrent;
    let creates = concurrent(&pool, n, |api, i| async move {
        api.create(&PostParams::default(), &config_map(&format!("conc-{i}"), i))
            .await?;
        Ok(())
    })
    .await?;
    report.add(Figure {
        id: "concurrent-create",
        figure: format!(
            "Concurrent create, {clients} clients (n={})",
            thousands(n as f64)
        ),
        value: creates,
        unit: "objects/s",
        display: format!("{} objects/s", thousands(creates)),
        baseline: format!(
            "etcd alone, 1,000 clients on 3 × 8 vCPU: {} writes/s → {}",
            thousands(ETCD_CONCURRENT_WRITES),
            ratio(creates, ETCD_CONCURRENT_WRITES)
        ),
    })?;
    let gets = concurrent(&pool, n, |api, i| async move {
        api.get(&format!("conc-{i}")).await?;
        Ok(())
    })
    .await?;
    report.add(Figure {
        id: "concurrent-get",
        figure: format!(
            "Concurrent get, {clients} clients (n={})",
            thousands(n as f64)
        ),
        value: gets,
        unit: "objects/s",
        display: format!("{} objects/s", thousands(gets)),
        baseline: format!(
            "etcd alone, 1,000 clients on 3 × 8 vCPU: {} linearizable reads/s → {}",
            thousands(ETCD_CONCURRENT_READS),
            ratio(gets, ETCD_CONCURRENT_READS)
        ),
    })?;

    // The same serial creates without HTTP: what the server's semantics cost by themselves.
    let server = cluster.api();
    let n = scale.serial;
    let in_process = serial(n, |i| {
        let server = server.clone();
        async move {
            let mut object = serde_json::to_value(config_map(&format!("inproc-{i}"), i))?;
            object["apiVersion"] = "v1".into();
            object["kind"] = "ConfigMap".into();
            object["metadata"]["namespace"] = NAMESPACE.into();
            server.create_object(object)?;
            Ok(())
        }
    })
    .await?;
    report.add(Figure {
        id: "inprocess-create",
        figure: format!(
            "Serial create in-process, no HTTP/TLS/client (n={})",
            thousands(n as f64)
        ),
        value: in_process.per_second,
        unit: "objects/s",
        display: in_process.display(),
        baseline: format!(
            "same run over HTTPS: {} objects/s → HTTP, TLS and kube-rs take {:.0}% of a create",
            thousands(create.per_second),
            100.0 * (1.0 - create.per_second / in_process.per_second)
        ),
    })?;
    sim.shutdown().await;
    Ok(())
}
