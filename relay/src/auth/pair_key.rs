//! The pair key file (`relay.pair_key_file`): 32 random bytes in hex, the
//! same file on every relay of a site, readable by the relay's user only;
//! `ponte-relay pair-key --out FILE` makes one.

use super::pair_token::{PairKey, MIN_KEY_BYTES};
use anyhow::{bail, Context, Result};
use std::path::Path;

/// Reads the pair key at `path`: hex, at least 32 bytes, not readable or
/// writable by group or others (whoever can read it can log in as any
/// account at the peer relays).
pub fn load(path: &Path) -> Result<PairKey> {
    let shown = path.display();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path)
            .with_context(|| format!("`relay.pair_key_file` = {shown}: cannot read it"))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            bail!(
                "`relay.pair_key_file` = {shown} has mode {mode:04o}: group and others may not read the pair \
                 key (it logs anyone in at the peer relays); `chmod 600 {shown}`"
            );
        }
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("`relay.pair_key_file` = {shown}: cannot read it"))?;
    let bytes = hex::decode(text.trim()).map_err(|e| {
        anyhow::anyhow!(
            "`relay.pair_key_file` = {shown}: not hex ({e}); make one with `ponte-relay pair-key --out FILE`"
        )
    })?;
    PairKey::new(&bytes).with_context(|| {
        format!(
            "`relay.pair_key_file` = {shown}: {} bytes, at least {MIN_KEY_BYTES} are needed; make one with \
             `ponte-relay pair-key --out FILE`",
            bytes.len()
        )
    })
}

/// `ponte-relay pair-key --out FILE`: writes a new key (mode 0600; an
/// existing file is left alone) and says where to put it.
pub fn pair_key_cli(out: &Path) -> Result<()> {
    let key: [u8; 32] = rand::random();
    write_new(out, &format!("{}\n", hex::encode(key)))?;
    println!("pair key written to {}", out.display());
    println!(
        "# Copy this file (mode 0600, owner the relay's user) to every relay of the site, then set in each:"
    );
    println!("#   [relay]");
    println!("#   pair_key_file = \"{}\"", out.display());
    println!("#   peers = [\"https://<the other relay>:<its viewer port>\"]");
    Ok(())
}

fn write_new(path: &Path, text: &str) -> Result<()> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut file = opts.open(path).with_context(|| {
        format!("writing {}: a pair key is never overwritten (remove the old file first)", path.display())
    })?;
    file.write_all(text.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    file.sync_all().with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_written_key_loads_and_a_readable_short_or_garbled_one_does_not() {
        let dir = tempdir();
        let path = dir.join("pair.key");
        write_new(&path, &format!("{}\n", hex::encode([7u8; 32]))).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        load(&path).unwrap();
        assert!(write_new(&path, "x").is_err(), "never overwritten");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = format!("{:#}", load(&path).unwrap_err());
        assert!(err.contains("mode 0644") && err.contains("chmod 600"), "{err}");

        let short = dir.join("short.key");
        write_new(&short, &hex::encode([7u8; 16])).unwrap();
        let err = format!("{:#}", load(&short).unwrap_err());
        assert!(err.contains("16 bytes") && err.contains("relay.pair_key_file"), "{err}");
        let garbled = dir.join("garbled.key");
        write_new(&garbled, "not hex at all").unwrap();
        assert!(format!("{:#}", load(&garbled).unwrap_err()).contains("not hex"));
        assert!(format!("{:#}", load(&dir.join("missing")).unwrap_err()).contains("relay.pair_key_file"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempdir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ponte-pair-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
