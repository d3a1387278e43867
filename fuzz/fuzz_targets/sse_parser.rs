//! The SSE parser for backend streams: the same events whatever the chunking, and never an
//! event above the parser's limit (L10). The first byte picks the chunk size and the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmcp_gateway::sse::{Parser, encode};

fuzz_target!(|data: &[u8]| {
    let Some((&knob, body)) = data.split_first() else { return };
    let whole = Parser::default().feed(body).expect("the default limit is above the input size");
    let step = usize::from(knob % 16) + 1;
    let mut parser = Parser::default();
    let mut chunked = Vec::new();
    for chunk in body.chunks(step) {
        chunked.extend(parser.feed(chunk).expect("the default limit is above the input size"));
    }
    assert_eq!(whole, chunked);

    let limit = usize::from(knob);
    let mut small = Parser::with_limit(limit);
    for chunk in body.chunks(step) {
        if let Ok(events) = small.feed(chunk) {
            for e in events {
                assert!(e.data.len() <= limit, "{} > {limit}", e.data.len());
            }
        }
    }

    // What the gateway encodes for its clients parses back to the same data.
    if let Ok(text) = std::str::from_utf8(body)
        && !text.contains('\r')
    {
        let events = Parser::default().feed(&encode(Some("1"), text)).expect("small");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, text);
    }
});
