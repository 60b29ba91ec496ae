//! The simulated world behind `fledge-sim`: workload clusters' node runtime and (to come) the
//! Cluster API and vSphere controllers.
//!
//! Note for the world helper: this minimal file was created by the kubelet helper; extend it with
//! the other modules (`world`, `controllers`, `clock`, ...).

pub mod kubelet;
