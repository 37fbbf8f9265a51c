//! Test fixtures shared by the auth submodules' unit tests.

use super::viewer::Scope;
use super::{hash_password, Viewer, ViewerConfig, ViewerKind};
use ponte_proto::media::{Codec, Quality};
use ponte_proto::wire::CatalogEntry;
use std::sync::OnceLock;

pub(super) fn cam(id: &str, zone: &str, kind: &str) -> CatalogEntry {
    CatalogEntry {
        id: id.to_owned(),
        device: id.split('-').next().unwrap_or(id).to_owned(),
        lens: 1,
        name: id.to_owned(),
        zone: zone.to_owned(),
        kind: kind.to_owned(),
        codec: Codec::H264,
        qualities: vec![Quality::Main, Quality::Sub],
        ptz: false,
        always_on: false,
        sub_codec: None,
        sub_transcoded: false,
        tags: Vec::new(),
        dual_path: false,
    }
}

pub(super) fn catalog() -> Vec<CatalogEntry> {
    vec![
        cam("zaist-mantova", "Zaist", "dome-ptz"),
        cam("po-lungofiume", "Po", "fixed"),
        cam("porta-1", "Centro", "fixed-quad-optic"),
        cam("porta-2", "Centro", "fixed-quad-optic"),
    ]
}

pub(super) fn viewer(user: &str, phc: &str, cameras: Option<&[&str]>, max: Option<Quality>) -> ViewerConfig {
    ViewerConfig {
        user: user.into(),
        password_hash: phc.into(),
        cameras: cameras.map(|c| c.iter().map(|s| s.to_string()).collect()),
        max_quality: max,
        rtsp_digest_ha1: None,
        ptz: false,
    }
}

pub(super) fn phc() -> &'static str {
    static PHC: OnceLock<String> = OnceLock::new();
    PHC.get_or_init(|| hash_password("correct horse").unwrap())
}

pub(super) fn compiled(cameras: Option<&[&str]>, max: Option<Quality>) -> Viewer {
    let cameras: Option<Vec<String>> = cameras.map(|c| c.iter().map(|s| s.to_string()).collect());
    Viewer::new("anna", ViewerKind::Account, Scope::compile("test", cameras.as_deref(), max).unwrap(), &[])
}
