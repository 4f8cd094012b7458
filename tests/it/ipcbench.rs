//! ipcbench: every mechanism moves its data intact, a corrupted byte is seen, `--json` has the
//! issue's shape, and nothing is left behind — after a run, and after a signal at any moment.
//! Small and short runs (`--size 65536 --duration 0.05`): these test the bench, they do not
//! measure anything.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use ipclab::sys::ipc::Key;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde_json::Value;

use crate::harness::{children_of, is_running, sysv_keys, wait_until, Finished, Lab, Running};

const MECHANISMS: [&str; 8] = [
    "pipe",
    "fifo",
    "unix-socket",
    "msgq",
    "shm-spin",
    "shm-sem",
    "mmap-devzero",
    "memcpy",
];

/// A short run: one chunk size, 50 ms per measurement.
const SHORT: [&str; 4] = ["--size", "65536", "--duration", "0.05"];

/// `ipcbench args…` in the lab, with `$TMPDIR` (where the FIFOs go) in the lab's directory.
fn ipcbench(lab: &Lab, args: &[&str]) -> Command {
    let mut command = lab.command("ipcbench", args);
    command.env("TMPDIR", lab.dir());
    command
}

fn run(lab: &Lab, args: &[&str]) -> Finished {
    Running::spawn(ipcbench(lab, args)).finish()
}

/// What a run left behind besides what the lab checks itself (queue 0x8000+ID, segment
/// 0x9000+ID): a semaphore set 0x9000+ID, anything in `$TMPDIR`.
fn left_behind(lab: &Lab) -> Vec<String> {
    let mut found = Vec::new();
    let semaphores = i64::from(Key::segment(lab.id()).raw());
    if sysv_keys("sem").contains(&semaphores) {
        found.push(format!("semaphore set {semaphores:#x}"));
    }
    let entries = std::fs::read_dir(lab.dir()).unwrap();
    found.extend(entries.map(|e| e.unwrap().path().display().to_string()));
    found.extend(lab.leftovers());
    found
}

fn assert_nothing_left(lab: &Lab, run: &dyn std::fmt::Display) {
    let left = left_behind(lab);
    assert!(left.is_empty(), "left behind: {left:?}\n{run}");
}

fn json(run: &Finished) -> Value {
    serde_json::from_str(&run.stdout()).unwrap_or_else(|e| panic!("not JSON: {e}\n{run}"))
}

fn keys(object: &Value) -> BTreeSet<&str> {
    object
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect()
}

/// The result objects of `document` for `mechanism` and `test`.
fn results<'a>(document: &'a Value, mechanism: &str, test: &str) -> Vec<&'a Value> {
    document["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["mechanism"] == mechanism && r["test"] == test)
        .collect()
}

#[test]
fn every_mechanism_moves_its_data_intact_and_json_has_the_issues_shape() {
    let lab = Lab::new();
    let run = run(&lab, &[&SHORT[..], &["--json"]].concat());
    run.assert_success();
    let document = json(&run);
    assert_eq!(
        keys(&document),
        BTreeSet::from(["ipcbench", "cpus", "results"])
    );
    assert_eq!(document["ipcbench"], 1, "{run}");
    assert!(document["cpus"].as_u64().is_some_and(|n| n >= 1), "{run}");
    // one object per measurement, one per line, as the issue shows it
    let objects = document["results"].as_array().unwrap();
    assert_eq!(objects.len(), 2 * MECHANISMS.len(), "{run}");
    assert_eq!(run.lines().len(), objects.len() + 2, "{run}");
    for mechanism in MECHANISMS {
        let latency = results(&document, mechanism, "latency");
        assert_eq!(latency.len(), 1, "{mechanism}\n{run}");
        let latency = latency[0];
        let shape = [
            "mechanism",
            "test",
            "bytes",
            "round_trips",
            "p50_us",
            "p99_us",
        ];
        assert_eq!(keys(latency), BTreeSet::from(shape), "{run}");
        assert_eq!(latency["bytes"], 64);
        assert!(latency["round_trips"].as_u64().unwrap() >= 100, "{run}");
        let (p50, p99) = (latency["p50_us"].as_f64(), latency["p99_us"].as_f64());
        assert!(p50.unwrap() > 0.0 && p99.unwrap() >= p50.unwrap(), "{run}");

        let throughput = results(&document, mechanism, "throughput");
        assert_eq!(throughput.len(), 1, "{mechanism}\n{run}");
        let throughput = throughput[0];
        let shape = [
            "mechanism",
            "test",
            "bytes",
            "total_bytes",
            "gb_per_s",
            "verified",
        ];
        assert_eq!(keys(throughput), BTreeSet::from(shape), "{run}");
        assert_eq!(throughput["bytes"], 65536);
        let total = throughput["total_bytes"].as_u64().unwrap();
        assert!(total >= 65536 && total % 65536 == 0, "{run}");
        assert!(throughput["gb_per_s"].as_f64().unwrap() > 0.0, "{run}");
        assert_eq!(
            throughput["verified"], true,
            "{mechanism}: data corrupted\n{run}"
        );
    }
    assert_nothing_left(&lab, &run);
}

#[test]
fn a_corrupted_byte_is_detected_by_every_mechanism() {
    let lab = Lab::new();
    let run = run(
        &lab,
        &[&SHORT[..], &["--json", "--corrupt-one-byte"]].concat(),
    );
    let names: Vec<String> = MECHANISMS.iter().map(|m| format!("{m} 64 KiB")).collect();
    run.assert_failure(
        1,
        &format!(
            "data arrived corrupted (verified: false): {}",
            names.join(", ")
        ),
    );
    let document = json(&run);
    for mechanism in MECHANISMS {
        let throughput = results(&document, mechanism, "throughput");
        assert_eq!(throughput[0]["verified"], false, "{mechanism}\n{run}");
    }
    assert_nothing_left(&lab, &run);
}

#[test]
fn the_table_shows_every_mechanism_the_cpus_and_the_fraction_of_memcpy() {
    let lab = Lab::new();
    let run = run(&lab, &SHORT);
    run.assert_success();
    let text = run.stdout();
    let cpus = std::thread::available_parallelism().unwrap();
    assert!(
        text.starts_with(&format!("ipcbench on {cpus} CPUs: ")),
        "{run}"
    );
    for mechanism in MECHANISMS {
        let rows: Vec<String> = run
            .lines()
            .into_iter()
            .filter(|l| l.split_whitespace().next() == Some(mechanism))
            .collect();
        // the table's row, then a bar in each chart
        assert_eq!(rows.len(), 3, "{mechanism}\n{run}");
        let fields: Vec<&str> = rows[0].split_whitespace().collect();
        assert_eq!(fields.len(), 5, "{mechanism}: {:?}\n{run}", rows[0]);
        assert!(fields[4].ends_with('%'), "{run}");
        assert!(rows[1].contains('█') || mechanism == "memcpy", "{run}");
    }
    let memcpy = run.lines().into_iter().find(|l| l.starts_with("memcpy"));
    assert!(memcpy.unwrap().ends_with("100%"), "{run}");
    assert!(text.contains("64-byte round trip, p50 (µs, shorter is faster, log scale)"));
    assert_nothing_left(&lab, &run);
}

#[test]
fn chunks_larger_than_a_message_and_odd_sizes_arrive_intact() {
    let lab = Lab::new();
    // msgmax is 8 KiB by default: 1 MiB goes as 128 messages; 1000 and 8193 are no multiple
    // of anything the mechanisms like.
    let sizes = "1000,8193,1M";
    let args = ["--size", sizes, "--duration", "0.05", "--json"];
    let only = ["--only", "msgq,shm-spin,shm-sem,pipe"];
    let run = run(&lab, &[&args[..], &only].concat());
    run.assert_success();
    let document = json(&run);
    let throughput = document["results"].as_array().unwrap();
    let checked: Vec<&Value> = throughput
        .iter()
        .filter(|r| r["test"] == "throughput")
        .collect();
    assert_eq!(checked.len(), 4 * 3, "{run}");
    for result in checked {
        assert_eq!(result["verified"], true, "{result}\n{run}");
    }
    assert_nothing_left(&lab, &run);
}

/// Starts a long run of `mechanism` and waits until it is measuring: its child is there and
/// so is the object that `ready` looks for.
fn measuring(lab: &Lab, mechanism: &str, ready: &dyn Fn() -> bool) -> (Running, Pid) {
    let running = Running::spawn(ipcbench(
        lab,
        &["--only", mechanism, "--size", "65536", "--duration", "5"],
    ));
    wait_until(&format!("{mechanism} to be measuring"), || {
        ready() && !children_of(running.pid()).is_empty()
    });
    let child = children_of(running.pid())[0];
    (running, child)
}

/// What each mechanism's run makes that shows it is under way.
fn its_object(lab: &Lab, mechanism: &str) -> Box<dyn Fn() -> bool> {
    let (id, dir) = (lab.id(), lab.dir().to_path_buf());
    let key = |table: &'static str, key: Key| {
        Box::new(move || sysv_keys(table).contains(&i64::from(key.raw()))) as Box<dyn Fn() -> bool>
    };
    match mechanism {
        "fifo" => Box::new(move || std::fs::read_dir(&dir).unwrap().next().is_some()),
        "msgq" => key("msg", Key::queue(id)),
        "shm-spin" => key("shm", Key::segment(id)),
        "shm-sem" => key("sem", Key::segment(id)),
        _ => Box::new(|| true),
    }
}

#[test]
fn a_signal_while_measuring_leaves_nothing_behind_and_ends_the_child() {
    for (mechanism, signal) in [
        ("pipe", Signal::SIGINT),
        ("fifo", Signal::SIGINT),
        ("unix-socket", Signal::SIGTERM),
        ("msgq", Signal::SIGINT),
        ("shm-spin", Signal::SIGHUP),
        ("shm-sem", Signal::SIGINT),
        ("mmap-devzero", Signal::SIGTERM),
    ] {
        let lab = Lab::new();
        let ready = its_object(&lab, mechanism);
        let (running, child) = measuring(&lab, mechanism, &*ready);
        running.signal(signal);
        let run = running.finish_at_once();
        assert_eq!(run.code(), Some(128 + signal as i32), "{mechanism}\n{run}");
        assert!(
            run.stderr.is_empty(),
            "{mechanism}: a signal is no error\n{run}"
        );
        assert!(
            !is_running(child),
            "{mechanism}: the child {child} lives on"
        );
        assert_nothing_left(&lab, &run);
    }
}

#[test]
fn a_signal_at_any_moment_leaves_nothing_behind() {
    // Not synchronisation: moments spread over a run (making the objects, forking, measuring,
    // removing), to stop it at whatever it is doing then.
    for (round, millis) in [0u64, 1, 3, 7, 15, 30, 60, 120].into_iter().enumerate() {
        let lab = Lab::new();
        let only = match round % 2 {
            0 => "shm-sem,fifo,msgq",
            _ => "fifo,shm-spin,mmap-devzero",
        };
        let running = Running::spawn(ipcbench(&lab, &["--only", only, "--duration", "0.02"]));
        std::thread::sleep(Duration::from_millis(millis));
        let children = children_of(running.pid());
        let _ = nix::sys::signal::kill(running.pid(), Signal::SIGINT);
        let run = running.finish();
        // 130 (stopped and cleaned up), 0 (it had finished), or killed by the signal before
        // it could catch it (before it made anything)
        let killed = std::os::unix::process::ExitStatusExt::signal(&run.status);
        assert!(
            matches!(run.code(), Some(0 | 130)) || killed == Some(Signal::SIGINT as i32),
            "after {millis} ms: {run}"
        );
        for child in children {
            assert!(
                !is_running(child),
                "after {millis} ms: child {child} lives on"
            );
        }
        assert_nothing_left(&lab, &run);
    }
}

#[test]
fn the_child_dies_with_a_parent_killed_outright() {
    let lab = Lab::new();
    let ready = its_object(&lab, "msgq");
    let (running, child) = measuring(&lab, "msgq", &*ready);
    running.signal(Signal::SIGKILL);
    let run = running.finish();
    assert_eq!(run.status.code(), None, "{run}");
    wait_until("the child to end with its parent", || !is_running(child));
    // kill -9 leaves the queue: that is what `make ipcclean` is for (the lab removes it)
    let queue = Key::queue(lab.id()).to_string();
    lab.run("ipcrm", &["-Q", &queue]).assert_success();
    assert_nothing_left(&lab, &run);
}

#[test]
fn a_key_in_use_is_refused_with_a_hint_to_use_another_id() {
    let lab = Lab::new();
    let make_queue = format!(
        "use IPC::SysV qw(IPC_CREAT); defined(msgget({}, IPC_CREAT|0600)) or die $!;",
        Key::queue(lab.id()).raw()
    );
    lab.run("perl", &["-e", &make_queue]).assert_success();
    let run = run(&lab, &["--only", "msgq", "--duration", "0.05"]);
    run.assert_failure(1, "ipcbench: msgq: msgget(key ");
    assert!(run.stderr.contains("exists already"), "{run}");
    assert!(run.stderr.contains("use another --id"), "{run}");
    let queue = Key::queue(lab.id()).to_string();
    lab.run("ipcrm", &["-Q", &queue]).assert_success();
    assert_nothing_left(&lab, &run);
}

#[test]
fn bad_options_are_usage_errors() {
    let lab = Lab::new();
    for bad in [
        &["--size", "0"][..],
        &["--size", "65M"],
        &["--size", "lots"],
        &["--only", "carrier-pigeon"],
        &["--duration", "-1"],
    ] {
        let run = run(&lab, bad);
        assert_eq!(run.code(), Some(2), "{bad:?}\n{run}");
        assert!(run.stdout.is_empty(), "{run}");
    }
}

#[test]
fn the_svg_chart_shows_every_mechanism() {
    let lab = Lab::new();
    let chart: PathBuf = lab.dir().join("chart.svg");
    let path = chart.to_str().unwrap();
    let run = run(&lab, &[&SHORT[..], &["--svg", path]].concat());
    run.assert_success();
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(svg.starts_with("<svg"), "{svg}");
    for mechanism in MECHANISMS {
        assert!(
            svg.contains(&format!(">\n{mechanism}\n<")),
            "{mechanism} missing"
        );
    }
    std::fs::remove_file(&chart).unwrap();
    assert_nothing_left(&lab, &run);
}

#[test]
fn bare_loops_are_shown_next_to_ipcbench_s_own_loop() {
    let lab = Lab::new();
    let run = run(&lab, &["--bare", "--round-trips", "300", "--json"]);
    run.assert_success();
    let document = json(&run);
    for mechanism in ["pipe", "msgq", "unix-socket", "shm-spin"] {
        for test in ["latency", "bare-latency"] {
            let found = results(&document, mechanism, test);
            assert_eq!(found.len(), 1, "{mechanism} {test}\n{run}");
            assert_eq!(found[0]["round_trips"], 300, "{run}");
            assert!(found[0]["p50_us"].as_f64().unwrap() > 0.0, "{run}");
        }
    }
    let text = self::run(&lab, &["--bare", "--round-trips", "300", "--only", "pipe"]);
    text.assert_success();
    let row = text.lines().into_iter().find(|l| l.starts_with("pipe"));
    assert!(row.is_some_and(|r| r.contains("<= 1.25")), "{text}");
    assert_nothing_left(&lab, &run);
}
