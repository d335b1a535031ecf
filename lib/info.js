'use strict';
// RedisInfoSessionManager: upstream's class and method names, argument checks with its
// wording, and the JSON of the values it stores. Why JavaScript: the values arrive and
// leave as JavaScript objects (JSON.stringify/parse run where they are, with no second
// copy across the boundary), and calls are batched per tick by lib/link.js; the Redis
// work (pipelines, Cluster routing, timeouts) is native (src/info_sessions.rs).

const { inspect } = require('node:util');
const { Link } = require('./link.js');
const {
	argumentError,
	argumentTypeError,
	closedError,
	codedError,
	CODES,
	describe,
	describeThrown,
	nativeError,
} = require('./errors.js');
const { callStats, Meter, OBSERVED, register, retire } = require('./observe.js');
const { checkId } = require('./options.js');
const wire = require('./wire.js');

// Positions in the GET_SESSION reply.
const INFO = 0;
const CAPABILITIES = 1;
const LOG_LEVEL = 2;
const FIELD_NAMES = wire.SESSION_FIELDS;
const FIELD_TITLES = FIELD_NAMES.map((name) => name[0].toUpperCase() + name.slice(1));
const STORE_FAILED = FIELD_NAMES.map((name) => `Could not store ${name} for session`);
const STORE_CODES = [wire.SET_CLIENT_INFO, wire.SET_CLIENT_CAPABILITIES, wire.SET_LOG_LEVEL];
// Method names, for traces.
const GETTERS = ['getClientInfo', 'getClientCapabilities', 'getLogLevel'];
const SETTERS = ['setClientInfo', 'setClientCapabilities', 'setLogLevel'];
const noop = () => {};

const LOG_LEVELS = wire.LOG_LEVELS;

/**
 * Persists what a stateless request needs to rebuild the MCP context: client info,
 * client capabilities, log level and resource subscriptions.
 *
 * Setters may be called without `await` (the transports do): their promises never
 * become unhandled rejections; failures also go to `onError`.
 */
class RedisInfoSessionManager {
	#link;
	#closed = false;
	#meter = new Meter('info');
	#registered;
	/**
	 * One round trip (three GETs) serves the three reads a request makes (client info,
	 * capabilities, log level): id → the pending or settled read, and which of its values
	 * were handed out (bits of 1 << field). An entry lives until the loop turn after its
	 * read settled, and a local write to the id drops it.
	 *
	 * A null-prototype object, not a Map: a Map that entries keep entering and leaving is
	 * rehashed again and again, and V8 links each replaced table to its successor. Once
	 * one of those tables was promoted, every newer one (and the replies it held) survived
	 * the young-generation GC too: with a Map, 18 % of young objects survived each
	 * scavenge at 64 set+get pairs in flight and the old generation was collected 7 times
	 * a second; with this object, 4 % and never (`--trace-gc-nvp`).
	 * @type {Record<string, { read: Promise<(string | null | { error: string })[]>, used: number }>}
	 */
	#snapshots = Object.create(null);
	/** Answered snapshots to forget at the next sweep, as `id, entry` pairs. @type {any[]} */
	#stale = [];

	#sweep = () => {
		const stale = this.#stale;
		this.#stale = [];
		for (let i = 0; i < stale.length; i += 2) {
			if (this.#snapshots[stale[i]] === stale[i + 1]) delete this.#snapshots[stale[i]];
		}
	};

	/** Reports a failed write (its error already names the write). @param {Error} error */
	#reportFailure = (error) => this.#link.reporter.report(error);

	/**
	 * @param {string} redisUrl
	 * @param {import('../index').RedisSessionManagerOptions} [options]
	 */
	constructor(redisUrl, options) {
		this.#link = Link.acquire(redisUrl, options);
		this.#registered = register(this);
	}

	/** @param {string} id */
	getClientInfo(id) {
		return this.#get(id, INFO);
	}

	/** @param {string} id @param {unknown} clientInfo */
	setClientInfo(id, clientInfo) {
		return this.#store(INFO, id, clientInfo);
	}

	/** @param {string} id */
	getClientCapabilities(id) {
		return this.#get(id, CAPABILITIES);
	}

	/** @param {string} id @param {unknown} capabilities */
	setClientCapabilities(id, capabilities) {
		return this.#store(CAPABILITIES, id, capabilities);
	}

	/** @param {string} id */
	getLogLevel(id) {
		return this.#get(id, LOG_LEVEL);
	}

	/** @param {string} id @param {string} level */
	setLogLevel(id, level) {
		return this.#store(LOG_LEVEL, id, level);
	}

	/**
	 * Session ids subscribed to a resource; empty when none.
	 * @param {string} uri
	 */
	async getSubscriptions(uri) {
		checkId('resource uri', uri);
		return this.#call(wire.GET_SUBSCRIPTIONS, [uri], `Could not read subscriptions of ${uri}`, 'getSubscriptions');
	}

	/** @param {string} id @param {string} uri */
	addSubscription(id, uri) {
		return this.#subscription(wire.ADD_SUBSCRIPTION, id, uri, 'subscribe', 'to', 'addSubscription');
	}

	/** @param {string} id @param {string} uri */
	removeSubscription(id, uri) {
		return this.#subscription(wire.REMOVE_SUBSCRIPTION, id, uri, 'unsubscribe', 'from', 'removeSubscription');
	}

	/**
	 * Removes all metadata of the session and takes it out of every subscription set.
	 * @param {string} id
	 */
	delete(id) {
		try {
			checkId('session id', id);
			delete this.#snapshots[id];
			return this.#written(this.#call(wire.INFO_DELETE, [id], `Could not delete session info ${id}`, 'delete'));
		} catch (error) {
			return this.#refused(error, `Could not delete session info ${shown(id)}`);
		}
	}

	/**
	 * Queues one call on the shared link; after this manager's close() it rejects at
	 * once, even while a sibling keeps the link open.
	 * @param {number} code
	 * @param {string[]} args
	 * @param {string} what
	 * @param {string} operation the method's name, for traces
	 */
	#call(code, args, what, operation) {
		if (this.#closed) return Promise.reject(closedError(`${what}: the session manager is closed`));
		return this.#link.call(code, args, what, this.#meter, operation);
	}

	/** Releases the connection; calls already made still complete. */
	async close() {
		if (this.#closed) return;
		this.#closed = true;
		retire(this.#registered, 'info', {});
		this.#link.release();
	}

	/**
	 * Counters since construction and gauges as of now (README "Observability"): fresh
	 * plain numbers each call. One round trip serves the three getters of a request: it
	 * counts once. `reconnects`, `topologyChanges` and `timeouts` (of liveness refreshes)
	 * are the command connection's, shared with the managers built with this one by
	 * createSessionManagers.
	 */
	stats() {
		return callStats(this.#meter, this.#link.figures());
	}

	/** What the otel entry reads (see observe.js). */
	[OBSERVED]() {
		return { kind: 'info', link: this.#link, counters: {} };
	}

	[Symbol.asyncDispose]() {
		return this.close();
	}

	[inspect.custom]() {
		return `RedisInfoSessionManager { url: '${this.#link.url}' }`;
	}

	/**
	 * One value of the session's snapshot (see #snapshots), checked and parsed.
	 * @param {string} id
	 * @param {number} field INFO, CAPABILITIES or LOG_LEVEL
	 */
	async #get(id, field) {
		checkId('session id', id);
		const bit = 1 << field;
		const entry = this.#snapshots[id];
		let values;
		if (entry && !(entry.used & bit)) {
			entry.used |= bit;
			values = await entry.read;
		} else {
			const read = this.#call(wire.GET_SESSION, [id], `Could not read session info for session ${id}`, GETTERS[field]);
			const fresh = { read, used: bit };
			this.#snapshots[id] = fresh;
			try {
				values = await read;
			} finally {
				// The snapshot serves the getters until the loop turn after its reply (this
				// continuation runs first, at the reply); one sweep per turn forgets every
				// snapshot answered in it.
				if (this.#stale.length === 0) setImmediate(this.#sweep);
				this.#stale.push(id, fresh);
			}
		}
		const raw = values[field];
		if (raw === null) throw codedError(CODES.NOT_FOUND, `${FIELD_TITLES[field]} not found for session ${id}`);
		// This key could not be read (e.g. wrong type, an unknown log level); the other two
		// could. The native side words the whole message and gives its kind.
		if (typeof raw === 'object') throw nativeError(raw.kind, raw.error);
		// The native side already read the log level in either stored form and checked it.
		return field === LOG_LEVEL ? raw : parseStored(raw, FIELD_NAMES[field], id);
	}

	/**
	 * Writes one value of the session's snapshot: JSON, or the log level as plain text.
	 * @param {number} field INFO, CAPABILITIES or LOG_LEVEL
	 * @param {string} id
	 * @param {unknown} value
	 */
	#store(field, id, value) {
		try {
			checkId('session id', id);
			delete this.#snapshots[id];
			const text = field === LOG_LEVEL ? checkLevel(value) : serialise(value, FIELD_NAMES[field], id);
			return this.#written(this.#call(STORE_CODES[field], [id, text], `${STORE_FAILED[field]} ${id}`, SETTERS[field]));
		} catch (error) {
			return this.#refused(error, `${STORE_FAILED[field]} ${shown(id)}`);
		}
	}

	/**
	 * @param {number} code ADD_SUBSCRIPTION or REMOVE_SUBSCRIPTION
	 * @param {string} id
	 * @param {string} uri
	 * @param {string} verb
	 * @param {string} preposition
	 * @param {string} operation the method's name, for traces
	 */
	#subscription(code, id, uri, verb, preposition, operation) {
		try {
			checkId('session id', id);
			checkId('resource uri', uri);
			return this.#written(this.#call(code, [id, uri], `Could not ${verb} session ${id} ${preposition} ${uri}`, operation));
		} catch (error) {
			return this.#refused(error, `Could not ${verb} session ${shown(id)} ${preposition} ${shown(uri)}`);
		}
	}

	/**
	 * A write whose promise callers may drop (the transports do): its failure is
	 * reported, and never surfaces as an unhandled rejection.
	 * @param {Promise<void>} promise
	 */
	#written(promise) {
		promise.catch(this.#reportFailure);
		return promise;
	}

	/**
	 * A write refused before reaching Redis (bad input): reported with what was being
	 * written, and returned as a rejection that is never unhandled.
	 * @param {unknown} error
	 * @param {string} what
	 * @returns {Promise<void>}
	 */
	#refused(error, what) {
		// Only argument checks run before the write: every refusal is a TypeError.
		const err = argumentError(error);
		this.#link.reporter.report(argumentTypeError(`${what}: ${describeThrown(err)}`, { cause: err }));
		const rejection = Promise.reject(err);
		rejection.catch(noop);
		return rejection;
	}
}

/**
 * An argument in a message: a string as it is (upstream's wording), anything else by its
 * kind (see describe).
 * @param {unknown} value
 */
function shown(value) {
	return typeof value === 'string' ? value : describe(value);
}

/**
 * @param {unknown} level
 * @returns {string}
 */
function checkLevel(level) {
	if (typeof level !== 'string' || !LOG_LEVELS.includes(level)) {
		throw argumentTypeError(`Invalid log level ${describe(level)}: expected one of ${LOG_LEVELS.join(', ')}`);
	}
	return level;
}

/**
 * @param {unknown} value
 * @param {string} what
 * @param {string} id
 */
function serialise(value, what, id) {
	let json;
	try {
		json = JSON.stringify(value);
	} catch (error) {
		// A throwing toJSON or getter of the app's value, or a cycle.
		throw argumentTypeError(`${what} for session ${id} is not JSON-serialisable: ${describeThrown(error)}`, { cause: error });
	}
	if (json === undefined) {
		throw argumentTypeError(`${what} for session ${id} must be a JSON value, got ${describe(value)}`);
	}
	return json;
}

/**
 * @param {string} raw
 * @param {string} what
 * @param {string} id
 */
function parseStored(raw, what, id) {
	try {
		return JSON.parse(raw);
	} catch (error) {
		throw codedError(
			CODES.BAD_DATA,
			`Corrupt ${what} stored for session ${id}: not valid JSON (${/** @type {Error} */ (error).message})`,
		);
	}
}

module.exports = { RedisInfoSessionManager };
