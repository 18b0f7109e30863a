//! Danger zones: the sandbox's verdict scale for a downloaded file.
//!
//! The sandbox spells zones loosely (`Gray`, any case, new values), so parsing never fails:
//! anything unrecognised becomes [`DangerZone::Unknown`].

use std::fmt;

/// A file's danger level as graded by the sandbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DangerZone {
    Red,
    Orange,
    Yellow,
    Grey,
    Green,
    /// Empty, missing or a value the sandbox documentation does not list.
    Unknown,
}

impl DangerZone {
    /// Every zone, in the order metrics list them.
    pub const ALL: [DangerZone; 6] = [
        DangerZone::Red,
        DangerZone::Orange,
        DangerZone::Yellow,
        DangerZone::Grey,
        DangerZone::Green,
        DangerZone::Unknown,
    ];

    /// The five documented zones, always exported even when zero.
    pub const DOCUMENTED: [DangerZone; 5] = [
        DangerZone::Red,
        DangerZone::Orange,
        DangerZone::Yellow,
        DangerZone::Grey,
        DangerZone::Green,
    ];

    /// The label value used in metrics (`Red`, …, `Unknown`).
    pub const fn as_str(self) -> &'static str {
        match self {
            DangerZone::Red => "Red",
            DangerZone::Orange => "Orange",
            DangerZone::Yellow => "Yellow",
            DangerZone::Grey => "Grey",
            DangerZone::Green => "Green",
            DangerZone::Unknown => "Unknown",
        }
    }

    /// Position in [`DangerZone::ALL`], for fixed-size per-zone arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Liberal parse: case-insensitive, surrounding whitespace ignored, `Gray` means `Grey`,
    /// anything else is `Unknown`.
    pub fn parse_lenient(s: &str) -> DangerZone {
        let s = s.trim();
        for zone in DangerZone::DOCUMENTED {
            if s.eq_ignore_ascii_case(zone.as_str()) {
                return zone;
            }
        }
        if s.eq_ignore_ascii_case("gray") {
            DangerZone::Grey
        } else {
            DangerZone::Unknown
        }
    }

    /// Strict parse for configuration: a documented zone name (any case, `Gray` allowed) or
    /// `Unknown`; `None` for anything else so the config loader can report it.
    pub fn parse_strict(s: &str) -> Option<DangerZone> {
        match DangerZone::parse_lenient(s) {
            DangerZone::Unknown if !s.trim().eq_ignore_ascii_case("unknown") => None,
            zone => Some(zone),
        }
    }
}

impl fmt::Display for DangerZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_is_case_insensitive_and_maps_gray_to_grey() {
        assert_eq!(DangerZone::parse_lenient("red"), DangerZone::Red);
        assert_eq!(DangerZone::parse_lenient(" YELLOW "), DangerZone::Yellow);
        assert_eq!(DangerZone::parse_lenient("Gray"), DangerZone::Grey);
        assert_eq!(DangerZone::parse_lenient("grey"), DangerZone::Grey);
    }

    #[test]
    fn unrecognised_zones_are_unknown_rather_than_errors() {
        assert_eq!(DangerZone::parse_lenient(""), DangerZone::Unknown);
        assert_eq!(DangerZone::parse_lenient("Purple"), DangerZone::Unknown);
        assert_eq!(DangerZone::parse_strict("Purple"), None);
        assert_eq!(
            DangerZone::parse_strict("unknown"),
            Some(DangerZone::Unknown)
        );
    }

    #[test]
    fn index_matches_position_in_all() {
        for (i, zone) in DangerZone::ALL.iter().enumerate() {
            assert_eq!(zone.index(), i);
        }
    }
}
