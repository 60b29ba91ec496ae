//! The node runtime of one workload cluster (work in progress).
