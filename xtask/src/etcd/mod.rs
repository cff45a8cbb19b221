//! Real etcd for the simulators: a gateway client ([`client`]) and the
//! member processes behind simulated control planes ([`member`]).

pub mod client;
pub mod member;

pub use client::EtcdClient;
pub use member::EtcdCluster;
