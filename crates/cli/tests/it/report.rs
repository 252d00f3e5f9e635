//! Figures for `docs/reliability.md`. A test that proves a promise with
//! numbers (crash points recovered, faults injected, hostile cases refused)
//! writes them as a Markdown fragment into `$KEYHOLD_REPORT_DIR`;
//! `scripts/reliability-report` assembles the fragments of one run of
//! `./scripts/test` into the document. Outside that run nothing is written.

use std::path::PathBuf;

/// The backend pair the suite runs on, as a reader names it.
pub fn backends() -> String {
    let database = match std::env::var(keyhold_store::testing::BACKEND_VAR).as_deref() {
        Ok("postgres") => "PostgreSQL",
        _ => "SQLite",
    };
    let keystore = match std::env::var("KEYHOLD_TEST_KEYSTORE").as_deref() {
        Ok("pkcs11") => "PKCS#11 (SoftHSM2)",
        _ => "software keystore",
    };
    format!("{database}, {keystore}")
}

/// Writes one section of the report: `order` sorts sections, `title` heads
/// it (the backends are added), `body` is Markdown.
pub fn section(order: u8, title: &str, body: &str) {
    let Some(dir) = std::env::var_os("KEYHOLD_REPORT_DIR").map(PathBuf::from) else {
        return;
    };
    let backends = backends();
    let slug: String = format!("{title} {backends}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    std::fs::create_dir_all(&dir).unwrap();
    let text = format!("## {title} ({backends})\n\n{}\n", body.trim_end());
    std::fs::write(dir.join(format!("{order:02}-{slug}.md")), text).unwrap();
}
