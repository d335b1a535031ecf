'use strict';

const { inspect } = require('node:util');
const { Link } = require('./link.js');
const { LINK } = require('./streams.js');
const { normalizeOptions, checkId, checkUrl, describe } = require('./options.js');
const wire = require('./wire.js');

// Positions in the GET_SESSION reply.
const INFO = 0;
const CAPABILITIES = 1;
const LOG_LEVEL = 2;
const FIELD_NAMES = ['client info', 'client capabilities', 'log level'];

const LOG_LEVELS = Object.freeze([
	'debug',
	'info',
	'notice',
	'warning',
	'error',
	'critical',
	'alert',
	'emergency',
]);

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
	/**
	 * One round trip (three GETs) serves the three reads a request makes (client info,
	 * capabilities, log level): id → the pending or settled read, and which of its values
	 * were handed out. An entry lives until the loop turn after its read settled, and a
	 * local write to the id drops it.
	 * @type {Map<string, { read: Promise<(string | null | { error: string })[]>, used: boolean[] }>}
	 */
	#snapshots = new Map();
	/** Answered snapshots to forget at the next sweep, as `id, entry` pairs. @type {any[]} */
	#stale = [];

	#sweep = () => {
		const stale = this.#stale;
		this.#stale = [];
		for (let i = 0; i < stale.length; i += 2) {
			if (this.#snapshots.get(stale[i]) === stale[i + 1]) this.#snapshots.delete(stale[i]);
		}
	};

	/**
	 * @param {string} redisUrl
	 * @param {import('../index').RedisSessionManagerOptions} [options]
	 */
	constructor(redisUrl, options) {
		checkUrl(redisUrl);
		const shared = options && /** @type {any} */ (options)[LINK];
		this.#link = shared ? shared.retain() : new Link(redisUrl, normalizeOptions(options)).retain();
	}

	/** @param {string} id */
	async getClientInfo(id) {
		checkId('session id', id);
		const raw = await this.#read(id, INFO);
		if (raw === null) throw new Error(`Client info not found for session ${id}`);
		return parseStored(raw, 'client info', id);
	}

	/** @param {string} id @param {unknown} clientInfo */
	setClientInfo(id, clientInfo) {
		this.#snapshots.delete(id);
		return this.#setter(`Could not store client info for session ${id}`, () => {
			checkId('session id', id);
			const json = serialise(clientInfo, 'client info', id);
			return this.#link.call(wire.SET_CLIENT_INFO, [id, json], `Could not store client info for session ${id}`);
		});
	}

	/** @param {string} id */
	async getClientCapabilities(id) {
		checkId('session id', id);
		const raw = await this.#read(id, CAPABILITIES);
		if (raw === null) throw new Error(`Client capabilities not found for session ${id}`);
		return parseStored(raw, 'client capabilities', id);
	}

	/** @param {string} id @param {unknown} capabilities */
	setClientCapabilities(id, capabilities) {
		this.#snapshots.delete(id);
		return this.#setter(`Could not store client capabilities for session ${id}`, () => {
			checkId('session id', id);
			const json = serialise(capabilities, 'client capabilities', id);
			return this.#link.call(
				wire.SET_CLIENT_CAPABILITIES,
				[id, json],
				`Could not store client capabilities for session ${id}`,
			);
		});
	}

	/** @param {string} id */
	async getLogLevel(id) {
		checkId('session id', id);
		const raw = await this.#read(id, LOG_LEVEL);
		if (raw === null) throw new Error(`Log level not found for session ${id}`);
		// Upstream writes the level JSON-quoted; we write it plain. Accept both.
		let level = raw;
		if (raw.startsWith('"')) {
			try {
				level = JSON.parse(raw);
			} catch {
				// Falls through to the check below with the raw text.
			}
		}
		if (!LOG_LEVELS.includes(level)) {
			throw new Error(`Invalid log level ${JSON.stringify(raw)} stored for session ${id}`);
		}
		return level;
	}

	/** @param {string} id @param {string} level */
	setLogLevel(id, level) {
		this.#snapshots.delete(id);
		return this.#setter(`Could not store log level for session ${id}`, () => {
			checkId('session id', id);
			if (typeof level !== 'string' || !LOG_LEVELS.includes(level)) {
				throw new TypeError(`Invalid log level ${describe(level)}: expected one of ${LOG_LEVELS.join(', ')}`);
			}
			return this.#link.call(wire.SET_LOG_LEVEL, [id, level], `Could not store log level for session ${id}`);
		});
	}

	/**
	 * Session ids subscribed to a resource; empty when none.
	 * @param {string} uri
	 */
	async getSubscriptions(uri) {
		checkId('resource uri', uri);
		return this.#link.call(wire.GET_SUBSCRIPTIONS, [uri], `Could not read subscriptions of ${uri}`);
	}

	/** @param {string} id @param {string} uri */
	addSubscription(id, uri) {
		return this.#setter(`Could not subscribe session ${id} to ${uri}`, () => {
			checkId('session id', id);
			checkId('resource uri', uri);
			return this.#link.call(wire.ADD_SUBSCRIPTION, [id, uri], `Could not subscribe session ${id} to ${uri}`);
		});
	}

	/** @param {string} id @param {string} uri */
	removeSubscription(id, uri) {
		return this.#setter(`Could not unsubscribe session ${id} from ${uri}`, () => {
			checkId('session id', id);
			checkId('resource uri', uri);
			return this.#link.call(
				wire.REMOVE_SUBSCRIPTION,
				[id, uri],
				`Could not unsubscribe session ${id} from ${uri}`,
			);
		});
	}

	/**
	 * Removes all metadata of the session and takes it out of every subscription set.
	 * @param {string} id
	 */
	delete(id) {
		this.#snapshots.delete(id);
		return this.#setter(`Could not delete session info ${id}`, () => {
			checkId('session id', id);
			return this.#link.call(wire.INFO_DELETE, [id], `Could not delete session info ${id}`);
		});
	}

	/** Releases the connection; calls already made still complete. */
	async close() {
		if (this.#closed) return;
		this.#closed = true;
		this.#link.release();
	}

	[Symbol.asyncDispose]() {
		return this.close();
	}

	[inspect.custom]() {
		return `RedisInfoSessionManager { url: '${this.#link.url}' }`;
	}

	/**
	 * One value of the session's snapshot (see #snapshots).
	 * @param {string} id
	 * @param {number} field INFO, CAPABILITIES or LOG_LEVEL
	 * @returns {Promise<string | null>}
	 */
	async #read(id, field) {
		let entry = this.#snapshots.get(id);
		if (!entry || entry.used[field]) {
			const read = this.#link.call(wire.GET_SESSION, [id], `Could not read session info for session ${id}`);
			const fresh = { read, used: [false, false, false] };
			entry = fresh;
			this.#snapshots.set(id, fresh);
			// A snapshot serves the getters until the loop turn after its reply; one
			// sweep per turn forgets every snapshot answered in it.
			const settled = () => {
				if (this.#stale.length === 0) setImmediate(this.#sweep);
				this.#stale.push(id, fresh);
			};
			read.then(settled, settled);
		}
		entry.used[field] = true;
		const value = (await entry.read)[field];
		if (value !== null && typeof value === 'object') {
			// This key could not be read (e.g. wrong type); the other two could.
			throw new Error(`Could not read ${FIELD_NAMES[field]} for session ${id}: ${value.error}`);
		}
		return value;
	}

	/**
	 * Runs a write whose promise callers may drop: bad input and Redis failures reject
	 * it, and are reported, but never surface as unhandled rejections.
	 * @param {string} what
	 * @param {() => Promise<unknown>} write
	 * @returns {Promise<void>}
	 */
	#setter(what, write) {
		/** @type {Promise<void>} */
		let promise;
		try {
			promise = write().then(() => {});
		} catch (error) {
			promise = Promise.reject(error);
		}
		promise.catch((error) => {
			const err = /** @type {Error} */ (error);
			const Kind = err instanceof TypeError ? TypeError : Error;
			this.#link.reporter.report(
				err.message.startsWith(what) ? err : new Kind(`${what}: ${err.message}`, { cause: err }),
			);
		});
		return promise;
	}
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
		throw new TypeError(
			`${what} for session ${id} is not JSON-serialisable: ${/** @type {Error} */ (error).message}`,
		);
	}
	if (json === undefined) {
		throw new TypeError(`${what} for session ${id} must be a JSON value, got ${describe(value)}`);
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
		throw new Error(
			`Corrupt ${what} stored for session ${id}: not valid JSON (${/** @type {Error} */ (error).message})`,
		);
	}
}

module.exports = { RedisInfoSessionManager, LOG_LEVELS };
