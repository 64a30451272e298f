//! What should run: MetricsExporters and the SummaryRules their selectors
//! match. [`folder`] reads manifests from a folder (and notices changes);
//! [`plan`] turns what was read into export plans, checking each exporter.

pub mod criteria;
pub mod folder;
pub mod kubernetes;
pub mod plan;
pub mod rule_index;

pub use criteria::ClusterLabels;
pub use folder::{Catalog, ManifestFolder};
pub use plan::{ExportPlan, PlanError, Planned, RuleTarget, plan};
