//! System V shared memory: `shm` (where things live in memory), and the sipc text decoder.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::Ordering::Relaxed;

use ipclab::shm::{self, Sipc, SIPC_SIZE};
use nix::fcntl::OFlag;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use proptest::prelude::*;

use crate::harness::{exe, wait_until, Finished, Lab, Running};

// ---- /proc/sysvipc/shm and /proc/PID/maps ---------------------------------------------------

/// One line of `/proc/sysvipc/shm`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    key: i64,
    shmid: i32,
    perms: u32,
    size: usize,
    cpid: i32,
    nattch: u64,
}

fn rows() -> Vec<Row> {
    let text = std::fs::read_to_string("/proc/sysvipc/shm").unwrap();
    text.lines()
        .skip(1)
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            Row {
                key: f[0].parse().unwrap(),
                shmid: f[1].parse().unwrap(),
                perms: u32::from_str_radix(f[2], 8).unwrap(),
                size: f[3].parse().unwrap(),
                cpid: f[4].parse().unwrap(),
                nattch: f[6].parse().unwrap(),
            }
        })
        .collect()
}

/// The segments that process `pid` made and that still exist.
fn segments_made_by(pid: Pid) -> Vec<Row> {
    rows()
        .into_iter()
        .filter(|row| row.cpid == pid.as_raw())
        .collect()
}

/// One mapping of `/proc/PID/maps`.
#[derive(Debug)]
struct Mapping {
    start: usize,
    end: usize,
    perms: String,
    path: String,
}

fn parse_maps_line(line: &str) -> Mapping {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (start, end) = fields[0].split_once('-').unwrap();
    Mapping {
        start: usize::from_str_radix(start, 16).unwrap(),
        end: usize::from_str_radix(end, 16).unwrap(),
        perms: fields[1].to_owned(),
        path: fields.get(5..).map(|p| p.join(" ")).unwrap_or_default(),
    }
}

// ---- shm -------------------------------------------------------------------------------------

/// The four lines of the C version: prefix and the size between its two addresses.
const SHM_LINES: [(&str, usize); 4] = [
    ("Array[] from ", 40000),
    ("Stack around ", 0),
    ("Malloced from ", 100000),
    ("Shared memory attached from ", 100000),
];

/// What each of shm's lines says: the range of addresses [start, start+size) it names.
fn shm_ranges(lines: &[&str]) -> Vec<(usize, usize)> {
    assert_eq!(lines.len(), 4, "{lines:?}");
    let hex = |text: &str| {
        let digits = text
            .strip_prefix("0x")
            .unwrap_or_else(|| panic!("{text:?}"));
        usize::from_str_radix(digits, 16).unwrap()
    };
    lines
        .iter()
        .zip(SHM_LINES)
        .map(|(line, (prefix, size))| {
            let rest = line
                .strip_prefix(prefix)
                .unwrap_or_else(|| panic!("{line:?}"));
            let mut words = rest.split(' ');
            let start = hex(words.next().unwrap());
            if size == 0 {
                assert_eq!(words.next(), None, "{line:?}");
                return (start, start + 1);
            }
            assert_eq!(words.next(), Some("to"), "{line:?}");
            let end = hex(words.next().unwrap());
            assert_eq!(end - start, size, "B = A + size in {line:?}");
            (start, end)
        })
        .collect()
}

#[test]
fn shm_prints_the_four_lines_of_the_c_version_and_removes_its_segment() {
    let lab = Lab::new();
    let run = lab.start("shm", &[] as &[&str]);
    let pid = run.pid();
    let run = run.finish();
    run.assert_success();
    let stdout = run.stdout();
    shm_ranges(&stdout.lines().collect::<Vec<_>>());
    assert!(stdout.ends_with('\n'));
    assert_eq!(segments_made_by(pid), [], "the IPC_PRIVATE segment is left");
}

/// Whether `mapping` is the kind of region `what` (a line of shm) must lie in; `exe` is the
/// binary's path. The array may lie in the binary's data or in the bss after it, which the
/// kernel maps as anonymous memory right after the file's last page.
fn region_fits(what: usize, mapping: &Mapping, exe: &str) -> bool {
    match what {
        0 => mapping.perms == "rw-p" && (mapping.path == exe || mapping.path.is_empty()),
        1 => mapping.path == "[stack]",
        2 => mapping.path == "[heap]",
        _ => mapping.perms == "rw-s" && mapping.path.starts_with("/SYSV00000000"),
    }
}

#[test]
fn shm_maps_shows_the_mapping_that_holds_each_address() {
    let lab = Lab::new();
    let run = lab.run("shm", &["--maps"]);
    run.assert_success();
    let stdout = run.stdout();
    let mut lines: Vec<&str> = Vec::new();
    let mut maps: Vec<Vec<Mapping>> = Vec::new();
    for line in stdout.lines() {
        match line.strip_prefix("    ") {
            Some(mapping) => maps.last_mut().unwrap().push(parse_maps_line(mapping)),
            None => {
                lines.push(line);
                maps.push(Vec::new());
            }
        }
    }
    let exe = exe("shm").unwrap();
    for (what, (start, end)) in shm_ranges(&lines).into_iter().enumerate() {
        let held = &maps[what];
        assert!(
            !held.is_empty(),
            "no mapping under {:?}\n{run}",
            lines[what]
        );
        // The mappings are contiguous and cover the whole range, each of the right kind.
        assert!(
            held[0].start <= start && end <= held[held.len() - 1].end,
            "{run}"
        );
        for pair in held.windows(2) {
            assert_eq!(pair[0].end, pair[1].start, "{run}");
        }
        for mapping in held {
            assert!(
                region_fits(what, mapping, exe),
                "{mapping:?} for {:?}",
                lines[what]
            );
        }
    }
    // The array: at least partly in the binary's own data (the bss follows it).
    assert!(maps[0].iter().any(|m| m.path == exe), "{run}");
}

/// `shm --step` on a pseudo-terminal (`script`), stepped by writing Enter into it. What appears
/// on the terminal is also written to a file, `typescript`, to look at while it runs.
struct Stepped {
    script: Running,
    keys: OwnedFd,
    typescript: PathBuf,
}

impl Stepped {
    fn start(lab: &Lab, args: &str) -> Stepped {
        // Close-on-exec: the programs other tests start meanwhile must not inherit our end.
        let (reader, keys) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        let typescript = lab.dir().join("typescript");
        let command_line = format!("{} --step {args}", exe("shm").unwrap());
        let mut script = lab.command("script", &["-qfec", &command_line]);
        script.arg(&typescript).stdin(Stdio::from(reader));
        Stepped {
            script: Running::spawn(script),
            keys,
            typescript,
        }
    }

    /// Everything on the terminal so far, without the terminal's carriage returns.
    fn screen(&self) -> String {
        let bytes = std::fs::read(&self.typescript).unwrap_or_default();
        String::from_utf8_lossy(&bytes).replace('\r', "")
    }

    /// Waits for the prompt before `call` and returns the PID it names (`[shm PID] next: …`).
    fn wait_for_prompt(&self, call: &str) -> Pid {
        let prompt = format!("] next: {call}(");
        wait_until(&format!("the prompt before {call}"), || {
            self.screen().contains(&prompt)
        });
        let screen = self.screen();
        let before = &screen[..screen.rfind(&prompt).unwrap()];
        let pid = before.rsplit_once("[shm ").unwrap().1;
        Pid::from_raw(pid.parse().unwrap())
    }

    fn press_enter(&self) {
        nix::unistd::write(&self.keys, b"\n").unwrap();
    }
}

#[test]
fn shm_addresses_lie_in_the_regions_of_the_real_proc_maps() {
    let lab = Lab::new();
    let stepped = Stepped::start(&lab, "");
    stepped.wait_for_prompt("shmget");
    stepped.press_enter();
    stepped.wait_for_prompt("shmat");
    stepped.press_enter();
    // Paused before shmdt: everything is in place. Read its maps from outside.
    let pid = stepped.wait_for_prompt("shmdt");
    let maps: Vec<Mapping> = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .lines()
        .map(parse_maps_line)
        .collect();
    let out = stepped.screen();
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| SHM_LINES.iter().any(|(prefix, _)| l.starts_with(prefix)))
        .collect();
    let ranges = shm_ranges(&lines);

    let exe = exe("shm").unwrap();
    let holding = |start: usize, end: usize| {
        maps.iter()
            .find(|m| m.start <= start && end <= m.end)
            .unwrap_or_else(|| panic!("no one mapping holds {start:#x}..{end:#x}: {maps:#?}"))
    };
    // The array: in the binary's writable data or the anonymous bss right after it.
    let last_of_exe = maps.iter().rposition(|m| m.path == exe).unwrap();
    let data_start = maps
        .iter()
        .find(|m| m.path == exe && m.perms == "rw-p")
        .unwrap()
        .start;
    let next = maps.get(last_of_exe + 1);
    let bss_end = match next {
        Some(m) if m.start == maps[last_of_exe].end && m.path.is_empty() && m.perms == "rw-p" => {
            m.end
        }
        _ => maps[last_of_exe].end,
    };
    let (array_start, array_end) = ranges[0];
    assert!(
        data_start <= array_start && array_end <= bss_end,
        "array {array_start:#x}..{array_end:#x} not in data+bss {data_start:#x}..{bss_end:#x}"
    );
    assert_eq!(holding(ranges[1].0, ranges[1].1).path, "[stack]");
    assert_eq!(holding(ranges[2].0, ranges[2].1).path, "[heap]");
    let segment = holding(ranges[3].0, ranges[3].1);
    assert!(segment.path.starts_with("/SYSV00000000"), "{segment:?}");
    assert_eq!(segment.perms, "rw-s");

    // Ctrl-C at the last pause: the segment is still removed (and nothing hangs).
    nix::sys::signal::kill(pid, Signal::SIGINT).unwrap();
    let run = stepped.script.finish();
    assert!(matches!(run.code(), Some(0 | 130)), "{run}");
    assert!(!run.stdout().contains("panicked"), "{run}");
    assert_eq!(segments_made_by(pid), [], "{run}");
}

#[test]
fn shm_removes_its_segment_when_a_signal_ends_a_step() {
    for signal in [
        Signal::SIGHUP,
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGTERM,
    ] {
        let lab = Lab::new();
        let stepped = Stepped::start(&lab, "");
        stepped.wait_for_prompt("shmget");
        stepped.press_enter();
        let pid = stepped.wait_for_prompt("shmat"); // the segment exists now
        assert_eq!(segments_made_by(pid).len(), 1);
        nix::sys::signal::kill(pid, signal).unwrap();
        let run = stepped.script.finish();
        assert_eq!(run.code(), Some(128 + signal as i32), "{signal}\n{run}");
        assert_eq!(segments_made_by(pid), [], "{signal}\n{run}");
    }
}

/// Runs `shm ARGS` through `sh -c` (for redirections) and returns the run and shm's PID, taken
/// from its `--trace` lines.
fn shm_through_shell(lab: &Lab, shell: &str) -> (Finished, Option<Pid>) {
    let run = lab.run("sh", &["-c", shell, exe("shm").unwrap()]);
    let pid = run
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("[shm ")?.split(']').next()?.parse().ok())
        .map(Pid::from_raw);
    (run, pid)
}

#[test]
fn shm_with_a_closed_or_full_stdout_fails_cleanly_and_leaves_nothing() {
    let lab = Lab::new();
    // The reader goes after 3 lines, while shm pauses before shmget and shmat (--slow): the
    // 4th line, after the segment is made, finds no reader. A quiet end, as `| head` wants.
    let (run, pid) = shm_through_shell(&lab, r#""$0" --slow 0.5 | head -n 3"#);
    assert!(run.status.success(), "{run}");
    assert_eq!(run.lines().len(), 3, "{run}");
    assert!(run.stderr.lines().all(|l| l.starts_with("[shm ")), "{run}");
    assert!(run.stderr.contains("shmat("), "{run}");
    assert_eq!(segments_made_by(pid.unwrap()), [], "{run}");

    let (run, _) = shm_through_shell(&lab, r#"exec "$0" --trace >/dev/full"#);
    run.assert_failure(1, "shm: writing to stdout: No space left on device");
}

// ---- the decoder of the sipc text ---------------------------------------------------------------

proptest! {
    #[test]
    fn any_bytes_decode_or_are_rejected_without_panic(bytes in prop::collection::vec(any::<u8>(), 0..2100)) {
        match shm::decode_text(&bytes) {
            Ok(text) => {
                prop_assert!(bytes.contains(&0));
                prop_assert!(!text.chars().any(char::is_control));
            }
            Err(bad) => {
                prop_assert!(!bytes.contains(&0));
                prop_assert_eq!(bad.len, bytes.len());
                prop_assert!(!bad.shown.chars().any(char::is_control));
            }
        }
    }

    #[test]
    fn any_text_that_fits_is_read_back_as_written(text in "[ -~]{0,1019}") {
        let area = Sipc::new();
        area.text.iter().for_each(|b| b.store(b'#', Relaxed)); // garbage after the NUL
        area.write_text(&text).unwrap();
        prop_assert_eq!(area.text().unwrap(), text);
    }

    #[test]
    fn any_text_field_is_read_within_its_1020_bytes(bytes in prop::collection::vec(any::<u8>(), SIPC_SIZE - 4)) {
        let area = Sipc::new();
        for (cell, byte) in area.text.iter().zip(&bytes) {
            cell.store(*byte, Relaxed);
        }
        prop_assert_eq!(area.text_bytes().to_vec(), bytes.clone());
        prop_assert_eq!(area.text(), shm::decode_text(&bytes));
    }
}
