//! Kill points: failpoints (crate `fail`) at every step boundary of the move and of the
//! provisioning pipeline, on which the manager SIGKILLs itself, which is exactly what a crash
//! at that line is.
//!
//! Compiled only with the `failpoints` feature (tests); without it [`hit`] is an empty inline
//! function. The actions come from the `FAILPOINTS` environment variable (the `fail` crate's
//! syntax, read once on the first hit). A point configured `return` kills the manager for any
//! cluster; `return(<name>)` kills it only when the cluster named `<name>` passes there, so one
//! manager serving several clusters can crash each of them at a different point.

/// Every kill point, in the order a cluster meets them. The end-to-end tests read this list
/// from this file (a binary's constants cannot be imported), hence no other use here.
#[allow(dead_code)]
pub const KILL_POINTS: &[&str] = &[
    "phase-after-accepted",
    "phase-after-bootstrapping",
    "phase-after-waitingforcontrolplane",
    "phase-after-installingproviders",
    "phase-after-installingagent",
    "pivot-after-kubeconfig-copy",
    "pivot-after-plan",
    "pivot-after-pause",
    "pivot-mid-create",
    "pivot-after-create",
    "pivot-after-status",
    "pivot-before-delete",
    "pivot-mid-delete",
    "pivot-after-delete",
    "pivot-after-unpause",
    "phase-after-pivoting",
];

/// Kill points of the deletion (reverse pivot); the reverse move meets the `pivot-*` points too
/// (right after the reverse move, the move's own `pivot-after-unpause` is the boundary).
#[allow(dead_code)]
pub const DELETE_KILL_POINTS: &[&str] = &["delete-after-cluster-delete", "delete-after-cleanup"];

/// Marks a step boundary: `kill_point!("pivot-after-pause", cluster_name)`.
macro_rules! kill_point {
    ($name:expr, $cluster:expr) => {
        $crate::pivot::kill::hit($name, $cluster)
    };
}
pub(crate) use kill_point;

/// Evaluates the failpoint `name` for `cluster`; SIGKILLs the process when it is configured to
/// return (for every cluster, or for this one).
#[cfg(feature = "failpoints")]
pub fn hit(name: &'static str, cluster: &str) {
    setup();
    fail::fail_point!(name, |arg: Option<String>| {
        if arg.as_deref().is_none_or(|a| a.is_empty() || a == cluster) {
            die(name, cluster);
        }
    });
}

/// Without the `failpoints` feature a kill point compiles to nothing.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &'static str, _cluster: &str) {}

#[cfg(feature = "failpoints")]
fn setup() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The scenario's teardown would clear the configuration; it lives as long as the
        // process.
        std::mem::forget(fail::FailScenario::setup());
    });
}

#[cfg(feature = "failpoints")]
fn die(name: &str, cluster: &str) {
    use std::io::Write as _;
    // One plain line that tests parse, written before the signal (stderr is unbuffered).
    let _ = writeln!(
        std::io::stderr(),
        "KILL POINT {name} cluster={cluster}: SIGKILL"
    );
    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    std::process::abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_point_names_are_unique_and_kebab_case() {
        let mut all: Vec<_> = KILL_POINTS.iter().chain(DELETE_KILL_POINTS).collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
        assert!(
            all.iter()
                .all(|p| p.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
        );
    }
}
