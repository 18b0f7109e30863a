//! The Go `crypto/tls` vocabulary of the web-config format mapped onto rustls with the ring
//! provider: `client_auth_type`, `min_version`/`max_version`, `cipher_suites` and
//! `curve_preferences`. Names rustls cannot honour are refused with the reason and the
//! supported alternatives.

use rustls::crypto::{ring as provider, SupportedKxGroup};
use rustls::SupportedCipherSuite;

/// Go's names of the TLS 1.3 suites, which Go lists but does not let be configured.
const GO_TLS13_SUITES: &[&str] = &[
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// Go `crypto/tls` curve names that rustls' ring provider lacks.
const UNSUPPORTED_CURVES: &[&str] = &["CurveP521", "X25519MLKEM768"];

/// `client_auth_type`: whether and how client certificates are requested and checked. The
/// names and meanings are Go's `tls.ClientAuthType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// No certificate is requested (the default).
    NoClientCert,
    /// A certificate is requested but neither required nor verified.
    RequestClientCert,
    /// A certificate is required but not verified against a CA (the client still proves it
    /// holds the key).
    RequireAnyClientCert,
    /// A certificate is optional; one that is sent must chain to the client CA.
    VerifyClientCertIfGiven,
    /// A certificate chaining to the client CA is required: real mutual TLS.
    RequireAndVerifyClientCert,
}

impl ClientAuth {
    /// The name as written in the web-config file.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuth::NoClientCert => "NoClientCert",
            ClientAuth::RequestClientCert => "RequestClientCert",
            ClientAuth::RequireAnyClientCert => "RequireAnyClientCert",
            ClientAuth::VerifyClientCertIfGiven => "VerifyClientCertIfGiven",
            ClientAuth::RequireAndVerifyClientCert => "RequireAndVerifyClientCert",
        }
    }

    pub(super) fn parse(s: &str) -> Option<ClientAuth> {
        Some(match s {
            "NoClientCert" => ClientAuth::NoClientCert,
            "RequestClientCert" => ClientAuth::RequestClientCert,
            // "RequireClientCert" is exporter-toolkit's backwards-compatible alias.
            "RequireAnyClientCert" | "RequireClientCert" => ClientAuth::RequireAnyClientCert,
            "VerifyClientCertIfGiven" => ClientAuth::VerifyClientCertIfGiven,
            "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerifyClientCert,
            _ => return None,
        })
    }
}

/// A TLS protocol version that rustls implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

impl TlsVersion {
    /// The name as written in the web-config file.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "TLS12",
            TlsVersion::Tls13 => "TLS13",
        }
    }

    pub(super) fn parse(s: &str) -> Result<TlsVersion, String> {
        match s {
            "TLS12" => Ok(TlsVersion::Tls12),
            "TLS13" => Ok(TlsVersion::Tls13),
            "TLS10" | "TLS11" => Err(format!(
                "{s} is not supported: rustls implements TLS 1.2 and 1.3 only; use TLS12 or TLS13"
            )),
            _ => Err(format!("expected TLS12 or TLS13, found {s:?}")),
        }
    }
}

/// Resolves Go cipher-suite names against the ring provider's TLS 1.2 suites.
pub(super) fn cipher_suites(names: Vec<String>) -> Result<Vec<SupportedCipherSuite>, String> {
    let available: Vec<SupportedCipherSuite> = provider::ALL_CIPHER_SUITES
        .iter()
        .copied()
        .filter(|s| matches!(s, SupportedCipherSuite::Tls12(_)))
        .collect();
    let name_of = |s: &SupportedCipherSuite| s.suite().as_str().unwrap_or("?");
    let mut out: Vec<SupportedCipherSuite> = Vec::with_capacity(names.len());
    for name in names {
        if let Some(suite) = available.iter().find(|s| name_of(s) == name) {
            if out.iter().any(|s| name_of(s) == name) {
                return Err(format!("{name} is listed twice"));
            }
            out.push(*suite);
        } else if GO_TLS13_SUITES.contains(&name.as_str()) {
            return Err(format!(
                "{name} is a TLS 1.3 suite; TLS 1.3 suites are not configurable (all are \
                 enabled), list only TLS 1.2 suites"
            ));
        } else {
            let supported: Vec<&str> = available.iter().map(name_of).collect();
            return Err(format!(
                "{name} is not supported (rustls implements no CBC or RSA key-exchange suites); \
                 supported: {}",
                supported.join(", ")
            ));
        }
    }
    Ok(out)
}

/// Resolves Go curve names to rustls key-exchange groups, keeping the order.
pub(super) fn curves(names: Vec<String>) -> Result<Vec<&'static dyn SupportedKxGroup>, String> {
    use provider::kx_group::{SECP256R1, SECP384R1, X25519};
    let known: [(&str, &'static dyn SupportedKxGroup); 3] = [
        ("X25519", X25519),
        ("CurveP256", SECP256R1),
        ("CurveP384", SECP384R1),
    ];
    let supported = || known.map(|(n, _)| n).join(", ");
    let mut out: Vec<&'static dyn SupportedKxGroup> = Vec::with_capacity(names.len());
    for name in names {
        let Some((_, group)) = known.iter().find(|(n, _)| *n == name) else {
            return Err(if UNSUPPORTED_CURVES.contains(&name.as_str()) {
                format!(
                    "{name} is not supported by rustls; supported: {}",
                    supported()
                )
            } else {
                format!("unknown curve {name:?}; supported: {}", supported())
            });
        };
        if out.iter().any(|g| g.name() == group.name()) {
            return Err(format!("{name} is listed twice"));
        }
        out.push(*group);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn go_names_of_tls12_aead_suites_resolve_in_the_given_order() {
        let suites = cipher_suites(strings(&[
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        ]))
        .expect("both supported");
        let names: Vec<_> = suites.iter().map(|s| s.suite().as_str()).collect();
        assert_eq!(
            names,
            [
                Some("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"),
                Some("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256")
            ]
        );
    }

    #[test]
    fn cbc_tls13_unknown_and_repeated_suites_are_refused_with_the_reason() {
        let err = cipher_suites(strings(&["TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"])).unwrap_err();
        assert!(
            err.contains("not supported") && err.contains("supported: TLS_"),
            "{err}"
        );
        let err = cipher_suites(strings(&["TLS_AES_128_GCM_SHA256"])).unwrap_err();
        assert!(err.contains("TLS 1.3 suite"), "{err}");
        let err = cipher_suites(strings(&[
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        ]))
        .unwrap_err();
        assert!(err.contains("twice"), "{err}");
    }

    #[test]
    fn go_curve_names_map_to_rustls_groups_and_p521_is_refused() {
        let groups = curves(strings(&["CurveP384", "X25519"])).expect("supported");
        let names: Vec<_> = groups.iter().map(|g| g.name()).collect();
        assert_eq!(
            names,
            [rustls::NamedGroup::secp384r1, rustls::NamedGroup::X25519]
        );
        let err = curves(strings(&["CurveP521"])).unwrap_err();
        assert!(err.contains("not supported by rustls"), "{err}");
        let err = curves(strings(&["P-256"])).unwrap_err();
        assert!(
            err.contains("unknown curve") && err.contains("CurveP256"),
            "{err}"
        );
    }

    #[test]
    fn tls_versions_parse_and_old_versions_are_refused_clearly() {
        assert_eq!(TlsVersion::parse("TLS13"), Ok(TlsVersion::Tls13));
        let err = TlsVersion::parse("TLS10").unwrap_err();
        assert!(
            err.contains("rustls implements TLS 1.2 and 1.3 only"),
            "{err}"
        );
        assert!(TlsVersion::parse("tls12").is_err());
    }
}
