//! A line chart as a standalone SVG, drawn by hand: panels of a measure (linear, from 0, each
//! with its own label) over connections (log scale), one line with point markers per model,
//! one legend.

use std::fmt::Write as _;

pub struct Series {
    pub name: String,
    /// (x > 0, y >= 0), in x order. Missing cells are simply absent.
    pub points: Vec<(f64, f64)>,
}

pub struct Panel {
    pub title: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

const PANEL_W: f64 = 480.0;
const PANEL_H: f64 = 320.0;
const COLUMNS: usize = 2;
const LEGEND_H: f64 = 40.0;
/// Plot area inside a panel.
const LEFT: f64 = 78.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 36.0;
const BOTTOM: f64 = 52.0;
/// Distinct colours (Okabe–Ito, readable by colour-blind people), then repeated.
const COLORS: [&str; 8] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442",
];

pub fn chart(panels: &[Panel], x_label: &str) -> String {
    let rows = panels.len().div_ceil(COLUMNS).max(1);
    let cols = panels.len().clamp(1, COLUMNS);
    let width = PANEL_W * cols as f64;
    let height = LEGEND_H + PANEL_H * rows as f64;
    let mut s = String::new();
    let _ = writeln!(s, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);

    // One legend for all panels: the models are the same everywhere.
    let mut names: Vec<&str> = Vec::new();
    for p in panels {
        for se in &p.series {
            if !names.contains(&se.name.as_str()) {
                names.push(&se.name);
            }
        }
    }
    let mut x = 20.0;
    for (i, name) in names.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let _ = writeln!(
            s,
            r#"<line x1="{x}" y1="20" x2="{}" y2="20" stroke="{c}" stroke-width="2"/><circle cx="{}" cy="20" r="3.5" fill="{c}"/><text x="{}" y="24">{}</text>"#,
            x + 24.0,
            x + 12.0,
            x + 30.0,
            escape(name)
        );
        x += 40.0 + 7.5 * name.len() as f64;
    }

    // Every panel shares the x range, so they line up.
    let xs: Vec<f64> = panels
        .iter()
        .flat_map(|p| {
            p.series
                .iter()
                .flat_map(|se| se.points.iter().map(|pt| pt.0))
        })
        .filter(|x| *x > 0.0)
        .collect();
    let (mut x_lo, mut x_hi) = xs.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &x| {
        (lo.min(x), hi.max(x))
    });
    if xs.is_empty() {
        (x_lo, x_hi) = (1.0, 10.0);
    }
    if x_lo == x_hi {
        (x_lo, x_hi) = (x_lo / 2.0, x_hi * 2.0);
    }
    let mut ticks: Vec<f64> = xs.clone();
    ticks.sort_by(f64::total_cmp);
    ticks.dedup();

    for (i, panel) in panels.iter().enumerate() {
        let ox = PANEL_W * (i % COLUMNS) as f64;
        let oy = LEGEND_H + PANEL_H * (i / COLUMNS) as f64;
        let (px, py) = (ox + LEFT, oy + TOP);
        let (pw, ph) = (PANEL_W - LEFT - RIGHT, PANEL_H - TOP - BOTTOM);
        let y_max = panel
            .series
            .iter()
            .flat_map(|se| se.points.iter().map(|p| p.1))
            .fold(0.0f64, f64::max);
        let (y_top, step) = nice_axis(y_max);
        let sx = |x: f64| px + pw * (x.log10() - x_lo.log10()) / (x_hi.log10() - x_lo.log10());
        let sy = |y: f64| py + ph - ph * (y / y_top);

        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle" font-size="14" font-weight="bold">{}</text>"#,
            px + pw / 2.0,
            oy + 22.0,
            escape(&panel.title)
        );
        // Horizontal grid and y tick labels.
        let mut y = 0.0;
        while y <= y_top * 1.0001 {
            let yy = sy(y);
            let _ = writeln!(
                s,
                r##"<line x1="{px}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                px + pw,
                px - 6.0,
                yy + 4.0,
                si(y)
            );
            y += step;
        }
        for &t in &ticks {
            let xx = sx(t);
            let _ = writeln!(
                s,
                r##"<line x1="{xx:.1}" y1="{py}" x2="{xx:.1}" y2="{:.1}" stroke="#eee"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                py + ph,
                py + ph + 16.0,
                // Connection counts are read exactly (1024, not 1.02k).
                if t.fract() == 0.0 {
                    format!("{t}")
                } else {
                    si(t)
                }
            );
        }
        // Axes and their labels.
        let _ = writeln!(
            s,
            r#"<path d="M{px},{py} V{:.1} H{:.1}" fill="none" stroke="black"/>"#,
            py + ph,
            px + pw
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            px + pw / 2.0,
            py + ph + 36.0,
            escape(x_label)
        );
        let (lx, ly) = (ox + 16.0, py + ph / 2.0);
        let _ = writeln!(
            s,
            r#"<text x="{lx}" y="{ly:.1}" text-anchor="middle" transform="rotate(-90 {lx} {ly:.1})">{}</text>"#,
            escape(&panel.y_label)
        );
        for se in &panel.series {
            let idx = names.iter().position(|n| *n == se.name).unwrap_or(0);
            let c = COLORS[idx % COLORS.len()];
            let pts: Vec<String> = se
                .points
                .iter()
                .filter(|p| p.0 > 0.0)
                .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
                .collect();
            if pts.len() > 1 {
                let _ = writeln!(
                    s,
                    r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="2"/>"#,
                    pts.join(" ")
                );
            }
            for p in &pts {
                let (cx, cy) = p.split_once(',').unwrap_or(("0", "0"));
                let _ = writeln!(s, r#"<circle cx="{cx}" cy="{cy}" r="3.5" fill="{c}"/>"#);
            }
        }
    }
    s.push_str("</svg>\n");
    s
}

/// The top of a linear axis from 0 and its step: 1, 2 or 5 times a power of ten, ~5 steps.
fn nice_axis(max: f64) -> (f64, f64) {
    if max <= 0.0 || !max.is_finite() {
        return (1.0, 0.2);
    }
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * mag);
    ((max / step).ceil() * step, step)
}

/// 1500 -> 1.5k, 2000000 -> 2M: short tick labels.
fn si(v: f64) -> String {
    let (v, suffix) = if v >= 1e6 {
        (v / 1e6, "M")
    } else if v >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let text = format!("{v:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}{suffix}")
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes() {
        assert_eq!(nice_axis(0.0), (1.0, 0.2));
        let (top, step) = nice_axis(123_456.0);
        assert!(top >= 123_456.0 && step == 50_000.0, "{top} {step}");
        assert_eq!(si(1500.0), "1.5k");
        assert_eq!(si(2_000_000.0), "2M");
        assert_eq!(si(16.0), "16");
    }

    #[test]
    fn standalone_svg() {
        let panels = vec![Panel {
            title: "small <1>".into(),
            y_label: "requests/s".into(),
            series: vec![Series {
                name: "single".into(),
                points: vec![(1.0, 10.0), (16.0, 100.0)],
            }],
        }];
        let s = chart(&panels, "connections");
        assert!(s.starts_with("<?xml"));
        assert!(s.contains("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(s.trim_end().ends_with("</svg>"));
        assert!(s.contains("small &lt;1&gt;"));
        assert!(s.contains("<polyline"));
    }
}
