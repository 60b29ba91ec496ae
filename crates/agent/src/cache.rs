//! The desired-state cache: Secret `fledge-system/fledge-spec` in the workload cluster holds the
//! newest spec and profile the manager sent, with their generation, so that the agent works
//! from its first second without the manager and no restart loses the desired state.
//!
//! # Format
//! Keys (values are the Secret's bytes): `cluster` (`<namespace>/<name>` of the
//! WorkloadCluster it belongs to), `generation` (decimal), `spec.json` (the
//! `WorkloadClusterSpec` as JSON), `profile.json` (the `ClusterProfileSpec` as JSON, or `null`),
//! `deleting` (`true`/`false`).
//!
//! # Guarantees
//! - A cache recorded for another cluster is never acted on ([`CacheError::OtherCluster`]).
//! - A corrupted cache is an error the caller reports; nothing is deleted because of it.

use std::collections::BTreeMap;

use fledge_core::spec::{ClusterProfileSpec, WorkloadClusterSpec};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

use crate::config::Identity;

/// Name of the cache Secret (in [`fledge_core::names::FLEDGE_NAMESPACE`]).
pub const CACHE_SECRET: &str = "fledge-spec";

/// The desired state as last received from the manager.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedSpec {
    /// Spec generation (`names::spec_generation` of the cluster and profile generations).
    pub generation: i64,
    /// The cluster's spec.
    pub spec: WorkloadClusterSpec,
    /// The profile's spec, if the cluster has a profile.
    pub profile: Option<ClusterProfileSpec>,
    /// The cluster is being deleted: CAPI objects are not touched.
    pub deleting: bool,
}

/// Why the cache could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A key is missing.
    #[error("cache Secret {CACHE_SECRET}: key {0:?} is missing")]
    MissingKey(&'static str),
    /// A key does not hold what it should.
    #[error("cache Secret {CACHE_SECRET}: key {key:?}: {reason}")]
    BadValue {
        /// The key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The cache belongs to another cluster.
    #[error("cache Secret {CACHE_SECRET} belongs to cluster {found:?}, not {ours:?}; ignored")]
    OtherCluster {
        /// Cluster recorded in the cache.
        found: String,
        /// This agent's cluster.
        ours: String,
    },
    /// Reading or writing the Secret failed.
    #[error("cache Secret {CACHE_SECRET}: {0}")]
    Api(#[from] kube::Error),
    /// Encoding failed (the spec types rule this out).
    #[error("cache Secret {CACHE_SECRET}: encoding: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The Secret's data for `cached`.
///
/// # Errors
/// [`CacheError::Encode`] if a spec does not serialize.
pub fn encode(
    identity: &Identity,
    cached: &CachedSpec,
) -> Result<BTreeMap<String, ByteString>, CacheError> {
    let bytes = |s: String| ByteString(s.into_bytes());
    Ok(BTreeMap::from([
        ("cluster".to_owned(), bytes(identity.key())),
        (
            "generation".to_owned(),
            bytes(cached.generation.to_string()),
        ),
        (
            "spec.json".to_owned(),
            ByteString(serde_json::to_vec(&cached.spec)?),
        ),
        (
            "profile.json".to_owned(),
            ByteString(serde_json::to_vec(&cached.profile)?),
        ),
        ("deleting".to_owned(), bytes(cached.deleting.to_string())),
    ]))
}

/// Reads the Secret's data back.
///
/// # Errors
/// See [`CacheError`]: a missing key, a value that does not parse, another cluster's cache.
pub fn decode(
    identity: &Identity,
    data: &BTreeMap<String, ByteString>,
) -> Result<CachedSpec, CacheError> {
    let get = |key: &'static str| {
        data.get(key)
            .map(|b| b.0.as_slice())
            .ok_or(CacheError::MissingKey(key))
    };
    let text = |key: &'static str| -> Result<String, CacheError> {
        String::from_utf8(get(key)?.to_vec()).map_err(|e| CacheError::BadValue {
            key,
            reason: e.to_string(),
        })
    };
    let found = text("cluster")?;
    if found != identity.key() {
        return Err(CacheError::OtherCluster {
            found,
            ours: identity.key(),
        });
    }
    let generation =
        text("generation")?
            .trim()
            .parse::<i64>()
            .map_err(|e| CacheError::BadValue {
                key: "generation",
                reason: e.to_string(),
            })?;
    let spec = serde_json::from_slice(get("spec.json")?).map_err(|e| CacheError::BadValue {
        key: "spec.json",
        reason: e.to_string(),
    })?;
    let profile =
        serde_json::from_slice(get("profile.json")?).map_err(|e| CacheError::BadValue {
            key: "profile.json",
            reason: e.to_string(),
        })?;
    let deleting = match text("deleting")?.trim() {
        "true" => true,
        "false" => false,
        other => {
            return Err(CacheError::BadValue {
                key: "deleting",
                reason: format!("{other:?} is neither true nor false"),
            });
        }
    };
    Ok(CachedSpec {
        generation,
        spec,
        profile,
        deleting,
    })
}

fn api(client: &Client) -> Api<Secret> {
    Api::namespaced(client.clone(), fledge_core::names::FLEDGE_NAMESPACE)
}

/// Loads the cache; `Ok(None)` when there is none yet.
///
/// # Errors
/// See [`CacheError`].
pub async fn load(client: &Client, identity: &Identity) -> Result<Option<CachedSpec>, CacheError> {
    let Some(secret) = api(client).get_opt(CACHE_SECRET).await? else {
        return Ok(None);
    };
    let data = secret.data.unwrap_or_default();
    decode(identity, &data).map(Some)
}

/// Writes the cache (server-side apply, field manager `fledge-agent`).
///
/// # Errors
/// See [`CacheError`].
pub async fn store(
    client: &Client,
    identity: &Identity,
    cached: &CachedSpec,
) -> Result<(), CacheError> {
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(CACHE_SECRET.to_owned()),
            namespace: Some(fledge_core::names::FLEDGE_NAMESPACE.to_owned()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/name".to_owned(),
                "fledge-agent".to_owned(),
            )])),
            ..Default::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(encode(identity, cached)?),
        ..Default::default()
    };
    let mut value = serde_json::to_value(&secret)?;
    value["apiVersion"] = "v1".into();
    value["kind"] = "Secret".into();
    api(client)
        .patch(
            CACHE_SECRET,
            &PatchParams::apply(fledge_core::names::AGENT_FIELD_MANAGER).force(),
            &Patch::Apply(value),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata;

    fn identity() -> Identity {
        Identity {
            namespace: "team-a".into(),
            name: "edge-1".into(),
        }
    }

    #[test]
    fn round_trips_with_and_without_a_profile() {
        let (spec, profile) = testdata::edge1();
        for profile in [Some(profile), None] {
            let cached = CachedSpec {
                generation: (3 << 32) | 2,
                spec: spec.clone(),
                profile,
                deleting: false,
            };
            let data = encode(&identity(), &cached).unwrap();
            assert_eq!(decode(&identity(), &data).unwrap(), cached);
        }
    }

    #[test]
    fn corruption_is_an_error_naming_the_key() {
        let (spec, _) = testdata::edge1();
        let cached = CachedSpec {
            generation: 7,
            spec,
            profile: None,
            deleting: true,
        };
        let good = encode(&identity(), &cached).unwrap();
        let mut bad = good.clone();
        bad.insert("spec.json".into(), ByteString(b"{not json".to_vec()));
        let err = decode(&identity(), &bad).unwrap_err();
        assert!(err.to_string().contains("spec.json"), "{err}");
        let mut bad = good.clone();
        bad.insert("generation".into(), ByteString(b"seven".to_vec()));
        assert!(
            decode(&identity(), &bad)
                .unwrap_err()
                .to_string()
                .contains("generation")
        );
        let mut bad = good.clone();
        bad.remove("deleting");
        assert!(matches!(
            decode(&identity(), &bad),
            Err(CacheError::MissingKey("deleting"))
        ));
        let mut bad = good.clone();
        bad.insert("deleting".into(), ByteString(b"maybe".to_vec()));
        assert!(decode(&identity(), &bad).is_err());
    }

    #[test]
    fn another_clusters_cache_is_refused() {
        let (spec, _) = testdata::edge1();
        let cached = CachedSpec {
            generation: 1,
            spec,
            profile: None,
            deleting: false,
        };
        let other = Identity {
            namespace: "team-b".into(),
            name: "edge-1".into(),
        };
        let data = encode(&other, &cached).unwrap();
        assert!(matches!(
            decode(&identity(), &data),
            Err(CacheError::OtherCluster { .. })
        ));
    }
}
