import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inspect } from 'node:util';
import { RedisInfoSessionManager, createSessionManagers } from '../index.mjs';
import { eventually, observer, recorder, startRedis, testRedis } from './helpers/redis.mjs';

let server;
let redis;
let errors = [];
const unhandled = [];
const onUnhandled = (e) => unhandled.push(e);
/** @type {RedisInfoSessionManager} */
let info;

beforeAll(async () => {
	process.on('unhandledRejection', onUnhandled);
	server = await testRedis();
	redis = await observer(server.url);
	info = new RedisInfoSessionManager(server.url, { onError: (e) => errors.push(e) });
});

afterAll(async () => {
	await info?.close();
	await redis?.quit();
	await server?.stop();
	process.off('unhandledRejection', onUnhandled);
	expect(unhandled).toEqual([]);
});

const clientInfo = { name: 'test-client', version: '1.2.3', title: 'Tëst ✓' };
const capabilities = { roots: { listChanged: true }, sampling: {} };

describe('client info and capabilities', () => {
	it('round-trips JSON values, stored where upstream stores them', async () => {
		await info.setClientInfo('s1', clientInfo);
		await info.setClientCapabilities('s1', capabilities);
		expect(await info.getClientInfo('s1')).toEqual(clientInfo);
		expect(await info.getClientCapabilities('s1')).toEqual(capabilities);
		expect(JSON.parse(await redis.get('tmcp:client_info:s1'))).toEqual(clientInfo);
		expect(JSON.parse(await redis.get('tmcp:client_capabilities:s1'))).toEqual(capabilities);
	});

	it('large values read back whole when their replies span many socket reads', async () => {
		// Replies of several MB arrive over many reads into one reused buffer: whatever the
		// decoder keeps of a cut reply must be its own copy, or the next read overwrites it.
		const values = Array.from({ length: 6 }, (_, i) => ({
			i,
			text: `${'é✓'.repeat(150_000 + i * 7919)}${'x'.repeat(i)}`,
			list: Array.from({ length: 2000 }, (_, k) => `${i}:${k}`),
		}));
		await Promise.all(values.map((value, i) => info.setClientInfo(`big${i}`, value)));
		const read = await Promise.all(values.map((_, i) => info.getClientInfo(`big${i}`)));
		expect(read).toEqual(values);
	});

	it('every write resolves to undefined, as upstream\'s do', async () => {
		const writes = [
			info.setClientInfo('w', clientInfo),
			info.setClientCapabilities('w', capabilities),
			info.setLogLevel('w', 'debug'),
			info.addSubscription('w', 'file:///w'),
			info.removeSubscription('w', 'file:///w'),
		];
		expect(await Promise.all(writes)).toEqual([undefined, undefined, undefined, undefined, undefined]);
		expect(await info.delete('w')).toBeUndefined();
	});

	it('rejects with upstream wording when nothing is stored', async () => {
		await expect(info.getClientInfo('missing')).rejects.toThrow('Client info not found for session missing');
		await expect(info.getClientCapabilities('missing')).rejects.toThrow(
			'Client capabilities not found for session missing',
		);
		await expect(info.getLogLevel('missing')).rejects.toThrow('Log level not found for session missing');
	});

	it('the reads of one request share a round trip but never hide a local write', async () => {
		await info.setClientInfo('snap', { name: 'a', version: '1' });
		await info.setClientCapabilities('snap', { sampling: {} });
		await info.setLogLevel('snap', 'info');
		expect(await info.getClientCapabilities('snap')).toEqual({ sampling: {} });
		info.setClientInfo('snap', { name: 'b', version: '2' });
		expect(await info.getClientInfo('snap')).toEqual({ name: 'b', version: '2' });
		expect(await info.getLogLevel('snap')).toBe('info');
		const [caps, ci, level] = await Promise.all([
			info.getClientCapabilities('snap'),
			info.getClientInfo('snap'),
			info.getLogLevel('snap'),
		]);
		expect([caps, ci, level]).toEqual([{ sampling: {} }, { name: 'b', version: '2' }, 'info']);
	});

	it('session ids named like Object.prototype members are ordinary ids', async () => {
		for (const id of ['__proto__', 'constructor', 'hasOwnProperty', 'toString']) {
			await expect(info.getClientInfo(id)).rejects.toThrow(`Client info not found for session ${id}`);
			await info.setClientInfo(id, { name: id, version: '1' });
			await info.setLogLevel(id, 'debug');
			const [ci, level] = await Promise.all([info.getClientInfo(id), info.getLogLevel(id)]);
			expect([ci, level]).toEqual([{ name: id, version: '1' }, 'debug']);
			expect(JSON.parse(await redis.get(`tmcp:client_info:${id}`))).toEqual({ name: id, version: '1' });
			await info.delete(id);
			await expect(info.getClientInfo(id)).rejects.toThrow(`Client info not found for session ${id}`);
		}
	});

	it('setters called without await still land, in call order', async () => {
		info.setClientInfo('s2', { name: 'a', version: '1' });
		info.setClientInfo('s2', { name: 'b', version: '2' });
		expect(await info.getClientInfo('s2')).toEqual({ name: 'b', version: '2' });
	});

	it('a tick of more argument text than one crossing takes keeps every call whole and in order', async () => {
		// About 5 MiB of values in one tick: the calls cross in several parts.
		const big = (n) => ({ name: String(n), version: 'v', blob: `${n}`.repeat(700_000) });
		const reads = [];
		for (let i = 0; i < 6; i++) {
			info.setClientInfo('parts', i % 2 ? big(i) : { name: String(i), version: 'v' });
			reads.push(info.getClientInfo('parts'));
		}
		const got = await Promise.all(reads);
		expect(got.map((r) => r.name)).toEqual(['0', '1', '2', '3', '4', '5']);
		expect(got[3]).toEqual(big(3));
	});

	it('a tick of more calls than one write keeps call order (reads see the writes before them)', async () => {
		// Over 32 calls in one tick: the first part is written early, the rest at the end.
		const reads = [];
		for (let i = 0; i < 200; i++) {
			info.setClientInfo('order', { name: 'n', version: String(i) });
			if (i % 10 === 9) reads.push(info.getClientInfo('order'));
		}
		const versions = (await Promise.all(reads)).map((r) => Number(r.version));
		expect(versions).toEqual(Array.from({ length: 20 }, (_, k) => k * 10 + 9));
	});
});

describe('log level', () => {
	it('set then get round-trips every MCP level, stored as a plain string', async () => {
		for (const level of ['debug', 'info', 'notice', 'warning', 'error', 'critical', 'alert', 'emergency']) {
			await info.setLogLevel('lv', level);
			expect(await info.getLogLevel('lv')).toBe(level);
			expect(await redis.get('tmcp:log_level:lv')).toBe(level);
		}
	});

	it("reads upstream's JSON-quoted form", async () => {
		await redis.set('tmcp:log_level:quoted', '"warning"');
		expect(await info.getLogLevel('quoted')).toBe('warning');
	});

	it('rejects an invalid level and stores nothing', async () => {
		await expect(info.setLogLevel('lv-bad', 'verbose')).rejects.toThrow(TypeError);
		await expect(info.setLogLevel('lv-bad', 'verbose')).rejects.toThrow(/Invalid log level "verbose"/);
		expect(await redis.exists('tmcp:log_level:lv-bad')).toBe(0);
	});

	it('rejects a corrupt stored level with a clear error', async () => {
		await redis.set('tmcp:log_level:corrupt', 'loud');
		await expect(info.getLogLevel('corrupt')).rejects.toThrow('Invalid log level "loud" stored for session corrupt');
	});
});

describe('subscriptions', () => {
	it('adds, lists and removes', async () => {
		await info.addSubscription('a', 'file:///r1');
		await info.addSubscription('b', 'file:///r1');
		await info.addSubscription('a', 'file:///r2');
		expect((await info.getSubscriptions('file:///r1')).sort()).toEqual(['a', 'b']);
		expect(await redis.sMembers('tmcp:subscriptions:file:///r2')).toEqual(['a']);
		await info.removeSubscription('b', 'file:///r1');
		expect(await info.getSubscriptions('file:///r1')).toEqual(['a']);
	});

	it('is an empty list for an unknown uri', async () => {
		expect(await info.getSubscriptions('file:///nobody')).toEqual([]);
	});
});

describe('delete', () => {
	it('removes all metadata and the id from every subscription set, and nothing else', async () => {
		await info.setClientInfo('gone', clientInfo);
		await info.setClientCapabilities('gone', capabilities);
		await info.setLogLevel('gone', 'error');
		await info.addSubscription('gone', 'file:///d1');
		await info.addSubscription('gone', 'file:///d2');
		await info.addSubscription('stays', 'file:///d1');
		await info.setClientInfo('stays', clientInfo);
		await info.delete('gone');
		expect(await redis.exists(['tmcp:client_info:gone', 'tmcp:client_capabilities:gone', 'tmcp:log_level:gone'])).toBe(0);
		expect(await info.getSubscriptions('file:///d1')).toEqual(['stays']);
		expect(await info.getSubscriptions('file:///d2')).toEqual([]);
		expect(await info.getClientInfo('stays')).toEqual(clientInfo);
	});
});

describe('bad input changes nothing', () => {
	async function keyCount() {
		return redis.dbSize();
	}

	it.each([
		['a number id', () => info.getClientInfo(42)],
		['an empty id', () => info.getClientCapabilities('')],
		['an undefined id', () => info.getLogLevel(undefined)],
		['a symbol id', () => info.getClientInfo(Symbol('id'))],
		['a non-string uri', () => info.getSubscriptions({})],
	])('getter with %s rejects with TypeError', async (_name, call) => {
		await expect(call()).rejects.toThrow(TypeError);
	});

	it.each([
		['a cyclic object', () => { const o = { name: 'x' }; o.self = o; return info.setClientInfo('bad', o); }],
		['a BigInt', () => info.setClientCapabilities('bad', { n: 10n })],
		['undefined', () => info.setClientInfo('bad', undefined)],
		['a non-string id', () => info.setClientInfo(7, clientInfo)],
		['a symbol id', () => info.setClientCapabilities(Symbol('id'), capabilities)],
		['a non-string uri', () => info.addSubscription('bad', 5)],
		['a non-string level', () => info.setLogLevel('bad', 3)],
	])('setter with %s rejects with TypeError and writes nothing', async (_name, call) => {
		const before = await keyCount();
		errors = [];
		await expect(call()).rejects.toThrow(TypeError);
		expect(await keyCount()).toBe(before);
		expect(await redis.keys('*bad*')).toEqual([]);
		expect(errors.length).toBe(1);
	});

	it('setters whose promise is dropped never produce unhandled rejections', async () => {
		errors = [];
		await redis.set('tmcp:subscriptions:file:///not-a-set', 'x');
		info.setClientInfo('bad', { n: 1n });
		info.setLogLevel('bad', 'nope');
		info.addSubscription(undefined, 'file:///x');
		info.delete(null);
		// Last, one that fails at Redis: its failure comes back a round trip later, after an
		// unhandled rejection of any call above would have surfaced, and is one itself if
		// not handled.
		info.addSubscription('dropped', 'file:///not-a-set');
		await eventually(() => errors.length >= 5, 5000, 'the failure at Redis reported');
		expect(errors.map((e) => e.constructor.name)).toEqual(['TypeError', 'TypeError', 'TypeError', 'TypeError', 'Error']);
		expect(errors[4].message).toMatch(/^Could not subscribe session dropped to file:\/\/\/not-a-set: .*WRONGTYPE/);
		expect(unhandled).toEqual([]);
	});
});

describe('corrupt data in Redis', () => {
	it('invalid JSON rejects that read only', async () => {
		await redis.set('tmcp:client_info:broken', '{not json');
		await expect(info.getClientInfo('broken')).rejects.toThrow(/Corrupt client info stored for session broken/);
		await info.setClientInfo('fine', clientInfo);
		expect(await info.getClientInfo('fine')).toEqual(clientInfo);
	});

	it('a key of the wrong type rejects with the Redis error', async () => {
		await redis.sAdd('tmcp:client_capabilities:wrongtype', 'x');
		await expect(info.getClientCapabilities('wrongtype')).rejects.toThrow(/WRONGTYPE/);
		await redis.set('tmcp:subscriptions:file:///wrong', 'x');
		await expect(info.getSubscriptions('file:///wrong')).rejects.toThrow(/WRONGTYPE/);
	});
});

describe('construction and lifecycle', () => {
	it.each([
		['a non-string url', 42, TypeError, /Redis URL must be a string/],
		['an http url', 'http://127.0.0.1:1', TypeError, /unsupported scheme "http:"/],
		['garbage', 'not a url', TypeError, /Invalid Redis URL/],
		['a missing host', 'redis://', TypeError, /Invalid Redis URL/],
	])('%s throws at construction', (_name, url, type, message) => {
		expect(() => new RedisInfoSessionManager(url)).toThrow(type);
		expect(() => new RedisInfoSessionManager(url)).toThrow(message);
	});

	it.each([
		['mysql://user:hunter2@h:1/0', /unsupported scheme "mysql:"/],
		['redis://user:hunter2@', /empty host/],
		['redis://user:hunter2@h:99999', /invalid port number/],
		['rediss://user:hunter2@h:1/#insecure', /a #fragment is not allowed/],
	])('a bad URL error names the problem and never repeats the password (%s)', (url, problem) => {
		let error;
		try {
			new RedisInfoSessionManager(url);
		} catch (thrown) {
			error = thrown;
		}
		// Outside the try: if construction stopped throwing, this fails.
		expect(error).toBeInstanceOf(TypeError);
		expect(error.message).toMatch(problem);
		expect(`${error.message}\n${error.stack}\n${inspect(error)}`).not.toContain('hunter2');
	});

	it.each([
		['a string', 'x', /options must be an object/],
		['an unknown key', { ttl: 5 }, /Unknown option "ttl"/],
		['a bad timeout', { commandTimeout: -1 }, /commandTimeout/],
		['a bad prefix', { keyPrefix: 5 }, /keyPrefix/],
		['a bad hook', { onError: 'log' }, /onError/],
	])('invalid options (%s) throw TypeError', (_name, options, message) => {
		expect(() => new RedisInfoSessionManager(server.url, options)).toThrow(TypeError);
		expect(() => new RedisInfoSessionManager(server.url, options)).toThrow(message);
	});

	it('two instances see each other’s writes', async () => {
		const other = new RedisInfoSessionManager(server.url);
		await other.setClientInfo('shared', clientInfo);
		expect(await info.getClientInfo('shared')).toEqual(clientInfo);
		await other.close();
	});

	it('keyPrefix moves every key under the prefix', async () => {
		const prefixed = new RedisInfoSessionManager(server.url, { keyPrefix: 'app:' });
		await prefixed.setClientInfo('p', clientInfo);
		await prefixed.addSubscription('p', 'file:///pref');
		expect(await redis.exists('app:tmcp:client_info:p')).toBe(1);
		expect(await redis.sMembers('app:tmcp:subscriptions:file:///pref')).toEqual(['p']);
		await expect(info.getClientInfo('p')).rejects.toThrow('not found');
		await prefixed.close();
	});

	it('createSessionManagers shares one command connection between its managers', async () => {
		// A server of its own: every connection on it is the observer's or the managers'.
		const own = await startRedis();
		const look = await observer(own.url);
		const clients = async (type) => String(await look.sendCommand(['CLIENT', 'LIST', 'TYPE', type])).split('\n').filter((l) => l.trim()).length;
		try {
			expect(await clients('normal')).toBe(1);
			const { streams, info: shared, subscriptions } = createSessionManagers(own.url, { keyPrefix: 'sh:' });
			await shared.setLogLevel('x', 'info');
			expect(await shared.getLogLevel('x')).toBe('info');
			expect(await streams.has('x')).toBe(false);
			await streams.send(['x'], 'nobody listens');
			await subscriptions.send({ jsonrpc: '2.0', method: 'notifications/tools/list_changed' });
			// The observer and one command connection for all three managers; no pub/sub
			// connection until one is needed.
			expect(await clients('normal')).toBe(2);
			expect(await clients('pubsub')).toBe(0);
			await streams.create('s', recorder());
			expect(await clients('pubsub')).toBe(1);
			expect(await clients('normal')).toBe(2);
			await streams.close();
			expect(await shared.getLogLevel('x')).toBe('info');
			await subscriptions.dispose();
			await shared.close();
			await expect(shared.getLogLevel('x')).rejects.toThrow(/closed/);
		} finally {
			await look.quit();
			await own.stop();
		}
	});

	it('calls after close reject clearly', async () => {
		const closing = new RedisInfoSessionManager(server.url);
		await closing.close();
		await expect(closing.getClientInfo('x')).rejects.toThrow(/the session manager is closed/);
	});

	it('util.inspect shows the URL without its password', async () => {
		const { inspect } = await import('node:util');
		const secret = new RedisInfoSessionManager('redis://user:hunter2@127.0.0.1:1');
		expect(inspect(secret)).toContain('user:***@127.0.0.1:1');
		expect(inspect(secret)).not.toContain('hunter2');
		await secret.close();
	});
});
