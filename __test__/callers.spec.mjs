// Careless and hostile callers (issue 22, items 4-11): whatever an argument or an app
// callback throws, even a value that cannot be shown, harms only its own call or session;
// promises report every failure as an Error, never by throwing; arguments are read once.
import { types } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
	createSessionManagers,
	RedisInfoSessionManager,
	RedisStreamSessionManager,
	RedisSubscriptionManager,
} from '../index.mjs';
import { eventually, recorder } from './helpers/redis.mjs';
import { useCleanups, useTestRedis } from './helpers/suite.mjs';
import { failOnUnhandledRejections } from './helpers/unhandled.mjs';

let server;
let redis;
useTestRedis((s, r) => {
	server = s;
	redis = r;
});
const cleanups = useCleanups();
failOnUnhandledRejections();

// Seen here as they happen, so a test can check that its own calls left none.
const unhandled = [];
const uncaught = [];
const onUnhandled = (reason) => unhandled.push(reason);
const onUncaught = (error) => uncaught.push(error);
beforeAll(() => {
	process.on('unhandledRejection', onUnhandled);
	process.on('uncaughtException', onUncaught);
});
afterAll(() => {
	process.off('unhandledRejection', onUnhandled);
	process.off('uncaughtException', onUncaught);
	expect(uncaught).toEqual([]);
});

/** A Proxy every trap of which throws the Proxy itself (a function target: typeof 'function'). */
function evilProxy(target = function () {}) {
	const proxy = new Proxy(target, new Proxy({}, { get: () => () => { throw proxy; } }));
	return proxy;
}

/** An object whose toString throws the object itself. */
function unprintable() {
	const value = {
		toString() {
			throw value;
		},
	};
	return value;
}

function revoked() {
	const { proxy, revoke } = Proxy.revocable({}, {});
	revoke();
	return proxy;
}

/**
 * What `value` is, in words an assertion can show (a hostile value itself would make the
 * assertion's message throw): 'TypeError', 'Error' or 'not an Error'.
 */
function kind(value) {
	try {
		if (types.isProxy(value)) return 'not an Error';
		if (value instanceof TypeError && typeof value.message === 'string') return 'TypeError';
		if (value instanceof Error && typeof value.message === 'string') return 'Error';
	} catch {
		// A prototype chain that throws.
	}
	return 'not an Error';
}

/** How `promise` settled: 'resolved', or the kind of its rejection. */
function outcome(promise) {
	return Promise.resolve(promise).then(
		() => 'resolved',
		(error) => kind(error),
	);
}

/** What the managers built here reported to onError. */
let errors = [];
const onError = (error) => errors.push(error);

function streams() {
	const m = new RedisStreamSessionManager(server.url, { onError });
	cleanups.push(() => m.close());
	return m;
}

function info() {
	const m = new RedisInfoSessionManager(server.url, { onError });
	cleanups.push(() => m.close());
	return m;
}

function subscriptions() {
	const m = new RedisSubscriptionManager(server.url, { onError });
	cleanups.push(() => m.dispose());
	return m;
}

/** Subscription callbacks that record what they receive; `failSend` decides what send throws. */
function stream({ failSend } = {}) {
	const s = {
		received: [],
		closed: [],
		async acknowledge() {},
		async send(notification) {
			const thrown = failSend?.(notification);
			if (thrown !== undefined) throw thrown;
			s.received.push(notification);
		},
		async close(reason) {
			s.closed.push(reason);
		},
	};
	return s;
}

/** `promise`, or a rejection naming `what` if it has not settled within `ms` (a bound, not a measurement). */
function bounded(promise, what, ms = 10_000) {
	let timer;
	const hung = new Promise((_, reject) => {
		timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
	});
	return Promise.race([promise, hung]).finally(() => clearTimeout(timer));
}

/** A controller whose enqueue throws `thrown`. */
function throwingController(thrown) {
	return {
		enqueue() {
			throw thrown;
		},
		close() {},
		error() {},
		desiredSize: 1,
	};
}

describe('item 4: a controller that throws a value that cannot be shown', () => {
	it.each([
		['a Proxy that throws on every trap', () => evilProxy({})],
		['a Proxy of a function that throws on every trap', () => evilProxy()],
		['an object whose toString throws itself', unprintable],
		['an object whose toString throws an Error', () => ({ toString() { throw new Error('no toString'); } })],
		['a revoked Proxy', revoked],
	])('%s: the session ends locally, onError gets an Error, the process and other sessions carry on', async (_name, make) => {
		errors = [];
		const m = streams();
		const good = recorder();
		await m.create('c4-bad', throwingController(make()));
		await m.create('c4-good', good);
		await m.send(['c4-bad'], 'to the bad one');
		await m.send(['c4-good'], 'sentinel');
		await eventually(() => good.chunks.includes('sentinel'), 5000, 'the sentinel');
		await eventually(() => errors.length > 0, 5000, 'the report');
		expect(errors.map(kind)).toEqual(['Error']);
		expect(errors[0].message).toMatch(/Stream of session c4-bad no longer accepts data/);
		await eventually(async () => !(await m.has('c4-bad')), 5000, 'the bad session to end');
		expect(await m.has('c4-good')).toBe(true);
		expect(uncaught).toEqual([]);
		expect(unhandled).toEqual([]);
	});
});

describe('item 5: one throwing controller', () => {
	it.each([
		['a toString that throws an Error', () => ({ toString() { throw new Error('no toString'); } })],
		['a Proxy that throws on every trap', () => evilProxy({})],
	])('does not cost the other sessions a broadcast (%s)', async (_name, make) => {
		errors = [];
		const m = streams();
		const a = recorder();
		const c = recorder();
		await m.create('c5-a', a);
		await m.create('c5-b', throwingController(make()));
		await m.create('c5-c', c);
		await m.send(undefined, 'x');
		await m.send(['c5-a', 'c5-c'], 'after');
		await eventually(() => a.chunks.includes('after') && c.chunks.includes('after'), 5000, 'the sentinels');
		expect(a.chunks).toEqual(['x', 'after']);
		expect(c.chunks).toEqual(['x', 'after']);
		expect(errors.map(kind)).toEqual(['Error']);
		expect(uncaught).toEqual([]);
	});
});

describe('item 6: a subscription whose send throws a value that cannot be shown', () => {
	it.each([
		['an object whose toString throws itself', unprintable],
		['a Proxy that throws on every trap', () => evilProxy({})],
	])('%s: onError gets an Error, no unhandled rejection, later notifications arrive', async (_name, make) => {
		errors = [];
		const m = subscriptions();
		const s = stream({ failSend: (n) => (n.params.n === 1 ? make() : undefined) });
		expect(await m.create({ id: 1, origin: 'c6', filters: { toolsListChanged: true } }, s)).toBe(true);
		await m.send({ jsonrpc: '2.0', method: 'notifications/tools/list_changed', params: { n: 1 } });
		await m.send({ jsonrpc: '2.0', method: 'notifications/tools/list_changed', params: { n: 2 } });
		await eventually(() => s.received.length === 1, 5000, 'the second notification');
		expect(s.received.map((n) => n.params.n)).toEqual([2]);
		await eventually(() => errors.length === 1, 5000, 'the report');
		expect(errors.map(kind)).toEqual(['Error']);
		expect(errors[0].message).toMatch(/did not take a notification/);
		expect(unhandled).toEqual([]);
	});

	it('a close callback that throws such a value: close rejects with an Error, closeAll reports one', async () => {
		errors = [];
		const m = subscriptions();
		const s = stream();
		s.close = async () => {
			throw unprintable();
		};
		await m.create({ id: 1, origin: 'c6-close', filters: {} }, s);
		await m.create({ id: 2, origin: 'c6-close', filters: {} }, s);
		expect(await outcome(m.close(1, 'c6-close', 'closed'))).toBe('Error');
		expect(await outcome(bounded(m.closeAll('c6-close'), 'closeAll'))).toBe('resolved');
		expect(errors.map(kind)).toEqual(['Error']);
		expect(m.stats().active).toBe(0);
	});

	it('an acknowledge that throws such a value: create rejects with an Error', async () => {
		const m = subscriptions();
		const s = stream();
		s.acknowledge = () => {
			throw evilProxy();
		};
		expect(await outcome(m.create({ id: 1, origin: 'c6-ack', filters: {} }, s))).toBe('Error');
		expect(m.stats().active).toBe(0);
	});
});

describe('item 7: a create that fails reading its arguments', () => {
	it('leaves nothing behind: the same (origin, id) can be created, closeAll and dispose settle', async () => {
		const m = subscriptions();
		const filters = {
			get toolsListChanged() {
				throw new Error('filters');
			},
		};
		await expect(m.create({ id: 'z', origin: 'o', filters }, stream())).rejects.toThrow(/filters/);
		expect(m.stats().active).toBe(0);
		const s = stream();
		expect(await m.create({ id: 'z', origin: 'o', filters: { toolsListChanged: true } }, s)).toBe(true);
		await m.send({ jsonrpc: '2.0', method: 'notifications/tools/list_changed', params: {} });
		await eventually(() => s.received.length === 1, 5000, 'delivery');
		await bounded(m.closeAll('o'), 'closeAll');
		expect(s.closed).toEqual(['cancelled']);
		await bounded(m.dispose(), 'dispose');
	});

	it.each([
		['a throwing resourceSubscriptions getter', { get resourceSubscriptions() { throw unprintable(); } }],
		['resourceSubscriptions as a Proxy', { resourceSubscriptions: evilProxy([]) }],
		['a URI that is a Symbol', { resourceSubscriptions: ['x://a', Symbol('x')] }],
		['filters as a Proxy', evilProxy({})],
	])('%s: rejects with a TypeError, nothing registered', async (_name, filters) => {
		const m = subscriptions();
		expect(await outcome(m.create({ id: 'y', origin: 'o', filters }, stream()))).toBe('TypeError');
		expect(m.stats().active).toBe(0);
		expect(await m.create({ id: 'y', origin: 'o', filters: {} }, stream())).toBe(true);
		await bounded(m.dispose(), 'dispose');
	});
});

describe('item 8 and 11: failures come through the promise, as Errors', () => {
	const hostile = [
		['a null-prototype object', () => Object.create(null)],
		['a revoked Proxy', revoked],
		['a Proxy that throws on every trap', () => evilProxy()],
		['a Symbol', () => Symbol('id')],
		['an unprintable object', unprintable],
	];
	/** @type {{ s: RedisStreamSessionManager, i: RedisInfoSessionManager, sub: RedisSubscriptionManager }} */
	let m;
	beforeAll(() => {
		const { streams: s, info: i, subscriptions: sub } = createSessionManagers(server.url, { onError });
		m = { s, i, sub };
	});
	afterAll(() => Promise.all([m?.s.close(), m?.i.close(), m?.sub.dispose()]));

	// [method, call, whether every hostile value must be refused]: a value to store, or the
	// filters, may be one that is taken as it is (a null-prototype object is `{}`).
	const calls = [
		['streams.create', (v) => m.s.create(v, recorder()), true],
		['streams.create (controller)', (v) => m.s.create('c8', v), true],
		['streams.delete', (v) => m.s.delete(v), true],
		['streams.has', (v) => m.s.has(v), true],
		['streams.send (sessions)', (v) => m.s.send(v, 'x'), true],
		['streams.send (an id)', (v) => m.s.send([v], 'x'), true],
		['streams.send (data)', (v) => m.s.send(['c8'], v), true],
		['info.getClientInfo', (v) => m.i.getClientInfo(v), true],
		['info.setClientInfo (id)', (v) => m.i.setClientInfo(v, {}), true],
		['info.setClientInfo (value)', (v) => m.i.setClientInfo('c8', v), false],
		['info.setClientCapabilities (value)', (v) => m.i.setClientCapabilities('c8', v), false],
		['info.setLogLevel (level)', (v) => m.i.setLogLevel('c8', v), true],
		['info.getSubscriptions', (v) => m.i.getSubscriptions(v), true],
		['info.addSubscription (id)', (v) => m.i.addSubscription(v, 'u'), true],
		['info.addSubscription (uri)', (v) => m.i.addSubscription('c8', v), true],
		['info.removeSubscription (id)', (v) => m.i.removeSubscription(v, 'u'), true],
		['info.delete', (v) => m.i.delete(v), true],
		['subscriptions.create (subscription)', (v) => m.sub.create(v, stream()), true],
		['subscriptions.create (id)', (v) => m.sub.create({ id: v, origin: 'o', filters: {} }, stream()), true],
		['subscriptions.create (filters)', (v) => m.sub.create({ id: 1, origin: 'o', filters: v }, stream()), false],
		['subscriptions.create (callbacks)', (v) => m.sub.create({ id: 1, origin: 'o', filters: {} }, v), true],
		['subscriptions.send', (v) => m.sub.send(v), true],
	];
	const cases = calls.flatMap(([method, call, refused]) => hostile.map(([kind, make]) => [method, kind, call, make, refused]));

	it.each(cases)('%s with %s returns a promise that settles, refusals as TypeErrors', async (_method, _kind, call, make, refused) => {
		errors = [];
		let result;
		let threw = false;
		try {
			result = call(make());
		} catch {
			threw = true;
		}
		expect(threw, 'threw synchronously').toBe(false);
		expect(result).toBeInstanceOf(Promise);
		// A refusal is a TypeError; a value to store may also be taken as it is.
		expect(refused ? ['TypeError'] : ['TypeError', 'resolved']).toContain(await outcome(result));
		expect(errors.map(kind).filter((k) => k === 'not an Error')).toEqual([]);
	});

	it('subscriptions.close and closeAll with such values resolve', async () => {
		const m = subscriptions();
		for (const [, make] of hostile) {
			expect(await outcome(m.close(make(), make(), make()))).toBe('resolved');
			expect(await outcome(m.closeAll(make(), make()))).toBe('resolved');
		}
	});

	it('the reporter turns values that cannot be shown into Errors (setter refusals reach onError)', async () => {
		errors = [];
		const m = info();
		const value = { toJSON: () => { throw unprintable(); } };
		expect(await outcome(m.setClientInfo('c8-json', value))).toBe('TypeError');
		expect(errors.map(kind)).toEqual(['TypeError']);
		expect(errors[0].message).toMatch(/not JSON-serialisable/);
	});
});

describe('item 9: ids that are not well-formed UTF-16', () => {
	it('lone surrogates are refused with a TypeError where they would become part of a key or channel', async () => {
		const s = streams();
		const i = info();
		const sub = subscriptions();
		const loneHigh = 'ls-\ud800';
		const loneLow = 'ls-\udc00';
		const refused = [
			() => s.create(loneHigh, recorder()),
			() => s.create(loneLow, recorder()),
			() => s.delete(loneHigh),
			() => s.has(loneHigh),
			() => s.send([loneHigh], 'x'),
			() => i.getClientInfo(loneHigh),
			() => i.setClientInfo(loneHigh, {}),
			() => i.setLogLevel(loneLow, 'info'),
			() => i.getSubscriptions('u-\ud800'),
			() => i.addSubscription('ok', 'u-\udbff'),
			() => i.removeSubscription(loneHigh, 'u'),
			() => i.delete(loneHigh),
			() => sub.create({ id: 1, origin: 'o', filters: { resourceSubscriptions: ['x://\ud800'] } }, stream()),
		];
		for (const call of refused) await expect(call()).rejects.toThrow(/well-formed/);
		expect(() => new RedisInfoSessionManager(server.url, { keyPrefix: 'p\ud800:' })).toThrow(TypeError);
		expect(await redis.keys('*ls-*')).toEqual([]);
	});

	it('ids that differ only in lone surrogates no longer collide; surrogate pairs work', async () => {
		const m = streams();
		const a = recorder();
		const b = recorder();
		await expect(m.create('ls-\ud800', a)).rejects.toBeInstanceOf(TypeError);
		await expect(m.create('ls-\udbff', b)).rejects.toBeInstanceOf(TypeError);
		const pair = recorder();
		await m.create('ls-\ud83d\ude00', pair);
		await m.send(['ls-\ud83d\ude00'], 'to the pair');
		await eventually(() => pair.chunks.length === 1, 5000, 'delivery');
		expect(pair.chunks).toEqual(['to the pair']);
		expect(a.chunks).toEqual([]);
		expect(b.chunks).toEqual([]);
	});
});

describe('item 10: an argument is read once; a bad one fails only its own call', () => {
	/** An array that yields a string the first time it is iterated and a Symbol after. */
	function shifting(id) {
		const array = [id];
		let reads = 0;
		array[Symbol.iterator] = function* () {
			yield reads++ === 0 ? id : Symbol(id);
		};
		return array;
	}

	/** An array whose element is a string on the first read and a Symbol after. */
	function shiftingElement(id) {
		const array = [];
		let reads = 0;
		Object.defineProperty(array, 0, { get: () => (reads++ === 0 ? id : Symbol(id)), enumerable: true });
		return array;
	}

	it('a shifting sessions array: the legitimate calls of the same tick succeed', async () => {
		const { streams: s, info: i, subscriptions: sub } = createSessionManagers(server.url, { onError });
		cleanups.push(() => Promise.all([s.close(), i.close(), sub.dispose()]));
		const good = recorder();
		const target = recorder();
		await s.create('c10-good', good);
		await s.create('c10-target', target);
		const legit = [
			s.send(['c10-good'], 'legit'),
			i.setClientInfo('c10', { name: 'x', version: '1' }),
			s.has('c10-good'),
		];
		const odd = [s.send(shifting('c10-target'), 'once'), s.send(shiftingElement('c10-target'), 'twice')];
		const more = s.send(['c10-good'], 'legit too');
		await expect(Promise.all([...legit, more])).resolves.toEqual([undefined, undefined, true, undefined]);
		// Read once: the id checked is the id sent.
		await expect(Promise.all(odd)).resolves.toEqual([undefined, undefined]);
		await eventually(() => good.chunks.length === 2 && target.chunks.length === 2, 5000, 'deliveries');
		expect(good.chunks).toEqual(['legit', 'legit too']);
		expect(target.chunks).toEqual(['once', 'twice']);
		expect(await i.getClientInfo('c10')).toEqual({ name: 'x', version: '1' });
	});

	it('a bad id among good ones rejects only that call, with a TypeError', async () => {
		const m = streams();
		const good = recorder();
		await m.create('c10-b', good);
		const results = await Promise.allSettled([
			m.send(['c10-b'], 'one'),
			m.send(['c10-b', Object.create(null)], 'bad'),
			m.send(['c10-b', evilProxy()], 'bad'),
			m.send(['c10-b'], 'two'),
		]);
		expect(results.map((r) => (r.status === 'fulfilled' ? 'resolved' : kind(r.reason)))).toEqual([
			'resolved',
			'TypeError',
			'TypeError',
			'resolved',
		]);
		await eventually(() => good.chunks.length === 2, 5000, 'deliveries');
		expect(good.chunks).toEqual(['one', 'two']);
	});

	it('shifting resourceSubscriptions and options: what was checked is what is used', async () => {
		const m = subscriptions();
		const s = stream();
		expect(await m.create({ id: 1, origin: 'c10', filters: { resourceSubscriptions: shiftingElement('x://c10') } }, s)).toBe(true);
		await m.send({ jsonrpc: '2.0', method: 'notifications/resources/updated', params: { uri: 'x://c10' } });
		await eventually(() => s.received.length === 1, 5000, 'delivery');
		let reads = 0;
		const options = {
			get keyPrefix() {
				return reads++ === 0 ? 'c10:' : 5;
			},
		};
		const prefixed = new RedisInfoSessionManager(server.url, options);
		cleanups.push(() => prefixed.close());
		await prefixed.setLogLevel('x', 'info');
		expect(await redis.get('c10:tmcp:log_level:x')).not.toBeNull();
		expect(reads).toBe(1);
	});

	it('a notification whose method getter shifts is published as checked', async () => {
		const m = subscriptions();
		const s = stream();
		await m.create({ id: 1, origin: 'c10-n', filters: { toolsListChanged: true } }, s);
		let reads = 0;
		const notification = {
			jsonrpc: '2.0',
			get method() {
				return reads++ === 0 ? 'notifications/tools/list_changed' : 42;
			},
		};
		await m.send(notification);
		await eventually(() => s.received.length === 1, 5000, 'delivery');
		expect(s.received[0].method).toBe('notifications/tools/list_changed');
	});
});
