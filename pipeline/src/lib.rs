//! Canopy's input and feature pipeline, one code for the driver and the executors: a file or
//! object-store URL read in units (`scan`), each unit's features with DataFusion's derived
//! columns (`features`), exact mergeable counts for the encoding and the bin edges (`counts`),
//! and the seeded split (`split`).

pub mod counts;
pub mod error;
pub mod features;
pub mod load;
pub mod partitions;
pub mod scan;
pub mod spec;
pub mod split;

pub use error::{DataError, Result, with_causes};
