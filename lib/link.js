'use strict';

const { NativeClient } = require('./native.cjs');
const { Connection } = require('./connection.js');
const { nativeOptions } = require('./options.js');

const { FAILED_ANSWER } = require('./wire.js');

const WARN_EVERY_MS = 10_000;
const noop = () => {};

/**
 * Reports background errors: to `onError` when given, else as a rate-limited warning.
 * Never throws.
 */
class Reporter {
	#onError;
	#lastWarning = 0;
	#suppressed = 0;

	/** @param {((error: Error) => void) | undefined} onError */
	constructor(onError) {
		this.#onError = onError;
	}

	/** @param {unknown} error */
	report(error) {
		const err = error instanceof Error ? error : new Error(String(error));
		if (this.#onError) {
			try {
				this.#onError(err);
			} catch {
				// A throwing hook must not take the process down.
			}
			return;
		}
		const now = Date.now();
		if (now - this.#lastWarning < WARN_EVERY_MS) {
			this.#suppressed++;
			return;
		}
		const more = this.#suppressed ? ` (${this.#suppressed} similar messages suppressed)` : '';
		this.#lastWarning = now;
		this.#suppressed = 0;
		process.emitWarning(`${err.message}${more}`, { code: 'TMCP_REDIS' });
	}
}

// A link dropped without close() must not keep its timer (and so the process) alive,
// nor its socket open.
const dropped = new FinalizationRegistry(({ timer, connection }) => {
	clearInterval(timer);
	connection.close();
});
// Links with pending calls or live sessions stay reachable (their promises must settle);
// idle ones are reachable only through their users, so they can be collected.
/** @type {Set<Link>} */
const busy = new Set();

/**
 * @typedef {{ resolve: (v: any) => void, reject: (e: Error) => void, what: string, deadline: number }} Pending
 */

/**
 * A tick's batch is written early, once, when it reaches this many calls: Redis then
 * works on the first part while this thread prepares the rest, instead of the two
 * taking turns. Measured (bench/worker.mjs, 64 in flight): churn +17–25 %, set+get
 * +5–15 %; with 256 sends in flight, delivered messages/s moved by 0 to −7 %.
 */
const EARLY_WRITE_CALLS = 32;

/**
 * One Redis endpoint shared by the managers built on it. Calls made in one tick go to
 * Redis as one pipeline on the command socket and settle when their replies arrive.
 * Like an open socket, it keeps the process alive while calls are pending or a stream
 * manager holds live sessions, and only then.
 */
class Link {
	#native;
	#connection;
	/** Settles calls in submission order, so the first entry is the oldest. @type {Map<number, Pending>} */
	#pending = new Map();
	/** @type {NodeJS.Timeout | null} */
	#deadlineTimer = null;
	#nextId = 1;
	/** @type {number[]} */
	#calls = [];
	/** @type {string[]} */
	#args = [];
	#scheduled = false;
	/** This tick's batch had its early write (see EARLY_WRITE_CALLS). */
	#wroteEarly = false;
	#batchDeadline = 0;
	#keepAlive;
	#users = 0;
	/** Stream managers currently holding live sessions. */
	#holds = 0;
	closed = false;
	reporter;

	/**
	 * @param {string} url
	 * @param {ReturnType<import('./options.js')['normalizeOptions']>} options
	 */
	constructor(url, options) {
		this.options = options;
		this.reporter = new Reporter(options.onError);
		// The native side holds its callback strongly: reach `this` weakly from it so an
		// idle, dropped manager can be garbage-collected.
		const self = new WeakRef(this);
		try {
			this.#native = new NativeClient(url, nativeOptions(options), (answers) => self.deref()?.#answer(answers));
		} catch (error) {
			const err = /** @type {Error & { code?: string }} */ (error);
			// The native side flags bad input with InvalidArg; JS callers expect TypeError.
			throw err.code === 'InvalidArg' ? new TypeError(err.message) : err;
		}
		// The socket's listeners reach `this` weakly too, for the same reason.
		this.#connection = new Connection(this.#native, options, {
			answer: (answers) => self.deref()?.#answer(answers),
			lose: (ids, message) => self.deref()?.#lose(ids, message),
			isPending: (id) => self.deref()?.isPending(id) ?? false,
		});
		this.#keepAlive = setInterval(noop, 2 ** 30);
		this.#keepAlive.unref();
		dropped.register(this, { timer: this.#keepAlive, connection: this.#connection });
	}

	get native() {
		return this.#native;
	}

	get url() {
		return this.#native.url;
	}

	/** Registers one more manager using this link. */
	retain() {
		this.#users++;
		return this;
	}

	/**
	 * Reserves a call id settled from elsewhere (the pub/sub socket, through `resolve` /
	 * `fail`); like a call, it fails after commandTimeout.
	 * @returns {{ id: number, promise: Promise<any> }}
	 */
	track() {
		return this.#reserve('', performance.now() + this.options.commandTimeout);
	}

	/**
	 * @param {string} what
	 * @param {number} deadline
	 * @returns {{ id: number, promise: Promise<any> }}
	 */
	#reserve(what, deadline) {
		const id = this.#nextId;
		// Id 0 is the connection handshake's.
		this.#nextId = (this.#nextId + 1) >>> 0 || 1;
		const promise = new Promise((resolve, reject) => {
			this.#pending.set(id, { resolve, reject, what, deadline });
		});
		if (this.#pending.size === 1) this.#updateRef();
		if (this.#deadlineTimer === null) this.#armDeadline(this.options.commandTimeout);
		return { id, promise };
	}

	/**
	 * Queues one call for this tick's batch.
	 * @param {number} code see wire.js
	 * @param {string[]} args
	 * @param {string} what context for error messages
	 */
	call(code, args, what) {
		if (this.closed) return Promise.reject(new Error(`${what}: the session manager is closed`));
		if (!this.#scheduled) {
			this.#scheduled = true;
			// Calls of one tick share a deadline: one clock read per batch, not per call.
			this.#batchDeadline = performance.now() + this.options.commandTimeout;
			// At the end of this tick: no added latency (a setImmediate, as node-redis
			// uses, measured no larger batches here and a slower single call).
			queueMicrotask(this.#flushTick);
		}
		const { id, promise } = this.#reserve(what, this.#batchDeadline);
		this.#calls.push(id, code, args.length);
		for (let i = 0; i < args.length; i++) this.#args.push(args[i]);
		if (this.#calls.length === 3 * EARLY_WRITE_CALLS && !this.#wroteEarly) {
			this.#wroteEarly = true;
			this.#flush();
		}
		return promise;
	}

	/** Writes what the tick queued (the end-of-tick microtask). */
	#flushTick = () => {
		this.#scheduled = false;
		this.#wroteEarly = false;
		this.#flush();
	};

	#flush() {
		if (this.#calls.length === 0) return;
		const calls = Uint32Array.from(this.#calls);
		const args = this.#args;
		this.#calls = [];
		this.#args = [];
		try {
			this.#connection.send(calls, args);
		} catch (error) {
			for (let i = 0; i < calls.length; i += 3) {
				this.#settle(calls[i], error instanceof Error ? error.message : String(error), true);
			}
		}
	}

	/**
	 * Settles answered calls: `[id, reply, …]`, where the id of a failed call is offset by
	 * 2^32 and its reply is the message. Both the socket's reads and the native side's
	 * callback deliver this; it never throws (a throw from a threadsafe function would be
	 * fatal to the process).
	 * @param {unknown[]} answers
	 */
	#answer(answers) {
		try {
			for (let i = 0; i < answers.length; i += 2) {
				const id = /** @type {number} */ (answers[i]);
				if (id >= FAILED_ANSWER) this.#settle(id - FAILED_ANSWER, answers[i + 1], true);
				else this.#settle(id, answers[i + 1], false);
			}
		} catch (error) {
			this.reporter.report(error);
		}
	}

	/**
	 * Whether a call is still waiting for its answer (not settled, not expired).
	 * @param {number} id
	 */
	isPending(id) {
		return this.#pending.has(id);
	}

	/**
	 * Settles a tracked call.
	 * @param {number} id
	 * @param {unknown} [value]
	 */
	resolve(id, value = null) {
		this.#settle(id, value, false);
	}

	/**
	 * Fails a tracked call.
	 * @param {number} id
	 * @param {unknown} error
	 */
	fail(id, error) {
		this.#settle(id, error instanceof Error ? error.message : String(error), true);
	}

	/**
	 * Calls that will never be answered (the socket broke, or Redis refused it).
	 * @param {ArrayLike<number>} ids
	 * @param {string} message
	 */
	#lose(ids, message) {
		for (let i = 0; i < ids.length; i++) this.#settle(ids[i], message, true);
	}

	/** @param {number} ms */
	#armDeadline(ms) {
		this.#deadlineTimer = setTimeout(this.#expire, Math.max(1, Math.ceil(ms)));
		// Pending calls keep the process alive through #keepAlive, not this timer.
		this.#deadlineTimer.unref();
	}

	/** Rejects the calls whose deadline passed; one timer serves all of them. */
	#expire = () => {
		this.#deadlineTimer = null;
		const now = performance.now();
		for (const [id, entry] of this.#pending) {
			// Entries are in submission order, so deadlines only grow: stop at the first
			// one still ahead.
			if (entry.deadline > now) {
				this.#armDeadline(entry.deadline - now);
				return;
			}
			this.#settle(id, this.#timeoutReason(), true);
		}
	};

	#timeoutReason() {
		const connection = this.#connection;
		if (!connection.ready && connection.lastError) return `cannot connect to Redis (${connection.lastError})`;
		return `Redis did not answer within ${this.options.commandTimeout} ms (commandTimeout)`;
	}

	/** @param {number} id @param {unknown} reply @param {boolean} isError */
	#settle(id, reply, isError) {
		const entry = this.#pending.get(id);
		if (!entry) return;
		this.#pending.delete(id);
		if (this.#pending.size === 0) this.#updateRef();
		if (isError) entry.reject(new Error(entry.what ? `${entry.what}: ${reply}` : String(reply)));
		else entry.resolve(reply);
	}

	/** @param {boolean} holding whether a stream manager of this link has live sessions */
	hold(holding) {
		this.#holds += holding ? 1 : -1;
		this.#updateRef();
	}

	#updateRef() {
		if (this.#pending.size > 0 || this.#holds > 0) {
			this.#keepAlive.ref();
			busy.add(this);
			return;
		}
		busy.delete(this);
		if (this.closed) clearInterval(this.#keepAlive);
		else this.#keepAlive.unref();
	}

	/** Releases one user; the last one closes the connection. */
	release() {
		if (--this.#users > 0 || this.closed) return;
		this.closed = true;
		this.#connection.close();
		this.#updateRef();
	}
}

module.exports = { Link, Reporter };
