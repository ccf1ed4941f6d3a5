//! `coingecko-cdc chart`: `price_history` as a step line, to PNG or SVG.
//!
//! Prices stay `Decimal` until the last moment: they become `f64` only as pixel positions.

use std::path::Path;
use std::sync::Once;

use chrono::{DateTime, Utc};
use plotters::coord::Shift;
use plotters::prelude::*;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

use crate::series::Series;

pub struct ChartRequest<'a> {
    pub title: String,
    pub y_label: String,
    pub series: &'a [Series],
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("--out {0}: give a file ending in .png or .svg")]
    UnknownFormat(String),
    #[error("drawing {path}: {detail}")]
    Drawing { path: String, detail: String },
}

/// A point where the drawn line bends, in pixels' terms.
type Corner = (DateTime<Utc>, f64);

/// The corners of a step line: a recorded price holds until the next change, and the last
/// one holds until `to`.
pub fn step_points(points: &[(DateTime<Utc>, Decimal)], to: DateTime<Utc>) -> Vec<Corner> {
    let mut corners = Vec::with_capacity(points.len() * 2 + 1);
    for (i, (at, price)) in points.iter().enumerate() {
        let value = price.to_f64().unwrap_or(f64::NAN);
        if i > 0 {
            corners.push((*at, corners.last().map_or(value, |c: &Corner| c.1)));
        }
        corners.push((*at, value));
    }
    if let Some(&(at, value)) = corners.last() {
        if at < to {
            corners.push((to, value));
        }
    }
    corners
}

/// Writes the chart; the format follows the file's extension.
pub fn render(request: &ChartRequest, out: &Path) -> Result<(), ChartError> {
    register_font();
    let path = out.display().to_string();
    let size = (request.width, request.height);
    let drawn = match out
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("png") => draw(BitMapBackend::new(out, size).into_drawing_area(), request),
        Some("svg") => draw(SVGBackend::new(out, size).into_drawing_area(), request),
        _ => return Err(ChartError::UnknownFormat(path)),
    };
    drawn.map_err(|detail| ChartError::Drawing { path, detail })
}

fn register_font() {
    static FONT: Once = Once::new();
    FONT.call_once(|| {
        // Bundled, so that charts render the same everywhere, with no system fonts.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    request: &ChartRequest,
) -> Result<(), String> {
    let text = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let lines: Vec<(&str, Vec<Corner>)> = request
        .series
        .iter()
        .map(|s| (s.coin_id.as_str(), step_points(&s.points, request.to)))
        .collect();
    let values = lines.iter().flat_map(|(_, l)| l.iter().map(|p| p.1));
    let (low, high) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let pad = ((high - low) * 0.05)
        .max(high.abs() * 0.001)
        .max(f64::MIN_POSITIVE);

    root.fill(&WHITE).map_err(text)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(&request.title, ("sans-serif", 26))
        .margin(20)
        .x_label_area_size(60)
        .y_label_area_size(100)
        .build_cartesian_2d(request.from..request.to, (low - pad)..(high + pad))
        .map_err(text)?;
    let span = request.to - request.from;
    let date_format = if span.num_days() >= 8 {
        "%Y-%m-%d"
    } else {
        "%m-%d %H:%M"
    };
    chart
        .configure_mesh()
        .x_desc("time (UTC)")
        .y_desc(&request.y_label)
        .x_labels(8)
        .x_label_formatter(&|at: &DateTime<Utc>| at.format(date_format).to_string())
        .y_label_formatter(&|v: &f64| format_value(*v))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .draw()
        .map_err(text)?;
    for (i, (coin_id, line)) in lines.into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(line, color.stroke_width(2)))
            .map_err(text)?
            .label(coin_id)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(text)?;
    root.present().map_err(text)
}

/// Axis labels with as many decimals as small prices need.
fn format_value(v: f64) -> String {
    match v.abs() {
        a if a >= 1000.0 => format!("{v:.0}"),
        a if a >= 1.0 => format!("{v:.2}"),
        0.0 => "0".into(),
        a => format!(
            "{v:.*}",
            (2 - a.log10().floor() as i32).clamp(2, 12) as usize
        ),
    }
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
    fn a_price_holds_until_the_next_change_and_until_the_end() {
        let corners = step_points(&[(at(1), d("10")), (at(3), d("12"))], at(5));
        assert_eq!(
            corners,
            [(at(1), 10.0), (at(3), 10.0), (at(3), 12.0), (at(5), 12.0)]
        );
    }

    #[test]
    fn small_prices_keep_their_digits_on_the_axis() {
        assert_eq!(format_value(58083.4), "58083");
        assert_eq!(format_value(2.456), "2.46");
        assert_eq!(format_value(0.00000315), "0.00000315");
    }
}
