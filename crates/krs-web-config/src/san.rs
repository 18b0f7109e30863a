//! `client_allowed_sans`: reads the Subject Alternative Names of a client certificate and
//! matches them exactly against the configured list, as exporter-toolkit does.
//!
//! A small bounds-checked DER walker is enough here: only the path
//! `Certificate → TBSCertificate → [3] extensions → subjectAltName` is followed, and every
//! length is checked against the bytes that remain, so a hostile certificate (with
//! `RequireAnyClientCert` it is not chain-verified) can only make the match fail.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// DER tags used on the way to the SAN extension.
const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
const EXTENSIONS: u8 = 0xA3;
/// id-ce-subjectAltName, 2.5.29.17.
const SAN_OID: &[u8] = &[0x55, 0x1D, 0x11];
/// GeneralName choices that exporter-toolkit matches (context-specific, primitive).
const RFC822_NAME: u8 = 0x81;
const DNS_NAME: u8 = 0x82;
const URI: u8 = 0x86;
const IP_ADDRESS: u8 = 0x87;

/// The SAN values of `cert_der` as strings (DNS names, e-mail addresses, URIs, and IP
/// addresses in their canonical text form). `None` if the certificate cannot be parsed.
pub(super) fn subject_alt_names(cert_der: &[u8]) -> Option<Vec<String>> {
    let (tag, cert, _) = read_tlv(cert_der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, mut tbs, _) = read_tlv(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut names = Vec::new();
    while !tbs.is_empty() {
        let (tag, value, rest) = read_tlv(tbs)?;
        tbs = rest;
        if tag == EXTENSIONS {
            let (tag, mut exts, _) = read_tlv(value)?;
            if tag != SEQUENCE {
                return None;
            }
            while !exts.is_empty() {
                let (tag, ext, rest) = read_tlv(exts)?;
                exts = rest;
                if tag != SEQUENCE {
                    return None;
                }
                if let Some(general_names) = san_extension_value(ext)? {
                    names.extend(general_names_to_strings(general_names)?);
                }
            }
        }
    }
    Some(names)
}

/// Whether any SAN of `cert_der` is exactly one of `allowed`.
pub(super) fn matches_any(cert_der: &[u8], allowed: &[String]) -> bool {
    subject_alt_names(cert_der)
        .is_some_and(|names| names.iter().any(|n| allowed.iter().any(|a| a == n)))
}

/// For an `Extension` body: `Some(GeneralNames bytes)` if it is the SAN extension.
fn san_extension_value(ext: &[u8]) -> Option<Option<&[u8]>> {
    let (tag, oid, mut rest) = read_tlv(ext)?;
    if tag != OID {
        return None;
    }
    if oid != SAN_OID {
        return Some(None);
    }
    let (mut tag, mut value, after) = read_tlv(rest)?;
    if tag == BOOLEAN {
        rest = after;
        (tag, value, _) = read_tlv(rest)?;
    }
    if tag != OCTET_STRING {
        return None;
    }
    let (tag, general_names, _) = read_tlv(value)?;
    (tag == SEQUENCE).then_some(Some(general_names))
}

fn general_names_to_strings(mut names: &[u8]) -> Option<Vec<String>> {
    let mut out = Vec::new();
    while !names.is_empty() {
        let (tag, value, rest) = read_tlv(names)?;
        names = rest;
        match tag {
            RFC822_NAME | DNS_NAME | URI => {
                // IA5String: ASCII. Anything else cannot equal a configured name; skip it.
                if let Ok(s) = std::str::from_utf8(value) {
                    if s.is_ascii() {
                        out.push(s.to_owned());
                    }
                }
            }
            IP_ADDRESS => {
                let ip = match value.len() {
                    4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(value).ok()?)),
                    16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(value).ok()?)),
                    _ => continue,
                };
                out.push(ip.to_string());
            }
            // otherName, x400Address, directoryName, ediPartyName, registeredID: not matched.
            _ => {}
        }
    }
    Some(out)
}

/// Reads one DER TLV: `(tag, value, rest)`. Only single-byte tags and definite lengths of up
/// to four length bytes occur in certificates; anything else is refused.
fn read_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, input) = input.split_first()?;
    if tag & 0x1F == 0x1F {
        return None;
    }
    let (&first, mut input) = input.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7F);
        if count == 0 || count > 4 || input.len() < count {
            return None;
        }
        let (len_bytes, rest) = input.split_at(count);
        input = rest;
        len_bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    if input.len() < len {
        return None;
    }
    let (value, rest) = input.split_at(len);
    Some((tag, value, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, SanType};

    fn cert_with(sans: Vec<SanType>) -> Vec<u8> {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("empty SAN list");
        params.subject_alt_names = sans;
        let key = KeyPair::generate().expect("key generation");
        params
            .self_signed(&key)
            .expect("self-signed")
            .der()
            .to_vec()
    }

    #[test]
    fn reads_dns_email_uri_and_ip_names_from_a_certificate() {
        let der = cert_with(vec![
            SanType::DnsName("scraper.example".try_into().unwrap()),
            SanType::Rfc822Name("ops@example.org".try_into().unwrap()),
            SanType::URI("spiffe://example.org/prometheus".try_into().unwrap()),
            SanType::IpAddress("192.0.2.7".parse().unwrap()),
            SanType::IpAddress("2001:db8::1".parse().unwrap()),
        ]);
        let names = subject_alt_names(&der).expect("parsable certificate");
        assert_eq!(
            names,
            [
                "scraper.example",
                "ops@example.org",
                "spiffe://example.org/prometheus",
                "192.0.2.7",
                "2001:db8::1"
            ]
        );
    }

    #[test]
    fn matching_is_exact_and_needs_one_listed_name() {
        let der = cert_with(vec![SanType::DnsName("a.example".try_into().unwrap())]);
        assert!(matches_any(&der, &["x".into(), "a.example".into()]));
        assert!(!matches_any(&der, &["A.example.".into()]));
        assert!(!matches_any(&der, &["*.example".into()]));
    }

    #[test]
    fn a_certificate_without_sans_matches_nothing() {
        let der = cert_with(vec![]);
        assert_eq!(subject_alt_names(&der), Some(vec![]));
        assert!(!matches_any(&der, &["a.example".into()]));
    }

    #[test]
    fn truncated_or_garbage_input_is_refused_without_panicking() {
        let der = cert_with(vec![SanType::DnsName("a.example".try_into().unwrap())]);
        for len in 0..der.len() {
            // Any prefix must either fail to parse or parse; it must never panic.
            let _ = subject_alt_names(&der[..len]);
        }
        assert_eq!(
            subject_alt_names(&[0x30, 0x84, 0xFF, 0xFF, 0xFF, 0xFF]),
            None
        );
        assert_eq!(subject_alt_names(&[0x1F, 0x01, 0x00]), None);
        assert!(!matches_any(b"not a certificate", &["a.example".into()]));
    }
}
