// Property-based (fast-check): every public method of the three managers, called with
// hostile arguments (throwing getters, Proxies that throw on every trap, revoked Proxies,
// Symbols, cyclic objects, ~1 MB strings, lone surrogates, null-prototype objects, numbers,
// undefined, values that change between reads), several such calls in one tick with
// legitimate calls among them. Each call throws synchronously only where upstream's would
// (constructors: a TypeError), otherwise returns a promise that resolves or rejects with an
// Error; the legitimate calls succeed and deliver; nothing goes unhandled or uncaught; what
// reaches onError is an Error.
//
// The generated values are descriptions (plain data), built into hostile values inside the
// property: fast-check can then print a counterexample without touching a hostile value.
import fc from 'fast-check';
import { types } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
	createSessionManagers,
	RedisInfoSessionManager,
	RedisStreamSessionManager,
	RedisSubscriptionManager,
} from '../index.mjs';
import { eventually, recorder } from './helpers/redis.mjs';
import { useTestRedis } from './helpers/suite.mjs';
import { failOnUnhandledRejections } from './helpers/unhandled.mjs';

let server;
useTestRedis((s) => {
	server = s;
});
failOnUnhandledRejections();

const unhandled = [];
const uncaught = [];
const onUnhandled = (reason) => unhandled.push(reason);
const onUncaught = (error) => uncaught.push(error);
/** What the managers under test reported to onError. */
const errors = [];
/** Managers under test, on one shared connection: a bad call must not fail its neighbours. */
let m;
const legitRecorder = recorder();
const legitSubscription = { received: [], acknowledge() {}, send(n) { legitSubscription.received.push(n); }, close() {} };

beforeAll(async () => {
	process.on('unhandledRejection', onUnhandled);
	process.on('uncaughtException', onUncaught);
	m = createSessionManagers(server.url, { onError: (e) => errors.push(e) });
	await m.streams.create('legit-s', legitRecorder);
	await m.subscriptions.create({ id: 'legit', origin: 'legit', filters: { toolsListChanged: true } }, legitSubscription);
});

afterAll(async () => {
	await bounded(Promise.all([m?.streams.close(), m?.info.close(), m?.subscriptions.dispose()]), 'closing the managers');
	process.off('unhandledRejection', onUnhandled);
	process.off('uncaughtException', onUncaught);
	expect(uncaught.map(kind)).toEqual([]);
});

/** 'TypeError', 'Error' or 'not an Error', without calling into the value (it may be hostile). */
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
	return promise.then(
		() => 'resolved',
		(error) => kind(error),
	);
}

/** `promise`, or a rejection naming `what` if it has not settled within `ms` (a bound, not a measurement). */
function bounded(promise, what, ms = 15_000) {
	let timer;
	const hung = new Promise((_, reject) => {
		timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
	});
	return Promise.race([promise, hung]).finally(() => clearTimeout(timer));
}

// ---- Hostile values, built from descriptions ----

const HUGE = 'x'.repeat(1 << 20);

/** Property names the managers read from the objects they are given. */
const NAMES = [
	'id', 'origin', 'filters', 'toolsListChanged', 'promptsListChanged', 'resourcesListChanged',
	'resourceSubscriptions', 'method', 'params', 'jsonrpc', 'enqueue', 'close', 'error', 'acknowledge',
	'send', 'length', '0', 'toJSON', 'keyPrefix', 'commandTimeout', 'onError', 'nodes', 'ca',
];

/** The first read of each property of a 'flipping' object: something a manager accepts. */
const FIRST_READS = {
	id: 'p-flip',
	origin: 'p',
	filters: {},
	method: 'notifications/tools/list_changed',
	jsonrpc: '2.0',
	params: {},
	toolsListChanged: true,
	resourceSubscriptions: ['x://flip'],
	enqueue() {},
	close() {},
	acknowledge() {},
	send() {},
};

function unprintable() {
	const value = {
		toString() {
			throw value;
		},
	};
	return value;
}

/** A Proxy every trap of which throws (what `thrown` names). */
function throwingProxy(target, thrown) {
	const proxy = new Proxy(target, new Proxy({}, { get: () => () => { throw thrownValue(thrown, proxy); } }));
	return proxy;
}

function thrownValue(name, self) {
	switch (name) {
		case 'error':
			return new Error('thrown by a hostile value');
		case 'typeError':
			return new TypeError('thrown by a hostile value');
		case 'unprintable':
			return unprintable();
		case 'proxy':
			return throwingProxy({}, 'self');
		case 'self':
			return self;
		case 'symbol':
			return Symbol('thrown');
		case 'string':
			return 'thrown';
		default:
			return undefined;
	}
}

function targetOf(name) {
	if (name === 'function') return function () {};
	if (name === 'array') return [];
	return {};
}

/** The value a description stands for; a fresh one each time. */
function build(d) {
	switch (d.kind) {
		case 'getters': {
			const object = {};
			for (const name of [...NAMES, Symbol.iterator, Symbol.toPrimitive]) {
				Object.defineProperty(object, name, {
					get() {
						throw thrownValue(d.thrown, object);
					},
					enumerable: true,
				});
			}
			return object;
		}
		case 'flipping': {
			// Acceptable on the first read of each property, throwing on every later one.
			const object = {};
			for (const [name, value] of Object.entries(FIRST_READS)) {
				let reads = 0;
				Object.defineProperty(object, name, {
					get() {
						if (reads++ === 0) return value;
						throw thrownValue(d.thrown, object);
					},
					enumerable: true,
				});
			}
			return object;
		}
		case 'proxy':
			return throwingProxy(targetOf(d.target), d.thrown);
		case 'revoked': {
			const { proxy, revoke } = Proxy.revocable(targetOf(d.target), {});
			revoke();
			return proxy;
		}
		case 'symbol':
			return Symbol('arg');
		case 'cyclic': {
			const cyclic = d.array ? ['p-c'] : { id: 'p-c', origin: 'p', method: 'notifications/tools/list_changed' };
			if (d.array) cyclic.push(cyclic);
			else cyclic.self = cyclic;
			return cyclic;
		}
		case 'huge':
			return d.lone ? `${HUGE}\ud800` : HUGE;
		case 'lone': {
			const at = d.at % (d.text.length + 1);
			return `p-${d.text.slice(0, at)}${String.fromCharCode(d.unit)}${d.text.slice(at)}`;
		}
		case 'nullProto': {
			const object = Object.create(null);
			if (d.id) Object.assign(object, { id: 'p-np', origin: 'p', filters: Object.create(null), method: 'x' });
			return object;
		}
		case 'number':
			return d.value;
		case 'undefined':
			return undefined;
		case 'null':
			return null;
		case 'true':
			return true;
		case 'bigint':
			return 10n;
		case 'empty':
			return '';
		case 'shifting': {
			// Checked by one read, used by another: a string first, a Symbol after.
			const id = `p-${d.text}`;
			let reads = 0;
			const next = () => (reads++ === 0 ? id : Symbol(id));
			const array = [];
			if (d.element) Object.defineProperty(array, 0, { get: next, enumerable: true });
			else {
				array.push(id);
				array[Symbol.iterator] = function* () {
					yield next();
				};
			}
			return array;
		}
		case 'id':
			return `p-${d.text}`;
		case 'level':
			return 'info';
		case 'reason':
			return 'closed';
		case 'url':
			return server.url;
		case 'method':
			return 'notifications/tools/list_changed';
		case 'array':
			return d.items.map(build);
		case 'subscription':
			return { id: build(d.id), origin: build(d.origin), filters: build(d.filters) };
		case 'filters':
			return d.uris === null ? { toolsListChanged: d.tools } : { toolsListChanged: d.tools, resourceSubscriptions: build(d.uris) };
		case 'callbacks': {
			const behave = (how) => () => {
				if (how === 'throw') throw thrownValue(d.thrown);
				if (how === 'reject') return Promise.reject(thrownValue(d.thrown));
				return undefined;
			};
			return { acknowledge: behave(d.ack), send: behave(d.send), close: behave(d.close) };
		}
		case 'controller':
			return d.enqueue === 'throw'
				? { enqueue: () => { throw thrownValue(d.thrown); }, close() {}, error() {} }
				: recorder();
		case 'notification':
			return { jsonrpc: '2.0', method: build(d.method), params: build(d.params) };
		case 'options':
			return { [d.name]: build(d.value) };
		default:
			throw new Error(`unknown description ${d.kind}`);
	}
}

// ---- Descriptions ----

const thrown = fc.constantFrom('error', 'typeError', 'unprintable', 'proxy', 'self', 'undefined', 'symbol', 'string');
const text = fc.string({ maxLength: 8 });
const leaf = fc.oneof(
	fc.record({ kind: fc.constant('getters'), thrown }),
	fc.record({ kind: fc.constant('flipping'), thrown }),
	fc.record({ kind: fc.constant('proxy'), target: fc.constantFrom('object', 'function', 'array'), thrown }),
	fc.record({ kind: fc.constant('revoked'), target: fc.constantFrom('object', 'function') }),
	fc.constant({ kind: 'symbol' }),
	fc.record({ kind: fc.constant('cyclic'), array: fc.boolean() }),
	fc.record({ kind: fc.constant('huge'), lone: fc.boolean() }),
	fc.record({ kind: fc.constant('lone'), text, unit: fc.integer({ min: 0xd800, max: 0xdfff }), at: fc.nat() }),
	fc.record({ kind: fc.constant('nullProto'), id: fc.boolean() }),
	fc.record({ kind: fc.constant('number'), value: fc.oneof(fc.double(), fc.integer()) }),
	fc.constantFrom({ kind: 'undefined' }, { kind: 'null' }, { kind: 'true' }, { kind: 'bigint' }, { kind: 'empty' }),
	fc.record({ kind: fc.constant('shifting'), element: fc.boolean(), text }),
	fc.record({ kind: fc.constant('id'), text }),
);
const array = fc.record({ kind: fc.constant('array'), items: fc.array(leaf, { maxLength: 3 }) });
const filters = fc.record({ kind: fc.constant('filters'), tools: fc.boolean(), uris: fc.option(fc.oneof(leaf, array)) });
const subscription = fc.record({ kind: fc.constant('subscription'), id: leaf, origin: leaf, filters: fc.oneof(filters, leaf) });
const how = fc.constantFrom('ok', 'ok', 'throw', 'reject');
const callbacks = fc.record({ kind: fc.constant('callbacks'), ack: how, send: how, close: how, thrown });
const controller = fc.record({ kind: fc.constant('controller'), enqueue: fc.constantFrom('ok', 'throw'), thrown });
const notification = fc.record({
	kind: fc.constant('notification'),
	method: fc.oneof(fc.constant({ kind: 'method' }), leaf),
	params: leaf,
});
const options = fc.record({
	kind: fc.constant('options'),
	name: fc.constantFrom('keyPrefix', 'commandTimeout', 'sessionTtlSeconds', 'upstreamCompatible', 'onError', 'tls', 'sentinel', 'unknown'),
	value: leaf,
});
const value = fc.oneof(leaf, array, subscription, notification);
const url = fc.oneof(fc.constant({ kind: 'url' }), leaf);
const level = fc.oneof(fc.constant({ kind: 'level' }), leaf);
const reason = fc.oneof(fc.constant({ kind: 'reason' }), leaf);
const ctorOptions = fc.oneof(options, leaf);

/**
 * Every public method: its arguments' descriptions, and the call. `constructs`: a
 * constructor (or createSessionManagers), which may throw a TypeError synchronously, and
 * whose result is closed again.
 */
const METHODS = {
	'streams.create': { args: [leaf, fc.oneof(controller, leaf)], call: (id, c) => m.streams.create(id, c) },
	'streams.delete': { args: [leaf], call: (id) => m.streams.delete(id) },
	'streams.has': { args: [leaf], call: (id) => m.streams.has(id) },
	'streams.send': { args: [fc.oneof(array, leaf), leaf], call: (ids, data) => m.streams.send(ids, data) },
	'info.getClientInfo': { args: [leaf], call: (id) => m.info.getClientInfo(id) },
	'info.setClientInfo': { args: [leaf, value], call: (id, v) => m.info.setClientInfo(id, v) },
	'info.getClientCapabilities': { args: [leaf], call: (id) => m.info.getClientCapabilities(id) },
	'info.setClientCapabilities': { args: [leaf, value], call: (id, v) => m.info.setClientCapabilities(id, v) },
	'info.getLogLevel': { args: [leaf], call: (id) => m.info.getLogLevel(id) },
	'info.setLogLevel': { args: [leaf, level], call: (id, l) => m.info.setLogLevel(id, l) },
	'info.getSubscriptions': { args: [leaf], call: (uri) => m.info.getSubscriptions(uri) },
	'info.addSubscription': { args: [leaf, leaf], call: (id, uri) => m.info.addSubscription(id, uri) },
	'info.removeSubscription': { args: [leaf, leaf], call: (id, uri) => m.info.removeSubscription(id, uri) },
	'info.delete': { args: [leaf], call: (id) => m.info.delete(id) },
	'subscriptions.create': {
		args: [fc.oneof(subscription, leaf), fc.oneof(callbacks, leaf)],
		call: (s, c) => m.subscriptions.create(s, c),
	},
	'subscriptions.send': { args: [fc.oneof(notification, leaf)], call: (n) => m.subscriptions.send(n) },
	'subscriptions.close': { args: [leaf, leaf, reason], call: (id, o, r) => m.subscriptions.close(id, o, r) },
	// closeAll() without an origin closes every subscription, the legitimate one included:
	// that is its contract, so this one always names an origin.
	'subscriptions.closeAll': { args: [leaf, reason], call: (o, r) => m.subscriptions.closeAll(o ?? 'p', r) },
	'new RedisStreamSessionManager': {
		args: [url, ctorOptions],
		constructs: true,
		call: (u, o) => new RedisStreamSessionManager(u, o),
	},
	'new RedisInfoSessionManager': { args: [url, ctorOptions], constructs: true, call: (u, o) => new RedisInfoSessionManager(u, o) },
	'new RedisSubscriptionManager': { args: [url, ctorOptions], constructs: true, call: (u, o) => new RedisSubscriptionManager(u, o) },
	createSessionManagers: { args: [url, ctorOptions], constructs: true, call: (u, o) => createSessionManagers(u, o) },
};

const call = fc.oneof(...Object.entries(METHODS).map(([name, { args }]) => fc.tuple(fc.constant(name), fc.tuple(...args))));

/** Closes what a constructor call made. */
function closeMade(made) {
	if (made instanceof RedisStreamSessionManager || made instanceof RedisInfoSessionManager) return made.close();
	if (made instanceof RedisSubscriptionManager) return made.dispose();
	return Promise.all([made.streams.close(), made.info.close(), made.subscriptions.dispose()]);
}

let runs = 0;

describe('hostile arguments (fast-check)', () => {
	it('every call settles as it should and never disturbs the legitimate calls of its tick', async () => {
		await fc.assert(
			fc.asyncProperty(fc.array(call, { minLength: 1, maxLength: 4 }), async (calls) => {
				const token = `t${++runs}`;
				const results = [];
				let legit;
				const startLegit = () =>
					Promise.all([
						m.streams.send(['legit-s'], token),
						m.info.setClientInfo('legit-i', { token }),
						m.subscriptions.send({ jsonrpc: '2.0', method: 'notifications/tools/list_changed', params: { token } }),
					]);
				// One tick: the hostile calls, the legitimate ones in their midst.
				for (let i = 0; i < calls.length; i++) {
					if (i === 1) legit = startLegit();
					const [name, descriptions] = calls[i];
					const args = descriptions.map(build);
					try {
						const returned = METHODS[name].call(...args);
						// Handled at once, as a caller would: these are the caller's promises.
						const settled = returned instanceof Promise ? outcome(returned) : undefined;
						results.push({ name, returned, settled });
					} catch (error) {
						results.push({ name, threw: kind(error) });
					}
				}
				legit ??= startLegit();
				const legitSettled = outcome(legit);

				for (const { name, returned, settled, threw } of results) {
					if (METHODS[name].constructs) {
						if (threw !== undefined) expect(threw, `${name} threw`).toBe('TypeError');
						else await bounded(closeMade(returned), `closing what ${name} made`);
						continue;
					}
					expect(threw, `${name} threw synchronously`).toBeUndefined();
					expect(settled, `${name} returned a promise`).toBeDefined();
					expect(['resolved', 'TypeError', 'Error'], `${name} settled`).toContain(await bounded(settled, name));
				}

				expect(await bounded(legitSettled, 'the legitimate calls')).toBe('resolved');
				await eventually(
					() => legitRecorder.chunks.includes(token) && legitSubscription.received.some((n) => n.params?.token === token),
					10_000,
					`the legitimate deliveries of ${token}`,
				);
				expect(await m.info.getClientInfo('legit-i')).toEqual({ token });
				expect(unhandled.map(kind)).toEqual([]);
				expect(uncaught.map(kind)).toEqual([]);
				expect(errors.map(kind).filter((k) => k === 'not an Error')).toEqual([]);
				// The legitimate recorder keeps what broadcasts brought it: drop the big ones.
				legitRecorder.chunks.length = 0;
				legitRecorder.raw.length = 0;
			}),
			{ numRuns: 100 },
		);
	}, 120_000);
});
