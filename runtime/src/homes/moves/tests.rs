//! Moves of the shared home over real directories, with handlers that record their calls.

use std::sync::Mutex;

use super::*;

type Calls = Arc<Mutex<Vec<String>>>;

/// A handler that records `apply <name>` and `rollback <name>`, failing as told.
fn handler(
    name: &'static str,
    calls: &Calls,
    apply_fails: Option<HomeUpdateError>,
    rollback_fails: bool,
) -> Arc<dyn HomeUpdateHandler> {
    let (a, r) = (calls.clone(), calls.clone());
    Arc::new(handler_fn(
        name,
        move |_| {
            a.lock().unwrap().push(format!("apply {name}"));
            apply_fails.clone().map_or(Ok(()), Err)
        },
        move |_| {
            r.lock().unwrap().push(format!("rollback {name}"));
            if rollback_fails {
                Err(HomeUpdateError::Other("disk full".into()))
            } else {
                Ok(())
            }
        },
    ))
}

struct Homes {
    _dir: tempfile::TempDir,
    local: LocalHome,
    first: SharedHome,
    second: SharedHome,
}

fn homes() -> Homes {
    let dir = tempfile::tempdir().unwrap();
    Homes {
        local: LocalHome::open(&dir.path().join("local")).unwrap(),
        first: SharedHome::open(&dir.path().join("shared-a")).unwrap(),
        second: SharedHome::open(&dir.path().join("shared-b")).unwrap(),
        _dir: dir,
    }
}

fn taken(calls: &Calls) -> Vec<String> {
    std::mem::take(&mut *calls.lock().unwrap())
}

#[tokio::test]
async fn a_failed_move_rolls_back_the_applied_handlers_in_reverse_and_stays_locked() {
    let h = homes();
    let calls = Calls::default();
    let safe = HomeUpdateError::Service {
        summary: "The attachment index could not be moved.".into(),
        detail: "missing index file".into(),
    };
    let handlers = vec![
        handler("a", &calls, None, false),
        // A rollback that fails is logged; the others still roll back.
        handler("b", &calls, None, true),
        handler("c", &calls, Some(safe), false),
        handler("d", &calls, None, false),
    ];
    assert_eq!(
        settle(&h.local, &h.first, &handlers).await.unwrap(),
        Settled::First
    );
    assert!(taken(&calls).is_empty(), "no handler on a first start");

    let Settled::Locked { update, message } = settle(&h.local, &h.second, &handlers).await.unwrap()
    else {
        panic!("the move must lock the node");
    };
    assert_eq!(
        taken(&calls),
        ["apply a", "apply b", "apply c", "rollback b", "rollback a"],
        "in order, stopping at the failure; the failing one is not rolled back"
    );
    assert_eq!(message, "The attachment index could not be moved.");
    assert_eq!(update.old, std::fs::canonicalize(h.first.root()).unwrap());
    assert_eq!(update.new, std::fs::canonicalize(h.second.root()).unwrap());

    // Back at the old location: a normal start. At the new one again: the move is retried.
    assert_eq!(
        settle(&h.local, &h.first, &handlers).await.unwrap(),
        Settled::Unchanged
    );
    assert!(taken(&calls).is_empty());
    assert!(matches!(
        settle(&h.local, &h.second, &handlers).await.unwrap(),
        Settled::Locked { .. }
    ));
    assert_eq!(taken(&calls)[0], "apply a");
}

#[tokio::test]
async fn a_move_where_every_handler_applies_is_recorded_once() {
    let h = homes();
    let calls = Calls::default();
    let handlers = vec![
        handler("a", &calls, None, false),
        handler("b", &calls, None, false),
    ];
    settle(&h.local, &h.first, &handlers).await.unwrap();
    let moved = settle(&h.local, &h.second, &handlers).await.unwrap();
    assert!(matches!(moved, Settled::Moved(_)), "{moved:?}");
    assert_eq!(taken(&calls), ["apply a", "apply b"]);
    assert_eq!(
        settle(&h.local, &h.second, &handlers).await.unwrap(),
        Settled::Unchanged
    );
    assert!(taken(&calls).is_empty(), "nothing moved since");
}

#[tokio::test]
async fn users_never_see_a_path_or_a_handler_s_internal_error() {
    let h = homes();
    let second = std::fs::canonicalize(h.second.root()).unwrap();
    let cases = [
        HomeUpdateError::Service {
            summary: format!("Could not write {}", second.join("data").display()),
            detail: String::new(),
        },
        HomeUpdateError::Service {
            summary: "Could not open /etc/colony/index".into(),
            detail: String::new(),
        },
        HomeUpdateError::Service {
            summary: "Could not open (~/index)".into(),
            detail: String::new(),
        },
        HomeUpdateError::Other(format!("io error at {}", second.display())),
        HomeUpdateError::Other("plain failure".into()),
    ];
    for (i, failure) in cases.into_iter().enumerate() {
        let local = LocalHome::open(&h._dir.path().join(format!("local-{i}"))).unwrap();
        let calls = Calls::default();
        let handlers = vec![handler("a", &calls, Some(failure.clone()), false)];
        settle(&local, &h.first, &handlers).await.unwrap();
        let Settled::Locked { message, .. } = settle(&local, &h.second, &handlers).await.unwrap()
        else {
            panic!("locked");
        };
        assert_eq!(message, STANDARD_MESSAGE, "{failure:?}");
        assert!(!message.contains('/'));
    }
}

#[tokio::test]
async fn the_same_directory_through_another_path_is_no_move() {
    let h = homes();
    let handlers = vec![handler("a", &Calls::default(), None, false)];
    settle(&h.local, &h.first, &handlers).await.unwrap();
    let link = h._dir.path().join("link-to-a");
    std::os::unix::fs::symlink(h.first.root(), &link).unwrap();
    let through_link = SharedHome::open(&link).unwrap();
    assert_eq!(
        settle(&h.local, &through_link, &handlers).await.unwrap(),
        Settled::Unchanged
    );
}
