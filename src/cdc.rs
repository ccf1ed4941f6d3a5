//! The change-data-capture rule. Pure: no I/O.
//!
//! A coin gets a `price_history` row when it is seen for the first time, or when its
//! price moved by at least the threshold away from the price of its **last recorded**
//! history row (not the last fetched price), so a slow drift of small steps is
//! recorded once it adds up. The arithmetic is exact `Decimal`: a move of exactly
//! the threshold is recorded.
//!
//! Only an observation at least as new as the one held is judged: the newest observation of a
//! coin in a currency wins, whatever order runs apply in, so the last recorded row is also the
//! newest in CoinGecko's time.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

const HUNDRED: Decimal = Decimal::ONE_HUNDRED;

/// Whether `new_price` deserves a history row, given the price of the coin's last
/// recorded history row (`None`: never recorded) and the threshold in percent.
pub fn is_recordable(
    new_price: Decimal,
    last_recorded: Option<Decimal>,
    threshold_pct: Decimal,
) -> bool {
    let Some(reference) = last_recorded else {
        return true;
    };
    if new_price == reference {
        return false;
    }
    let moved = (new_price - reference).abs();
    // |new − ref| ≥ pct/100 × |ref|, multiplied out so that nothing is divided.
    // Prices are non-negative, so `moved` cannot overflow; a threshold amount too
    // large for a Decimal is a move no price can reach.
    match (
        moved.checked_mul(HUNDRED),
        reference.abs().checked_mul(threshold_pct),
    ) {
        (Some(moved_pct), Some(needed)) => moved_pct >= needed,
        (None, Some(_)) => true,
        (_, None) => false,
    }
}

/// Whether an observation stamped `observed_at` is older than the latest one held of its coin in
/// its currency (`held_at`; `None`: none held). Such an observation (an overlapping run that
/// applies after a newer one, a stale cache) changes nothing and is not judged: applied, it would
/// move the latest state back and record history against a newer reference. An equal time is no
/// older: an identical re-run stays unchanged.
pub fn is_out_of_order(observed_at: DateTime<Utc>, held_at: Option<DateTime<Utc>>) -> bool {
    held_at.is_some_and(|held| observed_at < held)
}

/// A price the rule records, and the price of the series' row before it, which it moved from
/// (`None`: the series' first row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    pub previous: Option<Decimal>,
}

/// Which of the prices `offered` to a series the rule records, among the rows the series
/// already `held`s (history is append-only: those stay as they are). Both come in time order; each
/// offered price is judged against the last row before it, held or just recorded, the first
/// against `reference` (the last row before them all; `None`: never recorded, so the first is).
/// One offered at the instant of a held row is not recorded: the series has that instant. With
/// nothing held, what a run after run of the live ingest would have recorded of the same prices.
pub fn recordable_series<T: Ord>(
    offered: &[(T, Decimal)],
    held: &[(T, Decimal)],
    reference: Option<Decimal>,
    threshold_pct: Decimal,
) -> Vec<Option<Recorded>> {
    let mut last = reference;
    let mut held = held.iter().peekable();
    offered
        .iter()
        .map(|(at, price)| {
            let mut taken = false;
            while let Some((held_at, held_price)) = held.next_if(|(held_at, _)| held_at <= at) {
                last = Some(*held_price);
                taken |= held_at == at;
            }
            if taken || !is_recordable(*price, last, threshold_pct) {
                return None;
            }
            let previous = last.replace(*price);
            Some(Recorded { previous })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn recordable(new: &str, reference: Option<&str>, pct: &str) -> bool {
        is_recordable(d(new), reference.map(d), d(pct))
    }

    /// Which of `offered` the rule records.
    fn recorded_of(
        offered: &[(usize, Decimal)],
        held: &[(usize, Decimal)],
        reference: Option<Decimal>,
        pct: &str,
    ) -> Vec<bool> {
        recordable_series(offered, held, reference, d(pct))
            .iter()
            .map(Option::is_some)
            .collect()
    }

    /// A series numbered in time order.
    fn series(prices: &[&str]) -> Vec<(usize, Decimal)> {
        prices.iter().map(|p| d(p)).enumerate().collect()
    }

    #[test]
    fn a_series_is_walked_against_the_last_recorded_price_not_the_last_seen() {
        let series = series(&["100", "100.3", "100.6", "100.2", "99.4", "99.4", "100"]);
        assert_eq!(
            recorded_of(&series, &[], None, "0.5"),
            [true, false, true, false, true, false, true]
        );
        // Each recorded price moved from the one recorded before it, not from the one seen.
        let previous: Vec<_> = recordable_series(&series, &[], None, d("0.5"))
            .into_iter()
            .flatten()
            .map(|r| r.previous)
            .collect();
        assert_eq!(
            previous,
            [None, Some(d("100")), Some(d("100.6")), Some(d("99.4"))]
        );
        // A drift of small steps is recorded once it adds up.
        let drift = self::series(&["100.2", "100.4", "100.5"]);
        assert_eq!(
            recorded_of(&drift, &[], Some(d("100")), "0.5"),
            [false, false, true]
        );
        assert!(recordable_series::<usize>(&[], &[], None, d("1")).is_empty());
    }

    #[test]
    fn offered_prices_are_judged_against_the_rows_held_between_them() {
        // Held at 2 (101) and 4 (103): 3 is judged against 101, 5 against 103; 4 is held already.
        let offered = [
            (1, d("100")),
            (3, d("101.3")),
            (4, d("110")),
            (5, d("103.4")),
        ];
        let held = [(2, d("101")), (4, d("103"))];
        assert_eq!(
            recorded_of(&offered, &held, Some(d("99")), "0.5"),
            [true, false, false, false]
        );
        assert_eq!(
            recorded_of(&offered, &held, Some(d("100")), "0.2"),
            [false, true, false, true]
        );
        // 3 moved from the held 101, 5 from the held 103.
        let previous: Vec<_> = recordable_series(&offered, &held, Some(d("100")), d("0.2"))
            .into_iter()
            .flatten()
            .map(|r| r.previous)
            .collect();
        assert_eq!(previous, [Some(d("101")), Some(d("103"))]);
        // A held row after every offered one changes nothing before it.
        assert_eq!(
            recorded_of(&offered[..1], &[(9, d("1"))], None, "0.5"),
            [true]
        );
    }

    #[test]
    fn only_an_observation_older_than_the_one_held_is_out_of_order() {
        let at = |minute: u32| {
            DateTime::parse_from_rfc3339(&format!("2026-12-04T15:{minute:02}:00Z"))
                .unwrap()
                .to_utc()
        };
        assert!(
            is_out_of_order(at(3), Some(at(5))),
            "a stale cache's answer"
        );
        assert!(!is_out_of_order(at(5), Some(at(5))), "an identical re-run");
        assert!(!is_out_of_order(at(7), Some(at(5))));
        assert!(!is_out_of_order(at(0), None), "nothing held yet");
    }

    #[test]
    fn first_sighting_is_always_recorded() {
        assert!(recordable("100", None, "0.5"));
        assert!(recordable("0", None, "10000"));
    }

    #[test]
    fn a_move_of_exactly_the_threshold_is_recorded() {
        assert!(recordable("100.5", Some("100"), "0.5"));
        assert!(recordable("99.5", Some("100"), "0.5"));
        assert!(!recordable("100.4999999999", Some("100"), "0.5"));
        assert!(!recordable("99.50000001", Some("100"), "0.5"));
    }

    #[test]
    fn exact_where_f64_is_not() {
        // 0.3 is exactly 50% above 0.2, but in f64 (0.3 - 0.2) * 100 = 9.999999999999998 < 0.2 * 50 = 10.
        let (new, reference, pct) = (0.3_f64, 0.2_f64, 50.0_f64);
        assert!((new - reference) * 100.0 < reference * pct, "f64 misses it");
        assert!(recordable("0.3", Some("0.2"), "50"));
        // 0.1 + 0.2 style: 0.00000315 → 0.0000031815 is exactly 1%.
        assert!(recordable("0.0000031815", Some("0.00000315"), "1"));
        assert!(!recordable("0.0000031814", Some("0.00000315"), "1"));
    }

    #[test]
    fn unchanged_prices_are_never_recorded_even_with_threshold_zero() {
        assert!(!recordable("58083", Some("58083"), "0.5"));
        assert!(!recordable("58083.0", Some("58083"), "0"));
        assert!(!recordable("0", Some("0"), "0"));
    }

    #[test]
    fn any_change_counts_from_a_zero_reference_or_threshold() {
        assert!(recordable("0.000000001", Some("0"), "0.5"));
        assert!(recordable("100.0000001", Some("100"), "0"));
    }

    #[test]
    fn large_thresholds_and_extreme_values_do_not_overflow() {
        assert!(!recordable("150", Some("100"), "10000"));
        assert!(recordable("10100", Some("1"), "10000"));
        let max = Decimal::MAX.to_string();
        assert!(!recordable(&max, Some(&max), "0.5"));
        assert!(recordable(&max, Some("1"), "0.5"));
        assert!(!recordable("1", Some(&max), "10000"));
    }
}
