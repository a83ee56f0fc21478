//! Suite 7, hostile bytes: a stable, proptest-driven fuzz harness for every reader that
//! takes bytes from a client. Each target is differential: the library's reader and a
//! reference decoder written from the documented format (`tests/fuzz_model/mod.rs`) read
//! the same input, through a reader that returns random short reads and `Interrupted`
//! errors, and must agree exactly (same frames, lines, values, same kind of end); and
//! nothing may panic.
//!
//! Inputs are random bytes, valid encodings of random payloads (JSON values among them)
//! with random byte edits and truncations, lengths at the edges of each codec, and the
//! corpus of interesting inputs kept in `tests/corpus/<target>/` (replayed on every run).
//! A failing case is saved by proptest in `tests/reliability_fuzz.proptest-regressions`
//! and replayed first from then on.
//!
//! The file server's request parser and client paths (`examples/ftp_server`, compiled in
//! here from its own files) are fuzzed the same way, against the properties they promise.
//!
//! CI runs 1 000 cases per target (a few seconds in all). Longer runs:
//! `SOCKETSERVER_FUZZ_CASES=200000 cargo test --release --all-features --test
//! reliability_fuzz`, or coverage-guided with cargo-fuzz on nightly over the same model
//! and corpus (see `fuzz/README.md`).

mod fuzz_model;
mod util;

use std::io::{self, BufRead, Read, Write};
use std::path::PathBuf;

use fuzz_model::*;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde_json::Value;
use socketserver::framing;
use socketserver::{StreamRequest, TcpServer};

// ---------------------------------------------------------------------------------------
// Input generators

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e300f64..1e300).prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map("body_size|[a-z]{1,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A payload: random bytes, or JSON text (objects most often, with a `body_size` now and
/// then), and a body.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..80),
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        (json_value(), 0u64..40).prop_map(|(v, n)| {
            let mut m = serde_json::Map::new();
            m.insert("body_size".into(), n.into());
            m.insert("v".into(), v);
            serde_json::to_vec(&Value::Object(m)).unwrap()
        }),
    ]
}

/// Bytes for spec `n`: random bytes; valid frames of random payloads (followed by random
/// bodies) with random edits and a random cut; or a length at an edge of the spec.
fn hostile(spec_count: usize) -> impl Strategy<Value = (usize, Vec<u8>)> {
    let structured = (
        0..spec_count,
        prop::collection::vec((payload(), prop::collection::vec(any::<u8>(), 0..24)), 0..5),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        prop::option::of(any::<prop::sample::Index>()),
    )
        .prop_map(|(n, parts, edits, cut)| {
            let spec = Spec::nth(n);
            let mut data = Vec::new();
            for (p, body) in parts {
                data.extend(spec.prefix_bytes(p.len() as u64));
                data.extend(p);
                data.extend(body);
            }
            if !data.is_empty() {
                for (i, b) in edits {
                    let i = i.index(data.len());
                    data[i] = b;
                }
                if let Some(c) = cut {
                    data.truncate(c.index(data.len() + 1));
                }
            }
            (n, data)
        });
    // A length at an edge of the spec (0, 1, around the limit, the prefix's largest, all
    // bits set, the sign bit alone), then random bytes.
    let edge = (
        0..spec_count,
        0u8..8,
        prop::collection::vec(any::<u8>(), 0..80),
    )
        .prop_map(|(n, k, tail)| {
            let spec = Spec::nth(n);
            let lim = spec.limit();
            let len = match k {
                0 => 0,
                1 => 1,
                2 => lim.saturating_sub(1),
                3 => lim,
                4 => lim.saturating_add(1),
                5 => spec.prefix_max(),
                6 => u64::MAX,
                _ => 1u64 << (8 * spec.prefix - 1),
            };
            let mut data = spec.prefix_bytes(len);
            data.extend(tail);
            (n, data)
        });
    prop_oneof![
        (0..spec_count, prop::collection::vec(any::<u8>(), 0..200)),
        structured,
        edge,
    ]
}

fn sizes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..8)
}

fn cases() -> u32 {
    std::env::var("SOCKETSERVER_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 2000,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/reliability_fuzz.proptest-regressions"
        )))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn fuzz_frame_reader_all_codecs(
        (n, data) in hostile(SPECS), sizes in sizes(), interrupt in any::<bool>(), cap in 1usize..40,
    ) {
        let spec = Spec::nth(n);
        check_frames(&spec, &data, &sizes, interrupt);
        check_frame_reader(&spec, &data, &sizes, cap);
    }

    #[test]
    fn fuzz_read_json_all_codecs((n, data) in hostile(SPECS), sizes in sizes()) {
        check_json(&Spec::nth(n), &data, &sizes);
        check_default_json(&data, &sizes);
    }

    #[test]
    fn fuzz_json_messages_and_headers((n, data) in hostile(SPECS), sizes in sizes()) {
        // Header limits of 0, 1, 5, 300 and 70 000 bytes, every prefix.
        check_messages(&Spec::nth(n), &data, &sizes);
        check_json_header(&data, &sizes);
    }

    #[test]
    fn fuzz_read_line(
        data in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..300),
            prop::collection::vec(prop::sample::select(b"ab\r\n\xff\xc3\xa9".to_vec()), 0..300),
        ],
        sizes in sizes(),
        cap in 1usize..32,
        max in 0usize..40,
    ) {
        check_lines(&data, &sizes, cap, max);
    }
}

// ---------------------------------------------------------------------------------------
// The corpus

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

/// Every corpus input, through every target, every spec and a few read patterns.
#[test]
fn corpus_replays_clean() {
    let patterns: [&[u8]; 3] = [&[], &[1], &[3, 1, 7, 200]];
    let mut inputs = 0;
    for target in ["frame", "json", "line"] {
        let files = corpus(target);
        assert!(!files.is_empty(), "empty corpus for {target}");
        for (name, data) in files {
            inputs += 1;
            for sizes in patterns {
                if data.len() > 4096 && sizes == [1] {
                    continue; // byte-by-byte reads of the large inputs: too slow unoptimised
                }
                for n in 0..SPECS {
                    let spec = Spec::nth(n);
                    check_frames(&spec, &data, sizes, true);
                    check_json(&spec, &data, sizes);
                    check_messages(&spec, &data, sizes);
                }
                check_default_json(&data, sizes);
                check_json_header(&data, sizes);
                for max in [0, 1, 4, 64, 1 << 20] {
                    check_lines(&data, sizes, 7, max);
                }
            }
            let _ = name;
        }
    }
    println!("corpus: {inputs} inputs replayed through every target and codec");
}

// ---------------------------------------------------------------------------------------
// The same bytes over real sockets

/// A JSON and line server answering hostile connections: each sends random bytes then
/// its EOF, and must be closed (never hang); the server never panics and still answers a
/// well-formed client afterwards.
#[test]
fn hostile_connections_never_break_a_server() {
    let server = TcpServer::builder()
        .request_timeout(Some(std::time::Duration::from_secs(2)))
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.local_addr().unwrap();
    let handle = server.shutdown_handle();
    let serving = std::thread::spawn(move || {
        server.serve(|req: &mut StreamRequest| {
            // First byte 'L': a line protocol; anything else: JSON frames.
            if req.fill_buf()?.first() == Some(&b'L') {
                let mut buf = Vec::new();
                while let Some(line) = framing::read_line(req, &mut buf, 256)? {
                    let n = line.len();
                    writeln!(req, "{n}")?;
                }
                return Ok(());
            }
            loop {
                match framing::read_json::<Value, _>(req) {
                    Ok(Some(v)) => framing::write_json(req, &v)?,
                    Ok(None) => return Ok(()),
                    Err(e) if framing::stream_usable(&e) => {
                        framing::write_json(req, &serde_json::json!({ "error": e.to_string() }))?
                    }
                    Err(e) => return Err(e),
                }
            }
        })
    });
    let mut rng = util::Rng::new(7);
    let mut sent = 0usize;
    let conns = 300;
    for i in 0..conns {
        let mut c = util::tcp_client(addr);
        let len = rng.below(600) as usize;
        let mut data = vec![0u8; len];
        rng.fill(&mut data);
        if i % 3 == 0 {
            data.insert(0, b'L');
        } else if i % 3 == 1 && len >= 4 {
            // A plausible prefix: small lengths, so that payloads are read.
            data[..4].copy_from_slice(&(rng.below(len as u64) as u32).to_be_bytes());
        }
        sent += data.len();
        let _ = c.write_all(&data);
        let _ = c.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        match c.read_to_end(&mut sink) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("connection {i} was not closed: {e}"),
        }
    }
    let mut c = util::tcp_client(addr);
    framing::write_json(&mut c, &serde_json::json!({"still": "serving"})).unwrap();
    let back: Value = framing::read_json(&mut c).unwrap().unwrap();
    assert_eq!(back, serde_json::json!({"still": "serving"}));
    drop(c);
    util::wait_until("all connections completed", || {
        handle.stats().completed == conns + 1
    });
    let st = handle.stats();
    assert_eq!(st.panics, 0, "{st:?}");
    handle.shutdown();
    serving.join().unwrap().unwrap();
    println!(
        "hostile connections: {conns} connections, {sent} random bytes, {} handler errors \
         (clean refusals), 0 panics; served a good client after",
        st.handler_errors
    );
}

/// The reference model itself, on the documented examples: a wrong model would make the
/// differential targets fail, never pass vacuously, but it is checked on its own too.
#[test]
fn reference_model_matches_the_documented_examples() {
    let be4 = Spec {
        prefix: 4,
        little: false,
        signed: false,
        max: 8 << 20,
    };
    assert_eq!(
        reference_frame(&be4, b"\0\0\0\x03abcrest"),
        Ok(Some((b"abc".to_vec(), 7)))
    );
    assert_eq!(reference_frame(&be4, b""), Ok(None));
    assert_eq!(reference_frame(&be4, b"\0\0"), Err(End::Eof));
    assert_eq!(
        reference_frame(&be4, b"\xff\xff\xff\xff"),
        Err(End::TooLarge(u32::MAX as u64))
    );
    let signed = Spec {
        signed: true,
        ..be4
    };
    assert_eq!(
        reference_frame(&signed, b"\xff\xff\xff\xfe"),
        Err(End::Negative)
    );
    let le2 = Spec {
        prefix: 2,
        little: true,
        signed: false,
        max: 300,
    };
    assert_eq!(le2.prefix_bytes(258), vec![2, 1]);
    assert_eq!(
        reference_frame(&le2, b"\x02\x00hi"),
        Ok(Some((b"hi".to_vec(), 4)))
    );
    assert_eq!(
        reference_lines(b"GET a\r\nSET b 1\nQUIT", 64),
        (
            vec![b"GET a".to_vec(), b"SET b 1".to_vec(), b"QUIT".to_vec()],
            End::Clean
        )
    );
    assert_eq!(reference_lines(b"0123456789\n", 4).1, End::LineTooLong);
}

// ---------------------------------------------------------------------------------------
// The file server's request parser and paths (examples/ftp_server), on hostile headers

#[path = "../examples/ftp_server/protocol.rs"]
#[allow(dead_code)]
mod ftp_protocol;

#[path = "../examples/ftp_server/paths.rs"]
#[allow(dead_code)]
mod ftp_paths;

/// A header a hostile client might send: a command (known or not, or not a string) and
/// fields of every name the server reads, each of a random JSON type and value.
fn ftp_header() -> impl Strategy<Value = serde_json::Map<String, Value>> {
    let cmd = prop_oneof![
        prop::sample::select(vec![
            "login", "quit", "pwd", "quota", "cd", "mkdir", "rm", "ls", "stat", "get", "put",
            "PUT", "", "put\u{0}",
        ])
        .prop_map(Value::from),
        json_value(),
    ];
    let key = prop::sample::select(vec![
        "username",
        "password",
        "path",
        "filename",
        "filesize",
        "offset",
        "sha256",
        "file_name",
        "file_size",
        "body_size",
    ]);
    let value = prop_oneof![
        json_value(),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[0-9a-fA-F]{64}".prop_map(Value::from),
        "(\\.\\.|\\.|/|a|\\.ftp-x|%2e|\u{0}|é){0,12}".prop_map(Value::from),
    ];
    (
        prop::option::of(cmd),
        prop::collection::vec((key, value), 0..6),
    )
        .prop_map(|(cmd, fields)| {
            let mut h: serde_json::Map<String, Value> = fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            if let Some(c) = cmd {
                h.insert("cmd".into(), c);
            }
            h
        })
}

/// What `Request::parse` promises: never a panic; a `put` it accepts has a body length
/// that cannot underflow, and a checksum only as 64 lowercase hex digits.
fn check_ftp_request(h: &serde_json::Map<String, Value>) {
    use ftp_protocol::Request;
    match Request::parse(h) {
        Request::Put(p) => {
            assert!(p.offset <= p.filesize, "{h:?}");
            assert_eq!(p.body_len(), p.filesize - p.offset);
            if let Some(sum) = &p.sha256 {
                assert!(
                    sum.len() == 64 && sum.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                );
            }
            if p.filename.is_err() {
                assert!(p.sha256.is_none());
            }
            let cmd = h.get("cmd");
            assert!(
                cmd == Some(&Value::from("put"))
                    || (cmd.is_none()
                        && (h.contains_key("file_name") || h.contains_key("file_size"))),
                "{h:?}"
            );
        }
        Request::Get { offset, .. } => {
            assert_eq!(h.get("offset").and_then(Value::as_u64).unwrap_or(0), offset);
        }
        _ => {}
    }
}

/// A client's path, as the server resolves it: never outside the home, never a reserved
/// or odd name; `a` then `b` is `a/b` (for a relative `b`).
fn check_ftp_path(base: &str, input: &str) {
    use ftp_paths::{VPath, RESERVED};
    let Ok(cwd) = VPath::default().join(base) else {
        return;
    };
    let joined = cwd.join(input);
    if let Ok(v) = &joined {
        for name in v.names() {
            assert!(
                !matches!(name.as_str(), "" | "." | ".."),
                "{base:?} + {input:?}: {v:?}"
            );
            assert!(!name.contains('/') && !name.contains('\0'), "{v:?}");
            assert!(!name.starts_with(RESERVED) && name.len() <= 255, "{v:?}");
        }
        assert!(v.to_string().starts_with('/'));
    }
    if !input.starts_with('/') {
        let whole = VPath::default().join(&format!("{base}/{input}"));
        assert_eq!(joined, whole, "{base:?} then {input:?}");
    }
}

fn ftp_path_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            prop::sample::select(vec![
                "..",
                ".",
                "",
                "/",
                "a",
                "b",
                ".ftp-sum",
                ".ftp",
                "%2e%2e",
                "\\..",
                "\u{0}",
                "é",
                "..\u{2215}..",
                " ",
                "~",
            ])
            .prop_map(String::from),
            "[a-z./]{0,8}",
            Just("x".repeat(256)),
        ],
        0..10,
    )
    .prop_map(|parts| parts.join("/"))
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/reliability_fuzz.proptest-regressions"
        )))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn fuzz_ftp_request_parser(h in ftp_header(), (_, bytes) in hostile(SPECS), sizes in sizes()) {
        check_ftp_request(&h);
        // The same header on the wire, and hostile bytes, through the server's codec.
        let mut wire = Vec::new();
        ftp_protocol::CODEC.write_json_header(&mut wire, &h).unwrap();
        for data in [&wire[..], &bytes[..]] {
            let mut r = Chunked::new(data, &sizes, true);
            if let Ok(Some(h)) = ftp_protocol::CODEC
                .read_json_header::<serde_json::Map<String, Value>, _>(&mut r)
            {
                check_ftp_request(&h);
            }
        }
    }

    #[test]
    fn fuzz_ftp_paths(base in ftp_path_text(), input in ftp_path_text()) {
        check_ftp_path(&base, &input);
    }

    #[test]
    fn fuzz_ftp_error_answers_fit_a_header(msg in prop_oneof![
        ".{0,1500}",
        "[\u{0}-\u{1f}\"\\\\]{0,1500}",
    ]) {
        // Every refusal quotes client input; its answer must still be a valid header.
        let answer = ftp_protocol::error(&msg);
        let mut wire = Vec::new();
        ftp_protocol::CODEC.write_json_header(&mut wire, &answer).unwrap();
        let back: Value = ftp_protocol::CODEC.read_json_header(&mut &wire[..]).unwrap().unwrap();
        assert_eq!(back, answer);
    }
}
