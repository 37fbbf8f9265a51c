//! The `Range` header of PLAY (RFC 2326 §12.29 / RFC 7826 §18.40): only the
//! absolute `clock=` form matters here, as ONVIF Profile G replay clients
//! send it to pull a past interval: `clock=20261207T101500Z-20261207T101510Z`
//! (UTC, optional fraction of a second, the end optional).

/// A past interval asked for, Unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockRange {
    /// Start.
    pub from_ms: u64,
    /// End (open: on to the live edge).
    pub to_ms: Option<u64>,
}

/// Parses a `Range` header value; `Ok(None)` for the other forms
/// (`npt=`, `smpte=`: live), `Err` for a `clock=` that does not parse.
pub fn parse(value: &str) -> Result<Option<ClockRange>, String> {
    let Some(clock) = value.trim().strip_prefix("clock=") else { return Ok(None) };
    // `;time=` (when to start) may follow; it is ignored.
    let clock = clock.split(';').next().unwrap_or_default();
    let (from, to) =
        clock.split_once('-').ok_or_else(|| format!("`Range: clock={clock}`: expected START-[END]"))?;
    let from_ms = utc_ms(from)
        .ok_or_else(|| format!("`Range: clock=`: {from:?} is not a UTC time like 20261207T101500Z"))?;
    let to_ms = match to.trim() {
        "" => None,
        t => Some(
            utc_ms(t)
                .ok_or_else(|| format!("`Range: clock=`: {t:?} is not a UTC time like 20261207T101510Z"))?,
        ),
    };
    if to_ms.is_some_and(|to| to <= from_ms) {
        return Err(format!("`Range: clock={clock}`: the end is not after the start"));
    }
    Ok(Some(ClockRange { from_ms, to_ms }))
}

/// The `clock=` form of an interval, for the PLAY answer.
pub fn format(r: ClockRange) -> String {
    let to = r.to_ms.map(utc).unwrap_or_default();
    format!("clock={}-{to}", utc(r.from_ms))
}

/// `YYYYMMDDThhmmss[.fraction]Z` → Unix ms.
fn utc_ms(s: &str) -> Option<u64> {
    if !s.is_ascii() {
        return None;
    }
    let s = s.trim().strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    if date.len() != 8 || time.len() < 6 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let num = |t: &str| t.parse::<u64>().ok();
    let (y, m, d) = (num(&date[..4])? as i64, num(&date[4..6])?, num(&date[6..8])?);
    let (hms, frac) = time.split_at(6);
    if !hms.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (hh, mm, ss) = (num(&hms[..2])?, num(&hms[2..4])?, num(&hms[4..6])?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let ms = match frac.strip_prefix('.') {
        None if frac.is_empty() => 0,
        Some(f) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) => {
            let f3: String = f.chars().chain("000".chars()).take(3).collect();
            num(&f3)?
        }
        _ => return None,
    };
    let days = u64::try_from(days_from_civil(y, m as i64, d as i64)).ok()?;
    Some(((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000) + ms)
}

fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    let frac = ms % 1000;
    let base = format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60);
    if frac == 0 {
        format!("{base}Z")
    } else {
        format!("{base}.{frac:03}Z")
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_range_reads_as_unix_milliseconds_and_back() {
        let r = parse("clock=20261207T101500Z-20261207T101510.250Z").unwrap().unwrap();
        // 2026-12-07T10:15:00Z
        assert_eq!(r.from_ms, 1_796_638_500_000);
        assert_eq!(r.to_ms, Some(1_796_638_510_250));
        assert_eq!(format(r), "clock=20261207T101500Z-20261207T101510.250Z");
        let open = parse("clock=19700101T000001Z-").unwrap().unwrap();
        assert_eq!((open.from_ms, open.to_ms), (1000, None));
    }

    #[test]
    fn other_forms_are_live_and_bad_clocks_are_refused() {
        assert_eq!(parse("npt=0.000-"), Ok(None));
        assert_eq!(parse("npt=now-"), Ok(None));
        assert!(parse("clock=20261207T101500-").is_err(), "no Z");
        assert!(parse("clock=20261307T101500Z-").is_err(), "month 13");
        assert!(parse("clock=20261207T101510Z-20261207T101500Z").is_err(), "end before start");
        assert!(parse("clock=junk").is_err());
        assert!(parse("clock=20261207T10150\u{e9}Z-").is_err(), "not ASCII, no panic");
    }

    #[test]
    fn the_calendar_round_trips_across_leap_years() {
        for days in [0, 59, 60, 365, 10_956, 20_000, 20_794] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
