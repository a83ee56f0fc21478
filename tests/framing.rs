//! `socketserver::framing`: the frame reader against a naive reference over randomly chunked
//! input, round trips, the boundaries (0, max, max + 1, EOF in prefix and payload, negative
//! lengths), the writer's refusals, and JSON header + body messages.

mod util;

use std::io::{self, ErrorKind, IoSlice, Read, Write};

use proptest::prelude::*;
use socketserver::framing::{self, Codec, FrameError, FrameReader, FrameWriter};

// ---------------------------------------------------------------------------------------------
// Test doubles: a reader and a writer that move random amounts and get interrupted.

/// What a `Chunked` reader or `Partial` writer does on one call.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Move at most this many bytes (never 0).
    Move(usize),
    /// Fail with `ErrorKind::Interrupted`, moving nothing.
    Interrupt,
}

/// Plans of steps that always make progress: 1-byte moves, small and larger ones, and
/// interruptions; the plan repeats.
fn plan() -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        1 => Just(Step::Interrupt),
        3 => Just(Step::Move(1)),
        3 => (2usize..=9).prop_map(Step::Move),
        2 => (10usize..=700).prop_map(Step::Move),
    ];
    prop::collection::vec(step, 0..12).prop_map(|mut steps| {
        steps.push(Step::Move(1)); // at least one step that moves
        steps
    })
}

/// Reads `data` in the sizes its plan says, with interruptions; counts the calls.
struct Chunked<'a> {
    data: &'a [u8],
    plan: Vec<Step>,
    calls: usize,
}

impl<'a> Chunked<'a> {
    fn new(data: &'a [u8], plan: Vec<Step>) -> Chunked<'a> {
        Chunked {
            data,
            plan,
            calls: 0,
        }
    }
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let step = self.plan[self.calls % self.plan.len()];
        self.calls += 1;
        match step {
            Step::Interrupt => Err(ErrorKind::Interrupted.into()),
            Step::Move(max) => {
                let n = max.min(buf.len()).min(self.data.len());
                buf[..n].copy_from_slice(&self.data[..n]);
                self.data = &self.data[n..];
                Ok(n)
            }
        }
    }
}

/// Accepts the amounts its plan says, with interruptions, in `write` and `write_vectored`.
struct Partial {
    out: Vec<u8>,
    plan: Vec<Step>,
    calls: usize,
}

impl Partial {
    fn new(plan: Vec<Step>) -> Partial {
        Partial {
            out: Vec::new(),
            plan,
            calls: 0,
        }
    }

    fn step(&mut self) -> Step {
        let step = self.plan[self.calls % self.plan.len()];
        self.calls += 1;
        step
    }
}

impl Write for Partial {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let Step::Move(mut max) = self.step() else {
            return Err(ErrorKind::Interrupted.into());
        };
        let mut n = 0;
        for buf in bufs {
            let take = max.min(buf.len());
            self.out.extend_from_slice(&buf[..take]);
            n += take;
            max -= take;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Records the bytes of every call; accepts everything, vectored or not.
#[derive(Default)]
struct Recording {
    calls: Vec<Vec<u8>>,
    vectored: bool,
}

impl Write for Recording {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.calls.push(buf.to_vec());
        Ok(buf.len())
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if !self.vectored {
            // What `Write`'s default does: the first non-empty buffer only.
            let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| b);
            return self.write(first);
        }
        self.calls
            .push(bufs.iter().flat_map(|b| b.iter().copied()).collect());
        Ok(bufs.iter().map(|b| b.len()).sum())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Serves `data`, then panics if read again: proves a function stops reading where it must.
struct Strict<'a> {
    data: &'a [u8],
}

impl Read for Strict<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        assert!(
            !self.data.is_empty(),
            "read past the bytes it should have stopped at"
        );
        let n = buf.len().min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

// ---------------------------------------------------------------------------------------------
// The naive reference: byte arithmetic, no shared code with the crate.

/// A prefix format, as the tests see it.
#[derive(Debug, Clone, Copy)]
struct Shape {
    width: usize,
    little: bool,
    signed: bool,
}

const SHAPES: [Shape; 16] = {
    let mut shapes = [Shape {
        width: 1,
        little: false,
        signed: false,
    }; 16];
    let widths = [1, 2, 4, 8];
    let mut i = 0;
    while i < 16 {
        shapes[i] = Shape {
            width: widths[i / 4],
            little: i % 2 == 1,
            signed: (i / 2) % 2 == 1,
        };
        i += 1;
    }
    shapes
};

fn shape() -> impl Strategy<Value = Shape> {
    (0..SHAPES.len()).prop_map(|i| SHAPES[i])
}

impl Shape {
    fn codec(self, max: usize) -> Codec {
        let mut codec = Codec::new().prefix_len(self.width).max_frame_len(max);
        if self.little {
            codec = codec.little_endian();
        }
        if self.signed {
            codec = codec.signed();
        }
        codec
    }

    /// The largest length the prefix holds.
    fn prefix_max(self) -> u128 {
        let bits = 8 * self.width as u32 - u32::from(self.signed);
        (1u128 << bits) - 1
    }

    fn prefix(self, len: u64) -> Vec<u8> {
        let mut bytes: Vec<u8> = (0..self.width)
            .rev()
            .map(|i| (len >> (8 * i)) as u8)
            .collect();
        if self.little {
            bytes.reverse();
        }
        bytes
    }

    fn frame(self, payload: &[u8]) -> Vec<u8> {
        let mut frame = self.prefix(payload.len() as u64);
        frame.extend_from_slice(payload);
        frame
    }

    fn decode_len(self, prefix: &[u8]) -> i128 {
        let mut bytes = prefix.to_vec();
        if self.little {
            bytes.reverse();
        }
        let mut value = bytes.iter().fold(0i128, |v, &b| v * 256 + i128::from(b));
        if self.signed && bytes[0] >= 0x80 {
            value -= 1i128 << (8 * self.width);
        }
        value
    }
}

/// What happens as frames are read, until the end or an error.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Frame(Vec<u8>),
    End,
    Eof,
    TooLarge(u64),
    Negative(i64),
}

fn reference(shape: Shape, max: usize, mut data: &[u8]) -> Vec<Event> {
    let mut events = Vec::new();
    loop {
        if data.is_empty() {
            events.push(Event::End);
            return events;
        }
        if data.len() < shape.width {
            events.push(Event::Eof);
            return events;
        }
        let len = shape.decode_len(&data[..shape.width]);
        data = &data[shape.width..];
        if len < 0 {
            events.push(Event::Negative(len as i64));
            return events;
        }
        if len > max as i128 {
            events.push(Event::TooLarge(len as u64));
            return events;
        }
        let len = len as usize;
        if data.len() < len {
            events.push(Event::Eof);
            return events;
        }
        events.push(Event::Frame(data[..len].to_vec()));
        data = &data[len..];
    }
}

fn classify(err: &io::Error) -> Event {
    match FrameError::from_io(err) {
        Some(e) if e.is_too_large() => Event::TooLarge(e.declared_len().unwrap()),
        Some(e) if e.is_negative() => {
            let msg = e.to_string();
            Event::Negative(msg.rsplit(' ').next().unwrap().parse().unwrap())
        }
        Some(e) => panic!("unexpected frame error {e}"),
        None if err.kind() == ErrorKind::UnexpectedEof => Event::Eof,
        None => panic!("unexpected error {err}"),
    }
}

/// Reads frames with `read_frame_into` and one reused buffer, until the end or an error.
fn events(codec: Codec, r: &mut impl Read) -> Vec<Event> {
    let mut events = Vec::new();
    let mut buf = vec![0xAA; 3]; // stale contents must not leak into a frame
    loop {
        match codec.read_frame_into(r, &mut buf) {
            Ok(true) => events.push(Event::Frame(buf.clone())),
            Ok(false) => {
                assert!(buf.is_empty());
                events.push(Event::End);
                return events;
            }
            Err(e) => {
                events.push(classify(&e));
                return events;
            }
        }
    }
}

fn payloads(max_len: usize) -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..=max_len), 0..8)
}

// ---------------------------------------------------------------------------------------------
// Properties.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Well-formed streams, cut anywhere: the reader sees what the reference sees.
    #[test]
    fn reader_matches_reference_on_cut_streams(
        shape in shape(),
        frames in payloads(300),
        cut in any::<prop::sample::Index>(),
        plan in plan(),
    ) {
        let max = frames.iter().map(Vec::len).max().unwrap_or(0).min(shape.prefix_max() as usize);
        let frames: Vec<Vec<u8>> = frames.into_iter().map(|mut f| { f.truncate(max); f }).collect();
        let wire: Vec<u8> = frames.iter().flat_map(|f| shape.frame(f)).collect();
        let wire = &wire[..cut.index(wire.len() + 1)];
        let expected = reference(shape, max, wire);
        let got = events(shape.codec(max), &mut Chunked::new(wire, plan));
        prop_assert_eq!(got, expected);
    }

    /// Arbitrary bytes, small limits: the same frames, ends and errors as the reference.
    #[test]
    fn reader_matches_reference_on_arbitrary_bytes(
        shape in shape(),
        max in 0usize..400,
        wire in prop::collection::vec(any::<u8>(), 0..600),
        plan in plan(),
    ) {
        let expected = reference(shape, max, &wire);
        let got = events(shape.codec(max), &mut Chunked::new(&wire, plan));
        prop_assert_eq!(got, expected);
    }

    /// Whole streams through `FrameReader`, with the default limit.
    #[test]
    fn frame_reader_yields_every_frame(
        shape in shape(),
        frames in payloads(130),
        plan in plan(),
    ) {
        let limit = shape.prefix_max() as usize;
        let frames: Vec<Vec<u8>> = frames.into_iter().map(|mut f| { f.truncate(limit); f }).collect();
        let wire: Vec<u8> = frames.iter().flat_map(|f| shape.frame(f)).collect();
        let reader = FrameReader::with_codec(Chunked::new(&wire, plan), shape.codec(1 << 20));
        let got: Vec<Vec<u8>> = reader.collect::<io::Result<_>>().unwrap();
        prop_assert_eq!(got, frames);
    }

    /// Writing through partial, interrupted writes gives the reference bytes, the same as
    /// `encode`, and reading them back gives the payloads.
    #[test]
    fn round_trip_through_partial_writes(
        shape in shape(),
        frames in payloads(1000),
        write_plan in plan(),
        read_plan in plan(),
    ) {
        let limit = shape.prefix_max() as usize;
        let frames: Vec<Vec<u8>> = frames.into_iter().map(|mut f| { f.truncate(limit); f }).collect();
        let codec = shape.codec(4096);
        let mut w = Partial::new(write_plan);
        for frame in &frames {
            codec.write_frame(&mut w, frame).unwrap();
        }
        let expected: Vec<u8> = frames.iter().flat_map(|f| shape.frame(f)).collect();
        prop_assert_eq!(&w.out, &expected);
        let encoded: Vec<u8> = frames.iter().flat_map(|f| codec.encode(f).unwrap()).collect();
        prop_assert_eq!(&encoded, &expected);

        let mut r = Chunked::new(&w.out, read_plan);
        for frame in &frames {
            prop_assert_eq!(codec.read_frame(&mut r).unwrap(), Some(frame.clone()));
        }
        prop_assert_eq!(codec.read_frame(&mut r).unwrap(), None);
    }
}

// ---------------------------------------------------------------------------------------------
// Boundaries.

#[test]
fn zero_length_frame_is_a_frame_for_every_shape() {
    for shape in SHAPES {
        let codec = shape.codec(10);
        let mut wire = Vec::new();
        codec.write_frame(&mut wire, b"").unwrap();
        assert_eq!(wire, vec![0; shape.width], "{shape:?}");
        let mut r = &wire[..];
        assert_eq!(codec.read_frame(&mut r).unwrap(), Some(vec![]), "{shape:?}");
        assert_eq!(codec.read_frame(&mut r).unwrap(), None, "{shape:?}");
    }
}

#[test]
fn exactly_max_is_read_and_written() {
    for shape in SHAPES {
        let codec = shape.codec(100);
        let payload = vec![7; 100];
        let wire = codec.encode(&payload).unwrap();
        assert_eq!(wire, shape.frame(&payload), "{shape:?}");
        assert_eq!(
            codec.read_frame(&mut &wire[..]).unwrap(),
            Some(payload),
            "{shape:?}"
        );
    }
}

#[test]
fn max_plus_one_is_refused_without_reading_the_payload() {
    for shape in SHAPES {
        let codec = shape.codec(100);
        let prefix = shape.prefix(101);
        // The payload is there, but the reader must not touch it.
        let err = codec.read_frame(&mut Strict { data: &prefix }).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData, "{shape:?}");
        let frame_err = FrameError::from_io(&err).unwrap();
        assert!(frame_err.is_too_large(), "{shape:?}");
        assert!(!frame_err.is_negative(), "{shape:?}");
        assert_eq!(frame_err.declared_len(), Some(101), "{shape:?}");
        assert_eq!(frame_err.limit(), Some(100), "{shape:?}");
        assert_eq!(
            err.to_string(),
            "frame of 101 bytes exceeds the limit of 100"
        );
    }
}

#[test]
fn declared_4_gib_fails_at_once() {
    // Only the prefix is available: any attempt to read (or wait for) the payload panics.
    let err = framing::read_frame(&mut Strict {
        data: &[0xff, 0xff, 0xff, 0xff],
    })
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData);
    let frame_err = FrameError::from_io(&err).unwrap();
    assert!(frame_err.is_too_large());
    assert_eq!(frame_err.declared_len(), Some(u64::from(u32::MAX)));
    assert_eq!(frame_err.limit(), Some(8 * 1024 * 1024));
    assert_eq!(
        err.to_string(),
        "frame of 4294967295 bytes exceeds the limit of 8388608"
    );
}

#[test]
fn default_limit_is_8_mib() {
    assert_eq!(framing::DEFAULT_MAX_FRAME_LEN, 8 * 1024 * 1024);
    assert_eq!(Codec::new().get_max_frame_len(), 8 * 1024 * 1024);
    assert_eq!(Codec::default(), Codec::new());
    let prefix = (8u64 * 1024 * 1024 + 1).to_be_bytes();
    let err = Codec::new()
        .prefix_len(8)
        .read_frame(&mut Strict { data: &prefix })
        .unwrap_err();
    assert!(FrameError::from_io(&err).unwrap().is_too_large());
}

#[test]
fn buffer_grows_with_the_bytes_that_arrive_not_the_declared_length() {
    // 8 MiB declared (within the limit), 100 bytes sent, then EOF.
    let mut wire = (8u32 * 1024 * 1024).to_be_bytes().to_vec();
    wire.extend_from_slice(&[1; 100]);
    let mut buf = Vec::new();
    let err = Codec::new()
        .read_frame_into(&mut &wire[..], &mut buf)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnexpectedEof);
    assert_eq!(buf, [1; 100]);
    assert!(buf.capacity() <= 64 * 1024, "capacity {}", buf.capacity());

    // 300 KiB of an 8 MiB frame: the buffer stays near what arrived.
    let mut wire = (8u32 * 1024 * 1024).to_be_bytes().to_vec();
    wire.extend_from_slice(&vec![2; 300 * 1024]);
    let err = Codec::new()
        .read_frame_into(&mut &wire[..], &mut buf)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnexpectedEof);
    assert_eq!(buf.len(), 300 * 1024);
    assert!(buf.capacity() <= 1024 * 1024, "capacity {}", buf.capacity());

    // Without a limit, a 16 EiB declaration costs one chunk.
    let mut wire = (u64::MAX - 1).to_be_bytes().to_vec();
    wire.extend_from_slice(&[3; 10]);
    let codec = Codec::new().prefix_len(8).max_frame_len(usize::MAX);
    let err = codec.read_frame_into(&mut &wire[..], &mut buf).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnexpectedEof);
    assert_eq!(buf, [3; 10]);
}

#[test]
fn eof_inside_a_prefix_is_unexpected() {
    for shape in SHAPES.iter().filter(|s| s.width > 1) {
        let codec = shape.codec(100);
        for cut in 1..shape.width {
            let mut wire = shape.frame(b"ok");
            wire.extend_from_slice(&shape.prefix(5)[..cut]);
            let mut r = &wire[..];
            assert_eq!(codec.read_frame(&mut r).unwrap(), Some(b"ok".to_vec()));
            let err = codec.read_frame(&mut r).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::UnexpectedEof, "{shape:?} cut {cut}");
            assert!(FrameError::from_io(&err).is_none());
        }
    }
}

#[test]
fn eof_inside_a_payload_is_unexpected() {
    // Bounded: a regression that loops on end of stream fails instead of hanging.
    util::within(util::TIMEOUT, || {
        for shape in SHAPES {
            let codec = shape.codec(100);
            let wire = shape.frame(b"hello");
            for cut in shape.width..wire.len() {
                let err = codec.read_frame(&mut &wire[..cut]).unwrap_err();
                assert_eq!(err.kind(), ErrorKind::UnexpectedEof, "{shape:?} cut {cut}");
            }
        }
        let err = framing::read_frame(&mut &b"\0\0\0\x0aabc"[..]).unwrap_err();
        assert_eq!(err.to_string(), "stream ended 3 bytes into a 10-byte frame");
    });
}

#[test]
fn interrupted_reads_and_writes_are_retried() {
    let wire = Codec::new().encode(b"abc").unwrap();
    let plan = vec![
        Step::Interrupt,
        Step::Move(1),
        Step::Interrupt,
        Step::Move(2),
    ];
    let mut r = Chunked::new(&wire, plan.clone());
    assert_eq!(framing::read_frame(&mut r).unwrap(), Some(b"abc".to_vec()));
    assert_eq!(framing::read_frame(&mut r).unwrap(), None);

    let mut w = Partial::new(plan);
    framing::write_frame(&mut w, &[9; 1000]).unwrap();
    assert_eq!(w.out, Codec::new().encode(&[9; 1000]).unwrap());
}

#[test]
fn negative_lengths_are_refused_in_signed_mode() {
    for shape in SHAPES.iter().filter(|s| s.signed) {
        let codec = shape.codec(usize::MAX);
        let most_negative = i64::MIN >> (64 - 8 * shape.width);
        let mut lowest = vec![0; shape.width];
        lowest[if shape.little { shape.width - 1 } else { 0 }] = 0x80;
        for (value, prefix) in [(-1, vec![0xff; shape.width]), (most_negative, lowest)] {
            let err = codec.read_frame(&mut Strict { data: &prefix }).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidData, "{shape:?}");
            let frame_err = FrameError::from_io(&err).unwrap();
            assert!(frame_err.is_negative(), "{shape:?}");
            assert!(!frame_err.is_too_large(), "{shape:?}");
            assert_eq!(frame_err.declared_len(), None);
            assert_eq!(err.to_string(), format!("negative frame length {value}"));
        }
    }
    // The same bytes unsigned are a large length, not a negative one.
    let err = Codec::new().read_frame(&mut &[0xff; 4][..]).unwrap_err();
    assert!(FrameError::from_io(&err).unwrap().is_too_large());
    // The largest positive signed length is a length.
    let codec = Codec::new().prefix_len(1).signed();
    let mut wire = vec![0x7f];
    wire.extend_from_slice(&[5; 127]);
    assert_eq!(
        codec.read_frame(&mut &wire[..]).unwrap(),
        Some(vec![5; 127])
    );
}

#[test]
fn writer_refuses_what_the_prefix_cannot_carry() {
    let cases = [
        (Codec::new().prefix_len(1), 255),
        (Codec::new().prefix_len(2), 65535),
        (Codec::new().prefix_len(1).signed(), 127),
        (Codec::new().prefix_len(2).signed().little_endian(), 32767),
        (Codec::new().max_frame_len(1000), 1000),
    ];
    for (codec, limit) in cases {
        assert_eq!(codec.get_max_frame_len(), limit, "{codec:?}");
        let mut wire = Vec::new();
        codec.write_frame(&mut wire, &vec![1; limit]).unwrap();
        assert_eq!(wire.len(), codec.encode(&vec![1; limit]).unwrap().len());

        let mut wire = Vec::new();
        let err = codec
            .write_frame(&mut wire, &vec![1; limit + 1])
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{codec:?}");
        let frame_err = FrameError::from_io(&err).unwrap();
        assert!(frame_err.is_too_large());
        assert_eq!(frame_err.declared_len(), Some(limit as u64 + 1));
        assert_eq!(frame_err.limit(), Some(limit as u64));
        assert!(wire.is_empty(), "nothing written for {codec:?}");
        assert!(codec
            .encode(&vec![1; limit + 1])
            .unwrap_err()
            .is_too_large());
    }
}

#[test]
#[should_panic(expected = "prefix length must be 1, 2, 4 or 8 bytes")]
fn prefix_of_three_bytes_panics() {
    let _ = Codec::new().prefix_len(3);
}

#[test]
fn frame_leaves_in_one_write() {
    for len in [0, 10, 600, 100_000] {
        let payload = vec![4; len];
        let frame = Codec::new().encode(&payload).unwrap();
        let mut w = Recording {
            vectored: true,
            ..Recording::default()
        };
        framing::write_frame(&mut w, &payload).unwrap();
        assert_eq!(w.calls.len(), 1, "vectored writer, {len} bytes");
        assert_eq!(w.calls[0], frame);

        // Without vectored writes, small frames still go in one call.
        let mut w = Recording::default();
        framing::write_frame(&mut w, &payload).unwrap();
        assert_eq!(w.calls.concat(), frame);
        if len <= 500 {
            assert_eq!(w.calls.len(), 1, "plain writer, {len} bytes");
        }
    }
}

#[test]
fn a_writer_that_accepts_nothing_is_an_error_not_a_hang() {
    // Bounded: a regression that loops on end of stream fails instead of hanging.
    util::within(util::TIMEOUT, || {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Ok(0)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        for len in [10, 100_000] {
            let err = framing::write_frame(&mut Full, &vec![0; len]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::WriteZero);
        }
    });
}

#[test]
fn frame_error_converts_to_invalid_data() {
    let err = Codec::new().max_frame_len(2).encode(b"abc").unwrap_err();
    assert_eq!(err.to_string(), "frame of 3 bytes exceeds the limit of 2");
    let io_err: io::Error = err.clone().into();
    assert_eq!(io_err.kind(), ErrorKind::InvalidData);
    assert_eq!(FrameError::from_io(&io_err), Some(&err));
    assert_eq!(FrameError::from_io(&io::Error::other("x")), None);
    assert_eq!(FrameError::from_io(&ErrorKind::InvalidData.into()), None);
}

#[test]
fn frame_reader_stops_after_an_error() {
    let mut wire = Codec::new().encode(b"one").unwrap();
    wire.extend_from_slice(&[0xff; 4]); // too large
    wire.extend_from_slice(&Codec::new().encode(b"two").unwrap());
    let mut frames = FrameReader::new(&wire[..]);
    assert_eq!(frames.next().unwrap().unwrap(), b"one");
    assert!(frames.next().unwrap().is_err());
    assert!(frames.next().is_none());
    assert!(frames.next().is_none());
}

#[test]
fn frame_writer_writes_what_encode_gives() {
    let codec = Codec::new().prefix_len(2).little_endian();
    let mut w = FrameWriter::with_codec(Vec::new(), codec);
    w.write_frame(b"ab").unwrap();
    w.write_frame(b"").unwrap();
    w.flush().unwrap();
    assert_eq!(w.codec(), codec);
    let mut expected = codec.encode(b"ab").unwrap();
    expected.extend(codec.encode(b"").unwrap());
    assert_eq!(w.into_inner(), expected);

    let mut r = FrameReader::with_codec(&expected[..], codec);
    let mut buf = Vec::new();
    assert!(r.read_frame_into(&mut buf).unwrap());
    assert_eq!(buf, b"ab");
    assert_eq!(r.read_frame().unwrap(), Some(vec![]));
    assert_eq!(r.read_frame().unwrap(), None);
}

/// The table in `Codec`'s docs: each Python format and its codec give the same bytes.
#[test]
fn prefixes_match_python_struct() {
    let mut cases = vec![
        ("!B", Codec::new().prefix_len(1), 200),
        (">B", Codec::new().prefix_len(1), 7),
        ("!H", Codec::new().prefix_len(2), 0x1234),
        ("!I", Codec::new(), 0x01_0203),
        (">I", Codec::new(), 70_000),
        ("!Q", Codec::new().prefix_len(8), 0x01_0203),
        ("<H", Codec::new().prefix_len(2).little_endian(), 0x1234),
        ("<I", Codec::new().little_endian(), 0x01_0203),
        ("<Q", Codec::new().prefix_len(8).little_endian(), 0x01_0203),
        ("!i", Codec::new().signed(), 0x01_0203),
        ("<i", Codec::new().signed_i32_le(), 0x01_0203),
        ("!q", Codec::new().prefix_len(8).signed(), 0x01_0203),
    ];
    if cfg!(target_endian = "little") {
        // Native order and size, as the tutorials use them.
        cases.push(("i", Codec::new().signed_i32_le(), 0x01_0203));
        cases.push(("I", Codec::new().little_endian(), 0x01_0203));
        cases.push(("H", Codec::new().prefix_len(2).little_endian(), 0x1234));
    }
    let args: Vec<String> = cases.iter().map(|(f, _, n)| format!("{f}={n}")).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = util::python(
        "import struct, sys\n\
         for arg in sys.argv[1:]:\n\
         \x20   fmt, n = arg.split('=')\n\
         \x20   print(struct.pack(fmt, int(n)).hex())\n",
        &args,
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), cases.len());
    for ((format, codec, n), python) in cases.iter().zip(lines) {
        let frame = codec.encode(&vec![0; *n]).unwrap();
        let prefix = &frame[..frame.len() - n];
        assert_eq!(hex(prefix), python, "format {format:?}");
        // And the reader takes Python's prefix for the same length.
        let err = codec
            .max_frame_len(0)
            .read_frame(&mut Strict { data: prefix })
            .unwrap_err();
        let declared = FrameError::from_io(&err).unwrap().declared_len();
        assert_eq!(declared, Some(*n as u64), "format {format:?}");
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// Messages: JSON header + streamed body.

#[cfg(feature = "json")]
mod messages {
    use super::*;
    use serde::{Deserialize, Serialize};
    use serde_json::{json, Value};
    use socketserver::framing::{Body, MessageCodec, DEFAULT_MAX_HEADER_LEN};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Put {
        name: String,
        offset: u64,
    }

    fn header_frame(json: &[u8]) -> Vec<u8> {
        let mut frame = (json.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(json);
        frame
    }

    #[track_caller]
    fn read_err(wire: &[u8]) -> io::Error {
        match framing::read_message::<Value, _>(&mut &wire[..]) {
            Ok(_) => panic!("read_message accepted {:?}", String::from_utf8_lossy(wire)),
            Err(e) => e,
        }
    }

    #[test]
    fn typed_header_and_body_round_trip() {
        let put = Put {
            name: "a.txt".into(),
            offset: 3,
        };
        let body: Vec<u8> = (0..=255u8).cycle().take(200_000).collect();
        let mut wire = Vec::new();
        framing::write_message(&mut wire, &put, body.len() as u64, &mut &body[..]).unwrap();
        framing::write_message(&mut wire, &json!({"cmd": "bye"}), 0, &mut io::empty()).unwrap();

        let mut r = &wire[..];
        let (header, mut got_body) = framing::read_message::<Put, _>(&mut r).unwrap().unwrap();
        assert_eq!(header, put);
        assert_eq!(got_body.len(), 200_000);
        let mut got = Vec::new();
        assert_eq!(got_body.copy_to(&mut got).unwrap(), 200_000);
        assert_eq!(got, body);
        assert_eq!(got_body.remaining(), 0);

        let (header, body) = framing::read_message::<Value, _>(&mut r).unwrap().unwrap();
        assert_eq!(header, json!({"cmd": "bye", "body_size": 0}));
        assert!(body.is_empty());
        assert!(framing::read_message::<Value, _>(&mut r).unwrap().is_none());
    }

    #[test]
    fn body_is_streamed_in_pieces_and_never_overread() {
        let mut wire = Vec::new();
        let body = vec![b'x'; 10_000];
        framing::write_message(&mut wire, &json!({"n": 1}), 10_000, &mut &body[..]).unwrap();
        framing::write_message(&mut wire, &json!({"n": 2}), 3, &mut &b"end"[..]).unwrap();

        let plan = vec![
            Step::Move(1),
            Step::Interrupt,
            Step::Move(7),
            Step::Move(300),
        ];
        let mut r = Chunked::new(&wire, plan);
        let (header, mut body) = framing::read_message::<Value, _>(&mut r).unwrap().unwrap();
        assert_eq!(header["n"], 1);
        let mut got = Vec::new();
        let mut piece = [0; 100];
        loop {
            let n = match body.read(&mut piece) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => panic!("{e}"),
            };
            if n == 0 {
                break;
            }
            got.extend_from_slice(&piece[..n]);
        }
        assert_eq!(got, vec![b'x'; 10_000]);
        assert_eq!(
            body.read(&mut piece).unwrap(),
            0,
            "reads past the body give 0"
        );

        let (header, mut body) = framing::read_message::<Value, _>(&mut r).unwrap().unwrap();
        assert_eq!(header["n"], 2);
        let mut text = String::new();
        body.read_to_string(&mut text).unwrap();
        assert_eq!(text, "end");
    }

    #[test]
    fn a_huge_declared_body_is_not_loaded() {
        // 10 GiB declared, 5 bytes present: the header reads at once, the body on demand.
        let mut wire = header_frame(br#"{"body_size":10737418240}"#);
        wire.extend_from_slice(b"12345");
        let mut r = &wire[..];
        let (_, mut body) = framing::read_message::<Value, _>(&mut r).unwrap().unwrap();
        assert_eq!(body.len(), 10 << 30);
        let mut got = [0; 5];
        body.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"12345");
        let err = body.read(&mut [0; 10]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnexpectedEof);
    }

    #[test]
    fn writing_a_large_body_goes_64_kib_at_a_time() {
        let len = 3 * 1024 * 1024 + 17;
        let mut w = Recording {
            vectored: true,
            ..Recording::default()
        };
        framing::write_message(&mut w, &json!({}), len, &mut io::repeat(5).take(len)).unwrap();
        let header = header_frame(format!(r#"{{"body_size":{len}}}"#).as_bytes());
        // Header frame and the first piece of the body in one write.
        assert_eq!(w.calls[0].len(), header.len() + 64 * 1024);
        assert!(w.calls[0].starts_with(&header));
        assert!(w.calls.iter().skip(1).all(|c| c.len() <= 64 * 1024));
        let total: usize = w.calls.iter().map(Vec::len).sum();
        assert_eq!(total as u64, header.len() as u64 + len);
    }

    #[test]
    fn writer_checks_the_body_reader() {
        // Bounded: a regression that loops on end of stream fails instead of hanging.
        util::within(util::TIMEOUT, || {
            // Short and small: nothing is written.
            let mut wire = Vec::new();
            let err =
                framing::write_message(&mut wire, &json!({}), 10, &mut &b"abc"[..]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::UnexpectedEof);
            assert_eq!(err.to_string(), "body reader ended after 3 of 10 bytes");
            assert!(wire.is_empty());

            // Short after the first piece.
            let err = framing::write_message(
                &mut wire,
                &json!({}),
                100_000,
                &mut io::repeat(1).take(70_000),
            )
            .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::UnexpectedEof);
            assert_eq!(
                err.to_string(),
                "body reader ended after 70000 of 100000 bytes"
            );

            // Longer: only the declared bytes are taken.
            let mut wire = Vec::new();
            let mut source = &b"abcdef"[..];
            framing::write_message(&mut wire, &json!({}), 4, &mut source).unwrap();
            assert_eq!(source, b"ef");
            assert!(wire.ends_with(b"}abcd"));
        });
    }

    #[test]
    fn writer_refuses_bad_headers_and_writes_nothing() {
        let mut wire = Vec::new();
        for header in [json!([1, 2]), json!(3), json!("put"), json!(null)] {
            let err = framing::write_message(&mut wire, &header, 0, &mut io::empty()).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{header}");
            let err = framing::write_json_header(&mut wire, &header).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{header}");
        }
        let err =
            framing::write_message(&mut wire, &json!({"body_size": 3}), 4, &mut io::repeat(0))
                .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert_eq!(
            err.to_string(),
            "message header field \"body_size\" is 3 but the body is 4 bytes"
        );
        let big = json!({"pad": "x".repeat(DEFAULT_MAX_HEADER_LEN)});
        let err = framing::write_json_header(&mut wire, &big).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(FrameError::from_io(&err).unwrap().is_too_large());
        let err = framing::write_message(&mut wire, &big, 0, &mut io::empty()).unwrap_err();
        assert!(FrameError::from_io(&err).unwrap().is_too_large());
        assert!(wire.is_empty());

        // The same size, stated by the caller, is fine.
        framing::write_message(&mut wire, &json!({"body_size": 4}), 4, &mut io::repeat(0)).unwrap();
        assert_eq!(
            wire,
            [&header_frame(br#"{"body_size":4}"#)[..], &[0; 4]].concat()
        );
    }

    #[test]
    fn reader_refuses_bad_headers() {
        let cases: [(&[u8], &str); 9] = [
            (b"", "empty message header"),
            (b"\xff\xfe{}", "message header is not UTF-8"),
            (b"{\"a\":", "message header is not valid JSON"),
            (b"{} {}", "message header is not valid JSON"),
            (b"hello", "message header is not valid JSON"),
            (b"[1,2]", "message header is a JSON array, not an object"),
            (b"42", "message header is a JSON number, not an object"),
            (b"\"put\"", "message header is a JSON string, not an object"),
            (b"null", "message header is a JSON null, not an object"),
        ];
        for (json, msg) in cases {
            let frame = header_frame(json);
            let err = read_err(&frame);
            assert_eq!(err.kind(), ErrorKind::InvalidData, "{msg}");
            assert!(err.to_string().starts_with(msg), "{err} for {json:?}");
            let err = framing::read_json_header::<Value, _>(&mut &frame[..]).unwrap_err();
            assert!(err.to_string().starts_with(msg), "{err} for {json:?}");
        }
        for size in [r#""3""#, "-1", "1.5", "null"] {
            let err = read_err(&header_frame(
                format!(r#"{{"body_size":{size}}}"#).as_bytes(),
            ));
            assert_eq!(err.kind(), ErrorKind::InvalidData);
            assert!(err.to_string().contains("is not a byte count"), "{err}");
        }
        // A typed header that does not fit.
        let frame = header_frame(br#"{"name":"a"}"#);
        let err = framing::read_message::<Put, _>(&mut &frame[..]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert!(err.to_string().contains("missing field `offset`"), "{err}");
    }

    #[test]
    fn header_over_the_limit_is_refused_before_reading_it() {
        let mut prefix = (DEFAULT_MAX_HEADER_LEN as u32 + 1).to_be_bytes();
        let err = framing::read_json_header::<Value, _>(&mut Strict { data: &prefix }).unwrap_err();
        let frame_err = FrameError::from_io(&err).unwrap();
        assert!(frame_err.is_too_large());
        assert_eq!(frame_err.limit(), Some(64 * 1024));

        // Exactly the limit is a header.
        let pad = "x".repeat(DEFAULT_MAX_HEADER_LEN - r#"{"p":""}"#.len());
        let json = format!(r#"{{"p":"{pad}"}}"#);
        assert_eq!(json.len(), DEFAULT_MAX_HEADER_LEN);
        let header: Value = framing::read_json_header(&mut &header_frame(json.as_bytes())[..])
            .unwrap()
            .unwrap();
        assert_eq!(header["p"].as_str().unwrap().len(), pad.len());

        // A smaller limit of one's own.
        let codec = MessageCodec::new().max_header_len(10);
        prefix = 11u32.to_be_bytes();
        let err = codec
            .read_message::<Value, _>(&mut Strict { data: &prefix })
            .unwrap_err();
        assert_eq!(err.to_string(), "frame of 11 bytes exceeds the limit of 10");
        assert_eq!(MessageCodec::default(), MessageCodec::new());
    }

    #[test]
    fn eof_inside_a_message_is_unexpected() {
        // Bounded: a regression that loops on end of stream fails instead of hanging.
        util::within(util::TIMEOUT, || {
            let mut wire = Vec::new();
            framing::write_message(&mut wire, &json!({"a": 1}), 10, &mut &[7; 10][..]).unwrap();
            let header_len = wire.len() - 10;
            // In the header.
            for cut in 1..header_len {
                let err = read_err(&wire[..cut]);
                assert_eq!(err.kind(), ErrorKind::UnexpectedEof, "cut {cut}");
            }
            // In the body.
            for cut in header_len..wire.len() {
                let mut r = &wire[..cut];
                let (_, mut body) = framing::read_message::<Value, _>(&mut r).unwrap().unwrap();
                let err = body.copy_to(&mut Vec::new()).unwrap_err();
                assert_eq!(err.kind(), ErrorKind::UnexpectedEof, "cut {cut}");
                assert_eq!(
                    err.to_string(),
                    format!("stream ended after {} of 10 body bytes", cut - header_len)
                );
            }
        });
    }

    #[test]
    fn missing_body_size_means_no_body_and_skip_finds_the_next_message() {
        let mut wire = header_frame(br#"{"cmd":"ping"}"#);
        framing::write_message(&mut wire, &json!({"cmd": "put"}), 5, &mut &b"hello"[..]).unwrap();
        framing::write_message(&mut wire, &json!({"cmd": "quit"}), 0, &mut io::empty()).unwrap();
        let mut r = &wire[..];
        let (header, body) = framing::read_message::<Value, _>(&mut r).unwrap().unwrap();
        assert_eq!(header, json!({"cmd": "ping"}));
        assert_eq!(body.len(), 0);
        let (_, mut body) = framing::read_message::<Value, _>(&mut r).unwrap().unwrap();
        let mut first = [0; 2];
        body.read_exact(&mut first).unwrap();
        assert_eq!(body.skip().unwrap(), 3);
        let (header, _) = framing::read_message::<Value, _>(&mut r).unwrap().unwrap();
        assert_eq!(header["cmd"], "quit");
    }

    #[test]
    fn progress_counts_up_to_the_total() {
        let data = vec![1; 200_000];
        let mut r = &data[..];
        let mut body = Body::new(&mut r, 150_000);
        let mut head = [0; 1000];
        body.read_exact(&mut head).unwrap();
        let mut seen = Vec::new();
        let copied = body
            .copy_to_with_progress(&mut io::sink(), |done, total| seen.push((done, total)))
            .unwrap();
        assert_eq!(copied, 149_000);
        assert!(seen.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(seen.first().unwrap().0, 1000 + 64 * 1024);
        assert_eq!(seen.last(), Some(&(150_000, 150_000)));
        assert_eq!(r.len(), 50_000);
    }

    #[test]
    fn remote_command_layout_with_the_primitives() {
        #[derive(Serialize, Deserialize)]
        struct Output {
            exit_code: i32,
            stdout_size: u64,
            stderr_size: u64,
        }
        let mut wire = Vec::new();
        let head = Output {
            exit_code: 2,
            stdout_size: 3,
            stderr_size: 4,
        };
        framing::write_json_header(&mut wire, &head).unwrap();
        wire.extend_from_slice(b"outerr!");
        let mut r = &wire[..];
        let head: Output = framing::read_json_header(&mut r).unwrap().unwrap();
        let mut out = Vec::new();
        Body::new(&mut r, head.stdout_size)
            .read_to_end(&mut out)
            .unwrap();
        let mut err = Vec::new();
        Body::new(&mut r, head.stderr_size)
            .read_to_end(&mut err)
            .unwrap();
        assert_eq!(
            (head.exit_code, &out[..], &err[..]),
            (2, &b"out"[..], &b"err!"[..])
        );
        assert!(r.is_empty());
    }

    /// The tutorials' sender: `struct.pack('i', len(head))`, the JSON head, the file.
    #[test]
    fn reads_what_a_python_tutorial_client_sends() {
        let out = util::python(
            "import json, struct, sys\n\
             data = b'file contents'\n\
             head = json.dumps({'cmd': 'put', 'filename': 'a.txt', 'filesize': len(data)}).encode()\n\
             sys.stdout.write((struct.pack('i', len(head)) + head + data).hex())\n",
            &[],
        );
        let wire: Vec<u8> = (0..out.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&out[i..i + 2], 16).unwrap())
            .collect();
        let codec = MessageCodec::new()
            .prefix(Codec::new().signed_i32_le())
            .body_size_key("filesize");
        let mut r = &wire[..];
        let (header, mut body) = codec.read_message::<Value, _>(&mut r).unwrap().unwrap();
        assert_eq!(header["filename"], "a.txt");
        let mut data = Vec::new();
        body.read_to_end(&mut data).unwrap();
        assert_eq!(data, b"file contents");
    }

    /// The tutorials' receiver, reading what `write_message` sends.
    #[test]
    fn python_reads_what_write_message_sends() {
        let codec = MessageCodec::new().body_size_key("filesize");
        let mut wire = Vec::new();
        codec
            .write_message(
                &mut wire,
                &json!({"filename": "b.bin"}),
                4,
                &mut &b"\x00\x01\x02\x03"[..],
            )
            .unwrap();
        let out = util::python(
            "import json, struct, sys\n\
             data = bytes.fromhex(sys.argv[1])\n\
             (n,) = struct.unpack('!I', data[:4])\n\
             head = json.loads(data[4:4 + n].decode())\n\
             body = data[4 + n:]\n\
             assert len(body) == head['filesize'], (len(body), head)\n\
             print(head['filename'], body.hex())\n",
            &[&hex(&wire)],
        );
        assert_eq!(out.trim(), "b.bin 00010203");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Messages with random names and bodies, read through random chunks.
        #[test]
        fn messages_round_trip(
            messages in prop::collection::vec(
                ("[a-z\\u{e9}\\u{1F600}\"\\\\]{0,20}", prop::collection::vec(any::<u8>(), 0..3000)),
                0..5,
            ),
            plan in plan(),
        ) {
            let mut wire = Vec::new();
            for (name, body) in &messages {
                framing::write_message(&mut wire, &json!({"name": name}), body.len() as u64, &mut &body[..]).unwrap();
            }
            let mut r = Chunked::new(&wire, plan);
            for (name, body) in &messages {
                let (header, mut got) = framing::read_message::<Value, _>(&mut r).unwrap().unwrap();
                prop_assert_eq!(header["name"].as_str(), Some(name.as_str()));
                let mut data = Vec::new();
                got.copy_to(&mut data).unwrap();
                prop_assert_eq!(&data, body);
            }
            prop_assert!(framing::read_message::<Value, _>(&mut r).unwrap().is_none());
        }
    }
}
