//! The manager's gRPC API: `ClusterService` over the WorkloadCluster and ClusterProfile
//! objects of the management cluster.
//!
//! # Layout
//! - `auth`: tokens file and the interceptor that turns a bearer token into a [`auth::Tenant`].
//! - `cluster`, `profile`: the operations, one function per RPC.
//! - `status`: every error-to-status mapping.
//!
//! Handlers here only take the tenant, call an operation and convert the result; prost
//! types never leave this module.

pub mod auth;
pub mod cluster;
pub mod profile;
pub mod status;

use std::pin::Pin;
use std::time::Duration;

use fledge_core::proto::v1;
use fledge_core::proto::v1::cluster_service_server::ClusterService;
use futures::Stream;
use tonic::{Request, Response, Status};

use self::auth::tenant;
use self::status::ApiError;

/// Default page size of the list calls.
pub const DEFAULT_PAGE_SIZE: i32 = 100;
/// Largest page size of the list calls.
pub const MAX_PAGE_SIZE: i32 = 1000;

/// What every operation needs: the management cluster and the per-call deadline.
#[derive(Clone)]
pub struct Ctx {
    /// Client of the management cluster.
    pub client: kube::Client,
    /// Deadline of each call to the management cluster.
    pub timeout: Duration,
    /// Becomes `true` when the server starts shutting down: long-lived calls (watches) end
    /// then, so that draining does not wait for them.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

/// One page request of a list call.
#[derive(Debug, Clone)]
pub struct Page {
    /// Items per page (already clamped).
    pub size: u32,
    /// The API server's continue token, if not the first page.
    pub token: Option<String>,
}

/// The optimistic-concurrency check of the Update RPCs: `expected` is the generation the
/// caller read (0 skips the check).
///
/// # Errors
/// [`ApiError::StaleGeneration`] (ABORTED) when the stored generation differs.
pub fn check_generation(
    kind: &'static str,
    name: &str,
    expected: i64,
    actual: i64,
) -> Result<(), ApiError> {
    if expected != 0 && expected != actual {
        return Err(ApiError::StaleGeneration {
            kind,
            name: name.to_owned(),
            expected,
            actual,
        });
    }
    Ok(())
}

impl Page {
    /// Reads one page of `api` through the API server's limit/continue, under the context's
    /// deadline; returns the items and the token of the next page (empty on the last one).
    pub async fn fetch<K>(
        &self,
        ctx: &Ctx,
        api: kube::Api<K>,
        kind: &'static str,
        tenant: &str,
    ) -> Result<(Vec<K>, String), status::ApiError>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let mut params = kube::api::ListParams::default().limit(self.size);
        if let Some(token) = &self.token {
            params = params.continue_token(token);
        }
        let list = status::kube_call(ctx.timeout, "list", kind, tenant, api.list(&params)).await?;
        Ok((list.items, list.metadata.continue_.unwrap_or_default()))
    }
}

impl Page {
    /// Clamps the page size to 1..=1000 (0 means the default of 100).
    ///
    /// # Errors
    /// INVALID_ARGUMENT for a negative page size.
    pub fn new(size: i32, token: String) -> Result<Self, ApiError> {
        if size < 0 {
            return Err(ApiError::field(
                "List",
                "",
                "page_size",
                "must not be negative",
            ));
        }
        let size = if size == 0 {
            DEFAULT_PAGE_SIZE
        } else {
            size.min(MAX_PAGE_SIZE)
        };
        Ok(Self {
            size: u32::try_from(size).unwrap_or(100),
            token: (!token.is_empty()).then_some(token),
        })
    }
}

/// Converts a Kubernetes timestamp into a protobuf one.
pub fn timestamp(
    time: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.0.as_second(),
        nanos: time.0.subsec_nanosecond(),
    }
}

/// The `ClusterService` implementation.
#[derive(Clone)]
pub struct ClusterApi {
    ctx: Ctx,
}

impl ClusterApi {
    /// A service over the management cluster `client`, with `timeout` per Kubernetes call;
    /// watches end when `stopping` turns `true`.
    pub fn new(
        client: kube::Client,
        timeout: Duration,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            ctx: Ctx {
                client,
                timeout,
                stopping,
            },
        }
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn reply<T>(result: Result<T, ApiError>) -> Reply<T> {
    result.map(Response::new).map_err(Status::from)
}

#[tonic::async_trait]
impl ClusterService for ClusterApi {
    async fn create_cluster(
        &self,
        request: Request<v1::CreateClusterRequest>,
    ) -> Reply<v1::Cluster> {
        let tenant = tenant(&request)?;
        reply(cluster::create(&self.ctx, &tenant, request.into_inner()).await)
    }

    async fn get_cluster(&self, request: Request<v1::GetClusterRequest>) -> Reply<v1::Cluster> {
        let tenant = tenant(&request)?;
        reply(cluster::get(&self.ctx, &tenant, &request.into_inner().name).await)
    }

    async fn list_clusters(
        &self,
        request: Request<v1::ListClustersRequest>,
    ) -> Reply<v1::ListClustersResponse> {
        let tenant = tenant(&request)?;
        let request = request.into_inner();
        let page = Page::new(request.page_size, request.page_token).map_err(Status::from)?;
        reply(cluster::list(&self.ctx, &tenant, page).await)
    }

    async fn update_cluster(
        &self,
        request: Request<v1::UpdateClusterRequest>,
    ) -> Reply<v1::Cluster> {
        let tenant = tenant(&request)?;
        reply(cluster::update(&self.ctx, &tenant, request.into_inner()).await)
    }

    async fn delete_cluster(
        &self,
        request: Request<v1::DeleteClusterRequest>,
    ) -> Reply<v1::Cluster> {
        let tenant = tenant(&request)?;
        reply(cluster::delete(&self.ctx, &tenant, &request.into_inner().name).await)
    }

    type WatchClusterStream =
        Pin<Box<dyn Stream<Item = Result<v1::ClusterEvent, Status>> + Send + 'static>>;

    async fn watch_cluster(
        &self,
        request: Request<v1::WatchClusterRequest>,
    ) -> Reply<Self::WatchClusterStream> {
        let tenant = tenant(&request)?;
        let rx = cluster::watch(&self.ctx, &tenant, request.into_inner())
            .await
            .map_err(Status::from)?;
        let stream: Self::WatchClusterStream =
            Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx));
        Ok(Response::new(stream))
    }

    async fn get_kubeconfig(
        &self,
        request: Request<v1::GetKubeconfigRequest>,
    ) -> Reply<v1::Kubeconfig> {
        let tenant = tenant(&request)?;
        reply(cluster::kubeconfig(&self.ctx, &tenant, &request.into_inner().name).await)
    }

    async fn create_profile(
        &self,
        request: Request<v1::CreateProfileRequest>,
    ) -> Reply<v1::Profile> {
        let tenant = tenant(&request)?;
        reply(profile::create(&self.ctx, &tenant, request.into_inner()).await)
    }

    async fn get_profile(&self, request: Request<v1::GetProfileRequest>) -> Reply<v1::Profile> {
        let tenant = tenant(&request)?;
        reply(profile::get(&self.ctx, &tenant, &request.into_inner().name).await)
    }

    async fn list_profiles(
        &self,
        request: Request<v1::ListProfilesRequest>,
    ) -> Reply<v1::ListProfilesResponse> {
        let tenant = tenant(&request)?;
        let request = request.into_inner();
        let page = Page::new(request.page_size, request.page_token).map_err(Status::from)?;
        reply(profile::list(&self.ctx, &tenant, page).await)
    }

    async fn update_profile(
        &self,
        request: Request<v1::UpdateProfileRequest>,
    ) -> Reply<v1::Profile> {
        let tenant = tenant(&request)?;
        reply(profile::update(&self.ctx, &tenant, request.into_inner()).await)
    }

    async fn delete_profile(
        &self,
        request: Request<v1::DeleteProfileRequest>,
    ) -> Reply<v1::DeleteProfileResponse> {
        let tenant = tenant(&request)?;
        reply(profile::delete(&self.ctx, &tenant, &request.into_inner().name).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_defaults_and_clamps() {
        for (asked, want) in [(0, 100), (1, 1), (1000, 1000), (5000, 1000)] {
            assert_eq!(
                Page::new(asked, String::new()).expect("valid").size,
                want,
                "{asked}"
            );
        }
        assert!(Page::new(-1, String::new()).is_err());
    }
}
