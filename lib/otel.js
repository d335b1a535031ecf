'use strict';
// `@tmcp-rs/session-manager-redis/otel`: OpenTelemetry metrics, per the semantic
// conventions for database clients, built as a subscriber of this package's diagnostics
// channels (durations) plus `stats()` of every live manager (the rest, read at each
// collection). `@opentelemetry/api` is an optional peer dependency: loaded only when no
// `meterProvider` is given (for the global one); the main entry never loads this file.

const dc = require('node:diagnostics_channel');
const { performance } = require('node:perf_hooks');
const { CHANNELS, OBSERVED, liveManagers, retired } = require('./observe.js');
const { version } = require('../package.json');

/** Buckets (seconds) the semantic conventions advise for db.client.operation.duration. */
const DURATION_BUCKETS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10];
/** Custom attribute: which manager (`streams`, `info`, `subscriptions`). */
const KIND = 'tmcp.session_manager.kind';

/**
 * Registers the package's metrics with `meterProvider` (default: the global one of
 * `@opentelemetry/api`). Returns a handle whose `dispose()` stops recording.
 *
 * - `db.client.operation.duration` (histogram, s): each manager call that goes to Redis;
 *   `db.system.name=redis`, `db.operation.name` (the method), `db.namespace` (the
 *   database), `server.address`, `server.port`, `error.type` (the error's `code`) on
 *   failure, `tmcp.session_manager.kind`.
 * - `db.client.connection.count` (updown counter): open connections, by
 *   `db.client.connection.pool.name` (the server) and `db.client.connection.state`.
 * - `tmcp.session_manager.sessions` (updown counter): stream sessions held here.
 * - `tmcp.session_manager.messages` (counter): `direction` sent / delivered / dropped,
 *   by `tmcp.session_manager.kind` (streams: SSE messages; subscriptions: notifications).
 * - `tmcp.session_manager.reconnects` (counter): connections re-established.
 *
 * No session id, payload or credential is ever an attribute.
 * @param {{ meterProvider?: { getMeter(name: string, version?: string, options?: object): any } }} [options]
 */
function instrument({ meterProvider } = {}) {
	const provider = meterProvider ?? require('@opentelemetry/api').metrics.getMeterProvider();
	const meter = provider.getMeter('@tmcp-rs/session-manager-redis', version);

	const duration = meter.createHistogram('db.client.operation.duration', {
		unit: 's',
		description: 'Duration of database client operations.',
		advice: { explicitBucketBoundaries: DURATION_BUCKETS },
	});
	const connections = meter.createObservableUpDownCounter('db.client.connection.count', {
		unit: '{connection}',
		description: 'The number of connections that are currently in state described by the state attribute.',
	});
	const sessions = meter.createObservableUpDownCounter('tmcp.session_manager.sessions', {
		unit: '{session}',
		description: 'Stream sessions held by this process.',
	});
	const messages = meter.createObservableCounter('tmcp.session_manager.messages', {
		unit: '{message}',
		description: 'Messages published (sent), handed to a local stream (delivered), or dropped.',
	});
	const reconnects = meter.createObservableCounter('tmcp.session_manager.reconnects', {
		unit: '{reconnect}',
		description: 'Connections to Redis re-established.',
	});
	const observables = [connections, sessions, messages, reconnects];

	/** @param {any} result a BatchObservableResult */
	const observe = (result) => {
		const totals = {
			streams: { sessions: 0, sent: 0, delivered: 0, dropped: 0 },
			subscriptions: { sent: 0, delivered: 0, dropped: 0 },
		};
		let reconnected = 0;
		/** Open connections by pool (server). @type {Map<string, number>} */
		const open = new Map();
		const count = (/** @type {string} */ pool, /** @type {number} */ n) => open.set(pool, (open.get(pool) ?? 0) + n);
		/** @type {Set<any>} */
		const links = new Set();
		for (const manager of liveManagers()) {
			const { kind, link, counters } = manager[OBSERVED]();
			links.add(link);
			const into = /** @type {any} */ (totals)[kind];
			if (into) add(into, counters);
			reconnected += counters.reconnects ?? 0;
			count(poolOf(link), counters.connections ?? 0);
		}
		for (const link of links) {
			if (link.closed) continue;
			const [linkReconnects, , , connected] = link.figures();
			reconnected += linkReconnects;
			count(poolOf(link), connected);
		}
		for (const kind of ['streams', 'subscriptions', 'info', 'link']) {
			const done = retired[kind];
			if (!done) continue;
			reconnected += done.reconnects ?? 0;
			if (kind === 'streams' || kind === 'subscriptions') add(totals[kind], done);
		}
		result.observe(sessions, totals.streams.sessions);
		for (const kind of /** @type {const} */ (['streams', 'subscriptions'])) {
			for (const direction of /** @type {const} */ (['sent', 'delivered', 'dropped'])) {
				result.observe(messages, totals[kind][direction], { direction, [KIND]: kind });
			}
		}
		result.observe(reconnects, reconnected);
		for (const [pool, n] of open) {
			result.observe(connections, n, { 'db.client.connection.pool.name': pool, 'db.client.connection.state': 'used' });
		}
	};
	meter.addBatchObservableCallback(observe, observables);

	/** When each traced call started. @type {WeakMap<object, number>} */
	const started = new WeakMap();
	const handlers = {
		start(/** @type {any} */ context) {
			started.set(context, performance.now());
		},
		end() {},
		asyncStart() {},
		error() {},
		asyncEnd(/** @type {any} */ context) {
			const at = started.get(context);
			if (at === undefined) return;
			started.delete(context);
			duration.record((performance.now() - at) / 1000, attributesOf(context));
		},
	};
	const tracing = dc.tracingChannel(CHANNELS.command);
	tracing.subscribe(handlers);

	let disposed = false;
	return {
		/** Stops recording durations and observing counters. */
		dispose() {
			if (disposed) return;
			disposed = true;
			tracing.unsubscribe(handlers);
			meter.removeBatchObservableCallback(observe, observables);
		},
	};
}

/**
 * The attributes of one operation: what and where, never an argument.
 * @param {{ operation: string, manager: string, serverAddress?: string, serverPort?: number, database: number, error?: any }} context
 */
function attributesOf(context) {
	/** @type {Record<string, string | number>} */
	const attributes = {
		'db.system.name': 'redis',
		'db.operation.name': context.operation,
		'db.namespace': String(context.database),
		[KIND]: context.manager,
	};
	if (context.serverAddress !== undefined) attributes['server.address'] = context.serverAddress;
	if (context.serverPort !== undefined) attributes['server.port'] = context.serverPort;
	if (context.error !== undefined) attributes['error.type'] = errorType(context.error);
	return attributes;
}

/** The `code` of our errors, else the error's name (`_OTHER` when it has none). @param {any} error */
function errorType(error) {
	try {
		const code = error?.code;
		if (typeof code === 'string' && code) return code;
		const name = error?.name;
		return typeof name === 'string' && name ? name : '_OTHER';
	} catch {
		return '_OTHER';
	}
}

/** A link's server, as a connection pool's name. @param {any} link */
function poolOf(link) {
	const { serverAddress, serverPort } = link.server;
	return serverPort === undefined ? String(serverAddress) : `${serverAddress}:${serverPort}`;
}

/** @param {Record<string, number>} into @param {Record<string, number>} from */
function add(into, from) {
	for (const key of Object.keys(into)) into[key] += from[key] ?? 0;
}

module.exports = { instrument };
