'use strict';

const { inspect } = require('node:util');
const { NativeStreams } = require('./native.cjs');
const { Link } = require('./link.js');
const { Subscriber } = require('./subscriber.js');

const { normalizeOptions, checkId, checkUrl, describe } = require('./options.js');
const wire = require('./wire.js');

const { CHANGE_CREATE: CREATE, CHANGE_DROP: DROP } = wire;

const LINK = Symbol.for('tmcp-rs.session-manager-redis.link');
/** Stream managers with live sessions: kept reachable, like their open streams. */
const live = new Set();
/** A manager dropped without close() still ends its pub/sub socket. */
const dropped = new FinalizationRegistry((/** @type {Subscriber} */ subscriber) => subscriber.close());

/**
 * @typedef {{ id: string, token: number, controller: ReadableStreamDefaultController }} LocalSession
 */

/**
 * Owns the SSE streams of this process and routes notifications to them through Redis
 * pub/sub, so the process holding a stream receives what any process sends.
 */
class RedisStreamSessionManager {
	#link;
	#native;
	#subscriber;
	/** @type {Map<string, LocalSession>} */
	#byId = new Map();
	/** @type {Map<number, LocalSession>} */
	#byToken = new Map();
	#nextToken = 1;
	/** Session changes of this tick, as `[kind, call or forget, token]` triples. @type {number[]} */
	#changes = [];
	/** @type {string[]} */
	#changeIds = [];
	/** Settles the creations of this tick. @type {{ promise: Promise<void>, resolve: () => void, reject: (e: Error) => void } | null} */
	#tick = null;
	/** Runs while this manager holds live sessions (see #syncHold). @type {NodeJS.Timeout | null} */
	#refreshTimer = null;
	/** Liveness keys must be written unconditionally next time (Redis may have lost them). */
	#reassertKeys = false;
	/** @type {Promise<void> | undefined} */
	#closing;

	/**
	 * @param {string} redisUrl
	 * @param {import('../index').RedisSessionManagerOptions} [options]
	 */
	constructor(redisUrl, options) {
		checkUrl(redisUrl);
		const shared = options && /** @type {any} */ (options)[LINK];
		this.#link = shared ? shared.retain() : new Link(redisUrl, normalizeOptions(options)).retain();
		// Reached weakly from the socket, strongly from `live` while it holds sessions: an
		// idle, dropped manager can be garbage-collected.
		const self = new WeakRef(this);
		this.#native = new NativeStreams(this.#link.native);
		this.#subscriber = new Subscriber(this.#native, this.#link, {
			deliver: (kind, token, bytes, offset, length) => self.deref()?.#deliver(kind, token, bytes, offset, length),
			wanted: () => (self.deref()?.#byId.size ?? 0) > 0,
			resubscribed: () => self.deref()?.#markAllLive(),
		});
		dropped.register(this, this.#subscriber, this);
	}

	/**
	 * Registers the controller of a new SSE stream; resolves once Redis confirmed the
	 * subscription, so anything sent afterwards reaches it.
	 * @param {string} id
	 * @param {ReadableStreamDefaultController} controller
	 */
	create(id, controller) {
		try {
			checkId('session id', id);
			if (!controller || typeof (/** @type {any} */ (controller).enqueue) !== 'function') {
				throw new TypeError(
					`controller must be a ReadableStreamDefaultController (an object with enqueue()), got ${describe(controller)}`,
				);
			}
			this.#assertOpen('create');
		} catch (error) {
			return Promise.reject(error);
		}
		const session = { id, token: this.#nextToken, controller };
		this.#nextToken = (this.#nextToken + 1) >>> 0 || 1;
		const previous = this.#byId.get(id);
		this.#byId.set(id, session);
		this.#byToken.set(session.token, session);
		this.#syncHold();
		this.#change(CREATE, 0, session.token, id);
		const tick = (this.#tick ??= deferred());
		if (previous) {
			// One stream per id and instance: the newer one replaces the older.
			this.#byToken.delete(previous.token);
			closeQuietly(previous.controller);
		}
		return tick.promise.then(undefined, (error) => this.#notCreated(session, error));
	}

	/**
	 * The tick that created `session` failed to subscribe it or to mark it live.
	 * @param {LocalSession} session
	 * @param {Error} error
	 * @returns {never}
	 */
	#notCreated(session, error) {
		if (this.#byToken.has(session.token)) {
			this.#forget(session);
			this.#change(DROP, 1, session.token, session.id);
		}
		throw new Error(`Could not create stream session ${session.id}: ${error.message}`);
	}

	/**
	 * Ends the session everywhere: its owner (this or another process) closes the
	 * stream, and `has(id)` is false from every process once this resolves.
	 * @param {string} id
	 */
	delete(id) {
		try {
			checkId('session id', id);
		} catch (error) {
			return Promise.reject(error);
		}
		const session = this.#byId.get(id);
		if (session) {
			this.#forget(session);
			this.#change(DROP, 0, session.token, id);
			closeQuietly(session.controller);
		}
		return this.#link.call(wire.STREAM_DELETE, [id], `Could not delete stream session ${id}`);
	}

	/**
	 * Whether a live stream for `id` exists in any process.
	 * @param {string} id
	 */
	async has(id) {
		checkId('session id', id);
		// Always asks Redis: a delete from another process must read as false at once,
		// even before this process has heard of it.
		const count = await this.#link.call(wire.HAS, [id], `Could not check stream session ${id}`);
		return count > 0;
	}

	/**
	 * Sends `data` to the given sessions, or to every live session when `sessions` is
	 * undefined. Resolves once Redis accepted the publish(es).
	 * @param {string[] | undefined} sessions
	 * @param {string} data
	 */
	send(sessions, data) {
		try {
			if (typeof data !== 'string') {
				throw new TypeError(`data must be a string, got ${describe(data)}`);
			}
			if (sessions == null) return this.#link.call(wire.BROADCAST, [data], 'Could not broadcast');
			if (!Array.isArray(sessions)) {
				throw new TypeError(`sessions must be an array of session ids or undefined, got ${describe(sessions)}`);
			}
			for (const id of sessions) checkId('each session id', id);
			if (sessions.length === 0) return Promise.resolve();
			return this.#link.call(wire.PUBLISH, [data, ...sessions], 'Could not send to sessions');
		} catch (error) {
			return Promise.reject(error);
		}
	}

	/** Closes every local stream, removes their liveness keys and the connections. */
	close() {
		this.#closing ??= this.#close();
		return this.#closing;
	}

	async #close() {
		// Changes of this tick go first, so close() sees every session created before it.
		this.#applyChanges();
		const sessions = [...this.#byId.values()];
		this.#byId.clear();
		this.#byToken.clear();
		this.#syncHold();
		for (const session of sessions) closeQuietly(session.controller);
		this.#subscriber.close();
		dropped.unregister(this);
		try {
			// Shutdown must not fail because Redis is unreachable; keys then expire by TTL.
			if (sessions.length > 0) {
				const ids = sessions.map((session) => session.id);
				await this.#link
					.call(wire.MARK_GONE, ids, 'Could not close the stream session manager')
					.catch((error) => this.#link.reporter.report(error));
			}
		} finally {
			this.#link.release();
		}
	}

	[Symbol.asyncDispose]() {
		return this.close();
	}

	[inspect.custom]() {
		return `RedisStreamSessionManager { url: '${this.#link.url}', localSessions: ${this.#byId.size} }`;
	}

	/** @param {string} method */
	#assertOpen(method) {
		if (this.#closing || this.#link.closed) {
			throw new Error(`Cannot ${method}: the session manager is closed`);
		}
	}

	/** @param {LocalSession} session */
	#forget(session) {
		if (this.#byId.get(session.id) === session) this.#byId.delete(session.id);
		this.#byToken.delete(session.token);
		this.#syncHold();
	}

	/**
	 * Live sessions keep the process alive, as upstream's open sockets do, and the one
	 * liveness timer runs while there are any.
	 */
	#syncHold() {
		const holding = this.#byId.size > 0;
		if (holding === (this.#refreshTimer !== null)) return;
		this.#link.hold(holding);
		if (holding) {
			live.add(this);
			this.#refreshTimer = setInterval(this.#refresh, (this.#link.options.sessionTtlSeconds * 1000) / 3);
			this.#refreshTimer.unref();
		} else {
			live.delete(this);
			clearInterval(/** @type {NodeJS.Timeout} */ (this.#refreshTimer));
			this.#refreshTimer = null;
		}
	}

	/** Refreshes every local session's liveness key and checks the pub/sub connection. */
	#refresh = () => {
		this.#subscriber.check();
		this.#writeKeys();
	};

	/**
	 * After the pub/sub connection came back (it has just answered, so no PING): Redis
	 * may have lost the keys too.
	 */
	#markAllLive() {
		this.#reassertKeys = true;
		this.#writeKeys();
	}

	/** One write for every local session's liveness key. */
	#writeKeys() {
		const ids = [...this.#byId.keys()];
		if (ids.length === 0) return;
		// After a failure or a reconnect, write unconditionally: Redis may have lost them.
		const code = this.#reassertKeys ? wire.MARK_LIVE : wire.REFRESH;
		this.#reassertKeys = false;
		this.#link.call(code, ids, '').catch((error) => {
			this.#reassertKeys = true;
			this.#link.reporter.report(
				new Error(`could not refresh ${ids.length} session liveness key(s): ${error.message}`),
			);
		});
	}

	/**
	 * Queues a session change; the changes of one tick reach Redis together (one
	 * SUBSCRIBE and one liveness pipeline for every creation, one UNSUBSCRIBE for every
	 * end).
	 * @param {number} kind CREATE or DROP
	 * @param {number} forget DROP: 1 also deletes the liveness key
	 * @param {number} token
	 * @param {string} id
	 */
	#change(kind, forget, token, id) {
		// At the end of this tick, like the Link's calls (a setImmediate measured ~5 %
		// fewer sessions/s in churn, and a lone create waits one loop turn longer).
		if (this.#changes.length === 0) queueMicrotask(this.#applyChanges);
		this.#changes.push(kind, forget, token);
		this.#changeIds.push(id);
	}

	#applyChanges = () => {
		if (this.#changes.length === 0) return;
		const changes = Uint32Array.from(this.#changes);
		const ids = this.#changeIds;
		const tick = this.#tick;
		this.#changes = [];
		this.#changeIds = [];
		this.#tick = null;
		// Liveness keys, as this tick left the sessions: a creation already ended or
		// replaced marks nothing, an ended session re-created keeps its key.
		const markLive = [];
		const markGone = [];
		for (let i = 0, n = 0; i < changes.length; i += 3, n++) {
			const current = this.#byId.get(ids[n]);
			if (changes[i] === CREATE) {
				if (current?.token === changes[i + 2]) markLive.push(ids[n]);
			} else if (changes[i + 1] === 1 && !current) markGone.push(ids[n]);
		}
		const subscribed = tick ? this.#link.track() : null;
		try {
			this.#subscriber.apply(changes, ids, subscribed ? subscribed.id : 0);
		} catch (error) {
			if (subscribed) this.#link.fail(subscribed.id, error);
		}
		if (tick && subscribed) {
			const steps = [subscribed.promise];
			if (markLive.length > 0) steps.push(this.#link.call(wire.MARK_LIVE, markLive, ''));
			Promise.all(steps).then(() => tick.resolve(), tick.reject);
		}
		if (markGone.length > 0) {
			this.#link.call(wire.MARK_GONE, markGone, '').catch((error) =>
				this.#link.reporter.report(new Error(`could not end ${markGone.length} session(s) in Redis: ${error.message}`)),
			);
		}
	};

	/**
	 * A controller that cannot take data any more ends its session here (not elsewhere).
	 * @param {LocalSession} session
	 * @param {unknown} error
	 */
	#endLocally(session, error) {
		this.#forget(session);
		this.#change(DROP, 1, session.token, session.id);
		const reason = error instanceof Error ? error.message : String(error);
		this.#link.reporter.report(
			new Error(`Stream of session ${session.id} no longer accepts data (${reason}); ended it locally`),
		);
	}

	/**
	 * @param {LocalSession} session
	 * @param {Uint8Array} chunk
	 */
	#enqueue(session, chunk) {
		try {
			session.controller.enqueue(chunk);
		} catch (error) {
			this.#endLocally(session, error);
		}
	}

	/**
	 * One entry read from the pub/sub socket (src/stream_sessions.rs `EntryKind`); the
	 * payload is `length` bytes at `offset` of `bytes`. Never throws.
	 * @param {number} kind
	 * @param {number} token
	 * @param {Buffer} bytes
	 * @param {number} offset
	 * @param {number} length
	 */
	#deliver(kind, token, bytes, offset, length) {
		try {
			if (kind === wire.DELIVER_MESSAGE) {
				const session = this.#byToken.get(token);
				if (session) this.#enqueue(session, new Uint8Array(bytes.buffer, bytes.byteOffset + offset, length));
			} else if (kind === wire.DELIVER_BROADCAST) {
				for (const session of [...this.#byToken.values()]) {
					this.#enqueue(session, new Uint8Array(bytes.buffer, bytes.byteOffset + offset, length));
				}
			} else if (kind === wire.DELIVER_CLOSE) {
				const session = this.#byToken.get(token);
				if (session) {
					// Deleted (maybe elsewhere): unsubscribe, and drop the key in case a
					// refresh raced the delete.
					this.#forget(session);
					this.#change(DROP, 1, session.token, session.id);
					closeQuietly(session.controller);
				}
			}
		} catch (error) {
			this.#link.reporter.report(error);
		}
	}
}

/** @returns {{ promise: Promise<void>, resolve: () => void, reject: (e: Error) => void }} */
function deferred() {
	/** @type {any} */
	let settle;
	const promise = new Promise((resolve, reject) => (settle = { resolve, reject }));
	return { promise, ...settle };
}

/** @param {ReadableStreamDefaultController} controller */
function closeQuietly(controller) {
	try {
		controller.close();
	} catch {
		// Already closed or errored: nothing left to end.
	}
}

module.exports = { RedisStreamSessionManager, LINK };
