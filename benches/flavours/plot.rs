//! The SVG plot: one row per scenario, rate on the left, p99 latency (log scale) on the
//! right, one bar per server in the same colour everywhere.

use std::io;
use std::path::Path;

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::{self, Results, Summary};
use crate::servers::Kind;

const WIDTH: u32 = 1900;
const ROW_HEIGHT: u32 = 250;
const HEADER: u32 = 60;

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// Draws every scenario's rate and p99 into an SVG file at `path`.
pub fn write_svg(all: &[Results], path: &Path, subtitle: &str) -> io::Result<()> {
    let height = HEADER + ROW_HEIGHT * all.len().max(1) as u32;
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    draw(&root, all, subtitle).map_err(|e| io::Error::other(e.to_string()))?;
    root.present().map_err(|e| io::Error::other(e.to_string()))
}

fn draw(
    root: &Area<'_>,
    all: &[Results],
    subtitle: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    root.fill(&WHITE)?;
    let (header, body) = root.split_vertically(HEADER);
    header.draw(&Text::new(
        "socketserver flavours beside the anchors: std thread-per-connection, std pool, tokio (median of runs)",
        (20, 10),
        ("sans-serif", 22).into_font(),
    ))?;
    header.draw(&Text::new(
        subtitle.to_string(),
        (20, 38),
        ("sans-serif", 14).into_font().color(&BLACK.mix(0.7)),
    ))?;
    let cells = body.split_evenly((all.len().max(1), 2));
    for (r, pair) in all.iter().zip(cells.chunks(2)) {
        let sums = r.summaries();
        rate_panel(&pair[0], r.meta.title, &sums)?;
        p99_panel(&pair[1], r.meta.title, &sums)?;
    }
    Ok(())
}

/// The colour of a server, the same in every panel.
fn colour(kind: Kind) -> RGBColor {
    match kind {
        Kind::Std => RGBColor(120, 120, 120),
        Kind::StdPool => RGBColor(70, 70, 70),
        Kind::Tokio => RGBColor(170, 170, 170),
        Kind::PoolQueued => RGBColor(140, 200, 170),
        Kind::Single => RGBColor(230, 159, 0),
        Kind::Threading => RGBColor(0, 114, 178),
        Kind::FixedPool => RGBColor(204, 121, 167),
        Kind::Pool => RGBColor(0, 158, 115),
        Kind::PoolRead => RGBColor(86, 180, 233),
        Kind::Parked => RGBColor(0, 90, 60),
        Kind::ParkedMax => RGBColor(60, 130, 100),
        Kind::Example => RGBColor(0, 60, 40),
        Kind::Forking => RGBColor(213, 94, 0),
        Kind::Python => RGBColor(180, 160, 40),
    }
}

fn x_label(sums: &[(Kind, Summary)], v: &SegmentValue<u32>) -> String {
    match v {
        SegmentValue::CenterOf(i) => sums.get(*i as usize).map_or("", |(k, _)| k.name()).into(),
        _ => String::new(),
    }
}

/// A bar over segment `i`, from `low` to `high`.
fn bar(i: usize, low: f64, high: f64, kind: Kind) -> Rectangle<(SegmentValue<u32>, f64)> {
    let i = i as u32;
    let mut r = Rectangle::new(
        [
            (SegmentValue::Exact(i), low),
            (SegmentValue::Exact(i + 1), high),
        ],
        colour(kind).filled(),
    );
    r.set_margin(0, 0, 8, 8);
    r
}

fn label(text: String, i: usize, y: f64) -> Text<'static, (SegmentValue<u32>, f64), String> {
    let style = TextStyle::from(("sans-serif", 12).into_font())
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Bottom));
    Text::new(text, (SegmentValue::CenterOf(i as u32), y), style)
}

fn rate_panel(
    area: &Area<'_>,
    title: &str,
    sums: &[(Kind, Summary)],
) -> Result<(), Box<dyn std::error::Error>> {
    let top = sums.iter().map(|(_, s)| s.rate).fold(1.0, f64::max) * 1.25;
    let n = sums.len() as u32;
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{title}: requests/s"), ("sans-serif", 15))
        .margin(6)
        .x_label_area_size(22)
        .y_label_area_size(52)
        .build_cartesian_2d((0..n.saturating_sub(1)).into_segmented(), 0f64..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(sums.len())
        .x_label_formatter(&|v| x_label(sums, v))
        .y_labels(5)
        .y_label_formatter(&|v| report::rate(*v))
        .draw()?;
    chart.draw_series(
        sums.iter()
            .enumerate()
            .map(|(i, (k, s))| bar(i, 0.0, s.rate, *k)),
    )?;
    chart.draw_series(sums.iter().enumerate().map(|(i, (_, s))| {
        let text = match (s.rate == 0.0, s.errors) {
            (true, e) => format!("starved ({e} err)"),
            (false, 0) => report::rate(s.rate),
            (false, e) => format!("{} ({e} err)", report::rate(s.rate)),
        };
        label(text, i, s.rate)
    }))?;
    Ok(())
}

fn p99_panel(
    area: &Area<'_>,
    title: &str,
    sums: &[(Kind, Summary)],
) -> Result<(), Box<dyn std::error::Error>> {
    let values = sums.iter().filter_map(|(_, s)| s.p99);
    let (lo, hi) = values.fold((f64::MAX, 1.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = ((lo.min(hi) / 3.0).max(1.0), hi * 4.0);
    let n = sums.len() as u32;
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{title}: p99 latency (log)"), ("sans-serif", 15))
        .margin(6)
        .x_label_area_size(22)
        .y_label_area_size(52)
        .build_cartesian_2d(
            (0..n.saturating_sub(1)).into_segmented(),
            (lo..hi).log_scale(),
        )?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(sums.len())
        .x_label_formatter(&|v| x_label(sums, v))
        .y_labels(6)
        .y_label_formatter(&|v| report::latency(Some(*v)))
        .draw()?;
    chart.draw_series(
        sums.iter()
            .enumerate()
            .filter_map(|(i, (k, s))| s.p99.map(|p| bar(i, lo, p, *k))),
    )?;
    chart.draw_series(sums.iter().enumerate().map(|(i, (_, s))| match s.p99 {
        Some(p) => label(report::latency(Some(p)), i, p),
        None => label("no requests".into(), i, lo * 1.5),
    }))?;
    Ok(())
}
