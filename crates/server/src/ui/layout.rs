//! The page shell: header with the session's identities, the navigation of
//! the reference appliance, and notices.

use keyhold_core::identity::{Operation, Session};
use maud::{DOCTYPE, Markup, html};

use super::session::UiSession;

/// The screens, as the navigation groups them.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Identities,
    Credentials,
    Keys,
    Drift,
    Xks,
    Jobs,
    Audit,
    Approvals,
    Configuration,
    Backups,
}

/// A screen's entry: which it is, its label, its address.
type Entry = (Nav, &'static str, &'static str);

const NAVIGATION: [(&str, &[Entry]); 4] = [
    (
        "Identity Management",
        &[
            (Nav::Identities, "Identities", "/ui/identities"),
            (Nav::Credentials, "Cloud Credentials", "/ui/credentials"),
        ],
    ),
    (
        "Key Management",
        &[
            (Nav::Keys, "Keys", "/ui/keys"),
            (Nav::Drift, "Drift", "/ui/drift"),
            (Nav::Xks, "External Key Stores", "/ui/xks"),
        ],
    ),
    (
        "Logging and Reporting",
        &[
            (Nav::Jobs, "Jobs", "/ui/jobs"),
            (Nav::Audit, "Audit Logs", "/ui/audit"),
        ],
    ),
    (
        "Administration",
        &[
            (Nav::Approvals, "Approvals", "/ui/approvals"),
            (Nav::Configuration, "Configuration", "/ui/configuration"),
            (Nav::Backups, "Backups", "/ui/backups"),
        ],
    ),
];

/// A message at the top of a page: the outcome of the last action.
pub enum Notice {
    Done(String),
    Failed(String),
}

pub fn notice(notice: Option<&Notice>) -> Markup {
    html! {
        @match notice {
            Some(Notice::Done(text)) => p.notice.ok role="status" { (text) },
            Some(Notice::Failed(text)) => p.notice.error role="alert" { (text) },
            None => {}
        }
    }
}

/// `<head>` and the document around a body.
pub fn document(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — keyhold" }
                link rel="stylesheet" href="/ui/assets/app.css";
                script src="/ui/assets/app.js" defer {}
            }
            body { (body) }
        }
    }
}

/// The hidden field every state-changing form carries.
pub fn csrf_field(csrf: &str) -> Markup {
    html! { input type="hidden" name=(super::session::CSRF_FIELD) value=(csrf); }
}

/// Who is in the session, always visible.
fn session_header(session: &Session, csrf: &str) -> Markup {
    let count = session.identities.len();
    html! {
        header.top {
            a.brand href="/ui/keys" { "keyhold" }
            div.who #session-users {
                span.label { "In this session:" }
                ul {
                    @for identity in &session.identities {
                        li { strong { (identity.name.as_str()) } " (" (identity.role.as_str().replace('_', " ")) ")" }
                    }
                }
                @if count >= 2 {
                    span.badge.dual { "Dual control: " (count) " officers" }
                } @else {
                    span.badge.single { "One officer" }
                }
            }
            div.session-actions {
                a.button.secondary href="/ui/login" { "Add officer" }
                form method="post" action="/ui/logout" {
                    (csrf_field(csrf))
                    button.secondary type="submit" { "Log out" }
                }
            }
        }
    }
}

/// What the navigation counts beside its entries.
#[derive(Clone, Copy, Default)]
struct Counts {
    /// Approval requests waiting for the session.
    awaiting_you: Option<usize>,
    /// Open drift findings, every group's.
    drift_open: Option<u64>,
}

/// What the navigation says of what waits: `Approvals (2)` for the
/// approval requests the session may answer, `Drift (3)` for the open drift
/// findings, each named for screen readers as the sentence.
fn nav_label(nav: Nav, label: &str, counts: Counts) -> (String, Option<String>) {
    let count = match nav {
        Nav::Approvals => counts.awaiting_you.map(|n| n as u64),
        Nav::Drift => counts.drift_open,
        _ => None,
    };
    let sentence = match (nav, count) {
        (_, None | Some(0)) => None,
        (Nav::Approvals, Some(1)) => Some("1 request waits for your approval".to_owned()),
        (Nav::Approvals, Some(n)) => Some(format!("{n} requests wait for your approval")),
        (_, Some(1)) => Some("1 open drift finding".to_owned()),
        (_, Some(n)) => Some(format!("{n} open drift findings")),
    };
    match (count, sentence) {
        (Some(count), Some(sentence)) => (
            format!("{label} ({count})"),
            Some(format!("{label} ({count}): {sentence}")),
        ),
        _ => (label.to_owned(), None),
    }
}

/// A page of a logged-in session.
pub fn page(
    ui: &UiSession,
    current: Nav,
    title: &str,
    flash: Option<&Notice>,
    body: Markup,
) -> Markup {
    document(
        title,
        html! {
            a.skip href="#main" { "Skip to content" }
            (session_header(&ui.session, &ui.csrf))
            div.shell {
                nav.side aria-label="Main" {
                    @for (section, items) in NAVIGATION {
                        div.nav-section {
                        h2 { (section) }
                        ul {
                            @for (nav, label, href) in items {
                                @let (text, name) = nav_label(*nav, label, Counts { awaiting_you: ui.awaiting_you, drift_open: ui.drift_open });
                                li {
                                    @if *nav == current {
                                        a href=(href) aria-current="page" aria-label=[name] { (text) }
                                    } @else {
                                        a href=(href) aria-label=[name] { (text) }
                                    }
                                }
                            }
                        }
                        }
                    }
                }
                main #main {
                    h1 { (title) }
                    (notice(flash))
                    (body)
                }
            }
        },
    )
}

/// Says before an action is attempted whether the session can do it: a
/// preview only, the core decides again when the action is sent.
pub fn needs(ui: &UiSession, op: Operation, dual_control_on: bool) -> Markup {
    let session = &ui.session;
    if let Some(class) = op.class
        && let keyhold_core::approval::Policy::Quorum(quorum) =
            ui.approval_policies.for_class(class)
        && session.authorize(op, false).is_ok()
    {
        return html! {
            p.hint.quorum role="note" data-approval="required" {
                strong { "Sent for approval. " }
                "A policy holds " (op.label) " to a quorum: it runs once "
                (quorum.approvals) " " (quorum.role.as_str().replace('_', " "))
                (if quorum.approvals == 1 { "" } else { "s" })
                " other than you approve it from their own sessions, within "
                (quorum.expires_after_hours) " hours."
            }
        };
    }
    match session.authorize(op, dual_control_on) {
        Ok(()) if op.dual_control && dual_control_on => html! {
            p.hint.dual { "Dual control: " (op.label) " needs two identities; this session has them." }
        },
        Ok(()) => html! {},
        Err(keyhold_core::CoreError::DualControlRequired { .. }) => html! {
            p.notice.warn role="note" data-dual-control="required" {
                strong { "Needs two identities. " }
                "Dual control is on: " (op.label) " needs a second officer in this session. "
                a href="/ui/login" { "Add a second officer" } " first; keyhold refuses it otherwise."
            }
        },
        Err(e) => html! {
            p.notice.warn role="note" { (e.to_string()) }
        },
    }
}

/// A time as people read it (`2026-11-29 09:00:00 UTC`), with the exact
/// RFC 3339 value kept in `datetime`. The page's script formats the same way.
/// A narrow column may break it after the day, never before `UTC`.
pub fn when(raw: &str) -> Markup {
    html! { time datetime=(raw) { (readable_time(raw)) } }
}

fn readable_time(raw: &str) -> String {
    match (raw.get(..10), raw.get(11..19)) {
        (Some(day), Some(clock)) if raw.ends_with('Z') => format!("{day} {clock}\u{a0}UTC"),
        _ => raw.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::{Counts, Nav, nav_label};

    fn waiting(n: usize) -> Counts {
        Counts {
            awaiting_you: Some(n),
            drift_open: Some(4),
        }
    }

    #[test]
    fn the_approvals_entry_counts_what_waits_for_the_session() {
        assert_eq!(
            nav_label(Nav::Approvals, "Approvals", waiting(2)),
            (
                "Approvals (2)".to_owned(),
                Some("Approvals (2): 2 requests wait for your approval".to_owned())
            )
        );
        assert_eq!(
            nav_label(Nav::Approvals, "Approvals", waiting(1))
                .1
                .as_deref(),
            Some("Approvals (1): 1 request waits for your approval")
        );
        assert_eq!(
            nav_label(Nav::Approvals, "Approvals", waiting(0)),
            ("Approvals".to_owned(), None)
        );
        assert_eq!(
            nav_label(Nav::Keys, "Keys", waiting(3)),
            ("Keys".to_owned(), None)
        );
    }

    #[test]
    fn the_drift_entry_counts_the_open_findings() {
        let open = |n| Counts {
            awaiting_you: Some(5),
            drift_open: Some(n),
        };
        assert_eq!(
            nav_label(Nav::Drift, "Drift", open(3)),
            (
                "Drift (3)".to_owned(),
                Some("Drift (3): 3 open drift findings".to_owned())
            )
        );
        assert_eq!(
            nav_label(Nav::Drift, "Drift", open(1)).1.as_deref(),
            Some("Drift (1): 1 open drift finding")
        );
        assert_eq!(
            nav_label(Nav::Drift, "Drift", open(0)),
            ("Drift".to_owned(), None)
        );
        assert_eq!(
            nav_label(Nav::Drift, "Drift", Counts::default()),
            ("Drift".to_owned(), None)
        );
    }
    #[test]
    fn times_read_as_utc_to_the_second() {
        assert_eq!(
            super::readable_time("2026-11-29T09:00:00.000000Z"),
            "2026-11-29 09:00:00\u{a0}UTC"
        );
        assert_eq!(super::readable_time("soon"), "soon");
    }
}
