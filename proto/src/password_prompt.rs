//! Reading a new password for `ponte-relay passwd` and `ponte-agent operator
//! passwd`: from a terminal without echo and twice (a typo nobody saw would
//! lock the account out), from a pipe as one line (scripts feed it that way).

use rustix::termios::{self, LocalModes, OptionalActions, SpecialCodeIndex, Termios};
use std::io::{BufRead, IsTerminal, Write};

/// Why no password was read.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("reading the password from stdin: {0}")]
    Read(#[from] std::io::Error),
    #[error("turning the terminal's echo off: {0}")]
    Echo(rustix::io::Errno),
    #[error("the two passwords differ: nothing was written; run the command again")]
    Mismatch,
    #[error("interrupted: nothing was written")]
    Interrupted,
    #[error("empty password: pipe or type the password on stdin, e.g. `{0}`")]
    Empty(String),
}

/// Passwords shorter than this get a warning (they still work).
const SHORT_PASSWORD_CHARS: usize = 10;

/// [`read_new_password`] for a command that stores it: an empty one is
/// refused (`example` shows how to pipe it in), a short one warned about on
/// stderr.
pub fn read_password_to_store(example: &str) -> Result<String, PromptError> {
    let password = read_new_password()?;
    if password.is_empty() {
        return Err(PromptError::Empty(example.to_owned()));
    }
    if password.chars().count() < SHORT_PASSWORD_CHARS {
        eprintln!("warning: a password of fewer than {SHORT_PASSWORD_CHARS} characters is easy to guess");
    }
    Ok(password)
}

/// The byte Ctrl-C sends when the terminal does not turn it into SIGINT.
const CTRL_C: u8 = 0x03;

/// Reads a new password: on a terminal, prompts on stderr and reads it
/// twice with echo off; otherwise reads one line. The line end is removed.
pub fn read_new_password() -> Result<String, PromptError> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return read_line(&mut stdin.lock());
    }
    let first = read_hidden("password: ")?;
    let second = read_hidden("password again: ")?;
    if first != second {
        return Err(PromptError::Mismatch);
    }
    Ok(first)
}

/// One line from the terminal on stdin with echo off; echo comes back even
/// when the read fails.
fn read_hidden(prompt: &str) -> Result<String, PromptError> {
    let stdin = std::io::stdin();
    // Echo off before the prompt shows: what is typed after the prompt is
    // never echoed, however fast.
    let _echo = EchoOff::new(&stdin)?;
    let mut stderr = std::io::stderr();
    let _ = write!(stderr, "{prompt}");
    let _ = stderr.flush();
    let line = read_line(&mut stdin.lock());
    // The Enter the user typed was not echoed either.
    let _ = writeln!(stderr);
    match line {
        // Ctrl-C ends the line (see EchoOff) instead of killing the process
        // with echo still off.
        Ok(l) if l.as_bytes().contains(&CTRL_C) => Err(PromptError::Interrupted),
        other => other,
    }
}

fn read_line(input: &mut impl BufRead) -> Result<String, PromptError> {
    let mut line = String::new();
    input.read_line(&mut line)?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    Ok(password.to_owned())
}

/// The terminal's echo off while this lives; the old modes are put back on drop.
struct EchoOff<'a> {
    stdin: &'a std::io::Stdin,
    saved: Termios,
}

impl<'a> EchoOff<'a> {
    fn new(stdin: &'a std::io::Stdin) -> Result<EchoOff<'a>, PromptError> {
        let saved = termios::tcgetattr(stdin).map_err(PromptError::Echo)?;
        let mut quiet = saved.clone();
        // ECHONL would still echo the newline; keep canonical mode (line
        // editing, Ctrl-U) and signals.
        quiet.local_modes.remove(LocalModes::ECHO | LocalModes::ECHOE | LocalModes::ECHOK);
        quiet.local_modes.remove(LocalModes::ECHONL);
        // A signal would kill the process before Drop puts echo back, and
        // leave the admin's shell blind: Ctrl-C becomes a line end the
        // reader sees (canonical mode ends a line at VEOL too).
        quiet.local_modes.remove(LocalModes::ISIG);
        quiet.special_codes[SpecialCodeIndex::VEOL] = CTRL_C;
        termios::tcsetattr(stdin, OptionalActions::Flush, &quiet).map_err(PromptError::Echo)?;
        Ok(EchoOff { stdin, saved })
    }
}

impl Drop for EchoOff<'_> {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.stdin, OptionalActions::Now, &self.saved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_piped_line_loses_its_line_end_only() {
        for (input, want) in [("pw one\n", "pw one"), ("crlf\r\n", "crlf"), ("no end", "no end"), ("", "")] {
            assert_eq!(read_line(&mut input.as_bytes()).unwrap(), want);
        }
    }
}
