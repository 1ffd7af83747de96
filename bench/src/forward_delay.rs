//! The delay Souk reports adding to what it forwards, read from its `/metrics`.
//!
//! The bots' latencies start at the publisher bot's send stamp, so they also hold the
//! publisher's own stack and the hops to and from the server. The server's histogram
//! (`souk_media_forward_delay_seconds`) starts at the kernel's receipt of a datagram at
//! the media socket and ends when the copies it caused are sent: the part that is the
//! SFU's alone.

/// The histogram's cumulative buckets: (upper bound in seconds, datagrams at or below).
#[derive(Debug, Clone, PartialEq)]
pub struct ServerDelay(Vec<(f64, u64)>);

const METRIC: &str = "souk_media_forward_delay_seconds_bucket{le=\"";

impl ServerDelay {
    pub async fn scrape(http: &reqwest::Client, url: &str) -> anyhow::Result<ServerDelay> {
        let page = http
            .get(format!("{url}/metrics"))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        ServerDelay::parse(&page)
    }

    fn parse(page: &str) -> anyhow::Result<ServerDelay> {
        let buckets: Vec<(f64, u64)> = page
            .lines()
            .filter_map(|line| {
                let (bound, count) = line.strip_prefix(METRIC)?.split_once("\"} ")?;
                let bound = if bound == "+Inf" {
                    f64::INFINITY
                } else {
                    bound.parse().ok()?
                };
                Some((bound, count.trim().parse().ok()?))
            })
            .collect();
        anyhow::ensure!(
            buckets.last().is_some_and(|(bound, _)| bound.is_infinite()),
            "no {METRIC}...}} histogram in the server's /metrics"
        );
        Ok(ServerDelay(buckets))
    }

    /// The datagrams counted since `earlier`.
    pub fn since(&self, earlier: &ServerDelay) -> ServerDelay {
        ServerDelay(
            self.0
                .iter()
                .zip(&earlier.0)
                .map(|(&(bound, now), &(_, before))| (bound, now.saturating_sub(before)))
                .collect(),
        )
    }

    /// The largest finite bound, in milliseconds: quantiles there mean "at least".
    pub fn last_bound_ms(&self) -> f64 {
        let finite = self.0.iter().rev().find(|(bound, _)| bound.is_finite());
        finite.map_or(0.0, |(bound, _)| bound * 1000.0)
    }

    /// The `q` quantile in milliseconds, interpolated linearly inside its bucket (as
    /// Prometheus's `histogram_quantile` does); in the open last bucket, its lower
    /// bound. `None` with no samples.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total = self.0.last()?.1;
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let (mut lower, mut below) = (0.0, 0u64);
        for &(upper, count) in &self.0 {
            // Empty buckets hold no quantile, even the 0th.
            if count > below && count as f64 >= rank {
                if upper.is_infinite() {
                    return Some(lower * 1000.0);
                }
                let share = (rank - below as f64) / (count - below) as f64;
                return Some((lower + (upper - lower) * share) * 1000.0);
            }
            (lower, below) = (upper, count);
        }
        Some(lower * 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "\
# TYPE souk_media_forward_delay_seconds histogram
souk_media_forward_delay_seconds_bucket{le=\"0.001\"} 50
souk_media_forward_delay_seconds_bucket{le=\"0.002\"} 90
souk_media_forward_delay_seconds_bucket{le=\"0.005\"} 100
souk_media_forward_delay_seconds_bucket{le=\"+Inf\"} 100
souk_media_forward_delay_seconds_sum 0.1
souk_media_forward_delay_seconds_count 100
";

    #[test]
    fn quantiles_interpolate_inside_their_bucket() {
        let delay = ServerDelay::parse(PAGE).unwrap();
        assert_eq!(delay.quantile_ms(0.5), Some(1.0));
        // The 70th datagram of 100 is half way through the 1–2 ms bucket's 40.
        assert!((delay.quantile_ms(0.7).unwrap() - 1.5).abs() < 1e-9);
        assert!((delay.quantile_ms(0.95).unwrap() - 3.5).abs() < 1e-9);
    }

    #[test]
    fn a_window_is_the_difference_of_two_scrapes() {
        let before = ServerDelay::parse(PAGE).unwrap();
        let after = ServerDelay::parse(&PAGE.replace("} 100\n", "} 200\n")).unwrap();
        // The 100 new datagrams all fell in the 2–5 ms bucket.
        let window = after.since(&before);
        assert_eq!(window.quantile_ms(0.0), Some(2.0));
        assert_eq!(window.quantile_ms(1.0), Some(5.0));
        assert_eq!(
            ServerDelay::parse(PAGE)
                .unwrap()
                .since(&before)
                .quantile_ms(0.5),
            None
        );
    }

    #[test]
    fn slower_than_every_bound_reads_as_the_last_bound() {
        let page = PAGE.replace("le=\"+Inf\"} 100", "le=\"+Inf\"} 200");
        let delay = ServerDelay::parse(&page).unwrap();
        assert_eq!(delay.quantile_ms(0.99), Some(5.0));
        assert_eq!(delay.last_bound_ms(), 5.0);
    }

    #[test]
    fn a_page_without_the_histogram_is_an_error() {
        assert!(ServerDelay::parse("souk_rooms 1\n").is_err());
    }
}
