//! Loading a node's TOML config with its `PONTE_*` environment overrides,
//! shared by agent and relay.
//!
//! The rules, as the admin guide states them:
//! - `PONTE_<SECTION>__<KEY>=value` sets `<key>` of `[<section>]`; deeper
//!   tables add `__<KEY>` steps (`PONTE_DEVICE__2__ONVIF__URL`).
//! - An array of tables (`[[site]]`, `[[relay]]`, `[[device]]`, `[[viewer]]`,
//!   `[[token]]`, `[[operator]]`, `[[downstream]]`, `[[device.lens]]`) is
//!   indexed by the table's position in the file, **from 1**:
//!   `PONTE_SITE__2__BUDGET_MBPS=20` is `budget_mbps` of the second `[[site]]`.
//!   The table must exist in the file: the environment changes keys, it
//!   does not add tables. Ids are not used as selectors: they may hold `-`
//!   and `_`, which a variable name cannot carry unambiguously.
//! - Only single values (strings, numbers, booleans) can be set; a list
//!   (`allow = [...]`) or a whole table is set in the file.
//! - Any other `PONTE_*` variable is refused at start, naming it, unless it
//!   is one of the tool settings in [`TOOL_VARIABLES`]: a typo never passes
//!   silently.

use anyhow::Context as _;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::Path;

/// `PONTE_*` variables that are not config keys: read by the agent's test
/// clock, the test harness, the benchmarks and the fuzz runner, whose
/// nodes inherit them.
pub const TOOL_VARIABLES: &[&str] = &[
    "PONTE_CLOCK_START",
    "PONTE_BIN_DIR",
    "PONTE_CHROMIUM",
    "PONTE_ONVIF_WSDL",
    "PONTE_FIBRE_CUT_SECS",
    "PONTE_CPU_HOG",
];
/// Prefixes of the benchmark and fuzz runner settings.
const TOOL_PREFIXES: &[&str] = &["PONTE_BENCH_", "PONTE_FUZZ_"];

/// One step of an override's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A key of a table (lowercase, as in the file).
    Key(String),
    /// A table of an array of tables, 0-based (the variable says 1-based).
    Item(usize),
}

/// One `PONTE_...` override.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// The variable's name.
    pub var: String,
    /// Where it points.
    pub path: Vec<Step>,
    /// Its value, as text (converted to the key's type on loading).
    pub value: String,
}

impl Override {
    /// The key as the guide writes it: `site[2].budget_mbps` (from 1).
    pub fn key(&self) -> String {
        self.render(1)
    }

    /// The key as the config crate's path expression (0-based).
    fn expression(&self) -> String {
        self.render(0)
    }

    /// The path with table items numbered from `first`.
    fn render(&self, first: usize) -> String {
        let mut s = String::new();
        for step in &self.path {
            match step {
                Step::Key(k) if s.is_empty() => s.push_str(k),
                Step::Key(k) => {
                    s.push('.');
                    s.push_str(k);
                }
                Step::Item(i) => s.push_str(&format!("[{}]", i + first)),
            }
        }
        s
    }
}

/// The overrides among `vars`, and a message for each `PONTE_*` variable
/// that is neither an override nor a tool setting.
pub fn parse_vars(
    vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> (Vec<Override>, Vec<String>) {
    let mut overrides = Vec::new();
    let mut problems = Vec::new();
    for (name, value) in vars {
        let Some(name) = name.to_str().map(str::to_owned) else {
            if name.to_string_lossy().starts_with("PONTE_") {
                problems.push(format!("`{}`: the variable's name is not UTF-8", name.to_string_lossy()));
            }
            continue;
        };
        let Some(rest) = name.strip_prefix("PONTE_") else { continue };
        if TOOL_VARIABLES.contains(&name.as_str()) || TOOL_PREFIXES.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let Some(value) = value.to_str().map(str::to_owned) else {
            problems.push(format!("`{name}`: its value is not UTF-8"));
            continue;
        };
        match parse_name(rest) {
            Ok(path) => overrides.push(Override { var: name, path, value }),
            Err(why) => problems.push(format!("`{name}`: {why}")),
        }
    }
    overrides.sort_by(|a, b| a.var.cmp(&b.var));
    problems.sort();
    (overrides, problems)
}

fn parse_name(rest: &str) -> Result<Vec<Step>, String> {
    if !rest.contains("__") {
        return Err(format!(
            "not a config override (those are PONTE_<SECTION>__<KEY>, with two underscores after the \
             section, e.g. PONTE_RELAY__HTTP_LISTEN) nor a setting ponte reads ({}); fix or unset it",
            TOOL_VARIABLES.join(", ")
        ));
    }
    let mut path = Vec::new();
    for (i, part) in rest.split("__").enumerate() {
        if part.is_empty() {
            return Err("an empty step between `__` separators".into());
        }
        if part.bytes().all(|b| b.is_ascii_digit()) {
            if i == 0 {
                return Err("it starts with a number: name the section first".into());
            }
            let n: usize = part.parse().map_err(|_| format!("`{part}` is not a table number"))?;
            if n == 0 {
                return Err("tables are numbered from 1 (the first `[[...]]` in the file is 1)".into());
            }
            path.push(Step::Item(n - 1));
        } else if part.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_') {
            path.push(Step::Key(part.to_ascii_lowercase()));
        } else {
            return Err(format!("`{part}`: keys are written in capitals (PONTE_RELAY__HTTP_LISTEN)"));
        }
    }
    Ok(path)
}

/// Checks an override against the config's key tree (the file's values
/// with the defaults filled in). With `strict_keys` off (the file could not
/// be read into the config alone), a key missing from the tree is left to
/// the loader to refuse.
pub fn check(tree: &serde_json::Value, ov: &Override, strict_keys: bool) -> Result<(), String> {
    use serde_json::Value;
    let mut node = tree;
    let mut shown = String::new();
    for (i, step) in ov.path.iter().enumerate() {
        let here = if shown.is_empty() { "the config".to_owned() } else { format!("`{shown}`") };
        match (step, node) {
            (Step::Key(k), Value::Object(map)) => match map.get(k) {
                Some(next) => node = next,
                None if !strict_keys => return Ok(()),
                None => {
                    let mut known: Vec<&str> = map.keys().map(String::as_str).collect();
                    known.sort_unstable();
                    return Err(format!(
                        "`{}` names `{}`, which is not a key: {here} has {}",
                        ov.var,
                        ov.key(),
                        if known.is_empty() { "no keys".to_owned() } else { known.join(", ") }
                    ));
                }
            },
            (Step::Key(k), Value::Array(items)) => {
                return Err(format!(
                    "`{}`: {here} is a list of {} `[[{shown}]]` table(s): name one by its number, from 1, \
                     e.g. PONTE_{}__1__{}",
                    ov.var,
                    items.len(),
                    shown.to_ascii_uppercase().replace('.', "__"),
                    k.to_ascii_uppercase()
                ))
            }
            (Step::Item(n), Value::Array(items)) => match items.get(*n) {
                Some(next) => node = next,
                None => {
                    return Err(format!(
                        "`{}`: the file has {} `[[{shown}]]` table(s), numbered from 1; there is no {}. \
                         The environment changes keys of tables in the file, it does not add tables",
                        ov.var,
                        items.len(),
                        n + 1
                    ))
                }
            },
            (Step::Item(_), _) => {
                return Err(format!("`{}`: {here} is not a list of tables: drop the number", ov.var));
            }
            // An optional table absent from the file (`[rtsp]`): the
            // loader names a key it does not know.
            (_, Value::Null) if i > 0 => return Ok(()),
            (Step::Key(_), _) => {
                return Err(format!("`{}`: {here} is a single value, it has no keys", ov.var));
            }
        }
        match step {
            Step::Key(k) if shown.is_empty() => shown.push_str(k),
            Step::Key(k) => {
                shown.push('.');
                shown.push_str(k);
            }
            Step::Item(_) => {}
        }
    }
    match node {
        serde_json::Value::Object(_) => {
            Err(format!("`{}` names the table `{}`, not a key of it", ov.var, ov.key()))
        }
        serde_json::Value::Array(_) => Err(format!(
            "`{}` names `{}`, a list: lists are set in the file, not from the environment",
            ov.var,
            ov.key()
        )),
        _ => Ok(()),
    }
}

/// Why a config did not load: every problem found, each naming the key
/// (and the variable, for overrides).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct LoadError {
    /// One line each.
    pub problems: Vec<String>,
}

/// Reads the TOML file at `path` into `T`, with the `PONTE_*` overrides
/// of `vars` applied. Every variable problem is reported at once.
pub fn load<T: Serialize + DeserializeOwned>(
    path: &Path,
    vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Result<T, LoadError> {
    match load_report(path, vars) {
        (Some(cfg), problems) if problems.is_empty() => Ok(cfg),
        (_, problems) => Err(LoadError { problems }),
    }
}

/// [`load`] for `config check`: the variable problems, and the config read
/// with the overrides that are sound, so that its own problems can be
/// reported too.
pub fn load_report<T: Serialize + DeserializeOwned>(
    path: &Path,
    vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> (Option<T>, Vec<String>) {
    let file = || config::File::from(path).format(config::FileFormat::Toml);
    let (mut overrides, mut problems) = parse_vars(vars);
    if !overrides.is_empty() {
        // The key tree: the file read alone, defaults filled in; if it is
        // valid only with the overrides, the raw file.
        let alone = match config::Config::builder().add_source(file()).build() {
            Ok(c) => c,
            Err(e) => {
                problems.push(e.to_string());
                return (None, problems);
            }
        };
        let (tree, strict) = match alone.clone().try_deserialize::<T>() {
            Ok(cfg) => (serde_json::to_value(&cfg).unwrap_or_default(), true),
            Err(_) => (alone.try_deserialize::<serde_json::Value>().unwrap_or_default(), false),
        };
        overrides.retain(|ov| match check(&tree, ov, strict) {
            Ok(()) => true,
            Err(e) => {
                problems.push(e);
                false
            }
        });
    }
    let mut builder = config::Config::builder().add_source(file());
    for ov in &overrides {
        builder = match builder.set_override(ov.expression(), ov.value.clone()) {
            Ok(b) => b,
            Err(e) => {
                problems.push(format!("`{}` ({}): {e}", ov.var, ov.key()));
                return (None, problems);
            }
        };
    }
    match builder.build().and_then(|c| c.try_deserialize()) {
        Ok(cfg) => (Some(cfg), problems),
        Err(e) => {
            let text = std::fs::read_to_string(path).ok();
            let mut msg = crate::config_error::explain::<T>(&e.to_string(), text.as_deref());
            if !overrides.is_empty() {
                let vars: Vec<&str> = overrides.iter().map(|o| o.var.as_str()).collect();
                msg.push_str(&format!(" (with the environment overrides {})", vars.join(", ")));
            }
            problems.push(msg);
            (None, problems)
        }
    }
}

/// A node's whole config file (`agent.toml`, `relay.toml`): what serde reads,
/// plus the checks serde cannot make. Both nodes load through
/// [`load_checked`] and [`from_toml`], so a file and a test's TOML text go
/// through the same steps.
pub trait NodeConfig: Serialize + DeserializeOwned {
    /// Checks what serde cannot (ids, duplicates, cross-references); the
    /// error lists every problem found, one a line.
    fn validate(&self) -> anyhow::Result<()>;
}

/// Reads and checks the config file at `path` with the `PONTE_*`
/// overrides of `vars`; every error names the file.
pub fn load_checked<T: NodeConfig>(
    path: &Path,
    vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> anyhow::Result<T> {
    let cfg: T = load(path, vars).with_context(|| format!("config file `{}`", path.display()))?;
    cfg.validate().with_context(|| format!("config file `{}`", path.display()))?;
    Ok(cfg)
}

/// Parses and checks TOML text alone (no environment overrides): what
/// [`load_checked`] does with a file, for tests and the fuzz targets. A
/// key serde refuses is named with its line
/// ([`crate::config_error::explain`]).
pub fn from_toml<T: NodeConfig>(text: &str) -> anyhow::Result<T> {
    let cfg: T = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| anyhow::anyhow!(crate::config_error::explain::<T>(&e.to_string(), Some(text))))?;
    cfg.validate()?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Cfg {
        relay: Relay,
        #[serde(default, rename = "site")]
        sites: Vec<Site>,
        #[serde(default)]
        rtsp: Option<Rtsp>,
    }
    #[derive(Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Relay {
        site: String,
        #[serde(default)]
        linger_secs: u64,
        #[serde(default)]
        open: bool,
    }
    #[derive(Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Site {
        id: String,
        #[serde(default)]
        budget_mbps: Option<f64>,
        #[serde(default)]
        allow: Vec<String>,
        #[serde(default, rename = "lens")]
        lenses: Vec<Lens>,
    }
    #[derive(Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Lens {
        main: String,
    }
    #[derive(Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Rtsp {
        listen: String,
    }

    const FILE: &str = "[relay]\nsite = \"x\"\n[[site]]\nid = \"questura\"\nallow = [\"*\"]\n\
                        [[site.lens]]\nmain = \"rtsp://a/1\"\n[[site]]\nid = \"carabinieri-cr\"\nbudget_mbps = 8\n";

    fn file(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ponte-config-env-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("node.toml");
        std::fs::write(&p, FILE).unwrap();
        p
    }

    fn vars(list: &[(&str, &str)]) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
        list.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
    }

    #[test]
    fn array_tables_are_reached_by_their_number_from_one() {
        let p = file("ok");
        let c: Cfg = load(
            &p,
            vars(&[
                ("PONTE_SITE__2__BUDGET_MBPS", "20"),
                ("PONTE_SITE__1__BUDGET_MBPS", "4.5"),
                ("PONTE_SITE__1__LENS__1__MAIN", "rtsp://b/2"),
                ("PONTE_RELAY__LINGER_SECS", "9"),
                ("PONTE_RELAY__OPEN", "true"),
                ("PONTE_CLOCK_START", "2026-01-01T10:00"),
                ("PONTE_BENCH_SAMPLES", "3"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(c.sites[1].budget_mbps, Some(20.0));
        assert_eq!(c.sites[0].budget_mbps, Some(4.5));
        assert_eq!(c.sites[0].allow, ["*"], "the rest of the table is untouched");
        assert_eq!(c.sites[1].id, "carabinieri-cr");
        assert_eq!(c.sites[0].lenses[0].main, "rtsp://b/2");
        assert_eq!((c.relay.linger_secs, c.relay.open), (9, true));
    }

    #[test]
    fn every_variable_that_names_nothing_is_refused_by_name() {
        let p = file("bad");
        let err = load::<Cfg>(
            &p,
            vars(&[
                ("PONTE_SITE__3__BUDGET_MBPS", "20"),
                ("PONTE_SITE__0__BUDGET_MBPS", "20"),
                ("PONTE_SITE__BUDGET_MBPS", "20"),
                ("PONTE_SITE__1__BUDGT_MBPS", "20"),
                ("PONTE_SITE__1__ALLOW", "cam"),
                ("PONTE_SITE__1", "x"),
                ("PONTE_RELAY_LINGER_SECS", "9"),
                ("PONTE_RELAY__LINGER_SECS__1", "9"),
                ("PONTE_AUDT__PATH", "/x"),
            ]),
        )
        .unwrap_err();
        let all = err.problems.join("\n");
        assert_eq!(err.problems.len(), 9, "{all}");
        for want in [
            "`PONTE_SITE__3__BUDGET_MBPS`: the file has 2 `[[site]]` table(s), numbered from 1",
            "`PONTE_SITE__0__BUDGET_MBPS`: tables are numbered from 1",
            "`PONTE_SITE__BUDGET_MBPS`: `site` is a list of 2 `[[site]]` table(s): name one by its number, \
             from 1, e.g. PONTE_SITE__1__BUDGET_MBPS",
            "`PONTE_SITE__1__BUDGT_MBPS` names `site[1].budgt_mbps`, which is not a key",
            "`PONTE_SITE__1__ALLOW` names `site[1].allow`, a list",
            "`PONTE_SITE__1` names the table `site[1]`",
            "`PONTE_RELAY_LINGER_SECS`: not a config override",
            "`PONTE_RELAY__LINGER_SECS__1`: `relay.linger_secs` is not a list of tables",
            "`PONTE_AUDT__PATH` names `audt.path`, which is not a key: the config has relay, rtsp, site",
        ] {
            assert!(all.contains(want), "missing {want:?} in\n{all}");
        }
    }

    #[test]
    fn an_absent_optional_table_is_left_to_the_loader() {
        let p = file("rtsp");
        let c: Cfg = load(&p, vars(&[("PONTE_RTSP__LISTEN", "0.0.0.0:8554")])).unwrap();
        assert_eq!(c.rtsp.unwrap().listen, "0.0.0.0:8554");
        let err = load::<Cfg>(&p, vars(&[("PONTE_RTSP__LISEN", "0.0.0.0:8554")])).unwrap_err();
        let all = err.problems.join("\n");
        assert!(all.contains("lisen") && all.contains("PONTE_RTSP__LISEN"), "{all}");
    }

    #[test]
    fn garbage_names_never_panic() {
        for name in
            ["PONTE_", "PONTE___", "PONTE__1", "PONTE_A____B", "PONTE_a__b", "PONTE_A__99999999999999999999"]
        {
            let (_, problems) = parse_vars(vars(&[(name, "1")]));
            assert_eq!(problems.len(), 1, "{name}: {problems:?}");
        }
    }
}
