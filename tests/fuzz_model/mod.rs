//! The model of the hostile-bytes suite (suite 7), shared by the proptest harness
//! (`tests/reliability_fuzz.rs`, run by CI) and the cargo-fuzz targets (`fuzz/`, for long
//! coverage-guided runs on nightly): a reader that splits its input at random points and
//! interrupts itself, reference decoders written from the documented formats, and checks
//! that run the library's readers and the references on the same bytes and panic on any
//! disagreement.
#![allow(dead_code)] // each user takes the checks it needs

use std::io::{self, BufReader, Read};

use serde_json::Value;
use socketserver::framing::{self, Codec, FrameError, MessageCodec};

/// How many specs [`Spec::nth`] cycles through: 4 widths x 2 orders x 2 signednesses x 5
/// limits.
pub const SPECS: usize = 80;

/// Runs every check on `data` with spec `n` and the read sizes `sizes`: what a fuzz target
/// does with one input.
pub fn check_all(n: usize, data: &[u8], sizes: &[u8]) {
    let spec = Spec::nth(n);
    check_frames(&spec, data, sizes, true);
    check_frame_reader(&spec, data, sizes, 1 + n % 13);
    check_json(&spec, data, sizes);
    check_default_json(data, sizes);
    check_messages(&spec, data, sizes);
    check_json_header(data, sizes);
    check_lines(data, sizes, 1 + n % 13, n % 70);
}

// ---------------------------------------------------------------------------------------
// A reader that splits the input at random points and interrupts itself

/// Returns the input in reads of the sizes given in turn (0 counts as 1), with an
/// `Interrupted` error before every fifth read when `interrupt` is set.
pub struct Chunked<'a> {
    data: &'a [u8],
    sizes: &'a [u8],
    calls: usize,
    interrupt: bool,
}

impl<'a> Chunked<'a> {
    pub fn new(data: &'a [u8], sizes: &'a [u8], interrupt: bool) -> Chunked<'a> {
        Chunked {
            data,
            sizes,
            calls: 0,
            interrupt,
        }
    }
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.calls += 1;
        if self.interrupt && self.calls % 5 == 0 {
            return Err(io::Error::from(io::ErrorKind::Interrupted));
        }
        let size = match self.sizes {
            [] => usize::MAX,
            s => usize::from(s[self.calls % s.len()].max(1)),
        };
        let n = size.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

// ---------------------------------------------------------------------------------------
// Frame specifications and the reference frame decoder

/// Every prefix the codecs take: width, byte order, signedness, and a limit.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    pub prefix: usize,
    pub little: bool,
    pub signed: bool,
    pub max: usize,
}

pub const WIDTHS: [usize; 4] = [1, 2, 4, 8];
pub const LIMITS: [usize; 5] = [0, 1, 5, 300, 70_000];

impl Spec {
    /// The spec numbered `n` (any number: taken modulo the 80 combinations).
    pub fn nth(n: usize) -> Spec {
        let n = n % (WIDTHS.len() * 2 * 2 * LIMITS.len());
        Spec {
            prefix: WIDTHS[n % 4],
            little: (n / 4) % 2 == 1,
            signed: (n / 8) % 2 == 1,
            max: LIMITS[n / 16],
        }
    }

    pub fn codec(&self) -> Codec {
        let c = Codec::new().prefix_len(self.prefix).max_frame_len(self.max);
        let c = if self.little {
            c.little_endian()
        } else {
            c.big_endian()
        };
        if self.signed {
            c.signed()
        } else {
            c
        }
    }

    /// The largest length the prefix represents.
    pub fn prefix_max(&self) -> u64 {
        let bits = 8 * self.prefix as u32 - u32::from(self.signed);
        if bits >= 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        }
    }

    pub fn limit(&self) -> u64 {
        (self.max as u64).min(self.prefix_max())
    }

    /// Encodes a length as this prefix (for building valid inputs).
    pub fn prefix_bytes(&self, len: u64) -> Vec<u8> {
        let be = len.to_be_bytes();
        let mut p = be[8 - self.prefix..].to_vec();
        if self.little {
            p.reverse();
        }
        p
    }
}

/// How a sequence of reads ended.
#[derive(Clone, Debug, PartialEq)]
pub enum End {
    /// A clean end between frames (or lines).
    Clean,
    /// The stream ended inside a prefix or a payload.
    Eof,
    /// A declared length over the limit (the declared length).
    TooLarge(u64),
    /// A negative declared length.
    Negative,
    /// A line over the limit.
    LineTooLong,
    /// A whole frame whose payload is not what was expected (JSON targets).
    BadPayload,
}

/// The reference decoder of one frame: `Ok(None)` at a clean end, the payload and the
/// bytes consumed, or how it ended.
pub fn reference_frame(spec: &Spec, data: &[u8]) -> Result<Option<(Vec<u8>, usize)>, End> {
    if data.is_empty() {
        return Ok(None);
    }
    if data.len() < spec.prefix {
        return Err(End::Eof);
    }
    let mut p = data[..spec.prefix].to_vec();
    if spec.little {
        p.reverse();
    }
    let mut be = [0u8; 8];
    be[8 - spec.prefix..].copy_from_slice(&p);
    let raw = u64::from_be_bytes(be);
    let len = if spec.signed {
        let shift = 64 - 8 * spec.prefix as u32;
        let v = ((raw << shift) as i64) >> shift;
        if v < 0 {
            return Err(End::Negative);
        }
        v as u64
    } else {
        raw
    };
    if len > spec.limit() {
        return Err(End::TooLarge(len));
    }
    let rest = &data[spec.prefix..];
    if (rest.len() as u64) < len {
        return Err(End::Eof);
    }
    let len = len as usize;
    Ok(Some((rest[..len].to_vec(), spec.prefix + len)))
}

/// Classifies an error from a library reader; panics on an error no input should cause.
pub fn class(e: &io::Error) -> End {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        return End::Eof;
    }
    match FrameError::from_io(e) {
        Some(f) if f.is_too_large() => End::TooLarge(f.declared_len().expect("declared length")),
        Some(f) if f.is_negative() => End::Negative,
        Some(f) if f.is_line_too_long() => End::LineTooLong,
        Some(f) if f.is_bad_payload() => End::BadPayload,
        _ => panic!("unexpected error from hostile bytes: {e:?}"),
    }
}

/// Reads frames from `data` with the library and with the reference; they must agree.
pub fn check_frames(spec: &Spec, data: &[u8], sizes: &[u8], interrupt: bool) {
    let codec = spec.codec();
    let mut r = Chunked::new(data, sizes, interrupt);
    let mut rest = data;
    // Both `read_frame` and `read_frame_into` (alternately), and the `FrameReader`
    // wrapper are the same decoder: use each in turn.
    let mut buf = vec![0xAA; 3];
    for i in 0.. {
        let want = reference_frame(spec, rest);
        let got = match i % 2 {
            0 => codec.read_frame(&mut r),
            _ => codec
                .read_frame_into(&mut r, &mut buf)
                .map(|more| more.then(|| buf.clone())),
        };
        match (want, got) {
            (Ok(None), Ok(None)) => return,
            (Ok(Some((payload, used))), Ok(Some(frame))) => {
                assert_eq!(frame, payload, "{spec:?} frame {i}");
                assert!(frame.len() as u64 <= spec.limit());
                rest = &rest[used..];
            }
            (Err(end), Err(e)) => {
                assert_eq!(class(&e), end, "{spec:?} frame {i}: {e}");
                return;
            }
            (want, got) => panic!("{spec:?} frame {i}: reference {want:?}, library {got:?}"),
        }
    }
}

/// `FrameReader` over a `BufReader` of a random capacity: the same frames.
pub fn check_frame_reader(spec: &Spec, data: &[u8], sizes: &[u8], cap: usize) {
    let inner = BufReader::with_capacity(cap.max(1), Chunked::new(data, sizes, true));
    let mut reader = framing::FrameReader::with_codec(inner, spec.codec());
    let mut rest = data;
    loop {
        match (reference_frame(spec, rest), reader.read_frame()) {
            (Ok(None), Ok(None)) => return,
            (Ok(Some((payload, used))), Ok(Some(frame))) => {
                assert_eq!(frame, payload);
                rest = &rest[used..];
            }
            (Err(end), Err(e)) => {
                assert_eq!(class(&e), end, "{spec:?}: {e}");
                return;
            }
            (want, got) => panic!("{spec:?}: reference {want:?}, FrameReader {got:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// JSON values, message headers and lines

/// `Codec::read_json` against the reference frame decoder and serde_json: a frame whose
/// payload is not JSON is a bad payload that leaves the stream usable at the next frame.
pub fn check_json(spec: &Spec, data: &[u8], sizes: &[u8]) {
    let codec = spec.codec();
    let mut r = Chunked::new(data, sizes, true);
    let mut rest = data;
    loop {
        let want = reference_frame(spec, rest);
        let got = codec.read_json::<Value, _>(&mut r);
        match (want, got) {
            (Ok(None), Ok(None)) => return,
            (Ok(Some((payload, used))), got) => {
                match (serde_json::from_slice::<Value>(&payload), got) {
                    (Ok(v), Ok(Some(g))) => assert_eq!(g, v),
                    (Err(_), Err(e)) => {
                        assert_eq!(class(&e), End::BadPayload, "{e}");
                        assert!(framing::stream_usable(&e), "{e}");
                    }
                    (want, got) => panic!("{spec:?}: serde_json {want:?}, read_json {got:?}"),
                }
                rest = &rest[used..];
            }
            (Err(end), Err(e)) => {
                assert_eq!(class(&e), end, "{e}");
                assert!(!framing::stream_usable(&e), "{e}");
                return;
            }
            (want, got) => panic!("{spec:?}: reference {want:?}, read_json {got:?}"),
        }
    }
}

/// The default `read_json` (u32 big-endian, 8 MiB): the same as its codec.
pub fn check_default_json(data: &[u8], sizes: &[u8]) {
    let mut a = Chunked::new(data, sizes, true);
    let mut b = data;
    loop {
        let got = framing::read_json::<Value, _>(&mut a);
        let want = Codec::new().read_json::<Value, _>(&mut b);
        match (got, want) {
            (Ok(None), Ok(None)) => return,
            (Ok(Some(g)), Ok(Some(w))) => assert_eq!(g, w),
            (Err(g), Err(w)) => {
                assert_eq!(g.to_string(), w.to_string());
                if !framing::stream_usable(&g) {
                    return;
                }
            }
            (g, w) => panic!("read_json {g:?}, Codec::read_json {w:?}"),
        }
    }
}

/// The reference of `read_message`: a header frame (non-empty UTF-8 JSON object, at most
/// `max_header` bytes), its `body_size` (absent: 0; else an unsigned integer), the body.
#[allow(clippy::type_complexity)]
pub fn reference_message(
    spec: &Spec,
    data: &[u8],
) -> Result<Option<(Value, Vec<u8>, usize)>, &'static str> {
    let Some((json, used)) = reference_frame(spec, data).map_err(|_| "frame")? else {
        return Ok(None);
    };
    if json.is_empty() {
        return Err("empty");
    }
    let text = std::str::from_utf8(&json).map_err(|_| "utf8")?;
    let header: Value = serde_json::from_str(text).map_err(|_| "json")?;
    let Value::Object(object) = &header else {
        return Err("not an object");
    };
    let len = match object.get("body_size") {
        None => 0,
        Some(v) => v.as_u64().ok_or("size")?,
    };
    let rest = &data[used..];
    if (rest.len() as u64) < len {
        return Err("short body");
    }
    let len = len as usize;
    Ok(Some((header, rest[..len].to_vec(), used + len)))
}

pub fn check_messages(spec: &Spec, data: &[u8], sizes: &[u8]) {
    let codec = MessageCodec::new()
        .prefix(spec.codec())
        .max_header_len(spec.max);
    let mut r = Chunked::new(data, sizes, true);
    let mut rest = data;
    loop {
        let want = reference_message(spec, rest);
        let got = codec
            .read_message::<Value, _>(&mut r)
            .and_then(|m| match m {
                None => Ok(None),
                Some((header, mut body)) => {
                    let mut bytes = Vec::new();
                    body.copy_to(&mut bytes)?;
                    assert_eq!(body.remaining(), 0);
                    Ok(Some((header, bytes)))
                }
            });
        match (want, got) {
            (Ok(None), Ok(None)) => return,
            (Ok(Some((h, b, used))), Ok(Some((gh, gb)))) => {
                assert_eq!((gh, gb), (h, b));
                rest = &rest[used..];
            }
            (Err(_), Err(e)) => {
                // Never a panic, never an error kind that blames the program.
                assert!(
                    matches!(
                        e.kind(),
                        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
                    ),
                    "{e:?}"
                );
                return;
            }
            (want, got) => panic!("{spec:?}: reference {want:?}, read_message {got:?}"),
        }
    }
}

/// `read_json_header` reads the same header frame as `read_message` (same checks), and
/// nothing after it.
pub fn check_json_header(data: &[u8], sizes: &[u8]) {
    let mut r = Chunked::new(data, sizes, true);
    let got = framing::read_json_header::<Value, _>(&mut r);
    let spec = Spec {
        prefix: 4,
        little: false,
        signed: false,
        max: framing::DEFAULT_MAX_HEADER_LEN,
    };
    match (reference_frame(&spec, data), got) {
        (Ok(None), Ok(None)) => {}
        (Ok(Some((json, used))), got) => {
            let want = std::str::from_utf8(&json)
                .ok()
                .filter(|t| !t.is_empty())
                .and_then(|t| serde_json::from_str::<Value>(t).ok())
                .filter(Value::is_object);
            match (want, got) {
                (Some(w), Ok(Some(g))) => {
                    assert_eq!(g, w);
                    // Nothing after the header was taken.
                    let mut after = Vec::new();
                    r.read_to_end(&mut after).unwrap();
                    assert_eq!(after, &data[used..]);
                }
                (None, Err(e)) => assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}"),
                (w, g) => panic!("header: reference {w:?}, read_json_header {g:?}"),
            }
        }
        (Err(_), Err(_)) => {}
        (w, g) => panic!("header frame: reference {w:?}, read_json_header {g:?}"),
    }
}

/// The reference line splitter: lines end at `\n`, one `\r` before it is dropped, the
/// last line may lack its `\n`; a line over `max` bytes ends the reading.
pub fn reference_lines(data: &[u8], max: usize) -> (Vec<Vec<u8>>, End) {
    let mut lines = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let (mut line, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        if line.len() > max {
            return (lines, End::LineTooLong);
        }
        lines.push(line.to_vec());
        rest = next;
    }
    (lines, End::Clean)
}

pub fn check_lines(data: &[u8], sizes: &[u8], cap: usize, max: usize) {
    let (want, end) = reference_lines(data, max);
    let mut r = BufReader::with_capacity(cap.max(1), Chunked::new(data, sizes, true));
    let mut buf = Vec::new();
    let mut got = Vec::new();
    let got_end = loop {
        match framing::read_line(&mut r, &mut buf, max) {
            Ok(Some(line)) => {
                assert!(line.len() <= max && !line.contains(&b'\n'));
                got.push(line.to_vec());
            }
            Ok(None) => break End::Clean,
            Err(e) => break class(&e),
        }
        assert!(got.len() <= want.len() + 1, "more lines than the input has");
    };
    assert_eq!((got, got_end), (want, end), "max {max}, capacity {cap}");
    // read_text_line: the same lines, UTF-8 checked, never an error for bad UTF-8.
    let mut r = BufReader::with_capacity(cap.max(1), Chunked::new(data, sizes, false));
    let (want, _) = reference_lines(data, max);
    for w in want {
        match framing::read_text_line(&mut r, &mut buf, max).unwrap() {
            Some(Ok(text)) => assert_eq!(text.as_bytes(), w),
            Some(Err(_)) => assert!(std::str::from_utf8(&w).is_err()),
            None => panic!("read_text_line ended early"),
        }
    }
}
