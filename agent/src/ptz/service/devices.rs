//! The PTZ endpoints of the `dome-ptz` devices, built from their config.

use crate::ptz::device::PtzDevice;
use crate::sources::device::{Device, DeviceKind};
use std::collections::HashMap;
use std::sync::Arc;

/// The PTZ endpoints of the `dome-ptz` devices: an ONVIF client for those
/// with `[device.onvif]`, a simulated dome for synthetic ones with
/// `[device.synthetic] ptz = true`.
pub fn devices(devices: &[Device]) -> anyhow::Result<HashMap<String, Arc<dyn PtzDevice>>> {
    use anyhow::Context as _;
    let mut out: HashMap<String, Arc<dyn PtzDevice>> = HashMap::new();
    for d in devices {
        if d.kind != DeviceKind::DomePtz {
            continue;
        }
        let Some(settings) = &d.onvif else {
            if d.source.synthetic().is_some_and(|s| s.ptz) {
                let camera = d.camera_id(1);
                out.insert(camera.clone(), Arc::new(crate::ptz::sim::SimulatedDome::new(&camera)));
            }
            continue;
        };
        let creds = d.credentials()?;
        let (user, password) = match &creds {
            Some((u, p)) => (Some(u.as_str()), Some(p.as_str())),
            None => (None, None),
        };
        let client = crate::ptz::onvif::OnvifPtz::new(&d.id, settings, user, password)
            .with_context(|| format!("`[device.onvif]` of device `{}`", d.id))?;
        out.insert(d.camera_id(1), Arc::new(client));
    }
    Ok(out)
}
