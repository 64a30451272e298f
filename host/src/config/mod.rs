//! Configuration read from files: the `transform` block of a MetricsExporter
//! (and, later, the host config file).

pub mod transform_file;
