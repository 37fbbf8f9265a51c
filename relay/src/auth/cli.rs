//! `ponte-relay passwd` and `ponte-relay token`.

use super::accounts::{check_name, digest_ha1, hash_password, new_token};
use super::RTSP_REALM;
use anyhow::Result;

/// `ponte-relay passwd`: reads the password (twice, without echo, from a
/// terminal; one line from a pipe), prints its argon2id hash (or, with
/// `user`, a `[[viewer]]` table; with `rtsp_digest`, its HA1 too).
pub fn passwd_cli(user: Option<&str>, rtsp_digest: bool) -> Result<()> {
    let password = ponte_proto::password_prompt::read_password_to_store("ponte-relay passwd < file")?;
    let password = password.as_str();
    let phc = hash_password(password)?;
    match user {
        None => println!("{phc}"),
        Some(user) => {
            check_name("--user", user)?;
            println!("[[viewer]]\nuser = \"{user}\"\npassword_hash = \"{phc}\"");
            println!("# cameras = [\"zone:Zaist\", \"camera:po-largo-moreni\"]  # optional: fewer cameras than the site");
            println!("# max_quality = \"sub\"                                   # optional");
            println!("# ptz = true                                            # optional: may steer the site's PTZ cameras");
            if rtsp_digest {
                println!(
                    "rtsp_digest_ha1 = \"{}\"   # RTSP Digest, realm \"{RTSP_REALM}\"",
                    digest_ha1(user, password)
                );
            }
        }
    }
    Ok(())
}

/// `ponte-relay token`: prints a new token (line 1) and the `[[token]]` table
/// for the relay config.
pub fn token_cli(name: &str) -> Result<()> {
    check_name("--name", name)?;
    let (token, digest) = new_token();
    println!("{token}");
    println!();
    println!("# Give the line above to `{name}`: over HTTP it sends `Authorization: Bearer <token>`;");
    println!("# over RTSP it logs in as user `{name}` with the token as password, which needs");
    println!("# `[rtsp] basic = true` (Basic: in clear, the site's private LAN only).");
    println!("# The relay keeps only its SHA-256:");
    println!("[[token]]\nname = \"{name}\"\ntoken_sha256 = \"{digest}\"");
    println!("# cameras = [\"zone:Zaist\"]   # optional: fewer cameras than the site");
    Ok(())
}
