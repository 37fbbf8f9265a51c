//! Saved wall layouts, per account, in one file under the relay's state
//! directory (`relay-layouts.json`). Written whole to a temporary file (mode
//! 0600), synced, renamed over the old one and the directory synced: a crash
//! leaves the old file or the new one, never half of either.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// File name of the layouts under the relay's state directory.
pub const FILE_NAME: &str = "relay-layouts.json";
/// Format version written and accepted.
const VERSION: u32 = 1;
/// Layouts one account may keep.
pub const MAX_PER_ACCOUNT: usize = 50;
/// Longest layout name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// Longest camera id accepted in a layout.
const MAX_CAMERA_ID: usize = 128;
/// Cameras one tour may cycle through.
pub const MAX_TOUR: usize = 32;
/// Shortest and longest tour step, seconds.
pub const TOUR_SECS: std::ops::RangeInclusive<u32> = 3..=3600;

/// A wall's arrangement of tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Grid {
    /// One tile.
    #[serde(rename = "1x1")]
    One,
    /// Two by two.
    #[serde(rename = "2x2")]
    Two,
    /// Three by three.
    #[serde(rename = "3x3")]
    Three,
    /// Four by four.
    #[serde(rename = "4x4")]
    Four,
    /// One large tile and five small ones.
    #[serde(rename = "1+5")]
    OnePlusFive,
}

impl Grid {
    /// Tiles in the grid.
    pub fn tiles(self) -> usize {
        match self {
            Grid::One => 1,
            Grid::Two => 4,
            Grid::Three => 9,
            Grid::Four => 16,
            Grid::OnePlusFive => 6,
        }
    }
}

/// A tour: the tile shows each camera in turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tour {
    /// Cameras, in order.
    pub cameras: Vec<String>,
    /// Seconds on each.
    pub every_secs: u32,
}

/// One tile: a camera, a tour, or empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tile {
    /// The camera shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub camera: Option<String>,
    /// Or a tour through several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tour: Option<Tour>,
}

/// A saved layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layout {
    /// The arrangement.
    pub grid: Grid,
    /// Tiles in reading order; at most the grid's count.
    pub tiles: Vec<Tile>,
}

impl Layout {
    /// Checks a layout sent by a page; the error says what to change.
    pub fn check(&self) -> Result<(), String> {
        if self.tiles.len() > self.grid.tiles() {
            return Err(format!(
                "the layout has {} tiles, its grid holds {}",
                self.tiles.len(),
                self.grid.tiles()
            ));
        }
        let id_ok =
            |id: &str| !id.is_empty() && id.len() <= MAX_CAMERA_ID && !id.chars().any(char::is_control);
        for (i, tile) in self.tiles.iter().enumerate() {
            let n = i + 1;
            if let Some(camera) = &tile.camera {
                if !id_ok(camera) {
                    return Err(format!(
                        "tile {n}: `camera` must be a camera id of 1 to {MAX_CAMERA_ID} bytes"
                    ));
                }
            }
            if let Some(tour) = &tile.tour {
                if tour.cameras.is_empty() || tour.cameras.len() > MAX_TOUR {
                    return Err(format!("tile {n}: a tour needs 1 to {MAX_TOUR} cameras"));
                }
                if let Some(bad) = tour.cameras.iter().find(|c| !id_ok(c)) {
                    return Err(format!("tile {n}: tour camera `{}` is not a camera id", bad.escape_debug()));
                }
                if !TOUR_SECS.contains(&tour.every_secs) {
                    return Err(format!(
                        "tile {n}: `every_secs` must be {} to {} seconds",
                        TOUR_SECS.start(),
                        TOUR_SECS.end()
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Checks a layout name; the error says what to change.
pub fn check_name(name: &str) -> Result<(), String> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS || name.chars().any(char::is_control) || name.trim() != name {
        return Err(format!(
            "a layout name has 1 to {MAX_NAME_CHARS} characters, no control characters, no leading or trailing space"
        ));
    }
    Ok(())
}

#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    /// Account → layout name → layout.
    accounts: BTreeMap<String, BTreeMap<String, Layout>>,
}

/// The layouts of every account, kept in memory and on disk.
pub struct LayoutStore {
    path: Option<PathBuf>,
    accounts: Mutex<BTreeMap<String, BTreeMap<String, Layout>>>,
    /// Held by a save or delete across its file write, so writes never
    /// interleave; `accounts` is locked only to read and to swap, so a
    /// page listing its layouts never waits for a disk sync.
    writer: Mutex<()>,
}

/// Why a save or delete did not happen.
#[derive(Debug)]
pub enum StoreError {
    /// The account already keeps the most layouts it may.
    Full,
    /// No such layout.
    NotFound,
    /// The file could not be written (the change was not kept).
    Io(String),
}

impl LayoutStore {
    /// Layouts kept in memory only (tests, relays without a state directory).
    pub fn in_memory() -> Self {
        Self { path: None, accounts: Mutex::default(), writer: Mutex::default() }
    }

    /// Loads `path`; none when it does not exist (first start).
    pub fn open(path: &Path) -> Result<Self> {
        let accounts = match std::fs::read(path) {
            Ok(bytes) => {
                let file: File = serde_json::from_slice(&bytes).with_context(|| {
                    format!(
                        "{}: not a layouts file; move it away to start with no saved layouts",
                        path.display()
                    )
                })?;
                if file.version != VERSION {
                    bail!(
                        "{}: layouts file version {}, this relay reads {VERSION}; move it away to start with no saved layouts",
                        path.display(),
                        file.version
                    );
                }
                file.accounts
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                return Err(e).with_context(|| format!("reading {} (`relay.state_dir`)", path.display()))
            }
        };
        Ok(Self { path: Some(path.to_owned()), accounts: Mutex::new(accounts), writer: Mutex::default() })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, BTreeMap<String, Layout>>> {
        self.accounts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The layouts of `account`.
    pub fn list(&self, account: &str) -> BTreeMap<String, Layout> {
        self.lock().get(account).cloned().unwrap_or_default()
    }

    /// Saves (or replaces) `name` for `account`; blocking (file I/O).
    pub fn save(&self, account: &str, name: &str, layout: Layout) -> Result<(), StoreError> {
        let _writing = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = self.lock().clone();
        let mine = next.entry(account.to_owned()).or_default();
        if !mine.contains_key(name) && mine.len() >= MAX_PER_ACCOUNT {
            return Err(StoreError::Full);
        }
        mine.insert(name.to_owned(), layout);
        self.write(&next)?;
        *self.lock() = next;
        Ok(())
    }

    /// Deletes `name` of `account`; blocking (file I/O).
    pub fn delete(&self, account: &str, name: &str) -> Result<(), StoreError> {
        let _writing = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = self.lock().clone();
        let removed = next.get_mut(account).and_then(|m| m.remove(name));
        if removed.is_none() {
            return Err(StoreError::NotFound);
        }
        next.retain(|_, m| !m.is_empty());
        self.write(&next)?;
        *self.lock() = next;
        Ok(())
    }

    /// Writes the file whole, atomically (see the module doc). Called with
    /// the writer lock held, so two saves never interleave their renames.
    /// Once the rename is done the change is kept: a failed sync of the
    /// directory after it is only logged.
    fn write(&self, accounts: &BTreeMap<String, BTreeMap<String, Layout>>) -> Result<(), StoreError> {
        let Some(path) = &self.path else { return Ok(()) };
        let file = File { version: VERSION, accounts: accounts.clone() };
        let io = |what: &str, e: std::io::Error| StoreError::Io(format!("{what} {}: {e}", path.display()));
        let json = serde_json::to_vec_pretty(&file).map_err(|e| StoreError::Io(e.to_string()))?;
        let tmp = path.with_extension("json.tmp");
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io("creating a temporary file beside", e))?;
        out.write_all(&json).and_then(|()| out.sync_all()).map_err(|e| io("writing", e))?;
        std::fs::rename(&tmp, path).map_err(|e| io("replacing", e))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
                tracing::warn!(path = %path.display(), error = %e, "console: syncing the layouts file's directory failed");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(grid: Grid, cameras: &[&str]) -> Layout {
        Layout {
            grid,
            tiles: cameras.iter().map(|c| Tile { camera: Some((*c).to_owned()), tour: None }).collect(),
        }
    }

    #[test]
    fn grids_and_tiles_are_checked_with_reasons() {
        assert!(layout(Grid::Two, &["a", "b", "c", "d"]).check().is_ok());
        let e = layout(Grid::One, &["a", "b"]).check().unwrap_err();
        assert!(e.contains("holds 1"), "{e}");
        let tour = Tile { camera: None, tour: Some(Tour { cameras: vec!["a".into()], every_secs: 1 }) };
        let e = Layout { grid: Grid::OnePlusFive, tiles: vec![tour] }.check().unwrap_err();
        assert!(e.contains("every_secs"), "{e}");
        let json =
            r#"{"grid":"1+5","tiles":[{"camera":"x"},{},{"tour":{"cameras":["a","b"],"every_secs":10}}]}"#;
        let parsed: Layout = serde_json::from_str(json).expect("parses");
        assert!(parsed.check().is_ok());
        assert!(serde_json::from_str::<Layout>(r#"{"grid":"5x5","tiles":[]}"#).is_err());
        assert!(check_name("Stadio — sera").is_ok());
        assert!(check_name(" x").is_err() && check_name("").is_err() && check_name("a\nb").is_err());
    }

    #[test]
    fn saved_layouts_survive_a_reopen_and_are_per_account() {
        let dir = std::env::temp_dir().join(format!("ponte-layouts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(FILE_NAME);
        let _ = std::fs::remove_file(&path);
        let store = LayoutStore::open(&path).expect("no file yet");
        store.save("anna", "stadio", layout(Grid::Two, &["c1", "c2"])).expect("saved");
        store.save("bruno", "centro", layout(Grid::One, &["c3"])).expect("saved");
        let again = LayoutStore::open(&path).expect("reopens");
        assert_eq!(again.list("anna").get("stadio"), Some(&layout(Grid::Two, &["c1", "c2"])));
        assert!(!again.list("anna").contains_key("centro"), "another account's layout");
        again.delete("anna", "stadio").expect("deleted");
        assert!(matches!(again.delete("anna", "stadio"), Err(StoreError::NotFound)));
        assert!(LayoutStore::open(&path).expect("reopens").list("anna").is_empty());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).expect("file").permissions().mode() & 0o777, 0o600);
        std::fs::write(&path, b"{").expect("corrupt it");
        let e = LayoutStore::open(&path).err().expect("refused").to_string();
        assert!(e.contains("not a layouts file"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_account_keeps_a_bounded_number_of_layouts() {
        let store = LayoutStore::in_memory();
        for i in 0..MAX_PER_ACCOUNT {
            store.save("anna", &format!("l{i}"), layout(Grid::One, &["c"])).expect("room");
        }
        assert!(matches!(store.save("anna", "one more", layout(Grid::One, &["c"])), Err(StoreError::Full)));
        store.save("anna", "l0", layout(Grid::Two, &["c"])).expect("replacing takes no room");
    }
}
