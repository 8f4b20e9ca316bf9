//! Quirk: rsip 0.4 mis-handles comma-separated Via/Contact/Route/Record-Route values.
//!
//! RFC 3261 §7.3.1 makes `Via: a, b` equal to two Via lines. rsip keeps one `Header::Via`
//! holding `a, b`; its typed Via tokenizer silently drops everything after the first value
//! (a rewrite would lose `b`), and its typed Contact tokenizer fails on `<a>, <b>`. A
//! registrar may list every binding of an AOR in one Contact line of a REGISTER 200 OK
//! (RFC 3261 §10.3 step 8), and any hop may combine Vias in one line. We split those headers
//! into one line per value (commas inside quotes or `<...>` are kept).

use crate::sip::uri::split_top_level;

/// The values of one header line, split when the header is a comma-list of addresses.
pub(crate) fn split<'a>(name: &str, value: &'a str) -> Vec<&'a str> {
    let listed = ["Via", "Contact", "Route", "Record-Route"]
        .iter()
        .any(|n| n.eq_ignore_ascii_case(name));
    if !listed || !value.contains(',') {
        return vec![value];
    }
    split_top_level(value, b',')
        .into_iter()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsip::headers::{ToTypedHeader, UntypedHeader};

    #[test]
    fn rsip_typed_via_drops_second_value() {
        // The proof: rsip's typed Via keeps only the first of two comma-separated values.
        let via = rsip::headers::Via::new(
            "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa, SIP/2.0/TCP 192.0.2.2;branch=z9hG4bKb",
        );
        let typed = via.typed().unwrap();
        assert!(!typed.to_string().contains("192.0.2.2"));
    }

    #[test]
    fn rsip_typed_contact_rejects_list() {
        let c = rsip::headers::Contact::new("<sip:a@192.0.2.1>;expires=60, <sip:b@192.0.2.2>");
        assert!(c.typed().is_err());
    }

    #[test]
    fn splits_only_address_lists() {
        assert_eq!(
            split("Via", "a;branch=1, b;branch=2"),
            vec!["a;branch=1", "b;branch=2"]
        );
        assert_eq!(split("Allow", "INVITE, ACK"), vec!["INVITE, ACK"]);
        assert_eq!(
            split("Contact", "\"x, y\" <sip:a@b>, <sip:c@d>"),
            vec!["\"x, y\" <sip:a@b>", "<sip:c@d>"]
        );
    }
}
