//! Bad input of any kind: mutated and random request bytes over raw TCP. Every connection ends
//! with an answer or a close within a bound, no answer is a 5xx, nothing panics, and the
//! gateway keeps serving.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::*;

const TEMPLATES: [&[u8]; 5] = [
    b"GET /open/a?x=1 HTTP/1.1\r\nHost: a\r\nX-Api-Key: k\r\nCookie: a=b\r\n\r\n",
    b"POST /open/b HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /keyed/c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nx-api-key: nope\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"GET /keyed/d HTTP/1.1\r\nHost: a\r\napi_access_token: k\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
];

/// A fixed-seed xorshift stream: the same inputs on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn mutate(rng: &mut Rng, template: &[u8]) -> Vec<u8> {
    let mut bytes = template.to_vec();
    for _ in 0..=rng.below(6) {
        let at = rng.below(bytes.len().max(1));
        match rng.below(6) {
            0 => bytes[at] = rng.next() as u8,
            1 => bytes.insert(
                at,
                [b'\r', b'\n', b'\0', b':', b'_', b' ', 0x7f, 0xff][rng.below(8)],
            ),
            2 => {
                bytes.remove(at);
            }
            3 => bytes.truncate(at),
            4 => {
                let copy = bytes[at..].to_vec();
                bytes.extend_from_slice(&copy);
            }
            _ => bytes
                .splice(at..at, b"%2e%2e/".iter().copied())
                .for_each(drop),
        }
        if bytes.is_empty() {
            bytes.push(b'G');
        }
    }
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_and_random_requests_never_panic_hang_or_5xx() {
    let panics = Arc::new(AtomicUsize::new(0));
    let seen = panics.clone();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        seen.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));

    let gw = start(
        r#"
limits: {header_read_timeout: 300ms}
upstreams:
  echo: {builtin: echo}
consumers:
  - {name: c, api_keys: ["sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"]}
authenticators:
  key: {type: api_key, from: ["header:x-api-key", "header:api_access_token", "query:k"]}
routes:
  - {name: open, match: {path_prefix: /open/}, upstream: echo, auth: []}
  - {name: keyed, match: {path_prefix: /keyed/}, upstream: echo, auth: [key]}
"#,
    )
    .await;

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut inputs: Vec<Vec<u8>> = (0..400)
        .map(|i| {
            let template = TEMPLATES[i % TEMPLATES.len()];
            mutate(&mut rng, template)
        })
        .collect();
    inputs.extend((0..40).map(|_| (0..rng.below(600) + 1).map(|_| rng.next() as u8).collect()));

    for batch in inputs.chunks(40) {
        let answers: Vec<_> = batch
            .iter()
            .map(|input| {
                let input = input.clone();
                let addr = gw.addr;
                tokio::spawn(async move {
                    let answer = raw_exchange(addr, &input, Duration::from_secs(5)).await;
                    (input, answer)
                })
            })
            .collect();
        for task in answers {
            let (input, answer) = task.await.expect("exchange task");
            assert!(
                answer.closed,
                "connection not closed within the bound for {:?}",
                String::from_utf8_lossy(&input)
            );
            let text = String::from_utf8_lossy(&answer.bytes);
            for status in text
                .match_indices("HTTP/1.1 ")
                .filter_map(|(i, _)| text.get(i + 9..i + 12))
            {
                assert!(
                    !status.starts_with('5'),
                    "a {status} for {:?}: {text}",
                    String::from_utf8_lossy(&input)
                );
            }
        }
    }

    let ok = get(&gw.url("/open/still-serving"), &[]).await;
    assert_eq!(ok.status, 200);
    let _ = std::panic::take_hook();
    assert_eq!(panics.load(Ordering::SeqCst), 0, "a request panicked");
    gw.stop().await;
}
