//! ipcbench: every mechanism moves its data intact, a corrupted byte is seen, `--json` has the
//! issue's shape, and nothing is left behind — after a run, and after a signal at any moment.
//! Small and short runs (`--size 65536 --duration 0.05`): these test the bench, they do not
//! measure anything.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use ::ipcbench::bare::{RING_CHUNK, RING_SLOTS, ROUNDS, ROUND_TRIPS};
use ::ipcbench::links::{IPCBENCH_QUEUE, IPCBENCH_SEGMENT};
use ipclab::sys::ipc::Key;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde_json::Value;

use crate::harness::{
    children_of, is_running, sysv_keys, wait_until, Finished, Lab, Running, AT_ONCE,
};

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
/// so is [`its_object`].
fn measuring(lab: &Lab, mechanism: &str) -> (Running, Pid) {
    let ready = its_object(lab, mechanism);
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
        let (running, child) = measuring(&lab, mechanism);
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
    let (running, child) = measuring(&lab, "msgq");
    running.signal(Signal::SIGKILL);
    let run = running.finish();
    assert_eq!(run.status.code(), None, "{run}");
    wait_until("the child to end with its parent", || !is_running(child));
    // kill -9 leaves the queue and its lock file: that is what `make ipcclean` is for
    let queue = Key::queue(lab.id());
    lab.run("ipcrm", &["-Q", &queue.to_string()])
        .assert_success();
    let lock = ipclab::peer::lock_path(IPCBENCH_QUEUE, queue);
    assert!(lock.exists(), "{run}");
    std::fs::remove_file(lock).unwrap();
    assert_nothing_left(&lab, &run);
}

/// The lines of stderr, each checked to be one of the suite's error lines: `ipcbench: …`,
/// advising `make ipcclean` rather than `ipcrm` for what is left behind.
fn error_lines(run: &Finished) -> Vec<&str> {
    let lines: Vec<&str> = run.stderr.lines().collect();
    for line in &lines {
        assert!(line.starts_with("ipcbench: "), "{run}");
        assert!(!line.contains("ipcrm"), "advises ipcrm\n{run}");
    }
    lines
}

/// A queue and a semaphore set with the lab's keys, made by someone else (Perl's core System V
/// bindings); removed when dropped, also when the test fails.
struct InTheWay<'a>(&'a Lab);

impl InTheWay<'_> {
    fn make(lab: &Lab) -> InTheWay<'_> {
        let make = format!(
            "use IPC::SysV qw(IPC_CREAT); defined(msgget({q}, IPC_CREAT|0600)) or die $!; \
             defined(semget({s}, 1, IPC_CREAT|0600)) or die $!;",
            q = Key::queue(lab.id()).raw(),
            s = Key::segment(lab.id()).raw()
        );
        let in_the_way = InTheWay(lab);
        lab.run("perl", &["-e", &make]).assert_success();
        in_the_way
    }
}

impl Drop for InTheWay<'_> {
    fn drop(&mut self) {
        let id = self.0.id();
        let (queue, set) = (Key::queue(id).to_string(), Key::segment(id).to_string());
        let removed = self.0.run("ipcrm", &["-Q", &queue, "-S", &set]);
        if !std::thread::panicking() {
            removed.assert_success();
        }
    }
}

#[test]
fn a_mechanism_whose_key_is_in_use_is_skipped_and_the_others_are_measured() {
    let lab = Lab::new();
    let in_the_way = InTheWay::make(&lab);
    let args = ["--only", "pipe,msgq,shm-sem", "--json"];
    let run = run(&lab, &[&SHORT[..], &args].concat());
    assert_eq!(run.code(), Some(1), "{run}");
    let hint = format!("make ipcclean ID={}", lab.id());
    let lines = error_lines(&run);
    assert_eq!(lines.len(), 2, "one line per mechanism skipped\n{run}");
    for (line, (mechanism, call)) in lines.iter().zip([
        ("msgq", format!("msgget(key {})", Key::queue(lab.id()))),
        ("shm-sem", format!("semget(key {})", Key::segment(lab.id()))),
    ]) {
        let start = format!("ipcbench: skipped {mechanism}: {call}: ");
        assert!(line.starts_with(&start), "{start:?}\n{run}");
        assert!(
            line.contains("exists already") && line.contains(&hint),
            "{run}"
        );
        assert!(line.ends_with("use another --id (or IPCLAB_ID)"), "{run}");
    }
    // the others are measured and reported
    let document = json(&run);
    let measured: BTreeSet<&str> = document["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["mechanism"].as_str().unwrap())
        .collect();
    assert_eq!(measured, BTreeSet::from(["pipe"]), "{run}");
    drop(in_the_way);
    assert_nothing_left(&lab, &run);
}

#[test]
fn a_queue_removed_under_a_run_is_reported_without_advice_to_remove_it() {
    let lab = Lab::new();
    let (running, _) = measuring(&lab, "msgq");
    lab.run("ipcrm", &["-Q", &Key::queue(lab.id()).to_string()])
        .assert_success();
    let run = running.finish_at_once();
    assert_eq!(run.code(), Some(1), "{run}");
    let lines = error_lines(&run);
    assert_eq!(lines.len(), 1, "{run}");
    let removed = "ipcbench: skipped msgq: the queue was removed while in use";
    assert_eq!(lines, [removed], "{run}");
    assert_nothing_left(&lab, &run);
}

#[test]
fn the_fifo_directory_names_its_lab_and_is_locked_while_in_use() {
    let lab = Lab::new();
    let (running, _) = measuring(&lab, "fifo");
    let dirs: Vec<PathBuf> = std::fs::read_dir(lab.dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let name = dirs[0].file_name().unwrap().to_str().unwrap();
    let prefix = format!("ipcbench-{}-{}-", nix::unistd::getuid(), lab.id());
    assert!(name.starts_with(&prefix), "{name} is not {prefix}XXXXXX");
    // `make ipcclean` removes such a directory only when no one holds its lock
    let dir = dirs[0].to_str().unwrap();
    let locked = lab.run(
        "flock",
        &["--nonblock", "--conflict-exit-code", "9", dir, "true"],
    );
    assert_eq!(
        locked.code(),
        Some(9),
        "the directory is not locked\n{locked}"
    );
    running.signal(Signal::SIGINT);
    let run = running.finish_at_once();
    assert_eq!(run.code(), Some(130), "{run}");
    assert_nothing_left(&lab, &run);
}

#[test]
fn each_chunk_size_and_mechanism_is_measured_once() {
    let lab = Lab::new();
    let args = ["--only", "memcpy,memcpy", "--size", "4K,4096,4k", "--json"];
    let run = run(&lab, &[&args[..], &["--duration", "0.01"]].concat());
    run.assert_success();
    let document = json(&run);
    assert_eq!(results(&document, "memcpy", "throughput").len(), 1, "{run}");
    assert_eq!(results(&document, "memcpy", "latency").len(), 1, "{run}");
}

#[test]
fn every_call_ipcbench_traces_is_one_step_at_takes() {
    let lab = Lab::new();
    let run = run(&lab, &["--trace", "--size", "4096", "--duration", "0.01"]);
    assert_eq!(run.code(), Some(0), "{run}");
    let names: BTreeSet<&str> = run
        .stderr
        .lines()
        .filter_map(|line| line.strip_prefix("[ipcbench ")?.split_once("] "))
        .map(|(_, call)| call.split(['(', ' ']).next().unwrap())
        .collect();
    assert!(
        names.contains("semop") && names.contains("socketpair"),
        "{names:?}"
    );
    for name in names {
        assert!(
            ipclab::sys::trace::CALLS.contains(&name),
            "--step-at does not take {name}"
        );
    }
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
fn a_chart_replaces_the_file_a_link_leads_to_and_keeps_its_mode() {
    use std::os::unix::fs::PermissionsExt;
    let lab = Lab::new();
    let (old, link) = (lab.dir().join("old.svg"), lab.dir().join("chart.svg"));
    std::fs::write(&old, "old chart").unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink("old.svg", &link).unwrap();
    let run = run(&lab, &[&QUICK_MEMCPY[..], &["--svg", "chart.svg"]].concat());
    run.assert_success();
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
    assert!(std::fs::read_to_string(&old).unwrap().starts_with("<svg"));
    let mode = std::fs::metadata(&old).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o640);
    for file in [&old, &link] {
        std::fs::remove_file(file).unwrap();
    }
    assert_nothing_left(&lab, &run);
}

/// A run that must fail at once: were it measuring first, `--duration 10` would take 20 s.
const LONG_MEMCPY: [&str; 4] = ["--only", "memcpy", "--duration", "10"];
/// A run that gets to write its chart at once.
const QUICK_MEMCPY: [&str; 6] = ["--only", "memcpy", "--size", "4K", "--duration", "0.01"];

/// Asserts that `run` failed with exit status 1 and one line on stderr, `ipcbench: --svg FILE:`
/// followed by `reason`.
fn assert_svg_failed(run: &Finished, file: &str, reason: &str) {
    assert_eq!(run.code(), Some(1), "{run}");
    let lines = error_lines(run);
    assert_eq!(lines.len(), 1, "{run}");
    let start = format!("ipcbench: --svg {file}: ");
    assert!(
        lines[0].starts_with(&start) && lines[0].ends_with(reason),
        "{start}…{reason}\n{run}"
    );
}

#[test]
fn a_chart_that_cannot_be_written_fails_at_once_with_one_line_and_leaves_nothing() {
    let lab = Lab::new();
    let missing = lab.dir().join("no-such-dir/chart.svg");
    let missing = missing.to_str().unwrap();
    let args = [&LONG_MEMCPY[..], &["--svg", missing]].concat();
    let run = Running::spawn(ipcbench(&lab, &args)).finish_at_once();
    assert_svg_failed(&run, missing, "ENOENT: No such file or directory");
    assert_nothing_left(&lab, &run);

    let args = [&LONG_MEMCPY[..], &["--svg", "."]].concat();
    let run = Running::spawn(ipcbench(&lab, &args)).finish_at_once();
    assert_svg_failed(&run, ".", "EISDIR: Is a directory");

    // a device takes the open; only the write can fail
    let args = [&QUICK_MEMCPY[..], &["--svg", "/dev/full"]].concat();
    let run = Running::spawn(ipcbench(&lab, &args)).finish_at_once();
    assert_svg_failed(&run, "/dev/full", "write: ENOSPC: No space left on device");
    assert_nothing_left(&lab, &run);
}

#[test]
fn a_chart_into_a_pipe_whose_reader_has_gone_ends_quietly() {
    let lab = Lab::new();
    // the chart goes to fd 3, a pipe to `true`, which has ended by the time it is written
    let script = r#""$0" "$@" --svg /dev/fd/3 3>&1 >/dev/null | true; exit "${PIPESTATUS[0]}""#;
    let mut command = lab.command("bash", &["-c", script]);
    command
        .arg(crate::harness::exe("ipcbench").unwrap())
        .args(["--only", "memcpy", "--size", "4K", "--duration", "0.1"])
        .env("TMPDIR", lab.dir());
    let run = Running::spawn(command).finish();
    run.assert_success();
    assert_nothing_left(&lab, &run);
}

/// Runs `ipcbench args…` (stdout to /dev/null) in a mount namespace of its own, in which a
/// tmpfs mounted with `options` is the lab's directory `disk` (`--svg disk/chart.svg`), after
/// `disk/filler` has filled it up if `fill`. Its stdout then lists what `disk` holds besides
/// the filler. `None` (said visibly) where a mount namespace cannot be made.
fn on_a_tmpfs(lab: &Lab, options: &str, fill: bool, args: &[&str]) -> Option<Finished> {
    let disk = lab.dir().join("disk");
    std::fs::create_dir(&disk).unwrap();
    let script = r#"disk=$1 fill=$2; shift 2
        mount -t tmpfs -o "$OPTIONS" tmpfs "$disk" || exit 99
        if [ "$fill" = yes ]; then head -c 1M /dev/zero >"$disk/filler" 2>/dev/null; fi
        "$@" >/dev/null; status=$?
        rm -f "$disk/filler"; ls -A "$disk"; exit $status"#;
    let mut command = lab.command("unshare", &["--mount"]);
    if !nix::unistd::geteuid().is_root() {
        command.arg("--map-root-user"); // root in a user namespace of its own may mount
    }
    let fill = if fill { "yes" } else { "no" };
    let disk_path = disk.to_str().unwrap();
    command
        .args(["sh", "-c", script, "sh", disk_path, fill])
        .arg(crate::harness::exe("ipcbench").unwrap())
        .args(args)
        .env("OPTIONS", options)
        .env("TMPDIR", lab.dir());
    let run = Running::spawn(command).finish();
    std::fs::remove_dir(&disk).unwrap();
    if run.code() == Some(99) || run.stderr.starts_with("unshare:") {
        let why = run.stderr.trim();
        let _ = writeln!(std::io::stderr(), "SKIPPED: a tmpfs of its own: {why}");
        return None;
    }
    Some(run)
}

#[test]
fn a_chart_for_a_read_only_directory_fails_at_once_and_leaves_nothing() {
    let lab = Lab::new();
    let chart = lab.dir().join("disk/chart.svg");
    let chart = chart.to_str().unwrap();
    let args = [&LONG_MEMCPY[..], &["--svg", chart]].concat();
    // The programs are found (the exercises beside ipcbench built, on first use) before the
    // clock starts: only the run is timed.
    crate::harness::exe("ipcbench").unwrap();
    let started = std::time::Instant::now();
    let Some(run) = on_a_tmpfs(&lab, "ro", false, &args) else {
        return;
    };
    assert!(started.elapsed() < AT_ONCE, "not at once\n{run}");
    assert_svg_failed(&run, chart, "EROFS: Read-only file system");
    assert!(run.stdout.is_empty(), "left on the disk: {run}");
    assert_nothing_left(&lab, &run);
}

#[test]
fn a_chart_on_a_full_disk_fails_with_one_line_and_leaves_nothing() {
    let lab = Lab::new();
    let chart = lab.dir().join("disk/chart.svg");
    let chart = chart.to_str().unwrap();
    let args = [&QUICK_MEMCPY[..], &["--svg", chart]].concat();
    let Some(run) = on_a_tmpfs(&lab, "size=64k", true, &args) else {
        return;
    };
    assert_svg_failed(&run, chart, "write: ENOSPC: No space left on device");
    assert!(run.stdout.is_empty(), "left on the disk: {run}");
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
        // shm-spin's ring next to the simplest ring, every word arrived
        let rings = usize::from(mechanism == "shm-spin");
        for test in ["throughput", "bare-throughput"] {
            let found = results(&document, mechanism, test);
            assert_eq!(found.len(), rings, "{mechanism} {test}\n{run}");
            for found in found {
                assert_eq!(found["bytes"], RING_CHUNK, "{run}");
                assert!(found["gb_per_s"].as_f64().unwrap() > 0.0, "{run}");
                assert_eq!(found["verified"], true, "{run}");
            }
        }
    }
    let text = self::run(&lab, &["--bare", "--round-trips", "300", "--only", "pipe"]);
    text.assert_success();
    let row = text.lines().into_iter().find(|l| l.starts_with("pipe"));
    assert!(row.is_some_and(|r| r.contains("<= 1.25")), "{text}");
    // the help says what the code does
    let help = self::run(&lab, &["--help"]);
    let says = format!("({ROUND_TRIPS} round trips)");
    let ring = format!("(1 MiB chunks, {RING_SLOTS} slots); {ROUNDS} runs each");
    assert!(
        help.stdout().contains(&says) && help.stdout().contains(&ring),
        "{help}"
    );
    assert_nothing_left(&lab, &run);
}

/// Whether a liveness lock file says `PID PROGRAM ID`: its holder has made its object.
fn names_its_object(lock: &std::path::Path) -> bool {
    let recorded = std::fs::read_to_string(lock).unwrap_or_default();
    recorded.split_whitespace().count() == 3
}

#[test]
fn the_exercises_are_told_that_a_measured_key_is_ipcbench_s() {
    // ipcbench measures on the lab's keys: the servers are refused while it runs, and the
    // clients never take its object for a server's (they would read its bytes as a reply).
    let lab = Lab::new();
    let pairs = [
        (
            "msgq",
            ("msgq1", "msgq2"),
            IPCBENCH_QUEUE,
            Key::queue(lab.id()),
        ),
        (
            "shm-spin",
            ("sipc1", "sipc2"),
            IPCBENCH_SEGMENT,
            Key::segment(lab.id()),
        ),
    ];
    for (mechanism, (server, client), locked, key) in pairs {
        let (running, _) = measuring(&lab, mechanism);
        let lock = ipclab::peer::lock_path(locked, key);
        wait_until("ipcbench's lock to name its object", || {
            names_its_object(&lock)
        });
        let (pid, call, object) = (running.pid(), locked.call, locked.object);
        lab.run(client, &[] as &[&str]).assert_failure(
            1,
            &format!(
                "{client}: {call}(key {key}): the {object} is not a {server}'s: ipcbench (pid \
                 {pid}) serves it; wait until it ends, or use another --id (or IPCLAB_ID)"
            ),
        );
        lab.run(server, &[] as &[&str]).assert_failure(
            1,
            &format!(
                "{server}: {call}(key {key}): ipcbench (pid {pid}) is already serving this \
                 {object}; stop it first, or use another --id (or IPCLAB_ID)"
            ),
        );
        running.signal(Signal::SIGINT);
        let run = running.finish();
        assert_eq!(run.status.code(), Some(130), "{run}");
        assert_nothing_left(&lab, &run);
    }
}
