//! Who is sending: the OTLP resource and instrumentation scope the host puts
//! around every guest's metrics.

/// `service.name` of the host.
pub const SERVICE_NAME: &str = "adx-mon-metrics-exporter";
/// `service.version` of the host: the crate version.
pub const SERVICE_VERSION: &str = env!("CARGO_PKG_VERSION");
/// The instrumentation scope every metric is reported under.
pub const SCOPE_NAME: &str = "adx-mon.azure.com/metrics-exporter";
pub const SCOPE_VERSION: &str = "v1";

/// The resource (string attributes only) and scope of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    pub attributes: Vec<(String, String)>,
    pub scope_name: String,
    pub scope_version: String,
}

impl Resource {
    /// The host's own identity, with no further attributes.
    pub fn default_host() -> Resource {
        Resource {
            attributes: vec![
                ("service.name".into(), SERVICE_NAME.into()),
                ("service.version".into(), SERVICE_VERSION.into()),
            ],
            scope_name: SCOPE_NAME.into(),
            scope_version: SCOPE_VERSION.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_host_names_the_exporter() {
        let r = Resource::default_host();
        assert_eq!(
            r.attributes,
            vec![
                (
                    "service.name".to_string(),
                    "adx-mon-metrics-exporter".to_string()
                ),
                (
                    "service.version".to_string(),
                    env!("CARGO_PKG_VERSION").to_string()
                ),
            ]
        );
        assert_eq!(r.scope_name, "adx-mon.azure.com/metrics-exporter");
        assert_eq!(r.scope_version, "v1");
    }
}
