//! A harness for end-to-end tests and the demo: real `metasrv` and `datanode`
//! processes on loopback, with temporary data directories, stopped when dropped.
//!
//! Processes print one `... ready ...` line on stdout once listening; the harness waits
//! for it (ports are chosen by the OS: `:0`). Their logs go to files in the cluster's
//! temporary directory, and the tail of each is printed if a test panics.
//!
//! The binaries come from the workspace's target directory; `scripts/test` builds them
//! (`cargo build --workspace --bins`) before the tests run.

pub mod bench;
pub mod cluster;
pub mod datanode_kill;
pub mod etcd;
mod grpc;
mod http;
pub mod leader_kill;
mod nodes;
pub mod pki;
mod process;
pub mod proxy;
pub mod quorum_loss;
mod setup;
pub mod sim;
mod wait;
pub mod writers;

pub use grpc::{grpc_channel, heartbeat_on, heartbeat_once, CALL};
pub use http::Http;
pub use nodes::{DatanodeProc, MetasrvProc, FAST};
pub use process::{bin_path, send_signal, tail, Proc, Stderr};
pub use setup::{granted_ms_ago, metactl, standalone, standalone_shared, standalone_shared_with};
pub use wait::{always_for, eventually};
