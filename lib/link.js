'use strict';

const { NativeClient } = require('./binding.js');
const { checkUrl, nativeOptions, normalizeOptions } = require('./options.js');
const { FAILED_ANSWER } = require('./wire.js');

/** Key of the options object `createSessionManagers` passes: the Link to share. */
const LINK = Symbol.for('tmcp-rs.session-manager-redis.link');
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

// A link dropped without close() must not keep its timer (and so the process) alive.
const timers = new FinalizationRegistry((timer) => clearInterval(timer));
// Links with pending calls or live sessions stay reachable (their promises must settle);
// idle ones are reachable only through their users, so they can be collected.
/** @type {Set<Link>} */
const busy = new Set();

/**
 * One native command connection (opened, read and reconnected by the `redis` crate on
 * the addon's tokio runtime). Calls made in one tick cross to Rust as one batch and are
 * answered in batches; deadlines are kept on the native side, which answers every call.
 * Like an open socket, it keeps the process alive while calls are pending or a stream
 * manager holds live sessions, and only then.
 */
class Link {
	#native;
	/** @type {Map<number, { resolve: (v: any) => void, reject: (e: Error) => void, what: string }>} */
	#pending = new Map();
	#nextId = 1;
	/** @type {number[]} */
	#calls = [];
	/** @type {string[]} */
	#args = [];
	#scheduled = false;
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
		this.#keepAlive = setInterval(noop, 2 ** 30);
		this.#keepAlive.unref();
		timers.register(this, this.#keepAlive);
	}

	/**
	 * The link a manager's constructor uses: the one shared through `options[LINK]`
	 * (createSessionManagers), else a new one; retained for that manager either way.
	 * @param {string} redisUrl
	 * @param {unknown} options the manager's options argument
	 */
	static acquire(redisUrl, options) {
		checkUrl(redisUrl);
		const shared = options && /** @type {any} */ (options)[LINK];
		return (shared ?? new Link(redisUrl, normalizeOptions(options))).retain();
	}

	/** Options that make managers share this link (see `acquire`). */
	sharing() {
		return { [LINK]: this };
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
	 * Reserves a call id answered by a native method other than `submit`.
	 * @param {string} what context for error messages ('' for none)
	 * @returns {{ id: number, promise: Promise<any> }}
	 */
	track(what) {
		const id = this.#nextId;
		this.#nextId = (this.#nextId + 1) >>> 0 || 1;
		const promise = new Promise((resolve, reject) => {
			this.#pending.set(id, { resolve, reject, what });
		});
		if (this.#pending.size === 1) this.#updateRef();
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
		const { id, promise } = this.track(what);
		this.#calls.push(id, code, args.length);
		for (let i = 0; i < args.length; i++) this.#args.push(args[i]);
		if (!this.#scheduled) {
			this.#scheduled = true;
			queueMicrotask(this.#flush);
		}
		return promise;
	}

	#flush = () => {
		this.#scheduled = false;
		const calls = Uint32Array.from(this.#calls);
		const args = this.#args;
		this.#calls = [];
		this.#args = [];
		try {
			this.#native.submit(calls, args);
		} catch (error) {
			for (let i = 0; i < calls.length; i += 3) this.fail(calls[i], error);
		}
	};

	/**
	 * Settles answered calls: `[id, reply, …]`, where the id of a failed call is offset by
	 * 2^32 and its reply is the message. Runs from a threadsafe function: it never throws
	 * (a throw there would be fatal to the process).
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
	 * Fails a tracked call that could not be handed to the native side.
	 * @param {number} id
	 * @param {unknown} error
	 */
	fail(id, error) {
		this.#settle(id, error instanceof Error ? error.message : String(error), true);
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
		this.#native.close();
		this.#updateRef();
	}
}

module.exports = { Link };
