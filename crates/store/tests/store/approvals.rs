//! Quorum approvals: requests and their votes round trip; a vote is taken
//! only while the request is pending and unexpired, once per identity (the
//! votes' key, under any concurrency); the quorum approves and a denial
//! denies; and the write that runs an approved request marks it executed in
//! its own transaction, so of any number of runs exactly one writes anything.

use keyhold_core::StoreError;
use keyhold_core::approval::{
    ApprovalRequest, ApprovalStatus, Execution, OperationClass, Quorum, Vote,
};
use keyhold_core::audit::AuditRecord;
use keyhold_core::group::{GroupInfo, KeyGroup};
use keyhold_core::identity::Role;
use keyhold_core::names::IdentityName;

use crate::common::{Fixture, at, credential, group, record, verify_chain};

/// A pending request for `approvals` administrators' approvals, asked for
/// by Admin1 at `asked` (seconds), expiring an hour later.
fn request(asked: i64, approvals: u8) -> ApprovalRequest {
    ApprovalRequest::pending(
        OperationClass::DeleteGroup,
        serde_json::json!({"kind": "delete_group", "group": "payments"}),
        "Delete key group 'payments'".into(),
        vec![
            IdentityName::parse("Admin1").unwrap(),
            IdentityName::parse("Officer1").unwrap(),
        ],
        Quorum::new(approvals, Role::Administrator, 1).unwrap(),
        at(asked),
    )
}

fn vote(who: &str, approve: bool, when: i64) -> Vote {
    Vote {
        identity: IdentityName::parse(who).unwrap(),
        role: Role::Administrator,
        approve,
        at: at(when),
        reason: (!approve).then(|| format!("{who} says no")),
    }
}

fn voted(v: &Vote) -> AuditRecord {
    AuditRecord::new(
        v.at,
        v.identity.as_str(),
        format!("'{}' answered an approval request.", v.identity),
    )
}

/// An entry whose change runs request `id`, with `sealed` for the requester.
fn executing(summary: &str, id: uuid::Uuid, sealed: Option<&[u8]>) -> AuditRecord {
    let mut r = AuditRecord::new(at(100), "Admin1,Officer1,Admin2", summary);
    r.executes = Some(Execution {
        request: id,
        sealed_result: sealed.map(<[u8]>::to_vec),
    });
    r
}

async fn insert(f: &Fixture, r: &ApprovalRequest) {
    f.store
        .insert_approval(r, &record("Asked for approval."))
        .await
        .unwrap();
}

/// A request of one approval, approved by Admin2.
async fn approved(f: &Fixture) -> ApprovalRequest {
    let r = request(10, 1);
    insert(f, &r).await;
    let v = vote("Admin2", true, 11);
    assert_eq!(
        f.store.vote_approval(r.id, &v, &voted(&v)).await.unwrap(),
        Some(ApprovalStatus::Approved)
    );
    r
}

async fn stored(f: &Fixture, id: uuid::Uuid) -> ApprovalRequest {
    f.store.get_approval(id).await.unwrap().unwrap()
}

#[tokio::test]
async fn requests_round_trip_with_their_votes_newest_first() {
    let f = Fixture::new().await;
    let s = &f.store;
    let older = request(10, 3);
    let newer = request(20, 3);
    insert(&f, &older).await;
    insert(&f, &newer).await;
    assert!(matches!(
        s.insert_approval(&older, &record("again")).await,
        Err(StoreError::Duplicate)
    ));
    assert_eq!(stored(&f, older.id).await, older);
    assert_eq!(s.get_approval(uuid::Uuid::new_v4()).await.unwrap(), None);

    // Votes come back oldest first, whatever order their names sort in.
    let votes = [vote("Zed", true, 12), vote("Admin2", true, 13)];
    for v in &votes {
        assert_eq!(
            s.vote_approval(older.id, v, &voted(v)).await.unwrap(),
            Some(ApprovalStatus::Pending)
        );
    }
    let read = stored(&f, older.id).await;
    assert_eq!(read.votes, votes);
    assert_eq!(read.remaining(), 1);
    assert_eq!(
        read,
        ApprovalRequest {
            votes: votes.to_vec(),
            ..older.clone()
        }
    );

    let ids = |list: Vec<ApprovalRequest>| list.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let all = s.list_approvals(None, 0).await.unwrap();
    assert_eq!(ids(all.clone()), [newer.id, older.id]);
    assert_eq!(all[1].votes, votes, "the list carries each request's votes");
    assert!(all[0].votes.is_empty());
    assert_eq!(ids(s.list_approvals(None, 1).await.unwrap()), [newer.id]);
    assert_eq!(
        ids(s
            .list_approvals(Some(ApprovalStatus::Pending), 0)
            .await
            .unwrap()),
        [newer.id, older.id]
    );
    assert!(
        s.list_approvals(Some(ApprovalStatus::Approved), 0)
            .await
            .unwrap()
            .is_empty()
    );
    // Two requests, two votes: each with its entry.
    assert_eq!(f.audit_count().await, 4);
    assert_eq!(verify_chain(s).await, 4);
}

#[tokio::test]
async fn a_vote_on_an_expired_or_decided_request_writes_nothing() {
    let f = Fixture::new().await;
    let s = &f.store;
    let r = request(10, 2);
    insert(&f, &r).await;

    // At its expiry the request takes no vote, and no entry is written.
    let late = vote("Admin2", true, 10 + 3600);
    assert_eq!(
        s.vote_approval(r.id, &late, &voted(&late)).await.unwrap(),
        None
    );
    assert!(stored(&f, r.id).await.votes.is_empty());
    assert_eq!(f.audit_count().await, 1);

    // Denied, it takes no more.
    let no = vote("Admin2", false, 11);
    assert_eq!(
        s.vote_approval(r.id, &no, &voted(&no)).await.unwrap(),
        Some(ApprovalStatus::Denied)
    );
    let after = vote("Admin3", true, 12);
    assert_eq!(
        s.vote_approval(r.id, &after, &voted(&after)).await.unwrap(),
        None
    );
    assert_eq!(stored(&f, r.id).await.votes, [no]);
    assert_eq!(f.audit_count().await, 2);

    // Approved, it takes no more either.
    let a = approved(&f).await;
    let extra = vote("Admin3", true, 12);
    assert_eq!(
        s.vote_approval(a.id, &extra, &voted(&extra)).await.unwrap(),
        None
    );
    assert_eq!(stored(&f, a.id).await.votes.len(), 1);
    assert_eq!(f.audit_count().await, 4);

    assert!(matches!(
        s.vote_approval(uuid::Uuid::new_v4(), &extra, &voted(&extra))
            .await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(f.audit_count().await, 4);
}

#[tokio::test]
async fn an_identity_answers_a_request_once() {
    let f = Fixture::new().await;
    let s = &f.store;
    let r = request(10, 3);
    insert(&f, &r).await;
    let yes = vote("Admin2", true, 11);
    s.vote_approval(r.id, &yes, &voted(&yes)).await.unwrap();
    for again in [vote("Admin2", true, 12), vote("Admin2", false, 12)] {
        assert!(matches!(
            s.vote_approval(r.id, &again, &voted(&again)).await,
            Err(StoreError::Duplicate)
        ));
    }
    let read = stored(&f, r.id).await;
    assert_eq!(
        (read.status, read.votes),
        (ApprovalStatus::Pending, vec![yes])
    );
    assert_eq!(f.audit_count().await, 2);
}

#[tokio::test]
async fn the_quorum_approves_and_one_denial_denies() {
    let f = Fixture::new().await;
    let s = &f.store;
    let r = request(10, 2);
    insert(&f, &r).await;
    let first = vote("Admin2", true, 11);
    let second = vote("Admin3", true, 12);
    assert_eq!(
        s.vote_approval(r.id, &first, &voted(&first)).await.unwrap(),
        Some(ApprovalStatus::Pending)
    );
    assert_eq!(
        s.vote_approval(r.id, &second, &voted(&second))
            .await
            .unwrap(),
        Some(ApprovalStatus::Approved)
    );
    let read = stored(&f, r.id).await;
    // Approval is not yet a decision: running it is.
    assert_eq!(
        (read.status, read.decided_at, read.remaining()),
        (ApprovalStatus::Approved, None, 0)
    );

    let d = request(20, 2);
    insert(&f, &d).await;
    let yes = vote("Admin2", true, 21);
    let no = vote("Admin3", false, 22);
    s.vote_approval(d.id, &yes, &voted(&yes)).await.unwrap();
    assert_eq!(
        s.vote_approval(d.id, &no, &voted(&no)).await.unwrap(),
        Some(ApprovalStatus::Denied)
    );
    let read = stored(&f, d.id).await;
    assert_eq!(
        (read.status, read.decided_at),
        (ApprovalStatus::Denied, Some(at(22)))
    );
    assert_eq!(read.votes[1].reason.as_deref(), Some("Admin3 says no"));
    assert_eq!(
        s.list_approvals(Some(ApprovalStatus::Approved), 0)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect::<Vec<_>>(),
        [r.id]
    );
}

/// 16 approvals at once on a quorum of 3: the third approves the request,
/// the others find it approved and write nothing.
#[tokio::test]
async fn parallel_approvals_stop_at_the_quorum() {
    let f = Fixture::new().await;
    let r = request(10, 3);
    insert(&f, &r).await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = f.store.clone();
        tasks.push(tokio::spawn(async move {
            let v = vote(&format!("Admin{}", i + 2), true, 11);
            store.vote_approval(r.id, &v, &voted(&v)).await.unwrap()
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    let count = |s: Option<ApprovalStatus>| outcomes.iter().filter(|o| **o == s).count();
    assert_eq!(count(Some(ApprovalStatus::Pending)), 2);
    assert_eq!(count(Some(ApprovalStatus::Approved)), 1);
    assert_eq!(count(None), 13);
    let read = stored(&f, r.id).await;
    assert_eq!(read.status, ApprovalStatus::Approved);
    assert_eq!(read.votes.len(), 3);
    assert_eq!(f.audit_count().await, 1 + 3);
    assert_eq!(verify_chain(&f.store).await, 4);
}

/// 16 approvals by one identity at once: one is stored, the others are
/// duplicates (the votes' key, not a read before the insert).
#[tokio::test]
async fn parallel_votes_by_one_identity_count_once() {
    let f = Fixture::new().await;
    let r = request(10, 3);
    insert(&f, &r).await;
    let mut tasks = Vec::new();
    for i in 0..16_i64 {
        let store = f.store.clone();
        tasks.push(tokio::spawn(async move {
            let v = vote("Admin2", true, 10 + i);
            store.vote_approval(r.id, &v, &voted(&v)).await
        }));
    }
    let mut stored_votes = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(Some(_)) => stored_votes += 1,
            Err(StoreError::Duplicate) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(stored_votes, 1);
    assert_eq!(stored(&f, r.id).await.votes.len(), 1);
    assert_eq!(f.audit_count().await, 2);
}

#[tokio::test]
async fn the_write_that_runs_an_approved_request_seals_it_once() {
    let f = Fixture::new().await;
    let s = &f.store;
    s.insert_credential(&credential("aws"), &record("cred"))
        .await
        .unwrap();
    let r = approved(&f).await;
    let before = f.audit_count().await;

    let first = group("first", "aws");
    let run = executing("Added key group 'first'.", r.id, Some(b"sealed password"));
    s.insert_group(&first, &run).await.unwrap();
    let read = stored(&f, r.id).await;
    assert_eq!(read.status, ApprovalStatus::Executed);
    assert_eq!(read.decided_at, Some(at(100)));
    assert_eq!(read.outcome.as_deref(), Some("Added key group 'first'."));
    assert!(read.has_sealed_result);
    assert_eq!(f.audit_count().await, before + 1);

    // A second run of the same request: refused whole, no group, no entry.
    let second = group("second", "aws");
    assert!(matches!(
        s.insert_group(&second, &executing("Added key group 'second'.", r.id, None))
            .await,
        Err(StoreError::ApprovalSpent)
    ));
    assert_eq!(s.get_group(&second.name).await.unwrap(), None);
    assert_eq!(f.audit_count().await, before + 1);
    assert_eq!(
        stored(&f, r.id).await,
        read,
        "the request is as the first run left it"
    );

    // A request never approved cannot be run either.
    let pending = request(30, 2);
    insert(&f, &pending).await;
    assert!(matches!(
        s.insert_group(&second, &executing("x", pending.id, None))
            .await,
        Err(StoreError::ApprovalSpent)
    ));
    assert!(matches!(
        s.insert_group(&second, &executing("x", uuid::Uuid::new_v4(), None))
            .await,
        Err(StoreError::ApprovalSpent)
    ));
    assert_eq!(s.get_group(&second.name).await.unwrap(), None);
    assert_eq!(stored(&f, pending.id).await.status, ApprovalStatus::Pending);

    // The sealed result is handed over once, with its entry.
    let before = f.audit_count().await;
    let collect = record("Collected the result of an approval request.");
    assert_eq!(
        s.take_approval_result(r.id, &collect).await.unwrap(),
        Some(b"sealed password".to_vec())
    );
    assert_eq!(s.take_approval_result(r.id, &collect).await.unwrap(), None);
    assert!(!stored(&f, r.id).await.has_sealed_result);
    assert_eq!(
        s.take_approval_result(pending.id, &collect).await.unwrap(),
        None
    );
    assert_eq!(f.audit_count().await, before + 1);
    assert_eq!(verify_chain(s).await, u64::try_from(before + 1).unwrap());
}

/// A conditional write whose condition fails writes nothing, and so runs
/// nothing: the request stays approved for the run that succeeds.
#[tokio::test]
async fn a_conditional_write_that_does_not_happen_leaves_the_request_approved() {
    let f = Fixture::new().await;
    let s = &f.store;
    s.insert_credential(&credential("aws"), &record("cred"))
        .await
        .unwrap();
    let g = group("payments", "aws");
    s.insert_group(&g, &record("add")).await.unwrap();
    let r = approved(&f).await;
    let stale = owned_by(&g, "stale");
    let next = owned_by(&g, "next");
    assert!(
        !s.replace_group(&stale, &next, &executing("Changed.", r.id, None))
            .await
            .unwrap()
    );
    assert_eq!(stored(&f, r.id).await.status, ApprovalStatus::Approved);
    assert!(
        s.replace_group(&g, &next, &executing("Changed.", r.id, None))
            .await
            .unwrap()
    );
    assert_eq!(stored(&f, r.id).await.status, ApprovalStatus::Executed);
    // Executed, it runs no more.
    assert!(matches!(
        s.replace_group(&next, &g, &executing("Changed back.", r.id, None))
            .await,
        Err(StoreError::ApprovalSpent)
    ));
    assert_eq!(s.get_group(&g.name).await.unwrap(), Some(next));
}

/// `g` with another owner.
fn owned_by(g: &KeyGroup, owner: &str) -> KeyGroup {
    KeyGroup {
        info: GroupInfo::parse(owner, "").unwrap(),
        ..g.clone()
    }
}

/// 16 writes at once, each adding another group and all running the same
/// approved request: exactly one is written.
#[tokio::test]
async fn parallel_runs_of_one_approved_request_write_once() {
    let f = Fixture::new().await;
    f.store
        .insert_credential(&credential("aws"), &record("cred"))
        .await
        .unwrap();
    let r = approved(&f).await;
    let before = f.audit_count().await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = f.store.clone();
        tasks.push(tokio::spawn(async move {
            let g = group(&format!("g{i}"), "aws");
            store
                .insert_group(&g, &executing(&format!("Added g{i}."), r.id, None))
                .await
        }));
    }
    let mut written = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => written += 1,
            Err(StoreError::ApprovalSpent) => {}
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(written, 1);
    let groups = f.store.list_groups().await.unwrap();
    assert_eq!(groups.len(), 1);
    let read = stored(&f, r.id).await;
    assert_eq!(read.status, ApprovalStatus::Executed);
    assert_eq!(
        read.outcome,
        Some(format!("Added {}.", groups[0].name)),
        "the outcome is the entry of the run that was written"
    );
    assert_eq!(f.audit_count().await, before + 1);
}

#[tokio::test]
async fn closing_moves_a_request_only_from_the_status_it_is_in() {
    let f = Fixture::new().await;
    let s = &f.store;
    let r = request(10, 2);
    insert(&f, &r).await;
    let mut closed = record("The approval request expired.");
    closed.time = at(5000);
    assert!(
        s.close_approval(
            r.id,
            ApprovalStatus::Pending,
            ApprovalStatus::Expired,
            "not approved in time",
            &closed
        )
        .await
        .unwrap()
    );
    let read = stored(&f, r.id).await;
    assert_eq!(
        (read.status, read.decided_at, read.outcome.as_deref()),
        (
            ApprovalStatus::Expired,
            Some(at(5000)),
            Some("not approved in time")
        )
    );
    assert_eq!(f.audit_count().await, 2);
    // Closed already: nothing written.
    assert!(
        !s.close_approval(
            r.id,
            ApprovalStatus::Pending,
            ApprovalStatus::Expired,
            "again",
            &closed
        )
        .await
        .unwrap()
    );
    assert!(
        !s.close_approval(
            uuid::Uuid::new_v4(),
            ApprovalStatus::Pending,
            ApprovalStatus::Expired,
            "none",
            &closed
        )
        .await
        .unwrap()
    );
    assert_eq!(f.audit_count().await, 2);
    assert_eq!(stored(&f, r.id).await, read);

    // An approved request refused when it ran is failed, and runs no more.
    let a = approved(&f).await;
    assert!(
        s.close_approval(
            a.id,
            ApprovalStatus::Approved,
            ApprovalStatus::Failed,
            "the group no longer exists",
            &closed
        )
        .await
        .unwrap()
    );
    assert!(matches!(
        s.append_audit(&executing("Deleted.", a.id, None)).await,
        Err(StoreError::ApprovalSpent)
    ));
    assert_eq!(stored(&f, a.id).await.status, ApprovalStatus::Failed);
}
