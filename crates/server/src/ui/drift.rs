//! *Key Management → Drift*: where AWS no longer holds what keyhold's
//! record says. Every key group with its last check, *Check all* and each
//! group's *Check now*; each group's open findings (and, on request, its
//! cleared ones); and each group's reconcile plan with *Apply plan*.
//!
//! Reads and actions are the API's operations (`crate::operations::drift`)
//! with the browser's session: who may check, dual control or the approval
//! policy of class `reconcile_drift`, and whether the plan applied is still
//! the plan shown (its digest) are decided there, not here.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use keyhold_api as api;
use keyhold_core::identity::Operation;
use keyhold_core::key::KeyPage;
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, Nav, Notice, csrf_field};
use super::session::UiSession;
use super::{encode, failure, see_other};
use crate::ApiError;
use crate::app::AppState;
use crate::operations::drift::{self, FindingsQuery};

const TITLE: &str = "Drift";
/// Findings the screen lists: as many as one listing of the API holds.
const FINDINGS_SHOWN: u32 = 1000;

/// The screen's address parameters: which group, whether cleared findings
/// show, and the outcome of *Check all* (only these sentences can appear).
#[derive(Deserialize, Default, Clone)]
#[serde(default)]
pub struct DriftQuery {
    /// Only this key group's findings and plan.
    group: String,
    /// `1`: cleared findings too.
    cleared: String,
    /// `checks`: *Check all* started `started` checks and left the groups
    /// in `busy` (comma separated) alone.
    done: String,
    started: String,
    busy: String,
}

impl DriftQuery {
    fn group(&self) -> Option<&str> {
        let group = self.group.trim();
        (!group.is_empty()).then_some(group)
    }

    fn cleared(&self) -> bool {
        self.cleared == "1"
    }

    fn notice(&self) -> Option<Notice> {
        if self.done != "checks" {
            return None;
        }
        let mut text = match self.started.parse::<usize>().unwrap_or(0) {
            0 => "Started no drift check.".to_owned(),
            1 => "Started 1 drift check: its progress shows on the Jobs screen.".to_owned(),
            n => format!("Started {n} drift checks: their progress shows on the Jobs screen."),
        };
        let busy: Vec<&str> = self
            .busy
            .split(',')
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .collect();
        if !busy.is_empty() {
            text.push_str(&format!(
                " Not checked now, because another job of theirs is unfinished: {}.",
                busy.join(", ")
            ));
        }
        Some(Notice::Done(text))
    }
}

/// The screen's address for a group (or every group), with or without the
/// cleared findings.
fn href(group: Option<&str>, cleared: bool) -> String {
    let mut params = Vec::new();
    if let Some(group) = group {
        params.push(format!("group={}", encode(group)));
    }
    if cleared {
        params.push("cleared=1".to_owned());
    }
    if params.is_empty() {
        "/ui/drift".to_owned()
    } else {
        format!("/ui/drift?{}", params.join("&"))
    }
}

/// The Drift screen's address for one group, as the badges on the Keys
/// screen link to it.
pub(super) fn group_href(group: &str) -> String {
    href(Some(group), false)
}

/// What the screen shows.
struct Screen {
    overview: api::DriftOverviewView,
    /// The findings listed: open ones first, then (on request) cleared ones.
    findings: Vec<api::DriftFindingView>,
    /// The plan of each group shown that has open findings.
    plans: Vec<api::DriftPlanView>,
    /// keyhold key id → the key's name, for the findings' Key column.
    key_names: HashMap<String, String>,
    dual_control: bool,
}

impl Screen {
    /// The groups whose findings and plans show, in the overview's order.
    fn shown_groups<'a>(&'a self, query: &'a DriftQuery) -> Vec<&'a api::GroupDriftView> {
        self.overview
            .groups
            .iter()
            .filter(|g| match query.group() {
                Some(only) => g.group == only,
                None => g.open > 0 || self.findings.iter().any(|f| f.group == g.group),
            })
            .collect()
    }
}

async fn read(app: &AppState, ui: &UiSession, query: &DriftQuery) -> Result<Screen, ApiError> {
    let session = &ui.session;
    let overview = drift::overview(app, session).await?;
    let findings = drift::findings(
        app,
        session,
        &FindingsQuery {
            group: query.group().map(str::to_owned),
            key: None,
            include_cleared: Some(query.cleared()),
            limit: Some(FINDINGS_SHOWN),
        },
    )
    .await?;
    let mut plans = Vec::new();
    for group in overview
        .groups
        .iter()
        .filter(|g| g.open > 0 && query.group().is_none_or(|only| g.group == only))
    {
        plans.push(drift::plan(app, session, &group.group).await?);
    }
    let page = KeyPage {
        group: None,
        after: None,
        limit: KeyPage::MAX_LIMIT,
    };
    let key_names = app
        .keyhold
        .list_keys(session, &page)
        .await?
        .iter()
        .map(|k| (k.key.id.to_string(), k.key.display_name()))
        .collect();
    let dual_control = app.keyhold.settings(session).await?.dual_control;
    Ok(Screen {
        overview,
        findings,
        plans,
        key_names,
        dual_control,
    })
}

/// A sentence's first letter in capitals (the core's titles and repair
/// descriptions are written to stand inside sentences).
fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn plural(n: u32, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// How often keyhold checks by itself, and the expiry window.
fn schedule(overview: &api::DriftOverviewView) -> Markup {
    html! {
        p.hint #drift-schedule {
            @if overview.check_hours == 0 {
                "Scheduled checks are off: groups are checked only when you ask. "
            } @else {
                "keyhold checks every key group every " (plural(overview.check_hours, "hour", "hours")) ". "
            }
            "Material expiring within " (plural(overview.expiry_days, "day", "days"))
            " with no rotation due before counts as drift. Both are set on the "
            a href="/ui/configuration#drift-settings" { "Configuration" } " screen."
        }
    }
}

fn groups_table(ui: &UiSession, screen: &Screen, query: &DriftQuery) -> Markup {
    html! {
        div.table-wrap {
            table.data #drift-groups {
                caption { "Key groups and their last drift check" }
                thead {
                    tr {
                        th scope="col" { "Key group" }
                        th scope="col" { "Last check" }
                        th scope="col" { "Open findings" }
                        th scope="col" { "Self-heal" }
                        th.row-actions scope="col" { "Actions" }
                    }
                }
                tbody {
                    @if screen.overview.groups.is_empty() {
                        tr.empty { td colspan="5" { "No key groups yet: add one on the Keys screen." } }
                    }
                    @for (index, group) in screen.overview.groups.iter().enumerate() {
                        tr data-group=(group.group) data-open=(group.open) {
                            th scope="row" {
                                a href=(href(Some(&group.group), query.cleared())) { (group.group) }
                            }
                            td.time.last-check {
                                @match (&group.checked_at, &group.check_job) {
                                    (Some(at), Some(job)) => {
                                        (layout::when(at)) " · "
                                        a href=(format!("/ui/jobs/{}", encode(job))) { "job" span.visually-hidden { " that checked key group " (group.group) } }
                                    }
                                    (Some(at), None) => (layout::when(at)),
                                    _ => "Never checked",
                                }
                            }
                            td.num.open { (group.open) }
                            td.self-heal { @if group.self_heal { "On" } @else { "Off" } }
                            td.row-actions {
                                form.check-now method="post" action=(format!("/ui/drift/groups/{}/check", encode(&group.group))) {
                                    (csrf_field(&ui.csrf))
                                    button.secondary type="submit" #(format!("check-now-{index}")) data-group=(group.group) {
                                        "Check now" span.visually-hidden { " key group " (group.group) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A finding's detail: its first line as a sentence, the rest (a policy's
/// difference, line by line) as preformatted text that keeps its lines.
fn detail(text: &str) -> Markup {
    match text.split_once('\n') {
        Some((first, rest)) => html! {
            p.detail-text { (first) }
            pre.drift-detail { (rest.trim_end()) }
        },
        None => html! { p.detail-text { (text) } },
    }
}

/// What puts a finding right: the repair, or that only officers can.
fn repair(repair: Option<&api::DriftRepairView>) -> Markup {
    html! {
        @match repair {
            Some(r) => {
                (sentence(&r.description))
                " "
                @if r.safe {
                    span.tag.safe { "safe" }
                } @else {
                    span.tag.officers { "officers apply it" }
                }
            }
            None => {
                strong.needs-officers { "Needs officers" }
                p.hint { "No action of keyhold's resolves it: see the detail." }
            }
        }
    }
}

fn key_cell(screen: &Screen, finding: &api::DriftFindingView) -> Markup {
    let name = finding
        .key_id
        .as_ref()
        .and_then(|id| screen.key_names.get(id))
        .or(finding.kms_key_id.as_ref());
    html! {
        @match name {
            Some(name) => code { (name) },
            None => "—",
        }
    }
}

fn findings_table(
    screen: &Screen,
    id: &str,
    caption: &str,
    findings: &[&api::DriftFindingView],
    cleared: bool,
) -> Markup {
    html! {
        div.table-wrap {
            table.data.findings #(id) {
                caption { (caption) }
                thead {
                    tr {
                        th scope="col" { "Finding and subject" }
                        th scope="col" { "Key" }
                        th scope="col" { "Seen" }
                        th scope="col" { "Detail" }
                        @if !cleared { th scope="col" { "Repair" } }
                    }
                }
                tbody {
                    @for finding in findings {
                        tr data-finding=(finding.id) data-kind=(finding.kind) {
                            th.finding scope="row" {
                                (sentence(&finding.title))
                                span.visually-hidden { ": " }
                                code.subject { (finding.subject) }
                            }
                            td.key { (key_cell(screen, finding)) }
                            td.seen {
                                // Said in words, so each time reads alone.
                                span.seen-line { "First " (layout::when(&finding.first_seen)) }
                                span.seen-line { "Last " (layout::when(&finding.last_seen)) }
                                @if let Some(at) = &finding.cleared_at {
                                    span.seen-line { "Cleared " (layout::when(at)) }
                                }
                            }
                            td.detail { (detail(&finding.detail)) }
                            @if !cleared { td.repair { (repair(finding.repair.as_ref())) } }
                        }
                    }
                }
            }
        }
    }
}

/// The group's reconcile plan: its numbered actions, what each resolves,
/// what no action resolves, and *Apply plan*.
fn plan_section(
    ui: &UiSession,
    screen: &Screen,
    index: usize,
    group: &api::GroupDriftView,
    plan: &api::DriftPlanView,
) -> Markup {
    let title_id = format!("plan-{index}-title");
    let what = |id: &String| {
        screen
            .findings
            .iter()
            .find(|f| &f.id == id)
            .map_or_else(|| id.clone(), |f| format!("{} on {}", f.title, f.subject))
    };
    html! {
        div.plan #(format!("plan-{index}")) data-group=(plan.group) role="group" aria-labelledby=(title_id) {
            h3 #(title_id) { "Reconcile plan" }
            @if plan.actions.is_empty() {
                p.no-actions { "No action of keyhold's resolves these findings." }
            } @else {
                p.hint {
                    "Applied in this order, as one job. Each action is one AWS call that brings AWS back to keyhold's record, and can run again safely. "
                    @if group.self_heal {
                        "Self-heal is on: each check makes the safe actions by itself; the others wait for officers."
                    } @else {
                        "Safe actions are those self-heal would make; the others are decisions for officers."
                    }
                }
                ol.plan-actions {
                    @for planned in &plan.actions {
                        li data-action=(planned.repair.action) data-safe=(planned.repair.safe) {
                            (sentence(&planned.repair.description)) " "
                            @if planned.repair.safe {
                                span.tag.safe { "safe, self-heal" }
                            } @else {
                                span.tag.officers { "officers only" }
                            }
                            p.resolves {
                                "Resolves: "
                                (planned.findings.iter().map(what).collect::<Vec<_>>().join("; "))
                            }
                        }
                    }
                }
            }
            @if !plan.unresolved.is_empty() {
                p { "No action of the plan resolves these; they need officers, outside keyhold:" }
                ul.unresolved {
                    @for finding in &plan.unresolved {
                        li data-finding=(finding.id) { (sentence(&finding.title)) " on " code { (finding.subject) } }
                    }
                }
            }
            @if !plan.actions.is_empty() {
                (layout::needs(ui, Operation::RECONCILE_DRIFT, screen.dual_control))
                form.apply-plan method="post" action=(format!("/ui/drift/groups/{}/reconcile", encode(&plan.group))) {
                    (csrf_field(&ui.csrf))
                    input type="hidden" name="plan" value=(plan.digest);
                    p.actions {
                        button type="submit" #(format!("apply-plan-{index}")) data-group=(plan.group) {
                            "Apply plan" span.visually-hidden { " of key group " (plan.group) }
                        }
                    }
                    p.hint {
                        "Plan digest (SHA-256): " code.hash { (plan.digest) }
                        ". keyhold applies exactly this plan, and refuses it if a check changed the plan since this page was drawn."
                    }
                }
            }
        }
    }
}

fn group_section(
    ui: &UiSession,
    screen: &Screen,
    query: &DriftQuery,
    index: usize,
    group: &api::GroupDriftView,
) -> Markup {
    let title_id = format!("drift-group-{index}-title");
    let open: Vec<&api::DriftFindingView> = screen
        .findings
        .iter()
        .filter(|f| f.group == group.group && f.cleared_at.is_none())
        .collect();
    let cleared: Vec<&api::DriftFindingView> = screen
        .findings
        .iter()
        .filter(|f| f.group == group.group && f.cleared_at.is_some())
        .collect();
    let plan = screen.plans.iter().find(|p| p.group == group.group);
    html! {
        section.card.drift-group #(format!("drift-group-{index}")) data-group=(group.group) aria-labelledby=(title_id) {
            h2 #(title_id) { "Key group " (group.group) }
            @if open.is_empty() {
                p.no-findings { "No open findings." }
            } @else {
                (findings_table(screen, &format!("findings-{index}"), &format!("Open drift findings of key group {}", group.group), &open, false))
            }
            @if let Some(plan) = plan { (plan_section(ui, screen, index, group, plan)) }
            @if query.cleared() {
                h3 { "Cleared findings" }
                @if cleared.is_empty() {
                    p.no-cleared { "No cleared findings." }
                } @else {
                    (findings_table(screen, &format!("cleared-{index}"), &format!("Cleared drift findings of key group {}, newest first", group.group), &cleared, true))
                }
            }
        }
    }
}

fn body(ui: &UiSession, screen: &Screen, query: &DriftQuery) -> Markup {
    let shown = screen.shown_groups(query);
    html! {
        p.hint {
            "A drift check reads each key of a group in AWS (state, material, alias, policy, tags) and compares it with keyhold's record. "
            "The findings stay until a check no longer sees them."
        }
        (schedule(&screen.overview))
        div.toolbar {
            form #check-all-form method="post" action="/ui/drift/checks" {
                (csrf_field(&ui.csrf))
                button type="submit" #check-all { "Check all" }
            }
            @if query.cleared() {
                a #toggle-cleared href=(href(query.group(), false)) { "Hide cleared findings" }
            } @else {
                a #toggle-cleared href=(href(query.group(), true)) { "Show cleared findings" }
            }
        }
        (layout::needs(ui, Operation::CHECK_DRIFT, screen.dual_control))
        (groups_table(ui, screen, query))
        @if let Some(only) = query.group() {
            p #drift-filter {
                "Showing key group " strong { (only) } " only. "
                a href=(href(None, query.cleared())) { "Show every key group" }
            }
        }
        @if shown.is_empty() {
            p #no-findings {
                "No open drift findings"
                @if query.cleared() { " and no cleared ones" }
                "."
            }
        }
        @for group in shown {
            @let index = screen.overview.groups.iter().position(|g| g.group == group.group).unwrap_or_default();
            (group_section(ui, screen, query, index, group))
        }
    }
}

pub async fn page(
    State(app): State<AppState>,
    ui: UiSession,
    Query(query): Query<DriftQuery>,
) -> Response {
    match read(&app, &ui, &query).await {
        Ok(screen) => layout::page(
            &ui,
            Nav::Drift,
            TITLE,
            query.notice().as_ref(),
            body(&ui, &screen, &query),
        )
        .into_response(),
        Err(error) => refused(&app, &ui, &query, error).await,
    }
}

/// The screen again with why an action (or a group named in the address)
/// was refused; every group when the one asked for cannot be read.
async fn refused(app: &AppState, ui: &UiSession, query: &DriftQuery, error: ApiError) -> Response {
    let mut shown = html! {};
    for query in [
        query.clone(),
        DriftQuery {
            cleared: query.cleared.clone(),
            ..DriftQuery::default()
        },
    ] {
        if let Ok(screen) = read(app, ui, &query).await {
            shown = body(ui, &screen, &query);
            break;
        }
    }
    failure(ui, Nav::Drift, TITLE, error, shown)
}

/// The screen for the group an action was about.
fn about(group: &str) -> DriftQuery {
    DriftQuery {
        group: group.to_owned(),
        ..DriftQuery::default()
    }
}

/// *Check all*: a check of every group with no other job unfinished; back
/// to the screen, which says how many started and which groups waited.
pub async fn check_all(State(app): State<AppState>, ui: UiSession) -> Response {
    match drift::check_all(&app, &ui.session).await {
        Ok(outcome) => {
            let busy: Vec<&str> = outcome.busy.iter().map(|b| b.group.as_str()).collect();
            see_other(&format!(
                "/ui/drift?done=checks&started={}&busy={}",
                outcome.started.len(),
                encode(&busy.join(","))
            ))
        }
        Err(error) => refused(&app, &ui, &DriftQuery::default(), error).await,
    }
}

/// *Check now*: one group's check, followed on the Jobs screen.
pub async fn check_group(
    State(app): State<AppState>,
    ui: UiSession,
    Path(group): Path<String>,
) -> Response {
    match drift::check_group(&app, &ui.session, &group).await {
        Ok(job) => see_other(&format!("/ui/jobs?done=job&name={}", encode(&job.id))),
        Err(error) => refused(&app, &ui, &about(&group), error).await,
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ApplyForm {
    /// The digest of the plan the page showed.
    plan: String,
}

/// *Apply plan*: the reconcile job, under dual control; when a policy holds
/// `reconcile_drift` to a quorum, the request it became (`failure` sends
/// the officer there).
pub async fn reconcile(
    State(app): State<AppState>,
    ui: UiSession,
    Path(group): Path<String>,
    axum::Form(form): axum::Form<ApplyForm>,
) -> Response {
    let request = api::ReconcileRequest { plan: form.plan };
    match drift::reconcile(&app, &ui.session, &group, &request).await {
        Ok(job) => see_other(&format!("/ui/jobs?done=job&name={}", encode(&job.id))),
        Err(error) => refused(&app, &ui, &about(&group), error).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(kind: &str, title: &str, detail: &str, cleared: bool) -> api::DriftFindingView {
        api::DriftFindingView {
            id: format!(
                "00000000-0000-0000-0000-0000000000{:02}",
                detail.len() % 100
            ),
            group: "ig-demo".into(),
            kind: kind.into(),
            title: title.into(),
            subject: "1234abcd-12ab-34cd-56ef-1234567890ab".into(),
            key_id: Some("00000000-0000-0000-0000-000000000001".into()),
            kms_key_id: Some("1234abcd-12ab-34cd-56ef-1234567890ab".into()),
            detail: detail.into(),
            repair: None,
            first_seen: "2026-11-29T09:00:00Z".into(),
            last_seen: "2026-11-30T09:00:00Z".into(),
            cleared_at: cleared.then(|| "2026-12-01T09:00:00Z".to_owned()),
        }
    }

    fn screen(findings: Vec<api::DriftFindingView>) -> Screen {
        Screen {
            overview: api::DriftOverviewView {
                groups: vec![api::GroupDriftView {
                    group: "ig-demo".into(),
                    checked_at: None,
                    check_job: None,
                    open: 1,
                    self_heal: false,
                }],
                check_hours: 24,
                expiry_days: 30,
            },
            findings,
            plans: Vec::new(),
            key_names: HashMap::from([(
                "00000000-0000-0000-0000-000000000001".to_owned(),
                "1234abcd-12ab-34cd-56ef-1234567890ab v2".to_owned(),
            )]),
            dual_control: true,
        }
    }

    #[test]
    fn a_policy_difference_keeps_its_lines_in_a_pre() {
        let shown = detail("The key policy differs:\n- \"a\": 1\n+ \"a\": 2\n").into_string();
        assert_eq!(
            shown,
            "<p class=\"detail-text\">The key policy differs:</p><pre class=\"drift-detail\">- &quot;a&quot;: 1\n+ &quot;a&quot;: 2</pre>"
        );
        let one_line = detail("KMS key k is disabled in AWS").into_string();
        assert_eq!(
            one_line,
            "<p class=\"detail-text\">KMS key k is disabled in AWS</p>"
        );
        // Text from AWS is escaped like any other.
        assert!(!detail("<script>\n<b>").into_string().contains("<script>"));
    }

    #[test]
    fn findings_name_their_key_and_say_who_repairs_them() {
        let mut safe = finding("alias_missing", "alias missing", "Alias gone", false);
        safe.repair = Some(api::DriftRepairView {
            action: "point_alias".into(),
            description: "point alias alias/ig-demo at KMS key k".into(),
            kms_key_id: "k".into(),
            safe: true,
        });
        let none = finding("key_missing", "KMS key missing", "Gone", false);
        let shown = screen(vec![safe.clone(), none.clone()]);
        let table =
            findings_table(&shown, "findings-0", "Open", &[&safe, &none], false).into_string();
        assert!(table.contains("Alias missing"), "{table}");
        assert!(
            table.contains("<code>1234abcd-12ab-34cd-56ef-1234567890ab v2</code>"),
            "the key's name: {table}"
        );
        assert!(
            table.contains(
                "Point alias alias/ig-demo at KMS key k <span class=\"tag safe\">safe</span>"
            ),
            "{table}"
        );
        assert!(table.contains("Needs officers"), "{table}");
        assert!(!table.contains("Cleared"), "{table}");
        let cleared = finding("tags_missing", "keyhold tags missing", "Tags", true);
        let table = findings_table(&shown, "cleared-0", "Cleared", &[&cleared], true).into_string();
        assert!(
            table.contains("Cleared <time datetime=\"2026-12-01T09:00:00Z\">"),
            "{table}"
        );
        assert!(!table.contains(">Repair<"), "{table}");
    }

    #[test]
    fn the_address_keeps_the_group_and_the_cleared_toggle() {
        assert_eq!(href(None, false), "/ui/drift");
        assert_eq!(
            href(Some("ig demo"), true),
            "/ui/drift?group=ig%20demo&cleared=1"
        );
        assert_eq!(group_href("ig-demo"), "/ui/drift?group=ig-demo");
    }

    #[test]
    fn check_all_says_what_started_and_what_waited() {
        let query = DriftQuery {
            done: "checks".into(),
            started: "2".into(),
            busy: "ig-a,ig-b".into(),
            ..DriftQuery::default()
        };
        assert!(matches!(
            query.notice(),
            Some(Notice::Done(text)) if text == "Started 2 drift checks: their progress shows on the Jobs screen. Not checked now, because another job of theirs is unfinished: ig-a, ig-b."
        ));
        let none = DriftQuery {
            done: "<b>".into(),
            ..DriftQuery::default()
        };
        assert!(none.notice().is_none());
    }

    #[test]
    fn only_groups_with_something_to_show_get_a_section() {
        let mut shown = screen(Vec::new());
        shown.overview.groups.push(api::GroupDriftView {
            group: "ig-clean".into(),
            checked_at: None,
            check_job: None,
            open: 0,
            self_heal: true,
        });
        let all = DriftQuery::default();
        let names: Vec<&str> = shown
            .shown_groups(&all)
            .iter()
            .map(|g| g.group.as_str())
            .collect();
        assert_eq!(names, ["ig-demo"]);
        let one = DriftQuery {
            group: "ig-clean".into(),
            ..DriftQuery::default()
        };
        let names: Vec<&str> = shown
            .shown_groups(&one)
            .iter()
            .map(|g| g.group.as_str())
            .collect();
        assert_eq!(names, ["ig-clean"]);
    }
}
