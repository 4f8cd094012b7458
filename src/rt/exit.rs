//! How an error ends the program: an error that decides its own exit status.
//!
//! Most errors end a program with status 1 and a message. A few decide otherwise: a termination
//! signal (128+signal, nothing to say: the shell knows why), a closed stdout (0, quietly), a
//! program that cannot be run (127). Such an error is wrapped in an [`Exit`] where it is made,
//! so the runner ([`crate::cli::run`]) needs to know no error type of any mechanism (the model is
//! uutils' `UError::code`): it looks for an `Exit` among the causes and does what it says.
//!
//! An error may also be marked an **echo** ([`Exit::echo`]): the consequence in one process of
//! another one's failure (the child that went away, the stdout both share that failed). A parent
//! whose error only echoes its child's says nothing more ([`crate::process::wait_child_after`]).

use std::error::Error;
use std::fmt;

/// An error together with the exit status it gives the program, and whether it is worth a
/// message on stderr. It displays as its cause, so messages read the same with or without it.
#[derive(Debug)]
pub struct Exit {
    status: u8,
    quiet: bool,
    echo: bool,
    cause: Box<dyn Error + Send + Sync + 'static>,
}

impl Exit {
    /// `cause`, ending the program with `status` and a message.
    pub fn new(status: u8, cause: impl Error + Send + Sync + 'static) -> Exit {
        Exit {
            status,
            quiet: false,
            echo: false,
            cause: Box::new(cause),
        }
    }

    /// `cause`, ending the program with status 1 and a message — unless it only echoes a peer's
    /// failure that the peer reports itself (see the module docs).
    pub fn echo(cause: impl Error + Send + Sync + 'static) -> Exit {
        Exit {
            echo: true,
            ..Exit::new(1, cause)
        }
    }

    /// Whether it only echoes a peer's failure.
    pub fn is_echo(&self) -> bool {
        self.echo
    }

    /// `cause`, ending the program with `status` and no message.
    pub fn quiet(status: u8, cause: impl Error + Send + Sync + 'static) -> Exit {
        Exit {
            quiet: true,
            ..Exit::new(status, cause)
        }
    }

    /// The exit status.
    pub fn status(&self) -> u8 {
        self.status
    }

    /// Whether the program ends without a message.
    pub fn is_quiet(&self) -> bool {
        self.quiet
    }

    /// The error itself.
    pub fn cause(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.cause
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.cause.fmt(f)
    }
}

impl Error for Exit {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.cause.source()
    }
}

/// The [`Exit`] that decides how `error` ends the program, if any (the outermost one).
pub fn exit_of(error: &anyhow::Error) -> Option<&Exit> {
    error.chain().find_map(|cause| cause.downcast_ref::<Exit>())
}

/// The first cause of type `E` in `error`'s chain, also inside an [`Exit`].
pub fn find<E: Error + 'static>(error: &anyhow::Error) -> Option<&E> {
    error.chain().find_map(|cause| {
        cause.downcast_ref::<E>().or_else(|| {
            let exit = cause.downcast_ref::<Exit>()?;
            exit.cause().downcast_ref::<E>()
        })
    })
}

/// Whether an error of type `E` is anywhere in `error`'s chain of causes.
pub fn caused_by<E: Error + 'static>(error: &anyhow::Error) -> bool {
    find::<E>(error).is_some()
}

/// Whether `error` only echoes a peer's failure ([`Exit::echo`]).
pub fn is_echo(error: &anyhow::Error) -> bool {
    exit_of(error).is_some_and(Exit::is_echo)
}

/// An errno as every message of the suite shows it: its name and its text,
/// `EACCES: Permission denied` (never Rust's `Permission denied (os error 13)`).
pub fn reason(errno: nix::errno::Errno) -> String {
    format!("{errno:?}: {}", errno.desc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Gone;
    impl fmt::Display for Gone {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("peer gone")
        }
    }
    impl Error for Gone {}

    #[test]
    fn an_exit_reads_as_its_cause_and_is_found_under_context() {
        let error = anyhow::Error::new(Exit::new(7, Gone)).context("waiting");
        assert_eq!(format!("{error:#}"), "waiting: peer gone");
        assert_eq!(exit_of(&error).map(Exit::status), Some(7));
        assert!(caused_by::<Gone>(&error));
        assert!(!caused_by::<std::io::Error>(&error));
    }

    #[test]
    fn an_error_without_exit_has_none() {
        let error = anyhow::anyhow!("plain").context("outer");
        assert!(exit_of(&error).is_none());
    }
}
