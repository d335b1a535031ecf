'use strict';
// RedisStreamSessionManager: TMCP's stream sessions. Why JavaScript: the SSE streams'
// ReadableStreamDefaultControllers are JavaScript objects that may only be used on the JS
// thread; this file keeps them and feeds them the batches the native side delivers
// (one crossing per batch). Sessions, subscriptions and liveness keys are native
// (src/stream_sessions/).

const { inspect } = require('node:util');
const { NativeStreams } = require('./binding.js');
const { Link } = require('./link.js');
const { argumentError, argumentTypeError, closedError, codedError, CODES, describe, describeThrown, nativeError } = require('./errors.js');
const { callStats, CONNECTED, Meter, OBSERVED, RECONNECTS, register, retire } = require('./observe.js');
const { checkId } = require('./options.js');
const wire = require('./wire.js');

const { CHANGE_CREATE: CREATE, CHANGE_DROP: DROP } = wire;

// Positions in NativeStreams.stats() (src/stats.rs) after the pub/sub connection's figures
// (RECONNECTS..CONNECTED, observe.js): the manager's own.
const WANTED = 4;
const CONFIRMED = 5;
const QUEUED = 6;
const UNROUTED = 7;

/** Stream managers with live sessions: kept reachable, like their open streams. */
const live = new Set();
const decoder = new TextDecoder();
const slice = Uint8Array.prototype.slice;

/**
 * @typedef {{ id: string, token: number, controller: ReadableStreamDefaultController }} LocalSession
 */

/**
 * Owns the SSE streams of this process and routes notifications to them through Redis
 * pub/sub, so the process holding a stream receives what any process sends. The session
 * table, subscriptions and liveness keys live on the native side (tokio); this class
 * keeps the controllers and feeds them the batches the native side delivers.
 */
class RedisStreamSessionManager {
	#link;
	#native;
	/** @type {Map<string, LocalSession>} */
	#byId = new Map();
	/** @type {Map<number, LocalSession>} */
	#byToken = new Map();
	#nextToken = 1;
	/** Session changes of this tick: `[kind, token, call or forget, id length]` each. @type {number[]} */
	#changes = [];
	/** @type {string[]} */
	#changeIds = [];
	#holding = false;
	/** @type {Promise<void> | undefined} */
	#closing;
	#meter = new Meter('streams');
	/** Messages handed to a controller's `enqueue`. */
	#delivered = 0;
	/** Messages for no live local session here, or whose `enqueue` threw. */
	#dropped = 0;
	/** The native figures as of close() (the native side answers none after it). @type {Float64Array | undefined} */
	#final;
	#registered;

	/**
	 * @param {string} redisUrl
	 * @param {import('../index').RedisSessionManagerOptions} [options]
	 */
	constructor(redisUrl, options) {
		this.#link = Link.acquire(redisUrl, options);
		// Reached weakly from the native callback, strongly from `live` while it holds
		// sessions: an idle, dropped manager can be garbage-collected.
		const self = new WeakRef(this);
		this.#native = new NativeStreams(this.#link.native, (batch) => self.deref()?.#deliver(batch));
		this.#registered = register(this);
	}

	/**
	 * Registers the controller of a new SSE stream; resolves once Redis confirmed the
	 * subscription and the liveness key, so anything sent afterwards reaches it.
	 * @param {string} id
	 * @param {ReadableStreamDefaultController} controller
	 */
	create(id, controller) {
		try {
			checkId('session id', id);
			if (!controller || typeof (/** @type {any} */ (controller).enqueue) !== 'function') {
				throw argumentTypeError(
					`controller must be a ReadableStreamDefaultController (an object with enqueue()), got ${describe(controller)}`,
				);
			}
		} catch (error) {
			return Promise.reject(argumentError(error));
		}
		try {
			this.#assertOpen('create');
		} catch (error) {
			return Promise.reject(error);
		}
		return this.#link.traced(this.#meter, 'create', () => this.#create(id, controller));
	}

	/**
	 * @param {string} id
	 * @param {ReadableStreamDefaultController} controller
	 */
	#create(id, controller) {
		const session = { id, token: this.#nextToken, controller };
		this.#nextToken = (this.#nextToken + 1) >>> 0 || 1;
		const { id: call, promise } = this.#link.track(`Could not create stream session ${id}`, this.#meter);
		const previous = this.#byId.get(id);
		this.#byId.set(id, session);
		this.#byToken.set(session.token, session);
		this.#syncHold();
		this.#change(CREATE, session.token, call, id);
		if (previous) {
			// One stream per id and instance: the newer one replaces the older.
			this.#byToken.delete(previous.token);
			closeQuietly(previous.controller);
		}
		return promise.then(undefined, (error) => {
			if (this.#byToken.get(session.token) === session) this.#forget(session);
			throw error;
		});
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
			return Promise.reject(argumentError(error));
		}
		const session = this.#byId.get(id);
		if (session) {
			this.#forget(session);
			this.#change(DROP, session.token, 0, id);
			closeQuietly(session.controller);
		}
		return this.#call(wire.STREAM_DELETE, [id], `Could not delete stream session ${id}`, 'delete');
	}

	/**
	 * Whether a live stream for `id` exists in any process.
	 * @param {string} id
	 */
	async has(id) {
		checkId('session id', id);
		// Always asks Redis: a delete from another process must read as false at once,
		// even before this process has heard of it.
		const count = await this.#call(wire.HAS, [id], `Could not check stream session ${id}`, 'has');
		return count > 0;
	}

	/**
	 * Sends `data` to the given sessions, or to every live session when `sessions` is
	 * undefined. Resolves once Redis accepted the publish(es).
	 * @param {string[] | undefined} sessions
	 * @param {string} data
	 */
	send(sessions, data) {
		/** @type {string[] | undefined} */
		let ids;
		try {
			if (typeof data !== 'string') {
				throw argumentTypeError(`data must be a string, got ${describe(data)}`);
			}
			if (sessions != null) {
				if (!Array.isArray(sessions)) {
					throw argumentTypeError(`sessions must be an array of session ids or undefined, got ${describe(sessions)}`);
				}
				// Read once (its iterator, like upstream's for…of): what was checked is what
				// is sent, and a bad id rejects this call only, not the others of its tick.
				ids = Array.from(sessions);
				for (let i = 0; i < ids.length; i++) checkId('each session id', ids[i]);
			}
		} catch (error) {
			return Promise.reject(argumentError(error));
		}
		if (ids === undefined) return this.#call(wire.BROADCAST, [data], 'Could not broadcast', 'send', 1);
		if (ids.length === 0) return Promise.resolve();
		const targets = ids.length;
		ids.unshift(data);
		return this.#call(wire.PUBLISH, ids, 'Could not send to sessions', 'send', targets);
	}

	/** Closes every local stream, removes their liveness keys and the connections. */
	close() {
		this.#closing ??= this.#close();
		return this.#closing;
	}

	async #close() {
		// Changes of this tick go first, so close() sees every session created before it.
		this.#applyChanges();
		const { id: call, promise } = this.#link.track('Could not close the stream session manager', this.#meter);
		const sessions = [...this.#byId.values()];
		this.#byId.clear();
		this.#byToken.clear();
		this.#syncHold();
		for (const session of sessions) closeQuietly(session.controller);
		// Counters stay readable; gauges read zero from now on.
		const final = this.#native.stats();
		final[CONNECTED] = final[WANTED] = final[CONFIRMED] = final[QUEUED] = 0;
		this.#final = final;
		try {
			// Shutdown must not fail because Redis is unreachable; keys then expire by TTL.
			if (this.#native.close(call)) await promise.catch((error) => this.#link.reporter.report(error));
		} finally {
			retire(this.#registered, 'streams', this.#counters());
			this.#link.release();
		}
	}

	/**
	 * Counters since construction and gauges as of now (README "Observability"): fresh
	 * plain numbers each call, cheap enough for every metrics scrape. `reconnects`,
	 * `topologyChanges` and `timeouts` cover this manager's pub/sub connection and its
	 * command connection (shared with the managers built with it by
	 * createSessionManagers); `subscriptionsWanted` / `subscriptionsConfirmed` count
	 * local sessions (not channels): those whose channels this manager wants subscribed,
	 * and those whose message channel Redis confirmed.
	 */
	stats() {
		const own = this.#final ?? this.#native.stats();
		const link = this.#link.figures();
		const m = this.#meter;
		return {
			...callStats(m, link, own),
			sessions: this.#byId.size,
			sent: m.sent,
			delivered: this.#delivered,
			dropped: this.#dropped + own[UNROUTED],
			subscriptionsWanted: own[WANTED],
			subscriptionsConfirmed: own[CONFIRMED],
			deliveryQueue: own[QUEUED],
		};
	}

	/** What the otel entry reads (see observe.js): this manager's own counters. */
	[OBSERVED]() {
		return { kind: 'streams', link: this.#link, counters: this.#counters() };
	}

	/** Counters of this manager alone (its command connection's are the link's). */
	#counters() {
		const own = this.#final ?? this.#native.stats();
		return {
			sessions: this.#byId.size,
			sent: this.#meter.sent,
			delivered: this.#delivered,
			dropped: this.#dropped + own[UNROUTED],
			reconnects: own[RECONNECTS],
			connections: own[CONNECTED],
		};
	}

	[Symbol.asyncDispose]() {
		return this.close();
	}

	[inspect.custom]() {
		return `RedisStreamSessionManager { url: '${this.#link.url}', localSessions: ${this.#byId.size} }`;
	}

	/**
	 * Queues one call on the shared link; after this manager's close() it rejects at
	 * once, even while a sibling keeps the link open.
	 * @param {number} code
	 * @param {string[]} args
	 * @param {string} what
	 * @param {string} operation the method's name, for traces
	 * @param {number} [sent] messages it publishes
	 */
	#call(code, args, what, operation, sent) {
		if (this.#closing) return Promise.reject(closedError(`${what}: the session manager is closed`));
		return this.#link.call(code, args, what, this.#meter, operation, sent);
	}

	/** @param {string} method */
	#assertOpen(method) {
		if (this.#closing || this.#link.closed) {
			throw closedError(`Cannot ${method}: the session manager is closed`);
		}
	}

	/** @param {LocalSession} session */
	#forget(session) {
		if (this.#byId.get(session.id) === session) this.#byId.delete(session.id);
		this.#byToken.delete(session.token);
		this.#syncHold();
	}

	/** Live sessions keep the process alive, as upstream's open sockets do. */
	#syncHold() {
		const holding = this.#byId.size > 0;
		if (holding === this.#holding) return;
		this.#holding = holding;
		this.#link.hold(holding);
		if (holding) live.add(this);
		else live.delete(this);
	}

	/**
	 * Queues a session change; the changes of one tick cross to the native side together
	 * (one SUBSCRIBE and one liveness write for every creation, one UNSUBSCRIBE for every
	 * end).
	 * @param {number} kind CREATE or DROP
	 * @param {number} token
	 * @param {number} word CREATE: the call id to answer; DROP: 1 also drops the liveness key
	 * @param {string} id
	 */
	#change(kind, token, word, id) {
		if (this.#changes.length === 0) queueMicrotask(this.#applyChanges);
		this.#changes.push(kind, token, word, id.length);
		this.#changeIds.push(id);
	}

	#applyChanges = () => {
		if (this.#changes.length === 0) return;
		const changes = Uint32Array.from(this.#changes);
		const ids = this.#changeIds;
		this.#changes = [];
		this.#changeIds = [];
		try {
			this.#native.apply(changes, ids.join(''));
		} catch (error) {
			for (let i = 0; i < changes.length; i += 4) {
				if (changes[i] === CREATE) this.#link.fail(changes[i + 2], error);
			}
		}
	};

	/**
	 * A controller that cannot take data any more ends its session here (not elsewhere).
	 * @param {LocalSession} session
	 * @param {unknown} error
	 */
	#endLocally(session, error) {
		this.#forget(session);
		this.#change(DROP, session.token, 1, session.id);
		// Whatever the app threw, even a value whose toString throws, reaches onError as an
		// Error (with the value as its cause).
		this.#link.reporter.report(
			codedError(CODES.CALLBACK, `Stream of session ${session.id} no longer accepts data (${describeThrown(error)}); ended it locally`, {
				cause: error,
			}),
		);
	}

	/**
	 * @param {LocalSession} session
	 * @param {Uint8Array} chunk
	 */
	#enqueue(session, chunk) {
		try {
			session.controller.enqueue(chunk);
			this.#delivered++;
		} catch (error) {
			this.#dropped++;
			this.#endLocally(session, error);
		}
	}

	/**
	 * A batch from the native side: `entries` holds `[kind, token, offset, length]`
	 * quadruples into `bytes`. Each message is copied into its own Uint8Array (nothing
	 * shared between sessions, nothing pinning the batch). Runs from a threadsafe
	 * function: it never throws.
	 * @param {[Uint8Array, Uint32Array]} batch
	 */
	#deliver([bytes, entries]) {
		for (let i = 0; i < entries.length; i += 4) {
			try {
				const kind = entries[i];
				const start = entries[i + 2];
				const end = start + entries[i + 3];
				if (kind === wire.DELIVER_MESSAGE) {
					const session = this.#byToken.get(entries[i + 1]);
					if (session) this.#enqueue(session, slice.call(bytes, start, end));
					else this.#dropped++;
				} else if (kind === wire.DELIVER_BROADCAST) {
					if (this.#byToken.size === 0) this.#dropped++;
					for (const session of [...this.#byToken.values()]) {
						this.#enqueue(session, slice.call(bytes, start, end));
					}
				} else if (kind === wire.DELIVER_CLOSE) {
					// Ended elsewhere: the native side already forgot it and drops its key.
					const session = this.#byToken.get(entries[i + 1]);
					if (session) {
						this.#forget(session);
						closeQuietly(session.controller);
					}
				} else if (kind === wire.DELIVER_PROBLEM) {
					// The token word carries the problem's kind (src/delivery.rs).
					this.#link.reporter.report(nativeError(entries[i + 1], decoder.decode(bytes.subarray(start, end))));
				}
			} catch (error) {
				this.#link.reporter.report(error);
			}
		}
	}
}

/** @param {ReadableStreamDefaultController} controller */
function closeQuietly(controller) {
	try {
		controller.close();
	} catch {
		// Already closed or errored: nothing left to end.
	}
}

module.exports = { RedisStreamSessionManager };
