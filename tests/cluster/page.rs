//! The live cluster page (`GET /`) in a real headless Chromium, driven through chromedriver:
//! three node processes, a lock held by the test's workload, then a node killed while the page
//! stays open. Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them); without
//! them the test says so and passes locally, and fails under CI, where they must be.

// The test runs on its own runtime; the lock only keeps whole tests from overlapping.
#![allow(clippy::await_holding_lock)]

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{OBSERVATION_SLACK, detection_bound, logs, serial};
use colony_runtime::testkit::{AdminClient, TestCluster, free_port};
use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};

const LOCK: &str = "page-shown";

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

/// Every node listing the lock as held, with the holder's name.
fn lock_listings(cluster: &TestCluster) -> Vec<(usize, String)> {
    let held = |i: usize| {
        let locks = cluster.admin(i).view("locks").ok()?;
        let served = locks["served"].as_array()?.clone();
        let lock = served
            .iter()
            .find(|l| l["name"] == format!("n:{LOCK}") && !l["holder"].is_null())?;
        Some((i, lock["holder"]["node_name"].as_str()?.to_owned()))
    };
    cluster.all().into_iter().filter_map(held).collect()
}

/// The node serving the lock and the holder's name, once exactly one node lists it held.
fn lock_server(cluster: &TestCluster) -> Option<(usize, String)> {
    let listings = lock_listings(cluster);
    (listings.len() == 1).then(|| listings[0].clone())
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
    // Every node runs one client that takes the lock and holds it for longer than the test.
    let mut cluster = tokio::task::block_in_place(|| {
        crate::common::locks::hammer(dir.path(), 3, &[LOCK], 1, 600_000)
    });
    let token = cluster
        .admin_token()
        .expect("test clusters have a token")
        .to_owned();
    tokio::task::block_in_place(|| {
        // Lock slots move to nodes as they join the group: look for the lock once every slot
        // has an owner and each of the three nodes serves some.
        let spread = cluster.wait_until(Duration::from_secs(30), |c| {
            c.status(0).is_some_and(|s| {
                let owners: std::collections::HashSet<_> = s.consensus.lock_slots.iter().collect();
                !owners.contains(&None) && owners.len() == 3
            })
        });
        assert!(spread.is_some(), "slots never spread:\n{}", logs(&cluster));
    });

    // The page itself is open to all and holds nothing secret.
    let first = format!("http://{}/", cluster.admin_addr(0));
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
    browser.goto(&first).await.unwrap();
    assert!(
        wait_until_true(&browser, "!document.getElementById('login').hidden").await,
        "the page without a token did not ask for one"
    );

    // With it (in the fragment, which the browser never sends), the page of the node serving
    // the lock fills itself in. The slot may still move to another node after the spread
    // (a rebalance): then, and only then, the page of the new server is opened.
    let names: Vec<String> = (0..3).map(|i| cluster.name(i).to_owned()).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (server, locks) = loop {
        let (server, holder) = tokio::task::block_in_place(|| {
            let found = cluster.wait_until(Duration::from_secs(30), |c| lock_server(c).is_some());
            assert!(found.is_some(), "nobody held the lock:\n{}", logs(&cluster));
            lock_server(&cluster).unwrap()
        });
        let page = format!("http://{}/", cluster.admin_addr(server));
        browser
            .goto(&format!("{page}#token={token}"))
            .await
            .unwrap();
        let members = wait_table(&browser, "members", Duration::from_secs(10), |rows| {
            names
                .iter()
                .all(|n| state_of(rows, n).as_deref() == Some("up"))
        })
        .await
        .unwrap_or_else(|rows| panic!("the page never showed 3 nodes up: {rows:?}"));
        assert_eq!(members.len(), 3, "{members:?}");
        let shown = wait_table(&browser, "locks", Duration::from_secs(5), |rows| {
            rows.iter()
                .any(|r| r[0] == format!("n:{LOCK}") && r[1] == holder)
        })
        .await;
        match shown {
            Ok(rows) => break (server, rows),
            Err(rows) => {
                let now = tokio::task::block_in_place(|| lock_listings(&cluster));
                assert!(
                    now != [(server, holder.clone())] && Instant::now() < deadline,
                    "node {server}'s page never showed {holder} holding {LOCK}: {rows:?}; \
                     listed now by {now:?}"
                );
                eprintln!("the lock moved from node {server}: now listed by {now:?}");
            }
        }
    };
    // The two other nodes' clients queue behind the holder.
    let waiting = &locks.iter().find(|r| r[0] == format!("n:{LOCK}")).unwrap()[4];
    assert!(!waiting.is_empty(), "no waiters shown: {locks:?}");
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

    // A mark the page keeps only as long as it is not reloaded.
    browser
        .execute("window.stillTheSamePage = true", Vec::new())
        .await
        .unwrap();
    let victim = (server + 1) % 3;
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
