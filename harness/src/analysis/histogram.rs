//! The latency histograms a results file stores: decoded, and merged over repeats.

use anyhow::Context;
use base64::Engine;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;

use super::Group;

/// Decodes one histogram as stored in the results: base64 of HdrHistogram V2 + deflate.
pub(crate) fn decode_histogram(b64: &str) -> anyhow::Result<Histogram<u64>> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .context("histogram is not base64")?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| anyhow::anyhow!("{e:?}"))
        .context("histogram is not HdrHistogram V2 (deflate) data")
}

/// Which of a cell's two histograms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Which {
    /// From the intended send time under open loop; the only one under closed loop.
    Corrected,
    /// Open loop only: from the actual send.
    Uncorrected,
}

/// The repeats' histograms added together; `None` when no repeat has one. A histogram
/// that does not decode is an error naming the cell.
pub(crate) fn merged_histogram(
    group: &Group<'_>,
    which: Which,
) -> anyhow::Result<Option<Histogram<u64>>> {
    let mut merged: Option<Histogram<u64>> = None;
    for cell in &group.ok {
        let Some(client) = &cell.client else { continue };
        let encoded = match which {
            Which::Corrected => client.histogram.as_deref(),
            Which::Uncorrected => client.histogram_uncorrected.as_deref(),
        };
        let Some(encoded) = encoded else { continue };
        let h = decode_histogram(encoded).with_context(|| {
            format!(
                "{} {} repeat {}: reading its latency histogram",
                cell.backend, cell.group, cell.repeat
            )
        })?;
        match &mut merged {
            None => {
                let mut m = Histogram::<u64>::new(3).context("creating a histogram")?;
                m.add(&h).context("merging latency histograms")?;
                merged = Some(m);
            }
            Some(m) => m.add(&h).context("merging latency histograms")?,
        }
    }
    Ok(merged.filter(|h| !h.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_histograms_are_errors_not_panics() {
        assert!(decode_histogram("not base64 !!").is_err());
        assert!(decode_histogram("aGVsbG8=").is_err());
    }
}
