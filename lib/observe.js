'use strict';
// Observability (README "Observability"): the `node:diagnostics_channel` channels, each
// manager's call counters, the server a payload names, and the registry of live
// managers that `@tmcp-rs/session-manager-redis/otel` reads. Nothing here is built when
// a channel has no subscriber; the counters are plain integer fields bumped where the
// work is already done (no promise, no closure per call).

const dc = require('node:diagnostics_channel');

/** Channel names, as node-redis names its own (`node-redis:command`, …). */
const CHANNELS = Object.freeze({
	/** TracingChannel around every manager call that goes to Redis. */
	command: 'tmcp-redis:command',
	/** `{ event: 'ready' | 'lost', role: 'command' | 'pubsub', serverAddress, serverPort }` */
	connection: 'tmcp-redis:connection',
	/** `{ event: 'master-switched' | 'slots-moved', role, serverAddress, serverPort }` */
	topology: 'tmcp-redis:topology',
	/** `{ error, code }`: what `onError` gets (or the warning it would have been). */
	error: 'tmcp-redis:error',
});

/** A runtime without TracingChannel (older than Node 19.9 / 18.19) traces nothing. */
const command =
	typeof dc.tracingChannel === 'function'
		? dc.tracingChannel(CHANNELS.command)
		: /** @type {import('node:diagnostics_channel').TracingChannel<object, object>} */ (/** @type {any} */ (undefined));
const connection = dc.channel(CHANNELS.connection);
const topology = dc.channel(CHANNELS.topology);
const errorChannel = dc.channel(CHANNELS.error);

/**
 * Whether anyone listens to `tmcp-redis:command`. `TracingChannel#hasSubscribers` is
 * missing before Node 22 (and 20.x minors without the backport): there, each
 * sub-channel's own.
 * @type {() => boolean}
 */
const commandTraced =
	command === undefined
		? () => false
		: typeof command.hasSubscribers === 'boolean'
			? () => command.hasSubscribers
			: () =>
					command.start.hasSubscribers ||
					command.end.hasSubscribers ||
					command.asyncStart.hasSubscribers ||
					command.asyncEnd.hasSubscribers ||
					command.error.hasSubscribers;

/**
 * One manager's call counters (JavaScript's part of `stats()`): calls handed to the
 * link, calls settled, failed, timed out, and messages Redis accepted (`sent`, from
 * the calls' own weight: one per target session of a send, one per broadcast or
 * notification).
 */
class Meter {
	/** @param {'streams' | 'info' | 'subscriptions'} manager */
	constructor(manager) {
		this.manager = manager;
		this.calls = 0;
		this.settled = 0;
		this.failed = 0;
		this.timeouts = 0;
		this.sent = 0;
	}
}

/**
 * The server a payload names, from the (password-masked) URL: host and port (a Unix
 * socket: its path, no port) and the database. With Sentinel the URL's host is the
 * master group's name: it stands until the native side names the master it resolved
 * (see Link's events). On a cluster: the seed node.
 * @param {string} url
 * @param {{ sentinel?: unknown }} options
 * @returns {{ serverAddress: string | undefined, serverPort: number | undefined, database: number }}
 */
function serverOf(url, options) {
	try {
		const parsed = new URL(url);
		if (parsed.protocol.includes('unix')) {
			return {
				serverAddress: decodeURIComponent(parsed.pathname),
				serverPort: undefined,
				database: Number(parsed.searchParams.get('db') ?? 0) || 0,
			};
		}
		const host = parsed.hostname.replace(/^\[(.*)\]$/, '$1');
		const database = Number(decodeURIComponent(parsed.pathname.slice(1)) || 0) || 0;
		if (options.sentinel) return { serverAddress: host, serverPort: undefined, database };
		return { serverAddress: host, serverPort: Number(parsed.port || 6379), database };
	} catch {
		return { serverAddress: undefined, serverPort: undefined, database: 0 };
	}
}

/**
 * Publishes a connection or topology event from the native side
 * (`[channel, event, role, address, port]`), only to a channel with subscribers.
 * @param {string[]} words
 * @param {{ serverAddress: string | undefined, serverPort: number | undefined }} server
 */
function publishEvent([channel, event, role, address, port], server) {
	const target = channel === 'topology' ? topology : connection;
	if (!target.hasSubscribers) return;
	target.publish({
		event,
		role,
		serverAddress: address || server.serverAddress,
		serverPort: address ? Number(port) || undefined : server.serverPort,
	});
}

/**
 * Publishes what `onError` gets, when `tmcp-redis:error` has subscribers.
 * @param {Error} error
 */
function publishError(error) {
	if (errorChannel.hasSubscribers) errorChannel.publish({ error, code: /** @type {any} */ (error).code });
}

// The registry `otel` reads: every live manager (weakly: a dropped manager can still be
// collected) and, once closed, its last counters, summed per kind, so a metric that
// sums counters never goes down because a manager closed.

/** Key of a manager's `observed()` (its kind, link and own counters). */
const OBSERVED = Symbol('tmcp-rs.session-manager-redis.observed');
/** @type {Set<WeakRef<any>>} */
const live = new Set();
const collected = new FinalizationRegistry((/** @type {WeakRef<any>} */ ref) => live.delete(ref));
/** Counters of closed managers and links, by kind. @type {Record<string, Record<string, number>>} */
const retired = Object.create(null);

/**
 * Registers a manager; returns what its close() hands to `retire`.
 * @param {object} manager
 */
function register(manager) {
	const ref = new WeakRef(manager);
	live.add(ref);
	collected.register(manager, ref, ref);
	return ref;
}

/**
 * A closed manager leaves the registry; its last counters stay in the sums.
 * @param {WeakRef<any>} ref
 * @param {string} kind
 * @param {Record<string, number>} counters
 */
function retire(ref, kind, counters) {
	if (!live.delete(ref)) return;
	collected.unregister(ref);
	accumulate(kind, counters);
}

/**
 * Adds counters to the sums of closed managers (or links) of `kind`.
 * @param {string} kind
 * @param {Record<string, number>} counters
 */
function accumulate(kind, counters) {
	const sum = (retired[kind] ??= Object.create(null));
	for (const [name, value] of Object.entries(counters)) sum[name] = (sum[name] ?? 0) + value;
}

/** The live managers (for otel). */
function* liveManagers() {
	for (const ref of live) {
		const manager = ref.deref();
		if (manager) yield manager;
	}
}

// Positions of a connection's figures at the start of a native stats() array and in
// Link#figures() (src/stats.rs).
const RECONNECTS = 0;
const TOPOLOGY_CHANGES = 1;
const TIMEOUTS = 2;
const CONNECTED = 3;
const NO_CONNECTION = [0, 0, 0, 0];

/**
 * The fields every manager's stats() opens with: its calls (`meter`), its command
 * connection (`link`, Link#figures()) and, where the manager has a pub/sub connection of
 * its own, that one's figures (`own`).
 * @param {Meter} meter @param {ArrayLike<number>} link @param {ArrayLike<number>} [own]
 */
function callStats(meter, link, own = NO_CONNECTION) {
	return {
		commandsInFlight: meter.calls - meter.settled,
		commands: meter.settled,
		commandErrors: meter.failed,
		timeouts: meter.timeouts + own[TIMEOUTS] + link[TIMEOUTS],
		reconnects: own[RECONNECTS] + link[RECONNECTS],
		topologyChanges: Math.max(own[TOPOLOGY_CHANGES], link[TOPOLOGY_CHANGES]),
		connections: own[CONNECTED] + link[CONNECTED],
	};
}

module.exports = {
	callStats,
	CONNECTED,
	RECONNECTS,
	CHANNELS,
	command,
	commandTraced,
	Meter,
	serverOf,
	publishEvent,
	publishError,
	OBSERVED,
	register,
	retire,
	accumulate,
	retired,
	liveManagers,
};
