//! Working together on an incident (issue 23), at the partner site: what
//! the master room shared, what this site asked for and the answers, the
//! camera alarms it got; and what its operators do about them (accept,
//! ask, acknowledge), sent up to the agent.
//!
//! - [`board`]: the site's view, fed by the agent's notices.
//! - [`routes`]: the console's API over it.
//!
//! Only an agent (`master`, `master-<name>`) may send notices; a cascade
//! parent relay's are ignored (cascading them is not built).

pub mod board;
pub mod routes;

pub use board::IncidentBoard;
