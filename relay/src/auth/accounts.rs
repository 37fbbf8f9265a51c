//! The relay's accounts and tokens, checked and compiled from the config:
//! argon2id passwords, SHA-256 token digests, RTSP Digest HA1s.

use super::viewer::Scope;
use super::{TokenConfig, Viewer, ViewerConfig, ViewerKind, RTSP_REALM};
use anyhow::{anyhow, bail, Context, Result};
use ponte_proto::credentials::{self, parse_hex, same_bytes, sha256, CredentialError, Decoy};
use std::collections::HashMap;

pub use ponte_proto::credentials::{hash_password, new_token};

struct Account {
    viewer: Viewer,
    phc: String,
    ha1: Option<String>,
}

struct Token {
    viewer: Viewer,
    digest: [u8; 32],
}

/// The relay's accounts and tokens, checked and ready.
#[derive(Default)]
pub struct Accounts {
    accounts: HashMap<String, Account>,
    tokens: Vec<Token>,
    /// Verified for unknown users, so they take as long as a wrong password.
    decoy: Option<&'static Decoy>,
}

/// Why credentials did not check out (for logs and audit, never for the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadCredentials {
    /// No account or token by that name.
    UnknownUser,
    /// The password (or token) is wrong.
    WrongPassword,
}

impl BadCredentials {
    pub(super) fn reason(self) -> &'static str {
        match self {
            BadCredentials::UnknownUser => "unknown user",
            BadCredentials::WrongPassword => "wrong password",
        }
    }
}

pub(super) fn check_name(what: &str, name: &str) -> Result<()> {
    credentials::check_name(name).map_err(|e| anyhow!("{what}: {e}"))
}

/// Hex MD5(`user:ponte:password`): the RTSP Digest HA1 of a viewer.
pub fn digest_ha1(user: &str, password: &str) -> String {
    use md5::Digest as _;
    hex::encode(md5::Md5::digest(format!("{user}:{RTSP_REALM}:{password}").as_bytes()))
}

impl Accounts {
    /// Checks and compiles the `[[viewer]]` and `[[token]]` tables.
    pub fn from_config(viewers: &[ViewerConfig], tokens: &[TokenConfig]) -> Result<Accounts> {
        let decoy = Decoy::get().map_err(|e| {
            anyhow!("cannot build the decoy hash that makes unknown users as slow as wrong passwords: {e}")
        })?;
        let mut out = Accounts { decoy: Some(decoy), ..Accounts::default() };
        let mut names = std::collections::HashSet::new();
        for v in viewers {
            let what = format!("[[viewer]] `{}`", v.user);
            check_name(&what, &v.user)?;
            if !names.insert(v.user.clone()) {
                bail!("{what}: the name is used twice (viewer and token names share one namespace)");
            }
            // Each login costs the hash's memory and time: check_phc refuses
            // what would stall the relay.
            credentials::check_phc(&v.password_hash).map_err(|e| match e {
                CredentialError::NotPhc(_) | CredentialError::NotArgon2id(_) => {
                    anyhow!("{what}: {e}; make one with `ponte-relay passwd`")
                }
                CredentialError::TooCostly { .. } => {
                    anyhow!("{what}: {e} (`ponte-relay passwd` uses m=19456, t=2, p=1)")
                }
                e => anyhow!("{what}: {e}"),
            })?;
            let ha1 = match &v.rtsp_digest_ha1 {
                None => None,
                Some(text) => Some(hex::encode(parse_hex::<16>(text).with_context(|| {
                    format!("{what}: `rtsp_digest_ha1` must be 32 hex digits (`ponte-relay passwd --user {} --rtsp-digest`)", v.user)
                })?)),
            };
            let scope = Scope::compile(&what, v.cameras.as_deref(), v.max_quality)?;
            out.accounts.insert(
                v.user.clone(),
                Account {
                    viewer: Viewer::new(
                        &v.user,
                        ViewerKind::Account,
                        scope,
                        &[v.password_hash.as_bytes(), ha1.as_deref().unwrap_or_default().as_bytes()],
                    )
                    .with_ptz(v.ptz),
                    phc: v.password_hash.clone(),
                    ha1,
                },
            );
        }
        for t in tokens {
            let what = format!("[[token]] `{}`", t.name);
            check_name(&what, &t.name)?;
            if !names.insert(t.name.clone()) {
                bail!("{what}: the name is used twice (viewer and token names share one namespace)");
            }
            let digest = parse_hex::<32>(&t.token_sha256).with_context(|| {
                format!("{what}: `token_sha256` must be 64 hex digits, the SHA-256 of the token (`ponte-relay token`)")
            })?;
            if out.tokens.iter().any(|other| other.digest == digest) {
                bail!("{what}: the same token is configured twice; give each client its own (`ponte-relay token`)");
            }
            let scope = Scope::compile(&what, t.cameras.as_deref(), t.max_quality)?;
            let viewer = Viewer::new(&t.name, ViewerKind::Token, scope, &[&digest]).with_ptz(t.ptz);
            out.tokens.push(Token { viewer, digest });
        }
        Ok(out)
    }

    /// True when some account has `rtsp_digest_ha1` (can answer RTSP Digest).
    pub fn has_digest(&self) -> bool {
        self.accounts.values().any(|a| a.ha1.is_some())
    }

    /// True when no account and no token is configured: no authentication.
    pub fn is_open(&self) -> bool {
        self.accounts.is_empty() && self.tokens.is_empty()
    }

    /// Number of accounts and tokens.
    pub fn counts(&self) -> (usize, usize) {
        (self.accounts.len(), self.tokens.len())
    }

    /// What `viewer` is under these accounts: its account or token as now
    /// configured, `None` when it is gone or its credentials changed (or,
    /// for the anonymous viewer, when the relay now has accounts).
    pub fn current(&self, viewer: &Viewer) -> Option<Viewer> {
        let now = match viewer.kind {
            ViewerKind::Anonymous => {
                return self.is_open().then(|| Viewer { ptz: viewer.ptz, ..Viewer::anonymous() })
            }
            ViewerKind::Account => self.accounts.get(&*viewer.name).map(|a| &a.viewer),
            ViewerKind::Token => self.tokens.iter().find(|t| t.viewer.name == viewer.name).map(|t| &t.viewer),
        }?;
        (now.credential == viewer.credential).then(|| now.clone())
    }

    /// Checks a user name and password: an account's argon2id hash, or a
    /// token name with the token as password. Slow on purpose (argon2, tens
    /// of milliseconds): call it off the async threads.
    pub fn verify_password(&self, user: &str, password: &str) -> Result<Viewer, BadCredentials> {
        if let Some(account) = self.accounts.get(user) {
            let ok = credentials::verify_password(&account.phc, password);
            return if ok { Ok(account.viewer.clone()) } else { Err(BadCredentials::WrongPassword) };
        }
        if let Some(token) = self.tokens.iter().find(|t| t.viewer.name() == user) {
            return if same_bytes(&sha256(password.as_bytes()), &token.digest) {
                Ok(token.viewer.clone())
            } else {
                Err(BadCredentials::WrongPassword)
            };
        }
        // As slow as a wrong password, so timing does not tell which users exist.
        // (No decoy only in the default, empty accounts: no name to hide.)
        if let Some(decoy) = self.decoy {
            decoy.burn(password);
        }
        Err(BadCredentials::UnknownUser)
    }

    /// The `[[viewer]]` account `user` as configured now (not a token).
    pub fn account(&self, user: &str) -> Option<Viewer> {
        self.accounts.get(user).map(|a| a.viewer.clone())
    }

    /// The token's viewer, if `token` is one of the configured tokens.
    pub fn check_token(&self, token: &str) -> Option<Viewer> {
        let digest = sha256(token.as_bytes());
        // Look at every token whatever matches, so timing tells nothing.
        let mut found = None;
        for t in &self.tokens {
            if same_bytes(&digest, &t.digest) {
                found = Some(t.viewer.clone());
            }
        }
        found
    }

    /// The RTSP Digest HA1 (hex MD5 of `user:ponte:password`) of an account
    /// that has `rtsp_digest_ha1`, with its viewer.
    pub fn digest_ha1(&self, user: &str) -> Option<(String, Viewer)> {
        let account = self.accounts.get(user)?;
        Some((account.ha1.clone()?, account.viewer.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::fixtures::*;

    #[test]
    fn password_check_and_tokens() {
        assert!(phc().starts_with("$argon2id$v=19$"), "{}", phc());
        let (token, digest) = new_token();
        let accounts = Accounts::from_config(
            &[viewer("anna", phc(), None, None)],
            &[TokenConfig {
                name: "vms".into(),
                token_sha256: digest,
                cameras: None,
                max_quality: None,
                ptz: false,
            }],
        )
        .unwrap();
        assert!(!accounts.is_open());
        let anna = accounts.verify_password("anna", "correct horse").unwrap();
        assert_eq!((anna.name(), anna.kind()), ("anna", ViewerKind::Account));
        assert_eq!(
            accounts.verify_password("anna", "Correct horse").unwrap_err(),
            BadCredentials::WrongPassword
        );
        assert_eq!(
            accounts.verify_password("bruno", "correct horse").unwrap_err(),
            BadCredentials::UnknownUser
        );
        // A token name and its token work as user and password (RTSP Basic for a VMS).
        assert_eq!(accounts.verify_password("vms", &token).unwrap().kind(), ViewerKind::Token);
        assert!(accounts.verify_password("vms", "nope").is_err());
        assert_eq!(accounts.check_token(&token).unwrap().name(), "vms");
        assert!(accounts.check_token(&token[1..]).is_none());
        assert!(accounts.check_token("").is_none());
        assert!(accounts.digest_ha1("anna").is_none(), "no HA1 configured");
        assert!(Accounts::from_config(&[], &[]).unwrap().is_open());
    }

    #[test]
    fn digest_ha1_is_md5_of_user_realm_password() {
        // RFC 2617 style: MD5("Mufasa:ponte:Circle Of Life"), computed independently.
        let ha1 = digest_ha1("Mufasa", "Circle Of Life");
        assert_eq!(ha1.len(), 32);
        let mut v = viewer("Mufasa", phc(), None, None);
        v.rtsp_digest_ha1 = Some(ha1.to_uppercase());
        let accounts = Accounts::from_config(&[v], &[]).unwrap();
        let (got, viewer) = accounts.digest_ha1("Mufasa").unwrap();
        assert_eq!(got, ha1, "stored lower-case");
        assert_eq!(viewer.name(), "Mufasa");
    }

    #[test]
    fn config_errors_name_the_account_and_the_fix() {
        let cases: Vec<(Vec<ViewerConfig>, Vec<TokenConfig>, &str)> = vec![
            (vec![viewer("anna", "plain-text", None, None)], vec![], "`ponte-relay passwd`"),
            (
                vec![viewer(
                    "anna",
                    "$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$YWJjZGVmZ2hpamtsbW5vcA",
                    None,
                    None,
                )],
                vec![],
                "only argon2id",
            ),
            (vec![viewer("anna", phc(), Some(&["tag:hospital"]), None)], vec![], "cannot select by tag"),
            (vec![viewer("anna", phc(), Some(&["place:x"]), None)], vec![], "`cameras` entry"),
            (vec![viewer("an na", phc(), None, None)], vec![], "spaces"),
            (vec![viewer("anna", phc(), None, None), viewer("anna", phc(), None, None)], vec![], "twice"),
            (
                vec![viewer("vms", phc(), None, None)],
                vec![TokenConfig {
                    name: "vms".into(),
                    token_sha256: new_token().1,
                    cameras: None,
                    max_quality: None,
                    ptz: false,
                }],
                "twice",
            ),
            (
                vec![],
                vec![TokenConfig {
                    name: "vms".into(),
                    token_sha256: "abc".into(),
                    cameras: None,
                    max_quality: None,
                    ptz: false,
                }],
                "64 hex digits",
            ),
        ];
        for (viewers, tokens, needle) in cases {
            let err = match Accounts::from_config(&viewers, &tokens) {
                Ok(_) => panic!("accepted {needle}"),
                Err(e) => format!("{e:#}"),
            };
            assert!(err.contains(needle), "{err}");
            assert!(err.contains("anna") || err.contains("vms") || err.contains("an na"), "{err}");
        }
    }

    /// The PTZ right needs all three: the account's `ptz`, the camera in
    /// its set, and the site's own right (the catalog's `ptz`).
    #[test]
    fn steering_needs_the_account_right_the_camera_and_the_site_right() {
        let mut v = viewer("anna", phc(), Some(&["zone:Zaist", "zone:Po"]), None);
        v.ptz = true;
        let mut t = TokenConfig {
            name: "vms".into(),
            token_sha256: new_token().1,
            cameras: None,
            max_quality: None,
            ptz: false,
        };
        let accounts =
            Accounts::from_config(&[v.clone(), viewer("bruno", phc(), None, None)], &[t.clone()]).unwrap();
        let anna = accounts.accounts["anna"].viewer.clone();
        let bruno = accounts.accounts["bruno"].viewer.clone();
        let mut zaist = cam("zaist-mantova", "Zaist", "dome-ptz");
        let mut po = cam("po-lungofiume", "Po", "dome-ptz");
        zaist.ptz = true;
        assert!(anna.has_ptz_right() && anna.may_steer(&zaist));
        assert!(!anna.may_steer(&po), "the site may not steer it");
        po.ptz = true;
        let mut centro = cam("porta-1", "Centro", "dome-ptz");
        centro.ptz = true;
        assert!(!anna.may_steer(&centro), "outside anna's cameras");
        assert!(!bruno.has_ptz_right() && !bruno.may_steer(&zaist), "`ptz` defaults to false");
        assert!(!accounts.tokens[0].viewer.may_steer(&zaist));
        assert!(!Viewer::anonymous().may_steer(&zaist), "nobody steers on a relay without accounts");
        assert!(anna.unrestricted() == bruno.unrestricted() || !anna.unrestricted(), "ptz is no scope");
        t.ptz = true;
        let accounts = Accounts::from_config(&[], &[t]).unwrap();
        assert!(accounts.tokens[0].viewer.may_steer(&zaist));
        assert!(accounts.tokens[0].viewer.unrestricted(), "the right adds no camera and no quality");
        zaist.ptz = false;
        assert!(!accounts.tokens[0].viewer.may_steer(&zaist));
    }
}
