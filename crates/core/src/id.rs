//! Ids keyhold gives keys and jobs, and KMS key ids: UUIDs, accepted only in
//! the one form keyhold and AWS print them (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`).
//! `uuid`'s parser also takes `{…}`, `urn:uuid:…` and the form without
//! hyphens; accepting those would let one object go by several names (in
//! URLs, audit entries and the CLI) that match nothing when compared as text.

/// The UUID `raw` names in its hyphenated form (either case), or `None`.
pub fn parse_uuid(raw: &str) -> Option<uuid::Uuid> {
    let hyphenated = raw.len() == 36
        && raw
            .bytes()
            .enumerate()
            .all(|(i, b)| matches!(i, 8 | 13 | 18 | 23) == (b == b'-'));
    if hyphenated {
        uuid::Uuid::try_parse(raw).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ID: &str = "5b9f4a86-4a1d-4c3e-9b0e-2f0c1e7d9a11";

    #[test]
    fn only_the_hyphenated_form_is_an_id() {
        assert_eq!(parse_uuid(ID).unwrap().hyphenated().to_string(), ID);
        assert_eq!(
            parse_uuid(&ID.to_uppercase()).unwrap(),
            parse_uuid(ID).unwrap()
        );
        for other in [
            format!("{{{ID}}}"),
            format!("urn:uuid:{ID}"),
            ID.replace('-', ""),
            format!(" {ID}"),
            format!("{ID}\n"),
            ID.replacen('-', "", 1) + "-",
            ID.replace('a', "g"),
            String::new(),
        ] {
            assert_eq!(parse_uuid(&other), None, "{other}");
        }
    }

    proptest! {
        #[test]
        fn any_uuid_parses_only_from_its_hyphenated_text(bytes in any::<[u8; 16]>()) {
            let id = uuid::Uuid::from_bytes(bytes);
            prop_assert_eq!(parse_uuid(&id.hyphenated().to_string()), Some(id));
            prop_assert_eq!(parse_uuid(&id.braced().to_string()), None);
            prop_assert_eq!(parse_uuid(&id.urn().to_string()), None);
            prop_assert_eq!(parse_uuid(&id.simple().to_string()), None);
        }

        #[test]
        fn never_panics(raw in "\\PC{0,48}") {
            let _ = parse_uuid(&raw);
        }
    }
}
