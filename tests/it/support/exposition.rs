//! A small, strict parser of the Prometheus text format, so tests assert on values rather than
//! on substrings. It fails the test on any line it cannot parse.

use std::collections::BTreeMap;

/// One scrape, parsed.
#[derive(Debug)]
pub struct Scrape {
    pub text: String,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        let samples = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| parse_line(l).unwrap_or_else(|e| panic!("bad exposition line {l:?}: {e}")))
            .collect();
        Scrape {
            text: text.to_string(),
            samples,
        }
    }

    /// The value of the one series of `name` whose labels include `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found = self.matching(name, labels);
        match found.as_slice() {
            [] => None,
            [one] => Some(one.value),
            many => panic!("{} series of {name} match {labels:?}: {many:?}", many.len()),
        }
    }

    /// `value`, or 0 when the series is absent.
    pub fn value_or_zero(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }

    /// Every series of `name` whose labels include `labels`.
    pub fn matching(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    pub fn count(&self, name: &str, labels: &[(&str, &str)]) -> usize {
        self.matching(name, labels).len()
    }
}

fn parse_line(line: &str) -> Result<Sample, String> {
    let (name_end, has_labels) = match line.find(['{', ' ']) {
        Some(i) => (i, line.as_bytes()[i] == b'{'),
        None => return Err("no value".into()),
    };
    let name = line[..name_end].to_string();
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if has_labels {
        let mut chars = rest[1..].char_indices().peekable();
        let body = &rest[1..];
        let end;
        loop {
            // label name
            let start = match chars.peek() {
                Some((i, '}')) => {
                    end = *i;
                    break;
                }
                Some((i, _)) => *i,
                None => return Err("unterminated labels".into()),
            };
            let mut eq = None;
            for (i, c) in chars.by_ref() {
                if c == '=' {
                    eq = Some(i);
                    break;
                }
            }
            let eq = eq.ok_or("label without '='")?;
            let key = body[start..eq].to_string();
            match chars.next() {
                Some((_, '"')) => {}
                _ => return Err("label value not quoted".into()),
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        other => return Err(format!("bad escape {other:?}")),
                    },
                    Some((_, '"')) => break,
                    Some((_, '\n')) => return Err("raw newline in value".into()),
                    Some((_, c)) => value.push(c),
                    None => return Err("unterminated value".into()),
                }
            }
            labels.insert(key, value);
            match chars.next() {
                Some((_, ',')) => {}
                Some((i, '}')) => {
                    end = i;
                    break;
                }
                other => return Err(format!("unexpected {other:?} after label value")),
            }
        }
        rest = &body[end + 1..];
    }
    let value_text = rest.trim();
    let value_text = value_text.split(' ').next().unwrap_or("");
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|e| format!("value {v:?}: {e}"))?,
    };
    Ok(Sample {
        name,
        labels,
        value,
    })
}
