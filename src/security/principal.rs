//! Principals: who a connection is, as Kafka names it (`User:alice`). A connection on a
//! PLAINTEXT listener, or on an SSL listener without a client certificate, is
//! `User:ANONYMOUS`; SASL gives `User:<name>`; a client certificate gives `User:` and its
//! subject in RFC 2253 form, as Kafka's default principal builder does
//! (`ssl.principal.mapping.rules=DEFAULT`: `X500Principal.getName()`).

use std::fmt;

/// A principal: its type (`User`) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KafkaPrincipal {
    pub principal_type: String,
    pub name: String,
}

pub const USER_TYPE: &str = "User";

impl KafkaPrincipal {
    pub fn user(name: impl Into<String>) -> Self {
        Self {
            principal_type: USER_TYPE.to_string(),
            name: name.into(),
        }
    }

    pub fn anonymous() -> Self {
        Self::user("ANONYMOUS")
    }

    /// Parses `Type:name` (the name may contain ':'), as in `super.users` and ACL bindings.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.split_once(':') {
            Some((t, n)) if !t.is_empty() && !n.is_empty() => Ok(Self {
                principal_type: t.to_string(),
                name: n.to_string(),
            }),
            _ => Err(format!(
                "{text:?} is not a principal of the form Type:name (e.g. User:alice)"
            )),
        }
    }

    /// The principal named by a client certificate (DER): `User:` + its subject DN in RFC 2253
    /// form, most specific attribute first (`CN=alice,OU=test,O=gregor`).
    pub fn from_certificate(der: &[u8]) -> Result<Self, String> {
        use x509_parser::prelude::*;
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| format!("unreadable client certificate: {e}"))?;
        Ok(Self::user(rfc2253(cert.subject())))
    }
}

impl fmt::Display for KafkaPrincipal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.principal_type, self.name)
    }
}

/// RFC 2253 keywords Java prints by name; other attribute types print as their OID.
fn keyword(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

/// Escapes an attribute value as RFC 2253 section 2.4 says.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn rfc2253(name: &x509_parser::x509::X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    let oid = atv.attr_type().to_id_string();
                    match (keyword(&oid), atv.as_str()) {
                        (Some(k), Ok(v)) => format!("{k}={}", escape(v)),
                        // Unknown types (and values that are not strings) print as their OID
                        // and the hex of the value's DER, as Java does.
                        _ => {
                            let hex: String = atv
                                .attr_value()
                                .as_bytes()
                                .iter()
                                .map(|b| format!("{b:02x}"))
                                .collect();
                            format!("{oid}=#{hex}")
                        }
                    }
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    // DER lists the most general RDN first; RFC 2253 the most specific.
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let p = KafkaPrincipal::parse("User:CN=alice,O=x").expect("valid");
        assert_eq!(p.principal_type, "User");
        assert_eq!(p.name, "CN=alice,O=x");
        assert_eq!(p.to_string(), "User:CN=alice,O=x");
        assert!(KafkaPrincipal::parse("alice").is_err());
        assert!(KafkaPrincipal::parse("User:").is_err());
        assert_eq!(KafkaPrincipal::anonymous().to_string(), "User:ANONYMOUS");
    }

    #[test]
    fn certificate_subject_in_rfc2253_order() {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::OrganizationName, "gregor");
        dn.push(rcgen::DnType::OrganizationalUnitName, "test");
        dn.push(rcgen::DnType::CommonName, "alice, the \"first\"");
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        let p = KafkaPrincipal::from_certificate(cert.der()).expect("principal");
        assert_eq!(
            p.to_string(),
            r#"User:CN=alice\, the \"first\",OU=test,O=gregor"#
        );
        assert!(KafkaPrincipal::from_certificate(b"not a certificate").is_err());
    }
}
