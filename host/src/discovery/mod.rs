//! What should run: MetricsExporters and the SummaryRules their selectors
//! match. [`folder`] reads manifests from a folder (and notices changes);
//! [`plan`] turns what was read into export plans, checking each exporter.

pub mod folder;
pub mod plan;

pub use folder::{Catalog, ManifestFolder};
pub use plan::{ExportPlan, PlanError, RuleTarget, plan};
