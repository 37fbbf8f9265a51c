//! Viewers and what they may see: a viewer's scope (selectors over the
//! site's catalog and a quality cap) only ever narrows the site's catalog.

use anyhow::{anyhow, bail, Result};
use ponte_proto::media::Quality;
use ponte_proto::policy::{CameraFacts, Selector};
use ponte_proto::wire::CatalogEntry;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// What a viewer may see: selectors over the site's catalog and a quality cap.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Scope {
    /// `None`: every camera of the site's catalog.
    pub(super) cameras: Option<Vec<Selector>>,
    pub(super) max_quality: Quality,
}

impl Scope {
    pub(super) const ALL: Scope = Scope { cameras: None, max_quality: Quality::Main };

    pub(super) fn compile(
        what: &str,
        cameras: Option<&[String]>,
        max_quality: Option<Quality>,
    ) -> Result<Scope> {
        let cameras = match cameras {
            None => None,
            Some(list) => {
                let selectors = list.iter().map(|s| parse_selector(what, s)).collect::<Result<Vec<_>>>()?;
                // `*` selects every camera of the site: the same scope as no
                // `cameras` key, so the whole-site routes (status) accept it.
                if selectors.contains(&Selector::All) {
                    None
                } else {
                    Some(selectors)
                }
            }
        };
        Ok(Scope { cameras, max_quality: max_quality.unwrap_or(Quality::Main) })
    }
}

fn parse_selector(what: &str, text: &str) -> Result<Selector> {
    let selector = Selector::parse(text).map_err(|e| anyhow!("{what}: `cameras` entry {e}"))?;
    if let Selector::Tag(tag) = &selector {
        bail!(
            "{what}: `cameras` entry \"tag:{tag}\": tags stay at the agent (the catalog a relay receives \
             has none), so a relay cannot select by tag; use `zone:`, `device:`, `type:` or `camera:` here, \
             or grant by tag in the agent's `[[site]]` policy"
        );
    }
    Ok(selector)
}

/// How a viewer proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ViewerKind {
    /// A relay without accounts: nobody logged in.
    Anonymous,
    /// A `[[viewer]]` account.
    Account,
    /// A `[[token]]`.
    Token,
}

/// Why a viewer may not watch a camera at a quality.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeRefusal {
    /// The camera is outside the viewer's cameras: answered as if it did not exist.
    Hidden(String),
    /// The camera is visible, but not at that quality.
    Quality(String),
}

/// An authenticated viewer, or the anonymous one of a relay without accounts.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub(super) name: Arc<str>,
    pub(super) kind: ViewerKind,
    pub(super) scope: Arc<Scope>,
    /// The account's `ptz` right (outside the scope: it adds no camera).
    pub(super) ptz: bool,
    /// The browser session (cookie) it came through: its streams end when
    /// that session logs out.
    pub(super) login: Option<Arc<str>>,
    /// The pair token it came through at this relay (its nonce): a login
    /// made at the other relay of the site ([`super::pair_token`]).
    pub(super) pair: Option<Arc<str>>,
    /// Fingerprint of the credentials it proved (password hash, HA1 or
    /// token digest): a reload that changes them revokes it like a removal.
    pub(super) credential: [u8; 8],
}

impl Viewer {
    /// The viewer of a relay without accounts: sees the whole site catalog.
    pub fn anonymous() -> Viewer {
        Viewer {
            name: Arc::from("anonymous"),
            kind: ViewerKind::Anonymous,
            scope: Arc::new(Scope::ALL),
            ptz: false,
            login: None,
            pair: None,
            credential: [0; 8],
        }
    }

    pub(super) fn new(name: &str, kind: ViewerKind, scope: Scope, secrets: &[&[u8]]) -> Viewer {
        let mut h = Sha256::new();
        for secret in secrets {
            h.update((secret.len() as u64).to_le_bytes());
            h.update(secret);
        }
        let digest: [u8; 32] = h.finalize().into();
        let mut credential = [0; 8];
        credential.copy_from_slice(&digest[..8]);
        Viewer {
            name: Arc::from(name),
            kind,
            scope: Arc::new(scope),
            ptz: false,
            login: None,
            pair: None,
            credential,
        }
    }

    pub(super) fn through_login(self, login: Option<Arc<str>>) -> Viewer {
        Viewer { login, ..self }
    }

    pub(super) fn through_pair(self, nonce: &str) -> Viewer {
        Viewer { pair: Some(Arc::from(nonce)), ..self }
    }

    /// Whether it logged in here with a pair token from the other relay.
    pub fn is_pair_login(&self) -> bool {
        self.pair.is_some()
    }

    /// Its credentials' fingerprint, in hex (a pair token carries it).
    pub(super) fn credential_hex(&self) -> String {
        hex::encode(self.credential)
    }

    pub(super) fn with_ptz(self, ptz: bool) -> Viewer {
        Viewer { ptz, ..self }
    }

    /// Whether the account has the `ptz` right at all (nobody has it on a
    /// relay without accounts).
    pub fn has_ptz_right(&self) -> bool {
        self.ptz
    }

    /// Whether the viewer may steer this site camera: the account's `ptz`
    /// right, the camera in its set, and the site's own PTZ right on it
    /// (the catalog's `ptz`). A viewer only narrows what the site may do.
    pub fn may_steer(&self, cam: &CatalogEntry) -> bool {
        self.ptz && cam.ptz && self.may_see(cam)
    }

    /// Whether `other` is the same account or token as this viewer.
    pub fn same_account(&self, other: &Viewer) -> bool {
        self.name == other.name && self.kind == other.kind
    }

    /// Whether `other` came through the same login (browser session, or
    /// the same credentials) as this viewer: only it may end this viewer's
    /// streams. On a relay without accounts every viewer is the same
    /// anonymous one, and the stream's unguessable id alone is the key.
    pub fn same_holder(&self, other: &Viewer) -> bool {
        self.same_account(other)
            && self.login == other.login
            && self.pair == other.pair
            && self.credential == other.credential
    }

    /// Account or token name (`anonymous` on a relay without accounts).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How the viewer authenticated.
    #[cfg(test)]
    pub fn kind(&self) -> ViewerKind {
        self.kind
    }

    /// The name the agent's audit knows this viewer by (before `@site`):
    /// the account name, `token:<name>`, or `anonymous`.
    pub fn upstream_name(&self) -> String {
        crate::watching::upstream_name(self.audit_name(), self.is_token())
    }

    /// Whether the viewer authenticated with a `[[token]]`.
    pub fn is_token(&self) -> bool {
        self.kind == ViewerKind::Token
    }

    /// The name the audit log records: none for the anonymous viewer.
    pub fn audit_name(&self) -> Option<&str> {
        (self.kind != ViewerKind::Anonymous).then_some(&*self.name)
    }

    /// True when the viewer sees the site's whole catalog at every quality.
    pub fn unrestricted(&self) -> bool {
        *self.scope == Scope::ALL
    }

    fn selects(&self, cam: &CatalogEntry) -> bool {
        let Some(selectors) = &self.scope.cameras else { return true };
        let facts =
            CameraFacts { id: &cam.id, device: &cam.device, zone: &cam.zone, kind: &cam.kind, tags: &[] };
        selectors.iter().any(|s| s.matches(&facts))
    }

    /// Qualities of a site camera this viewer may watch.
    pub fn qualities(&self, cam: &CatalogEntry) -> Vec<Quality> {
        if !self.selects(cam) {
            return Vec::new();
        }
        // `Sub` orders after `Main`: a viewer capped at `sub` gets only `sub`.
        cam.qualities.iter().copied().filter(|q| *q >= self.scope.max_quality).collect()
    }

    /// Whether this site camera is in the viewer's catalog.
    pub fn may_see(&self, cam: &CatalogEntry) -> bool {
        !self.qualities(cam).is_empty()
    }

    /// Whether the viewer may watch this site camera at `quality`, and if
    /// not, why (in words for the viewer and the audit log).
    pub fn check(&self, cam: &CatalogEntry, quality: Quality) -> Result<(), ScopeRefusal> {
        if !self.may_see(cam) {
            return Err(ScopeRefusal::Hidden(format!(
                "camera `{}` is outside the cameras of viewer `{}`",
                cam.id, self.name
            )));
        }
        if !self.qualities(cam).contains(&quality) {
            let allowed: Vec<&str> = self.qualities(cam).iter().map(|q| q.name()).collect();
            return Err(ScopeRefusal::Quality(format!(
                "viewer `{}` may watch camera `{}` at `{}` quality only",
                self.name,
                cam.id,
                allowed.join("`, `")
            )));
        }
        Ok(())
    }

    /// The site's catalog as this viewer sees it: cameras outside its set
    /// dropped, qualities above its cap removed. Never adds anything.
    pub fn narrow(&self, catalog: Vec<CatalogEntry>) -> Vec<CatalogEntry> {
        catalog
            .into_iter()
            .filter_map(|mut cam| {
                let qualities = self.qualities(&cam);
                (!qualities.is_empty()).then(|| {
                    cam.qualities = qualities;
                    cam
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::fixtures::*;
    use proptest::prelude::*;

    #[test]
    fn narrowing_by_zone_device_type_camera_and_quality() {
        let ids = |v: &Viewer| v.narrow(catalog()).into_iter().map(|c| c.id).collect::<Vec<_>>();
        assert_eq!(ids(&compiled(None, None)).len(), 4);
        assert!(compiled(None, None).unrestricted());
        assert_eq!(ids(&compiled(Some(&["zone:zaist"]), None)), ["zaist-mantova"]);
        assert_eq!(ids(&compiled(Some(&["device:porta"]), None)), ["porta-1", "porta-2"]);
        assert_eq!(
            ids(&compiled(Some(&["type:fixed", "camera:porta-2"]), None)),
            ["po-lungofiume", "porta-2"]
        );
        assert!(ids(&compiled(Some(&[]), None)).is_empty(), "`cameras = []` sees nothing");
        assert_eq!(ids(&compiled(Some(&["*"]), None)).len(), 4);

        let sub_only = compiled(Some(&["zone:Zaist"]), Some(Quality::Sub));
        assert!(!sub_only.unrestricted());
        let narrowed = sub_only.narrow(catalog());
        assert_eq!(narrowed.len(), 1);
        assert_eq!(narrowed[0].qualities, [Quality::Sub]);
        let zaist = &catalog()[0];
        assert_eq!(sub_only.check(zaist, Quality::Sub), Ok(()));
        assert!(
            matches!(sub_only.check(zaist, Quality::Main), Err(ScopeRefusal::Quality(r)) if r.contains("`sub`"))
        );
        assert!(
            matches!(sub_only.check(&catalog()[1], Quality::Sub), Err(ScopeRefusal::Hidden(r)) if r.contains("po-lungofiume"))
        );
        // A camera offering only main disappears for a sub-only viewer.
        let mut main_only = cam("solo", "Zaist", "dome");
        main_only.qualities = vec![Quality::Main];
        assert!(!sub_only.may_see(&main_only));
        assert!(Viewer::anonymous().may_see(&main_only));
        assert_eq!(Viewer::anonymous().audit_name(), None);
        assert_eq!(sub_only.audit_name(), Some("anna"));
    }

    fn arb_selector() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("*".to_string()),
            "[a-d]".prop_map(|c| format!("camera:{c}")),
            "[a-d]".prop_map(|c| format!("device:{c}")),
            "[xyz]".prop_map(|z| format!("zone:{z}")),
            "(fixed|dome)".prop_map(|t| format!("type:{t}")),
        ]
    }

    fn arb_camera() -> impl Strategy<Value = CatalogEntry> {
        ("[a-d]", "[xyz]", "(fixed|dome)", any::<bool>(), any::<bool>()).prop_map(
            |(id, zone, kind, main, sub)| {
                let mut c = cam(&id, &zone, &kind);
                c.qualities = [(main, Quality::Main), (sub, Quality::Sub)]
                    .into_iter()
                    .filter_map(|(on, q)| on.then_some(q))
                    .collect();
                c
            },
        )
    }

    proptest! {
        /// A viewer's catalog is always a subset of the site's, camera by
        /// camera and quality by quality, and `check` agrees with it.
        #[test]
        fn narrowing_never_widens(
            selectors in proptest::option::of(proptest::collection::vec(arb_selector(), 0..4)),
            sub_only in any::<bool>(),
            site in proptest::collection::vec(arb_camera(), 0..6),
        ) {
            let refs: Option<Vec<&str>> = selectors.as_ref().map(|s| s.iter().map(String::as_str).collect());
            let v = compiled(refs.as_deref(), sub_only.then_some(Quality::Sub));
            let narrowed = v.narrow(site.clone());
            let mut expected = Vec::new();
            for c in &site {
                let one = v.narrow(vec![c.clone()]);
                prop_assert!(one.len() <= 1);
                if let Some(n) = one.first() {
                    prop_assert_eq!(&CatalogEntry { qualities: c.qualities.clone(), ..n.clone() }, c);
                    prop_assert!(!n.qualities.is_empty());
                    prop_assert!(n.qualities.iter().all(|q| c.qualities.contains(q)));
                    prop_assert!(!(sub_only && n.qualities.contains(&Quality::Main)));
                }
                for q in [Quality::Main, Quality::Sub] {
                    let listed = one.first().is_some_and(|n| n.qualities.contains(&q));
                    prop_assert_eq!(v.check(c, q).is_ok(), listed);
                }
                prop_assert_eq!(v.may_see(c), !one.is_empty());
                expected.extend(one);
            }
            prop_assert_eq!(narrowed, expected);
        }
    }
}
