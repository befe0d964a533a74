//! The live cluster page (`GET /`) in a real headless Chromium, driven through chromedriver:
//! three node processes running a lock held and waited for, a once-per-cluster job and a
//! bucketed executor; one node's page shows them all (the lock whichever node serves it), then
//! a node killed while the page stays open. Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them); without
//! them the test says so and passes locally, and fails under CI, where they must be.

// The test runs on its own runtime; the lock only keeps whole tests from overlapping.
#![allow(clippy::await_holding_lock)]

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{OBSERVATION_SLACK, detection_bound, logs, serial};
use colony_runtime::testkit::{AdminClient, free_port};
use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};

const LOCK: &str = "page-shown";
const JOB: &str = "page-job";
const EXECUTOR: &str = "page-queues";

/// The browser and its driver, if installed: `(chromium, chromedriver)`.
fn browser() -> Option<(PathBuf, PathBuf)> {
    let find = |names: &[&str]| {
        names.iter().find_map(|name| {
            let path = std::env::var_os("PATH")?;
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        })
    };
    Some((
        find(&["chromium", "chromium-browser"])?,
        find(&["chromedriver"])?,
    ))
}

/// chromedriver on a port of its own, killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start(binary: &PathBuf) -> Driver {
        let port = free_port();
        let child = Command::new(binary)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = Driver { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).is_err() {
            assert!(Instant::now() < deadline, "chromedriver never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        driver
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn open_browser(driver: &Driver, chromium: &std::path::Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            // No sandbox: CI runs as root, where Chromium's sandbox refuses to start.
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1200,1400"],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a browser session")
}

/// The text of each cell of each body row of the page's table `id`.
async fn table(browser: &Client, id: &str) -> Vec<Vec<String>> {
    let script = format!(
        "return [...document.querySelectorAll('#{id} tbody tr')]\
         .map(r => [...r.cells].map(c => c.textContent))"
    );
    let rows = browser.execute(&script, Vec::new()).await.unwrap();
    serde_json::from_value(rows).unwrap()
}

/// Polls the page's table `id` until `ok` holds of its rows; the rows last seen otherwise.
async fn wait_table(
    browser: &Client,
    id: &str,
    within: Duration,
    ok: impl Fn(&[Vec<String>]) -> bool,
) -> Result<Vec<Vec<String>>, Vec<Vec<String>>> {
    let deadline = Instant::now() + within;
    loop {
        let rows = table(browser, id).await;
        if ok(&rows) {
            return Ok(rows);
        }
        if Instant::now() > deadline {
            return Err(rows);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn state_of(rows: &[Vec<String>], name: &str) -> Option<String> {
    rows.iter().find(|r| r[0] == name).map(|r| r[1].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_cluster_live_and_a_killed_node_going_down() {
    let Some((chromium, chromedriver)) = browser() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must install chromium and chromium-driver (see .ci/run)"
        );
        eprintln!(
            "SKIPPED: the cluster page test needs `chromium` and `chromedriver` on PATH \
             (Debian: apt-get install chromium chromium-driver)"
        );
        return;
    };
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    // Every node runs one client that takes the lock and holds it for longer than the test, a
    // once-per-cluster job (node n1 schedules it) and a bucketed executor with a few tasks.
    let jobs = dir.path().join("jobs.json");
    let jobs_workload = json!({
        "kind": "sched_hammer", "scheduler": "n1", "poll_ms": 500,
        "jobs": [{ "id": JOB, "every_ms": 1_000, "work_ms": 10 }], "history": "log/sched.jsonl",
    });
    std::fs::write(&jobs, jobs_workload.to_string()).unwrap();
    let queues = dir.path().join("queues.json");
    let queues_workload = json!({
        "kind": "exec_hammer", "executor": EXECUTOR, "buckets": 4, "count": 20, "work_ms": 20,
        "batch_size": 1, "history": "log/exec.jsonl",
    });
    std::fs::write(&queues, queues_workload.to_string()).unwrap();
    let (jobs, queues) = (jobs.display().to_string(), queues.display().to_string());
    let mut cluster = tokio::task::block_in_place(|| {
        crate::common::locks::hammer_on_clocks(
            dir.path(),
            3,
            &[LOCK],
            1,
            600_000,
            &[],
            &["--workload", &jobs, "--workload", &queues],
        )
    });
    let token = cluster
        .admin_token()
        .expect("test clusters have a token")
        .to_owned();

    // The page itself is open to all and holds nothing secret.
    let page = format!("http://{}/", cluster.admin_addr(0));
    let (status, html) = tokio::task::block_in_place(|| {
        AdminClient::new(cluster.admin_addr(0))
            .get_text("")
            .unwrap()
    });
    assert_eq!(status, 200);
    assert!(html.contains("<script>") && !html.contains(&token));

    let driver = Driver::start(&chromedriver);
    let browser = open_browser(&driver, &chromium).await;
    // Without the token the page asks for it.
    browser.goto(&page).await.unwrap();
    assert!(
        wait_until_true(&browser, "!document.getElementById('login').hidden").await,
        "the page without a token did not ask for one"
    );

    // With it (in the fragment, which the browser never sends), the page fills itself in.
    browser
        .goto(&format!("{page}#token={token}"))
        .await
        .unwrap();
    let names: Vec<String> = (0..3).map(|i| cluster.name(i).to_owned()).collect();
    let members = wait_table(&browser, "members", Duration::from_secs(10), |rows| {
        names
            .iter()
            .all(|n| state_of(rows, n).as_deref() == Some("up"))
    })
    .await
    .unwrap_or_else(|rows| panic!("the page never showed 3 nodes up: {rows:?}"));
    assert_eq!(members.len(), 3, "{members:?}");
    // The lock, whichever node serves it: held by one node's client, the two others' clients
    // queued behind it (each node serves only its slots of names; the page's node asks the
    // others).
    let lock = format!("n:{LOCK}");
    let locks = wait_table(&browser, "locks", Duration::from_secs(30), |rows| {
        rows.iter().any(|r| {
            r[0] == lock
                && names.contains(&r[1])
                && r[4]
                    .split(", ")
                    .filter(|w| names.contains(&w.to_string()))
                    .count()
                    == 2
                && names.contains(&r[5])
        })
    })
    .await
    .unwrap_or_else(|rows| {
        panic!(
            "the page never showed {lock} held, two waiters and its server: {rows:?}\n{}",
            logs(&cluster)
        )
    });
    eprintln!("locks on {}'s page: {locks:?}", names[0]);
    let group = browser
        .execute(
            "return document.getElementById('group').textContent",
            Vec::new(),
        )
        .await
        .unwrap();
    let group = group.as_str().unwrap_or_default();
    assert!(
        group.contains("term") && group.contains("leader n"),
        "{group}"
    );
    // The job with its runner, schedule and a next run; then a last run on some node.
    let jobs = wait_table(&browser, "jobs", Duration::from_secs(30), |rows| {
        rows.iter().any(|r| {
            r[0] == JOB
                && r[1] == "hammer"
                && r[2].starts_with("every 1 s from ")
                && !r[3].is_empty()
                && names.iter().any(|n| r[5].contains(&format!(" on {n} at ")))
        })
    })
    .await
    .unwrap_or_else(|rows| panic!("the page never showed {JOB} and a run of it: {rows:?}"));
    eprintln!("jobs: {jobs:?}");
    // The executor, with what its tasks did on this node.
    let executors = wait_table(&browser, "executors", Duration::from_secs(30), |rows| {
        rows.iter().any(|r| r[0] == EXECUTOR)
    })
    .await
    .unwrap_or_else(|rows| panic!("the page never showed executor {EXECUTOR}: {rows:?}"));
    eprintln!("executors: {executors:?}");

    // A mark the page keeps only as long as it is not reloaded.
    browser
        .execute("window.stillTheSamePage = true", Vec::new())
        .await
        .unwrap();
    let victim = 1;
    let killed = Instant::now();
    tokio::task::block_in_place(|| cluster.kill(victim));
    let within = detection_bound(3) + OBSERVATION_SLACK + Duration::from_secs(1);
    let victim_name = names[victim].clone();
    let after = wait_table(&browser, "members", within, |rows| {
        state_of(rows, &victim_name).as_deref() == Some("down")
    })
    .await
    .unwrap_or_else(|rows| {
        panic!("the page did not show {victim_name} down within {within:?} of the kill: {rows:?}")
    });
    eprintln!(
        "the page showed {victim_name} down {:?} after the kill",
        killed.elapsed()
    );
    for (i, name) in names.iter().enumerate() {
        if i != victim {
            assert_eq!(state_of(&after, name).as_deref(), Some("up"), "{after:?}");
        }
    }
    assert_eq!(
        browser
            .execute("return window.stillTheSamePage === true", Vec::new())
            .await
            .unwrap(),
        Value::Bool(true),
        "the page was reloaded"
    );

    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cluster-page.png");
    std::fs::write(&shot, browser.screenshot().await.unwrap()).unwrap();
    eprintln!("screenshot of the page: {}", shot.display());
    browser.close().await.unwrap();
}

/// Whether `condition` (a JavaScript expression) becomes true on the page within 10 s.
async fn wait_until_true(browser: &Client, condition: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let value = browser
            .execute(&format!("return {condition}"), Vec::new())
            .await
            .unwrap();
        if value == Value::Bool(true) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
