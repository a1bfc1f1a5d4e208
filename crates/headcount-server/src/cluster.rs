//! Sharing presence and broadcast between nodes: the contract and the vocabulary live in
//! `headcount-cluster`, so a backend depends on them and not on the server. Re-exported here
//! under the paths the server has always used.

pub use headcount_cluster::*;
