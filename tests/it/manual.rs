//! The lab manual, followed as a student would: every command of labs.md that the manual marks
//! as runnable is run, and what it prints is compared with the manual's "Expected output".
//!
//! The fenced blocks of labs.md say how they are used by their info string:
//!
//! | info string        | what the test does                                                   |
//! |--------------------|----------------------------------------------------------------------|
//! | `sh`               | commands checked, not run (interactive, or needing a person)         |
//! | `sh run`           | each line run in turn, in a fresh directory with the exercises as `./NAME` and a copy of `labs.md`; `make …` lines are checked with `make -n` |
//! | `sh pair`          | the first line started in the background (a server, "terminal 1"), then each other line run ("terminal 2"), retried until it succeeds while the server gets ready; then the server gets Ctrl-C (`sh pair ends`: the server ends by itself, and is waited for). A later line whose comment starts with `terminal 1` runs there: after the server has ended by itself |
//! | `expected`         | what the block before printed on stdout (its last command that printed) |
//! | `expected stderr`  | the same for stderr (trace lines, errors)                            |
//! | `expected server`  | what the background command of the `sh pair` block before printed (`expected server stderr`: on stderr) |
//!
//! An `expected` block may add `any-order` (the lines may come in any order: two processes) or
//! `some` (these lines are among the output). In it, `<…>` (`<pid>`, `<client pid>`, `<addr>`)
//! stands for a number, and `…` for any text. A line may end in `# exit N`: that command must
//! exit with N (default 0). A `strace -e trace=LIST` command must show every call of LIST, also
//! when it counts them (`-c`: a row of the table) or writes them to a file (`-o FILE`).
//!
//! Every block runs with its own lab ID and directory; nothing may be left behind. A student runs
//! the blocks in the repository: a runnable block must leave its directory as it found it (no
//! file made and not removed, none removed or changed), and every block, run or not, must remove
//! what its commands make there ([`made_and_not_removed`]). Each package runs the sections of
//! its own programs ([`manual_section_is_ours`]).

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
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

/// A command line of a `sh` block, with what its comment says.
struct Line {
    command: String,
    /// The exit status the comment expects (`# exit 1`; default 0).
    status: i32,
    /// Whether the comment starts with `terminal 1`: in a `sh pair` block, that line is typed
    /// in the server's terminal, once the server has ended.
    in_terminal_1: bool,
}

/// A command line of a `sh` block (`None` for a blank line or a comment).
fn command(line: &str) -> Option<Line> {
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
    Some(Line {
        command: command.to_string(),
        status,
        in_terminal_1: comment.starts_with("terminal 1"),
    })
}

/// A bench for one block: its own lab, with every program of this package as `./NAME` and a
/// copy of `labs.md`, as in the repository where a student runs them.
fn bench() -> Lab {
    let lab = Lab::new();
    for &(name, binary) in PROGRAMS.iter() {
        std::os::unix::fs::symlink(binary, lab.dir().join(name)).unwrap();
    }
    let manual = lab.dir().join("labs.md");
    std::fs::copy(Path::new(ROOT).join("labs.md"), &manual).unwrap();
    std::fs::set_permissions(&manual, std::fs::Permissions::from_mode(0o644)).unwrap();
    lab
}

/// What is in a directory: each entry's name, with its kind, size, mode and time of change.
fn contents(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let state = match std::fs::symlink_metadata(entry.path()) {
                Ok(m) => format!(
                    "{:?} {} bytes, mode {:o}, {}.{}",
                    m.file_type(),
                    m.len(),
                    m.mode(),
                    m.mtime(),
                    m.mtime_nsec()
                ),
                Err(e) => e.to_string(),
            };
            (name, state)
        })
        .collect()
}

/// A runnable block leaves its directory as it found it: what it made, removed or changed
/// there (`before` is [`contents`] before it ran).
fn check_nothing_left(block: &Block, lab: &Lab, before: &BTreeMap<String, String>) {
    let after = contents(lab.dir());
    let mut wrong = Vec::new();
    for (name, state) in &after {
        match before.get(name) {
            None => wrong.push(format!("leaves `{name}` behind")),
            Some(was) if was != state => wrong.push(format!("changes `{name}`")),
            Some(_) => {}
        }
    }
    wrong.extend(
        before
            .keys()
            .filter(|name| !after.contains_key(*name))
            .map(|name| format!("removes `{name}`")),
    );
    assert!(
        wrong.is_empty(),
        "labs.md, section \"{}\": this block {}; a student runs it in the repository\n{}",
        block.section,
        wrong.join(", "),
        block.lines.join("\n")
    );
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
/// that never happens shows the student nothing. Its output is on stderr, or in the file of
/// `-o FILE` (in the bench's directory); with `-c`, each call shown is a row of the table.
fn check_strace(block: &Block, lab: &Lab, command: &str, run: &Finished) {
    let words: Vec<&str> = command.split_whitespace().collect();
    if words.first() != Some(&"strace") {
        return;
    }
    let Some(list) = words.iter().find_map(|w| w.strip_prefix("trace=")) else {
        return;
    };
    let output = match words.iter().position(|w| *w == "-o") {
        Some(at) => {
            let file = lab.dir().join(words[at + 1]);
            std::fs::read_to_string(&file).unwrap_or_else(|e| {
                panic!(
                    "labs.md, section \"{}\": `{command}` wrote no {}: {e}\n{run}",
                    block.section,
                    file.display()
                )
            })
        }
        None => run.stderr.clone(),
    };
    let counted = words.contains(&"-c");
    for call in list.split(',') {
        let shown = output.lines().any(|line| match counted {
            // `% time     seconds  usecs/call     calls    errors syscall`: the name is last.
            true => line.split_whitespace().last() == Some(call),
            false => shows_call(line, call),
        });
        assert!(
            shown,
            "labs.md, section \"{}\": `{command}` traces {call}, which it never shows\n{run}\n--- strace's output:\n{output}",
            block.section
        );
    }
}

/// Whether a line of strace's output shows `call`: `call(…`, or, after another process's call
/// split it, `<... call resumed>`. With `-f`, strace puts `[pid N] ` before the lines of other
/// processes on a terminal, and `N ` before every line in a file (`-o`).
fn shows_call(line: &str, call: &str) -> bool {
    let line = match line.strip_prefix("[pid ") {
        Some(rest) => rest.split_once("] ").map_or(rest, |(_, call)| call),
        None => line
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .trim_start(),
    };
    line.starts_with(&format!("{call}(")) || line.starts_with(&format!("<... {call} resumed>"))
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
    for line in block.lines.iter().filter_map(|l| command(l)) {
        let run = shell(lab, &line.command).finish();
        check_status(block, &line.command, &run, line.status);
        check_strace(block, lab, &line.command, &run);
        printed.add(&run);
    }
    printed
}

/// The server of a `sh pair` block, running until it is ended (by itself or with Ctrl-C).
struct Server {
    command: String,
    running: Option<Running>,
    printed: Printed,
}

impl Server {
    /// Waits for the server to end — after Ctrl-C if `interrupt` — and checks its strace.
    fn end(&mut self, block: &Block, lab: &Lab, interrupt: bool) {
        let Some(server) = self.running.take() else {
            return;
        };
        if interrupt {
            let _ = nix::sys::signal::kill(server.pid(), Signal::SIGINT);
        }
        let run = server.finish();
        check_strace(block, lab, &self.command, &run);
        self.printed.add(&run);
    }
}

/// Runs a `sh pair` block; returns what the server and what the other commands printed.
fn run_pair(lab: &Lab, block: &Block) -> (Printed, Printed) {
    let mut commands = block.lines.iter().filter_map(|l| command(l));
    let first = commands
        .next()
        .expect("a pair block starts with its server");
    assert!(
        !first.command.contains("--count") || block.has("ends"),
        "labs.md, section \"{}\": `{}` ends by itself: mark its block `sh pair ends` (Ctrl-C \
         could cut it short)",
        block.section,
        first.command
    );
    let mut server = Server {
        running: Some(shell(lab, &format!("exec {}", first.command))),
        command: first.command,
        printed: Printed::default(),
    };
    let mut printed = Printed::default();
    for line in commands {
        if line.in_terminal_1 {
            // Typed in the server's terminal: once the server has ended by itself.
            server.end(block, lab, false);
        }
        // The server may not be ready yet: a command that fails is tried again, for a while.
        let started = Instant::now();
        let run = loop {
            let run = shell(lab, &line.command).finish();
            if run.code() == Some(line.status) || started.elapsed() > DEADLINE / 2 {
                break run;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        check_status(block, &line.command, &run, line.status);
        check_strace(block, lab, &line.command, &run);
        printed.add(&run);
    }
    // The server gets Ctrl-C, unless it ends by itself (`sh pair ends`: msgq1 after its one
    // exchange, fifos with `--count`), which Ctrl-C could cut short.
    server.end(block, lab, !block.has("ends"));
    (server.printed, printed)
}

/// A word of a shell command line, or what separates or redirects words.
#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    /// `;`, `|`, `&`, `&&`, `||`, parentheses, `$(`: the end of a simple command.
    End,
    /// `>`, `>>`, `2>`, `&>`: the next word is a file written.
    Output,
    /// `<`: the next word is a file read.
    Input,
}

/// The tokens of one command line: words (quotes removed) and operators. Enough of the shell
/// for the manual's commands: quotes, backslashes, `N>`/`>&N`, and `$(…)` as a separator.
fn tokens(line: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut word: Option<String> = None;
    let mut quote = None;
    let mut chars = line.chars().peekable();
    let flush = |word: &mut Option<String>, tokens: &mut Vec<Token>| {
        if let Some(w) = word.take() {
            tokens.push(Token::Word(w));
        }
    };
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            match c {
                c if c == q => quote = None,
                '\\' if q == '"' => word.get_or_insert_default().extend(chars.next()),
                c => word.get_or_insert_default().push(c),
            }
            continue;
        }
        match c {
            '\'' | '"' => {
                quote = Some(c);
                word.get_or_insert_default();
            }
            '\\' => word.get_or_insert_default().extend(chars.next()),
            '>' => {
                // `2>`: the digits name a descriptor, not a word.
                if word
                    .as_deref()
                    .is_some_and(|w| w.chars().all(|d| d.is_ascii_digit()))
                {
                    word = None;
                }
                flush(&mut word, &mut tokens);
                chars.next_if_eq(&'>');
                if chars.next_if_eq(&'&').is_some() {
                    while chars.next_if(|d| d.is_ascii_digit() || *d == '-').is_some() {}
                } else if chars.next_if_eq(&'(').is_some() {
                    tokens.push(Token::End); // >(…): a command of its own
                } else {
                    tokens.push(Token::Output);
                }
            }
            '<' => {
                flush(&mut word, &mut tokens);
                match chars.next_if_eq(&'(') {
                    Some(_) => tokens.push(Token::End),
                    None => tokens.push(Token::Input),
                }
            }
            '&' if chars.peek() == Some(&'>') => {
                flush(&mut word, &mut tokens);
                chars.next();
                chars.next_if_eq(&'>');
                tokens.push(Token::Output);
            }
            ';' | '|' | '&' | '(' | ')' | '`' => {
                flush(&mut word, &mut tokens);
                tokens.push(Token::End);
            }
            c if c.is_whitespace() => flush(&mut word, &mut tokens),
            c => word.get_or_insert_default().push(c),
        }
    }
    flush(&mut word, &mut tokens);
    tokens
}

/// The entry of the current directory that `path` makes or removes (`small` for
/// `small/copy`), if it is one: not an absolute path, not stdout (`-`), not a variable's.
fn top_entry(path: &str) -> Option<String> {
    let path = path.trim_start_matches("./");
    let top = path.split('/').next()?;
    let outside = path.starts_with('/') || path.starts_with('~') || path.contains('$');
    (!outside && !top.is_empty() && top != "-" && top != ".").then(|| top.to_string())
}

/// What the commands of `lines` make in the current directory, and what they remove there
/// (`git checkout FILE` counts as removing what `sed -i` changed).
fn files_made_and_removed(lines: &[String]) -> (Vec<String>, Vec<String>) {
    let (mut made, mut removed) = (Vec::new(), Vec::new());
    for line in lines.iter().filter_map(|l| command(l)) {
        let tokens = tokens(&line.command);
        for simple in tokens.split(|t| *t == Token::End) {
            let mut argv: Vec<&str> = Vec::new();
            let mut redirect = None;
            for token in simple {
                match (token, redirect.take()) {
                    (Token::Word(w), Some(Token::Output)) if w != ".fifo" => made.push(w.clone()),
                    (Token::Word(_), Some(_)) => {} // into the server's FIFO, or read
                    (Token::Word(w), None) => argv.push(w),
                    (Token::Output, _) => redirect = Some(Token::Output),
                    (Token::Input, _) => redirect = Some(Token::Input),
                    (Token::End, _) => unreachable!("split at End"),
                }
            }
            // `VAR=value command …`
            let at = argv.iter().take_while(|w| w.contains('=')).count();
            let (name, args) = match argv[at..].split_first() {
                Some((name, args)) => (name.trim_start_matches("./"), args),
                None => continue,
            };
            let operands: Vec<&str> = args
                .iter()
                .copied()
                .filter(|a| !a.starts_with('-'))
                .collect();
            let after = |option: &str| args.iter().skip_while(|a| **a != option).nth(1).copied();
            let last = args
                .last()
                .copied()
                .filter(|a| !a.starts_with('-') && args.len() >= 2);
            match name {
                "touch" | "mkdir" | "mkfifo" => made.extend(operands.iter().map(|o| o.to_string())),
                "truncate" => made.extend(
                    operands
                        .iter()
                        .filter(|o| Some(**o) != after("-s"))
                        .map(|o| o.to_string()),
                ),
                "ln" | "cp" | "mv" | "mycp3" => made.extend(last.map(str::to_string)),
                "sed" if args.iter().any(|a| a.starts_with("-i")) => {
                    made.extend(last.map(str::to_string))
                }
                "strace" | "gcc" | "cc" => made.extend(after("-o").map(str::to_string)),
                "rm" | "rmdir" => removed.extend(operands.iter().map(|o| o.to_string())),
                "git" if args.first() == Some(&"checkout") => {
                    removed.extend(operands[1..].iter().map(|o| o.to_string()))
                }
                _ => {}
            }
        }
    }
    let entries = |paths: Vec<String>| paths.iter().filter_map(|p| top_entry(p)).collect();
    (entries(made), entries(removed))
}

/// What a block of commands makes in the current directory and does not remove: a student
/// runs them in the repository, where a file left behind stays (`git status` shows it).
fn made_and_not_removed(lines: &[String]) -> Vec<String> {
    let (made, removed) = files_made_and_removed(lines);
    let mut left: Vec<String> = Vec::new();
    for entry in made {
        if !removed.contains(&entry) && !left.contains(&entry) {
            left.push(entry);
        }
    }
    left
}

#[test]
fn every_block_removes_the_files_it_makes() {
    let (mut checked, mut wrong) = (0, Vec::new());
    for block in blocks() {
        if block.kind() != "sh" || !manual_section_is_ours(&block.section) {
            continue;
        }
        let left = made_and_not_removed(&block.lines);
        if !left.is_empty() {
            wrong.push(format!(
                "labs.md, section \"{}\": a block makes {left:?} in the directory it is run in \
                 (the repository) and does not remove it:\n{}",
                block.section,
                block.lines.join("\n")
            ));
        }
        checked += 1;
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
    assert!(
        checked > 0,
        "no sh block in this package's sections of labs.md"
    );
}

/// Why a command of the manual would act on a process or object that the student did not
/// start or that is not of their lab ID, if it would.
fn acts_on_others(command: &str) -> Option<&'static str> {
    let tokens = tokens(command);
    for simple in tokens.split(|t| *t == Token::End) {
        let words: Vec<&str> = simple
            .iter()
            .filter_map(|t| match t {
                Token::Word(w) => Some(w.as_str()),
                _ => None,
            })
            .collect();
        match words.split_first() {
            Some((&("pgrep" | "pkill" | "killall"), _)) => {
                return Some("finds processes by name: other people's too")
            }
            // `kill -9 $!`, `kill -STOP $server`, `kill %1`: a process this shell started.
            Some((&"kill", args))
                if args
                    .iter()
                    .any(|a| !a.starts_with('-') && !a.starts_with('$') && !a.starts_with('%')) =>
            {
                return Some("kills a process named by a number, not one this shell started")
            }
            _ => {}
        }
    }
    (command.contains("ipcrm") && !command.contains("IPCLAB_ID"))
        .then_some("removes an object whose key is not computed from the lab ID")
}

#[test]
fn no_command_acts_on_what_the_student_did_not_start() {
    let manual = std::fs::read_to_string(Path::new(ROOT).join("labs.md")).unwrap();
    for word in ["pgrep", "pkill", "killall"] {
        assert!(
            !manual.contains(word),
            "labs.md names {word}: on a shared machine it finds other people's processes too; \
             use $! or the PID the program prints"
        );
    }
    for block in blocks() {
        if block.kind() != "sh" || !manual_section_is_ours(&block.section) {
            continue;
        }
        for line in block.lines.iter().filter_map(|l| command(l)) {
            if let Some(why) = acts_on_others(&line.command) {
                panic!(
                    "labs.md, section \"{}\": `{}` {why}",
                    block.section, line.command
                );
            }
        }
    }
}

#[test]
fn a_command_acting_on_others_is_caught() {
    for bad in [
        "cat /proc/$(pgrep -x shm)/maps",
        "kill -9 4711",
        "ipcrm -Q 0x8000",
    ] {
        assert!(acts_on_others(bad).is_some(), "{bad}");
    }
    for good in [
        "./sync --loops 1000000 > /dev/null & kill -9 $(ps -o pid= --ppid $!)",
        "kill -STOP $server",
        "ipcrm -M $((0x9000 + IPCLAB_ID))",
        "wait $!",
    ] {
        assert_eq!(acts_on_others(good), None, "{good}");
    }
}

#[test]
fn a_block_that_leaves_a_file_behind_is_caught() {
    let lines = |text: &str| text.lines().map(str::to_string).collect::<Vec<_>>();
    let wait_c = lines(
        "printf 'void wait_for(int *p)\\n{ while (*p == 0) ; }\\n' > wait.c\n\
         gcc -O2 -S -o - wait.c   # the assembly, on stdout",
    );
    assert_eq!(made_and_not_removed(&wait_c), ["wait.c"]);
    let full_disk = lines(
        "head -c 2M /dev/urandom > two\nmkdir small\n\
         mount -t tmpfs -o size=1m tmpfs small\n\
         ./mycp3 --reserve ftruncate two small/copy  # exit 1\numount small",
    );
    assert_eq!(made_and_not_removed(&full_disk), ["two", "small"]);
    let mut cleaned = full_disk.clone();
    cleaned.push("rm -r two small".into());
    assert!(made_and_not_removed(&cleaned).is_empty());
    let edited = lines("sed -i 's/MAP_SHARED/MAP_PRIVATE/g' src/bin/mipc.rs\nmake mipc");
    assert_eq!(made_and_not_removed(&edited), ["src"]);
    let restored = lines("sed -i 's/a/b/' src/bin/mipc.rs\ngit checkout src/bin/mipc.rs");
    assert!(made_and_not_removed(&restored).is_empty());
    let harmless = lines(
        "./sync --loops 1000000 > /dev/null 2>&1 & kill -9 $!\n\
         perl -e 'print pack(\"a32 a128\", \".fifo1\", \"x > y\")' > .fifo\n\
         ls -l /proc/$pid/fd > $HOME/fds\ngrep -c x < labs.md",
    );
    assert!(made_and_not_removed(&harmless).is_empty());
    let strace = lines("strace -o msgq1.strace -e trace=msgget ./msgq1   # terminal 1");
    assert_eq!(made_and_not_removed(&strace), ["msgq1.strace"]);
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
        let pair = match block.info.as_str() {
            info if info.starts_with("sh run") => false,
            info if info.starts_with("sh pair") => true,
            _ => continue,
        };
        let lab = bench();
        let before = contents(lab.dir());
        let (server, printed) = match pair {
            false => (Printed::default(), run_block(&lab, block)),
            true => run_pair(&lab, block),
        };
        check_nothing_left(block, &lab, &before);
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
