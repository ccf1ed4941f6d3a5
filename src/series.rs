//! Coins' recorded prices over a window, as `chart` draws them. Pure: no I/O.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

/// One coin's prices over the window: (when it took effect, price), oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub coin_id: String,
    pub points: Vec<(DateTime<Utc>, Decimal)>,
}

/// Rescales each series so that its first price is 100: coins of any price become comparable.
pub fn normalise(series: &[Series]) -> Vec<Series> {
    series
        .iter()
        .map(|s| {
            let base = s.points.first().map(|p| p.1).filter(|b| !b.is_zero());
            Series {
                coin_id: s.coin_id.clone(),
                points: s
                    .points
                    .iter()
                    .filter_map(|(at, price)| {
                        let index = (*price * Decimal::ONE_HUNDRED).checked_div(base?)?;
                        Some((*at, index))
                    })
                    .collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::str::FromStr;

    fn at(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 9, day, 0, 0, 0).unwrap()
    }

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn normalising_starts_every_coin_at_100_exactly() {
        let series = [Series {
            coin_id: "btc".into(),
            points: vec![(at(1), d("58083")), (at(2), d("61006.4"))],
        }];
        let normalised = normalise(&series);
        assert_eq!(normalised[0].points[0].1, d("100"));
        assert_eq!(normalised[0].points[1].1.round_dp(6), d("105.033142"));
    }
}
