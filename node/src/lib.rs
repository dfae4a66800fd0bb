//! placeholder

pub mod audit;
