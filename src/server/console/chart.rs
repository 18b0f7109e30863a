//! The overview's chart: new files per hour by zone over the last 24 hours, from the journal's
//! hourly buckets, as an inline SVG of stacked bars. Colours come from the stylesheet (classes,
//! no style attributes, as the CSP wants); each bar carries a `<title>` with its counts, and
//! the legend names the zones in text.

use std::fmt::Write;

use super::html;
use crate::journal::Hour;
use crate::zone::DangerZone;

const WIDTH: u64 = 720;
const HEIGHT: u64 = 160;
/// Room under the bars for the hour labels.
const AXIS: u64 = 18;

/// Writes the chart for `hours` (oldest first, as [`crate::journal::Journal::hourly`] gives).
pub fn new_files(out: &mut String, hours: &[Hour]) {
    let total: u64 = hours.iter().flat_map(|h| h.files).sum();
    let peak = hours
        .iter()
        .map(|h| h.files.iter().sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let _ = write!(
        out,
        r#"<figure class="chart"><svg id="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="chart-desc" preserveAspectRatio="none"><desc id="chart-desc">{total} new files over the last {} hours; the busiest hour had {peak}.</desc>"#,
        hours.len()
    );
    let slots = hours.len().max(1) as u64;
    let slot = WIDTH / slots;
    let bar = slot.saturating_sub(4).max(1);
    let plot = HEIGHT - AXIS;
    for (i, hour) in hours.iter().enumerate() {
        let x = i as u64 * slot + 2;
        let mut y = plot;
        let label = html::rfc3339(html::unix(hour.hour * 3600));
        let clock = label.get(11..16).unwrap_or("");
        let mut title = format!("{clock} UTC:");
        for zone in DangerZone::ALL {
            let n = hour.files[zone.index()];
            if n > 0 {
                let _ = write!(title, " {n} {}", zone.as_str());
            }
        }
        if hour.files.iter().all(|n| *n == 0) {
            title.push_str(" no new files");
        }
        let _ = write!(out, "<g><title>{}</title>", html::escape(&title));
        // Most dangerous at the bottom, where the eye starts.
        for zone in DangerZone::ALL {
            let n = hour.files[zone.index()];
            if n == 0 {
                continue;
            }
            let h = (n * plot).div_ceil(peak).max(1).min(y);
            y -= h;
            let _ = write!(
                out,
                r#"<rect class="c-{}" x="{x}" y="{y}" width="{bar}" height="{h}"></rect>"#,
                zone.as_str().to_ascii_lowercase()
            );
        }
        if i % 6 == 0 {
            let _ = write!(
                out,
                r#"<text class="axis" x="{x}" y="{}">{clock}</text>"#,
                HEIGHT - 4
            );
        }
        out.push_str("</g>");
    }
    let _ = write!(
        out,
        r#"<line class="base" x1="0" y1="{plot}" x2="{WIDTH}" y2="{plot}"></line></svg><figcaption>Peak {peak} files per hour · "#
    );
    for zone in DangerZone::ALL {
        html::zone_badge(out, zone, None);
        out.push(' ');
    }
    out.push_str("</figcaption></figure>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_hour_is_a_stack_of_its_zones_with_its_counts_in_words() {
        let mut hours: Vec<Hour> = (0..25)
            .map(|i| Hour {
                hour: 472_000 + i,
                files: [0; 6],
            })
            .collect();
        hours[24].files = [2, 0, 0, 3, 0, 0];
        let mut out = String::new();
        new_files(&mut out, &hours);
        assert_eq!(out.matches("<rect").count(), 2, "{out}");
        assert!(out.contains(r#"class="c-red""#), "{out}");
        assert!(out.contains("UTC: 2 Red 3 Grey</title>"), "{out}");
        assert!(out.contains("5 new files over the last 25 hours"), "{out}");
        assert!(!out.contains("style="), "the CSP forbids style attributes");
    }
}
