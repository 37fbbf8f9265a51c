//! The store driven through its public API on real files in a temp dir.

use super::record;
use super::*;
use crate::media::{Codec, Frame, Quality};
use bytes::Bytes;
use proptest::prelude::*;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ponte-store-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

fn config(width: u16) -> Arc<CodecConfig> {
    Arc::new(CodecConfig {
        codec: Codec::H264,
        width,
        height: 720,
        parameter_sets: vec![Bytes::from_static(&[0x67, 1, 2, 3]), Bytes::from_static(&[0x68, 4])],
    })
}

/// A one-second GOP (25 frames at 40 ms) starting at `wall_ms`.
fn gop(wall_ms: u64, seq: u64, cfg: &Arc<CodecConfig>) -> RecordedGop {
    gop_of(wall_ms, seq, cfg, 40)
}

/// A GOP of 25 frames `frame_ms` apart.
fn gop_of(wall_ms: u64, seq: u64, cfg: &Arc<CodecConfig>, frame_ms: u64) -> RecordedGop {
    let frames = (0..25u64)
        .map(|i| Frame {
            pts: 90_000 * 100 + i * frame_ms * 90,
            keyframe: i == 0,
            payload: Bytes::from(vec![(seq as u8).wrapping_add(i as u8); 100 + i as usize]),
        })
        .collect();
    RecordedGop { wall_ms, seq, config: cfg.clone(), frames }
}

fn cam(name: &str) -> TrackKey {
    TrackKey::new(name, Quality::Main)
}

fn limits(segment_secs: u64) -> StoreLimits {
    StoreLimits { segment_secs, ..StoreLimits::default() }
}

fn open(root: &Path, limits: StoreLimits) -> Arc<Store> {
    let (store, repairs) = Store::open(root, limits).unwrap();
    assert_eq!(repairs, []);
    Arc::new(store)
}

fn read_all(store: &Arc<Store>, key: &TrackKey) -> Vec<RecordedGop> {
    let mut cursor = store.cursor(key, 0).unwrap();
    let mut out = Vec::new();
    while let Some(g) = cursor.next().unwrap() {
        out.push(g);
    }
    out
}

fn segment_files(root: &Path, key: &TrackKey) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        fs::read_dir(layout::track_dir(root, key)).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

#[test]
fn the_store_and_its_cursors_can_be_shared_between_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<Store>();
    shared::<Cursor>();
}

#[test]
fn gops_read_back_equal_before_and_after_reopening() {
    let root = tmp("round-trip");
    let store = open(&root, limits(60));
    let key = cam("porta-nuova");
    let cfg = config(1280);
    let gops: Vec<RecordedGop> = (0..5).map(|i| gop(1_000_000 + i * 1000, i, &cfg)).collect();
    for g in &gops {
        let appended = store.append(&key, g).unwrap();
        assert!(appended.removed.is_empty());
    }
    assert_eq!(read_all(&store, &key), gops);
    assert_eq!(store.oldest_ms(&key), Some(1_000_000));
    assert_eq!(store.newest_ms(&key), Some(1_005_000));
    store.close_segments();
    let bytes = store.bytes();
    drop(store);

    let store = open(&root, limits(60));
    assert_eq!(store.tracks(), vec![key.clone()]);
    assert_eq!(store.bytes(), bytes);
    assert_eq!(read_all(&store, &key), gops);
    // From the middle of GOP 2: GOP 2 first; the range stops before GOP 4.
    assert_eq!(store.gops_between(&key, 1_002_500, 1_004_000).unwrap(), gops[2..4]);
    assert_eq!(store.gops_between(&key, 1_004_000, 1_002_500).unwrap(), []);
    assert_eq!(store.cursor(&key, 1_003_000).unwrap().next().unwrap().as_ref(), gops.get(3));
    // Before the first GOP: the first.
    assert_eq!(store.cursor(&key, 5).unwrap().next().unwrap().as_ref(), gops.first());
    assert!(store.cursor(&cam("other"), 0).is_none());
    assert!(check(&root).unwrap().is_clean());
}

#[test]
fn segments_rotate_on_time_and_on_a_config_change() {
    let root = tmp("rotation");
    let store = open(&root, limits(3));
    let key = cam("cam1");
    let (a, b) = (config(1280), config(1920));
    for i in 0..7 {
        store.append(&key, &gop(10_000 + i * 1000, i, &a)).unwrap();
    }
    // 10, 13, 16 s
    assert_eq!(segment_files(&root, &key).len(), 3);
    let appended = store.append(&key, &gop(17_000, 7, &b)).unwrap();
    assert_eq!(appended.path, layout::segment_path(&root, &key, 17_000));
    assert_eq!(segment_files(&root, &key).len(), 4);
    assert_eq!(read_all(&store, &key).len(), 8);
    let report = check(&root).unwrap();
    assert_eq!(report.tracks.first().map(|t| (t.segments, t.gops)), Some((4, 8)));
}

#[test]
fn a_torn_tail_is_reported_by_check_and_cut_by_open() {
    let root = tmp("torn");
    let store = open(&root, limits(60));
    let key = cam("cam1");
    let cfg = config(1280);
    let gops: Vec<RecordedGop> = (0..5).map(|i| gop(50_000 + i * 1000, i, &cfg)).collect();
    for g in &gops {
        store.append(&key, g).unwrap();
    }
    drop(store); // as after kill -9: nothing closed
    let file = segment_files(&root, &key).pop().unwrap();
    let len = fs::metadata(&file).unwrap().len();
    let record_len = len / 5;
    // The last record cut in its middle.
    fs::OpenOptions::new().write(true).open(&file).unwrap().set_len(len - 100).unwrap();

    let report = check(&root).unwrap();
    assert!(!report.is_clean());
    assert_eq!(report.problems.len(), 1, "{report}");
    assert_eq!(report.problems[0].offset, Some(4 * record_len));
    assert!(matches!(report.problems[0].kind, ProblemKind::Tail { bytes, .. } if bytes == record_len - 100));
    assert!(report.to_string().contains(&format!("at offset {}", 4 * record_len)), "{report}");
    assert_eq!(fs::metadata(&file).unwrap().len(), len - 100, "check never writes");

    let (store, repairs) = Store::open(&root, limits(60)).unwrap();
    assert_eq!(repairs.len(), 1);
    assert_eq!((repairs[0].kept, repairs[0].cut), (4 * record_len, record_len - 100));
    let store = Arc::new(store);
    assert_eq!(read_all(&store, &key), gops[..4]);
    assert!(check(&root).unwrap().is_clean());

    // A flipped byte in record 2's payload: check names it, open cuts there.
    drop(store);
    let mut bytes = fs::read(&file).unwrap();
    bytes[(2 * record_len + 300) as usize] ^= 0x40;
    fs::write(&file, &bytes).unwrap();
    let report = check(&root).unwrap();
    assert_eq!(report.problems.len(), 1, "{report}");
    assert_eq!(report.problems[0].offset, Some(2 * record_len));
    assert!(matches!(report.problems[0].kind, ProblemKind::Record(RecordError::Crc { .. })));
    assert_eq!(report.tracks[0].gops, 3, "the records after the damaged one still count");
    let (store, repairs) = Store::open(&root, limits(60)).unwrap();
    assert_eq!(repairs[0].kept, 2 * record_len);
    assert_eq!(read_all(&Arc::new(store), &key), gops[..2]);
}

#[test]
fn a_segment_made_of_garbage_is_cut_to_nothing_and_removed() {
    let root = tmp("garbage");
    let key = cam("cam1");
    fs::create_dir_all(layout::track_dir(&root, &key)).unwrap();
    let path = layout::segment_path(&root, &key, 1000);
    fs::write(&path, b"PSEG not a record at all, just some bytes that go on for a while").unwrap();
    assert!(!check(&root).unwrap().is_clean());
    let (store, repairs) = Store::open(&root, limits(60)).unwrap();
    assert_eq!(repairs.len(), 1);
    assert!(store.tracks().is_empty());
    assert!(!path.exists());
}

#[test]
fn retention_deletes_whole_closed_segments_only() {
    let root = tmp("retention");
    let store = open(&root, StoreLimits { retention_ms: 5000, max_bytes: 0, segment_secs: 2 });
    let key = cam("cam1");
    let cfg = config(1280);
    for i in 0..10 {
        store.append(&key, &gop(i * 1000, i, &cfg)).unwrap();
    }
    // Segments 0-2 s, 2-4, 4-6, 6-8, 8-10 (open). Cutoff 6000: the first two end by 4000.
    let removed = store.expire(11_000);
    assert_eq!(removed.iter().map(|r| (r.from_ms, r.to_ms)).collect::<Vec<_>>(), [(0, 2000), (2000, 4000)]);
    assert!(removed.iter().all(|r| r.reason == RemoveReason::Retention && !r.path.exists()));
    assert_eq!(store.oldest_ms(&key), Some(4000));
    assert_eq!(store.deletions().retention, 2);
    // Far in the future: everything closed goes, the open segment stays.
    store.expire(1_000_000);
    assert_eq!(store.ranges(&key), [(8000, 10_000)]);
    assert_eq!(segment_files(&root, &key).len(), 1);
}

#[test]
fn the_quota_deletes_the_oldest_segment_of_any_track_never_an_open_one() {
    let root = tmp("quota");
    let cfg = config(1280);
    let record_len = record::encode(&gop(0, 0, &cfg)).unwrap().len() as u64;
    let store = open(&root, StoreLimits { retention_ms: 0, max_bytes: 8 * record_len, segment_secs: 2 });
    let (a, b) = (cam("a"), cam("b"));
    // b starts 1 s after a: segments a@0, b@1000, a@2000, b@3000 ...
    let mut removed = Vec::new();
    for i in 0..8 {
        removed.extend(store.append(&a, &gop(i * 1000, i, &cfg)).unwrap().removed);
        removed.extend(store.append(&b, &gop(1000 + i * 1000, i, &cfg)).unwrap().removed);
        assert!(store.bytes() <= 8 * record_len);
    }
    let order: Vec<(String, u64)> = removed.iter().map(|r| (r.key.camera.clone(), r.from_ms)).collect();
    let mut by_time = order.clone();
    by_time.sort_by_key(|r| r.1);
    assert_eq!(order, by_time, "oldest first across tracks");
    assert_eq!(order.first(), Some(&("a".to_owned(), 0)));
    assert_eq!(order.get(1), Some(&("b".to_owned(), 1000)));
    assert!(removed.iter().all(|r| r.reason == RemoveReason::Quota));
    assert_eq!(store.deletions().quota, removed.len() as u64);
    // Both tracks keep their newest GOP (in their open segments).
    assert_eq!(store.newest_ms(&a), Some(8000));
    assert_eq!(store.newest_ms(&b), Some(9000));

    // A quota smaller than one record: the open segments are kept anyway.
    let root = tmp("quota-tiny");
    let store = open(&root, StoreLimits { retention_ms: 0, max_bytes: 1, segment_secs: 60 });
    store.append(&a, &gop(0, 0, &cfg)).unwrap();
    store.append(&a, &gop(1000, 1, &cfg)).unwrap();
    assert_eq!(store.ranges(&a), [(0, 2000)]);
}

#[test]
fn a_full_disk_deletes_the_oldest_segments_then_refuses_and_recovers() {
    let root = tmp("disk-full");
    let cfg = config(1280);
    let record_len = record::encode(&gop(0, 0, &cfg)).unwrap().len() as u64;
    let store = open(&root, limits(2));
    let (a, b) = (cam("a"), cam("b"));
    for i in 0..4 {
        store.append(&a, &gop(i * 1000, i, &cfg)).unwrap();
    }
    store.append(&b, &gop(5000, 0, &cfg)).unwrap();
    store.set_disk_capacity(Some(5 * record_len));
    // No room: a's oldest closed segment (0-2 s) goes, b's GOP is written.
    let appended = store.append(&b, &gop(6000, 1, &cfg)).unwrap();
    assert_eq!(appended.removed.len(), 1);
    assert_eq!(
        (appended.removed[0].key.clone(), appended.removed[0].reason),
        (a.clone(), RemoveReason::DiskFull)
    );
    assert_eq!(store.deletions().disk_full, 1);
    assert_eq!(store.bytes(), 4 * record_len);

    // b's first segment closes at 7 s and goes next; then only the open
    // segments are left: refused, nothing half-written.
    assert_eq!(store.append(&b, &gop(7000, 2, &cfg)).unwrap().removed, []);
    let removed = store.append(&b, &gop(7500, 3, &cfg)).unwrap().removed;
    assert_eq!(removed.iter().map(|r| (r.key.clone(), r.from_ms)).collect::<Vec<_>>(), [(b.clone(), 5000)]);
    store.append(&b, &gop(7800, 4, &cfg)).unwrap();
    let err = store.append(&b, &gop(7900, 5, &cfg)).unwrap_err();
    assert!(matches!(err, StoreError::Full { .. }), "{err}");
    assert!(err.to_string().contains("live goes on"), "{err}");
    assert_eq!(store.bytes(), 5 * record_len);
    let on_disk: u64 = layout::list(&root)
        .unwrap()
        .iter()
        .flat_map(|(_, segs)| segs.iter().map(|s| fs::metadata(&s.path).unwrap().len()))
        .sum();
    assert_eq!(on_disk, store.bytes(), "the failed write was cut back");
    assert!(check(&root).unwrap().is_clean());

    // Space returns: recording resumes where it was.
    store.set_disk_capacity(None);
    store.append(&b, &gop(8000, 6, &cfg)).unwrap();
    assert_eq!(read_all(&store, &b).iter().map(|g| g.seq).collect::<Vec<_>>(), [2, 3, 4, 6]);
    assert_eq!(read_all(&store, &a).iter().map(|g| g.seq).collect::<Vec<_>>(), [2, 3]);
    assert!(check(&root).unwrap().is_clean());
}

#[test]
fn a_cursor_follows_appends_and_survives_deletions_under_it() {
    let root = tmp("cursor");
    let store = open(&root, StoreLimits { retention_ms: 1000, max_bytes: 0, segment_secs: 2 });
    let key = cam("cam1");
    let cfg = config(1280);
    store.append(&key, &gop(0, 0, &cfg)).unwrap();
    let mut cursor = store.cursor(&key, 0).unwrap();
    assert_eq!(cursor.next().unwrap().map(|g| g.seq), Some(0));
    assert_eq!(cursor.next().unwrap(), None);
    for i in 1..6 {
        store.append(&key, &gop(i * 1000, i, &cfg)).unwrap();
    }
    assert_eq!(cursor.next().unwrap().map(|g| g.seq), Some(1));
    // Segments 0-2 and 2-4 s expire while the cursor is in the first.
    assert_eq!(store.expire(5500).len(), 2);
    let rest: Vec<u64> = std::iter::from_fn(|| cursor.next().unwrap()).map(|g| g.seq).collect();
    assert_eq!(rest, [4, 5]);
    store.append(&key, &gop(6000, 6, &cfg)).unwrap();
    assert_eq!(cursor.next().unwrap().map(|g| g.seq), Some(6));
}

#[test]
fn a_reader_on_another_thread_sees_a_writer_s_gops_in_order() {
    let root = tmp("threads");
    let store = open(&root, limits(1));
    let key = cam("cam1");
    let cfg = config(1280);
    store.append(&key, &gop(0, 0, &cfg)).unwrap();
    let reader = {
        let (store, key) = (store.clone(), key.clone());
        std::thread::spawn(move || {
            let mut cursor = store.cursor(&key, 0).unwrap();
            let mut seqs = Vec::new();
            while seqs.len() < 50 {
                match cursor.next().unwrap() {
                    Some(g) => seqs.push(g.seq),
                    None => std::thread::yield_now(),
                }
            }
            seqs
        })
    };
    for i in 1..50 {
        store.append(&key, &gop(i * 500, i, &cfg)).unwrap();
    }
    assert_eq!(reader.join().unwrap(), (0..50).collect::<Vec<_>>());
}

#[test]
fn ranges_split_at_gaps_only() {
    let root = tmp("ranges");
    let store = open(&root, limits(60));
    let key = cam("cam1");
    let cfg = config(1280);
    // 1-s GOPs: a 1.5-s hole stays inside a range, a 2.5-s hole splits.
    for (i, wall) in [0, 1000, 2000, 3000, 4000, 6500, 7500, 11_000, 12_000].into_iter().enumerate() {
        store.append(&key, &gop(wall, i as u64, &cfg)).unwrap();
    }
    assert_eq!(store.ranges(&key), [(0, 8500), (11_000, 13_000)]);
    // 4-s GOPs: one missing GOP splits.
    let long = cam("cam2");
    for (i, wall) in [0, 4000, 8000, 16_000, 20_000].into_iter().enumerate() {
        store.append(&long, &gop_of(wall, i as u64, &cfg, 160)).unwrap();
    }
    assert_eq!(store.ranges(&long), [(0, 12_000), (16_000, 24_000)]);
    let report = check(&root).unwrap();
    assert_eq!(report.tracks[0].ranges, store.ranges(&key));
    assert_eq!(report.tracks[1].ranges, store.ranges(&long));
}

#[test]
fn bad_cameras_late_gops_and_oversized_gops_are_refused() {
    let root = tmp("refused");
    let store = open(&root, limits(60));
    let cfg = config(1280);
    for camera in ["..", ".", "", "a/b", "../x", "c\\d", "é"] {
        assert!(matches!(store.append(&cam(camera), &gop(0, 0, &cfg)), Err(StoreError::BadCamera { .. })));
    }
    let key = cam("ok-cam_1.main");
    store.append(&key, &gop(5000, 0, &cfg)).unwrap();
    let late = store.append(&key, &gop(4000, 1, &cfg)).unwrap_err();
    assert!(matches!(late, StoreError::BackInTime { .. }), "{late}");
    let mut big = gop(6000, 2, &cfg);
    big.frames[0].payload = Bytes::from(vec![0; crate::wire::MAX_FRAME_LEN + 1]);
    assert!(matches!(store.append(&key, &big), Err(StoreError::Unrecordable { .. })));
    assert_eq!(fs::read_dir(&root).unwrap().count(), 1, "nothing but the good camera's directory");
}

proptest! {
    #[test]
    fn decoding_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = record::decode(Bytes::from(bytes));
    }

    #[test]
    fn a_record_with_any_byte_changed_is_refused(at in 0usize..3000, bit in 0u8..8) {
        let g = gop(1234, 5, &config(640));
        let mut rec = record::encode(&g).unwrap();
        prop_assert_eq!(record::decode(Bytes::from(rec.clone())).unwrap(), g);
        let at = at % rec.len();
        rec[at] ^= 1 << bit;
        prop_assert!(record::decode(Bytes::from(rec)).is_err());
    }
}
