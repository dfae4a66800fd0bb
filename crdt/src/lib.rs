//! placeholder

pub mod mastered;
