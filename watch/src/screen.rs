//! How an [`Inventory`] is drawn: lines of at most [`WIDTH`] columns, in sections that appear
//! only when they have something to say, with the names of the slides (`msg_lspid`,
//! `shm_nattch`). Every text that comes from another process — a program name, a file name, the
//! segment's text — is escaped as the suite escapes a peer's text (`ipclab::layout::text`), so
//! it cannot drive the terminal. Pure: no I/O but the user names of `/etc/passwd`.

use std::os::unix::ffi::OsStrExt;

use ipclab::layout::sipc::{EMPTY, REQUEST};
use ipclab::layout::text::printable;
use ipclab::peer::{OpenFor, Process};
use ipclab::rt::clock::time_of_day;

use crate::lab::{
    Contents, Exercise, Fifo, Inventory, Lab, LockState, Named, Owner, Queue, Segment, SemSet,
    ServerLockFile,
};

/// The width of the screen: a projector's terminal, or a laptop's half screen.
pub const WIDTH: usize = 80;

/// How many columns `text` takes at most: a character outside ASCII may be a wide one (CJK), so
/// it counts two — a line may look shorter than its width, never longer.
pub fn columns(text: &str) -> usize {
    text.chars().map(|c| if c.is_ascii() { 1 } else { 2 }).sum()
}

/// `text` cut to `width` columns, ending in `...` where it was cut.
pub fn cut(text: &str, width: usize) -> String {
    if columns(text) <= width {
        return text.to_owned();
    }
    let mut shown = String::new();
    let mut used = 0;
    for c in text.chars() {
        used += columns(c.encode_utf8(&mut [0; 4]));
        if used + 3 > width {
            break;
        }
        shown.push(c);
    }
    shown + &".".repeat(width.min(3))
}

/// The first line: the lab, its keys, and `right` (the time, what quits) at the right edge.
pub fn header(lab: &Lab, right: &str, width: usize) -> String {
    let left = format!(
        "ipcwatch: lab {} (queue {}, segment {})",
        lab.id,
        lab.queue_key(),
        lab.segment_key()
    );
    let gap = width.saturating_sub(columns(&left) + columns(right)).max(1);
    cut(&format!("{left}{}{right}", " ".repeat(gap)), width)
}

/// The lines that show `seen`, each at most `width` columns.
pub fn draw(lab: &Lab, seen: &Inventory, width: usize) -> Vec<String> {
    let mut screen = Lines {
        width,
        lines: Vec::new(),
    };
    match &seen.queue {
        Ok(Some(queue)) => screen.queue(queue),
        Ok(None) => {}
        Err(why) => screen.problem(&format!("Message queue {}", lab.queue_key()), why),
    }
    match &seen.segments {
        Ok(segments) => segments.iter().for_each(|s| screen.segment(s)),
        Err(why) => screen.problem(&format!("Shared memory {}", lab.segment_key()), why),
    }
    match &seen.semaphores {
        Ok(Some(set)) => screen.semaphores(set),
        Ok(None) => {}
        Err(why) => screen.problem(&format!("Semaphore set {}", lab.segment_key()), why),
    }
    let dir = printable(lab.dir.as_os_str().as_bytes());
    match &seen.fifos {
        Ok(fifos) if fifos.is_empty() => {}
        Ok(fifos) => {
            screen.line(&format!("FIFOs in {dir}"));
            fifos.iter().for_each(|fifo| screen.fifo(fifo));
        }
        Err(why) => screen.problem(&format!("FIFOs in {dir}"), why),
    }
    if !seen.server_locks.is_empty() {
        screen.line("Server locks (who serves the key: a live server holds its lock)");
        seen.server_locks.iter().for_each(|l| screen.server_lock(l));
    }
    if !seen.exercises.is_empty() {
        screen.exercises(&seen.exercises);
    }
    if screen.lines.is_empty() {
        screen.items(
            &format!("Nothing of lab {}:", lab.id),
            &[
                format!("no queue {}", lab.queue_key()),
                format!("no segment {}", lab.segment_key()),
                format!("no .fifo* in {dir}"),
                "no exercise running.".into(),
            ],
        );
    }
    screen.lines
}

/// Which of `lines` were not on the screen before (`previous`); none on the first screen.
pub fn changed(previous: Option<&[String]>, lines: &[String]) -> Vec<bool> {
    match previous {
        Some(previous) => lines.iter().map(|line| !previous.contains(line)).collect(),
        None => vec![false; lines.len()],
    }
}

/// Lines being filled, each cut to `width`.
struct Lines {
    width: usize,
    lines: Vec<String>,
}

impl Lines {
    fn line(&mut self, text: &str) {
        self.lines.push(cut(text, self.width));
    }

    /// A section that could not be looked at: its heading, and why on a line of its own.
    fn problem(&mut self, heading: &str, why: &str) {
        self.line(&format!("{heading}: not shown"));
        self.line(&format!("  {why}"));
    }

    /// `head` followed by `items`, separated by commas, continued on as many lines as it takes,
    /// indented by four.
    fn items(&mut self, head: &str, items: &[String]) {
        let mut line = head.to_owned();
        for (i, item) in items.iter().enumerate() {
            let separator = if i + 1 < items.len() { "," } else { "" };
            let piece = format!(" {item}{separator}");
            if columns(&line) + columns(&piece) > self.width && columns(&line) > 4 {
                self.line(&line);
                line = "   ".to_owned();
            }
            line.push_str(&piece);
        }
        self.line(&line);
    }

    fn queue(&mut self, queue: &Queue) {
        self.line(&format!(
            "Message queue {}: msqid {}, {}",
            queue.key,
            queue.msqid,
            owner(&queue.owner)
        ));
        let plural = if queue.messages == 1 { "" } else { "s" };
        self.line(&format!(
            "  msg_qnum {} message{plural}, msg_cbytes {} bytes",
            queue.messages, queue.bytes
        ));
        let (sender, sent) = &queue.sender;
        let (receiver, received) = &queue.receiver;
        self.line(&format!("  msg_lspid {}{}", named(sender), at(*sent)));
        self.line(&format!("  msg_lrpid {}{}", named(receiver), at(*received)));
        if !queue.waiting.is_empty() {
            let waiting: Vec<String> = queue.waiting.iter().map(process).collect();
            self.items("  waiting in msgrcv/msgsnd:", &waiting);
        }
    }

    fn segment(&mut self, segment: &Segment) {
        let dest = if segment.removed { " (dest)" } else { "" };
        self.line(&format!(
            "Shared memory {}{dest}: shmid {}, {} bytes, {}",
            segment.key,
            segment.shmid,
            segment.size,
            owner(&segment.owner)
        ));
        if segment.removed {
            self.line("  marked for removal (IPC_RMID): the key is free; gone when all detach");
        }
        let mut attached: Vec<String> = segment.attached.iter().map(process).collect();
        let unseen = segment.nattch.saturating_sub(attached.len() as u64);
        if unseen > 0 && !attached.is_empty() {
            attached.push(format!("{unseen} not seen (another user's?)"));
        }
        let head = format!("  shm_nattch {}", segment.nattch);
        match attached.is_empty() {
            true => self.line(&head),
            false => self.items(&format!("{head}:"), &attached),
        }
        let (last, attach, detach) = &segment.last;
        self.line(&format!(
            "  shm_cpid {}, shm_lpid {}{}",
            named(&segment.creator),
            named(last),
            at(*attach.max(detach))
        ));
        match (&segment.contents, segment.sipc()) {
            (_, Some((flag, text))) => self.sipc(flag, text),
            (Contents::NotRead(why), _) => self.line(&format!("  bytes not shown: {why}")),
            (Contents::Read(_), None) => {}
        }
    }

    /// The sipc layout: the flag, and the start of the text (up to its NUL).
    fn sipc(&mut self, flag: i32, text: &[u8]) {
        let meaning = match flag {
            EMPTY => "empty: no request waiting",
            REQUEST => "a request waiting for the server",
            _ => "neither 0 nor 1: not the sipc pair's",
        };
        self.line(&format!("  flag {flag} ({meaning})"));
        let (end, nul) = match text.iter().position(|&b| b == 0) {
            Some(end) => (end, ""),
            None => (text.len(), " (no NUL)"),
        };
        let shown = cut(
            &printable(&text[..end]),
            self.width.saturating_sub(10 + nul.len()),
        );
        self.line(&format!("  text \"{shown}\"{nul}"));
    }

    fn semaphores(&mut self, set: &SemSet) {
        self.line(&format!(
            "Semaphore set {} (ipcbench's): semid {}, {}",
            set.key,
            set.semid,
            owner(&set.owner)
        ));
        self.line(&format!(
            "  nsems {}, sem_otime {}, {} wait(s) on it",
            set.nsems,
            time_of_day(set.operated),
            set.waiting
        ));
        if !set.users.is_empty() {
            let users: Vec<String> = set.users.iter().map(process).collect();
            self.items("  used by", &users);
        }
    }

    fn fifo(&mut self, fifo: &Fifo) {
        let name = printable(fifo.name.as_bytes());
        if let Some(kind) = fifo.not_a_fifo {
            self.line(&format!("  {name}: a {kind}, not a FIFO"));
            return;
        }
        let locked: Vec<String> = fifo.locked_by.iter().map(named).collect();
        match locked.is_empty() {
            true => self.line(&format!("  {name}: no lock (no owner of this suite)")),
            false => self.items(&format!("  {name}: locked (flock) by"), &locked),
        }
        let open = open_by(&fifo.open);
        match open.is_empty() {
            // Another user's descriptors are not to be seen, unless we are root.
            true if nix::unistd::geteuid().is_root() => self.line("    open by nobody"),
            true => self.line("    open by no process seen (another user's are not)"),
            false => self.items("    open by", &open),
        }
    }

    fn server_lock(&mut self, lock: &ServerLockFile) {
        let path = printable(lock.path.as_os_str().as_bytes());
        let head = format!("  {} {}:", lock.object, lock.key);
        match &lock.state {
            LockState::Held(holders) if !holders.is_empty() => {
                let holders: Vec<String> = holders.iter().map(process).collect();
                self.items(&format!("{head} held by"), &holders);
            }
            LockState::Held(_) => self.line(&format!("{head} held (by a process not seen)")),
            LockState::Free => self.line(&format!("{head} free: its server has ended ({path})")),
            LockState::Unknown(why) => self.line(&format!("{head} {why}")),
        }
    }

    fn exercises(&mut self, exercises: &[Exercise]) {
        self.line("Processes of the lab");
        self.line("      PID  PROGRAM          STATE        WAITS IN (wchan)");
        for exercise in exercises {
            let name = printable(exercise.process.name.as_bytes());
            let state = match exercise.state {
                Some(letter) => format!("{letter} {}", state(letter)),
                None => "?".into(),
            };
            let wchan = exercise.wchan.as_deref().map(|w| printable(w.as_bytes()));
            self.line(&format!(
                "  {:>7}  {:<15}  {:<11}  {}",
                exercise.process.pid,
                cut(&name, 15),
                state,
                wchan.as_deref().unwrap_or("-")
            ));
        }
    }
}

/// `4711 msgq1`, the name escaped.
fn process(process: &Process) -> String {
    format!("{} {}", process.pid, printable(process.name.as_bytes()))
}

/// `4711 msgq1`, `4711 (gone)` for a PID whose process has ended, `-` for none.
fn named(named: &Named) -> String {
    match (&named.process, named.pid) {
        (Some(p), _) => process(p),
        (None, 0) => "-".into(),
        (None, pid) => format!("{pid} (gone)"),
    }
}

/// ` at 10:31:22`, or nothing for "never".
fn at(time: i64) -> String {
    match time {
        0 => String::new(),
        time => format!(" at {}", time_of_day(time)),
    }
}

/// `mode 600, owner alice` (and the creator, if another user).
fn owner(owner: &Owner) -> String {
    let mut shown = format!("mode {:03o}, owner {}", owner.mode, user(owner.uid));
    if owner.cuid != owner.uid {
        shown.push_str(&format!(", creator {}", user(owner.cuid)));
    }
    shown
}

/// A user's name, or the number if it has none.
fn user(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) => printable(user.name.as_bytes()),
        _ => uid.to_string(),
    }
}

/// Each process that holds a FIFO open, once: `4711 fifos reading+writing`.
fn open_by(open: &[(Process, OpenFor)]) -> Vec<String> {
    let mut shown: Vec<(&Process, bool, bool)> = Vec::new();
    for (holder, how) in open {
        let reads = matches!(how, OpenFor::Reading | OpenFor::Both);
        let writes = matches!(how, OpenFor::Writing | OpenFor::Both);
        match shown.iter_mut().find(|(p, _, _)| p.pid == holder.pid) {
            Some(seen) => (seen.1, seen.2) = (seen.1 || reads, seen.2 || writes),
            None => shown.push((holder, reads, writes)),
        }
    }
    shown
        .into_iter()
        .map(|(holder, reads, writes)| {
            let how = match (reads, writes) {
                (true, true) => "reading+writing",
                (false, true) => "writing",
                _ => "reading",
            };
            format!("{} {how}", process(holder))
        })
        .collect()
}

/// What a state letter of `/proc/PID/stat` means.
fn state(letter: char) -> &'static str {
    match letter {
        'R' => "running",
        'S' => "sleeping",
        'D' => "disk wait",
        'T' => "stopped",
        't' => "traced",
        'Z' => "zombie",
        'I' => "idle",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_cut_to_their_width_counting_wide_characters_twice() {
        assert_eq!(cut("short", 10), "short");
        assert_eq!(cut("0123456789abc", 10), "0123456...");
        assert_eq!(columns(&cut(&"中".repeat(50), 80)), 79);
        assert!(columns(&cut(&"é".repeat(100), 80)) <= 80);
    }

    #[test]
    fn a_line_is_marked_when_it_was_not_on_the_screen_before() {
        let before = ["a".to_owned(), "b".to_owned()];
        let now = ["b".to_owned(), "c".to_owned()];
        assert_eq!(changed(Some(&before), &now), [false, true]);
        assert_eq!(changed(None, &now), [false, false]);
    }

    #[test]
    fn long_lists_continue_on_the_next_line_within_the_width() {
        let mut screen = Lines {
            width: 30,
            lines: Vec::new(),
        };
        let items: Vec<String> = (0..6).map(|i| format!("{}4711 msgq{i}", i)).collect();
        screen.items("  open by", &items);
        assert!(screen.lines.len() > 1, "{:?}", screen.lines);
        assert!(
            screen.lines.iter().all(|l| columns(l) <= 30),
            "{:?}",
            screen.lines
        );
        assert_eq!(screen.lines.concat().matches("msgq").count(), 6);
    }
}
