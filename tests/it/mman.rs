//! Memory-mapped files: `mycp3` (a copy through two mappings) and `mipc` (a counter shared
//! through mmap of /dev/zero).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::classroom::{press, start_on_a_terminal};
use crate::harness::{children_of, exe, is_running, wait_until, Finished, Lab, Running};

// ---- helpers ----------------------------------------------------------------------------------

/// `len` bytes that differ from offset to offset (so a window copied to the wrong place shows).
fn content(len: usize, seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (state >> 16) as u8
        })
        .collect()
}

/// Says on the real stderr (not captured by the test harness) that part of a test did not run.
fn skipped(what: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED: {what}: {why}");
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// What a directory holds, recursively: per path its kind, mode, inode and (for files) bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u32, u64, Option<Vec<u8>>)> {
    let mut found = BTreeMap::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(dir) = todo.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let bytes = if meta.is_file() {
                fs::read(&path).ok()
            } else if meta.file_type().is_symlink() {
                Some(
                    fs::read_link(&path)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                )
            } else {
                None
            };
            if meta.is_dir() {
                todo.push(path.clone());
            }
            found.insert(path, (meta.mode(), meta.ino(), bytes));
        }
    }
    found
}

/// Runs `command` and checks that it fails with status 1 and `message`, and that nothing in the
/// lab's directory changed (names, kinds, modes, inodes, contents).
fn assert_refused(lab: &Lab, command: Command, message: &str) -> Finished {
    let before = snapshot(lab.dir());
    let run = Running::spawn(command).finish();
    run.assert_failure(1, message);
    assert_one_form(&run.stderr);
    assert_eq!(snapshot(lab.dir()), before, "something changed\n{run}");
    run
}

/// Asserts that `stderr` is one error line of mycp3's one form: `mycp3: SOURCE 'x': …` or
/// `mycp3: DEST 'y': …` (`DEST 'y' not created: …`, `DEST 'y' left as it was: …`), every
/// errno shown as `ENAME: text` and never as Rust's `(os error N)`.
fn assert_one_form(stderr: &str) {
    let line = stderr.trim_end_matches(['\r', '\n']);
    assert!(!line.contains('\n'), "one line: {stderr:?}");
    let what = ["mycp3: SOURCE '", "mycp3: DEST '"]
        .iter()
        .find_map(|role| line.strip_prefix(role)?.split_once('\''))
        .and_then(|(_, rest)| {
            [": ", " not created: ", " left as it was: "]
                .iter()
                .find_map(|then| rest.strip_prefix(then))
        });
    assert!(
        what.is_some_and(|w| !w.is_empty()),
        "not the form: {line:?}"
    );
    assert!(!line.contains("os error"), "{line:?}");
    for (at, _) in line.match_indices('E') {
        let word: String = line[at..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
            .collect();
        let starts_a_word = !line[..at].ends_with(|c: char| c.is_alphanumeric());
        if starts_a_word && word.len() >= 3 {
            let text = &line[at + word.len()..];
            let named = text
                .strip_prefix(": ")
                .is_some_and(|t| t.starts_with(char::is_uppercase));
            assert!(named, "{word} without its text: {line:?}");
        }
    }
}

fn mycp3(lab: &Lab, args: &[&str]) -> Command {
    lab.command("mycp3", args)
}

/// Copies `source_bytes` with `args` (SOURCE is `source`, DEST is `copy`) and checks the copy.
fn assert_copies(source_bytes: &[u8], extra: &[&str]) {
    let lab = Lab::new();
    fs::write(lab.dir().join("source"), source_bytes).unwrap();
    let mut args = extra.to_vec();
    args.extend(["source", "copy"]);
    let run = lab.run("mycp3", &args);
    run.assert_success();
    let copy = fs::read(lab.dir().join("copy")).unwrap();
    assert!(
        copy == source_bytes,
        "copy of {} bytes differs (got {} bytes)\n{run}",
        source_bytes.len(),
        copy.len()
    );
    assert_only(&lab, &["copy", "source"]);
}

/// Asserts that the lab's directory holds exactly `names` (no unfinished copy left over).
fn assert_only(lab: &Lab, names: &[&str]) {
    let mut found: Vec<String> = fs::read_dir(lab.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    assert_eq!(found, names, "files in the lab's directory");
}

/// A small tmpfs, mounted for one test and unmounted when dropped (even if the test fails).
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`2m`) on a new directory `name` in the lab, if this test may
    /// mount (root); otherwise says visibly that it cannot.
    fn mount(lab: &Lab, name: &str, size: &str, what: &str) -> Option<Tmpfs> {
        let dir = lab.dir().join(name);
        fs::create_dir(&dir).unwrap();
        let options = format!("size={size}");
        let mount = lab.run("mount", &["-t", "tmpfs", "-o", &options, "tmpfs", name]);
        if !mount.status.success() {
            skipped(
                what,
                &format!("cannot mount a tmpfs: {}", mount.stderr.trim()),
            );
            return None;
        }
        Some(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// `program args` run as user `nobody` if this test runs as root (root may read and write any
/// file, so a refused permission cannot be seen otherwise), as is if not. `None`, said visibly,
/// if root cannot drop its rights here (no `setpriv`, or `nobody` cannot reach the binary).
fn unprivileged(lab: &Lab, args: &[&str], what: &str) -> Option<Command> {
    if !is_root() {
        return Some(mycp3(lab, args));
    }
    let setpriv = ["--reuid=65534", "--regid=65534", "--clear-groups", "--"];
    let drop_rights = |args: &[&str]| {
        let mut command = lab.command("setpriv", &setpriv);
        command.arg(exe("mycp3").unwrap()).args(args);
        command
    };
    // nobody must reach the lab's directory to be refused for the right reason only
    fs::set_permissions(lab.dir(), fs::Permissions::from_mode(0o777)).unwrap();
    let probe = Running::spawn(drop_rights(&["--version"])).finish();
    if !probe.status.success() {
        skipped(what, &format!("root cannot run mycp3 as nobody: {probe}"));
        return None;
    }
    Some(drop_rights(args))
}

// ---- mycp3: copies ----------------------------------------------------------------------------

#[test]
fn mycp3_copies_a_small_text_file() {
    assert_copies(b"Hello, mmap!\nSecond line.\n", &[]);
}

#[test]
fn mycp3_copies_a_size_that_is_not_a_multiple_of_the_page_size() {
    assert_copies(&content(3 * 4096 + 17, 1), &[]);
}

#[test]
fn mycp3_copies_a_file_larger_than_one_window_window_by_window() {
    // 64 KiB windows: 15 whole ones and a short last one; and exactly two whole windows.
    assert_copies(&content(15 * 65536 + 4099, 2), &["--window", "64K"]);
    assert_copies(&content(2 * 65536, 3), &["--window", "64K"]);
}

#[test]
fn mycp3_copies_an_empty_file_to_an_empty_dest() {
    assert_copies(b"", &[]);
}

#[test]
fn mycp3_replaces_a_longer_existing_dest_whole() {
    let lab = Lab::new();
    let source = content(5000, 4);
    fs::write(lab.dir().join("source"), &source).unwrap();
    fs::write(lab.dir().join("copy"), content(100_000, 5)).unwrap();
    lab.run("mycp3", &["source", "copy"]).assert_success();
    assert_eq!(fs::read(lab.dir().join("copy")).unwrap(), source);
    assert_only(&lab, &["copy", "source"]);
}

#[test]
fn mycp3_copies_only_the_data_of_a_sparse_file_and_keeps_its_holes() {
    // 64 MiB long with 12 KiB of data (at the start, in the middle, at the end); and all hole.
    let lab = Lab::new();
    let source = fs::File::create(lab.dir().join("source")).unwrap();
    source.set_len(64 << 20).unwrap();
    for (at, seed) in [(0, 1), (32 << 20, 2), ((64 << 20) - 4096, 3)] {
        source.write_all_at(&content(4096, seed), at).unwrap();
    }
    let holes = fs::File::create(lab.dir().join("holes")).unwrap();
    holes.set_len(64 << 20).unwrap();
    let allocated = |name: &str| fs::metadata(lab.dir().join(name)).unwrap().blocks() * 512;
    assert!(allocated("source") < 1 << 20, "the source should be sparse");
    for (from, to) in [("source", "copy"), ("holes", "holes.copy")] {
        lab.run("mycp3", &["--window", "1M", from, to])
            .assert_success();
        lab.run("cmp", &[from, to]).assert_success();
        assert!(
            allocated(to) < 1 << 20,
            "{to}: {} bytes allocated for {} of data",
            allocated(to),
            allocated(from)
        );
    }
}

#[test]
fn mycp3_gives_dest_the_source_permission_bits() {
    let lab = Lab::new();
    let source = lab.dir().join("source");
    fs::write(&source, "#!/bin/sh\n").unwrap();
    fs::set_permissions(&source, fs::Permissions::from_mode(0o751)).unwrap();
    fs::write(lab.dir().join("old"), "older").unwrap();
    fs::set_permissions(lab.dir().join("old"), fs::Permissions::from_mode(0o600)).unwrap();
    for dest in ["new", "old"] {
        lab.run("mycp3", &["source", dest]).assert_success();
        let mode = fs::metadata(lab.dir().join(dest)).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o751, "mode of {dest}: {mode:o}");
    }
}

#[test]
fn mycp3_through_a_symlink_dest_replaces_the_file_it_points_to() {
    let lab = Lab::new();
    fs::write(lab.dir().join("source"), "new content").unwrap();
    fs::write(lab.dir().join("target"), "old").unwrap();
    std::os::unix::fs::symlink("target", lab.dir().join("link")).unwrap();
    lab.run("mycp3", &["source", "link"]).assert_success();
    assert!(fs::symlink_metadata(lab.dir().join("link"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        fs::read_to_string(lab.dir().join("target")).unwrap(),
        "new content"
    );
}

// ---- mycp3: refused, nothing changed ----------------------------------------------------------

/// A lab with `source` (some bytes) and an existing `dest`.
fn lab_with_files() -> Lab {
    let lab = Lab::new();
    fs::write(lab.dir().join("source"), content(10_000, 6)).unwrap();
    fs::write(lab.dir().join("dest"), "the old dest").unwrap();
    lab
}

#[test]
fn mycp3_refuses_to_copy_a_file_onto_itself_by_any_name() {
    let lab = lab_with_files();
    fs::hard_link(lab.dir().join("source"), lab.dir().join("hard")).unwrap();
    std::os::unix::fs::symlink("source", lab.dir().join("soft")).unwrap();
    let absolute = lab.dir().join("source");
    let absolute = absolute.to_str().unwrap();
    for (from, to) in [
        ("source", "source"),
        ("source", "./source"),
        ("./source", absolute),
        ("source", "hard"),
        ("hard", "source"),
        ("source", "soft"),
        ("soft", "source"),
    ] {
        let run = assert_refused(&lab, mycp3(&lab, &[from, to]), "is the same file as SOURCE");
        assert!(run.stderr.contains("nothing changed"), "{run}");
    }
}

#[test]
fn mycp3_refuses_a_missing_source() {
    let lab = lab_with_files();
    assert_refused(
        &lab,
        mycp3(&lab, &["missing", "dest"]),
        "SOURCE 'missing': ENOENT: No such file or directory",
    );
    assert_refused(&lab, mycp3(&lab, &["missing", "new"]), "'missing'");
}

#[test]
fn mycp3_refuses_a_source_that_is_a_directory_fifo_or_device() {
    let lab = lab_with_files();
    fs::create_dir(lab.dir().join("dir")).unwrap();
    nix::unistd::mkfifo(
        &lab.dir().join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    for (source, kind) in [
        ("dir", "is a directory"),
        ("fifo", "is a FIFO"),
        ("/dev/null", "is a character device"),
    ] {
        for dest in ["dest", "new"] {
            let run = assert_refused(&lab, mycp3(&lab, &[source, dest]), kind);
            assert!(run.stderr.contains("regular files only"), "{run}");
        }
    }
}

#[test]
fn mycp3_refuses_a_proc_or_sys_file_whose_size_says_nothing() {
    let lab = lab_with_files();
    for source in [
        "/proc/self/status",
        "/proc/version",
        "/sys/kernel/mm/transparent_hugepage/enabled",
    ] {
        if !Path::new(source).exists() {
            skipped(
                "mycp3_refuses_a_proc_or_sys_file_whose_size_says_nothing",
                &format!("no {source}"),
            );
            continue;
        }
        let run = assert_refused(
            &lab,
            mycp3(&lab, &[source, "new"]),
            "content is made when it is read",
        );
        assert!(run.stderr.contains("copy it with cp"), "{run}");
    }
}

#[test]
fn mycp3_refuses_a_dest_in_a_missing_directory() {
    let lab = lab_with_files();
    assert_refused(
        &lab,
        mycp3(&lab, &["source", "missing/dest"]),
        "DEST 'missing/dest': directory 'missing' does not exist",
    );
}

#[test]
fn mycp3_refuses_a_dest_that_is_a_directory_or_no_regular_file() {
    let lab = lab_with_files();
    fs::create_dir(lab.dir().join("dir")).unwrap();
    assert_refused(&lab, mycp3(&lab, &["source", "dir"]), "is a directory");
    assert_refused(&lab, mycp3(&lab, &["source", "dir/"]), "is a directory");
    assert_refused(&lab, mycp3(&lab, &["source", "source/"]), "ENOTDIR");
    for dir_name in ["new/", "new/.", "new/..", "..", "/"] {
        let run = assert_refused(&lab, mycp3(&lab, &["source", dir_name]), "DEST");
        assert!(run.stderr.contains("directory"), "{run}");
    }
    assert_refused(
        &lab,
        mycp3(&lab, &["source", "/dev/full"]),
        "is a character device",
    );
    std::os::unix::fs::symlink("nowhere", lab.dir().join("dangling")).unwrap();
    assert_refused(
        &lab,
        mycp3(&lab, &["source", "dangling"]),
        "symbolic link to nowhere",
    );
}

#[test]
fn mycp3_refuses_an_unreadable_source() {
    let lab = lab_with_files();
    fs::set_permissions(lab.dir().join("source"), fs::Permissions::from_mode(0o000)).unwrap();
    let what = "mycp3_refuses_an_unreadable_source";
    if let Some(command) = unprivileged(&lab, &["source", "new"], what) {
        assert_refused(&lab, command, "SOURCE 'source': EACCES: Permission denied");
    }
}

#[test]
fn mycp3_refuses_an_unwritable_dest() {
    let lab = lab_with_files();
    fs::set_permissions(lab.dir().join("dest"), fs::Permissions::from_mode(0o444)).unwrap();
    let what = "mycp3_refuses_an_unwritable_dest";
    if let Some(command) = unprivileged(&lab, &["source", "dest"], what) {
        assert_refused(&lab, command, "DEST 'dest': EACCES: Permission denied");
    }
}

#[test]
fn mycp3_refuses_a_dest_in_a_directory_it_may_not_write() {
    let lab = lab_with_files();
    let dir = lab.dir().join("read-only");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("dest"), "old").unwrap();
    fs::set_permissions(dir.join("dest"), fs::Permissions::from_mode(0o666)).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o555)).unwrap();
    let what = "mycp3_refuses_a_dest_in_a_directory_it_may_not_write";
    for dest in ["read-only/dest", "read-only/new"] {
        if let Some(command) = unprivileged(&lab, &["source", dest], what) {
            let expected = format!(
                "DEST '{dest}': cannot create the copy in directory 'read-only': EACCES: \
                 Permission denied"
            );
            assert_refused(&lab, command, &expected);
        }
    }
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn mycp3_with_a_wrong_argument_count_prints_usage_and_exits_2() {
    let lab = lab_with_files();
    for args in [&[][..], &["source"], &["source", "dest", "third"]] {
        let before = snapshot(lab.dir());
        let run = lab.run("mycp3", args);
        run.assert_failure(2, "Usage: mycp3 ");
        assert!(run.stderr.contains("<SOURCE> <DEST>"), "{run}");
        assert_eq!(snapshot(lab.dir()), before);
    }
}

#[test]
fn mycp3_rejects_an_absurd_window() {
    let lab = lab_with_files();
    for window in ["0", "-1", "lots", "5T", "2G", "1.5M"] {
        lab.run("mycp3", &[&format!("--window={window}"), "source", "new"])
            .assert_failure(2, "--window");
    }
    assert_only(&lab, &["dest", "source"]);
}

// ---- mycp3: a full disk, a shrinking source, signals ------------------------------------------

#[test]
fn mycp3_on_a_full_disk_fails_cleanly_and_leaves_no_partial_dest() {
    let lab = Lab::new();
    let what = "mycp3_on_a_full_disk_fails_cleanly_and_leaves_no_partial_dest";
    let Some(small) = Tmpfs::mount(&lab, "small", "2m", what) else {
        return;
    };
    fs::write(lab.dir().join("big"), content(3 << 20, 7)).unwrap();
    fs::write(lab.dir().join("fits"), content(100_000, 8)).unwrap();

    let run = lab.run("mycp3", &["big", "small/copy"]);
    run.assert_failure(1, "DEST 'small/copy' not created: reserving 3145728 bytes");
    assert!(
        run.stderr.contains("ENOSPC: No space left on device"),
        "{run}"
    );
    assert_one_form(&run.stderr);
    assert_eq!(fs::read_dir(&small.0).unwrap().count(), 0, "{run}");

    fs::write(small.0.join("copy"), "old").unwrap();
    let run = lab.run("mycp3", &["big", "small/copy"]);
    run.assert_failure(1, "DEST 'small/copy' left as it was");
    assert_one_form(&run.stderr);
    assert_eq!(fs::read_to_string(small.0.join("copy")).unwrap(), "old");
    assert_eq!(fs::read_dir(&small.0).unwrap().count(), 1, "{run}");

    // Without reserving (the C version's ftruncate), the full disk is a SIGBUS while copying:
    // caught, reported, and the unfinished copy removed.
    fs::remove_file(small.0.join("copy")).unwrap();
    let run = lab.run("mycp3", &["--reserve", "ftruncate", "big", "small/copy"]);
    run.assert_failure(1, "the destination mapping cannot be written (SIGBUS)");
    assert_one_form(&run.stderr);
    assert_eq!(fs::read_dir(&small.0).unwrap().count(), 0, "{run}");

    // What fits, fits.
    lab.run("mycp3", &["fits", "small/copy"]).assert_success();
    assert_eq!(
        fs::read(small.0.join("copy")).unwrap(),
        fs::read(lab.dir().join("fits")).unwrap()
    );
}

fn mycp3_stopped_by(signal: Signal, dest_exists: bool) {
    let lab = Lab::new();
    fs::write(lab.dir().join("source"), content(64 * 65536, 10)).unwrap();
    if dest_exists {
        fs::write(lab.dir().join("dest"), "old").unwrap();
    }
    let copy = lab.start(
        "mycp3",
        &["--slow", "0.1", "--window", "64K", "source", "dest"],
    );
    copy.wait_for_stderr("memcpy(");
    copy.signal(signal);
    let run = copy.finish();
    assert_eq!(run.code(), Some(128 + signal as i32), "{run}");
    match dest_exists {
        true => {
            assert_eq!(fs::read_to_string(lab.dir().join("dest")).unwrap(), "old");
            assert_only(&lab, &["dest", "source"]);
        }
        false => assert_only(&lab, &["source"]),
    }
}

#[test]
fn mycp3_copies_through_a_hidden_named_file_where_o_tmpfile_is_not_supported() {
    // strace makes the open with O_TMPFILE fail as a file system without it would (EOPNOTSUPP;
    // EISDIR or EINVAL from a kernel without it).
    for errno in ["EOPNOTSUPP", "EISDIR", "EINVAL"] {
        let lab = Lab::new();
        fs::create_dir(lab.dir().join("out")).unwrap();
        let source = content(3 * 4096 + 5, 14);
        fs::write(lab.dir().join("source"), &source).unwrap();
        let inject = format!("inject=openat:error={errno}");
        let mut command = lab.command("strace", &["-o", "/dev/null", "-P", "out", "-e", &inject]);
        command.arg(exe("mycp3").unwrap());
        command.args(["--trace", "source", "out/copy"]);
        let run = Running::spawn(command).finish();
        assert!(run.status.success(), "{run}");
        assert!(
            run.stderr
                .contains(r#"open("out", O_RDWR|O_TMPFILE, 0600) = -1 "#),
            "{run}"
        );
        let named = r#"open("out/.copy.mycp3-"#;
        assert!(run.stderr.contains(named), "{run}");
        assert!(!run.stderr.contains("linkat("), "{run}");
        assert_eq!(fs::read(lab.dir().join("out/copy")).unwrap(), source);
        let left: Vec<_> = fs::read_dir(lab.dir().join("out")).unwrap().collect();
        assert_eq!(left.len(), 1, "only the copy\n{run}");
    }
}

#[test]
fn mycp3_stopped_by_sighup_leaves_dest_as_it_was() {
    mycp3_stopped_by(Signal::SIGHUP, true);
}

#[test]
fn mycp3_stopped_by_sigint_removes_the_unfinished_copy() {
    mycp3_stopped_by(Signal::SIGINT, false);
}

#[test]
fn mycp3_stopped_by_sigquit_removes_the_unfinished_copy() {
    mycp3_stopped_by(Signal::SIGQUIT, false);
}

#[test]
fn mycp3_stopped_by_sigterm_leaves_dest_as_it_was() {
    mycp3_stopped_by(Signal::SIGTERM, true);
}

// ---- mycp3 step by step: a SIGBUS, a kill -9, a DEST that appears, at a chosen call ----------

/// mycp3 (or strace running it) with `--step` on a terminal of its own (util-linux `script`):
/// the test presses Enter. Everything it says — prompts, traces, errors — comes out on the
/// terminal, which is `script`'s stdout.
struct Stepped {
    run: Running,
    keys: OwnedFd,
    /// How many prompts Enter was pressed at.
    answered: Cell<usize>,
}

impl Stepped {
    /// Starts `mycp3 --step ARGS`, after `before` (a program that runs mycp3, or nothing).
    fn start(lab: &Lab, before: &str, args: &str) -> Stepped {
        let line = format!("{before} {} --step {args}", exe("mycp3").unwrap());
        let (run, keys) = start_on_a_terminal(lab, &line);
        let answered = Cell::new(0);
        Stepped {
            run,
            keys,
            answered,
        }
    }

    /// The calls announced by the prompts so far.
    fn prompts(&self) -> Vec<String> {
        prompts_in(&self.run.stdout_so_far())
    }

    /// Waits for the prompt not answered yet and returns its call.
    fn prompt(&self) -> String {
        let n = self.answered.get();
        wait_until(&format!("prompt {n}"), || self.prompts().len() > n);
        self.prompts().swap_remove(n)
    }

    /// Presses Enter at the prompt.
    fn enter(&self) {
        self.prompt();
        press(&self.keys, "\n");
        self.answered.set(self.answered.get() + 1);
    }

    /// Presses Enter at prompts until prompt `n` (from 0) shows.
    fn to_prompt(&self, n: usize) {
        while self.answered.get() < n {
            self.enter();
        }
        self.prompt();
    }

    /// Presses Enter at prompts until one announces a call that contains `call`.
    fn to_call(&self, call: &str) {
        while !self.prompt().contains(call) {
            self.enter();
        }
    }

    /// mycp3's PID, as its prompts say.
    fn pid(&self) -> Pid {
        wait_until("the first prompt", || !self.prompts().is_empty());
        let seen = self.run.stdout_so_far();
        let pid = seen
            .split("[mycp3 ")
            .nth(1)
            .and_then(|s| s.split(']').next());
        Pid::from_raw(pid.unwrap().parse().unwrap())
    }

    /// Presses Enter at every prompt until mycp3 ends.
    fn enter_to_the_end(self) -> Finished {
        let pid = self.pid();
        loop {
            wait_until("a prompt or the end", || {
                self.prompts().len() > self.answered.get() || !is_running(pid)
            });
            if self.prompts().len() == self.answered.get() {
                return self.run.finish();
            }
            self.enter();
        }
    }
}

/// The calls announced by the `--step` prompts in `terminal`.
fn prompts_in(terminal: &str) -> Vec<String> {
    let calls = terminal.lines().filter_map(|l| l.split_once("] next: "));
    calls.map(|(_, call)| call.to_owned()).collect()
}

/// mycp3's error line among what the terminal showed.
fn error_line(run: &Finished) -> String {
    let stdout = run.stdout();
    let line = stdout.lines().find(|l| l.starts_with("mycp3: "));
    line.unwrap_or_else(|| panic!("no error line\n{run}"))
        .trim_end()
        .to_owned()
}

#[test]
fn mycp3_killed_with_sigkill_at_any_step_leaves_no_copy_behind() {
    // The copy has no name until it is complete (O_TMPFILE), and gets DEST's at once — or a
    // hidden name and, with no pause between, DEST's: kill -9 at any prompt leaves nothing.
    let lab = Lab::new();
    let source = content(3 * 4096 + 1, 13);
    fs::write(lab.dir().join("source"), &source).unwrap();
    for dest_exists in [false, true] {
        let reset = || match dest_exists {
            true => fs::write(lab.dir().join("dest"), "old").unwrap(),
            false => drop(fs::remove_file(lab.dir().join("dest"))),
        };
        reset();
        let whole = Stepped::start(&lab, "", "source dest").enter_to_the_end();
        assert!(whole.status.success(), "{whole}");
        assert_eq!(fs::read(lab.dir().join("dest")).unwrap(), source);
        let calls = prompts_in(&whole.stdout());
        assert!(calls.last().unwrap().starts_with("linkat("), "{whole}");
        for (n, at) in calls.iter().enumerate() {
            reset();
            let copy = Stepped::start(&lab, "", "source dest");
            copy.to_prompt(n);
            nix::sys::signal::kill(copy.pid(), Signal::SIGKILL).unwrap();
            let run = copy.run.finish();
            match dest_exists {
                true => {
                    let dest = fs::read_to_string(lab.dir().join("dest")).unwrap();
                    assert_eq!(dest, "old", "killed at {at}\n{run}");
                    assert_only(&lab, &["dest", "source"]);
                }
                false => assert_only(&lab, &["source"]),
            }
        }
    }
}

#[test]
fn mycp3_ends_cleanly_on_sigbus_when_the_source_shrinks_under_memcpy() {
    // Truncated while mycp3 waits before its memcpy: reading the mapping raises SIGBUS. The
    // handler says so and removes the copy — also the named one of a file system without
    // O_TMPFILE (strace makes that open fail as such a file system would).
    for without_o_tmpfile in [false, true] {
        let lab = Lab::new();
        fs::create_dir(lab.dir().join("out")).unwrap();
        fs::write(lab.dir().join("source"), content(3 * 65536, 15)).unwrap();
        fs::write(lab.dir().join("out/dest"), "old").unwrap();
        let strace = "strace -o /dev/null -P out -e inject=openat:error=EOPNOTSUPP";
        let before = if without_o_tmpfile { strace } else { "" };
        let copy = Stepped::start(&lab, before, "--window 64K source out/dest");
        copy.to_call("memcpy(");
        let named = fs::read_dir(lab.dir().join("out")).unwrap().count() == 2;
        assert_eq!(named, without_o_tmpfile, "a hidden copy in out/");
        fs::File::options()
            .write(true)
            .open(lab.dir().join("source"))
            .unwrap()
            .set_len(4096)
            .unwrap();
        let run = copy.enter_to_the_end();
        assert_eq!(run.code(), Some(1), "{run}");
        let line = error_line(&run);
        let expected = "mycp3: DEST 'out/dest' left as it was: SOURCE 'source': shrank while \
                        being copied (SIGBUS)";
        assert_eq!(line, expected, "{run}");
        assert_one_form(&line);
        assert_eq!(
            fs::read_to_string(lab.dir().join("out/dest")).unwrap(),
            "old"
        );
        assert_eq!(
            fs::read_dir(lab.dir().join("out")).unwrap().count(),
            1,
            "{run}"
        );
    }
}

#[test]
fn mycp3_ends_cleanly_on_sigbus_when_its_copy_is_truncated_under_memcpy() {
    // Another process truncates the copy (through /proc/PID/fd) while mycp3 waits before its
    // memcpy: writing the mapping raises SIGBUS, as a page that cannot be allocated does.
    let lab = Lab::new();
    fs::write(lab.dir().join("source"), content(2 * 65536, 16)).unwrap();
    let copy = Stepped::start(&lab, "", "--window 64K source copy");
    copy.to_call("memcpy(");
    let seen = copy.run.stdout_so_far();
    let fd = seen.split("O_TMPFILE, 0600) = ").nth(1).unwrap();
    let fd: String = fd.chars().take_while(char::is_ascii_digit).collect();
    let path = format!("/proc/{}/fd/{fd}", copy.pid());
    let unnamed = fs::File::options().write(true).open(path).unwrap();
    unnamed.set_len(0).unwrap();
    drop(unnamed);
    let run = copy.enter_to_the_end();
    assert_eq!(run.code(), Some(1), "{run}");
    let line = error_line(&run);
    assert!(
        line.starts_with(
            "mycp3: DEST 'copy' not created: the destination mapping cannot be \
                          written (SIGBUS)"
        ),
        "{run}"
    );
    assert_one_form(&line);
    assert_only(&lab, &["source"]);
}

#[test]
fn mycp3_fails_cleanly_when_the_source_shrinks_between_its_data_ranges() {
    // Data at 0 and at 1 MiB of 2 MiB; cut to 8 KiB before mycp3 looks for the second range:
    // no data is found there, and the size says why.
    let lab = Lab::new();
    let source = fs::File::create(lab.dir().join("source")).unwrap();
    source.set_len(2 << 20).unwrap();
    source.write_all_at(&content(4096, 17), 0).unwrap();
    source.write_all_at(&content(4096, 18), 1 << 20).unwrap();
    fs::write(lab.dir().join("dest"), "old").unwrap();
    let copy = Stepped::start(&lab, "", "source dest");
    copy.to_call(", 4096, SEEK_DATA)");
    source.set_len(8192).unwrap();
    let run = copy.enter_to_the_end();
    assert_eq!(run.code(), Some(1), "{run}");
    let line = error_line(&run);
    let expected = "mycp3: DEST 'dest' left as it was: SOURCE 'source': shrank while being \
                    copied (from 2097152 to 8192 bytes)";
    assert_eq!(line, expected, "{run}");
    assert_one_form(&line);
    assert_eq!(fs::read_to_string(lab.dir().join("dest")).unwrap(), "old");
    assert_only(&lab, &["dest", "source"]);
}

#[test]
fn mycp3_replaces_a_dest_that_appears_during_the_copy_or_fails_cleanly() {
    // DEST is new, so the copy is linked straight to it; a file made there meanwhile makes that
    // linkat fail (EEXIST): the copy is then renamed over it, as over a DEST that was there.
    let lab = Lab::new();
    let source = content(5000, 19);
    fs::write(lab.dir().join("source"), &source).unwrap();
    let copy = Stepped::start(&lab, "", "source dest");
    copy.to_call("linkat(");
    fs::write(lab.dir().join("dest"), "made meanwhile").unwrap();
    let run = copy.enter_to_the_end();
    assert!(run.status.success(), "{run}");
    assert!(run.stdout().contains("= -1 EEXIST (File exists)"), "{run}");
    assert_eq!(fs::read(lab.dir().join("dest")).unwrap(), source);
    assert_only(&lab, &["dest", "source"]);
    // A directory made there cannot be replaced: a clean failure, no hidden copy left.
    fs::remove_file(lab.dir().join("dest")).unwrap();
    let copy = Stepped::start(&lab, "", "source dest");
    copy.to_call("linkat(");
    fs::create_dir(lab.dir().join("dest")).unwrap();
    let run = copy.enter_to_the_end();
    assert_eq!(run.code(), Some(1), "{run}");
    let line = error_line(&run);
    assert_eq!(
        line, "mycp3: DEST 'dest' not created: rename: EISDIR: Is a directory",
        "{run}"
    );
    assert_one_form(&line);
    assert_only(&lab, &["dest", "source"]);
    assert_eq!(fs::read_dir(lab.dir().join("dest")).unwrap().count(), 0);
}

// ---- mycp3: classroom mode --------------------------------------------------------------------

/// Runs `strace -e trace=LIST mycp3 ARGS` on a source of three windows of 64 KiB; returns the
/// run and strace's lines from the opening of SOURCE up to the `linkat` that names the copy DEST.
fn strace_mycp3(lab: &Lab, list: &str, args: &[&str]) -> (Finished, Vec<String>) {
    fs::write(lab.dir().join("source"), content(2 * 65536 + 5, 11)).unwrap();
    let log = lab.dir().join("strace.log");
    let mut command = lab.command("strace", &["-o", log.to_str().unwrap(), "-e", list]);
    command.arg(exe("mycp3").unwrap()).args(args);
    command.args(["--window", "64K", "source", "copy"]);
    let run = Running::spawn(command).finish();
    assert!(run.status.success(), "{run}");
    let log = fs::read_to_string(&log).unwrap();
    let mut calls: Vec<String> = log
        .lines()
        .skip_while(|l| !l.starts_with("openat(AT_FDCWD, \"source\""))
        .filter(|l| !l.contains("MAP_PRIVATE|MAP_ANONYMOUS")) // the allocator's memory
        .map(str::to_owned)
        .collect();
    if let Some(end) = calls.iter().position(|l| l.starts_with("linkat(")) {
        calls.truncate(end + 1);
    }
    (run, calls)
}

/// The name of a call (`mmap`) and its result (`0x7f…`) in a line of `--trace` or strace.
fn name_and_result(line: &str) -> (&str, &str) {
    let name = line.split('(').next().unwrap();
    (name, line.rsplit(" = ").next().unwrap().trim())
}

#[test]
fn mycp3_traces_each_call_with_the_values_strace_sees() {
    let lab = Lab::new();
    let list = "trace=openat,ftruncate,lseek,fallocate,mmap,madvise,munmap,fchmod,linkat,renameat";
    let (run, strace) = strace_mycp3(&lab, list, &["--trace"]);
    let pid = run.stderr.split(' ').nth(1).unwrap().trim_end_matches(']');
    let prefix = format!("[mycp3 {pid}] ");
    let traced: Vec<(&str, &str)> = run
        .stderr
        .lines()
        .map(|l| {
            l.strip_prefix(&prefix)
                .unwrap_or_else(|| panic!("{l}\n{run}"))
        })
        .map(name_and_result)
        .collect();
    let window = ["mmap", "mmap", "madvise", "memcpy", "munmap", "munmap"];
    let start = [
        "open",
        "open",
        "ftruncate",
        "lseek",
        "lseek",
        "posix_fallocate",
    ];
    let end = ["fchmod", "linkat"]; // DEST is new: the copy is linked to it, no rename
    let expected = [&start[..], &window, &window, &window, &end].concat();
    let names: Vec<&str> = traced.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, expected, "{run}");

    // The system calls strace sees, in the same order, with the same results (descriptors,
    // addresses): memcpy is no system call; the others have their kernel names.
    fn kernel_name(name: &str) -> &str {
        match name {
            "open" => "openat",
            "posix_fallocate" => "fallocate",
            "rename" => "renameat",
            other => other,
        }
    }
    let traced_calls: Vec<(&str, &str)> = traced
        .iter()
        .filter(|(name, _)| *name != "memcpy")
        .map(|&(name, result)| (kernel_name(name), result))
        .collect();
    let strace_calls: Vec<(&str, &str)> = strace.iter().map(|l| name_and_result(l)).collect();
    assert_eq!(traced_calls, strace_calls, "{strace:#?}\n{run}");
}

#[test]
fn mycp3_moves_the_data_without_read_or_write() {
    let lab = Lab::new();
    let (run, strace) = strace_mycp3(&lab, "trace=openat,read,write,linkat", &[]);
    let names: Vec<&str> = strace.iter().map(|l| name_and_result(l).0).collect();
    assert_eq!(names, ["openat", "openat", "linkat"], "{strace:#?}\n{run}");
    assert_eq!(
        fs::read(lab.dir().join("copy")).unwrap(),
        fs::read(lab.dir().join("source")).unwrap()
    );
}

#[test]
fn mycp3_without_trace_says_nothing() {
    assert_copies(&content(100, 12), &["--window", "4096"]);
}

// ---- mipc -------------------------------------------------------------------------------------

/// The lines mipc prints for `loops` steps.
fn mipc_lines(loops: usize) -> Vec<String> {
    (0..loops)
        .map(|n| match n % 2 {
            0 => format!("Parent: counter={n}"),
            _ => format!("Child : counter={n}"),
        })
        .collect()
}

#[test]
fn mipc_counts_to_9_in_strict_turns() {
    let lab = Lab::new();
    let run = lab.run("mipc", &[] as &[&str]);
    run.assert_success();
    assert_eq!(run.lines(), mipc_lines(10), "{run}");
}

#[test]
fn mipc_takes_1000_strict_turns() {
    let lab = Lab::new();
    let run = lab.run("mipc", &["--loops", "1000"]);
    run.assert_success();
    assert_eq!(run.lines(), mipc_lines(1000), "{run}");
}

#[test]
fn mipc_with_an_odd_number_of_steps_ends_with_the_parent() {
    let lab = Lab::new();
    for loops in [0, 1, 3] {
        let run = lab.run("mipc", &["--loops", &loops.to_string()]);
        run.assert_success();
        assert_eq!(run.lines(), mipc_lines(loops), "{run}");
    }
}

#[test]
fn mipc_traces_the_mapping_made_once_and_unmapped_by_both() {
    let lab = Lab::new();
    let run = lab.run("mipc", &["--trace", "--loops", "2"]);
    assert_eq!(run.lines(), mipc_lines(2), "{run}");
    // The calls of the mapping (the synclib's pipe calls may be traced too).
    let calls: Vec<(&str, &str)> = run
        .stderr
        .lines()
        .map(|l| l.split_once("] ").unwrap_or_else(|| panic!("{run}")))
        .filter(|(_, call)| {
            ["open(", "mmap(", "munmap("]
                .iter()
                .any(|c| call.starts_with(c))
        })
        .collect();
    let parent = calls[0].0; // "[mipc PID": the parent opened /dev/zero, before fork
    assert_eq!(calls.len(), 4, "{run}");
    let fd = calls[0]
        .1
        .strip_prefix("open(\"/dev/zero\", O_RDWR) = ")
        .expect("open");
    let mmap = format!("mmap(NULL, 8, PROT_READ|PROT_WRITE, MAP_SHARED, {fd}, 0) = 0x");
    assert!(calls[1].1.starts_with(&mmap), "{run}");
    // Then the descriptor is closed (the mapping stays), before anything else.
    let third = run.stderr.lines().nth(2).unwrap_or_default();
    assert_eq!(third, format!("{parent}] close({fd}) = 0"), "{run}");
    let address = calls[1].1.rsplit(" = ").next().unwrap();
    let unmapped_by: Vec<&str> = calls[2..]
        .iter()
        .filter(|(_, call)| *call == format!("munmap({address}, 8) = 0"))
        .map(|(who, _)| *who)
        .collect();
    assert_eq!(unmapped_by.len(), 2, "{run}");
    assert_ne!(unmapped_by[0], unmapped_by[1], "parent and child\n{run}");
    assert!(unmapped_by.contains(&parent), "{run}");
}

#[test]
fn mipc_refuses_a_dev_zero_that_is_no_device() {
    // In a mount namespace of its own, an empty regular file is put over /dev/zero: mapping it
    // would give a file's pages, and the first access past its end kills with SIGBUS.
    let lab = Lab::new();
    let what = "mipc_refuses_a_dev_zero_that_is_no_device";
    let probe = lab.run("unshare", &["-m", "true"]);
    if !probe.status.success() {
        return skipped(
            what,
            &format!("no mount namespace: {}", probe.stderr.trim()),
        );
    }
    fs::write(lab.dir().join("plain"), "").unwrap();
    let shell = r#"mount --bind plain /dev/zero && exec "$0""#;
    let run = lab.run("unshare", &["-m", "sh", "-c", shell, exe("mipc").unwrap()]);
    run.assert_failure(
        1,
        "mipc: /dev/zero: is a regular file, not a character device: mapping it would not give \
         zero-filled memory (an empty file raises SIGBUS)",
    );
    assert!(run.stdout.is_empty(), "{run}");
}

/// Starts mipc for (nearly) ever and waits until both processes have taken a turn.
fn start_long_mipc(lab: &Lab, extra: &[&str]) -> Running {
    let mut args = vec!["--loops", "4000000000"];
    args.extend(extra);
    let mipc = lab.start("mipc", &args);
    mipc.wait_for_stdout("Child : counter=1\n");
    mipc
}

/// The only child of `parent`.
fn only_child(parent: &Running) -> nix::unistd::Pid {
    let children = children_of(parent.pid());
    assert_eq!(children.len(), 1, "mipc should have one child");
    children[0]
}

/// Where the mapping of /dev/zero starts in `pid` (its line in /proc/PID/maps).
fn dev_zero_mapping(pid: nix::unistd::Pid) -> u64 {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let line = maps
        .lines()
        .find(|l| l.contains("/dev/zero"))
        .unwrap_or_else(|| panic!("no /dev/zero in /proc/{pid}/maps:\n{maps}"));
    assert!(
        line.contains(" rw-s "),
        "a shared, writable mapping: {line}"
    );
    u64::from_str_radix(line.split('-').next().unwrap(), 16).unwrap()
}

#[test]
fn mipc_fails_loudly_when_someone_else_changes_the_counter() {
    let lab = Lab::new();
    let mipc = start_long_mipc(&lab, &[]);
    // A third process writes into the memory the two share, through /proc/PID/mem.
    let counter = dev_zero_mapping(mipc.pid());
    let mut memory = fs::File::options()
        .write(true)
        .open(format!("/proc/{}/mem", mipc.pid()))
        .unwrap();
    memory.seek(SeekFrom::Start(counter)).unwrap();
    memory.write_all(&(-1000i64).to_ne_bytes()).unwrap();
    let run = mipc.finish();
    run.assert_failure(1, "mipc: Counter mismatch: the ");
    assert!(run.stderr.contains("found -1000"), "{run}");
    assert_eq!(run.stderr.lines().count(), 1, "one error line\n{run}");
}

#[test]
fn mipc_fails_at_once_when_the_child_is_killed() {
    let lab = Lab::new();
    let mipc = start_long_mipc(&lab, &[]);
    nix::sys::signal::kill(only_child(&mipc), Signal::SIGKILL).unwrap();
    let run = mipc.finish();
    run.assert_failure(1, "mipc: ");
    assert!(run.stderr.contains("child exited before"), "{run}");
}

#[test]
fn mipc_gives_up_on_a_stopped_child_after_the_timeout_and_ends_it() {
    let lab = Lab::new();
    let mipc = start_long_mipc(&lab, &["--timeout", "1"]);
    let child = only_child(&mipc);
    nix::sys::signal::kill(child, Signal::SIGSTOP).unwrap();
    // finish() also waits for the child, which holds mipc's stdout, to end.
    let run = mipc.finish();
    run.assert_failure(1, "mipc: WAIT_CHILD: timed out after 1 s (--timeout)");
    assert_eq!(run.stderr.lines().count(), 1, "one error line\n{run}");
    assert!(!Path::new(&format!("/proc/{child}")).exists(), "child left");
}

fn mipc_stopped_by(signal: Signal) {
    let lab = Lab::new();
    let mipc = start_long_mipc(&lab, &[]);
    mipc.signal(signal);
    // finish() also waits until the child has let go of stdout and stderr: both have ended.
    let run = mipc.finish();
    assert_eq!(run.code(), Some(128 + signal as i32), "{run}");
    assert!(!run.stderr.contains("mipc:"), "quiet\n{run}");
}

#[test]
fn mipc_stopped_by_sighup_ends_both_processes() {
    mipc_stopped_by(Signal::SIGHUP);
}

#[test]
fn mipc_stopped_by_sigint_ends_both_processes() {
    mipc_stopped_by(Signal::SIGINT);
}

#[test]
fn mipc_stopped_by_sigquit_ends_both_processes() {
    mipc_stopped_by(Signal::SIGQUIT);
}

#[test]
fn mipc_stopped_by_sigterm_ends_both_processes() {
    mipc_stopped_by(Signal::SIGTERM);
}

#[test]
fn mipc_child_stopped_by_sigterm_ends_the_parent_too() {
    let lab = Lab::new();
    let mipc = start_long_mipc(&lab, &[]);
    nix::sys::signal::kill(only_child(&mipc), Signal::SIGTERM).unwrap();
    let run = mipc.finish();
    assert_eq!(run.code(), Some(1), "{run}");
}

#[test]
fn ctrl_c_at_a_step_prompt_lets_only_cleanup_calls_be_made_after_it() {
    // Ctrl-C at the prompt before a cleanup call (the `close` of /dev/zero): that call is made,
    // being part of the way out, but no lecture call or event after it — no `pipe`, no `fork`,
    // no `(*counter)++`, nothing printed.
    let lab = Lab::new();
    let stepped = crate::harness::Stepped::start_with(&lab, "mipc", &["--step-at", "close"]);
    let (parent, call) = stepped.prompt(1);
    assert!(call.starts_with("close("), "{call}");
    nix::sys::signal::kill(parent, Signal::SIGINT).unwrap();
    let (run, screen) = stepped.finish();
    assert_eq!(run.code(), Some(130), "{run}");
    for not_made in ["pipe(", "fork(", "(*counter)++", "counter="] {
        assert!(!screen.contains(not_made), "{not_made}\n{screen}");
    }
    assert!(!screen.contains("mipc:"), "quiet\n{screen}");
}
