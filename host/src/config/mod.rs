//! Configuration read from files: the `transform` block of a MetricsExporter
//! (and, later, the host config file).

pub mod host_config;
pub mod kubernetes;
pub mod tenancy;
pub mod transform_file;

pub use host_config::HostConfig;
