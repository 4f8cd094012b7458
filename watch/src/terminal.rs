//! The terminal of a live view: keys one at a time, the window's size, and a screen redrawn in
//! place.
//!
//! [`Keys`] puts the controlling terminal in non-canonical mode without echo (a key arrives
//! when it is pressed, and is not shown), and puts back the settings it found when dropped —
//! on every way out, since a termination signal only sets a flag (`ipclab::rt::signals`) and
//! the program then ends through the same drops. Ctrl-C is a key there, read as byte 3 like
//! any other (its `VINTR` character is off): it quits as `q` does, and no SIGINT goes to the
//! terminal's foreground process group, which holds whatever started the view as well — `make
//! watch`'s make, which GNU make 4.3 can end with `wait: No child processes` when a SIGINT
//! meets the end of its child. Ctrl-\ and Ctrl-Z keep their usual meaning (`ISIG` stays on).
//! After a stop (Ctrl-Z) the shell puts its own settings back; the next [`Keys::keep`] takes the
//! terminal again once the program is in the foreground.
//!
//! [`redraw`] writes a whole screen at once: the cursor home, each line over the last one with
//! the rest of the line cleared, the rest of the screen cleared — no flicker, no alternate
//! screen.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};

use ipclab::sys::failed;
use nix::sys::termios::{self, LocalFlags, SetArg, SpecialCharacterIndices, Termios};

use crate::screen::cut;

/// The controlling terminal, reading one key at a time until dropped.
pub struct Keys {
    tty: File,
    saved: Termios,
    raw: Termios,
}

impl Keys {
    /// Takes the controlling terminal (`/dev/tty`), or `None` if the process has none. Fails if
    /// the program runs in the background (`&`): it would draw over the shell's lines.
    pub fn take() -> anyhow::Result<Option<Keys>> {
        let Ok(tty) = File::options().read(true).open("/dev/tty") else {
            return Ok(None);
        };
        anyhow::ensure!(
            in_foreground(&tty),
            "the live view needs the terminal in the foreground: run it without &, or with --once"
        );
        let saved = termios::tcgetattr(&tty).map_err(|e| failed(e, "tcgetattr(/dev/tty)"))?;
        let mut raw = saved.clone();
        raw.local_flags
            .remove(LocalFlags::ICANON | LocalFlags::ECHO);
        raw.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
        raw.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
        raw.control_chars[SpecialCharacterIndices::VINTR as usize] = libc::_POSIX_VDISABLE;
        termios::tcsetattr(&tty, SetArg::TCSANOW, &raw)
            .map_err(|e| failed(e, "tcsetattr(/dev/tty)"))?;
        Ok(Some(Keys { tty, saved, raw }))
    }

    /// What to wait on for a key.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.tty.as_fd()
    }

    /// The keys pressed (read once the terminal has some: see [`Keys::fd`]); `None` if the
    /// terminal has gone (end of file, or an error).
    pub fn read(&mut self) -> Option<Vec<u8>> {
        let mut keys = [0u8; 64];
        match self.tty.read(&mut keys) {
            Ok(0) => None,
            Ok(n) => Some(keys[..n].to_vec()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Some(Vec::new()),
            Err(_) => None,
        }
    }

    /// Whether this program is in the terminal's foreground (not sent to the background with
    /// Ctrl-Z and `bg`).
    pub fn in_foreground(&self) -> bool {
        in_foreground(&self.tty)
    }

    /// Takes the terminal again if someone changed its settings meanwhile (the shell, after a
    /// Ctrl-Z and `fg`), while this program is in the foreground.
    pub fn keep(&self) {
        if !in_foreground(&self.tty) {
            return;
        }
        let now = termios::tcgetattr(&self.tty).ok();
        let intr = SpecialCharacterIndices::VINTR as usize;
        if now.is_some_and(|now| {
            now.local_flags != self.raw.local_flags
                || now.control_chars[intr] != self.raw.control_chars[intr]
        }) {
            let _ = termios::tcsetattr(&self.tty, SetArg::TCSANOW, &self.raw);
        }
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(&self.tty, SetArg::TCSANOW, &self.saved);
    }
}

/// Whether this process's group is the terminal's foreground group.
fn in_foreground(tty: &File) -> bool {
    nix::unistd::tcgetpgrp(tty) == Ok(nix::unistd::getpgrp())
}

/// The size of the terminal `fd` is, as (rows, columns); `None` if it is none or will not say.
pub fn size(fd: BorrowedFd<'_>) -> Option<(usize, usize)> {
    ipclab::sys::fd::window_size(fd).filter(|&(rows, _)| rows > 0)
}

/// The bytes that draw `lines` over the screen in place: the cursor home, each line (bold if
/// `marked`) cut to `cols` and followed by "clear to the end of the line", then "clear to the
/// end of the screen". At most `rows` lines: what does not fit is counted on the last one.
pub fn redraw(lines: &[String], marked: &[bool], (rows, cols): (usize, usize)) -> String {
    let rows = rows.max(1);
    let (shown, hidden) = match lines.len() > rows {
        true => (rows - 1, lines.len() - (rows - 1)),
        false => (lines.len(), 0),
    };
    let mut screen = String::from("\x1b[H");
    for (i, line) in lines[..shown].iter().enumerate() {
        if i > 0 {
            screen.push('\n');
        }
        match marked.get(i) == Some(&true) {
            true => screen.push_str(&format!("\x1b[1m{}\x1b[m", cut(line, cols))),
            false => screen.push_str(&cut(line, cols)),
        }
        screen.push_str("\x1b[K");
    }
    if hidden > 0 {
        let more = format!("({hidden} more lines: make the terminal taller)");
        if shown > 0 {
            screen.push('\n');
        }
        screen.push_str(&cut(&more, cols));
        screen.push_str("\x1b[K");
    }
    screen.push_str("\x1b[J");
    screen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_screen_is_drawn_in_place_and_fits_the_window() {
        let lines: Vec<String> = ["first line", "second line", "third line"]
            .map(String::from)
            .to_vec();
        let screen = redraw(&lines, &[false, true, false], (24, 80));
        assert_eq!(
            screen,
            "\x1b[Hfirst line\x1b[K\n\x1b[1msecond line\x1b[m\x1b[K\nthird line\x1b[K\x1b[J"
        );
        let small = redraw(&lines, &[false; 3], (2, 8));
        assert_eq!(small, "\x1b[Hfirst...\x1b[K\n(2 mo...\x1b[K\x1b[J");
    }
}
