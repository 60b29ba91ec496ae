//! ClusterProfile operations of `ClusterService`.

use fledge_core::proto::v1;
use fledge_core::spec::{ClusterProfile, ClusterProfileSpec, WorkloadCluster};
use fledge_core::validate::validate_profile;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};

use super::auth::Tenant;
use super::cluster::ensure_namespace;
use super::status::{ApiError, kube_call};
use super::{Ctx, Page, timestamp};

const KIND: &str = "ClusterProfile";

fn api(ctx: &Ctx, tenant: &Tenant) -> Api<ClusterProfile> {
    Api::namespaced(ctx.client.clone(), &tenant.0)
}

/// Converts a stored profile into its API form.
pub fn to_proto(profile: &ClusterProfile) -> v1::Profile {
    v1::Profile {
        name: profile.name_any(),
        tenant: profile.namespace().unwrap_or_default(),
        generation: profile.metadata.generation.unwrap_or_default(),
        spec: Some((&profile.spec).into()),
        created_at: profile.metadata.creation_timestamp.as_ref().map(timestamp),
    }
}

fn build(
    tenant: &Tenant,
    name: &str,
    spec: Option<v1::ProfileSpec>,
) -> Result<ClusterProfile, ApiError> {
    let spec: ClusterProfileSpec = spec
        .map(Into::into)
        .ok_or_else(|| ApiError::field(KIND, name, "spec", "is required"))?;
    let mut profile = ClusterProfile::new(name, spec);
    profile.metadata.namespace = Some(tenant.0.clone());
    validate_profile(&profile).map_err(|errors| ApiError::Invalid {
        kind: KIND,
        name: name.to_string(),
        errors,
    })?;
    Ok(profile)
}

async fn get_stored(ctx: &Ctx, tenant: &Tenant, name: &str) -> Result<ClusterProfile, ApiError> {
    // An empty name would address the whole collection.
    if name.is_empty() {
        return Err(ApiError::field(KIND, name, "name", "is required"));
    }
    kube_call(
        ctx.timeout,
        "get",
        KIND,
        name,
        api(ctx, tenant).get_opt(name),
    )
    .await?
    .ok_or_else(|| ApiError::NotFound {
        kind: KIND,
        name: name.to_string(),
    })
}

/// CreateProfile: idempotent like CreateCluster.
pub async fn create(
    ctx: &Ctx,
    tenant: &Tenant,
    request: v1::CreateProfileRequest,
) -> Result<v1::Profile, ApiError> {
    let name = request.name;
    let profile = build(tenant, &name, request.spec)?;
    let api = api(ctx, tenant);
    let same_or_conflict = |existing: ClusterProfile| {
        if existing.spec == profile.spec {
            Ok(to_proto(&existing))
        } else {
            Err(ApiError::AlreadyExists {
                kind: KIND,
                name: name.clone(),
            })
        }
    };
    if let Some(existing) = kube_call(ctx.timeout, "get", KIND, &name, api.get_opt(&name)).await? {
        return same_or_conflict(existing);
    }
    ensure_namespace(ctx, tenant).await?;
    tracing::info!(tenant = %tenant.0, profile = %name, "Creating ClusterProfile");
    match kube_call(
        ctx.timeout,
        "create",
        KIND,
        &name,
        api.create(&PostParams::default(), &profile),
    )
    .await
    {
        Ok(created) => Ok(to_proto(&created)),
        Err(err) if err.is_conflict() => {
            same_or_conflict(kube_call(ctx.timeout, "get", KIND, &name, api.get(&name)).await?)
        }
        Err(err) => Err(err),
    }
}

/// GetProfile.
pub async fn get(ctx: &Ctx, tenant: &Tenant, name: &str) -> Result<v1::Profile, ApiError> {
    Ok(to_proto(&get_stored(ctx, tenant, name).await?))
}

/// ListProfiles: one page.
pub async fn list(
    ctx: &Ctx,
    tenant: &Tenant,
    page: Page,
) -> Result<v1::ListProfilesResponse, ApiError> {
    let (items, next_page_token) = page.fetch(ctx, api(ctx, tenant), KIND, &tenant.0).await?;
    Ok(v1::ListProfilesResponse {
        profiles: items.iter().map(to_proto).collect(),
        next_page_token,
    })
}

/// UpdateProfile: replaces the spec at the expected generation (0 skips the check).
pub async fn update(
    ctx: &Ctx,
    tenant: &Tenant,
    request: v1::UpdateProfileRequest,
) -> Result<v1::Profile, ApiError> {
    let name = request.name;
    let wanted = build(tenant, &name, request.spec)?;
    let stored = get_stored(ctx, tenant, &name).await?;
    let generation = stored.metadata.generation.unwrap_or_default();
    super::check_generation(KIND, &name, request.expected_generation, generation)?;
    if stored.spec == wanted.spec {
        return Ok(to_proto(&stored));
    }
    let mut updated = stored;
    updated.spec = wanted.spec;
    tracing::info!(tenant = %tenant.0, profile = %name, "Updating ClusterProfile spec");
    let replaced = kube_call(
        ctx.timeout,
        "replace",
        KIND,
        &name,
        api(ctx, tenant).replace(&name, &PostParams::default(), &updated),
    )
    .await?;
    Ok(to_proto(&replaced))
}

/// DeleteProfile: refused while a cluster of the tenant refers to the profile.
pub async fn delete(
    ctx: &Ctx,
    tenant: &Tenant,
    name: &str,
) -> Result<v1::DeleteProfileResponse, ApiError> {
    get_stored(ctx, tenant, name).await?;
    let clusters: Api<WorkloadCluster> = Api::namespaced(ctx.client.clone(), &tenant.0);
    let all = kube_call(
        ctx.timeout,
        "list",
        "WorkloadCluster",
        &tenant.0,
        clusters.list(&ListParams::default()),
    )
    .await?;
    let users: Vec<String> = all
        .items
        .iter()
        .filter(|c| c.spec.profile.as_deref() == Some(name))
        .map(ResourceExt::name_any)
        .collect();
    if !users.is_empty() {
        return Err(ApiError::FailedPrecondition {
            kind: KIND,
            name: name.to_string(),
            reason: format!("in use by WorkloadCluster {}", users.join(", ")),
        });
    }
    tracing::info!(tenant = %tenant.0, profile = %name, "Deleting ClusterProfile");
    kube_call(
        ctx.timeout,
        "delete",
        KIND,
        name,
        api(ctx, tenant).delete(name, &DeleteParams::default()),
    )
    .await?;
    Ok(v1::DeleteProfileResponse {})
}
