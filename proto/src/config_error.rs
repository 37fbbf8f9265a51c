//! Config errors as an admin reads them. The `config` crate reports a bad
//! key of an array of tables as ``for key `site[1]budget_mbps` ``: counted
//! from zero, without the entry's id or a line. [`explain`] names the entry
//! as `` `[[site]]` #2 (id "questura") ``, the key inside it, and the line,
//! which the `toml` crate knows when it reads the same text.

use serde::de::DeserializeOwned;

/// Keys that name an entry of an array of tables, most telling first.
const ID_KEYS: [&str; 4] = ["id", "site", "user", "name"];

/// Rewrites `message` (a `config` deserialization error) for the file
/// `text` (when readable) that deserializes into `T`.
pub fn explain<T: DeserializeOwned>(message: &str, text: Option<&str>) -> String {
    let (what, key) = match message.split_once(" for key `") {
        Some((what, rest)) => (what, rest.split_once('`').map(|(k, _)| k)),
        None => (message, None),
    };
    // `config` appends ` in <path>`, and the caller names the file already.
    let what = what.trim();
    // Without a key it is a syntax error, whose message has its line.
    let Some(key) = key else { return what.to_owned() };
    let entry = split_entry(key);
    let line = text.and_then(|t| {
        let at = error_offset::<T>(t)?;
        // An entry refused as a whole (a `try_from` conversion) is placed
        // by the `toml` crate at the array's first `[[table]]`: its own
        // header is nearer the mark.
        let header = entry.and_then(|(table, index, _)| entry_offset(t, table, index));
        let at = header.map_or(at, |h| at.max(h));
        Some(t.get(..at)?.matches('\n').count() + 1)
    });
    let at = line.map(|l| format!(" (line {l})")).unwrap_or_default();
    match entry {
        Some((table, index, rest)) => {
            let id =
                text.and_then(|t| entry_id(t, table, index)).map(|id| format!(" ({id})")).unwrap_or_default();
            let inside = if rest.is_empty() { String::new() } else { format!(", key `{rest}`") };
            format!("`[[{table}]]` #{}{id}{inside}{at}: {what}", index + 1)
        }
        None => format!("key `{key}`{at}: {what}"),
    }
}

/// `site[1]budget_mbps` or `site[1].allow` as (`site`, 1, `budget_mbps`).
fn split_entry(key: &str) -> Option<(&str, usize, &str)> {
    let (table, rest) = key.split_once('[')?;
    let (index, rest) = rest.split_once(']')?;
    Some((table, index.parse().ok()?, rest.trim_start_matches('.')))
}

/// `id "questura"` for entry `index` of `[[table]]`, from its id key.
fn entry_id(text: &str, table: &str, index: usize) -> Option<String> {
    let doc: toml::Table = toml::from_str(text).ok()?;
    let entry = doc.get(table)?.as_array()?.get(index)?.as_table()?;
    ID_KEYS.iter().find_map(|k| Some(format!("{k} {:?}", entry.get(*k)?.as_str()?)))
}

/// Where the `[[table]]` header of entry `index` starts.
fn entry_offset(text: &str, table: &str, index: usize) -> Option<usize> {
    let doc = toml::de::DeTable::parse(text).ok()?;
    let toml::de::DeValue::Array(entries) = doc.get_ref().get(table)?.get_ref() else { return None };
    Some(entries.get(index)?.span().start)
}

/// Where the `toml` crate finds the same error.
fn error_offset<T: DeserializeOwned>(text: &str) -> Option<usize> {
    toml::from_str::<T>(text).err()?.span().map(|s| s.start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Cfg {
        site: Vec<Site>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Site {
        id: String,
        budget_mbps: Option<f64>,
    }

    const TEXT: &str =
        "[[site]]\nid = \"carabinieri\"\n\n[[site]]\nid = \"questura\"\nbudget_mbps = \"lots\"\n";

    #[test]
    fn names_the_entry_by_id_position_and_line() {
        let m = "invalid type: string \"lots\", expected a floating point for key `site[1]budget_mbps` in ../x.toml";
        assert_eq!(
            explain::<Cfg>(m, Some(TEXT)),
            "`[[site]]` #2 (id \"questura\"), key `budget_mbps` (line 6): invalid type: string \"lots\", \
             expected a floating point"
        );
    }

    /// A `[[site]]` refused as a whole, after its keys were read.
    #[derive(serde::Deserialize, Debug)]
    #[serde(try_from = "Site")]
    struct Picky(#[allow(dead_code)] Site);

    impl TryFrom<Site> for Picky {
        type Error = &'static str;
        fn try_from(site: Site) -> Result<Self, &'static str> {
            if site.id == "questura" {
                return Err("refused");
            }
            Ok(Picky(site))
        }
    }

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct PickyCfg {
        site: Vec<Picky>,
    }

    #[test]
    fn an_entry_refused_as_a_whole_is_at_its_own_header() {
        let text = TEXT.replace("budget_mbps = \"lots\"", "budget_mbps = 3.0");
        assert_eq!(
            explain::<PickyCfg>("refused for key `site[1]`", Some(&text)),
            "`[[site]]` #2 (id \"questura\") (line 4): refused"
        );
        // A key refused inside an entry stays at its own line.
        assert_eq!(
            explain::<Cfg>("invalid type for key `site[1]budget_mbps`", Some(TEXT)),
            "`[[site]]` #2 (id \"questura\"), key `budget_mbps` (line 6): invalid type"
        );
    }

    #[test]
    fn without_the_text_or_an_array_it_still_reads_well() {
        let m = "invalid type: string \"lots\", expected a floating point for key `site[1].budget_mbps`";
        assert_eq!(
            explain::<Cfg>(m, None),
            "`[[site]]` #2, key `budget_mbps`: invalid type: string \"lots\", expected a floating point"
        );
        assert_eq!(
            explain::<Cfg>("invalid length for key `policy.timezone`", None),
            "key `policy.timezone`: invalid length"
        );
        assert_eq!(explain::<Cfg>("missing field `agent`", None), "missing field `agent`");
        assert_eq!(explain::<Cfg>("bad for key `site[x]`", None), "key `site[x]`: bad");
    }
}
