//! Cumulative histograms, Prometheus style, and their text form for `/metrics`.
//!
//! Shared by the media engine (forwarding delay) and the AI agent (reply and voice stage
//! delays), which know nothing of each other.

use std::fmt::Write;

/// Cumulative buckets: each counts the observations at or below its bound.
#[derive(Debug, Clone)]
pub struct Histogram {
    pub bounds: &'static [f64],
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, value: f64) {
        self.observe_many(value, 1);
    }

    /// Adds another histogram's observations (same bounds): one view of several.
    pub fn merge(&mut self, other: &Histogram) {
        debug_assert_eq!(self.bounds, other.bounds);
        for (count, more) in self.counts.iter_mut().zip(&other.counts) {
            *count += more;
        }
        self.sum += other.sum;
        self.count += other.count;
    }

    /// Counts `value` `times` times: one delay shared by a batch of events.
    pub fn observe_many(&mut self, value: f64, times: u64) {
        for (bound, count) in self.bounds.iter().zip(&mut self.counts) {
            if value <= *bound {
                *count += times;
            }
        }
        self.sum += value * times as f64;
        self.count += times;
    }
}

/// Appends a histogram in the text format, one series per label set (`""` for none).
pub fn write_histogram(body: &mut String, name: &str, help: &str, series: &[(&str, &Histogram)]) {
    let _ = writeln!(body, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (labels, h) in series {
        let sep = if labels.is_empty() { "" } else { "," };
        let only = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        for (bound, count) in h.bounds.iter().zip(&h.counts) {
            let _ = writeln!(body, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(
            body,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}\n{name}_sum{only} {}\n{name}_count{only} {}",
            h.count, h.sum, h.count
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_the_text_form_ends_with_inf_sum_and_count() {
        let mut h = Histogram::new(&[0.1, 1.0]);
        h.observe(0.05);
        h.observe_many(0.5, 2);
        h.observe(3.0);
        assert_eq!(h.counts, vec![1, 3]);
        assert_eq!(h.count, 4);
        let mut body = String::new();
        write_histogram(&mut body, "d_seconds", "A delay.", &[("side=\"a\"", &h)]);
        assert_eq!(
            body,
            "# HELP d_seconds A delay.\n# TYPE d_seconds histogram\n\
             d_seconds_bucket{side=\"a\",le=\"0.1\"} 1\n\
             d_seconds_bucket{side=\"a\",le=\"1\"} 3\n\
             d_seconds_bucket{side=\"a\",le=\"+Inf\"} 4\n\
             d_seconds_sum{side=\"a\"} 4.05\n\
             d_seconds_count{side=\"a\"} 4\n"
        );
    }

    #[test]
    fn a_merge_adds_counts_sums_and_buckets() {
        let mut a = Histogram::new(&[0.1, 1.0]);
        a.observe(0.05);
        let mut b = Histogram::new(&[0.1, 1.0]);
        b.observe_many(0.5, 2);
        a.merge(&b);
        assert_eq!((a.counts, a.count, a.sum), (vec![1, 3], 3, 1.05));
    }
}
