//! `ponte-agent config check` and `ponte-relay config check`: load a config
//! as `run` would (environment overrides included), read the files it names,
//! and report every problem found, each naming its key and the file, instead
//! of stopping at the first. Run before start (`ExecStartPre=` in the
//! systemd units) so a bad edit is refused with the whole list.

use crate::tls::{Identity, TlsSection};
use serde::{de::DeserializeOwned, Serialize};
use std::path::{Path, PathBuf};

/// The problems found in one config file.
#[derive(Debug, Default)]
pub struct Report {
    file: PathBuf,
    problems: Vec<String>,
}

impl Report {
    /// A report on `file`.
    pub fn new(file: &Path) -> Self {
        Self { file: file.to_owned(), problems: Vec::new() }
    }

    /// One problem (it names its key).
    pub fn add(&mut self, problem: impl Into<String>) {
        self.problems.push(problem.into());
    }

    /// The problems of a load that failed: the loader lists several one a
    /// line (each already with its context); a single one is given with
    /// its causes.
    pub fn add_error(&mut self, error: &(dyn std::error::Error + 'static)) {
        // The loader's context repeats the file name: the report says it once a line.
        let mut error = error;
        if error.to_string() == format!("config file `{}`", self.file.display()) {
            if let Some(inner) = error.source() {
                error = inner;
            }
        }
        let text = error.to_string();
        if text.contains('\n') {
            for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                let header = line.ends_with(" problems:") && line.starts_with(|c: char| c.is_ascii_digit());
                if !header {
                    self.add(line);
                }
            }
            return;
        }
        let chain: Vec<String> =
            std::iter::successors(Some(error), |e| e.source()).map(|e| e.to_string()).collect();
        self.add(chain.join(": "));
    }

    /// Loads the config as `run` does (`PONTE_*` overrides from the
    /// environment), recording what stops the load; `None` when it failed.
    pub fn load<T: Serialize + DeserializeOwned>(&mut self) -> Option<T> {
        let (cfg, problems) = crate::config_env::load_report::<T>(&self.file, std::env::vars_os());
        self.problems.extend(problems);
        cfg
    }

    /// Reads the `[tls]` files (parse, key matches certificate, chains to
    /// the CA, not expired); the node's identity when they are usable.
    pub fn tls(&mut self, tls: &TlsSection) -> Option<Identity> {
        let (id, problems) = crate::tls::check_files(&tls.ca, &tls.cert, &tls.key, unix_now());
        self.problems.extend(problems);
        if let (Some(crl), Some(id)) = (&tls.crl, &id) {
            match crate::tls::live::Revoked::load(crl, &id.ca) {
                Ok(list) => {
                    let own = id.chain.first().and_then(|c| crate::tls::live::serial_of(c));
                    if let Some((serial, _)) = own.filter(|(s, _)| list.contains(s)) {
                        self.add(format!(
                            "`tls.cert`: this node's certificate (serial {serial}) is revoked by `tls.crl` `{}`: \
                             issue a new one (`ponte-agent pki renew`)",
                            crl.display()
                        ));
                    }
                }
                Err(e) => self.add(format!("`tls.crl`: {e}")),
            }
        }
        id
    }

    /// Reads an HTTPS pair (`key` is `relay.https` or `management.https`)
    /// and a client CA, as the node will.
    pub fn https(
        &mut self,
        key: &str,
        https: Option<&crate::tls::https::HttpsSection>,
        client_ca: Option<&Path>,
        ca: Option<&Identity>,
    ) {
        if let Some(h) = https {
            let ca = ca.map(|i| i.ca.clone()).unwrap_or_default();
            if let Err(e) = crate::tls::https::HttpsPair::load(&h.cert, &h.key, ca) {
                self.add(format!("`{key}`: {e}"));
            }
        }
        if let Some(path) = client_ca {
            if let Err(e) = crate::tls::https::load_client_ca(path) {
                self.add(format!("`management.client_ca`: {e}"));
            }
        }
    }

    /// [`check_writable`], recorded.
    pub fn writable(&mut self, key: &str, path: &Path) {
        if let Err(p) = check_writable(key, path) {
            self.add(p);
        }
    }

    /// True when nothing was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The problems so far.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// Prints the outcome and returns the exit code: 0 and `OK: <file>
    /// (<summary>)`, or 1 and one `<file>: <problem>` line each.
    pub fn finish(&self, summary: &str) -> i32 {
        let file = self.file.display();
        if self.problems.is_empty() {
            println!("OK: {file} ({summary})");
            return 0;
        }
        for p in &self.problems {
            eprintln!("{file}: {p}");
        }
        eprintln!("{} problem(s) in {file}", self.problems.len());
        1
    }
}

/// Can the node write the audit file at `path` (`key` names the setting)?
/// An existing file must open for appending; a missing one needs its
/// nearest existing directory to be writable (the node creates the rest).
pub fn check_writable(key: &str, path: &Path) -> Result<(), String> {
    if path.exists() {
        return std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map(drop)
            .map_err(|e| format!("`{key}` = `{}`: cannot write it: {e}", path.display()));
    }
    let dir = path
        .ancestors()
        .skip(1)
        .find(|d| d.as_os_str().is_empty() || d.is_dir())
        .map(|d| if d.as_os_str().is_empty() { Path::new(".") } else { d })
        .unwrap_or(Path::new("/"));
    let probe = dir.join(format!(".ponte-config-check-{}", std::process::id()));
    match std::fs::OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(format!(
            "`{key}` = `{}`: the node could not create it, directory `{}` is not writable: {e}",
            path.display(),
            dir.display()
        )),
    }
}

/// Seconds since the Unix epoch now, for certificate validity.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writable_checks_the_file_or_the_directory_that_would_hold_it() {
        let dir = std::env::temp_dir().join(format!("ponte-config-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(check_writable("audit.path", &dir.join("sub/audit.log")), Ok(()));
        assert!(!dir.join("sub").exists(), "the check creates nothing");
        let err = check_writable("audit.path", Path::new("/proc/ponte/audit.log")).unwrap_err();
        assert!(err.starts_with("`audit.path` = `/proc/ponte/audit.log`"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
