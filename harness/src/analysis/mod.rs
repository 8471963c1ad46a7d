//! Results → what every consumer shows: cells grouped by backend and workload shape,
//! repeats reduced to median and range, histograms decoded and merged, and the words and
//! numbers the charts, the reports and the compare summary print them with.
//!
//! Dependencies point one way: `results` ← `analysis` ← {`plot`, `report`, `compare`'s
//! summary}. The consumers share this module instead of reaching into each other.

mod group;
mod histogram;
mod metrics;
mod text;

pub(crate) use group::{is_ok, label, status_reason, status_word, Group, Index, Shape};
pub(crate) use histogram::{decode_histogram, merged_histogram, Which};
pub(crate) use metrics::*;
pub(crate) use text::*;
pub mod stats;
