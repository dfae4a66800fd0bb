//! The simulator's clock unit, shared by the run and its report.

/// Virtual time in microseconds since the start of the run.
pub type Micros = u64;
