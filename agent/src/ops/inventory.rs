//! The Cremona inventory (`deploy/examples/cremona/cameras.csv`) as devices,
//! used by the demo.

use crate::config::{Device, DeviceKind, Source};
use anyhow::{bail, Context, Result};
use std::collections::HashSet;

/// The reference inventory shipped with ponte.
pub const CREMONA_CSV: &str = include_str!("../../../deploy/examples/cremona/cameras.csv");

/// Lowercase ASCII slug: letters and digits, runs of anything else as `-`.
pub fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let c = match c {
            'à' | 'á' => 'a',
            'è' | 'é' => 'e',
            'ì' | 'í' => 'i',
            'ò' | 'ó' => 'o',
            'ù' | 'ú' => 'u',
            c => c.to_ascii_lowercase(),
        };
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_owned()
}

/// Policy tags derived from the inventory's free-text notes.
pub fn tags_from_notes(notes: &str) -> Vec<String> {
    const KEYWORDS: [(&str, &str); 8] = [
        ("hospital", "hospital"),
        ("public housing", "housing"),
        ("road", "traffic"),
        ("roundabout", "traffic"),
        ("park", "park"),
        ("stadium", "public-order"),
        ("public order", "public-order"),
        ("retail", "retail"),
    ];
    let notes = notes.to_ascii_lowercase();
    let mut tags: Vec<String> = Vec::new();
    for (word, tag) in KEYWORDS {
        if notes.contains(word) && !tags.iter().any(|t| t == tag) {
            tags.push(tag.to_owned());
        }
    }
    tags
}

/// Parses `zone,location,camera_type,lenses,notes` rows into synthetic devices.
pub fn parse(csv: &str) -> Result<Vec<Device>> {
    let mut devices = Vec::new();
    let mut ids = HashSet::new();
    for (n, line) in csv.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.splitn(5, ',').collect();
        let notes = cols.get(4).copied().unwrap_or("");
        let [zone, place, kind, lenses, ..] = cols[..] else {
            bail!("inventory line {}: expected zone,location,camera_type,lenses,notes", n + 1);
        };
        let kind: DeviceKind = serde_json::from_value(serde_json::Value::String(kind.trim().to_owned()))
            .with_context(|| format!("inventory line {}: camera type {kind:?}", n + 1))?;
        let lenses: u8 =
            lenses.trim().parse().with_context(|| format!("inventory line {}: lenses {lenses:?}", n + 1))?;
        let base = format!("{}-{}", slug(zone), slug(place));
        let mut id: String = base.chars().take(56).collect::<String>().trim_end_matches('-').to_owned();
        let mut k = 2;
        while !ids.insert(id.clone()) {
            id = format!("{base}-{k}");
            k += 1;
        }
        devices.push(Device {
            id,
            name: place.trim().to_owned(),
            zone: zone.trim().to_owned(),
            kind,
            lenses: Some(lenses),
            tags: tags_from_notes(notes),
            source: Source::Synthetic(Default::default()),
            ..Device::default()
        });
    }
    Ok(devices)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cremona_has_30_points_and_43_lenses() {
        let d = parse(CREMONA_CSV).unwrap();
        assert_eq!(d.len(), 30);
        assert_eq!(d.iter().map(|d| d.lens_count() as usize).sum::<usize>(), 43);
        assert!(
            d.iter().all(|d| crate::config::valid_id(&d.id)),
            "{:?}",
            d.iter().map(|d| &d.id).collect::<Vec<_>>()
        );
    }

    #[test]
    fn slugs() {
        assert_eq!(slug("via Ca' del Binda zona Migliaro"), "via-ca-del-binda-zona-migliaro");
        assert_eq!(slug("rotatoria via Macello / via Cappuccini"), "rotatoria-via-macello-via-cappuccini");
    }

    /// The shipped RTSP config lists exactly the inventory: same ids, zones,
    /// places, types and lens counts, one `[[device.lens]]` per lens.
    #[test]
    fn cremona_agent_toml_matches_the_inventory() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/cremona/agent.toml");
        let cfg = crate::config::AgentConfig::load(&path).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(cfg.devices.len(), 30);
        let rtsp: Vec<_> = cfg.devices.iter().filter_map(|d| d.source.rtsp()).collect();
        assert_eq!(rtsp.len(), 30, "every device is an RTSP camera");
        let lenses: usize = rtsp.iter().map(|r| r.lenses.len()).sum();
        assert_eq!(lenses, 43);
        let inventory = parse(CREMONA_CSV).unwrap();
        for ((d, r), i) in cfg.devices.iter().zip(&rtsp).zip(&inventory) {
            assert_eq!(
                (&d.id, &d.name, &d.zone, d.kind, d.lens_count()),
                (&i.id, &i.name, &i.zone, i.kind, i.lens_count())
            );
            assert!(r.lenses.iter().all(|l| l.main.starts_with("rtsp://camera.invalid/")), "{}", d.id);
        }
    }
}
