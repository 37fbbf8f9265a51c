//! The fuzz targets of proto, agent and relay ([`targets`]), and a small
//! mutational fuzzer that runs them on stable Rust as ordinary tests.
//!
//! Each target is `targets::<name>::run(data) -> u64`: it feeds the bytes to
//! the code under test, panics when an invariant breaks, and returns an
//! *outcome class* (a hash of what the code did: which error, how many items
//! it parsed). Two engines drive the same functions:
//!
//! - **cargo fuzz (libFuzzer)**, the real fuzzer: coverage-guided, needs a
//!   nightly compiler, lives in `fuzz/libfuzzer/` (its own workspace, so the
//!   stable build never sees `libfuzzer-sys`), one `fuzz_targets/<name>.rs`
//!   per target and a dictionary in `fuzz/libfuzzer/dicts/<name>.dict`
//!   (written from the `DICT` consts by `scripts/fuzz --dicts`):
//!
//!   ```sh
//!   cargo +nightly fuzz run --fuzz-dir fuzz/libfuzzer wire_control /tmp/wc fuzz/corpus/wire_control \
//!       -- -dict=fuzz/libfuzzer/dicts/wire_control.dict -max_total_time=600
//!   scripts/fuzz 600          # every target, one at a time, seeds copied to a scratch dir
//!   ```
//!
//! - **[`fuzz`], the stable runner**: the smoke run in the test suite
//!   (`fuzz/tests/targets.rs`, 1 s per target), and the fallback of
//!   `scripts/fuzz` where nightly is missing (`scripts/fuzz --stable 600`).
//!   Inputs that produce an outcome class not seen before join the pool that
//!   later inputs are mutated from, a cheap stand-in for coverage feedback
//!   (measured against libFuzzer in BENCHMARKS.md, "Coverage-guided
//!   fuzzing"). A panic fails the test with the input (hex) and saves it for
//!   replay.
//!
//! The stable runner's knobs:
//! - Seeds: every file in `fuzz/corpus/<target>/` (kept in the repository,
//!   crashers found once stay there as regressions), replayed first;
//!   `PONTE_FUZZ_CORPUS=<dir>` reads `<dir>/<target>/` instead.
//! - Budget: `PONTE_FUZZ_SECS` (default 1 s: the smoke run of the test suite)
//!   and `PONTE_FUZZ_EXECS` (default unlimited), whichever ends first.
//! - `PONTE_FUZZ_SEED` makes a run repeatable (the seed is printed).
//! - `PONTE_FUZZ_SAVE=1` writes new pool entries back into the corpus
//!   directory (point `PONTE_FUZZ_CORPUS` at a scratch copy for long runs).
//! - `PONTE_FUZZ_REPORT=<file>` appends one JSON line per target run.

pub mod targets;

use std::cell::Cell;
use std::collections::HashSet;
use std::io::Write as _;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

/// Largest input the mutator produces.
pub const MAX_INPUT: usize = 64 * 1024;
/// Most inputs kept in the pool.
const MAX_POOL: usize = 4096;

/// What a run did.
#[derive(Debug, Clone)]
pub struct Report {
    /// Target name.
    pub target: String,
    /// Inputs executed (seeds included).
    pub execs: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Inputs in the pool at the end.
    pub pool: usize,
    /// Distinct outcome classes seen.
    pub classes: usize,
    /// Seed of the random generator.
    pub seed: u64,
}

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

fn install_quiet_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

/// xorshift64*: fast, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn env_f64(name: &str) -> Option<f64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The corpus directory of `target`: `fuzz/corpus/<target>`, or
/// `$PONTE_FUZZ_CORPUS/<target>`.
pub fn corpus_dir(target: &str) -> PathBuf {
    match std::env::var_os("PONTE_FUZZ_CORPUS") {
        Some(root) => PathBuf::from(root).join(target),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target),
    }
}

fn load_corpus(target: &str) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir(target))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    files.sort();
    files.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs `target` on the corpus, then on mutations of it until the budget is
/// spent. `dict` holds tokens worth splicing in (keywords, magic bytes).
/// Panics (failing the test) on the first input that makes `target` panic.
pub fn fuzz(name: &str, dict: &[&[u8]], target: impl Fn(&[u8]) -> u64) -> Report {
    install_quiet_hook();
    let secs = env_f64("PONTE_FUZZ_SECS").unwrap_or(1.0);
    let max_execs = env_f64("PONTE_FUZZ_EXECS").map_or(u64::MAX, |v| v as u64);
    let seed = env_f64("PONTE_FUZZ_SEED").map(|v| v as u64).unwrap_or_else(|| {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        fnv(format!("{name}{}{}", t.as_nanos(), std::process::id()).as_bytes()) | 1
    });
    let save = std::env::var_os("PONTE_FUZZ_SAVE").is_some();
    let mut rng = Rng(seed | 1);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);

    let run = |data: &[u8]| -> u64 {
        QUIET.with(|q| q.set(true));
        let r = panic::catch_unwind(AssertUnwindSafe(|| target(data)));
        QUIET.with(|q| q.set(false));
        match r {
            Ok(class) => class,
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "non-string panic".into());
                let dir = std::env::temp_dir().join("ponte-fuzz-crashes");
                let _ = std::fs::create_dir_all(&dir);
                let file = dir.join(format!("{name}-{:016x}", fnv(data)));
                let _ = std::fs::write(&file, data);
                let shown = &data[..data.len().min(512)];
                panic!(
                    "fuzz target `{name}` panicked: {msg}\ninput ({} bytes) saved to {}; copy it into {} to keep it as a regression\nhex: {}",
                    data.len(),
                    file.display(),
                    corpus_dir(name).display(),
                    hex(shown)
                );
            }
        }
    };

    let mut pool: Vec<Vec<u8>> = Vec::new();
    let mut classes = HashSet::new();
    let mut execs = 0u64;
    for seed_input in load_corpus(name) {
        classes.insert(run(&seed_input));
        execs += 1;
        pool.push(seed_input);
    }
    if pool.is_empty() {
        pool.push(Vec::new());
    }
    let mut input = Vec::with_capacity(MAX_INPUT);
    while execs < max_execs && (!execs.is_multiple_of(64) || Instant::now() < deadline) {
        input.clear();
        input.extend_from_slice(&pool[rng.below(pool.len())]);
        let rounds = 1 + rng.below(4);
        for _ in 0..rounds {
            mutate(&mut input, &mut rng, &pool, dict);
        }
        let class = run(&input);
        execs += 1;
        if classes.insert(class) && pool.len() < MAX_POOL {
            if save {
                let dir = corpus_dir(name);
                let _ = std::fs::create_dir_all(&dir);
                let _ = std::fs::write(dir.join(format!("{:016x}", fnv(&input))), &input);
            }
            pool.push(input.clone());
        }
    }
    let report = Report {
        target: name.into(),
        execs,
        elapsed: started.elapsed(),
        pool: pool.len(),
        classes: classes.len(),
        seed,
    };
    let rate = report.execs as f64 / report.elapsed.as_secs_f64().max(1e-9);
    println!(
        "fuzz {name}: {} execs in {:.1} s ({rate:.0}/s), pool {}, outcome classes {}, crashes 0, seed {seed}",
        report.execs,
        report.elapsed.as_secs_f64(),
        report.pool,
        report.classes
    );
    if let Some(path) = std::env::var_os("PONTE_FUZZ_REPORT") {
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(
                f,
                "{{\"target\":\"{name}\",\"execs\":{},\"secs\":{:.1},\"pool\":{},\"classes\":{},\"crashes\":0,\"seed\":{seed}}}",
                report.execs,
                report.elapsed.as_secs_f64(),
                report.pool,
                report.classes
            );
        }
    }
    report
}

/// `dict` in libFuzzer's dictionary format (`-dict=FILE`): one quoted token
/// a line, bytes outside printable ASCII as `\xNN`.
pub fn libfuzzer_dict(target: &str, dict: &[&[u8]]) -> String {
    let mut out = format!(
        "# libFuzzer dictionary of `{target}`, written from ponte_fuzz::targets::{target}::DICT\n\
         # (PONTE_FUZZ_BLESS=1 cargo test -p ponte-fuzz --test targets libfuzzer); do not edit.\n"
    );
    for (i, token) in dict.iter().enumerate() {
        let quoted: String = token
            .iter()
            .map(|&b| match b {
                b'"' | b'\\' => format!("\\{}", char::from(b)),
                0x20..=0x7e => char::from(b).to_string(),
                _ => format!("\\x{b:02x}"),
            })
            .collect();
        out.push_str(&format!("t{i}=\"{quoted}\"\n"));
    }
    out
}

/// Interesting values for lengths and counters.
const INTERESTING: &[u64] =
    &[0, 1, 2, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 0x1_0000, 0x7fff_ffff, 0xffff_ffff];

fn mutate(data: &mut Vec<u8>, rng: &mut Rng, pool: &[Vec<u8>], dict: &[&[u8]]) {
    let len = data.len();
    match rng.below(11) {
        // Flip a bit.
        0 if len > 0 => {
            let i = rng.below(len);
            data[i] ^= 1 << rng.below(8);
        }
        // Random byte.
        1 if len > 0 => {
            let i = rng.below(len);
            data[i] = rng.next() as u8;
        }
        // Insert random bytes.
        2 => {
            let n = 1 + rng.below(16);
            let at = rng.below(len + 1);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            data.splice(at..at, bytes);
        }
        // Delete a range.
        3 if len > 0 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(64));
            data.drain(at..at + n);
        }
        // Duplicate a range.
        4 if len > 0 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(256));
            let copy = data[at..at + n].to_vec();
            let to = rng.below(len + 1);
            data.splice(to..to, copy);
        }
        // Splice with another pool entry.
        5 if !pool.is_empty() => {
            let other = &pool[rng.below(pool.len())];
            if !other.is_empty() {
                let from = rng.below(other.len());
                let n = 1 + rng.below(other.len() - from);
                let at = rng.below(len + 1);
                data.truncate(at);
                data.extend_from_slice(&other[from..from + n]);
            }
        }
        // A dictionary token.
        6 | 7 if !dict.is_empty() => {
            let token = dict[rng.below(dict.len())];
            let at = rng.below(len + 1);
            if rng.below(2) == 0 && at + token.len() <= len {
                data[at..at + token.len()].copy_from_slice(token);
            } else {
                data.splice(at..at, token.iter().copied());
            }
        }
        // An interesting integer, big-endian, 1/2/4/8 bytes.
        8 if len > 0 => {
            let v = INTERESTING[rng.below(INTERESTING.len())];
            let width = [1usize, 2, 4, 8][rng.below(4)].min(len);
            let at = rng.below(len - width + 1);
            data[at..at + width].copy_from_slice(&v.to_be_bytes()[8 - width..]);
        }
        // Truncate.
        9 if len > 0 => data.truncate(rng.below(len)),
        // Add or subtract a small number at a byte.
        _ if len > 0 => {
            let i = rng.below(len);
            let d = (rng.below(35) as u8).wrapping_sub(17);
            data[i] = data[i].wrapping_add(d);
        }
        _ => data.push(rng.next() as u8),
    }
    data.truncate(MAX_INPUT);
}

/// An outcome class from any debuggable value (e.g. an error's variant).
pub fn class_of(value: impl std::fmt::Debug) -> u64 {
    fnv(format!("{value:?}").as_bytes())
}

/// The outcome class of a config loader's `Result`: ok, or the first three
/// words of the error message (the values a message quotes do not split it).
pub fn class_of_message<T, E: std::fmt::Display>(r: &Result<T, E>) -> u64 {
    class_of(
        r.as_ref()
            .map(|_| ())
            .map_err(|e| e.to_string().split_whitespace().take(3).collect::<Vec<_>>().join(" ")),
    )
}

/// The outcome class of a `Result`: the error's variant name (its Debug text
/// up to the first `(` or `{`), or `ok` mixed with `detail`.
pub fn class_of_result<T, E: std::fmt::Debug>(r: &Result<T, E>, detail: u64) -> u64 {
    match r {
        Ok(_) => fnv(b"ok") ^ detail.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        Err(e) => {
            let text = format!("{e:?}");
            let variant = text.split(['(', '{', ' ']).next().unwrap_or("");
            fnv(variant.as_bytes())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_planted_bug_and_reports_the_input() {
        std::env::set_var("PONTE_FUZZ_SECS", "20");
        let r = panic::catch_unwind(|| {
            fuzz("selftest", &[b"BUG"], |data| {
                if data.len() > 10 && data.windows(3).any(|w| w == b"BUG") {
                    panic!("planted");
                }
                class_of(data.len().min(8))
            })
        });
        std::env::remove_var("PONTE_FUZZ_SECS");
        let err = r.expect_err("the planted bug must be found");
        let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("planted") && msg.contains("hex: "), "{msg}");
    }

    #[test]
    fn mutations_stay_within_the_size_limit() {
        let mut rng = Rng(7);
        let mut data = vec![0u8; MAX_INPUT];
        for _ in 0..10_000 {
            mutate(&mut data, &mut rng, &[vec![1; 300]], &[b"tok"]);
            assert!(data.len() <= MAX_INPUT);
        }
    }
}
