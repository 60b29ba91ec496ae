//! The simulated world behind `fledge-sim`: a management cluster with Cluster API v1.14 and the
//! vSphere provider "installed", simulated controllers that behave like the upstream ones,
//! simulated VMs that become Nodes of new simulated workload clusters, and a node runtime.
//!
//! - [`world`]: [`world::World`], the clusters and the VM runtime (kubelet registration).
//! - [`providers`]: CRDs, provider Deployments and inventory; providers gate controllers.
//! - [`controllers`]: the per-cluster controller host and one module per kind.
//! - [`vsphere`]: the simulated vCenter.
//! - [`kubelet`]: the node runtime of workload clusters (Pods, the real agent).
//! - [`faults`]: the fault knobs and the admin endpoint.
//! - [`node_lifecycle`]: Node heartbeats and the node-lifecycle controller's `Unknown`.
//! - [`clock`]: the speed factor applied to every simulated delay.

pub mod clock;
pub mod controllers;
pub mod faults;
pub mod kubelet;
pub mod node_lifecycle;
pub mod providers;
pub mod vsphere;
pub mod world;
