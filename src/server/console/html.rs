//! The console's shared markup: escaping, the page layout, zone and state badges, times.
//!
//! Everything that came from the sandbox (task names, file names, rules, detections, errors,
//! verdicts) is written through [`escape`], in element text and in quoted attribute values
//! alike; it also shows bidirectional controls as `[U+202E]`, so a name such as
//! `invoice\u{202e}fdp.exe` cannot pass for `invoice.pdf…`. The layout carries no inline
//! script or style: the strict CSP forbids both.

use std::fmt::Write;
use std::time::SystemTime;

use crate::lifecycle::TaskLife;
use crate::state::TaskRow;
use crate::zone::DangerZone;

/// Seconds between two automatic refreshes of a page (console.js reads it from the body).
pub const REFRESH_SECONDS: u64 = 10;

/// Which page is open, for the navigation's `aria-current`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Task,
    Events,
}

/// Escapes text for HTML element content and quoted attribute values; bidirectional
/// controls become visible as `[U+XXXX]`.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_escaped(&mut out, s);
    out
}

/// [`escape`], appending to `out`.
pub fn push_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\u{061c}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}' => {
                let _ = write!(out, "[U+{:04X}]", u32::from(c));
            }
            c => out.push(c),
        }
    }
}

/// The page around `main`: head, header with navigation, the live region console.js swaps.
pub struct Layout<'a> {
    pub title: &'a str,
    pub nav: Nav,
    pub banner: Option<&'a str>,
    pub telemetry_path: &'a str,
}

impl Layout<'_> {
    /// Opens the document up to the inside of `<main>`.
    pub fn open(&self, out: &mut String) {
        let _ = write!(
            out,
            r##"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · KRS Exporter</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/console.css">
<script src="/static/console.js" defer></script>
</head><body data-refresh-seconds="{REFRESH_SECONDS}" data-refreshed="0">
<a class="skip" href="#main">Skip to content</a>
<header class="top"><span class="brand">KRS Exporter</span><nav aria-label="Console">"##,
            title = escape(self.title),
        );
        for (nav, href, label) in [
            (Nav::Overview, "/", "Overview"),
            (Nav::Events, "/events", "Events"),
        ] {
            let current = if nav == self.nav {
                r#" aria-current="page""#
            } else {
                ""
            };
            let _ = write!(out, r#"<a href="{href}"{current}>{label}</a>"#);
        }
        let _ = writeln!(
            out,
            r#"<a href="{}">Metrics</a></nav><button type="button" class="refresh" id="refresh-toggle" hidden aria-pressed="false">Auto-refresh on</button></header>"#,
            escape(self.telemetry_path)
        );
        if let Some(banner) = self.banner {
            let _ = writeln!(out, r#"<p class="banner">{}</p>"#, escape(banner));
        }
        out.push_str("<main id=\"main\" tabindex=\"-1\">\n");
    }

    /// Closes what [`Layout::open`] opened.
    pub fn close(&self, out: &mut String) {
        let _ = write!(
            out,
            "</main>\n<footer>krs-exporter {} · <a href=\"/api/v1/tasks\">JSON API</a></footer>\n</body></html>\n",
            escape(env!("CARGO_PKG_VERSION"))
        );
    }
}

/// The CSS class of a zone's colour.
pub fn zone_class(zone: DangerZone) -> &'static str {
    match zone {
        DangerZone::Red => "z-red",
        DangerZone::Orange => "z-orange",
        DangerZone::Yellow => "z-yellow",
        DangerZone::Grey => "z-grey",
        DangerZone::Green => "z-green",
        DangerZone::Unknown => "z-unknown",
    }
}

/// A symbol per zone, so the badge reads without its colour.
fn zone_symbol(zone: DangerZone) -> &'static str {
    match zone {
        DangerZone::Red => "\u{2716}",    // ✖
        DangerZone::Orange => "\u{25B2}", // ▲
        DangerZone::Yellow => "\u{25C6}", // ◆
        DangerZone::Grey => "\u{25CF}",   // ●
        DangerZone::Green => "\u{2714}",  // ✔
        DangerZone::Unknown => "?",
    }
}

/// The `<option>`s of a zone filter, `selected` marked, "any" first.
pub fn zone_options(out: &mut String, selected: Option<DangerZone>) {
    out.push_str("<option value=\"\">any</option>");
    for zone in DangerZone::ALL {
        let mark = if selected == Some(zone) {
            " selected"
        } else {
            ""
        };
        let _ = write!(out, "<option{mark}>{}</option>", zone.as_str());
    }
}

/// A file's name and the start of its hash (all of it in `title`), as the feed shows them.
pub fn file_and_hash(out: &mut String, name: &str, sha256: &str) {
    out.push_str(" <span class=\"file\">");
    push_escaped(out, name);
    let _ = write!(
        out,
        "</span> <code class=\"hash short\" title=\"{}\">{}</code>",
        escape(sha256),
        escape(sha256.get(..16).unwrap_or(sha256))
    );
}

/// A zone badge: symbol, name and (with `count`) how many files.
pub fn zone_badge(out: &mut String, zone: DangerZone, count: Option<u64>) {
    let _ = write!(
        out,
        r#"<span class="badge {}"><span aria-hidden="true">{}</span> {}"#,
        zone_class(zone),
        zone_symbol(zone),
        zone.as_str()
    );
    if let Some(n) = count {
        let _ = write!(out, " {n}");
    }
    out.push_str("</span>");
}

/// The zone badges of a task's counts, most dangerous first, zero counts left out.
pub fn zone_badges(out: &mut String, zones: &[u64; 6]) {
    let mut any = false;
    for zone in DangerZone::ALL {
        let n = zones[zone.index()];
        if n > 0 {
            zone_badge(out, zone, Some(n));
            out.push(' ');
            any = true;
        }
    }
    if !any {
        out.push_str(r#"<span class="muted">no files</span>"#);
    }
}

/// How a task's polling goes, in one word.
pub fn poll_word(row: &TaskRow) -> &'static str {
    match (row.last_poll, row.up) {
        (None, _) => "pending",
        (Some(_), true) => "ok",
        (Some(_), false) => "failing",
    }
}

/// The task's lifecycle state, or `—` while unknown.
pub fn state_badge(out: &mut String, life: Option<&TaskLife>) {
    match life {
        Some(life) => {
            let class = if life.state.is_active() {
                "s-active"
            } else {
                match life.state.as_str() {
                    "failed" | "upload_failed" => "s-failed",
                    "completed" => "s-done",
                    _ => "s-other",
                }
            };
            let _ = write!(
                out,
                r#"<span class="state {class}">{}</span>"#,
                life.state.as_str()
            );
        }
        None => out.push_str(r#"<span class="muted">—</span>"#),
    }
}

/// A time as `<time>`: its age in words, the exact time in `datetime` and `title`.
pub fn time_ago(out: &mut String, at: Option<SystemTime>, now: SystemTime) {
    match at {
        None => out.push_str(r#"<span class="muted">never</span>"#),
        Some(at) => {
            let exact = rfc3339(at);
            let _ = write!(
                out,
                r#"<time datetime="{exact}" title="{exact}">{}</time>"#,
                age(at, now)
            );
        }
    }
}

/// `42 s ago`, `5 min ago`, `3 h ago`, `2 d ago`; `in 30 s` for a time ahead.
pub fn age(at: SystemTime, now: SystemTime) -> String {
    let (secs, ahead) = match now.duration_since(at) {
        Ok(d) => (d.as_secs(), false),
        Err(e) => (e.duration().as_secs(), true),
    };
    let span = match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 2 * 3600 => format!("{} min", s / 60),
        s if s < 2 * 86_400 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86_400),
    };
    if ahead {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// Seconds precision, UTC.
pub fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// A Unix time in seconds as a [`SystemTime`].
pub fn unix(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs)
}

/// A byte count for people: `512 B`, `47.1 KiB`, `3.2 MiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A hash in full, wrapping, with a copy button (console.js; the hash is in `data-copy`).
pub fn hash_cell(out: &mut String, sha256: &str) {
    let hash = escape(sha256);
    let _ = write!(
        out,
        r#"<code class="hash">{hash}</code> <button type="button" class="copy" data-copy="{hash}" aria-label="Copy SHA-256" hidden>Copy</button>"#
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn markup_in_values_is_escaped_for_text_and_attributes() {
        assert_eq!(
            escape(r#"<script>alert("x")</script>&'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"
        );
        assert_eq!(escape("invoice\u{202e}fdp.exe"), "invoice[U+202E]fdp.exe");
    }

    #[test]
    fn ages_read_in_the_largest_sensible_unit() {
        let now = unix(1_700_000_000);
        assert_eq!(age(now - Duration::from_secs(42), now), "42 s ago");
        assert_eq!(age(now - Duration::from_secs(600), now), "10 min ago");
        assert_eq!(age(now - Duration::from_secs(5 * 3600), now), "5 h ago");
        assert_eq!(age(now - Duration::from_secs(3 * 86_400), now), "3 d ago");
        assert_eq!(age(now + Duration::from_secs(30), now), "in 30 s");
    }

    #[test]
    fn sizes_use_binary_units() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(48_213), "47.1 KiB");
        assert_eq!(size(3 * 1024 * 1024), "3.0 MiB");
    }

    #[test]
    fn a_zone_badge_names_its_zone_and_count_beside_the_colour() {
        let mut out = String::new();
        zone_badges(&mut out, &[3, 0, 0, 1, 0, 0]);
        assert!(out.contains("z-red"), "{out}");
        assert!(out.contains("Red 3"), "{out}");
        assert!(out.contains("Grey 1"), "{out}");
        assert!(!out.contains("Orange"), "{out}");
    }
}
