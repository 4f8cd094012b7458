//! The lab manual's commands work as written: what labs.md (and each binary's header comment)
//! tells a student to type names real strace syscalls, real make targets, real exercises and
//! real options. Each package checks the commands of its own programs
//! ([`manual_command_is_ours`]).

use std::path::Path;

use crate::harness::{exe, manual_command_is_ours, Lab};
use crate::ROOT;

/// The lines of the ```sh blocks of labs.md, without comments, each with its section's heading.
fn manual_commands() -> Vec<(String, String)> {
    let manual = std::fs::read_to_string(Path::new(ROOT).join("labs.md")).unwrap();
    let mut in_sh = false;
    let mut section = String::new();
    let mut commands = Vec::new();
    for line in manual.lines() {
        if let Some(info) = line.strip_prefix("```") {
            in_sh = !in_sh && info.split_whitespace().next() == Some("sh");
        } else if in_sh {
            let command = line.split(" # ").next().unwrap().trim();
            if !command.is_empty() && !command.starts_with('#') {
                commands.push((section.clone(), command.to_owned()));
            }
        } else if let Some(heading) = line.strip_prefix("## ") {
            section = heading.to_owned();
        }
    }
    assert!(
        commands.len() > 10,
        "labs.md has too few commands: {commands:?}"
    );
    commands
}

/// Of `commands` (section, command), those this test crate checks.
fn ours(commands: Vec<(String, String)>) -> Vec<String> {
    commands
        .into_iter()
        .filter(|(section, command)| manual_command_is_ours(section, command))
        .map(|(_, command)| command)
        .collect()
}

/// The strace commands of labs.md and of the binaries' header comments, with where they are
/// (this test crate's: see [`ours`]).
fn strace_commands() -> Vec<(String, String)> {
    let mut commands: Vec<(String, String)> = ours(manual_commands())
        .into_iter()
        .filter(|c| c.starts_with("strace "))
        .map(|c| ("labs.md".to_owned(), c))
        .collect();
    // this package's binaries
    let programs = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bin");
    for entry in std::fs::read_dir(programs).unwrap() {
        let path = entry.unwrap().path();
        let header = std::fs::read_to_string(&path).unwrap();
        for line in header.lines().take_while(|l| l.starts_with("//!")) {
            if let Some(at) = line.find("strace ") {
                commands.push((path.display().to_string(), line[at..].to_owned()));
            }
        }
    }
    assert!(!commands.is_empty(), "no strace commands found");
    commands
}

#[test]
fn every_strace_list_names_real_system_calls() {
    let lab = Lab::new();
    for (source, command) in strace_commands() {
        let list = command
            .split_whitespace()
            .find_map(|w| w.strip_prefix("trace="));
        let list = list.unwrap_or_else(|| panic!("{source}: `{command}` has no trace=LIST"));
        let run = lab.run("strace", &["-e", &format!("trace={list}"), "true"]);
        assert!(
            run.status.success(),
            "{source}: strace rejects trace={list}\n{run}"
        );
    }
}

#[test]
fn every_make_command_names_real_targets() {
    let lab = Lab::new();
    let mut checked = 0;
    for command in ours(manual_commands())
        .iter()
        .filter(|c| c.starts_with("make"))
    {
        let mut make = lab.command("make", &["-n", "-C", ROOT]);
        make.args(command.split_whitespace().skip(1));
        let run = crate::harness::Running::spawn(make).finish();
        assert!(
            run.status.success(),
            "labs.md: `{command}` does not work\n{run}"
        );
        checked += 1;
    }
    assert!(checked > 0, "no make command found");
}

#[test]
fn every_program_and_option_in_the_manual_exists() {
    let lab = Lab::new();
    let mut checked = 0;
    for command in ours(manual_commands()) {
        let words: Vec<&str> = command.split_whitespace().collect();
        // the exercise may follow strace's options or an environment assignment
        let Some(at) = words.iter().position(|w| w.starts_with("./")) else {
            continue;
        };
        let name = &words[at][2..];
        assert!(
            exe(name).is_some(),
            "labs.md runs ./{name}, which is no exercise: `{command}`"
        );
        let help = lab.run(name, &["--help"]);
        help.assert_success();
        for option in words[at + 1..]
            .iter()
            .take_while(|w| **w != "--" && **w != "|" && **w != ">")
        {
            if let Some(option) = option.strip_prefix("--") {
                assert!(
                    help.stdout().contains(&format!("--{option}")),
                    "labs.md: ./{name} has no --{option}: `{command}`"
                );
            }
        }
        checked += 1;
    }
    assert!(checked > 0, "no ./program found");
}
