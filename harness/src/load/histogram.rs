//! HDR latency histograms: recorded per client thread in nanoseconds, merged after the run,
//! summarised at fixed percentiles and serialized (V2 deflate, base64) so results files can
//! be merged later without losing precision.

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest value a histogram tracks: 10 minutes in nanoseconds. Larger values saturate.
const HIGHEST_NS: u64 = 600 * 1_000_000_000;
/// Significant decimal digits kept (0.1% relative precision).
const SIGFIG: u8 = 3;

/// A histogram of nanosecond values.
#[derive(Debug, Clone)]
pub struct NsHistogram(Histogram<u64>);

impl Default for NsHistogram {
    fn default() -> Self {
        NsHistogram::new()
    }
}

impl NsHistogram {
    /// An empty histogram covering 1 ns to 10 minutes at 3 significant digits.
    pub fn new() -> NsHistogram {
        // The bounds are constants known to be valid for hdrhistogram.
        match Histogram::new_with_bounds(1, HIGHEST_NS, SIGFIG) {
            Ok(h) => NsHistogram(h),
            Err(_) => unreachable!("constant histogram bounds are valid"),
        }
    }

    /// Records one value; values past 10 minutes are clamped, zero counts as 1 ns.
    #[inline]
    pub fn record(&mut self, ns: u64) {
        self.0.saturating_record(ns.clamp(1, HIGHEST_NS));
    }

    /// Adds every value of `other`.
    pub fn add(&mut self, other: &NsHistogram) {
        // Same bounds on both sides, so addition cannot fail.
        let _ = self.0.add(&other.0);
    }

    /// Adds every value of a decoded histogram (one of another process's reports).
    pub fn add_hdr(&mut self, other: &Histogram<u64>) -> anyhow::Result<()> {
        self.0
            .add(other)
            .map_err(|e| anyhow::anyhow!("adding histograms: {e:?}"))
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The value at `q` (0..=1), 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.0.is_empty() {
            0
        } else {
            self.0.value_at_quantile(q)
        }
    }

    /// The underlying hdrhistogram.
    pub fn inner(&self) -> &Histogram<u64> {
        &self.0
    }

    /// Summary statistics plus the serialized histogram.
    pub fn summary(&self) -> LatencySummary {
        let h = &self.0;
        let empty = h.is_empty();
        LatencySummary {
            count: h.len(),
            min_ns: if empty { 0 } else { h.min() },
            mean_ns: if empty { 0.0 } else { h.mean() },
            stdev_ns: if empty { 0.0 } else { h.stdev() },
            p50_ns: self.quantile(0.5),
            p90_ns: self.quantile(0.9),
            p99_ns: self.quantile(0.99),
            p99_9_ns: self.quantile(0.999),
            p99_99_ns: self.quantile(0.9999),
            max_ns: if empty { 0 } else { h.max() },
            hdr: SerializedHistogram::encode(self),
        }
    }
}

/// Percentiles of one latency histogram, all in nanoseconds, with the histogram itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Values recorded.
    pub count: u64,
    /// Smallest value.
    pub min_ns: u64,
    /// Arithmetic mean.
    pub mean_ns: f64,
    /// Standard deviation.
    pub stdev_ns: f64,
    /// Median.
    pub p50_ns: u64,
    /// 90th percentile.
    pub p90_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p99_9_ns: u64,
    /// 99.99th percentile.
    pub p99_99_ns: u64,
    /// Largest value.
    pub max_ns: u64,
    /// The full histogram, serialized so that results can be merged.
    pub hdr: SerializedHistogram,
}

/// An HDR histogram in the standard V2 deflate encoding (the one HdrHistogram's Java, C and
/// Rust implementations all read), base64-encoded. Decode with
/// [`SerializedHistogram::decode`] and merge with `Histogram::add`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerializedHistogram {
    /// Always `"hdr-v2-deflate-base64"`.
    pub encoding: String,
    /// Unit of the recorded values: always `"ns"`.
    pub unit: String,
    /// The base64 text.
    pub data: String,
}

/// The encoding tag written in every [`SerializedHistogram`].
pub const HDR_ENCODING: &str = "hdr-v2-deflate-base64";

impl SerializedHistogram {
    /// Serializes `h`.
    pub fn encode(h: &NsHistogram) -> SerializedHistogram {
        let mut bytes = Vec::new();
        // Serializing into a Vec only fails on an internal inconsistency; an empty string
        // then makes the histogram unreadable rather than the run fail.
        let data = match V2DeflateSerializer::new().serialize(&h.0, &mut bytes) {
            Ok(_) => base64::engine::general_purpose::STANDARD.encode(&bytes),
            Err(_) => String::new(),
        };
        SerializedHistogram {
            encoding: HDR_ENCODING.to_string(),
            unit: "ns".to_string(),
            data,
        }
    }

    /// Reads the histogram back.
    pub fn decode(&self) -> anyhow::Result<Histogram<u64>> {
        anyhow::ensure!(
            self.encoding == HDR_ENCODING,
            "unknown histogram encoding '{}' (expected {HDR_ENCODING})",
            self.encoding
        );
        let bytes = base64::engine::general_purpose::STANDARD.decode(&self.data)?;
        Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| anyhow::anyhow!("decoding histogram: {e:?}"))
    }
}

/// Formats nanoseconds for people: `850ns`, `42.1µs`, `3.20ms`, `1.50s`.
pub fn fmt_ns(ns: u64) -> String {
    let v = ns as f64;
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{:.1}µs", v / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2}ms", v / 1e6)
    } else {
        format!("{:.2}s", v / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_merges() {
        let mut a = NsHistogram::new();
        let mut b = NsHistogram::new();
        for v in 1..=1000u64 {
            a.record(v * 1000);
            b.record(v * 2000);
        }
        let sa = a.summary();
        let mut merged = sa.hdr.decode().unwrap();
        merged.add(b.summary().hdr.decode().unwrap()).unwrap();
        assert_eq!(merged.len(), 2000);
        assert!(
            sa.p50_ns >= 499_000 && sa.p50_ns <= 501_000,
            "{}",
            sa.p50_ns
        );
        assert_eq!(NsHistogram::new().summary().max_ns, 0);
        assert_eq!(fmt_ns(42_100), "42.1µs");
    }
}
