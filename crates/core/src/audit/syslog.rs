//! Audit entries as syslog messages, for a SIEM: RFC 5424 messages framed by
//! octet counting (RFC 6587 §3.4.1) for syslog over TCP or TLS (RFC 5425).
//!
//! Rules:
//! - A message carries what a SIEM needs to trust and de-duplicate the
//!   stream without parsing the body: the entry's sequence number, hash and
//!   the hash it chains to, as structured data under keyhold's SD-ID.
//! - The body (MSG) is the entry's JSON exactly as the export writes it, so
//!   a stream and an export can be compared line by line. The caller hands
//!   it in: the JSON shape belongs to the API, not the core.
//! - Header fields hold printable US-ASCII only, as RFC 5424 requires;
//!   anything else becomes `?`, so no entry can forge a header or a frame.
//! - No I/O: the server's streamer writes the bytes.

use super::AuditEntry;

/// The SD-ID of keyhold's structured data. 32473 is the Private Enterprise
/// Number RFC 5612 reserves for documentation; an SD-ID with `@` must name
/// one, and keyhold has none of its own.
pub const SD_ID: &str = "keyhold@32473";

/// APP-NAME of every message.
pub const APP_NAME: &str = "keyhold";

/// Longest HOSTNAME RFC 5424 allows.
const MAX_HOSTNAME: usize = 255;
/// Longest MSGID RFC 5424 allows.
const MAX_MSGID: usize = 32;

/// A syslog facility (RFC 5424 §6.2.1), the PRI's upper part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Facility(u8);

/// The facilities by their usual names, in code order.
const FACILITIES: [&str; 24] = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];

impl Facility {
    /// `authpriv` (10): security messages that receivers keep apart and
    /// readable by administrators only, which is what an audit trail is.
    pub const AUTHPRIV: Self = Self(10);

    /// A facility by name (`authpriv`, `local0`…) or by code (0–23).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(code) = FACILITIES.iter().position(|name| *name == text) {
            return Ok(Self(code as u8));
        }
        match text.parse::<u8>() {
            Ok(code) if usize::from(code) < FACILITIES.len() => Ok(Self(code)),
            _ => Err(format!(
                "'{text}' is no syslog facility: name one of {} (or give its code, 0 to 23)",
                FACILITIES.join(", ")
            )),
        }
    }

    pub fn code(self) -> u8 {
        self.0
    }

    pub fn name(self) -> &'static str {
        FACILITIES.get(usize::from(self.0)).copied().unwrap_or("?")
    }
}

/// The severities keyhold uses (RFC 5424 §6.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// A refusal or failure: the entry records a reason.
    Warning = 4,
    /// Everything else: normal but significant, as audited actions are.
    Notice = 5,
}

impl Severity {
    /// Every refused or failed operation is recorded with a `reason` in
    /// its details (see `Keyhold::audit_refusal` and the job runner), and
    /// no success is: that is what a SIEM alerts on.
    pub fn of(entry: &AuditEntry) -> Self {
        match serde_json::from_str::<serde_json::Value>(&entry.details) {
            Ok(details) if details.get("reason").is_some() => Self::Warning,
            _ => Self::Notice,
        }
    }
}

/// MSGID: the summary's first word, its verb (`Added`, `Deleted`, `Failed`,
/// `Logged`, `Refused`, `Successfully`…), so a SIEM rule can select on it
/// without reading the body. `-` when the summary starts with no printable
/// word.
pub fn msgid(summary: &str) -> String {
    let word: String = summary
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(MAX_MSGID)
        .collect();
    if word.is_empty() { "-".into() } else { word }
}

/// A header field as RFC 5424 wants it: printable US-ASCII, bounded, `-`
/// when empty.
fn header_field(text: &str, max: usize) -> String {
    let field: String = text
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .take(max)
        .collect();
    if field.is_empty() { "-".into() } else { field }
}

/// An SD-PARAM value with `"`, `\` and `]` escaped (RFC 5424 §6.3.3).
pub fn escape_param_value(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Where the messages come from and how they are filed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyslogOrigin {
    pub facility: Facility,
    /// HOSTNAME: this node's name.
    pub hostname: String,
}

impl SyslogOrigin {
    /// One entry as an RFC 5424 message (no framing). `json` is the
    /// entry's export line, without its newline.
    pub fn message(&self, entry: &AuditEntry, json: &str) -> String {
        let severity = Severity::of(entry);
        let pri = u16::from(self.facility.code()) * 8 + severity as u16;
        format!(
            "<{pri}>1 {time} {host} {APP_NAME} - {msgid} [{SD_ID} seq=\"{seq}\" hash=\"{hash}\" prev_hash=\"{prev}\"] {json}",
            time = header_field(&entry.time, 64),
            host = header_field(&self.hostname, MAX_HOSTNAME),
            msgid = msgid(&entry.summary),
            seq = entry.seq,
            hash = escape_param_value(&hex::encode(entry.hash)),
            prev = escape_param_value(&hex::encode(entry.prev_hash)),
        )
    }

    /// The message framed for a TCP stream: its length in octets, a space,
    /// the message (RFC 6587 octet counting, also RFC 5425's framing), so
    /// a newline inside an entry can never split it.
    pub fn frame(&self, entry: &AuditEntry, json: &str) -> Vec<u8> {
        let message = self.message(entry, json);
        let mut framed = format!("{} ", message.len()).into_bytes();
        framed.extend_from_slice(message.as_bytes());
        framed
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn entry(seq: i64, summary: &str, details: &str) -> AuditEntry {
        AuditEntry {
            seq,
            time: "2026-12-05T20:31:05.123456Z".into(),
            users: "Admin1,Admin2".into(),
            summary: summary.into(),
            details: details.into(),
            archived: false,
            prev_hash: [1; 32],
            hash: [2; 32],
            mac: [3; 32],
        }
    }

    fn origin() -> SyslogOrigin {
        SyslogOrigin {
            facility: Facility::AUTHPRIV,
            hostname: "node-a".into(),
        }
    }

    /// An RFC 5424 message read back, as a receiver would: the header's
    /// fields, the structured data's parameters unescaped, and the body.
    #[derive(Debug, PartialEq)]
    struct Parsed {
        pri: u16,
        version: String,
        timestamp: String,
        hostname: String,
        app_name: String,
        procid: String,
        msgid: String,
        sd_id: String,
        params: Vec<(String, String)>,
        msg: String,
    }

    fn parse(message: &str) -> Result<Parsed, String> {
        let rest = message.strip_prefix('<').ok_or("no PRI")?;
        let (pri, rest) = rest.split_once('>').ok_or("PRI unclosed")?;
        let pri: u16 = pri.parse().map_err(|_| "PRI not a number")?;
        let mut header = rest.splitn(7, ' ');
        let mut next = || header.next().map(str::to_owned).ok_or("short header");
        let (version, timestamp, hostname, app_name, procid, msgid) =
            (next()?, next()?, next()?, next()?, next()?, next()?);
        let rest = next()?;
        for field in [&timestamp, &hostname, &app_name, &procid, &msgid] {
            if field.is_empty() || !field.chars().all(|c| c.is_ascii_graphic()) {
                return Err(format!("header field {field:?} is not PRINTUSASCII"));
            }
        }
        let rest = rest.strip_prefix('[').ok_or("no structured data")?;
        let (sd_id, mut rest) = rest.split_once(' ').ok_or("SD-ID unended")?;
        let mut params = Vec::new();
        loop {
            if let Some(after) = rest.strip_prefix("] ") {
                rest = after;
                break;
            }
            let trimmed = rest.strip_prefix(' ').unwrap_or(rest);
            let (name, value) = trimmed.split_once("=\"").ok_or("SD-PARAM without value")?;
            let mut unescaped = String::new();
            let mut chars = value.char_indices();
            let end = loop {
                match chars.next().ok_or("SD-PARAM value unclosed")? {
                    (_, '\\') => {
                        let (_, c) = chars.next().ok_or("dangling escape")?;
                        unescaped.push(c);
                    }
                    (i, '"') => break i,
                    (_, ']') => return Err("unescaped ] in a value".into()),
                    (_, c) => unescaped.push(c),
                }
            };
            params.push((name.to_owned(), unescaped));
            rest = &value[end + 1..];
        }
        Ok(Parsed {
            pri,
            version,
            timestamp,
            hostname,
            app_name,
            procid,
            msgid,
            sd_id: sd_id.to_owned(),
            params,
            msg: rest.to_owned(),
        })
    }

    #[test]
    fn a_success_is_a_notice_with_seq_and_hashes_in_structured_data() {
        let json = r#"{"seq":7,"summary":"Added HSM protected key group ig-demo"}"#;
        let message = origin().message(
            &entry(7, "Added HSM protected key group ig-demo", "{}"),
            json,
        );
        assert_eq!(
            message,
            format!(
                "<85>1 2026-12-05T20:31:05.123456Z node-a keyhold - Added [keyhold@32473 seq=\"7\" hash=\"{}\" prev_hash=\"{}\"] {json}",
                "02".repeat(32),
                "01".repeat(32)
            )
        );
        let framed = origin().frame(&entry(7, "Added x", "{}"), json);
        let text = String::from_utf8(framed).unwrap();
        let (len, rest) = text.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), rest.len());
    }

    #[test]
    fn a_refusal_is_a_warning() {
        let refused = entry(
            3,
            "Failed login for 'Admin1' using Password.",
            r#"{"reason":"wrong password"}"#,
        );
        assert_eq!(Severity::of(&refused), Severity::Warning);
        assert!(origin().message(&refused, "{}").starts_with("<84>1 "));
        let facility = Facility::parse("local3").unwrap();
        let origin = SyslogOrigin {
            facility,
            hostname: "h".into(),
        };
        assert!(
            origin
                .message(&entry(1, "Added", "{}"), "{}")
                .starts_with("<157>1 ")
        );
    }

    #[test]
    fn facilities_parse_by_name_or_code_and_others_are_refused_listing_them() {
        assert_eq!(Facility::parse("authpriv").unwrap(), Facility::AUTHPRIV);
        assert_eq!(Facility::parse("23").unwrap().name(), "local7");
        assert_eq!(Facility::parse("kern").unwrap().code(), 0);
        for bad in ["24", "local8", "", "-1"] {
            let err = Facility::parse(bad).unwrap_err();
            assert!(err.contains("authpriv") && err.contains("local7"), "{err}");
        }
    }

    #[test]
    fn sd_values_escape_quote_backslash_and_bracket() {
        assert_eq!(escape_param_value(r#"a"b\c]d"#), r#"a\"b\\c\]d"#);
        assert_eq!(escape_param_value("plain"), "plain");
    }

    #[test]
    fn header_fields_never_carry_spaces_or_control_characters() {
        assert_eq!(msgid("  \u{1b}[31mAdded x"), "[31mAdded");
        assert_eq!(msgid(""), "-");
        assert_eq!(msgid("Ünïcode"), "ncode");
        let origin = SyslogOrigin {
            facility: Facility::AUTHPRIV,
            hostname: "bad host\n".into(),
        };
        let parsed = parse(&origin.message(&entry(1, "x", "{}"), "{}")).unwrap();
        assert_eq!(parsed.hostname, "bad?host?");
    }

    proptest! {
        /// Any entry becomes a message a receiver reads back field for
        /// field: seq and hashes from the structured data, the body intact.
        #[test]
        fn any_entry_parses_back(
            seq in 1i64..i64::MAX,
            summary in any::<String>(),
            reason in proptest::option::of(any::<String>()),
            hostname in any::<String>(),
            json in "[^\n]*",
            facility in 0u8..24,
            hash in any::<[u8; 32]>(),
        ) {
            let details = match &reason {
                Some(r) => serde_json::json!({ "reason": r }).to_string(),
                None => "{}".into(),
            };
            let mut e = entry(seq, &summary, &details);
            e.hash = hash;
            let origin = SyslogOrigin { facility: Facility(facility), hostname };
            let framed = String::from_utf8(origin.frame(&e, &json)).unwrap();
            let (len, message) = framed.split_once(' ').unwrap();
            prop_assert_eq!(len.parse::<usize>().unwrap(), message.len());
            let parsed = parse(message).map_err(TestCaseError::fail)?;
            let severity = if reason.is_some() { 4 } else { 5 };
            prop_assert_eq!(parsed.pri, u16::from(facility) * 8 + severity);
            prop_assert_eq!(parsed.version, "1");
            prop_assert_eq!(parsed.timestamp, e.time.clone());
            prop_assert_eq!(parsed.app_name, APP_NAME);
            prop_assert_eq!(parsed.procid, "-");
            prop_assert!(parsed.msgid.len() <= MAX_MSGID);
            prop_assert!(parsed.hostname.len() <= MAX_HOSTNAME);
            prop_assert_eq!(parsed.sd_id, SD_ID);
            prop_assert_eq!(parsed.params, vec![
                ("seq".to_owned(), seq.to_string()),
                ("hash".to_owned(), hex::encode(hash)),
                ("prev_hash".to_owned(), hex::encode(e.prev_hash)),
            ]);
            prop_assert_eq!(parsed.msg, json);
        }

        /// Escaped values read back unchanged and never end the value or the
        /// element early.
        #[test]
        fn any_param_value_round_trips(value in any::<String>()) {
            let message = format!("<1>1 t h a p m [x@1 v=\"{}\"] body", escape_param_value(&value));
            let parsed = parse(&message).map_err(TestCaseError::fail)?;
            prop_assert_eq!(&parsed.params[0].1, &value);
            prop_assert_eq!(parsed.msg, "body");
        }
    }
}
