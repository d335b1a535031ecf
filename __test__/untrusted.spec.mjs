// Data in Redis is untrusted (SPEC §6): a shared server holds what old deployments, buggy
// services or hostile neighbours wrote. A bad value rejects that read only, quoting at
// most 100 characters of it; a bad key never blocks calls that do not read it; a
// malformed message is ignored, never delivered in a shape the app did not send.
import { describe, expect, it } from 'vitest';
import { RedisInfoSessionManager, RedisStreamSessionManager, RedisSubscriptionManager } from '../index.mjs';
import { eventually, recorder } from './helpers/redis.mjs';
import { useCleanups, useTestRedis } from './helpers/suite.mjs';
import { failOnUnhandledRejections } from './helpers/unhandled.mjs';
import { seededRandom } from './helpers/random.mjs';

let server;
let redis;
useTestRedis((s, r) => {
	server = s;
	redis = r;
});
const cleanups = useCleanups();
failOnUnhandledRejections();

/** Records a subscription stream's callbacks. */
function listener() {
	const l = {
		received: [],
		closed: [],
		async acknowledge() {},
		async send(notification) {
			l.received.push(notification);
		},
		async close(reason) {
			l.closed.push(reason);
		},
	};
	return l;
}

function managers(options = {}) {
	const errors = [];
	const all = { sessionTtlSeconds: 3, onError: (e) => errors.push(e.message), ...options };
	const streams = new RedisStreamSessionManager(server.url, all);
	const info = new RedisInfoSessionManager(server.url, all);
	const subs = new RedisSubscriptionManager(server.url, all);
	cleanups.push(() => streams.close(), () => info.close(), () => subs.dispose());
	return { streams, info, subs, errors };
}


describe('malformed notifications on tmcp:subscriptions', () => {
	it('only a JSON object with a string method (and object params) matches; the rest is ignored', async () => {
		const { subs } = managers();
		const tools = listener();
		const resource = listener();
		expect(await subs.create({ id: 't', origin: 'o', filters: { toolsListChanged: true } }, tools)).toBe(true);
		expect(await subs.create({ id: 'r', origin: 'o', filters: { resourceSubscriptions: ['x://p'] } }, resource)).toBe(true);
		const malformed = [
			'["notifications/tools/list_changed"]',
			'["notifications/resources/updated",{"uri":"x://p"}]',
			'["notifications/resources/updated",["x://p"]]',
			'{"method":"notifications/resources/updated","params":["x://p"]}',
			'{"method":"notifications/tools/list_changed","params":null}',
			'{"method":["notifications/tools/list_changed"]}',
			'{"method":"notifications/tools/list_changed","method":"notifications/tools/list_changed"}',
			'"notifications/tools/list_changed"',
			'',
			'\xff\xfe',
		];
		for (const payload of malformed) await redis.publish('tmcp:subscriptions', payload);
		// Sent after the malformed ones: once these arrived, any of those would have too.
		await subs.send({ jsonrpc: '2.0', method: 'notifications/tools/list_changed', params: { last: true } });
		await subs.send({ jsonrpc: '2.0', method: 'notifications/resources/updated', params: { uri: 'x://p', last: true } });
		await eventually(() => tools.received.length > 0 && resource.received.length > 0, 5000, 'the well-formed notifications');
		expect(tools.received).toEqual([{ jsonrpc: '2.0', method: 'notifications/tools/list_changed', params: { last: true } }]);
		expect(resource.received).toEqual([
			{ jsonrpc: '2.0', method: 'notifications/resources/updated', params: { uri: 'x://p', last: true } },
		]);
	});
});

describe('a corrupt data epoch (tmcp:epoch)', () => {
	for (const [what, corrupt] of [
		['a hash', () => redis.hSet('tmcp:epoch', 'a', 'b')],
		['a list', () => redis.rPush('tmcp:epoch', 'x')],
		['invalid UTF-8', () => redis.sendCommand(['SET', 'tmcp:epoch', Buffer.from([0xff, 0xfe])])],
		['not an epoch', () => redis.set('tmcp:epoch', 'x'.repeat(1000))],
	]) {
		it(`${what}: creation keeps working, liveness is refreshed, a remote delete still ends the session`, async () => {
			await redis.del('tmcp:epoch');
			await corrupt();
			const { streams, errors } = managers();
			const rec = recorder();
			await streams.create(`epoch-${what}`, rec);
			await streams.send([`epoch-${what}`], 'hello');
			await eventually(() => rec.chunks.includes('hello'), 5000, 'delivery');
			// The epoch was rewritten: a missing liveness key now means "ended elsewhere".
			expect(await redis.type('tmcp:epoch')).toBe('string');
			// Two refreshes (TTL 3 s: one about every 2 s) pass without a failure.
			const ttlBefore = await redis.pTTL(`available:session:epoch-${what}`);
			await eventually(async () => (await redis.pTTL(`available:session:epoch-${what}`)) > ttlBefore, 5000, 'a refresh');
			await redis.del(`available:session:epoch-${what}`);
			await eventually(() => rec.closed, 8000, 'the session ended by its missing key');
			expect(errors.filter((e) => /refresh|epoch|UTF-8|WRONGTYPE/.test(e))).toEqual([]);
		});
	}
});

describe('corrupt values', () => {
	it('a 1 MiB log level rejects that read only, quoting at most 100 characters', async () => {
		const { info } = managers();
		await redis.set('tmcp:log_level:huge', 'y'.repeat(1 << 20));
		await info.setClientInfo('huge', { name: 'c', version: '1' });
		const error = await info.getLogLevel('huge').then(
			() => undefined,
			(e) => e,
		);
		expect(error).toBeInstanceOf(Error);
		expect(error.message).toContain('Invalid log level');
		expect(error.message.length).toBeLessThan(300);
		expect(error.message).toContain(`(${1 << 20} bytes)`);
		// The other values of the same session are still read.
		expect(await info.getClientInfo('huge')).toEqual({ name: 'c', version: '1' });
	});

	it('a liveness key of the wrong type is rewritten by its holder, not read as ended', async () => {
		const { streams, errors } = managers();
		const rec = recorder();
		await streams.create('wrongtype', rec);
		await redis.del('available:session:wrongtype');
		await redis.hSet('available:session:wrongtype', 'x', 'y');
		await eventually(async () => (await redis.type('available:session:wrongtype')) === 'string', 5000, 'the key rewritten');
		expect(rec.closed).toBe(false);
		expect(await streams.has('wrongtype')).toBe(true);
		expect(errors).toEqual([]);
	});
});

describe('a hostile neighbour', () => {
	it('garbage on every channel and key it reads, while well-formed traffic flows: each message exactly once, nothing ended', async () => {
		const seed = Number(process.env.HOSTILE_SEED ?? 7);
		const rand = seededRandom(seed);
		const pick = (list) => list[Math.floor(rand() * list.length)];
		const a = managers();
		const b = managers();
		const ids = Array.from({ length: 8 }, (_, i) => `h-${i}`);
		const recs = new Map(ids.map((id) => [id, recorder()]));
		for (const id of ids) await a.streams.create(id, recs.get(id));
		const tools = listener();
		expect(await a.subs.create({ id: 'hs', origin: 'ho', filters: { toolsListChanged: true } }, tools)).toBe(true);

		const garbage = () => {
			const kind = Math.floor(rand() * 7);
			const bytes = (n) => Buffer.from(Array.from({ length: n }, () => Math.floor(rand() * 256)));
			if (kind === 0) return bytes(1 + Math.floor(rand() * 64));
			if (kind === 1) return Buffer.from([0xc3, 0x28, 0xff, 0xfe]);
			if (kind === 2) return Buffer.alloc(0);
			if (kind === 3) return Buffer.alloc((1 + Math.floor(rand() * 4)) << 20, 0x7b); // 1–4 MiB of '{'
			if (kind === 4) return Buffer.from('['.repeat(100_000) + ']'.repeat(100_000));
			if (kind === 5) return Buffer.from(JSON.stringify({ method: { deep: [1, 2] }, params: 'x' }));
			return Buffer.from(JSON.stringify(['notifications/tools/list_changed', { uri: 'x' }]));
		};
		const hostileChannels = ['tmcp:subscriptions', 'tmcp:broadcast', 'session:nobody', 'delete:session:nobody'];
		const hostileKeys = async () => {
			const which = Math.floor(rand() * 4);
			const key = pick(['tmcp:epoch', 'tmcp:client_info:victim', 'tmcp:log_level:victim', 'tmcp:subscriptions:x://v']);
			await redis.del(key);
			if (which === 0) await redis.hSet(key, 'a', 'b');
			else if (which === 1) await redis.rPush(key, 'x');
			else if (which === 2) await redis.sendCommand(['SET', key, garbage()]);
			else await redis.set(key, '{"unterminated');
		};

		const rssBefore = process.memoryUsage().rss;
		const marker = (n) => `well-formed ${n}`;
		let sent = 0;
		let notified = 0;
		let infoChecked = 0;
		for (let round = 0; round < 60; round++) {
			// The neighbour's turn, then well-formed traffic beside it.
			await redis.sendCommand(['PUBLISH', pick(hostileChannels), garbage()]);
			if (round % 3 === 0) await hostileKeys();
			const id = pick(ids);
			await b.streams.send([id], marker(sent++));
			await b.subs.send({ jsonrpc: '2.0', method: 'notifications/tools/list_changed', params: { n: notified++ } });
			const good = `good-${round}`;
			await b.info.setClientInfo(good, { name: 'n', version: String(round) });
			expect(await a.info.getClientInfo(good)).toEqual({ name: 'n', version: String(round) });
			infoChecked++;
			// A read of a corrupt key rejects with an Error, quoting at most 100 characters.
			const bad = await a.info.getClientInfo('victim').then(
				() => undefined,
				(e) => e,
			);
			if (bad !== undefined) {
				expect(bad).toBeInstanceOf(Error);
				expect(bad.message.length).toBeLessThan(400);
			}
		}
		// Every well-formed message exactly once (the streams also got the neighbour's
		// broadcasts: those are data the app did not send, and are told apart here).
		await eventually(
			() => [...recs.values()].reduce((n, r) => n + r.chunks.filter((c) => c.startsWith('well-formed ')).length, 0) === sent,
			10_000,
			'every well-formed stream message',
		);
		await eventually(() => tools.received.length === notified, 10_000, 'every well-formed notification');
		const seen = [...recs.values()].flatMap((r) => r.chunks.filter((c) => c.startsWith('well-formed ')));
		expect(new Set(seen).size).toBe(sent);
		expect(tools.received.map((n) => n.params.n)).toEqual(Array.from({ length: notified }, (_, i) => i));
		for (const n of tools.received) expect(n.method).toBe('notifications/tools/list_changed');
		for (const rec of recs.values()) expect(rec.closed).toBe(false);
		for (const id of ids) expect(await b.streams.has(id)).toBe(true);
		expect(infoChecked).toBe(60);
		// Bounded memory: the garbage (up to 4 MiB a message) is not kept.
		expect(process.memoryUsage().rss - rssBefore).toBeLessThan(256 * 1024 * 1024);
	}, 60_000);
});
