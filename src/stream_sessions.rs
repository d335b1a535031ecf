//! SSE streams: the stream manager's calls, which sessions this process holds, and the
//! protocol of the pub/sub socket that JavaScript drives.
//!
//! Like [`crate::requests`], the pub/sub side is sans-io: Node owns the socket and reads
//! it on the JavaScript thread; this module writes SUBSCRIBE/UNSUBSCRIBE/PING and turns
//! what the socket read into delivery entries that point into the bytes read, so a
//! message reaches its controller without crossing threads or being copied. The
//! controllers live in JavaScript; here each local session is a `token` (a number
//! JavaScript chose), so entries carry no session-id strings.

use std::collections::{HashMap, VecDeque};

use napi_derive::napi;
use redis::ConnectionInfo;

use crate::commands::{Encoded, ScanJob, Shape};
use crate::config::NativeOptions;
use crate::keys::{Channel, Keys};
use crate::requests::{
    handshake_commands, number, protocol_error, read_bulk, read_line, Bulk, Resp, Span,
};

// Call codes, exported to `lib/wire.js`.
#[napi]
pub const HAS: u32 = 20;
#[napi]
pub const PUBLISH: u32 = 21;
#[napi]
pub const BROADCAST: u32 = 22;
#[napi]
pub const STREAM_DELETE: u32 = 23;
/// `SET available:session:{id} active EX ttl` for each id: a session became live, or
/// Redis may have lost its key (after a reconnect).
#[napi]
pub const MARK_LIVE: u32 = 24;
/// The same with `XX`: a refresh must not resurrect a key that a delete just removed.
#[napi]
pub const REFRESH: u32 = 25;
/// `DEL` of the liveness keys of sessions that ended here.
#[napi]
pub const MARK_GONE: u32 = 26;

/// Writes one stream-manager call that is plain commands; `None` for an unknown code or
/// a wrong argument count.
pub fn encode(
    code: u32,
    args: &[&str],
    keys: &Keys,
    options: &NativeOptions,
    out: &mut Resp,
) -> Option<Encoded> {
    Some(match (code, args) {
        // Whether `available:session:{id}` exists.
        (HAS, [id]) => {
            out.command(&[b"EXISTS", keys.alive(id).as_bytes()]);
            Encoded::read(1, Shape::Exists)
        }
        // `data` to `session:{id}` for each id, in order.
        (PUBLISH, [data, ids @ ..]) => {
            for id in ids {
                let channel = keys.session_channel(id);
                out.command(&[b"PUBLISH", channel.as_bytes(), data.as_bytes()]);
            }
            Encoded::done(ids.len())
        }
        // Upstream-compatible mode publishes per `available:session:*` key, as upstream.
        (BROADCAST, [data]) if options.upstream_compatible => Encoded {
            count: 0,
            shape: Shape::Done,
            scan: Some(ScanJob::PublishToAliveSessions(data.to_string())),
        },
        // One PUBLISH on our broadcast channel.
        (BROADCAST, [data]) => {
            let channel = keys.broadcast_channel();
            out.command(&[b"PUBLISH", channel.as_bytes(), data.as_bytes()]);
            Encoded::done(1)
        }
        // End the session everywhere: tell its owner, drop its liveness key.
        (STREAM_DELETE, [id]) => {
            out.command(&[b"PUBLISH", keys.delete_channel(id).as_bytes(), b""]);
            out.command(&[b"DEL", keys.alive(id).as_bytes()]);
            Encoded::done(2)
        }
        (MARK_LIVE | REFRESH, [_, ..]) => {
            let mut ttl = itoa::Buffer::new();
            let ttl = ttl.format(options.session_ttl_seconds);
            for id in args {
                let key = keys.alive(id);
                let words: [&[u8]; 6] = [
                    b"SET",
                    key.as_bytes(),
                    b"active",
                    b"EX",
                    ttl.as_bytes(),
                    b"XX",
                ];
                let len = if code == REFRESH { 6 } else { 5 };
                out.command(&words[..len]);
            }
            Encoded::done(args.len())
        }
        (MARK_GONE, [_, ..]) => {
            let keys: Vec<String> = args.iter().map(|id| keys.alive(id)).collect();
            let mut words: Vec<&[u8]> = Vec::with_capacity(keys.len() + 1);
            words.push(b"DEL");
            words.extend(keys.iter().map(|k| k.as_bytes()));
            out.command(&words);
            Encoded::done(1)
        }
        _ => return None,
    })
}

/// What one entry written by [`StreamSessions::receive`] asks JavaScript to do.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EntryKind {
    /// Enqueue the payload into the controller of `token`.
    Message = 0,
    /// Enqueue the payload into every local controller.
    Broadcast = 1,
    /// The session was deleted (maybe elsewhere): close the controller of `token`.
    Close = 2,
    /// Redis confirmed operation `token` (a SUBSCRIBE, PING or the handshake).
    Done = 3,
    /// Redis refused operation `token`; the payload is its error.
    Failed = 4,
}

// Entry kinds, exported to `lib/wire.js`.
#[napi]
pub const DELIVER_MESSAGE: u32 = EntryKind::Message as u32;
#[napi]
pub const DELIVER_BROADCAST: u32 = EntryKind::Broadcast as u32;
#[napi]
pub const DELIVER_CLOSE: u32 = EntryKind::Close as u32;
#[napi]
pub const OP_DONE: u32 = EntryKind::Done as u32;
#[napi]
pub const OP_FAILED: u32 = EntryKind::Failed as u32;

/// Words per entry: `[kind, token, offset, length]`, offset and length into the bytes read.
#[napi]
pub const RECEIVE_ENTRY_WORDS: u32 = 4;
/// Words in front of the entries: bytes consumed, bytes the next frame needs (0: unknown).
#[napi]
pub const RECEIVE_HEADER_WORDS: u32 = 2;
const ENTRY_WORDS: usize = RECEIVE_ENTRY_WORDS as usize;
const HEADER_WORDS: usize = RECEIVE_HEADER_WORDS as usize;

// Change kinds of `StreamSessions::apply`, exported to `lib/wire.js`.
#[napi]
pub const CHANGE_CREATE: u32 = 0;
#[napi]
pub const CHANGE_DROP: u32 = 1;
/// Operation id nobody waits for (UNSUBSCRIBE).
const UNWATCHED: u32 = 0;

/// A written command waiting for Redis's confirmations.
struct Op {
    id: u32,
    replies: usize,
}

/// Which sessions this process holds, and its pub/sub connection's protocol state.
pub struct StreamSessions {
    keys: Keys,
    handshake: Vec<u8>,
    handshake_replies: usize,
    /// Local sessions: id → token of its JavaScript controller.
    local: HashMap<String, u32>,
    broadcast_subscribed: bool,
    /// Ended sessions whose UNSUBSCRIBE waits for the next SUBSCRIBE or `flush_ends`: one
    /// write fewer per tick that only ends sessions.
    unsubscribe_later: Vec<String>,
    awaiting: VecDeque<Op>,
    out: Resp,
}

impl StreamSessions {
    pub fn new(info: &ConnectionInfo, keys: Keys) -> Self {
        // Channels are global to the server: no SELECT on this connection.
        let (handshake, handshake_replies) = handshake_commands(info, false);
        StreamSessions {
            keys,
            handshake,
            handshake_replies,
            local: HashMap::new(),
            broadcast_subscribed: false,
            unsubscribe_later: Vec::new(),
            awaiting: VecDeque::new(),
            out: Resp::default(),
        }
    }

    /// The bytes of the last write, valid until the next one.
    pub fn written(&self) -> &[u8] {
        &self.out.0
    }

    /// Starts a write: `op` waits for `replies` confirmations of what follows.
    fn expect(&mut self, op: u32, replies: usize) {
        self.awaiting.push_back(Op { id: op, replies });
    }

    /// The AUTH to write first on a new socket (confirmed as `op`), or nothing.
    pub fn handshake(&mut self, op: u32) -> &[u8] {
        self.out.0.clear();
        if self.handshake_replies > 0 {
            self.out.0.extend_from_slice(&self.handshake);
            self.expect(op, self.handshake_replies);
        }
        &self.out.0
    }

    /// Applies the session changes of one JavaScript tick, in order: `changes` holds
    /// `[kind, _, token]` triples (`CHANGE_CREATE`: the id goes to controller `token`;
    /// `CHANGE_DROP`: the id stops receiving unless a newer token owns it). When
    /// `connected` and there are creations, writes one SUBSCRIBE for them (confirmed as
    /// `op`) and then one UNSUBSCRIBE for the ends so far; ends alone wait for
    /// [`Self::flush_ends`] (their messages are dropped meanwhile). When not connected the
    /// next [`Self::resubscribe`] covers everything.
    pub fn apply(&mut self, changes: &[u32], ids: Vec<String>, op: u32, connected: bool) -> &[u8] {
        self.out.0.clear();
        let mut created: Vec<&str> = Vec::new();
        let mut ended: Vec<String> = Vec::new();
        for (change, id) in changes.chunks_exact(3).zip(&ids) {
            let token = change[2];
            if change[0] == CHANGE_CREATE {
                // Replaces an older token for the same id.
                self.local.insert(id.clone(), token);
                created.push(id);
            } else if self.local.get(id).is_none_or(|&t| t == token) {
                // Absent when a delete message already took it out (see `route`).
                self.local.remove(id);
                ended.push(id.clone());
            }
        }
        if !connected {
            return &self.out.0;
        }
        self.unsubscribe_later.append(&mut ended);
        if !created.is_empty() {
            let mut channels = self.channels_of(created);
            if !self.broadcast_subscribed {
                self.broadcast_subscribed = true;
                channels.push(self.keys.broadcast_channel());
            }
            self.write(b"SUBSCRIBE", &channels, op);
            // After the SUBSCRIBE: a session created and ended in one tick ends up
            // unsubscribed.
            self.write_ends();
        }
        &self.out.0
    }

    /// Writes the UNSUBSCRIBE that ended sessions still wait for, if any.
    pub fn flush_ends(&mut self) -> &[u8] {
        self.out.0.clear();
        self.write_ends();
        &self.out.0
    }

    fn write_ends(&mut self) {
        let mut ended = std::mem::take(&mut self.unsubscribe_later);
        // A session created again since it ended keeps its channels.
        ended.retain(|id| !self.local.contains_key(id));
        if ended.is_empty() {
            return;
        }
        let channels = self.channels_of(&ended);
        self.write(b"UNSUBSCRIBE", &channels, UNWATCHED);
    }

    /// After a (re)connect: one SUBSCRIBE for every local session and the broadcast
    /// channel, confirmed as `op`; nothing when there is nothing to subscribe.
    pub fn resubscribe(&mut self, op: u32) -> &[u8] {
        self.out.0.clear();
        // A new connection holds no subscription yet: nothing to end.
        self.unsubscribe_later.clear();
        let mut channels = self.channels_of(self.local.keys());
        // Local sessions need broadcasts: their first SUBSCRIBE may not have been written.
        if self.broadcast_subscribed || !self.local.is_empty() {
            self.broadcast_subscribed = true;
            channels.push(self.keys.broadcast_channel());
        }
        if !channels.is_empty() {
            self.write(b"SUBSCRIBE", &channels, op);
        }
        &self.out.0
    }

    /// A PING confirmed as `op`: proves the connection still answers.
    pub fn ping(&mut self, op: u32) -> &[u8] {
        self.out.0.clear();
        self.out.command(&[b"PING"]);
        self.expect(op, 1);
        &self.out.0
    }

    /// The two channels of each session (its messages, its end), with room for one more.
    fn channels_of<S: AsRef<str>>(&self, ids: impl IntoIterator<Item = S>) -> Vec<String> {
        let ids = ids.into_iter();
        let mut channels = Vec::with_capacity(ids.size_hint().0 * 2 + 1);
        for id in ids {
            channels.push(self.keys.session_channel(id.as_ref()));
            channels.push(self.keys.delete_channel(id.as_ref()));
        }
        channels
    }

    fn write(&mut self, command: &[u8], channels: &[String], op: u32) {
        let mut words: Vec<&[u8]> = Vec::with_capacity(channels.len() + 1);
        words.push(command);
        words.extend(channels.iter().map(|c| c.as_bytes()));
        self.out.command(&words);
        // One confirmation per channel.
        self.expect(op, channels.len());
    }

    /// The socket broke: forgets what was in flight and returns those operation ids.
    /// Subscriptions are gone with the socket; [`Self::resubscribe`] restores them.
    pub fn abandon(&mut self) -> Vec<u32> {
        self.awaiting
            .drain(..)
            .map(|op| op.id)
            .filter(|&id| id != UNWATCHED)
            .collect()
    }

    /// Reads whole frames from `buf` into entries after the header of `out` until `buf`
    /// or `out` runs out; returns how many entries. The header says how many bytes were
    /// consumed and, when the next frame is cut, how many bytes it needs at least (0 when
    /// unknown yet). Errs if Redis breaks the protocol (drop the socket then).
    pub fn receive(&mut self, buf: &[u8], out: &mut [u32]) -> Result<usize, String> {
        let room = out.len().saturating_sub(HEADER_WORDS) / ENTRY_WORDS;
        let mut entries = 0;
        let mut pos = 0;
        let mut need = 0;
        while entries < room {
            let (frame, next) = match read_frame(buf, pos)? {
                Parsed::Frame(frame, next) => (frame, next),
                Parsed::Incomplete(total) => {
                    need = total;
                    break;
                }
            };
            if let Some(entry) = self.route(buf, frame)? {
                let at = HEADER_WORDS + entries * ENTRY_WORDS;
                out[at..at + ENTRY_WORDS].copy_from_slice(&entry);
                entries += 1;
            }
            pos = next;
        }
        out[0] = pos as u32;
        out[1] = need as u32;
        Ok(entries)
    }

    /// The entry for one frame, if it asks anything of JavaScript.
    fn route(&mut self, buf: &[u8], frame: Frame) -> Result<Option<[u32; 4]>, String> {
        let text = |span: Span| &buf[span.0..span.1];
        let entry = |kind: EntryKind, token: u32, span: Span| {
            [kind as u32, token, span.0 as u32, (span.1 - span.0) as u32]
        };
        let items = match frame {
            Frame::Error(message) => {
                let op = self.awaiting.pop_front().ok_or_else(unasked)?;
                return Ok(Some(entry(EntryKind::Failed, op.id, message)));
            }
            Frame::Line => return self.confirm(),
            Frame::Items(items) => items,
        };
        let [Some(kind), channel, payload] = items else {
            return Err(protocol_error());
        };
        if text(kind) != b"message" {
            // subscribe, unsubscribe, pong: a confirmation.
            return self.confirm();
        }
        let (Some(channel), Some(payload)) = (channel, payload) else {
            return Err(protocol_error());
        };
        let Ok(channel) = std::str::from_utf8(text(channel)) else {
            return Ok(None);
        };
        Ok(match self.keys.parse_channel(channel) {
            Some(Channel::Session(id)) => self
                .local
                .get(id)
                .map(|&token| entry(EntryKind::Message, token, payload)),
            // Taken out now, so a later message for it is dropped; JavaScript's drop of
            // the token then unsubscribes.
            Some(Channel::Delete(id)) => self
                .local
                .remove(id)
                .map(|token| entry(EntryKind::Close, token, (0, 0))),
            Some(Channel::Broadcast) => Some(entry(EntryKind::Broadcast, 0, payload)),
            None => None,
        })
    }

    /// Counts one confirmation for the oldest waiting operation.
    fn confirm(&mut self) -> Result<Option<[u32; 4]>, String> {
        let op = self.awaiting.front_mut().ok_or_else(unasked)?;
        op.replies -= 1;
        if op.replies > 0 {
            return Ok(None);
        }
        let id = op.id;
        self.awaiting.pop_front();
        Ok((id != UNWATCHED).then_some([EntryKind::Done as u32, id, 0, 0]))
    }
}

/// One top-level RESP value on a pub/sub connection, as far as we need it.
enum Frame {
    /// An array (or RESP3 push) of scalars: its first three items.
    Items([Option<Span>; 3]),
    /// A simple string or integer (`+OK`, `+PONG`).
    Line,
    /// An error reply: its text.
    Error(Span),
}

enum Parsed {
    Frame(Frame, usize),
    /// Cut short; the frame needs at least this many bytes from its start (0: unknown).
    Incomplete(usize),
}

/// Reads the frame at `pos` without copying.
fn read_frame(buf: &[u8], pos: usize) -> Result<Parsed, String> {
    let Some((kind, head, mut at)) = read_line(buf, pos)? else {
        return Ok(Parsed::Incomplete(0));
    };
    let frame = match kind {
        b'+' | b':' => Frame::Line,
        b'-' => Frame::Error(head),
        b'*' | b'>' => {
            let count = number(&buf[head.0..head.1])?;
            let mut items = [None; 3];
            for i in 0..count.max(0) as usize {
                let Some((kind, head, next)) = read_line(buf, at)? else {
                    return Ok(Parsed::Incomplete(0));
                };
                let (span, after) = match kind {
                    b'$' => match read_bulk(buf, &buf[head.0..head.1], next)? {
                        // `$-1`: nil, no body line.
                        Bulk::Nil => ((next, next), next),
                        Bulk::Body(span, after) => (span, after),
                        Bulk::Short(end) => return Ok(Parsed::Incomplete(end - pos)),
                    },
                    b'+' | b':' => (head, next),
                    _ => return Err(protocol_error()),
                };
                at = after;
                if let Some(slot) = items.get_mut(i) {
                    *slot = Some(span);
                }
            }
            Frame::Items(items)
        }
        _ => return Err(protocol_error()),
    };
    Ok(Parsed::Frame(frame, at))
}

fn unasked() -> String {
    "Redis sent a pub/sub reply nobody asked for".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(compat: bool) -> NativeOptions {
        NativeOptions {
            key_prefix: String::new(),
            session_ttl_seconds: 10,
            command_timeout_ms: 1000,
            connect_timeout_ms: 1000,
            upstream_compatible: compat,
            tls: None,
        }
    }

    fn written(code: u32, args: &[&str], compat: bool) -> (Option<Encoded>, String) {
        let mut out = Resp::default();
        let encoded = encode(code, args, &Keys::default(), &options(compat), &mut out);
        (encoded, String::from_utf8(out.into_bytes()).unwrap())
    }

    fn sessions() -> StreamSessions {
        let info: ConnectionInfo = "redis://127.0.0.1:1".parse().unwrap();
        StreamSessions::new(&info, Keys::default())
    }

    /// Feeds `bytes` and returns (consumed, need, entries).
    fn feed(s: &mut StreamSessions, bytes: &[u8]) -> (u32, u32, Vec<[u32; 4]>) {
        let mut out = vec![0u32; HEADER_WORDS + 16 * ENTRY_WORDS];
        let n = s.receive(bytes, &mut out).unwrap();
        let entries = out[HEADER_WORDS..HEADER_WORDS + n * ENTRY_WORDS]
            .chunks_exact(4)
            .map(|c| [c[0], c[1], c[2], c[3]])
            .collect();
        (out[0], out[1], entries)
    }

    fn push(items: &[&[u8]]) -> Vec<u8> {
        let mut out = Resp::default();
        out.command(items);
        out.into_bytes()
    }

    #[test]
    fn publish_keeps_order_and_arity() {
        let (encoded, packed) = written(PUBLISH, &["data", "a", "b"], false);
        assert_eq!(encoded, Some(Encoded::done(2)));
        assert!(packed.find("session:a").unwrap() < packed.find("session:b").unwrap());
        assert_eq!(written(HAS, &["a", "b"], false).0, None);
    }

    #[test]
    fn delete_tells_the_owner_and_drops_the_key() {
        let (encoded, packed) = written(STREAM_DELETE, &["x"], false);
        assert_eq!(encoded, Some(Encoded::done(2)));
        assert!(packed.contains("delete:session:x") && packed.contains("available:session:x"));
    }

    #[test]
    fn liveness_writes_set_with_ttl_and_refresh_never_creates() {
        let (live, packed) = written(MARK_LIVE, &["a", "b"], false);
        assert_eq!(live, Some(Encoded::done(2)));
        assert!(packed.contains("available:session:b\r\n$6\r\nactive\r\n$2\r\nEX\r\n$2\r\n10\r\n"));
        assert!(!packed.contains("XX"));
        let (_, packed) = written(REFRESH, &["a"], false);
        assert!(packed.ends_with("$2\r\nXX\r\n"));
        let (gone, packed) = written(MARK_GONE, &["a", "b"], false);
        assert_eq!(gone, Some(Encoded::done(1)));
        assert!(packed.starts_with("*3\r\n$3\r\nDEL\r\n"));
        assert_eq!(written(MARK_GONE, &[], false).0, None);
    }

    #[test]
    fn broadcast_scans_only_in_upstream_mode() {
        let (fast, packed) = written(BROADCAST, &["d"], false);
        assert_eq!(fast, Some(Encoded::done(1)));
        assert!(packed.contains("tmcp:broadcast"));
        let (compat, packed) = written(BROADCAST, &["d"], true);
        assert_eq!(
            compat.map(|e| (e.count, e.scan)),
            Some((0, Some(ScanJob::PublishToAliveSessions("d".into()))))
        );
        assert!(packed.is_empty());
    }

    #[test]
    fn a_tick_subscribes_once_and_confirms_after_every_channel() {
        let mut s = sessions();
        let ids = vec!["a".to_string(), "b".to_string()];
        let bytes = s.apply(&[0, 0, 7, 0, 0, 8], ids, 42, true).to_vec();
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("*6\r\n$9\r\nSUBSCRIBE\r\n"));
        assert!(text.ends_with("tmcp:broadcast\r\n"));
        let mut confirmations = Vec::new();
        for (i, ch) in [
            "session:a",
            "delete:session:a",
            "session:b",
            "delete:session:b",
        ]
        .iter()
        .enumerate()
        {
            confirmations.extend(push(&[b"subscribe", ch.as_bytes()]));
            let (consumed, _, entries) = feed(&mut s, &confirmations);
            assert_eq!(consumed as usize, confirmations.len());
            assert!(entries.is_empty(), "confirmed early after {i}");
            confirmations.clear();
        }
        let (_, _, entries) = feed(&mut s, &push(&[b"subscribe", b"tmcp:broadcast"]));
        assert_eq!(entries, vec![[EntryKind::Done as u32, 42, 0, 0]]);
    }

    #[test]
    fn messages_point_into_the_bytes_read_and_reach_their_token() {
        let mut s = sessions();
        s.apply(&[0, 0, 7], vec!["a".into()], 1, false);
        let mut bytes = push(&[b"message", b"session:a", "héllo".as_bytes()]);
        bytes.extend(push(&[b"message", b"session:zz", b"lost"]));
        bytes.extend(push(&[b"message", b"tmcp:broadcast", b"all"]));
        bytes.extend(push(&[b"message", b"delete:session:a", b""]));
        bytes.extend(push(&[b"message", b"session:a", b"after delete"]));
        let (consumed, need, entries) = feed(&mut s, &bytes);
        assert_eq!((consumed as usize, need), (bytes.len(), 0));
        assert_eq!(entries.len(), 3);
        let [kind, token, offset, len] = entries[0];
        assert_eq!((kind, token), (EntryKind::Message as u32, 7));
        assert_eq!(
            &bytes[offset as usize..(offset + len) as usize],
            "héllo".as_bytes()
        );
        assert_eq!(entries[1][0], EntryKind::Broadcast as u32);
        assert_eq!(entries[2][..2], [EntryKind::Close as u32, 7]);
    }

    #[test]
    fn a_full_entry_array_stops_between_frames() {
        let mut s = sessions();
        s.apply(&[0, 0, 7], vec!["a".into()], 1, false);
        let bytes: Vec<u8> = (0..5)
            .flat_map(|i| push(&[b"message", b"session:a", format!("m{i}").as_bytes()]))
            .collect();
        let mut out = vec![0u32; HEADER_WORDS + 2 * ENTRY_WORDS];
        let mut at = 0;
        let mut payloads = Vec::new();
        while at < bytes.len() {
            let n = s.receive(&bytes[at..], &mut out).unwrap();
            assert!(n <= 2);
            for e in out[HEADER_WORDS..HEADER_WORDS + n * ENTRY_WORDS].chunks_exact(4) {
                let start = at + e[2] as usize;
                payloads.push(bytes[start..start + e[3] as usize].to_vec());
            }
            at += out[0] as usize;
        }
        assert_eq!(
            payloads,
            (0..5)
                .map(|i| format!("m{i}").into_bytes())
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_cut_frame_waits_and_says_how_much_it_needs() {
        let mut s = sessions();
        s.apply(&[0, 0, 7], vec!["a".into()], 1, false);
        let whole = push(&[b"message", b"session:a", &[b'x'; 100]]);
        for cut in 0..whole.len() {
            let (consumed, need, entries) = feed(&mut s, &whole[..cut]);
            assert_eq!((consumed, entries.len()), (0, 0), "cut at {cut}");
            // A lower bound: more than what is there, never more than the whole frame.
            assert!(
                need == 0 || (need as usize > cut && need as usize <= whole.len()),
                "cut at {cut}: {need}"
            );
        }
        assert_eq!(feed(&mut s, &whole).2.len(), 1);
    }

    #[test]
    fn errors_fail_the_oldest_operation_and_unasked_replies_break_the_protocol() {
        let mut s = sessions();
        s.ping(5);
        let (_, _, entries) = feed(&mut s, b"-NOAUTH Authentication required.\r\n");
        let [kind, op, offset, len] = entries[0];
        assert_eq!((kind, op), (EntryKind::Failed as u32, 5));
        assert_eq!(len as usize, "NOAUTH Authentication required.".len());
        assert_eq!(offset, 1);
        let mut out = vec![0u32; 6];
        assert!(s.receive(b"+PONG\r\n", &mut out).is_err());
        assert!(s.receive(b"?\r\n", &mut out).is_err());
    }

    #[test]
    fn ends_alone_wait_for_the_next_write_and_spare_sessions_created_since() {
        let mut s = sessions();
        s.apply(&[0, 0, 1, 0, 0, 2], vec!["a".into(), "b".into()], 1, true);
        let ids = vec!["a".into(), "b".into()];
        assert!(s.apply(&[1, 0, 1, 1, 0, 2], ids, 0, true).is_empty());
        // b comes back before the ends are written: only a is unsubscribed.
        let text =
            String::from_utf8(s.apply(&[0, 0, 3], vec!["b".into()], 2, true).to_vec()).unwrap();
        let unsub = text.find("UNSUBSCRIBE").unwrap();
        assert!(text[unsub..].contains("session:a") && !text[unsub..].contains("session:b"));
        assert!(s.flush_ends().is_empty());
        s.apply(&[1, 0, 3], vec!["b".into()], 0, true);
        assert!(String::from_utf8(s.flush_ends().to_vec())
            .unwrap()
            .contains("UNSUBSCRIBE"));
    }

    #[test]
    fn ends_unsubscribe_after_creations_and_spare_re_created_sessions() {
        let mut s = sessions();
        // a: created and ended in one tick; b: ended and re-created (new token).
        s.apply(&[0, 0, 1], vec!["b".into()], 1, false);
        let ids = vec!["a".into(), "a".into(), "b".into(), "b".into()];
        let text = String::from_utf8(
            s.apply(&[0, 0, 2, 1, 0, 2, 1, 0, 1, 0, 0, 3], ids, 9, true)
                .to_vec(),
        )
        .unwrap();
        let sub = text.find("SUBSCRIBE").unwrap();
        let unsub = text.find("UNSUBSCRIBE").unwrap();
        assert!(sub < unsub);
        assert!(!text[unsub..].contains("session:b"));
        assert_eq!(s.local.get("b"), Some(&3));
        assert!(!s.local.contains_key("a"));
        // Lost with the socket: the watched SUBSCRIBE, not the UNSUBSCRIBE.
        assert_eq!(s.abandon(), vec![9]);
        let again = String::from_utf8(s.resubscribe(10).to_vec()).unwrap();
        assert!(again.contains("session:b") && again.contains("tmcp:broadcast"));
    }
}
