//! `ponte-relay passwd` and `ponte-agent operator passwd` typed at a real
//! terminal (a pseudo-terminal this test opens): the password is not echoed,
//! it is asked twice, and two different answers write nothing and fail.

use anyhow::{bail, Context, Result};
use argon2::{Argon2, PasswordHash, PasswordVerifier};
use ponte_tests::bin_path;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PASSWORD: &str = "ponte-sul-po-1937";
/// How long the command may take to show a prompt (argon2 comes after the prompts).
const PROMPT_WAIT: Duration = Duration::from_secs(10);

/// What the command did at the terminal.
struct Typed {
    status: ExitStatus,
    /// Everything the terminal showed (prompts, echo, errors).
    screen: String,
    stdout: String,
    /// The terminal echoes again once the command has exited.
    echo_after: bool,
}

/// Runs `bin args` with stdin and stderr on a pseudo-terminal (stdout piped,
/// as when the hash is redirected into a file); waits for each prompt that
/// contains `prompts[i]`, then types `answers[i]` and Enter.
fn type_at_terminal(bin: &str, args: &[&str], prompts: &[&str], answers: &[&str]) -> Result<Typed> {
    let (mut master, slave) = open_pty()?;
    let mut child = Command::new(bin_path(bin)?)
        .args(args)
        .stdin(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave))
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {bin} {args:?}"))?;
    // The terminal's output, read as it comes; the read ends (EIO) once the
    // child, the last holder of the slave side, exits.
    let screen = Arc::new(Mutex::new(Vec::<u8>::new()));
    let reader = {
        let screen = screen.clone();
        let mut master = master.try_clone()?;
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            while let Ok(n @ 1..) = master.read(&mut buf) {
                screen.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(&buf[..n]);
            }
        })
    };
    let shown = || String::from_utf8_lossy(&screen.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    let mut seen = 0;
    for (prompt, answer) in prompts.iter().zip(answers) {
        let deadline = Instant::now() + PROMPT_WAIT;
        loop {
            let text = shown();
            if let Some(at) = text[seen..].find(prompt) {
                seen += at + prompt.len();
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "{bin} {args:?}: no prompt {prompt:?} in {PROMPT_WAIT:?}; the terminal showed {text:?}"
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        master.write_all(format!("{answer}\n").as_bytes())?;
    }
    let mut stdout = String::new();
    child.stdout.take().context("stdout")?.read_to_string(&mut stdout)?;
    let status = child.wait()?;
    let echo_after = echo_is_on(&master)?;
    let _ = reader.join();
    Ok(Typed { status, screen: shown(), stdout, echo_after })
}

/// A pseudo-terminal's master (as a file) and slave side.
fn open_pty() -> Result<(File, OwnedFd)> {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two fds into the locals; the null name,
    // termios and window size pointers are allowed (defaults).
    let rc = unsafe {
        libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null())
    };
    if rc != 0 {
        bail!("openpty: {}", std::io::Error::last_os_error());
    }
    // SAFETY: both fds were just opened by openpty and are owned by nobody else.
    Ok(unsafe { (File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) })
}

/// The terminal's ECHO flag (the master side shares the slave's modes).
fn echo_is_on(master: &File) -> Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: termios is plain data, zeroed is a valid value; tcgetattr
    // fills it from an fd this function borrows.
    let mut modes: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: see above; the fd is open for the duration of the call.
    if unsafe { libc::tcgetattr(master.as_raw_fd(), &mut modes) } != 0 {
        bail!("tcgetattr: {}", std::io::Error::last_os_error());
    }
    Ok(modes.c_lflag & libc::ECHO != 0)
}

fn verifies(phc: &str, password: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// The two commands, and how to find the hash in what each prints.
fn commands() -> [(&'static str, Vec<&'static str>); 2] {
    [("ponte-relay", vec!["passwd"]), ("ponte-agent", vec!["operator", "passwd", "--name", "sala"])]
}

fn phc_in(stdout: &str) -> Option<&str> {
    stdout.split(|c: char| c == '"' || c.is_whitespace()).find(|w| w.starts_with("$argon2id$"))
}

#[test]
fn passwd_at_a_terminal_hides_the_password_and_asks_twice() -> Result<()> {
    for (bin, args) in commands() {
        let typed = type_at_terminal(bin, &args, &["password", "again"], &[PASSWORD, PASSWORD])?;
        let what = format!(
            "{bin} {args:?}: status {}, terminal {:?}, stdout {:?}",
            typed.status, typed.screen, typed.stdout
        );
        assert!(!typed.screen.contains(PASSWORD), "the password was echoed: {what}");
        assert!(typed.status.success(), "{what}");
        let phc = phc_in(&typed.stdout).with_context(|| format!("no argon2id hash: {what}"))?;
        assert!(verifies(phc, PASSWORD), "the hash does not verify the typed password: {what}");
    }
    Ok(())
}

#[test]
fn passwd_at_a_terminal_refuses_two_different_passwords() -> Result<()> {
    for (bin, args) in commands() {
        let typed = type_at_terminal(bin, &args, &["password", "again"], &[PASSWORD, "ponte-sul-po-1938"])?;
        let what = format!(
            "{bin} {args:?}: status {}, terminal {:?}, stdout {:?}",
            typed.status, typed.screen, typed.stdout
        );
        assert!(!typed.status.success(), "a mismatch must fail: {what}");
        assert!(typed.screen.contains("differ"), "the error says why: {what}");
        assert!(phc_in(&typed.stdout).is_none(), "nothing is written on a mismatch: {what}");
    }
    Ok(())
}

#[test]
fn ctrl_c_at_the_prompt_gives_the_terminal_its_echo_back() -> Result<()> {
    for (bin, args) in commands() {
        // Ctrl-C in the middle of the second answer.
        let typed = type_at_terminal(bin, &args, &["password", "again"], &[PASSWORD, "ponte\u{3}"])?;
        let what = format!(
            "{bin} {args:?}: status {}, terminal {:?}, stdout {:?}",
            typed.status, typed.screen, typed.stdout
        );
        assert!(!typed.status.success(), "Ctrl-C must fail: {what}");
        assert!(typed.screen.contains("interrupted"), "the error says why: {what}");
        assert!(phc_in(&typed.stdout).is_none(), "nothing is written on Ctrl-C: {what}");
        assert!(typed.echo_after, "the terminal was left without echo: {what}");
    }
    Ok(())
}
