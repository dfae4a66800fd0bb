//! Line charts as standalone SVG: axes with round tick values, a title, axis labels and a
//! legend; no script, no font or style from outside, so a report opens offline.

use std::fmt::Write as _;

/// A line chart.
#[derive(Debug)]
pub struct Plot {
    /// Title, above the chart.
    pub title: &'static str,
    /// Label of the x axis.
    pub x_label: &'static str,
    /// Label of the y axis.
    pub y_label: &'static str,
    /// Fixed top of the y axis (else from the data).
    pub y_max: Option<f64>,
    /// Vertical dashed marks at these x values.
    pub marks: Vec<f64>,
    /// One legend entry per series (at most the first [`COLORS`]`.len()` get their own),
    /// and one for the marks.
    pub legend: Vec<String>,
    /// Legend entry of the marks.
    pub marks_label: &'static str,
    /// Every series in the first colour (many lines of one kind, one legend entry).
    pub one_color: bool,
}

const W: f64 = 640.0;
const H: f64 = 380.0;
const L: f64 = 64.0;
const R: f64 = 20.0;
const T: f64 = 30.0;
const B: f64 = 64.0;
/// Series colours, in order.
pub const COLORS: [&str; 6] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
];

impl Plot {
    /// The chart of `series` (points (x, y)).
    pub fn svg(&self, series: &[Vec<(f64, f64)>]) -> String {
        let all = series.iter().flatten();
        let x_data = all
            .clone()
            .map(|p| p.0)
            .chain(self.marks.iter().copied())
            .fold(0.0, f64::max);
        let y_data = self
            .y_max
            .unwrap_or_else(|| all.map(|p| p.1).fold(0.0, f64::max));
        let x_ticks = ticks(x_data);
        let y_ticks = ticks(y_data);
        let x_max = *x_ticks.last().unwrap_or(&1.0);
        let y_max = *y_ticks.last().unwrap_or(&1.0);
        let sx = |x: f64| L + x / x_max * (W - L - R);
        let sy = |y: f64| H - B - y / y_max * (H - T - B);
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11">"#
        );
        let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="18" text-anchor="middle" font-size="13">{}</text>"#,
            W / 2.0,
            escape(self.title)
        );
        for &x in &x_ticks {
            let _ = writeln!(
                s,
                r##"<path d="M{0:.1} {T} V{1}" stroke="#eee"/><text x="{0:.1}" y="{2}" text-anchor="middle">{3}</text>"##,
                sx(x),
                H - B,
                H - B + 15.0,
                label(x)
            );
        }
        for &y in &y_ticks {
            let _ = writeln!(
                s,
                r##"<path d="M{L} {0:.1} H{1}" stroke="#eee"/><text x="{2}" y="{3:.1}" text-anchor="end">{4}</text>"##,
                sy(y),
                W - R,
                L - 5.0,
                sy(y) + 4.0,
                label(y)
            );
        }
        let _ = writeln!(
            s,
            r#"<path d="M{L} {T} V{} H{}" fill="none" stroke="black"/>"#,
            H - B,
            W - R
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            (L + W - R) / 2.0,
            H - B + 32.0,
            escape(self.x_label)
        );
        let _ = writeln!(
            s,
            r#"<text x="14" y="{0}" text-anchor="middle" transform="rotate(-90 14 {0})">{1}</text>"#,
            (T + H - B) / 2.0,
            escape(self.y_label)
        );
        for m in &self.marks {
            let _ = writeln!(
                s,
                r##"<path d="M{x:.1} {T} V{}" stroke="#888" stroke-dasharray="4 3"/>"##,
                H - B,
                x = sx(*m)
            );
        }
        for (i, pts) in series.iter().enumerate() {
            let mut d = String::new();
            for (k, (x, y)) in pts.iter().enumerate() {
                let _ = write!(
                    d,
                    "{}{:.1} {:.1} ",
                    if k == 0 { "M" } else { "L" },
                    sx(*x),
                    sy(*y)
                );
            }
            let _ = writeln!(
                s,
                r#"<path d="{}" fill="none" stroke="{}" stroke-width="1.2" opacity="0.8"/>"#,
                d.trim_end(),
                COLORS[if self.one_color { 0 } else { i % COLORS.len() }]
            );
        }
        // The legend, in a row under the x label: (swatch style, text).
        let mut entries: Vec<(String, &str)> = self
            .legend
            .iter()
            .take(COLORS.len())
            .enumerate()
            .map(|(i, text)| {
                (
                    format!(r#"stroke="{}" stroke-width="2""#, COLORS[i]),
                    text.as_str(),
                )
            })
            .collect();
        if !self.marks.is_empty() {
            entries.push((
                r##"stroke="#888" stroke-dasharray="4 3""##.to_string(),
                self.marks_label,
            ));
        }
        let mut x = L;
        let y = H - 14.0;
        for (style, text) in entries {
            let _ = writeln!(
                s,
                r#"<path d="M{x:.1} {y} h16" {style}/><text x="{:.1}" y="{:.1}">{}</text>"#,
                x + 22.0,
                y + 4.0,
                escape(text)
            );
            x += 30.0 + 6.0 * text.chars().count() as f64;
        }
        s.push_str("</svg>\n");
        s
    }
}

/// Round tick values from 0 to at least `max`: steps of 1, 2 or 5 times a power of ten,
/// 4 to 8 of them.
pub fn ticks(max: f64) -> Vec<f64> {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let raw = max / 5.0;
    let power = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|s| max / s <= 8.0)
        .unwrap_or(10.0 * power);
    let n = (max / step - 1e-9).ceil().max(1.0) as usize;
    (0..=n).map(|k| k as f64 * step).collect()
}

/// A tick value without trailing noise (`0.30000000000000004` → `0.3`).
fn label(v: f64) -> String {
    let text = format!("{:.6}", v);
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".into()
    } else {
        text.to_string()
    }
}

/// Text for SVG and HTML.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_data() {
        assert_eq!(ticks(1.0), [0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]);
        assert_eq!(ticks(114.6), [0.0, 20.0, 40.0, 60.0, 80.0, 100.0, 120.0]);
        assert_eq!(ticks(7.0), [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
        assert_eq!(ticks(0.0), [0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]);
        for max in [0.013, 3.7, 42.0, 999.0, 61_234.0] {
            let t = ticks(max);
            assert!(
                *t.last().unwrap() >= max && (4..=9).contains(&t.len()),
                "{max}: {t:?}"
            );
        }
        assert_eq!(label(0.6000000000000001), "0.6");
        assert_eq!(label(120.0), "120");
    }

    #[test]
    fn a_chart_has_a_legend_and_escapes_its_text() {
        let svg = Plot {
            title: "a < b",
            x_label: "s",
            y_label: "share",
            y_max: Some(1.0),
            marks: vec![2.0],
            legend: vec!["converged".into()],
            marks_label: "heal",
            one_color: false,
        }
        .svg(&[vec![(0.0, 0.0), (3.0, 1.0)]]);
        assert!(svg.contains("a &lt; b"));
        assert!(svg.contains(">converged</text>"));
        assert!(svg.contains(">heal</text>"));
        assert!(svg.contains(">0.4</text>"));
    }
}
