//! The lab manual, followed as a student would: every command of labs.md that the manual marks
//! as runnable is run, and what it prints is compared with the manual's "Expected output".
//!
//! The fenced blocks of labs.md say how they are used by their info string:
//!
//! | info string        | what the test does                                                   |
//! |--------------------|----------------------------------------------------------------------|
//! | `sh`               | commands checked, not run (interactive, or needing a person)         |
//! | `sh run`           | each line run in turn, in a fresh directory with the exercises as `./NAME`; `make …` lines are checked with `make -n` |
//! | `sh pair`          | the first line started in the background (a server, "terminal 1"), then each other line run ("terminal 2"), retried until it succeeds while the server gets ready; then the server gets Ctrl-C |
//! | `expected`         | what the block before printed on stdout (its last command that printed) |
//! | `expected stderr`  | the same for stderr (trace lines, errors)                            |
//! | `expected server`  | what the background command of the `sh pair` block before printed (`expected server stderr`: on stderr) |
//!
//! An `expected` block may add `any-order` (the lines may come in any order: two processes) or
//! `some` (these lines are among the output). In it, `<…>` (`<pid>`, `<client pid>`, `<addr>`)
//! stands for a number, and `…` for any text. A line may end in `# exit N`: that command must
//! exit with N (default 0). A `strace -e trace=LIST` command must show every call of LIST.
//!
//! Every block runs with its own lab ID and directory; nothing may be left behind. Each package
//! runs the sections of its own programs ([`manual_section_is_ours`]).

use std::path::Path;
use std::time::Instant;

use nix::sys::signal::Signal;

use crate::harness::{manual_section_is_ours, Finished, Lab, Running, DEADLINE};
use crate::{PROGRAMS, ROOT};

/// A fenced block of the manual, with the section it is in.
#[derive(Debug, Clone)]
struct Block {
    section: String,
    info: String,
    lines: Vec<String>,
}

impl Block {
    fn kind(&self) -> &str {
        self.info.split_whitespace().next().unwrap_or("")
    }

    fn has(&self, word: &str) -> bool {
        self.info.split_whitespace().skip(1).any(|w| w == word)
    }
}

fn blocks() -> Vec<Block> {
    let manual = std::fs::read_to_string(Path::new(ROOT).join("labs.md")).unwrap();
    let mut blocks = Vec::new();
    let mut section = String::from("(start)");
    let mut open: Option<Block> = None;
    for line in manual.lines() {
        if let Some(info) = line.strip_prefix("```") {
            match open.take() {
                Some(block) => blocks.push(block),
                None => {
                    open = Some(Block {
                        section: section.clone(),
                        info: info.trim().to_string(),
                        lines: Vec::new(),
                    })
                }
            }
        } else if let Some(block) = open.as_mut() {
            block.lines.push(line.to_string());
        } else if let Some(heading) = line.strip_prefix("## ") {
            section = heading.to_string();
        }
    }
    blocks
}

/// A command line of a `sh` block: the command, and the exit status its comment expects.
fn command(line: &str) -> Option<(String, i32)> {
    let (command, comment) = match line.split_once(" # ") {
        Some((command, comment)) => (command.trim(), comment.trim()),
        None => (line.trim(), ""),
    };
    if command.is_empty() || command.starts_with('#') {
        return None;
    }
    let status = comment
        .strip_prefix("exit ")
        .and_then(|n| n.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    Some((command.to_string(), status))
}

/// A bench for one block: its own lab, with every program of this package as `./NAME`.
fn bench() -> Lab {
    let lab = Lab::new();
    for &(name, binary) in PROGRAMS.iter() {
        std::os::unix::fs::symlink(binary, lab.dir().join(name)).unwrap();
    }
    lab
}

/// Runs one command line as a student types it (bash, in the bench's directory).
fn shell(lab: &Lab, command: &str) -> Running {
    match command.strip_prefix("make ") {
        // Building is `make test`'s job already: check that the targets exist.
        Some(targets) => lab.start(
            "bash",
            &["-c", &format!("make -n -C {ROOT} {targets} >/dev/null")],
        ),
        None => lab.start("bash", &["-c", command]),
    }
}

fn check_status(block: &Block, command: &str, run: &Finished, status: i32) {
    assert_eq!(
        run.code(),
        Some(status),
        "labs.md, section \"{}\": `{command}` exited differently than the manual says\n{run}",
        block.section
    );
}

/// A `strace -e trace=LIST` command must show each call of its list: a filter naming a call
/// that never happens shows the student nothing.
fn check_strace(block: &Block, command: &str, run: &Finished) {
    let Some(list) = command
        .split_whitespace()
        .find_map(|w| w.strip_prefix("trace="))
    else {
        return;
    };
    for call in list.split(',') {
        // strace -f puts `[pid N] ` before the lines of other processes; a call split by
        // another process's call shows as `<... read resumed>`.
        let shown = run.stderr.lines().any(|line| {
            let line = match line.strip_prefix("[pid ") {
                Some(rest) => rest.split_once("] ").map_or(rest, |(_, call)| call),
                None => line,
            };
            line.starts_with(&format!("{call}("))
                || line.starts_with(&format!("<... {call} resumed>"))
        });
        assert!(
            shown,
            "labs.md, section \"{}\": `{command}` traces {call}, which it never shows\n{run}",
            block.section
        );
    }
}

/// What the placeholders of an expected block stand for so far: `<pid>` is one number
/// throughout a block, `<child pid>` another.
type Bindings = Vec<(String, String)>;

/// The ways `line` matches the manual's `pattern` (`<…>` a number — the same number wherever
/// the same placeholder stands —, `…` any text), each with the placeholders' values.
fn matches_with(pattern: &str, line: &str, bound: &Bindings) -> Vec<Bindings> {
    if let Some(rest) = pattern.strip_prefix('…') {
        return (0..=line.len())
            .filter(|&i| line.is_char_boundary(i))
            .flat_map(|i| matches_with(rest, &line[i..], bound))
            .collect();
    }
    if let (true, Some(end)) = (pattern.starts_with('<'), pattern.find('>')) {
        let (name, rest) = pattern.split_at(end + 1);
        if let Some((_, value)) = bound.iter().find(|(n, _)| n == name) {
            return match line.strip_prefix(value.as_str()) {
                Some(line) => matches_with(rest, line, bound),
                None => Vec::new(),
            };
        }
        let number = line
            .chars()
            .take_while(|c| c.is_ascii_hexdigit() || *c == 'x')
            .count();
        return (1..=number)
            .flat_map(|n| {
                let mut bound = bound.clone();
                bound.push((name.to_string(), line[..n].to_string()));
                matches_with(rest, &line[n..], &bound)
            })
            .collect();
    }
    match (pattern.chars().next(), line.chars().next()) {
        (None, None) => vec![bound.clone()],
        (Some(p), Some(l)) if p == l => {
            matches_with(&pattern[p.len_utf8()..], &line[l.len_utf8()..], bound)
        }
        _ => Vec::new(),
    }
}

/// Whether `line` matches `pattern` on its own.
fn matches(pattern: &str, line: &str) -> bool {
    !matches_with(pattern, line, &Vec::new()).is_empty()
}

/// Whether each pattern matches its own line, with one value per placeholder; in any order of
/// the lines if `any_order`, else line by line.
fn match_lines(
    patterns: &[&str],
    lines: &[&str],
    used: &mut [bool],
    any_order: bool,
    bound: &Bindings,
) -> bool {
    let Some((pattern, rest)) = patterns.split_first() else {
        return true;
    };
    let next = used.iter().position(|u| !u);
    for at in 0..lines.len() {
        if used[at] || (!any_order && Some(at) != next) {
            continue;
        }
        for bound in matches_with(pattern, lines[at], bound) {
            used[at] = true;
            if match_lines(rest, lines, used, any_order, &bound) {
                return true;
            }
            used[at] = false;
        }
    }
    false
}

fn check_expected(block: &Block, expected: &Block, output: &str) {
    let wanted: Vec<&str> = expected.lines.iter().map(String::as_str).collect();
    let got: Vec<&str> = output.lines().collect();
    let fail = |why: &str| -> ! {
        panic!(
            "labs.md, section \"{}\": the output of `{}` is not what the manual shows ({why})\n--- manual:\n{}\n--- output:\n{output}",
            block.section,
            block.lines.last().map(String::as_str).unwrap_or(""),
            wanted.join("\n")
        )
    };
    if expected.has("some") {
        for pattern in &wanted {
            if !got.iter().any(|line| matches(pattern, line)) {
                fail(&format!("no line like {pattern:?}"));
            }
        }
        return;
    }
    if got.len() != wanted.len() {
        fail("another number of lines");
    }
    let any_order = expected.has("any-order");
    if !match_lines(
        &wanted,
        &got,
        &mut vec![false; got.len()],
        any_order,
        &Vec::new(),
    ) {
        fail(if any_order {
            "in any order"
        } else {
            "line by line"
        });
    }
}

/// What a block printed: the last stdout and the last stderr that were not empty (the
/// manual's expected output is that of the command that prints it, whatever comes after).
#[derive(Default)]
struct Printed {
    stdout: String,
    stderr: String,
}

impl Printed {
    fn add(&mut self, run: &Finished) {
        if !run.stdout.is_empty() {
            self.stdout = run.stdout();
        }
        if !run.stderr.is_empty() {
            self.stderr = run.stderr.clone();
        }
    }

    fn stream(&self, expected: &Block) -> &str {
        match expected.has("stderr") {
            true => &self.stderr,
            false => &self.stdout,
        }
    }
}

/// Runs a `sh run` block.
fn run_block(lab: &Lab, block: &Block) -> Printed {
    let mut printed = Printed::default();
    for (command, status) in block.lines.iter().filter_map(|l| command(l)) {
        let run = shell(lab, &command).finish();
        check_status(block, &command, &run, status);
        check_strace(block, &command, &run);
        printed.add(&run);
    }
    printed
}

/// Runs a `sh pair` block; returns what the server and what the other commands printed.
fn run_pair(lab: &Lab, block: &Block) -> (Printed, Printed) {
    let mut commands = block.lines.iter().filter_map(|l| command(l));
    let (server_command, _) = commands
        .next()
        .expect("a pair block starts with its server");
    let server = shell(lab, &format!("exec {server_command}"));
    let mut printed = Printed::default();
    for (command, status) in commands {
        // The server may not be ready yet: a command that fails is tried again, for a while.
        let started = Instant::now();
        let run = loop {
            let run = shell(lab, &command).finish();
            if run.code() == Some(status) || started.elapsed() > DEADLINE / 2 {
                break run;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        check_status(block, &command, &run, status);
        check_strace(block, &command, &run);
        printed.add(&run);
    }
    // A server that may wait on gets Ctrl-C: fifos without `--count`, and msgq1, whose one
    // request is skipped as a leftover when the client has already ended (it took a stray
    // reply). The others stop by themselves and are waited for, so that what they print last
    // (under strace too) is there.
    let waits_on = (server_command.contains("fifos") && !server_command.contains("--count"))
        || server_command.starts_with("./msgq1");
    if waits_on {
        let _ = nix::sys::signal::kill(server.pid(), Signal::SIGINT);
    }
    let server_run = server.finish();
    check_strace(block, &server_command, &server_run);
    let mut server_printed = Printed::default();
    server_printed.add(&server_run);
    (server_printed, printed)
}

#[test]
fn every_runnable_command_of_the_manual_works_and_prints_what_it_says() {
    let all = blocks();
    let mut ran = 0;
    for (at, block) in all.iter().enumerate() {
        let expected: Vec<&Block> = all[at + 1..]
            .iter()
            .take_while(|b| b.kind() == "expected")
            .collect();
        if !manual_section_is_ours(&block.section) {
            continue;
        }
        let (server, printed) = match block.info.as_str() {
            info if info.starts_with("sh run") => (Printed::default(), run_block(&bench(), block)),
            info if info.starts_with("sh pair") => run_pair(&bench(), block),
            _ => continue,
        };
        for wanted in expected {
            let output = match wanted.has("server") {
                true => server.stream(wanted),
                false => printed.stream(wanted),
            };
            check_expected(block, wanted, output);
        }
        ran += 1;
    }
    assert!(
        ran > 0,
        "no runnable block in this package's sections of labs.md"
    );
}

#[test]
fn patterns_stand_for_numbers_and_any_text() {
    assert!(matches(
        "[pipe <pid>] fork() = <child>",
        "[pipe 4711] fork() = 4712"
    ));
    assert!(!matches(
        "[pipe <pid>] fork() = <pid>",
        "[pipe 4711] fork() = 4712"
    ));
    assert!(matches("at <addr> …", "at 0x7ffd1234 and more"));
    assert!(!matches("[pipe <pid>] fork()", "[pipe ] fork()"));
    assert!(!matches("Replied.", "Replied!"));
    assert!(matches("…Replied.", "Received request: x.....Replied."));
}

#[test]
fn a_placeholder_stands_for_the_same_number_throughout() {
    let wanted = ["[p <pid>] fork() = <child>", "[p <child>] fork() = 0"];
    let good = ["[p 7] fork() = 0", "[p 5] fork() = 7"];
    let bad = ["[p 7] fork() = 0", "[p 5] fork() = 8"];
    assert!(match_lines(
        &wanted,
        &good,
        &mut [false; 2],
        true,
        &Vec::new()
    ));
    assert!(!match_lines(
        &wanted,
        &bad,
        &mut [false; 2],
        true,
        &Vec::new()
    ));
    assert!(!match_lines(
        &wanted,
        &good,
        &mut [false; 2],
        false,
        &Vec::new()
    ));
}
