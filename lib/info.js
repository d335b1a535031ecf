'use strict';

const { inspect } = require('node:util');
const { Link } = require('./link.js');
const { LINK } = require('./streams.js');
const { normalizeOptions, checkId, checkUrl, describe } = require('./options.js');
const wire = require('./wire.js');

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
		const raw = await this.#link.call(wire.GET_CLIENT_INFO, [id], `Could not read client info for session ${id}`);
		if (raw === null) throw new Error(`Client info not found for session ${id}`);
		return parseStored(raw, 'client info', id);
	}

	/** @param {string} id @param {unknown} clientInfo */
	setClientInfo(id, clientInfo) {
		return this.#setter(`Could not store client info for session ${id}`, () => {
			checkId('session id', id);
			const json = serialise(clientInfo, 'client info', id);
			return this.#link.call(wire.SET_CLIENT_INFO, [id, json], `Could not store client info for session ${id}`);
		});
	}

	/** @param {string} id */
	async getClientCapabilities(id) {
		checkId('session id', id);
		const raw = await this.#link.call(
			wire.GET_CLIENT_CAPABILITIES,
			[id],
			`Could not read client capabilities for session ${id}`,
		);
		if (raw === null) throw new Error(`Client capabilities not found for session ${id}`);
		return parseStored(raw, 'client capabilities', id);
	}

	/** @param {string} id @param {unknown} capabilities */
	setClientCapabilities(id, capabilities) {
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
		const raw = await this.#link.call(wire.GET_LOG_LEVEL, [id], `Could not read log level for session ${id}`);
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
	 * Runs a write whose promise callers may drop: bad input and Redis failures reject
	 * it, and are reported, but never surface as unhandled rejections.
	 * @param {string} what
	 * @param {() => Promise<unknown>} write
	 * @returns {Promise<void>}
	 */
	#setter(what, write) {
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
