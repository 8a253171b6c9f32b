//! Test infrastructure shared by the end-to-end tests and the benchmark
//! scripts: a real registry fixture and a fault-injecting proxy.

pub mod faultproxy;
pub mod registry;
