//! `fledge-manager cluster ...`: the ClusterService from the command line.

use std::path::Path;
use std::time::Duration;

use fledge_core::proto::v1;
use fledge_core::validate::{Document, load_and_validate};
use tonic::Code;

use super::client::{CliError, Client};
use super::output::{self, Format};
use super::wait::{self, Goal};
use super::{Exit, profile, read_input};

/// `cluster create -f FILE`: profiles of the file first (created or updated), then each
/// cluster; with `wait`, follows each cluster until Ready.
pub async fn create(
    client: &Client,
    file: &Path,
    wait_for: Option<Duration>,
) -> Result<Exit, CliError> {
    let text = read_input(file).map_err(|e| CliError::bad_input(format!("{e:#}")))?;
    let docs = load_and_validate(&text).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        CliError::bad_input(format!("{}: invalid\n{}", file.display(), lines.join("\n")))
    })?;
    let clusters: Vec<_> = docs
        .iter()
        .filter_map(|d| match d {
            Document::WorkloadCluster(c) => Some(c),
            Document::ClusterProfile(_) => None,
        })
        .collect();
    if clusters.is_empty() {
        return Err(CliError::bad_input(format!(
            "{}: no WorkloadCluster in the file (use `profile apply` for profiles alone)",
            file.display()
        )));
    }
    for doc in &docs {
        if let Document::ClusterProfile(p) = doc {
            profile::apply_one(client, p).await?;
        }
    }
    let mut created = Vec::new();
    for cluster in clusters {
        let name = cluster.metadata.name.clone().unwrap_or_default();
        let mut api = client.api.clone();
        let result = client
            .call(
                &format!("creating cluster {name:?}"),
                api.create_cluster(v1::CreateClusterRequest {
                    name: name.clone(),
                    spec: Some((&cluster.spec).into()),
                }),
            )
            .await?;
        if let Some(namespace) = &cluster.metadata.namespace
            && *namespace != result.tenant
        {
            eprintln!(
                "note: the file names namespace {namespace:?}; the cluster lives in your \
                 token's tenant {:?}",
                result.tenant
            );
        }
        println!("workloadcluster/{name} created");
        created.push(name);
    }
    if let Some(timeout) = wait_for {
        for name in &created {
            wait::wait(client, name, Goal::Ready, timeout).await?;
        }
    }
    Ok(Exit::Success)
}

/// Reads one cluster.
pub async fn get_one(client: &Client, name: &str) -> Result<v1::Cluster, CliError> {
    let mut api = client.api.clone();
    client
        .call(
            &format!("getting cluster {name:?}"),
            api.get_cluster(v1::GetClusterRequest {
                name: name.to_owned(),
            }),
        )
        .await
}

/// `cluster get NAME`.
pub async fn get(client: &Client, name: &str, format: Format) -> Result<Exit, CliError> {
    let cluster = get_one(client, name).await?;
    print_clusters(&[cluster], format, false);
    Ok(Exit::Success)
}

/// `cluster list`: every page.
pub async fn list(client: &Client, format: Format) -> Result<Exit, CliError> {
    let mut clusters = Vec::new();
    let mut page_token = String::new();
    loop {
        let mut api = client.api.clone();
        let page = client
            .call(
                "listing clusters",
                api.list_clusters(v1::ListClustersRequest {
                    page_size: 0,
                    page_token: page_token.clone(),
                }),
            )
            .await?;
        clusters.extend(page.clusters);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    if clusters.is_empty() && matches!(format, Format::Table | Format::Wide) {
        eprintln!("No clusters found.");
        return Ok(Exit::Success);
    }
    print_clusters(&clusters, format, true);
    Ok(Exit::Success)
}

fn print_clusters(clusters: &[v1::Cluster], format: Format, as_list: bool) {
    match format {
        Format::Json | Format::Yaml => {
            let objects: Vec<_> = clusters.iter().map(output::cluster_object).collect();
            let value = match (as_list, objects.as_slice()) {
                (false, [one]) => one.clone(),
                _ => output::list_object(objects),
            };
            output::print_object(&value, format);
        }
        Format::Table | Format::Wide => {
            let wide = format == Format::Wide;
            let now = chrono::Utc::now();
            let mut rows = vec![output::cluster_header(wide)];
            rows.extend(clusters.iter().map(|c| output::cluster_row(c, wide, now)));
            print!("{}", output::table(&rows));
        }
    }
}

/// `cluster watch NAME`: one line per change until the cluster is deleted.
pub async fn watch(client: &Client, name: &str, format: Format) -> Result<Exit, CliError> {
    let what = format!("watching cluster {name:?}");
    let mut api = client.api.clone();
    let mut stream = client
        .call(
            &what,
            api.watch_cluster(v1::WatchClusterRequest {
                name: name.to_owned(),
                since_revision: String::new(),
            }),
        )
        .await?;
    let wide = format == Format::Wide;
    if matches!(format, Format::Table | Format::Wide) {
        let mut header = output::cluster_header(wide);
        header.push("MESSAGE".into());
        print!(
            "{}",
            output::table_with_min(&[header], output::CLUSTER_WIDTHS)
        );
    }
    loop {
        let event = match stream.message().await {
            Ok(Some(event)) => event,
            Ok(None) => {
                return Err(CliError::new(
                    Exit::Connection,
                    format!("{what}: the manager ended the stream"),
                ));
            }
            Err(status) => return Err(client.status_error(&what, &status)),
        };
        if event.r#type == v1::cluster_event::Type::Deleted as i32 {
            println!("cluster {name} deleted");
            return Ok(Exit::Success);
        }
        let Some(cluster) = event.cluster else {
            continue;
        };
        match format {
            // One compact object per line, so the stream can be piped into `jq`.
            Format::Json => println!("{}", output::cluster_object(&cluster)),
            Format::Yaml => {
                println!("---");
                output::print_object(&output::cluster_object(&cluster), format);
            }
            Format::Table | Format::Wide => {
                let mut row = output::cluster_row(&cluster, wide, chrono::Utc::now());
                row.push(
                    cluster
                        .status
                        .as_ref()
                        .map(|s| s.message.clone())
                        .unwrap_or_default(),
                );
                print!("{}", output::table_with_min(&[row], output::CLUSTER_WIDTHS));
            }
        }
    }
}

/// Read-modify-write with the expected generation: reads the cluster, applies `change` to
/// its spec and updates it; a concurrent writer (ABORTED) gets one retry on a fresh read.
pub async fn update_spec(
    client: &Client,
    name: &str,
    change: impl Fn(&mut v1::ClusterSpec) -> Result<(), CliError>,
) -> Result<v1::Cluster, CliError> {
    // References, so that each attempt's future can own copies of them.
    let change = &change;
    retry_stale(
        move || async move {
            let cluster = get_one(client, name).await?;
            let mut spec = cluster.spec.clone().unwrap_or_default();
            change(&mut spec)?;
            let mut api = client.api.clone();
            let request = v1::UpdateClusterRequest {
                name: name.to_owned(),
                spec: Some(spec),
                expected_generation: cluster.generation,
            };
            match tokio::time::timeout(super::client::CALL_TIMEOUT, api.update_cluster(request))
                .await
            {
                Ok(Ok(response)) => Ok(Ok(response.into_inner())),
                Ok(Err(status)) if status.code() == Code::Aborted => Ok(Err(status)),
                Ok(Err(status)) => {
                    Err(client.status_error(&format!("updating cluster {name:?}"), &status))
                }
                Err(_) => Err(CliError::new(
                    Exit::Connection,
                    format!("updating cluster {name:?}: the manager did not answer"),
                )),
            }
        },
        |status| client.status_error(&format!("updating cluster {name:?}"), &status),
    )
    .await
}

/// Runs `attempt` (read, modify, update); when it reports a stale generation (the inner
/// `Err`), runs it once more, and turns a second stale generation into an error.
pub async fn retry_stale<T, F, Fut>(
    mut attempt: F,
    stale: impl Fn(tonic::Status) -> CliError,
) -> Result<T, CliError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Result<T, tonic::Status>, CliError>>,
{
    match attempt().await? {
        Ok(value) => Ok(value),
        Err(_) => match attempt().await? {
            Ok(value) => Ok(value),
            Err(status) => Err(stale(status)),
        },
    }
}

/// `cluster scale NAME --control-plane N | --pool P --replicas N`.
pub async fn scale(
    client: &Client,
    name: &str,
    control_plane: Option<i32>,
    pool: Option<&str>,
    replicas: Option<i32>,
) -> Result<Exit, CliError> {
    let cluster = update_spec(client, name, |spec| {
        if let Some(n) = control_plane {
            spec.control_plane.get_or_insert_default().replicas = n;
        }
        if let (Some(pool), Some(n)) = (pool, replicas) {
            let names: Vec<String> = spec.workers.iter().map(|w| w.name.clone()).collect();
            let worker = spec
                .workers
                .iter_mut()
                .find(|w| w.name == pool)
                .ok_or_else(|| {
                    CliError::bad_input(format!(
                        "cluster {name} has no pool {pool:?} (pools: {})",
                        names.join(", ")
                    ))
                })?;
            worker.replicas = Some(n);
        }
        Ok(())
    })
    .await?;
    println!(
        "workloadcluster/{name} scaled (generation {})",
        cluster.generation
    );
    Ok(Exit::Success)
}

/// `cluster upgrade NAME --kubernetes-version V | --template IMAGE [--pool P]`.
pub async fn upgrade(
    client: &Client,
    name: &str,
    kubernetes_version: Option<&str>,
    template: Option<&str>,
    pool: Option<&str>,
) -> Result<Exit, CliError> {
    let cluster = update_spec(client, name, |spec| {
        if let Some(version) = kubernetes_version {
            spec.kubernetes_version = version.to_owned();
        }
        if let Some(template) = template {
            match pool {
                Some(pool) => {
                    let names: Vec<String> = spec.workers.iter().map(|w| w.name.clone()).collect();
                    let worker = spec
                        .workers
                        .iter_mut()
                        .find(|w| w.name == pool)
                        .ok_or_else(|| {
                            CliError::bad_input(format!(
                                "cluster {name} has no pool {pool:?} (pools: {})",
                                names.join(", ")
                            ))
                        })?;
                    worker.template = template.to_owned();
                }
                None => spec.control_plane.get_or_insert_default().template = template.to_owned(),
            }
        }
        Ok(())
    })
    .await?;
    println!(
        "workloadcluster/{name} upgrading (generation {})",
        cluster.generation
    );
    Ok(Exit::Success)
}

/// `cluster rotate-certs NAME`: machines created before now get replaced.
pub async fn rotate_certs(client: &Client, name: &str) -> Result<Exit, CliError> {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let cluster = update_spec(client, name, |spec| {
        spec.certificates.get_or_insert_default().rotate_after = now.clone();
        Ok(())
    })
    .await?;
    println!(
        "workloadcluster/{name} rotating certificates of machines created before {now} \
         (generation {})",
        cluster.generation
    );
    Ok(Exit::Success)
}

/// `cluster delete NAME [--wait]`.
pub async fn delete(
    client: &Client,
    name: &str,
    wait_for: Option<Duration>,
) -> Result<Exit, CliError> {
    let mut api = client.api.clone();
    client
        .call(
            &format!("deleting cluster {name:?}"),
            api.delete_cluster(v1::DeleteClusterRequest {
                name: name.to_owned(),
            }),
        )
        .await?;
    println!("workloadcluster/{name} deleting");
    match wait_for {
        Some(timeout) => wait::wait(client, name, Goal::Gone, timeout).await,
        None => Ok(Exit::Success),
    }
}

/// `cluster kubeconfig NAME [--write FILE]`.
pub async fn kubeconfig(
    client: &Client,
    name: &str,
    write: Option<&Path>,
) -> Result<Exit, CliError> {
    let mut api = client.api.clone();
    let config = client
        .call(
            &format!("getting the kubeconfig of cluster {name:?}"),
            api.get_kubeconfig(v1::GetKubeconfigRequest {
                name: name.to_owned(),
            }),
        )
        .await?;
    match write {
        Some(path) => {
            super::config::write_private(path, &config.kubeconfig)?;
            eprintln!("Wrote the kubeconfig of {name} to {}", path.display());
        }
        None => print!("{}", config.kubeconfig),
    }
    Ok(Exit::Success)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn a_stale_generation_is_retried_once() {
        let calls = &AtomicUsize::new(0);
        let result = retry_stale(
            move || async move {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                if n == 0 {
                    Ok(Err(tonic::Status::aborted("stale")))
                } else {
                    Ok(Ok(n))
                }
            },
            |s| CliError::failure(s.message().to_owned()),
        )
        .await;
        assert_eq!(result.unwrap(), 1);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_second_stale_generation_fails() {
        let calls = &AtomicUsize::new(0);
        let result: Result<(), CliError> = retry_stale(
            move || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok(Err(tonic::Status::aborted("stale")))
            },
            |s| CliError::failure(s.message().to_owned()),
        )
        .await;
        let err = result.unwrap_err();
        assert_eq!(err.exit, Exit::Failure);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
