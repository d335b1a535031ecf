import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisStreamSessionManager } from '../index.mjs';
import { eventually, observer, recorder, testRedis } from './helpers/redis.mjs';

let server;
let redis;
const unhandled = [];
const onUnhandled = (e) => unhandled.push(e);
let errorsA = [];
/** @type {RedisStreamSessionManager} */
let a;
/** @type {RedisStreamSessionManager} */
let b;

beforeAll(async () => {
	process.on('unhandledRejection', onUnhandled);
	server = await testRedis();
	redis = await observer(server.url);
	a = new RedisStreamSessionManager(server.url, { onError: (e) => errorsA.push(e) });
	b = new RedisStreamSessionManager(server.url);
});

afterAll(async () => {
	await a?.close();
	await b?.close();
	await redis?.quit();
	await server?.stop();
	process.off('unhandledRejection', onUnhandled);
	expect(unhandled).toEqual([]);
});

/**
 * Two managers of their own (a prefix of their own: their broadcasts reach only each
 * other's sessions), closed after the file; `errors` is what the owner reported.
 */
const pairs = [];
async function pair(keyPrefix) {
	const errors = [];
	const owner = new RedisStreamSessionManager(server.url, { keyPrefix, onError: (e) => errors.push(e.message) });
	const other = new RedisStreamSessionManager(server.url, { keyPrefix });
	pairs.push(owner, other);
	return { owner, other, errors };
}
afterAll(async () => {
	for (const m of pairs) await m.close();
});

describe('create / has / send / delete', () => {
	it('a send issued right after create resolves is delivered, from another instance', async () => {
		const rec = recorder();
		await a.create('s1', rec);
		await b.send(['s1'], 'event: message\ndata: {}\n\n');
		await eventually(() => rec.chunks.length === 1, 5000, 'delivery');
		expect(rec.chunks).toEqual(['event: message\ndata: {}\n\n']);
		expect(rec.raw[0]).toBeInstanceOf(Uint8Array);
	});

	it('large and many messages arrive whole, in order, across socket reads', async () => {
		const rec = recorder();
		await a.create('bulk', rec);
		// One tick of sends: thousands of frames in few reads (more than one read's worth of
		// entries), a 3 MB frame cut across many reads, and multi-byte UTF-8.
		const sent = Array.from({ length: 3000 }, (_, i) => `data: ${i} ${'é'.repeat(i % 50)}\n\n`);
		sent[1500] = `data: big ${'x'.repeat(3 * 1024 * 1024)}\n\n`;
		await Promise.all(sent.map((m) => b.send(['bulk'], m)));
		await eventually(() => rec.chunks.length === sent.length, 10_000, 'all deliveries');
		expect(rec.chunks.length).toBe(sent.length);
		for (let i = 0; i < sent.length; i++) if (rec.chunks[i] !== sent[i]) expect(rec.chunks[i]).toBe(sent[i]);
	});

	it('marks the session live with upstream’s key and a TTL', async () => {
		await a.create('live', recorder());
		expect(await redis.get('available:session:live')).toMatch(/^active(:|$)/);
		const ttl = await redis.ttl('available:session:live');
		expect(ttl).toBeGreaterThan(0);
		expect(ttl).toBeLessThanOrEqual(10);
		expect(await a.has('live')).toBe(true);
		expect(await b.has('live')).toBe(true);
		expect(await b.has('never-created')).toBe(false);
	});

	it('delete from another instance closes the owner’s controller, unsubscribes it, and has() is false everywhere', async () => {
		const { owner, other, errors } = await pair('del-remote:');
		const rec = recorder();
		const kept = recorder();
		await owner.create('gone', rec);
		await owner.create('kept', kept);
		await other.delete('gone');
		expect(await owner.has('gone')).toBe(false);
		expect(await other.has('gone')).toBe(false);
		await eventually(() => rec.closed, 5000, 'owner closing the controller');
		expect(await redis.exists('del-remote:available:session:gone')).toBe(0);
		const channels = ['del-remote:session:gone', 'del-remote:delete:session:gone'];
		await eventually(async () => Object.values(await redis.pubSubNumSub(channels)).every((n) => n === 0), 5000, 'no subscription left');
		// Nothing reaches the ended session any more, targeted or broadcast; the sentinel,
		// sent last on the same connection, arrives after anything sent before it.
		await other.send(['gone'], 'after delete');
		await other.send(undefined, 'broadcast after delete');
		await other.send(['kept'], 'sentinel');
		await eventually(() => kept.chunks.includes('sentinel'), 5000, 'the sentinel');
		expect(kept.chunks).toEqual(['broadcast after delete', 'sentinel']);
		expect(rec.chunks).toEqual([]);
		expect(rec.late).toEqual([]);
		expect(errors).toEqual([]);
	});

	it('delete on the owner closes its controller and has() is false everywhere', async () => {
		const rec = recorder();
		await a.create('del-owner', rec);
		await a.delete('del-owner');
		expect(rec.closed).toBe(true);
		expect(await a.has('del-owner')).toBe(false);
		expect(await b.has('del-owner')).toBe(false);
	});

	it('a second create for a live id replaces and closes the old controller: no double delivery', async () => {
		const { owner, other, errors } = await pair('dup:');
		const first = recorder();
		const second = recorder();
		await owner.create('dup', first);
		await owner.create('dup', second);
		expect(first.closed).toBe(true);
		expect((await redis.pubSubNumSub(['dup:session:dup']))['dup:session:dup']).toBe(1);
		await other.send(['dup'], 'once');
		await other.send(undefined, 'to everyone');
		await other.send(['dup'], 'twice');
		// 'twice' went last on one connection: once it arrived, so did anything before it.
		await eventually(() => second.chunks.includes('twice'), 5000, 'delivery');
		expect(second.chunks).toEqual(['once', 'to everyone', 'twice']);
		expect(first.chunks).toEqual([]);
		expect(first.late).toEqual([]);
		expect(errors).toEqual([]);
	});

	it('create and delete in the same tick leave neither a subscription nor a liveness key', async () => {
		const gone = recorder();
		await Promise.all([a.create('tick1', gone), a.delete('tick1')]);
		await eventually(async () => {
			const subs = await redis.pubSubNumSub(['session:tick1']);
			return subs['session:tick1'] === 0 && (await redis.exists('available:session:tick1')) === 0;
		}, 5000, 'nothing left of tick1');
		expect(await b.has('tick1')).toBe(false);
		expect(gone.closed).toBe(true);
	});

	it('unknown ids are dropped silently and an empty list sends nothing', async () => {
		await expect(b.send(['nobody-here'], 'x')).resolves.toBeUndefined();
		await expect(b.send([], 'x')).resolves.toBeUndefined();
		await expect(b.send(undefined, 'x')).resolves.toBeUndefined();
		await expect(b.delete('nobody-here')).resolves.toBeUndefined();
	});
});

describe('broadcast', () => {
	it('send(undefined) reaches every live session of both instances once', async () => {
		const ra = recorder();
		const rb = recorder();
		await a.create('bc-a', ra);
		await b.create('bc-b', rb);
		await a.send(undefined, 'to everyone');
		// A second broadcast from the same sender arrives after the first everywhere: once
		// it arrived, a duplicate of the first would have too.
		await a.send(undefined, 'sentinel');
		await eventually(() => ra.chunks.includes('sentinel') && rb.chunks.includes('sentinel'), 5000, 'broadcast');
		expect(ra.chunks.filter((c) => c === 'to everyone')).toHaveLength(1);
		expect(rb.chunks.filter((c) => c === 'to everyone')).toHaveLength(1);
	});
});

describe('payloads and volume', () => {
	it('multi-byte UTF-8 and a 1 MiB payload arrive intact', async () => {
		const rec = recorder();
		await a.create('big', rec);
		const unicode = 'héllo ✓ 日本語 🎉 \u0000 end';
		const big = 'x'.repeat(1024 * 1024 - 3) + '✓';
		await b.send(['big'], unicode);
		await b.send(['big'], big);
		await eventually(() => rec.chunks.length === 2, 10000, 'delivery');
		expect(rec.chunks[0]).toBe(unicode);
		expect(rec.raw[0]).toEqual(new TextEncoder().encode(unicode));
		expect(rec.chunks[1].length).toBe(big.length);
		expect(rec.chunks[1]).toBe(big);
	});

	it('sessions created in one tick with ids in any script each get their own messages; lone surrogates are refused', async () => {
		const ids = ['ü-1', '🙂-2', 'x\uD83D', '\uDE42y', 'plain'];
		const recs = ids.map(() => recorder());
		const created = await Promise.allSettled(ids.map((id, i) => a.create(id, recs[i])));
		// Ids that cannot round-trip as UTF-8 are a TypeError (two such ids would collide);
		// the others of the same tick are created.
		expect(created.map((c) => c.status)).toEqual(['fulfilled', 'fulfilled', 'rejected', 'rejected', 'fulfilled']);
		for (const c of created.filter((c) => c.status === 'rejected')) expect(c.reason).toBeInstanceOf(TypeError);
		const good = ids.filter((_, i) => created[i].status === 'fulfilled');
		const goodRecs = recs.filter((_, i) => created[i].status === 'fulfilled');
		for (const id of good) expect(await b.has(id)).toBe(true);
		await Promise.all(good.map((id) => b.send([id], `to ${id}`)));
		await eventually(() => goodRecs.every((r) => r.chunks.length === 1), 5000, 'deliveries');
		expect(goodRecs.map((r) => r.chunks[0])).toEqual(['to ü-1', 'to 🙂-2', 'to plain']);
		await Promise.all(good.map((id) => a.delete(id)));
	});

	it('sends of one tick keep their own text: NULs, emoji, and lone surrogates that would pair across calls', async () => {
		const rec = recorder();
		await a.create('tick', rec);
		// One crossing carries every send of the tick; a high surrogate ending one send and
		// a low one starting the next must not combine into 🙂 (each is U+FFFD, as when sent
		// alone), and NULs inside a payload are payload.
		const sent = ['a\uD83D', '\uDE42b', '\u0000', '', '🙂\u0000🙂', 'end'];
		await Promise.all(sent.map((m) => b.send(['tick'], m)));
		await eventually(() => rec.chunks.length === sent.length, 5000, 'deliveries');
		expect(rec.chunks).toEqual(['a\uFFFD', '\uFFFDb', '\u0000', '', '🙂\u0000🙂', 'end']);
	});

	it('1,000 messages to one session arrive in order', async () => {
		const rec = recorder();
		await a.create('ordered', rec);
		const sends = [];
		for (let i = 0; i < 1000; i++) sends.push(b.send(['ordered'], `m${i}`));
		await Promise.all(sends);
		await eventually(() => rec.chunks.length === 1000, 10000, '1000 messages');
		expect(rec.chunks).toEqual(Array.from({ length: 1000 }, (_, i) => `m${i}`));
	});

	it('2,000 sessions on one instance each get their own message', async () => {
		const many = new RedisStreamSessionManager(server.url, { keyPrefix: 'many:' });
		const sender = new RedisStreamSessionManager(server.url, { keyPrefix: 'many:' });
		const recs = Array.from({ length: 2000 }, () => recorder());
		await Promise.all(recs.map((rec, i) => many.create(`m-${i}`, rec)));
		await Promise.all(recs.map((_, i) => sender.send([`m-${i}`], `for m-${i}`)));
		await eventually(() => recs.every((r) => r.chunks.length === 1), 20000, '2000 deliveries');
		recs.forEach((rec, i) => expect(rec.chunks).toEqual([`for m-${i}`]));
		await many.close();
		await sender.close();
		expect(await redis.keys('many:available:session:*')).toEqual([]);
	});
});

describe('a controller that throws', () => {
	it('ends only that session, locally, and reports it', async () => {
		const broken = recorder();
		const healthy = recorder();
		await a.create('broken', broken);
		await a.create('healthy', healthy);
		broken.closed = true; // enqueue now throws, like a cancelled stream
		errorsA = [];
		await b.send(['broken', 'healthy'], 'hi');
		await eventually(() => healthy.chunks.length === 1, 5000, 'healthy delivery');
		await eventually(async () => !(await b.has('broken')), 5000, 'broken session ended');
		expect(errorsA.some((e) => /Stream of session broken no longer accepts data/.test(e.message))).toBe(true);
		await b.send(['healthy'], 'still here');
		await eventually(() => healthy.chunks.length === 2, 5000, 'second delivery');
		expect(await a.has('healthy')).toBe(true);
	});
});

describe('liveness', () => {
	it('one timer keeps the keys of live sessions alive past their TTL', async () => {
		const short = new RedisStreamSessionManager(server.url, { keyPrefix: 'ttl:', sessionTtlSeconds: 3 });
		await short.create('t1', recorder());
		await short.create('t2', recorder());
		// Past the 3 s TTL the keys still exist only because they were refreshed.
		await new Promise((r) => setTimeout(r, 4500));
		expect(await redis.exists(['ttl:available:session:t1', 'ttl:available:session:t2'])).toBe(2);
		// A deleted session is no longer refreshed, and no refresh brings its key back.
		await short.delete('t1');
		// Wait for a refresh after the delete (t2's TTL goes back up): it would have
		// written t1's key too, had t1 still been refreshed.
		let last = await redis.pTTL('ttl:available:session:t2');
		await eventually(async () => {
			const now = await redis.pTTL('ttl:available:session:t2');
			const refreshed = now > last;
			last = now;
			return refreshed;
		}, 5000, 'a refresh after the delete');
		expect(await redis.exists('ttl:available:session:t1')).toBe(0);
		expect(await redis.exists('ttl:available:session:t2')).toBe(1);
		await short.close();
		expect(await redis.exists(['ttl:available:session:t1', 'ttl:available:session:t2'])).toBe(0);
	});
});

describe('bad input', () => {
	it.each([
		['a non-string id', () => a.create(5, recorder()), TypeError, /session id must be a non-empty string/],
		['an empty id', () => a.has(''), TypeError, /session id/],
		['a controller without enqueue', () => a.create('c', { close() {} }), TypeError, /enqueue/],
		['no controller', () => a.create('c'), TypeError, /controller/],
		['non-string data', () => a.send(['x'], { data: 1 }), TypeError, /data must be a string/],
		['a non-array sessions', () => a.send('x', 'data'), TypeError, /sessions must be an array/],
		['a non-string id in sessions', () => a.send(['ok', 3], 'data'), TypeError, /each session id/],
		['a non-string id for delete', () => a.delete(null), TypeError, /session id/],
		['a symbol id for delete', () => a.delete(Symbol('id')), TypeError, /session id/],
	])('%s rejects with a clear TypeError and changes nothing', async (_name, call, type, message) => {
		const before = await redis.dbSize();
		const error = await call().catch((e) => e);
		expect(error).toBeInstanceOf(type);
		expect(error.message).toMatch(message);
		expect(await redis.dbSize()).toBe(before);
	});

	it('a bad URL throws at construction', () => {
		expect(() => new RedisStreamSessionManager('ftp://x')).toThrow(/unsupported scheme/);
		expect(() => new RedisStreamSessionManager(undefined)).toThrow(TypeError);
	});
});

describe('close', () => {
	it('closes local controllers, removes their liveness keys and rejects later calls', async () => {
		const m = new RedisStreamSessionManager(server.url, { keyPrefix: 'close:' });
		const rec = recorder();
		await m.create('c1', rec);
		expect(await redis.exists('close:available:session:c1')).toBe(1);
		await m[Symbol.asyncDispose]();
		expect(rec.closed).toBe(true);
		expect(await redis.exists('close:available:session:c1')).toBe(0);
		await expect(m.create('c2', recorder())).rejects.toThrow(/closed/);
		await expect(m.send(['c1'], 'x')).rejects.toThrow(/closed/);
		await expect(m.close()).resolves.toBeUndefined();
	});
});
