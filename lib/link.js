'use strict';
// The one path from a manager's calls to the native command connection. Why JavaScript:
// calls made in one tick are gathered here and cross to Rust as one batch (one Node-API
// call per tick, not per call), and each call's promise must be created and settled on
// the JS thread; parsing, pipelining and every Redis connection are native
// (src/js_calls.rs, src/commands.rs).

const { NativeClient } = require('./binding.js');
const {
	argumentError,
	argumentTypeError,
	closedError,
	codedError,
	CODES,
	describeThrown,
	isTimeoutKind,
	nativeError,
	NOT_SENT_KIND,
	toError,
} = require('./errors.js');
const { accumulate, command, commandTraced, Meter, publishError, publishEvent, serverOf } = require('./observe.js');
const { checkUrl, nativeOptions, normalizeOptions } = require('./options.js');
const { FAILED_ANSWER } = require('./wire.js');

/** Key of the options object `createSessionManagers` passes: the Link to share. */
const LINK = Symbol.for('tmcp-rs.session-manager-redis.link');
const WARN_EVERY_MS = 10_000;
/** UTF-16 units of arguments per `submit`, beyond which a tick's calls cross in parts. */
const SUBMIT_UNITS = 1 << 20;
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

	/** @param {unknown} error anything, even a value whose `toString` throws */
	report(error) {
		const err = toError(error);
		publishError(err);
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
		process.emitWarning(`${describeThrown(err)}${more}`, { code: 'TMCP_REDIS' });
	}
}

// A link dropped without close() must not keep its timer (and so the process) alive.
const timers = new FinalizationRegistry((timer) => clearInterval(timer));
// Links with pending calls or live sessions stay reachable (their promises must settle);
// idle ones are reachable only through their users, so they can be collected.
/** @type {Set<Link>} */
const busy = new Set();

/** Ids carry a slot of this many bits and a reuse tag above it. */
const SLOT_BITS = 22;
const SLOTS = 2 ** SLOT_BITS;
/** 7 tag bits keep every id below 2^29, a small integer (Smi) for V8. */
const TAGS = 2 ** 7;

/**
 * Calls awaiting their answer, by id. Not a Map: a Map that entries keep entering and
 * leaving is rehashed again and again, and V8 links each replaced table to its successor,
 * so once one table was promoted, every newer one and the promises it held survived the
 * young-generation GC (measured on the info snapshots, see lib/info.js). Here an id names
 * a slot of one array plus a reuse tag: settling empties the slot, nothing links old
 * entries to new ones, and an answer for a reused slot's previous call is ignored.
 */
class PendingCalls {
	/** @type {({ id: number, resolve: (v: any) => void, reject: (e: Error) => void, what: string, meter: Meter, sent: number, trace: any } | undefined)[]} */
	#slots = [];
	/** @type {number[]} */
	#free = [];
	#tag = 0;
	#capacity;
	size = 0;

	/** @param {number} [capacity] most calls pending at once (fewer only in tests) */
	constructor(capacity = SLOTS) {
		this.#capacity = Math.min(capacity, SLOTS);
	}

	/**
	 * Files a call; its id, or 0 when the table is full.
	 * @param {(v: any) => void} resolve @param {(e: Error) => void} reject @param {string} what
	 * @param {Meter} meter the calling manager's counters
	 * @param {number} sent messages it publishes (counted when it succeeds)
	 * @param {object} [trace] its `tmcp-redis:command` context, when traced
	 */
	add(resolve, reject, what, meter, sent, trace) {
		let slot;
		if (this.#free.length > 0) slot = /** @type {number} */ (this.#free.pop());
		else if (this.#slots.length < this.#capacity) slot = this.#slots.push(undefined) - 1;
		else return 0;
		this.#tag = (this.#tag % (TAGS - 1)) + 1;
		const id = this.#tag * SLOTS + slot;
		this.#slots[slot] = { id, resolve, reject, what, meter, sent, trace };
		this.size++;
		return id;
	}

	/** The call filed under `id`, removed; undefined when it is not pending. @param {number} id */
	take(id) {
		const slot = id % SLOTS;
		const entry = this.#slots[slot];
		if (entry === undefined || entry.id !== id) return undefined;
		this.#slots[slot] = undefined;
		this.#free.push(slot);
		this.size--;
		return entry;
	}
}

/**
 * One native command connection (opened, read and reconnected by the `redis` crate on
 * the addon's tokio runtime). Calls made in one tick cross to Rust as one batch and are
 * answered in batches; deadlines are kept on the native side, which answers every call.
 * Like an open socket, it keeps the process alive while calls are pending or a stream
 * manager holds live sessions, and only then.
 */
class Link {
	#native;
	#pending = new PendingCalls();
	/** @type {number[]} */
	#calls = [];
	/** @type {string[]} */
	#args = [];
	/** UTF-16 units of `#args`. */
	#units = 0;
	/** Reused for every `submit` (see #submit): 1 KiB to start, off V8's heap from the start. */
	#words = new Uint32Array(256);
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
		// The native side holds its callbacks strongly: reach `this` weakly from them so an
		// idle, dropped manager can be garbage-collected.
		const self = new WeakRef(this);
		try {
			this.#native = new NativeClient(
				url,
				nativeOptions(options),
				(answers) => self.deref()?.#answer(answers),
				(event) => self.deref()?.#event(event),
			);
		} catch (error) {
			const err = /** @type {Error & { code?: string }} */ (error);
			// The native side flags bad input with InvalidArg; JS callers expect TypeError.
			if (err.code === 'InvalidArg') throw argumentTypeError(err.message);
			throw codedError(CODES.CONNECTION, err.message, { cause: err });
		}
		/** The server command payloads name (see serverOf; a Sentinel master once known). */
		this.server = serverOf(this.#native.url, options);
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
		let shared;
		try {
			const given = options && /** @type {any} */ (options)[LINK];
			// A brand check: no trap of a look-alike runs.
			shared = typeof given === 'object' && given !== null && #users in given ? given : undefined;
		} catch (error) {
			// A getter or trap of the options object: a bad argument like any other.
			throw argumentError(error);
		}
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
	 * Reserves a call id answered by a native method other than `submit`. With SLOTS
	 * calls already pending the id is 0, which no answer settles, and the promise is
	 * already rejected.
	 * @param {string} what context for error messages ('' for none)
	 * @param {Meter} meter the calling manager's counters
	 * @param {number} [sent] messages the call publishes (stats' `sent`)
	 * @param {object} [trace] its `tmcp-redis:command` context, when traced (see `call`)
	 * @returns {{ id: number, promise: Promise<any> }}
	 */
	track(what, meter, sent = 0, trace = undefined) {
		let id = 0;
		meter.calls++;
		const promise = new Promise((resolve, reject) => {
			id = this.#pending.add(resolve, reject, what, meter, sent, trace);
			if (id === 0) {
				meter.settled++;
				meter.failed++;
				const error = codedError(CODES.NOT_SENT, `${what}: more than ${SLOTS} calls are pending on this connection`);
				if (trace) settled(trace, undefined, error);
				reject(error);
			}
		});
		if (this.#pending.size === 1 && id !== 0) this.#updateRef();
		return { id, promise };
	}

	/**
	 * Runs `run` (which makes one call and returns its promise) inside the
	 * `tmcp-redis:command` trace when that channel has subscribers; else just runs it.
	 * @template T
	 * @param {Meter} meter
	 * @param {string} operation the method's name
	 * @param {() => Promise<T>} run
	 * @returns {Promise<T>}
	 */
	traced(meter, operation, run) {
		if (!commandTraced()) return run();
		return command.tracePromise(run, this.#context(meter, operation));
	}

	/**
	 * A trace's context: what the call is and where it goes; never an argument.
	 * @param {Meter} meter @param {string} operation
	 */
	#context(meter, operation) {
		const { serverAddress, serverPort, database } = this.server;
		return { operation, manager: meter.manager, serverAddress, serverPort, database };
	}

	/**
	 * Queues one call for this tick's batch. When `tmcp-redis:command` has subscribers it
	 * is traced as `tracePromise` would (start, end, then error, asyncStart, asyncEnd
	 * before the promise settles, with `result` or `error` on the context), without the
	 * extra promise and closures: the settlement publishes them (see #settle).
	 * @param {number} code see wire.js
	 * @param {string[]} args
	 * @param {string} what context for error messages
	 * @param {Meter} meter the calling manager's counters
	 * @param {string} operation the method's name, for traces
	 * @param {number} [sent] messages the call publishes (stats' `sent`)
	 */
	call(code, args, what, meter, operation, sent = 0) {
		if (!commandTraced()) return this.#call(code, args, what, meter, sent, undefined);
		const context = this.#context(meter, operation);
		return command.start.runStores(context, this.#tracedCall, this, code, args, what, meter, sent, context);
	}

	/**
	 * `#call` between a trace's start and end.
	 * @param {number} code @param {string[]} args @param {string} what @param {Meter} meter
	 * @param {number} sent @param {object} context
	 */
	#tracedCall(code, args, what, meter, sent, context) {
		try {
			return this.#call(code, args, what, meter, sent, context);
		} finally {
			command.end.publish(context);
		}
	}

	/**
	 * @param {number} code @param {string[]} args @param {string} what @param {Meter} meter
	 * @param {number} sent @param {object | undefined} trace
	 */
	#call(code, args, what, meter, sent, trace) {
		if (this.closed) {
			const error = closedError(`${what}: the session manager is closed`);
			if (trace) settled(trace, undefined, error);
			return Promise.reject(error);
		}
		const { id, promise } = this.track(what, meter, sent, trace);
		if (id === 0) return promise;
		this.#calls.push(id, code, args.length);
		for (let i = 0; i < args.length; i++) {
			this.#args.push(args[i]);
			this.#units += args[i].length;
		}
		if (!this.#scheduled) {
			this.#scheduled = true;
			queueMicrotask(this.#flush);
		}
		return promise;
	}

	#flush = () => {
		this.#scheduled = false;
		const calls = this.#calls;
		const args = this.#args;
		const total = this.#units;
		this.#calls = [];
		this.#args = [];
		this.#units = 0;
		if (total <= SUBMIT_UNITS) {
			this.#submit(calls, 0, calls.length, args, 0, args.length);
			return;
		}
		// A large tick crosses in parts of about SUBMIT_UNITS, in order, each call whole:
		// the concatenation stays far below V8's longest string, and the copy is bounded.
		let fromCall = 0;
		let fromArg = 0;
		let arg = 0;
		let units = 0;
		for (let call = 0; call < calls.length; call += 3) {
			let size = 0;
			for (let k = 0; k < calls[call + 2]; k++) size += args[arg + k].length;
			if (units > 0 && units + size > SUBMIT_UNITS) {
				this.#submit(calls, fromCall, call, args, fromArg, arg);
				[fromCall, fromArg, units] = [call, arg, 0];
			}
			units += size;
			arg += calls[call + 2];
		}
		this.#submit(calls, fromCall, calls.length, args, fromArg, args.length);
	};

	/**
	 * Hands calls `fromCall..toCall` (triples in `calls`) and their arguments to the
	 * native side: `[id, code, argCount, …argument lengths]` per call in the reused
	 * `#words` (a typed array handed to Node-API once is not copied out again) and the
	 * arguments as one string. The native side splits the text on its own thread
	 * (src/js_calls.rs).
	 * @param {number[]} calls @param {number} fromCall @param {number} toCall
	 * @param {string[]} args @param {number} fromArg @param {number} toArg
	 */
	#submit(calls, fromCall, toCall, args, fromArg, toArg) {
		const needed = toCall - fromCall + toArg - fromArg;
		if (this.#words.length < needed) this.#words = new Uint32Array(Math.max(needed, 2 * this.#words.length));
		const words = this.#words;
		let w = 0;
		let a = fromArg;
		for (let call = fromCall; call < toCall; call += 3) {
			const argc = calls[call + 2];
			words[w++] = calls[call];
			words[w++] = calls[call + 1];
			words[w++] = argc;
			for (let k = 0; k < argc; k++) words[w++] = args[a++].length;
		}
		const part = fromArg === 0 && toArg === args.length ? args : args.slice(fromArg, toArg);
		try {
			this.#native.submit(words, w, part.join(''));
		} catch (error) {
			for (let call = fromCall; call < toCall; call += 3) this.fail(calls[call], error);
		}
	}

	/**
	 * Settles answered calls (see CompletionBatch in src/delivery.rs): `id` for a call
	 * answered undefined, `-(id + 1), value` for one answered with a value, and
	 * `id + 2^32 × kind, message` for a failed one (kind: the native ErrorKind, 1 or
	 * more). Runs from a threadsafe function: it never throws (a throw there would be
	 * fatal to the process).
	 * @param {unknown[]} answers
	 */
	#answer(answers) {
		try {
			for (let i = 0; i < answers.length; ) {
				const head = /** @type {number} */ (answers[i++]);
				if (head < 0) this.#settle(-head - 1, answers[i++], 0);
				else if (head >= FAILED_ANSWER) {
					const kind = Math.floor(head / FAILED_ANSWER);
					this.#settle(head - kind * FAILED_ANSWER, answers[i++], kind);
				} else this.#settle(head, undefined, 0);
			}
		} catch (error) {
			this.reporter.report(error);
		}
	}

	/**
	 * Connection and topology events of the native side (see src/stats.rs): a Sentinel
	 * master it names becomes the server of later payloads; published where someone
	 * listens. Runs from a threadsafe function: it never throws.
	 * @param {string[]} event `[channel, event, role, address, port]`
	 */
	#event(event) {
		try {
			if (event[3]) this.server = { ...this.server, serverAddress: event[3], serverPort: Number(event[4]) || undefined };
			publishEvent(event, this.server);
		} catch (error) {
			this.reporter.report(error);
		}
	}

	/**
	 * Fails a tracked call that could not be handed to the native side.
	 * @param {number} id
	 * @param {unknown} error
	 * @param {number} [kind] the native ErrorKind it fails with (default: not sent)
	 */
	fail(id, error, kind = NOT_SENT_KIND) {
		this.#settle(id, describeThrown(error), kind);
	}

	/**
	 * @param {number} id @param {unknown} reply
	 * @param {number} kind 0 for success, else the native ErrorKind of the failure
	 */
	#settle(id, reply, kind) {
		const entry = this.#pending.take(id);
		if (!entry) return;
		if (this.#pending.size === 0) this.#updateRef();
		const meter = entry.meter;
		meter.settled++;
		if (kind === 0) {
			meter.sent += entry.sent;
			if (entry.trace) settled(entry.trace, reply, undefined);
			entry.resolve(reply);
			return;
		}
		meter.failed++;
		if (isTimeoutKind(kind)) meter.timeouts++;
		const error = nativeError(kind, entry.what ? `${entry.what}: ${reply}` : String(reply));
		if (entry.trace) settled(entry.trace, undefined, error);
		entry.reject(error);
	}

	/**
	 * The command connection's figures: `[reconnects, topologyChanges, timeouts,
	 * connected]` (timeouts: of background work, the liveness refreshes).
	 * @returns {Float64Array}
	 */
	figures() {
		const figures = this.#native.stats();
		// Closed: the connection is going away with its last user.
		if (this.closed) figures[3] = 0;
		return figures;
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
		const [reconnects] = this.#native.stats();
		// A metric that sums the links' counters must not go down (see observe.js).
		accumulate('link', { reconnects });
		this.#native.close();
		this.#updateRef();
	}
}

/**
 * Ends a trace (see Link#call) as `tracePromise` does: `error` (on failure), then
 * `asyncStart` and `asyncEnd`, with `result` or `error` on the context.
 * @param {any} context @param {unknown} result @param {Error | undefined} error
 */
function settled(context, result, error) {
	if (error) {
		context.error = error;
		command.error.publish(context);
	} else {
		context.result = result;
	}
	command.asyncStart.publish(context);
	command.asyncEnd.publish(context);
}

module.exports = { Link, PendingCalls };
