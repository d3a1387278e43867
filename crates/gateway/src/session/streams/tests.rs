use super::*;
use crate::session::memory::MemoryStore;

#[test]
fn event_ids_round_trip_and_foreign_ids_are_refused() {
    let log = StreamLog::new(StreamKind::Post);
    let id = log.event_id(7);
    let parsed = parse_event_id(&id).unwrap();
    assert_eq!(parsed.stream, &*log.id);
    assert_eq!(parsed.kind, StreamKind::Post);
    assert_eq!(parsed.seq, 7);
    for bad in ["", "7", "p-1", "x0123456789abcdef-1", "p0123456789abcdeg-1", "p0123456789abcdef-x"]
    {
        assert_eq!(parse_event_id(bad), None, "{bad}");
    }
}

fn data(s: &str) -> Arc<str> {
    Arc::from(s)
}

#[tokio::test]
async fn a_reader_gets_every_event_then_the_end_and_a_resumed_reader_only_the_rest() {
    let streams = Streams::default();
    let log = streams.open(StreamKind::Post);
    log.push(data(""));
    let mut r = Streams::reader(log.clone(), None, None);
    let feeder = log.clone();
    tokio::spawn(async move {
        for i in 1..=3 {
            tokio::task::yield_now().await;
            feeder.push(data(&format!("m{i}")));
        }
        feeder.finish();
    });
    let mut got = Vec::new();
    while let Some(e) = r.next().await {
        got.push((e.seq, e.data.to_string()));
    }
    assert_eq!(got, vec![(0, "".into()), (1, "m1".into()), (2, "m2".into()), (3, "m3".into())]);
    let mut resumed = Streams::reader(log, Some(1), None);
    assert_eq!(resumed.next().await.map(|e| e.seq), Some(2));
    assert_eq!(resumed.next().await.map(|e| e.seq), Some(3));
    assert_eq!(resumed.next().await, None);
}

#[test]
fn the_window_keeps_the_newest_events() {
    let log = StreamLog::new(StreamKind::Get);
    for i in 0..(WINDOW as u64 + 10) {
        log.push(data(&i.to_string()));
    }
    let kept = log.events_from(0);
    assert_eq!(kept.len(), WINDOW);
    assert_eq!(kept[0].seq, 10);
}

#[tokio::test]
async fn a_stream_that_loses_its_reader_is_kept_in_the_store_to_its_end() {
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
    let streams = Streams::default();
    let log = streams.open(StreamKind::Post);
    log.push(data(""));
    log.push(data("progress"));
    let r = Streams::reader(log.clone(), None, Some((store.clone(), Arc::from("s1"))));
    drop(r);
    // Events after the client left, then the response.
    log.push(data("later"));
    log.push(data("response"));
    log.finish();
    let at = EventRef { stream: log.id.to_string(), kind: StreamKind::Post, seq: 0 };
    let mut stored = None;
    for _ in 0..100 {
        if let Some((_, true)) = store.load_events("s1", &log.id).await.unwrap() {
            stored = StoredReader::open(store.clone(), Arc::from("s1"), &at).await.unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut stored = stored.expect("the spilled stream reached its end in the store");
    let mut got = Vec::new();
    while let Some(e) = stored.next().await {
        got.push(e.data);
    }
    assert_eq!(got, ["progress", "later", "response"]);
}

#[tokio::test]
async fn a_reader_that_stays_to_the_end_leaves_nothing_in_the_store() {
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
    let log = Arc::new(StreamLog::new(StreamKind::Post));
    let mut r = Streams::reader(log.clone(), None, Some((store.clone(), Arc::from("s1"))));
    log.push(data("response"));
    log.finish();
    while r.next().await.is_some() {}
    drop(r);
    tokio::task::yield_now().await;
    assert_eq!(store.load_events("s1", &log.id).await.unwrap(), None);
}

#[tokio::test]
async fn closing_ends_readers_at_once() {
    let streams = Streams::default();
    let log = streams.open(StreamKind::Get);
    log.push(data("a"));
    let mut r = Streams::reader(log.clone(), Some(0), None);
    streams.close_all();
    assert_eq!(r.next().await, None);
    assert!(streams.get(&log.id).is_none());
}

#[test]
fn a_stream_settles_whole_only_when_its_response_came_first() {
    let quick = StreamLog::new(StreamKind::Post);
    quick.push(data(""));
    assert_eq!(quick.settled(), Settled::Pending, "a priming event alone is nothing yet");
    quick.push(data(r#"{"id":1,"result":{}}"#));
    assert_eq!(quick.settled(), Settled::Streaming, "not finished: more may come");
    quick.finish();
    match quick.settled() {
        Settled::Finished(events) => assert_eq!(
            events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![0, 1],
            "every event, the priming one included"
        ),
        other => panic!("{other:?}"),
    }

    let progress = StreamLog::new(StreamKind::Post);
    progress.push(data(r#"{"method":"notifications/progress"}"#));
    assert_eq!(progress.settled(), Settled::Streaming, "progress is sent as it comes");

    let closed = StreamLog::new(StreamKind::Post);
    closed.close();
    assert_eq!(closed.settled(), Settled::Streaming);
}
