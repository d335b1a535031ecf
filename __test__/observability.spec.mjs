// Observability (issue 24): stats() on every manager, the node:diagnostics_channel
// channels (tmcp-redis:command / connection / topology / error), the OpenTelemetry entry
// and the stable `code` of every Error, against real redis-server processes.
import { execFileSync } from 'node:child_process';
import dc from 'node:diagnostics_channel';
import { fileURLToPath } from 'node:url';
import { InMemoryMetricExporter, AggregationTemporality, MeterProvider, PeriodicExportingMetricReader } from '@opentelemetry/sdk-metrics';
import { describe, expect, it } from 'vitest';
import {
	CHANNELS,
	createSessionManagers,
	ERROR_CODES,
	RedisInfoSessionManager,
	RedisStreamSessionManager,
	RedisSubscriptionManager,
} from '../index.mjs';
import { eventually, recorder, startRedis } from './helpers/redis.mjs';
import { currentMasterPort, MASTER_NAME, startSentinelSet } from './helpers/sentinel.mjs';
import { useCleanups, useSteps, useTestRedis } from './helpers/suite.mjs';
import { failOnUnhandledRejections } from './helpers/unhandled.mjs';

let server;
let redis;
useTestRedis((s, r) => {
	server = s;
	redis = r;
});
const cleanups = useCleanups();
failOnUnhandledRejections();

const root = fileURLToPath(new URL('..', import.meta.url));
/** Where the test server is, as payloads name it. */
const where = () => {
	const url = new URL(server.url);
	return { serverAddress: url.hostname, serverPort: Number(url.port || 6379) };
};

function streamsManager(options) {
	const m = new RedisStreamSessionManager(server.url, options);
	cleanups.push(() => m.close());
	return m;
}
function infoManager(options = { onError: () => {} }, url = server.url) {
	const m = new RedisInfoSessionManager(url, options);
	cleanups.push(() => m.close());
	return m;
}
function subscriptionManager(options) {
	const m = new RedisSubscriptionManager(server.url, options);
	cleanups.push(() => m.dispose());
	return m;
}

/** Callbacks of a subscriptions/listen stream that record what they receive. */
function listener() {
	const s = { received: [], acknowledge() {}, send: (n) => void s.received.push(n), close() {} };
	return s;
}
const toolsChanged = { jsonrpc: '2.0', method: 'notifications/tools/list_changed' };

/** Subscribes `handler` to a channel for the rest of the test. */
function listen(name, handler) {
	dc.subscribe(name, handler);
	cleanups.push(() => dc.unsubscribe(name, handler));
}

/** Subscribes to every sub-channel of the command trace; returns what each saw, in order. */
function traceCommands() {
	/** @type {[string, any][]} */
	const seen = [];
	const handlers = Object.fromEntries(
		['start', 'end', 'asyncStart', 'asyncEnd', 'error'].map((event) => [event, (context) => seen.push([event, context])]),
	);
	const tracing = dc.tracingChannel(CHANNELS.command);
	tracing.subscribe(handlers);
	cleanups.push(() => tracing.unsubscribe(handlers));
	return seen;
}

/** The rejection of `promise` (fails when it resolves). */
async function rejection(promise) {
	const outcome = await promise.then(
		(value) => ({ value }),
		(error) => ({ error }),
	);
	if (!('error' in outcome)) throw new Error(`expected a rejection, got ${JSON.stringify(outcome.value)}`);
	return outcome.error;
}

/** Every value is a finite number, and the object is a plain one. */
function expectFiniteNumbers(stats) {
	expect(Object.getPrototypeOf(stats)).toBe(Object.prototype);
	for (const [name, value] of Object.entries(stats)) {
		expect(Number.isFinite(value), `${name} = ${value}`).toBe(true);
	}
}

const COMMON = ['commandsInFlight', 'commands', 'commandErrors', 'timeouts', 'reconnects', 'topologyChanges', 'connections'];

describe('stats()', () => {
	it('every manager: a fresh plain object of finite numbers, with the listed fields', async () => {
		const { streams, info, subscriptions } = createSessionManagers(server.url);
		cleanups.push(() => streams.close(), () => info.close(), () => subscriptions.dispose());
		const all = [
			[streams, [...COMMON, 'sessions', 'sent', 'delivered', 'dropped', 'subscriptionsWanted', 'subscriptionsConfirmed', 'deliveryQueue']],
			[info, COMMON],
			[subscriptions, [...COMMON, 'subscriptions', 'notificationsSent', 'notificationsDelivered', 'ignored', 'unwanted', 'deliveryQueue']],
		];
		await streams.create('fresh', recorder());
		for (const [manager, fields] of all) {
			const first = manager.stats();
			expectFiniteNumbers(first);
			for (const field of fields) expect(first, field).toHaveProperty(field);
			const second = manager.stats();
			expect(second).not.toBe(first);
			first.commands = -1;
			expect(manager.stats().commands).not.toBe(-1);
		}
		// Closed: counters stay, gauges read zero.
		await streams.close();
		const closed = streams.stats();
		expectFiniteNumbers(closed);
		expect(closed).toMatchObject({ sessions: 0, subscriptionsWanted: 0, subscriptionsConfirmed: 0, commandsInFlight: 0 });
		expect(closed.commands).toBeGreaterThanOrEqual(2);
	});

	it('3 creates and 5 targeted sends: sessions is 3, sent and delivered rise by 5', async () => {
		const holder = streamsManager();
		const sender = streamsManager();
		const recs = [recorder(), recorder(), recorder()];
		for (let i = 0; i < 3; i++) await holder.create(`st${i}`, recs[i]);
		const before = holder.stats();
		expect(before).toMatchObject({ sessions: 3, subscriptionsWanted: 3, subscriptionsConfirmed: 3 });
		const sentBefore = sender.stats().sent;
		for (const i of [0, 1, 2, 0, 1]) await sender.send([`st${i}`], `m${i}`);
		await eventually(() => recs.reduce((n, r) => n + r.chunks.length, 0) === 5, 5000, 'five deliveries');
		const after = holder.stats();
		expect(after.sessions).toBe(3);
		expect(after.delivered - before.delivered).toBe(5);
		expect(after.dropped).toBe(before.dropped);
		expect(after.deliveryQueue).toBe(0);
		expect(sender.stats()).toMatchObject({ sent: sentBefore + 5, commandsInFlight: 0, commandErrors: 0 });
		// One targeted send to two sessions counts two; a broadcast one (and reaches all 3).
		await sender.send(['st0', 'st1'], 'two');
		await sender.send(undefined, 'all');
		await eventually(() => recs.every((r) => r.chunks.includes('all')), 5000, 'the broadcast');
		expect(sender.stats().sent).toBe(sentBefore + 8);
		expect(holder.stats().delivered - before.delivered).toBe(10);
	});

	it('after CLIENT KILL TYPE pubsub: reconnects rises, subscriptionsConfirmed returns to 3, lost and ready are published', async () => {
		const step = useSteps();
		const errors = [];
		const holder = streamsManager({ onError: (e) => errors.push(e) });
		const sender = streamsManager();
		const recs = [recorder(), recorder(), recorder()];
		for (let i = 0; i < 3; i++) await holder.create(`k${i}`, recs[i]);
		const events = [];
		listen(CHANNELS.connection, (event) => events.push(event));
		const reported = [];
		listen(CHANNELS.error, (payload) => reported.push(payload));
		const before = holder.stats();
		expect(before.subscriptionsConfirmed).toBe(3);

		step('kill');
		await redis.sendCommand(['CLIENT', 'KILL', 'TYPE', 'pubsub']);
		await eventually(
			() => {
				const now = holder.stats();
				return now.reconnects > before.reconnects && now.subscriptionsConfirmed === 3;
			},
			10_000,
			'the reconnection and the restored subscriptions',
		);
		step('delivery');
		await sender.send(['k1'], 'after the kill');
		await eventually(() => recs[1].chunks.includes('after the kill'), 5000, 'delivery after the kill');
		const pubsub = events.filter((e) => e.role === 'pubsub');
		expect(pubsub.map((e) => e.event)).toContain('lost');
		expect(pubsub.slice(pubsub.findIndex((e) => e.event === 'lost')).map((e) => e.event)).toContain('ready');
		for (const event of events) {
			expect(Object.keys(event).sort()).toEqual(['event', 'role', 'serverAddress', 'serverPort']);
			expect(event).toMatchObject(where());
		}
		// onError heard of it, with a code, and tmcp-redis:error got the same Error.
		const lost = errors.find((e) => /lost the Redis pub\/sub connection/.test(e.message));
		expect(lost?.code).toBe(ERROR_CODES.CONNECTION);
		expect(reported.find((p) => p.error === lost)).toEqual({ error: lost, code: ERROR_CODES.CONNECTION });
	});

	it('info: one round trip serves three getters and counts once; failures count as errors', async () => {
		const info = infoManager();
		await info.setClientInfo('i1', { name: 'n', version: '1' });
		await info.setClientCapabilities('i1', {});
		await info.setLogLevel('i1', 'info');
		const before = info.stats();
		await Promise.all([info.getClientInfo('i1'), info.getClientCapabilities('i1'), info.getLogLevel('i1')]);
		await redis.set('tmcp:subscriptions:file:///wrong', 'a string');
		await rejection(info.addSubscription('i1', 'file:///wrong'));
		const after = info.stats();
		expect(after.commands - before.commands).toBe(2);
		expect(after.commandErrors - before.commandErrors).toBe(1);
		expect(after).toMatchObject({ commandsInFlight: 0, timeouts: 0, connections: 1 });
	});

	it('subscriptions: notificationsSent, notificationsDelivered and subscriptions', async () => {
		const a = subscriptionManager();
		const b = subscriptionManager();
		const one = listener();
		const two = listener();
		await a.create({ id: 1, origin: 'o', filters: { toolsListChanged: true } }, one);
		await a.create({ id: 2, origin: 'o', filters: { toolsListChanged: true } }, two);
		for (let i = 0; i < 3; i++) await b.send(toolsChanged);
		await eventually(() => one.received.length === 3 && two.received.length === 3, 5000, 'the notifications');
		expect(b.stats()).toMatchObject({ notificationsSent: 3, commands: 3, commandsInFlight: 0 });
		expect(a.stats()).toMatchObject({ subscriptions: 2, active: 2, notificationsDelivered: 6, subscribed: 1, deliveryQueue: 0, dropped: 0 });
	});
});

describe('error codes', () => {
	it('NOT_FOUND, BAD_DATA, REPLY, CLOSED and BAD_ARGUMENT, as index.d.ts lists them', async () => {
		const info = infoManager();
		expect((await rejection(info.getClientInfo('nobody'))).code).toBe('TMCP_REDIS_NOT_FOUND');
		await redis.set('tmcp:client_info:corrupt', 'not json');
		await redis.sAdd('tmcp:client_capabilities:corrupt', 'a set');
		await redis.set('tmcp:log_level:corrupt', 'loud');
		for (const read of [info.getClientInfo('corrupt'), info.getClientCapabilities('corrupt'), info.getLogLevel('corrupt')]) {
			expect((await rejection(read)).code).toBe('TMCP_REDIS_BAD_DATA');
		}
		// An error reply: a user that may not publish.
		await redis.sendCommand(['ACL', 'SETUSER', 'obs-nopub', 'on', '>pw', '~*', '&*', '+@all', '-publish']);
		cleanups.push(() => redis.sendCommand(['ACL', 'DELUSER', 'obs-nopub']));
		const url = new URL(server.url);
		url.username = 'obs-nopub';
		url.password = 'pw';
		const limited = new RedisStreamSessionManager(url.href);
		cleanups.push(() => limited.close());
		const refused = await rejection(limited.send(['x'], 'y'));
		expect(refused.message).toMatch(/NOPERM/);
		expect(refused.code).toBe('TMCP_REDIS_REPLY');
		// Bad arguments: TypeErrors with a code, synchronous or rejected as upstream's are.
		const typed = [
			await rejection(limited.send('x', 'y')),
			await rejection(limited.has('')),
			await rejection(info.setLogLevel('x', 'loud')),
			await rejection(info.getClientInfo(/** @type {any} */ (Proxy.revocable({}, {}).proxy))),
		];
		try {
			new RedisInfoSessionManager(server.url, { commandTimeout: -1 });
		} catch (error) {
			typed.push(error);
		}
		expect(typed).toHaveLength(5);
		for (const error of typed) {
			expect(error).toBeInstanceOf(TypeError);
			expect(error.code).toBe('TMCP_REDIS_BAD_ARGUMENT');
		}
		// Closed managers.
		const { streams, info: shared, subscriptions } = createSessionManagers(server.url);
		await streams.close();
		await shared.close();
		await subscriptions.dispose();
		for (const call of [
			streams.send(['x'], 'y'),
			streams.create('x', recorder()),
			shared.getClientInfo('x'),
			subscriptions.send(toolsChanged),
			subscriptions.create({ id: 1, origin: 'o', filters: {} }, listener()),
		]) {
			expect((await rejection(call)).code).toBe('TMCP_REDIS_CLOSED');
		}
		expect(Object.values(ERROR_CODES).sort()).toEqual(
			[
				'TMCP_REDIS_BAD_ARGUMENT',
				'TMCP_REDIS_BAD_DATA',
				'TMCP_REDIS_CALLBACK',
				'TMCP_REDIS_CLOSED',
				'TMCP_REDIS_CONNECTION',
				'TMCP_REDIS_NOT_FOUND',
				'TMCP_REDIS_NOT_SENT',
				'TMCP_REDIS_REPLY',
				'TMCP_REDIS_TIMEOUT',
			].sort(),
		);
	});

	it('CONNECTION: no usable connection (the server refuses the credentials)', async () => {
		const url = new URL(server.url);
		url.username = 'no-such-user';
		url.password = 'pw';
		const errors = [];
		const info = infoManager({ commandTimeout: 1000, onError: (e) => errors.push(e) }, url.href);
		const error = await rejection(info.getClientInfo('x'));
		expect(error.message).toMatch(/WRONGPASS/);
		expect(error.code).toBe('TMCP_REDIS_CONNECTION');
		// A setter's failure reaches onError with the same code.
		await rejection(info.setLogLevel('x', 'info'));
		expect(errors.map((e) => e.code)).toEqual(['TMCP_REDIS_CONNECTION']);
		expect(info.stats()).toMatchObject({ commandErrors: 2, commandsInFlight: 0, connections: 0 });
	});

	it('TIMEOUT (may still have run) and NOT_SENT (queued past commandTimeout) while Redis is frozen; stats() counts both as timeouts', async () => {
		const frozen = await startRedis();
		let stopped = false;
		cleanups.push(async () => {
			if (stopped) frozen.signal('SIGCONT');
			await frozen.stop();
		});
		const streams = new RedisStreamSessionManager(frozen.url, { commandTimeout: 500 });
		cleanups.push(() => streams.close());
		expect(await streams.has('warm')).toBe(false);
		frozen.signal('SIGSTOP');
		stopped = true;
		// One tick: 64 pipelines of 32 calls are handed to the connection, the rest wait
		// behind them until their deadline has passed: never sent.
		const calls = Array.from({ length: 2500 }, (_, i) => rejection(streams.has(`f${i}`)));
		const errors = await Promise.all(calls);
		frozen.signal('SIGCONT');
		stopped = false;
		const codes = new Set(errors.map((e) => e.code));
		expect([...codes].sort()).toEqual(['TMCP_REDIS_NOT_SENT', 'TMCP_REDIS_TIMEOUT']);
		for (const error of errors) {
			expect(error.message).toMatch(error.code === 'TMCP_REDIS_TIMEOUT' ? /may still have run/ : /was not sent/);
		}
		expect(streams.stats()).toMatchObject({ timeouts: 2500, commandErrors: 2500, commandsInFlight: 0 });
	});

	it('onError gets coded errors: a controller that throws is TMCP_REDIS_CALLBACK, also on tmcp-redis:error', async () => {
		const errors = [];
		const holder = streamsManager({ onError: (e) => errors.push(e) });
		const sender = streamsManager();
		const reported = [];
		listen(CHANNELS.error, (payload) => reported.push(payload));
		await holder.create('throws', {
			enqueue() {
				throw new Error('stream gone');
			},
			close() {},
		});
		await sender.send(['throws'], 'x');
		await eventually(() => errors.length === 1, 5000, 'the report');
		expect(errors[0].code).toBe('TMCP_REDIS_CALLBACK');
		expect(reported).toEqual([{ error: errors[0], code: 'TMCP_REDIS_CALLBACK' }]);
		expect(holder.stats()).toMatchObject({ sessions: 0, dropped: 1 });
	});
});

describe('diagnostics_channel', () => {
	it('with no subscriber nothing is traced or published', async () => {
		// TracingChannel's methods live on its prototype, shared by every instance.
		const tracingPrototype = Object.getPrototypeOf(dc.tracingChannel(CHANNELS.command));
		const { tracePromise } = tracingPrototype;
		let traced = 0;
		tracingPrototype.tracePromise = function (...args) {
			if (this.start.name === `tracing:${CHANNELS.command}:start`) traced++;
			return tracePromise.apply(this, args);
		};
		const spied = [
			[dc.channel(`tracing:${CHANNELS.command}:start`), 'runStores'],
			...['start', 'end', 'asyncStart', 'asyncEnd', 'error'].map((s) => [dc.channel(`tracing:${CHANNELS.command}:${s}`), 'publish']),
			[dc.channel(CHANNELS.connection), 'publish'],
			[dc.channel(CHANNELS.topology), 'publish'],
			[dc.channel(CHANNELS.error), 'publish'],
		];
		let calls = 0;
		for (const [channel, method] of spied) {
			expect(channel.hasSubscribers).toBe(false);
			channel[method] = () => calls++;
		}
		try {
			const errors = [];
			const { streams, info, subscriptions } = createSessionManagers(server.url, { onError: (e) => errors.push(e) });
			cleanups.push(() => streams.close(), () => info.close(), () => subscriptions.dispose());
			const rec = recorder();
			await streams.create('quiet', rec);
			await streams.create('throws', { enqueue: () => { throw new Error('gone'); }, close() {} });
			await streams.send(['quiet', 'throws'], 'x');
			await info.setClientInfo('quiet', {});
			await info.getClientInfo('quiet');
			await subscriptions.create({ id: 1, origin: 'o', filters: { toolsListChanged: true } }, listener());
			await subscriptions.send(toolsChanged);
			await eventually(() => rec.chunks.length === 1 && errors.length === 1, 5000, 'the delivery and the report');
			// Connections were made (ready events crossed from the native side): unpublished.
			expect(streams.stats().connections).toBe(2);
		} finally {
			for (const [channel, method] of spied) delete channel[method];
			tracingPrototype.tracePromise = tracePromise;
		}
		expect(calls).toBe(0);
		expect(traced).toBe(0);
	});

	it('tmcp-redis:command traces every call with { operation, manager, serverAddress, serverPort, database } and nothing else', async () => {
		const seen = traceCommands();
		const { streams, info, subscriptions } = createSessionManagers(server.url);
		cleanups.push(() => streams.close(), () => info.close(), () => subscriptions.dispose());
		const secretId = 'session-id-never-shown';
		const secretData = 'payload-never-shown';
		await streams.create(secretId, recorder());
		await streams.send([secretId], secretData);
		await streams.has(secretId);
		await info.setClientInfo(secretId, { name: secretData, version: '1' });
		await info.getClientInfo(secretId);
		await info.getSubscriptions('file:///never-shown');
		await subscriptions.create({ id: 1, origin: 'o', filters: { toolsListChanged: true } }, listener());
		await subscriptions.send({ ...toolsChanged, params: { secretData } });
		await streams.delete(secretId);
		await redis.set('tmcp:subscriptions:file:///wrong-type', 'a string');
		await rejection(info.addSubscription(secretId, 'file:///wrong-type'));

		const contexts = [...new Set(seen.map(([, context]) => context))];
		expect(contexts.map((c) => `${c.manager}.${c.operation}`)).toEqual([
			'streams.create',
			'streams.send',
			'streams.has',
			'info.setClientInfo',
			'info.getClientInfo',
			'info.getSubscriptions',
			'subscriptions.create',
			'subscriptions.send',
			'streams.delete',
			'info.addSubscription',
		]);
		for (const context of contexts) {
			const events = seen.filter(([, c]) => c === context).map(([event]) => event);
			const failed = context.operation === 'addSubscription';
			expect(events, context.operation).toEqual(failed ? ['start', 'end', 'error', 'asyncStart', 'asyncEnd'] : ['start', 'end', 'asyncStart', 'asyncEnd']);
			const { result, error, ...ours } = context;
			expect(Object.keys(ours).sort()).toEqual(['database', 'manager', 'operation', 'serverAddress', 'serverPort']);
			expect(ours).toMatchObject({ ...where(), database: 0 });
			expect(JSON.stringify(ours)).not.toMatch(/never-shown/);
			if (failed) expect(error.code).toBe('TMCP_REDIS_BAD_DATA');
		}
		// The database of the URL.
		const db3 = infoManager(undefined, `${server.url}/3`);
		await db3.setLogLevel('x', 'info');
		expect(seen.at(-1)[1]).toMatchObject({ operation: 'setLogLevel', database: 3 });
	});
});

describe('OpenTelemetry (@tmcp-rs/session-manager-redis/otel)', () => {
	it('the main entry never loads @opentelemetry/api, nor does the otel entry until instrument() needs the global provider', () => {
		const script = `
			require(${JSON.stringify(root)});
			const { instrument } = require(${JSON.stringify(`${root}lib/otel.js`)});
			const loaded = () => Object.keys(require.cache).filter((k) => k.includes('@opentelemetry')).length;
			const before = loaded();
			instrument({ meterProvider: { getMeter: () => new Proxy({}, { get: () => () => ({}) }) } });
			const given = loaded();
			instrument();
			console.log(JSON.stringify([before, given, loaded() > 0]));`;
		const out = execFileSync(process.execPath, ['-e', script], { encoding: 'utf8' });
		expect(JSON.parse(out)).toEqual([0, 0, true]);
	});

	it('instrument({ meterProvider }) records operation durations and reads stats() at each collection', async () => {
		const { instrument } = await import('@tmcp-rs/session-manager-redis/otel');
		const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
		const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 3_600_000 });
		const meterProvider = new MeterProvider({ readers: [reader] });
		cleanups.push(() => meterProvider.shutdown());
		const collect = async () => {
			exporter.reset();
			await reader.forceFlush();
			const metrics = exporter.getMetrics().flatMap((r) => r.scopeMetrics.flatMap((s) => s.metrics));
			return (name) => metrics.find((m) => m.descriptor.name === name)?.dataPoints ?? [];
		};
		const handle = instrument({ meterProvider });
		cleanups.push(() => handle.dispose());
		const sum = (points, attributes = {}) =>
			points.filter((p) => Object.entries(attributes).every(([k, v]) => p.attributes[k] === v)).reduce((n, p) => n + p.value, 0);

		const baseline = await collect();
		const sentBefore = sum(baseline('tmcp.session_manager.messages'), { direction: 'sent', 'tmcp.session_manager.kind': 'streams' });
		const deliveredBefore = sum(baseline('tmcp.session_manager.messages'), { direction: 'delivered', 'tmcp.session_manager.kind': 'streams' });

		const holder = streamsManager();
		const sender = streamsManager();
		const info = infoManager();
		const recs = [recorder(), recorder()];
		await holder.create('otel-a', recs[0]);
		await holder.create('otel-b', recs[1]);
		for (const id of ['otel-a', 'otel-b', 'otel-a']) await sender.send([id], 'm');
		await eventually(() => recs[0].chunks.length === 2 && recs[1].chunks.length === 1, 5000, 'deliveries');
		await redis.set('tmcp:subscriptions:file:///otel-wrong', 'a string');
		await rejection(info.addSubscription('otel-a', 'file:///otel-wrong'));

		const metric = await collect();
		const durations = metric('db.client.operation.duration');
		const sends = durations.filter((p) => p.attributes['db.operation.name'] === 'send');
		expect(sends.reduce((n, p) => n + p.value.count, 0)).toBe(3);
		expect(sends[0].attributes).toEqual({
			'db.system.name': 'redis',
			'db.operation.name': 'send',
			'db.namespace': '0',
			'server.address': where().serverAddress,
			'server.port': where().serverPort,
			'tmcp.session_manager.kind': 'streams',
		});
		const failed = durations.find((p) => p.attributes['db.operation.name'] === 'addSubscription');
		expect(failed.attributes['error.type']).toBe('TMCP_REDIS_BAD_DATA');
		for (const point of durations) {
			expect(JSON.stringify(point.attributes)).not.toMatch(/otel-/);
			expect(point.value.sum).toBeGreaterThanOrEqual(0);
		}
		expect(sum(metric('tmcp.session_manager.sessions'))).toBe(2);
		const messages = metric('tmcp.session_manager.messages');
		expect(sum(messages, { direction: 'sent', 'tmcp.session_manager.kind': 'streams' }) - sentBefore).toBe(3);
		expect(sum(messages, { direction: 'delivered', 'tmcp.session_manager.kind': 'streams' }) - deliveredBefore).toBe(3);
		expect(metric('tmcp.session_manager.reconnects')).toHaveLength(1);
		const connections = metric('db.client.connection.count');
		// Three command connections and the holder's pub/sub one (the sender's never
		// subscribed anything, so it never connected).
		expect(sum(connections)).toBe(4);
		expect(connections[0].attributes).toEqual({
			'db.client.connection.pool.name': `${where().serverAddress}:${where().serverPort}`,
			'db.client.connection.state': 'used',
		});

		// Closing a manager does not make a counter go down.
		await sender.close();
		const later = await collect();
		expect(sum(later('tmcp.session_manager.messages'), { direction: 'sent', 'tmcp.session_manager.kind': 'streams' }) - sentBefore).toBe(3);

		// dispose() stops recording.
		handle.dispose();
		await info.setLogLevel('otel-a', 'info');
		const after = await collect();
		expect(after('db.client.operation.duration').filter((p) => p.attributes['db.operation.name'] === 'setLogLevel')).toEqual([]);
	});
});

describe('Sentinel failover', () => {
	it('tmcp-redis:topology hears the switch, stats() counts it, payloads name the new master', async () => {
		const step = useSteps();
		const set = await startSentinelSet();
		cleanups.push(() => set.stop());
		const topology = [];
		listen(CHANNELS.topology, (event) => topology.push(event));
		const seen = traceCommands();
		const options = { sentinel: { nodes: set.nodes }, commandTimeout: 2000, connectTimeout: 1000, onError: () => {} };
		const streams = new RedisStreamSessionManager(`redis://${MASTER_NAME}`, options);
		cleanups.push(() => streams.close());
		const rec = recorder();
		step('create');
		await streams.create('sf', rec);
		const before = await currentMasterPort(set.sentinels[0].port);
		// Until the master is resolved a payload names the group; then the master.
		expect(seen[0][1]).toMatchObject({ operation: 'create', serverAddress: MASTER_NAME, serverPort: undefined });
		await eventually(
			async () => {
				await streams.has('sf');
				return seen.at(-1)[1].serverPort === before;
			},
			5000,
			'payloads naming the master',
		);
		expect(seen.at(-1)[1]).toMatchObject({ operation: 'has', serverAddress: '127.0.0.1', serverPort: before });
		step('failover');
		await set.failover();
		await eventually(async () => (await currentMasterPort(set.sentinels[0].port)) !== before, 20_000, 'the promotion');
		const after = await currentMasterPort(set.sentinels[0].port);
		step('followed');
		await eventually(() => topology.some((e) => e.role === 'pubsub') && topology.some((e) => e.role === 'command'), 20_000, 'both connections following');
		for (const event of topology) expect(event).toEqual({ event: 'master-switched', role: event.role, serverAddress: '127.0.0.1', serverPort: after });
		expect(streams.stats().topologyChanges).toBeGreaterThanOrEqual(1);
		step('delivery');
		await eventually(
			async () => {
				await streams.send(['sf'], 'moved').catch(() => {});
				return rec.chunks.includes('moved');
			},
			20_000,
			'delivery on the new master',
		);
		expect(seen.at(-1)[1]).toMatchObject({ operation: 'send', serverPort: after });
	});
});
