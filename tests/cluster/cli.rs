//! The `colony` command as operators use it: settings precedence, start-up errors, `status`.

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::common::serial;
use colony_runtime::testkit::{AdminClient, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_colony");

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(cmd: &mut Command) -> Running {
    Running(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn colony"),
    )
}

fn wait_healthy(admin: &AdminClient) {
    for _ in 0..400 {
        if admin.healthy() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("node never became healthy");
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run colony")
}

#[test]
fn flags_beat_environment_which_beats_the_config_file() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (port, admin_port) = (free_port(), free_port());
    let config = dir.path().join("colony.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"from-file\"\ncookie = \"file-cookie\"\ncluster_size = 3\nbind = \"127.0.0.1:{port}\"\n\
             admin = \"127.0.0.1:{admin_port}\"\nhome = \"{}\"\n",
            dir.path().join("file-home").display()
        ),
    )
    .unwrap();
    let _a = spawn(
        Command::new(BIN)
            .arg("node")
            .arg("--config")
            .arg(&config)
            .args(["--name", "from-flag"])
            .env("COLONY_COOKIE", "env-cookie")
            .env("COLONY_HOME", dir.path().join("env-home")),
    );
    let admin = AdminClient::new(format!("127.0.0.1:{admin_port}").parse().unwrap());
    wait_healthy(&admin);
    let status = admin.cluster().unwrap();
    assert_eq!(status.name, "from-flag", "the flag wins over the file");
    assert_eq!(
        status.cluster_size, 3,
        "the file fills what flags and environment leave unset"
    );
    assert_eq!(status.quorum, 2);
    assert!(
        dir.path().join("env-home/state").is_dir(),
        "COLONY_HOME wins over the file"
    );
    assert!(!dir.path().join("file-home").exists());
    assert!(
        dir.path().join("env-home/shared/config").is_dir(),
        "shared home defaults under home"
    );

    // The environment's cookie is the one in force: a node holding it joins.
    let b_admin = free_port();
    let _b = spawn(
        Command::new(BIN)
            .arg("node")
            .args([
                "--name",
                "b",
                "--cookie",
                "env-cookie",
                "--cluster-size",
                "3",
            ])
            .args(["--bind", &format!("127.0.0.1:{}", free_port())])
            .args(["--seeds", &format!("127.0.0.1:{port}")])
            .args(["--admin", &format!("127.0.0.1:{b_admin}")])
            .arg("--home")
            .arg(dir.path().join("b")),
    );
    let joined = (0..400).any(|_| {
        std::thread::sleep(Duration::from_millis(25));
        admin
            .cluster()
            .is_ok_and(|s| s.members.iter().filter(|m| m.state.is_up()).count() == 2)
    });
    assert!(
        joined,
        "a node with the environment's cookie could not join"
    );

    // `colony status` prints the same view as a table and as JSON.
    let table =
        run(Command::new(BIN).args(["status", "--admin", &format!("127.0.0.1:{admin_port}")]));
    assert!(table.status.success());
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(
        text.contains("NAME") && text.contains("from-flag") && text.contains("INCARNATION"),
        "{text}"
    );
    let json = run(Command::new(BIN).args([
        "status",
        "--json",
        "--admin",
        &format!("127.0.0.1:{admin_port}"),
    ]));
    let parsed: serde_json::Value =
        serde_json::from_slice(&json.stdout).expect("status --json is JSON");
    assert_eq!(parsed["name"], "from-flag");
    assert_eq!(parsed["members"].as_array().unwrap().len(), 2);
    assert!(parsed["has_quorum"].as_bool().unwrap());
}

/// Runs `colony node --home HOME ARGS...` (with no cookie in the environment), expects it to
/// fail to start, and returns what it wrote to stderr.
fn refused_start(home: &std::path::Path, args: &[&str]) -> String {
    let out = run(Command::new(BIN)
        .arg("node")
        .arg("--home")
        .arg(home)
        .args(args)
        .env_remove("COLONY_COOKIE"));
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn an_unusable_home_stops_start_up_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let bind = format!("127.0.0.1:{}", free_port());
    let err = refused_start(&file.join("home"), &["--cookie", "c", "--bind", &bind]);
    assert!(
        err.contains("local home") && err.contains("not usable"),
        "{err}"
    );
}

#[test]
fn a_missing_cookie_is_named_with_where_to_set_it() {
    let dir = tempfile::tempdir().unwrap();
    let err = refused_start(dir.path(), &[]);
    assert!(
        err.contains("cookie") && err.contains("COLONY_COOKIE"),
        "{err}"
    );
}

/// A node with a cookie on a free port and `extra` flags is refused, saying each of `says`.
fn refused_saying(extra: &[&str], says: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let base = ["--cookie", "c", "--bind", "127.0.0.1:0"];
    let args: Vec<&str> = base.iter().chain(extra).copied().collect();
    let err = refused_start(dir.path(), &args);
    assert!(says.iter().all(|s| err.contains(s)), "{err}");
}

#[test]
fn a_clock_offset_without_fault_injection_is_refused_with_a_clear_error() {
    refused_saying(
        &["--clock-offset-ms=-200"],
        &["clock_offset_ms", "fault_injection"],
    );
}

/// Seeds say the node is one of several; a cluster size of 1 (also the default) says it is
/// alone, with a quorum of itself: refused, naming the setting.
#[test]
fn a_cluster_size_of_one_with_seeds_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let base = [
        "--cookie",
        "c",
        "--bind",
        "127.0.0.1:0",
        "--seeds",
        "127.0.0.1:7400",
    ];
    for extra in [&[][..], &["--cluster-size", "1"][..]] {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let err = refused_start(dir.path(), &args);
        assert!(
            err.contains("cluster_size") && err.contains("seeds are given"),
            "{err}"
        );
    }
}

#[test]
fn status_against_a_dead_endpoint_fails_cleanly() {
    let out =
        run(Command::new(BIN).args(["status", "--admin", &format!("127.0.0.1:{}", free_port())]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin endpoint"));
}

#[test]
fn a_non_loopback_admin_endpoint_without_a_token_is_refused_at_start() {
    refused_saying(
        &["--admin", "0.0.0.0:0"],
        &["not a loopback address", "COLONY_ADMIN_TOKEN"],
    );
}

/// `colony node` logs to stdout and to `log/colony.<date>.log` in its local home, as JSON when
/// asked, and keeps no more log files than `--log-max-files` (older ones go at start).
#[test]
fn logs_go_to_stdout_and_to_bounded_files_in_the_local_home() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let log = home.join("log");
    std::fs::create_dir_all(&log).unwrap();
    let old: Vec<String> = (1..=5)
        .map(|d| format!("colony.2026-01-0{d}.log"))
        .collect();
    for name in &old {
        std::fs::write(log.join(name), "{}\n").unwrap();
    }
    std::fs::write(log.join("unrelated.txt"), "kept\n").unwrap();
    let admin_port = free_port();
    let stdout = std::fs::File::create(dir.path().join("stdout")).unwrap();
    let node = Running(
        Command::new(BIN)
            .arg("node")
            .arg("--home")
            .arg(&home)
            .args(["--cookie", "c", "--name", "logger"])
            .args(["--bind", &format!("127.0.0.1:{}", free_port())])
            .args(["--admin", &format!("127.0.0.1:{admin_port}")])
            .args(["--log-format", "json", "--log-max-files", "3"])
            .env("RUST_LOG", "info")
            .stdout(stdout)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn colony"),
    );
    wait_healthy(&AdminClient::new(
        format!("127.0.0.1:{admin_port}").parse().unwrap(),
    ));
    let files = |log: &std::path::Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(log)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("colony."))
            .collect();
        names.sort();
        names
    };
    // The appender removes the oldest by creation time, which files written within one clock
    // tick share: which two old files stay is the file system's call, how many is not.
    let kept = files(&log);
    assert_eq!(kept.len(), 3, "{kept:?}");
    let new: Vec<&String> = kept.iter().filter(|n| !old.contains(n)).collect();
    assert_eq!(new.len(), 1, "one file of the node's own: {kept:?}");
    assert!(
        log.join("unrelated.txt").exists(),
        "other files are left alone"
    );
    // The node's own file: JSON lines, with the start-up among them. The file writer runs on
    // its own thread; the line is there once the node answers, give or take that hand-off.
    let current = log.join(new[0]);
    let started = (0..200).any(|_| {
        let text = std::fs::read_to_string(&current).unwrap_or_default();
        if text.contains("node started") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
        false
    });
    assert!(started, "{}", std::fs::read_to_string(&current).unwrap());
    for line in std::fs::read_to_string(&current).unwrap().lines() {
        let event: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        assert!(
            event["level"].is_string() && event["fields"].is_object(),
            "{line}"
        );
    }
    drop(node);
    let out = std::fs::read_to_string(dir.path().join("stdout")).unwrap();
    assert!(out.lines().any(|l| l.contains("node started")), "{out}");
}

#[test]
fn components_are_listed_and_switched_through_the_admin_endpoint() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let admin_port = free_port();
    let admin_addr = format!("127.0.0.1:{admin_port}");
    let _node = spawn(
        Command::new(BIN)
            .args(["node", "--name", "solo", "--cookie", "c"])
            .args(["--bind", &format!("127.0.0.1:{}", free_port())])
            .args(["--admin", &admin_addr])
            .arg("--home")
            .arg(dir.path().join("home"))
            .env("COLONY_ADMIN_TOKEN", "t0ken"),
    );
    wait_healthy(&AdminClient::new(admin_addr.parse().unwrap()));
    let colony = |args: &[&str]| {
        run(Command::new(BIN)
            .arg("components")
            .args(["--admin", &admin_addr])
            .args(args)
            .env("COLONY_ADMIN_TOKEN", "t0ken"))
    };
    let off = colony(&["disable", "mail-digest"]);
    assert!(off.status.success(), "{off:?}");
    assert!(String::from_utf8_lossy(&off.stdout).contains("disabled on every node"));
    // The bare node has no components of its own.
    let list = colony(&["list", "--json"]);
    assert!(list.status.success(), "{list:?}");
    let listed: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(listed, serde_json::json!([]));
    // A bad name is refused with the reason; so is a missing token.
    let bad = colony(&["enable", ""]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("1 to 255 bytes"),
        "{bad:?}"
    );
    let anonymous = run(Command::new(BIN)
        .args([
            "components",
            "--admin",
            &admin_addr,
            "enable",
            "mail-digest",
        ])
        .env_remove("COLONY_ADMIN_TOKEN"));
    assert!(!anonymous.status.success());
}

/// `colony status` prints what the cluster page shows: members, the group, the locks this node
/// serves with their holders, caches with their counters, executors and components.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)] // the lock only keeps whole tests from overlapping
async fn status_summarises_members_group_locks_caches_executors_and_components() {
    use colony::actors::caches::{CacheSettings, CachesExt};
    use colony::{LocksExt, Primitives};
    let _serial = serial();
    let home = tempfile::tempdir().unwrap();
    let node = colony::node_with(Primitives::default())
        .name("summed")
        .home(home.path())
        .bind("127.0.0.1:0")
        .cookie("c")
        .admin("127.0.0.1:0")
        .admin_token("tok")
        .start()
        .await
        .unwrap();
    let guard = node
        .locks()
        .lock_for_name("nightly-report")
        .unwrap()
        .lock()
        .await
        .unwrap();
    let users = node
        .caches()
        .get_cache::<String, u64>("users", None, CacheSettings::local())
        .unwrap();
    users.put("a".into(), 1).await.unwrap();
    assert_eq!(users.get(&"a".into()).await.unwrap(), Some(1));
    let admin = node.admin_addr().unwrap().to_string();
    let status = |extra: &[&str]| {
        let mut cmd = Command::new(BIN);
        cmd.args(["status", "--admin", &admin]).args(extra);
        tokio::task::block_in_place(|| run(&mut cmd))
    };

    let refused = status(&[]);
    assert!(!refused.status.success(), "no token, no summary");
    let table = status(&["--token", "tok"]);
    assert!(table.status.success(), "{table:?}");
    let text = String::from_utf8(table.stdout).unwrap();
    for shown in [
        "summed",
        "consensus group",
        "locks (1 held by this node",
        "n:nightly-report",
        "caches",
        "users",
        "executors",
        "components",
    ] {
        assert!(text.contains(shown), "no `{shown}` in:\n{text}");
    }
    let lock_row = text
        .lines()
        .find(|l| l.contains("n:nightly-report"))
        .unwrap();
    assert!(lock_row.contains("summed"), "holder not named: {lock_row}");
    let token = guard.token().to_string();
    assert!(lock_row.contains(&token), "token not shown: {lock_row}");
    let cache_row = text.lines().find(|l| l.starts_with("users ")).unwrap();
    let figures: Vec<&str> = cache_row.split_whitespace().collect();
    assert_eq!(figures[1..4], ["local", "1", "1"], "{cache_row}");

    let json = status(&["--token", "tok", "--json"]);
    assert!(json.status.success(), "{json:?}");
    let parsed: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(parsed["name"], "summed");
    assert_eq!(parsed["members"][0]["state"], "up");
    assert!(parsed["members"][0]["replica"].is_string());
    assert_eq!(parsed["locks"]["served"][0]["name"], "n:nightly-report");
    assert_eq!(parsed["locks"]["served"][0]["token"], token.as_str());
    assert_eq!(parsed["caches"]["caches"][0]["stats"]["hits"], 1);
    assert!(parsed["executors"]["executors"].is_array());
    assert!(parsed["components"].is_array());
    guard.unlock().await.unwrap();
    node.shutdown().await;
}

/// `--log-max-size` starts a new file whenever the current one would pass the size, and
/// `--log-max-files` still bounds how many stay.
#[test]
fn log_files_roll_by_size_and_stay_bounded_in_count() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let admin_port = free_port();
    let _node = spawn(
        Command::new(BIN)
            .arg("node")
            .arg("--home")
            .arg(&home)
            .args(["--cookie", "c", "--name", "roller"])
            .args(["--bind", &format!("127.0.0.1:{}", free_port())])
            .args(["--admin", &format!("127.0.0.1:{admin_port}")])
            .args(["--log-max-size", "1K", "--log-max-files", "3"])
            .env("RUST_LOG", "debug"),
    );
    let admin = AdminClient::new(format!("127.0.0.1:{admin_port}").parse().unwrap());
    wait_healthy(&admin);
    let files = || -> Vec<(String, u64)> {
        // A file listed may be pruned before it is looked at: it is gone, not an error.
        std::fs::read_dir(home.join("log"))
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("colony."))
            .filter_map(|e| {
                let len = e.metadata().ok()?.len();
                Some((e.file_name().into_string().unwrap(), len))
            })
            .collect()
    };
    // Debug logging writes kilobytes a second: a fourth file, and so a pruned first, comes
    // soon. Each request to the endpoint logs as well.
    let rolled = (0..500).any(|_| {
        let _ = admin.cluster();
        // colony.<day>.<n>.log: the n-th file of the day after the first.
        let index = |n: &str| n.rsplit('.').nth(1).and_then(|i| i.parse::<u32>().ok());
        if files()
            .iter()
            .any(|(n, _)| index(n).is_some_and(|i| i >= 3))
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
        false
    });
    assert!(rolled, "no fourth file: {:?}", files());
    let kept = files();
    assert!(kept.len() <= 3, "{kept:?}");
    for (name, len) in &kept {
        assert!(*len <= 1024, "{name} has {len} bytes");
    }
}

/// Every log line about a link names the peer: the link's span carries its member name.
#[test]
fn log_lines_about_a_link_name_the_peer() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (a_port, a_admin) = (free_port(), free_port());
    let node = |name: &str, port: u16, admin: u16, seeds: &[u16]| {
        let mut cmd = Command::new(BIN);
        cmd.arg("node")
            .args(["--name", name, "--cookie", "c", "--cluster-size", "2"])
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .args(["--admin", &format!("127.0.0.1:{admin}")])
            .arg("--home")
            .arg(dir.path().join(name))
            .env("RUST_LOG", "info,colony_runtime::transport=debug");
        for seed in seeds {
            cmd.args(["--seeds", &format!("127.0.0.1:{seed}")]);
        }
        spawn(&mut cmd)
    };
    let _a = node("alpha", a_port, a_admin, &[]);
    let _b = node("bravo", free_port(), free_port(), &[a_port]);
    let admin = AdminClient::new(format!("127.0.0.1:{a_admin}").parse().unwrap());
    let log = dir.path().join("alpha/log");
    // alpha dials bravo once it sees it: the dialler's "link ready" is logged in its span.
    let named = (0..400).any(|_| {
        std::thread::sleep(Duration::from_millis(25));
        let _ = admin.cluster();
        std::fs::read_dir(&log).into_iter().flatten().any(|e| {
            let text = std::fs::read_to_string(e.unwrap().path()).unwrap_or_default();
            text.lines()
                .any(|l| l.contains("link ready") && l.contains("link{peer=bravo id="))
        })
    });
    assert!(named, "no `link ready` line naming bravo in alpha's logs");
}
