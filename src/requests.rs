//! The request connection's protocol, driven from the JavaScript thread.
//!
//! Node owns the command socket: libuv reads and writes it on the JavaScript thread, as
//! for any Node client. This module is that connection's protocol without the I/O
//! ("sans-io"): JavaScript hands over the calls of one tick and writes the bytes it gets
//! back; it feeds in what the socket read and settles the calls answered. No thread is
//! woken per call: on 2 cores shared with Redis, the two wake-ups per call of a tokio
//! request path cost more than all the work they carried (see README, Benchmarks).

use std::collections::VecDeque;
use std::sync::Arc;

use redis::{ConnectionInfo, Value};

use crate::commands::{decode_replies, encode_call, first_error, Commands, ScanJob, Shape};
use crate::delivery::{CompletionBatch, Reply};

/// Call id of the connection handshake (AUTH, SELECT); JavaScript never uses 0.
pub const HANDSHAKE_ID: u32 = 0;

/// What a written command group waits for.
enum Expect {
    Handshake,
    Call(Shape, Option<ScanJob>),
}

/// A written call waiting for its `count` replies.
struct Awaiting {
    id: u32,
    expect: Expect,
    count: usize,
    values: Vec<Value>,
}

/// The string arguments of the batch being encoded, as UTF-8 in one reused buffer, so
/// encoding a batch allocates nothing once the buffers have grown.
#[derive(Default)]
pub struct Args {
    bytes: Vec<u8>,
    spans: Vec<(usize, usize)>,
}

impl Args {
    /// Appends one argument that `write` puts into at most `max` bytes of `ptr`,
    /// returning how many it wrote.
    ///
    /// # Safety
    /// `write` must initialise the bytes it reports, and no more than `max`.
    pub unsafe fn push_with<E>(
        &mut self,
        max: usize,
        write: impl FnOnce(*mut u8, usize) -> Result<usize, E>,
    ) -> Result<(), E> {
        self.bytes.reserve(max);
        let start = self.bytes.len();
        let written = write(self.bytes.as_mut_ptr().add(start), max)?;
        debug_assert!(written <= max);
        self.bytes.set_len(start + written.min(max));
        self.spans.push((start, self.bytes.len()));
        Ok(())
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.spans.clear();
    }
}

/// One command connection's protocol state.
pub struct RequestProtocol {
    commands: Arc<Commands>,
    handshake: Vec<u8>,
    handshake_count: usize,
    awaiting: VecDeque<Awaiting>,
    /// Bytes read but not yet a whole reply.
    unread: Vec<u8>,
    /// The batch being encoded: its arguments in, its commands out.
    pub args: Args,
    out: Resp,
}

impl RequestProtocol {
    /// `commands` runs the SCAN follow-ups of upstream-compatible mode and answers calls
    /// that need no reply from this socket.
    pub fn new(info: &ConnectionInfo, commands: Arc<Commands>) -> Self {
        let (handshake, handshake_count) = handshake_commands(info, true);
        RequestProtocol {
            commands,
            handshake,
            handshake_count,
            awaiting: VecDeque::new(),
            unread: Vec::new(),
            args: Args::default(),
            out: Resp::default(),
        }
    }

    /// The socket broke: forgets everything in flight and returns those call ids.
    pub fn abandon(&mut self) -> Vec<u32> {
        self.unread.clear();
        self.awaiting
            .drain(..)
            .map(|a| a.id)
            .filter(|&id| id != HANDSHAKE_ID)
            .collect()
    }

    /// The handshake to write first on a new socket, if one is needed.
    pub fn handshake(&mut self) -> Option<Vec<u8>> {
        if self.handshake_count == 0 {
            return None;
        }
        self.awaiting.push_back(Awaiting {
            id: HANDSHAKE_ID,
            expect: Expect::Handshake,
            count: self.handshake_count,
            values: Vec::with_capacity(self.handshake_count),
        });
        Some(self.handshake.clone())
    }

    /// Encodes `calls` (`[id, code, argCount]` triples over the arguments in
    /// [`Self::args`]) as one pipeline and remembers what each waits for. Returns the
    /// encoded bytes, valid until the next call.
    pub fn encode(&mut self, calls: &[u32]) -> &[u8] {
        let RequestProtocol {
            commands,
            awaiting,
            args,
            out,
            ..
        } = self;
        out.0.clear();
        let keys = commands.keys();
        let options = commands.options();
        let mut now = CompletionBatch::default();
        let mut words: Vec<&str> = Vec::with_capacity(8);
        let mut spans = args.spans.iter();
        for call in calls.chunks_exact(3) {
            let (id, code, argc) = (call[0], call[1], call[2] as usize);
            words.clear();
            for &(start, end) in spans.by_ref().take(argc) {
                // V8 wrote these bytes as UTF-8; checked rather than trusted.
                words.push(std::str::from_utf8(&args.bytes[start..end]).unwrap_or("\u{fffd}"));
            }
            let encoded = match (words.len() == argc)
                .then(|| encode_call(code, &words, keys, options, out))
                .flatten()
            {
                Some(encoded) => encoded,
                None => {
                    now.push(id, Err("internal error: malformed call".into()));
                    continue;
                }
            };
            let expect = Expect::Call(encoded.shape, encoded.scan);
            if encoded.count == 0 {
                // Nothing to wait for on this socket (an upstream-compatible broadcast).
                finish(commands, id, expect, Vec::new(), &mut now);
                continue;
            }
            awaiting.push_back(Awaiting {
                id,
                expect,
                count: encoded.count,
                values: Vec::with_capacity(encoded.count),
            });
        }
        args.clear();
        // Rare: answered through the tokio side's callback, after this tick.
        commands.completions().send(now);
        &out.0
    }

    /// The bytes of the last [`Self::encode`].
    pub fn encoded(&self) -> &[u8] {
        &self.out.0
    }

    /// Consumes bytes read from the socket and answers every call they complete.
    pub fn decode(&mut self, chunk: &[u8], answers: &mut CompletionBatch) -> Result<(), String> {
        // Parse straight from the chunk unless a partial reply is waiting in front of it.
        let mut owned = std::mem::take(&mut self.unread);
        let from_chunk = owned.is_empty();
        let bytes: &[u8] = if from_chunk {
            chunk
        } else {
            owned.extend_from_slice(chunk);
            &owned
        };
        let mut pos = 0;
        while let Some((value, next)) = parse(bytes, pos, 0)? {
            pos = next;
            let Some(head) = self.awaiting.front_mut() else {
                return Err("Redis sent a reply nobody asked for".into());
            };
            head.values.push(value);
            if head.values.len() == head.count {
                let done = self.awaiting.pop_front().expect("head exists");
                finish(&self.commands, done.id, done.expect, done.values, answers);
            }
        }
        // Keep the partial reply, in the buffer it already has when there is one.
        if from_chunk {
            owned.extend_from_slice(&chunk[pos..]);
        } else {
            owned.drain(..pos);
        }
        self.unread = owned;
        Ok(())
    }

    /// Whether every written call has been answered.
    pub fn is_idle(&self) -> bool {
        self.awaiting.is_empty()
    }
}

fn finish(
    commands: &Arc<Commands>,
    id: u32,
    expect: Expect,
    values: Vec<Value>,
    answers: &mut CompletionBatch,
) {
    match expect {
        Expect::Handshake => {
            let outcome = first_error(&values).map(|()| Reply::Done).map_err(|e| {
                let reason = e.trim_start_matches("Redis error: ");
                format!("Redis refused the connection ({reason})")
            });
            answers.push(HANDSHAKE_ID, outcome);
        }
        Expect::Call(shape, scan) => match (decode_replies(&shape, values), scan) {
            // Scans take many round trips: they run on the tokio side and answer later.
            (Ok(_), Some(job)) => commands.spawn_scan(id, job),
            (outcome, _) => answers.push(id, outcome),
        },
    }
}

/// The commands a new connection starts with (AUTH, and SELECT when asked and needed)
/// and how many replies they bring.
pub fn handshake_commands(info: &ConnectionInfo, select: bool) -> (Vec<u8>, usize) {
    let settings = info.redis_settings();
    let mut out = Resp::default();
    let mut count = 0;
    if let Some(password) = settings.password() {
        match settings.username() {
            Some(user) => out.command(&[b"AUTH", user.as_bytes(), password.as_bytes()]),
            None => out.command(&[b"AUTH", password.as_bytes()]),
        }
        count += 1;
    }
    if select && settings.db() != 0 {
        let db = settings.db().to_string();
        out.command(&[b"SELECT", db.as_bytes()]);
        count += 1;
    }
    (out.0, count)
}

/// Commands in RESP, written straight into one buffer.
#[derive(Default)]
pub struct Resp(pub(crate) Vec<u8>);

impl Resp {
    /// Appends one command given as its words.
    pub fn command(&mut self, words: &[&[u8]]) {
        let size: usize = words.iter().map(|w| w.len() + 16).sum();
        self.0.reserve(size + 16);
        self.header(b'*', words.len());
        for word in words {
            self.header(b'$', word.len());
            self.0.extend_from_slice(word);
            self.0.extend_from_slice(b"\r\n");
        }
    }

    fn header(&mut self, kind: u8, n: usize) {
        self.0.push(kind);
        self.0
            .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        self.0.extend_from_slice(b"\r\n");
    }

    #[cfg(test)]
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// Deepest nesting accepted in a reply (ours are at most two levels deep).
const MAX_DEPTH: usize = 8;

/// Parses the RESP value at `pos`; `Ok(None)` when `buf` does not hold all of it yet.
fn parse(buf: &[u8], pos: usize, depth: usize) -> Result<Option<(Value, usize)>, String> {
    let Some((kind, (start, end), next)) = read_line(buf, pos)? else {
        return Ok(None);
    };
    let text = &buf[start..end];
    let value = match kind {
        b'+' => match text {
            b"OK" => Value::Okay,
            _ => Value::SimpleString(String::from_utf8_lossy(text).into_owned()),
        },
        b'-' => redis::parse_redis_value(&buf[pos..next]).map_err(|_| protocol_error())?,
        b':' => Value::Int(number(text)?),
        b'_' => Value::Nil,
        b'#' => Value::Boolean(text == b"t"),
        b'$' => {
            return Ok(match read_bulk(buf, text, next)? {
                Bulk::Nil => Some((Value::Nil, next)),
                Bulk::Body((start, end), after) => {
                    Some((Value::BulkString(buf[start..end].to_vec()), after))
                }
                Bulk::Short(_) => None,
            });
        }
        b'*' | b'~' | b'%' => {
            let Ok(mut len) = usize::try_from(number(text)?) else {
                return Ok(Some((Value::Nil, next)));
            };
            if depth >= MAX_DEPTH {
                return Err(protocol_error());
            }
            if kind == b'%' {
                len *= 2;
            }
            let mut items = Vec::with_capacity(len.min(1024));
            let mut at = next;
            for _ in 0..len {
                let Some((item, after)) = parse(buf, at, depth + 1)? else {
                    return Ok(None);
                };
                items.push(item);
                at = after;
            }
            let value = match kind {
                b'~' => Value::Set(items),
                b'%' => {
                    let mut pairs = Vec::with_capacity(items.len() / 2);
                    let mut items = items.into_iter();
                    while let (Some(k), Some(v)) = (items.next(), items.next()) {
                        pairs.push((k, v));
                    }
                    Value::Map(pairs)
                }
                _ => Value::Array(items),
            };
            return Ok(Some((value, at)));
        }
        _ => return Err(protocol_error()),
    };
    Ok(Some((value, next)))
}

/// A byte range of a buffer being read.
pub type Span = (usize, usize);

/// One RESP line: its type byte, the range of its text, and where the next line starts.
pub type Line = (u8, Span, usize);

/// The RESP line at `pos`; `Ok(None)` while `buf` does not hold all of it.
pub fn read_line(buf: &[u8], pos: usize) -> Result<Option<Line>, String> {
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    let Some(end) = buf[pos..].iter().position(|&b| b == b'\n').map(|i| pos + i) else {
        return Ok(None);
    };
    if end < pos + 2 || buf[end - 1] != b'\r' {
        return Err(protocol_error());
    }
    Ok(Some((kind, (pos + 1, end - 1), end + 1)))
}

/// What follows a bulk string's `$` line.
pub enum Bulk {
    /// `$-1`: no body.
    Nil,
    /// The body's range, and where the next line starts.
    Body(Span, usize),
    /// Cut short: the buffer must reach this end.
    Short(usize),
}

/// The body of the bulk string whose `$` line has length text `len` and ends at `next`.
pub fn read_bulk(buf: &[u8], len: &[u8], next: usize) -> Result<Bulk, String> {
    let Ok(len) = usize::try_from(number(len)?) else {
        return Ok(Bulk::Nil);
    };
    let stop = next + len;
    if buf.len() < stop + 2 {
        return Ok(Bulk::Short(stop + 2));
    }
    if &buf[stop..stop + 2] != b"\r\n" {
        return Err(protocol_error());
    }
    Ok(Bulk::Body((next, stop), stop + 2))
}

pub fn number(text: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(protocol_error)
}

pub fn protocol_error() -> String {
    "Redis sent a reply that is not valid RESP".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(bytes: &[u8]) -> Vec<Value> {
        let mut out = Vec::new();
        let mut pos = 0;
        while let Some((v, next)) = parse(bytes, pos, 0).unwrap() {
            out.push(v);
            pos = next;
        }
        assert_eq!(pos, bytes.len());
        out
    }

    #[test]
    fn parses_the_replies_we_ask_for() {
        let replies = all(b"+OK\r\n$5\r\nhello\r\n$-1\r\n:42\r\n*2\r\n$1\r\na\r\n$0\r\n\r\n*0\r\n");
        assert_eq!(
            replies,
            vec![
                Value::Okay,
                Value::BulkString(b"hello".to_vec()),
                Value::Nil,
                Value::Int(42),
                Value::Array(vec![
                    Value::BulkString(b"a".to_vec()),
                    Value::BulkString(vec![])
                ]),
                Value::Array(vec![]),
            ]
        );
        assert!(matches!(
            all(b"-WRONGTYPE Operation against a key\r\n")[0],
            Value::ServerError(_)
        ));
    }

    #[test]
    fn waits_for_the_rest_of_a_split_reply() {
        let whole = b"*2\r\n$5\r\nhello\r\n$3\r\nbye\r\n";
        for cut in 0..whole.len() {
            assert_eq!(parse(&whole[..cut], 0, 0), Ok(None), "cut at {cut}");
        }
        assert!(parse(whole, 0, 0).unwrap().is_some());
    }

    #[test]
    fn writes_the_bytes_redis_rs_would() {
        let mut out = Resp::default();
        out.command(&[b"SET", b"k", "v\u{e4}lue".as_bytes()]);
        out.command(&[b"PUBLISH", b"c", b""]);
        let mut expected = redis::cmd("SET")
            .arg("k")
            .arg("v\u{e4}lue")
            .get_packed_command();
        expected.extend(redis::cmd("PUBLISH").arg("c").arg("").get_packed_command());
        assert_eq!(out.into_bytes(), expected);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse(b"?what\r\n", 0, 0).is_err());
        assert!(parse(b"$3\r\nabcd\r\n", 0, 0).is_err());
        assert!(parse(b":x\r\n", 0, 0).is_err());
    }
}
