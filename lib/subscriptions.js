'use strict';
// RedisSubscriptionManager: MCP `subscriptions/listen`. Why JavaScript: each subscription's
// callbacks (acknowledge, send, close) are the app's functions and their promises order
// the notifications; matching and the Redis channel are native (src/subscriptions/).

const { inspect } = require('node:util');
const { NativeSubscriptions } = require('./binding.js');
const { Link } = require('./link.js');
const {
	argumentError,
	argumentTypeError,
	closedError,
	codedError,
	CLOSED_KIND,
	CODES,
	describe,
	describeThrown,
	nativeError,
	toError,
} = require('./errors.js');
const { callStats, CONNECTED, Meter, OBSERVED, RECONNECTS, register, retire } = require('./observe.js');
const { isWellFormed } = require('./options.js');
const wire = require('./wire.js');

const decoder = new TextDecoder();
const noop = () => {};
const REASONS = ['closed', 'cancelled'];

// Positions in NativeSubscriptions.stats() (src/subscriptions/mod.rs) after the
// pub/sub connection's figures (RECONNECTS..CONNECTED, observe.js): the manager's own.
const IGNORED = 4;
const UNWANTED = 5;
const QUEUED = 6;
const SUBSCRIBED = 7;

/**
 * @typedef {{ toolsListChanged?: boolean, promptsListChanged?: boolean, resourcesListChanged?: boolean, resourceSubscriptions?: string[] }} Filters
 * @typedef {{ toolsListChanged: boolean, promptsListChanged: boolean, resourcesListChanged: boolean, resourceSubscriptions: string[] }} ReadFilters
 * @typedef {{ id: string | number, origin: string, filters: Filters }} Subscription
 * @typedef {{ id: string | number, origin: string, filters: ReadFilters }} ReadSubscription
 * @typedef {{ acknowledge: () => void | Promise<void>, send: (notification: any) => void | Promise<void>, close: (reason: 'closed' | 'cancelled') => void | Promise<void> }} Callbacks
 * @typedef {{ token: number, subscription: ReadSubscription, callbacks: Callbacks, queue: Promise<'active' | 'failed'>, closing?: Promise<boolean> }} Registration
 */

/**
 * MCP `subscriptions/listen` streams shared between server processes, for
 * `HttpTransport`'s `subscriptionManager` option. Notifications travel on one Redis
 * channel (`tmcp:subscriptions`, upstream's); the native side reads each one's `method`
 * and `params.uri` and hands JavaScript only those a local subscription wants.
 *
 * The contract is `@tmcp/session-manager`'s `InMemorySubscriptionManager`'s, across
 * processes: matching notifications wait until `acknowledge()` resolved, then arrive in
 * order; `close` is idempotent and drains first. Its own lifecycle is `dispose()` (and
 * `Symbol.asyncDispose`), so it does not collide with `close(id, origin, reason)`.
 */
class RedisSubscriptionManager {
	#link;
	#native;
	/** origin → id → registration. @type {Map<string, Map<string | number, Registration>>} */
	#byOrigin = new Map();
	/** @type {Map<number, Registration>} */
	#byToken = new Map();
	#nextToken = 1;
	/** @type {Promise<void> | undefined} */
	#disposing;
	#meter = new Meter('subscriptions');
	/** Notifications a subscription's `send` took. */
	#delivered = 0;
	/** Notifications whose `send` threw (or that came for a subscription since closed). */
	#dropped = 0;
	/** The native figures as of dispose() (the native side answers none after it). @type {Float64Array | undefined} */
	#final;
	#registered;

	/**
	 * @param {string} redisUrl
	 * @param {import('../index').RedisSessionManagerOptions} [options]
	 */
	constructor(redisUrl, options) {
		this.#link = Link.acquire(redisUrl, options);
		// Reached weakly from the native callback: an idle, dropped manager can be collected.
		const self = new WeakRef(this);
		this.#native = new NativeSubscriptions(this.#link.native, (batch) => self.deref()?.#deliver(batch));
		this.#registered = register(this);
	}

	/**
	 * Registers a subscription; false if `(origin, id)` is already registered. Resolves
	 * once Redis carries notifications to this process and `acknowledge()` resolved.
	 * @param {Subscription} subscription
	 * @param {Callbacks} callbacks
	 * @returns {Promise<boolean>}
	 */
	async create(subscription, callbacks) {
		let read;
		let calls;
		try {
			// Every argument read once, here, before anything is stored: a throwing getter
			// leaves nothing behind.
			read = readSubscription(subscription);
			calls = readCallbacks(callbacks);
		} catch (error) {
			throw argumentError(error);
		}
		const { id, origin, filters } = read;
		if (this.#disposing) throw closedError('Cannot create: the subscription manager is disposed');
		const existing = this.#byOrigin.get(origin);
		if (existing?.has(id)) return false;
		// Redis first: with Redis unreachable this rejects within commandTimeout.
		await this.#link.traced(this.#meter, 'create', () => {
			const { id: call, promise } = this.#link.track('Could not create subscription', this.#meter);
			try {
				this.#native.ready(call);
			} catch (error) {
				// Closed meanwhile (the native side refuses after dispose()).
				this.#link.fail(call, error, CLOSED_KIND);
			}
			return promise;
		});
		if (this.#disposing) throw closedError('Cannot create: the subscription manager is disposed');
		let byId = this.#byOrigin.get(origin);
		if (byId?.has(id)) return false;
		const token = this.#nextToken;
		this.#nextToken = (this.#nextToken + 1) >>> 0 || 1;
		// The native side first: should it refuse (disposed meanwhile), nothing is stored.
		try {
			this.#native.watch(token, interestFlags(filters), filters.resourceSubscriptions);
		} catch (error) {
			throw closedError(`Cannot create: ${describeThrown(error)}`);
		}
		if (!byId) this.#byOrigin.set(origin, (byId = new Map()));

		/** @type {(value?: unknown) => void} */
		let acknowledged = noop;
		/** @type {(reason?: unknown) => void} */
		let refused = noop;
		const acknowledgement = new Promise((resolve, reject) => {
			acknowledged = resolve;
			refused = reject;
		});
		/** @type {Registration} */
		const registration = {
			token,
			subscription: { id, origin, filters },
			callbacks: calls,
			// Notifications queue behind the acknowledgement.
			queue: acknowledgement.then(
				() => /** @type {const} */ ('active'),
				() => /** @type {const} */ ('failed'),
			),
		};
		byId.set(id, registration);
		this.#byToken.set(token, registration);
		try {
			Promise.resolve(calls.acknowledge()).then(acknowledged, refused);
		} catch (error) {
			refused(error);
		}
		try {
			await acknowledgement;
			if (registration.closing) return true;
			await registration.queue;
			return true;
		} catch (error) {
			if (!registration.closing) this.#forget(registration);
			throw toError(error);
		}
	}

	/**
	 * Publishes a change notification to every matching subscription of every process
	 * (this one included, through Redis). Resolves once Redis accepted it.
	 * @param {{ method: string, params?: unknown }} notification
	 */
	send(notification) {
		let json;
		try {
			if (typeof notification !== 'object' || notification === null || Array.isArray(notification)) {
				throw notANotification(notification);
			}
			// A copy: each property is read once, so the method checked is the one published.
			const copy = { ...notification };
			if (typeof copy.method !== 'string') throw notANotification(notification);
			json = JSON.stringify(copy);
		} catch (error) {
			return Promise.reject(argumentError(error));
		}
		if (this.#disposing) return Promise.reject(closedError('Could not send notification: the subscription manager is disposed'));
		return this.#link.call(wire.NOTIFY, [json], 'Could not send notification', this.#meter, 'send', 1);
	}

	/**
	 * Closes one subscription after what is queued for it was delivered; the same
	 * promise for repeated calls; false if it is not registered.
	 * @param {string | number} id
	 * @param {string} origin
	 * @param {'closed' | 'cancelled'} reason
	 * @returns {Promise<boolean>}
	 */
	close(id, origin, reason) {
		const registration = this.#byOrigin.get(origin)?.get(id);
		if (!registration) return Promise.resolve(false);
		if (registration.closing) return registration.closing;
		const closeReason = REASONS.includes(reason) ? reason : 'closed';
		registration.closing = (async () => {
			try {
				await registration.queue;
				await registration.callbacks.close(closeReason);
				return true;
			} catch (error) {
				throw toError(error);
			} finally {
				this.#forget(registration);
			}
		})();
		return registration.closing;
	}

	/**
	 * Closes every subscription of this process, or of one transport origin.
	 * @param {string} [origin]
	 * @param {'closed' | 'cancelled'} [reason]
	 */
	async closeAll(origin, reason = 'cancelled') {
		/** @type {Promise<boolean>[]} */
		const closing = [];
		for (const [storedOrigin, byId] of this.#byOrigin) {
			if (origin !== undefined && storedOrigin !== origin) continue;
			for (const id of byId.keys()) closing.push(this.close(id, storedOrigin, reason));
		}
		await Promise.all(
			closing.map((p) =>
				p.catch((error) =>
					this.#link.reporter.report(
						codedError(CODES.CALLBACK, `A subscription stream's close() failed: ${describeThrown(error)}`, { cause: error }),
					),
				),
			),
		);
	}

	/** Closes every subscription ('closed'), then releases the connections. */
	dispose() {
		this.#disposing ??= (async () => {
			try {
				await this.closeAll(undefined, 'closed');
			} finally {
				// Counters stay readable; gauges read zero from now on.
				const final = this.#native.stats();
				final[CONNECTED] = final[QUEUED] = final[SUBSCRIBED] = 0;
				this.#final = final;
				this.#native.close();
				retire(this.#registered, 'subscriptions', this.#counters());
				this.#link.release();
			}
		})();
		return this.#disposing;
	}

	[Symbol.asyncDispose]() {
		return this.dispose();
	}

	/**
	 * Counters since construction and gauges as of now (README "Observability"): fresh
	 * plain numbers each call. `subscriptions` (also `active`): local subscriptions;
	 * `ignored`: messages on the channel dropped as malformed or foreign; `unwanted`:
	 * notifications no local subscription wanted; `dropped`: notifications a
	 * subscription's `send` threw on. `reconnects`, `topologyChanges` and `timeouts`
	 * cover this manager's pub/sub connection and its command connection (shared with
	 * the managers built with it by createSessionManagers).
	 */
	stats() {
		const own = this.#final ?? this.#native.stats();
		const link = this.#link.figures();
		const m = this.#meter;
		return {
			...callStats(m, link, own),
			subscriptions: this.#byToken.size,
			active: this.#byToken.size,
			notificationsSent: m.sent,
			notificationsDelivered: this.#delivered,
			dropped: this.#dropped,
			ignored: own[IGNORED],
			unwanted: own[UNWANTED],
			subscribed: own[SUBSCRIBED],
			deliveryQueue: own[QUEUED],
		};
	}

	/** What the otel entry reads (see observe.js): this manager's own counters. */
	[OBSERVED]() {
		return { kind: 'subscriptions', link: this.#link, counters: this.#counters() };
	}

	/** Counters of this manager alone (its command connection's are the link's). */
	#counters() {
		const own = this.#final ?? this.#native.stats();
		return {
			subscriptions: this.#byToken.size,
			sent: this.#meter.sent,
			delivered: this.#delivered,
			dropped: this.#dropped,
			reconnects: own[RECONNECTS],
			connections: own[CONNECTED],
		};
	}

	[inspect.custom]() {
		return `RedisSubscriptionManager { url: '${this.#link.url}', subscriptions: ${this.#byToken.size} }`;
	}

	/** @param {Registration} registration */
	#forget(registration) {
		const { id, origin } = registration.subscription;
		const byId = this.#byOrigin.get(origin);
		if (byId?.get(id) === registration) byId.delete(id);
		if (byId?.size === 0) this.#byOrigin.delete(origin);
		if (this.#byToken.get(registration.token) === registration) {
			this.#byToken.delete(registration.token);
			this.#native.unwatch(registration.token);
		}
	}

	/**
	 * Queues one notification behind everything before it for this subscription. A
	 * failed `send` rejects nothing else.
	 * @param {Registration} registration
	 * @param {unknown} notification
	 */
	#enqueue(registration, notification) {
		const delivery = registration.queue.then(async (state) => {
			if (state === 'failed' || registration.closing) return state;
			await registration.callbacks.send(/** @type {any} */ (notification));
			this.#delivered++;
			return /** @type {const} */ ('active');
		});
		registration.queue = delivery.catch((error) => {
			this.#dropped++;
			// Whatever send threw, even a value whose toString throws, reaches onError as an Error.
			this.#link.reporter.report(
				codedError(CODES.CALLBACK, `A subscription stream did not take a notification: ${describeThrown(error)}`, {
					cause: error,
				}),
			);
			return /** @type {const} */ ('active');
		});
	}

	/**
	 * Notifications from the native side: `[bytes, words]` with `[offset, length, count,
	 * token…]` per message (each parsed once, the same object for every match), or
	 * `[message, kind]` for a background problem. Runs from a threadsafe function: never
	 * throws.
	 * @param {[Uint8Array, Uint32Array] | [string, number]} batch
	 */
	#deliver(batch) {
		try {
			if (typeof batch[0] === 'string') {
				this.#link.reporter.report(nativeError(/** @type {number} */ (batch[1]), batch[0]));
				return;
			}
			const [bytes, words] = /** @type {[Uint8Array, Uint32Array]} */ (batch);
			for (let i = 0; i < words.length; ) {
				const offset = words[i];
				const length = words[i + 1];
				const count = words[i + 2];
				i += 3;
				let notification;
				try {
					notification = JSON.parse(decoder.decode(bytes.subarray(offset, offset + length)));
				} catch {
					i += count;
					continue;
				}
				for (const end = i + count; i < end; i++) {
					const registration = this.#byToken.get(words[i]);
					if (registration && !registration.closing) this.#enqueue(registration, notification);
					else this.#dropped++;
				}
			}
		} catch (error) {
			this.#link.reporter.report(error);
		}
	}
}

/** @param {unknown} notification */
function notANotification(notification) {
	return argumentTypeError(`notification must be a JSON-RPC notification object with a string method, got ${describe(notification)}`);
}

/** @param {ReadFilters} filters */
function interestFlags(filters) {
	return (
		(filters.toolsListChanged === true ? wire.WANTS_TOOLS_LIST_CHANGED : 0) |
		(filters.promptsListChanged === true ? wire.WANTS_PROMPTS_LIST_CHANGED : 0) |
		(filters.resourcesListChanged === true ? wire.WANTS_RESOURCES_LIST_CHANGED : 0)
	);
}

/**
 * The subscription, checked and copied: each property and filter read once (upstream
 * reads the filters at every send; a copy keeps what was checked what is used).
 * @param {unknown} subscription
 * @returns {ReadSubscription}
 */
function readSubscription(subscription) {
	if (typeof subscription !== 'object' || subscription === null) {
		throw argumentTypeError(`subscription must be an object { id, origin, filters }, got ${describe(subscription)}`);
	}
	const { id, origin, filters } = /** @type {any} */ (subscription);
	if (!(typeof id === 'string' || (typeof id === 'number' && Number.isFinite(id)))) {
		throw argumentTypeError(`subscription.id must be a string or a number, got ${describe(id)}`);
	}
	if (typeof origin !== 'string') {
		throw argumentTypeError(`subscription.origin must be a string, got ${describe(origin)}`);
	}
	if (typeof filters !== 'object' || filters === null) {
		throw argumentTypeError(`subscription.filters must be an object, got ${describe(filters)}`);
	}
	const { toolsListChanged, promptsListChanged, resourcesListChanged, resourceSubscriptions } = filters;
	/** @type {string[]} */
	let uris = [];
	if (resourceSubscriptions !== undefined) {
		const wrong = `subscription.filters.resourceSubscriptions must be an array of well-formed strings, got`;
		if (!Array.isArray(resourceSubscriptions)) throw argumentTypeError(`${wrong} ${describe(resourceSubscriptions)}`);
		uris = Array.from(resourceSubscriptions);
		for (let i = 0; i < uris.length; i++) {
			// Matched on the native side, as UTF-8: a lone surrogate would make two URIs one.
			if (typeof uris[i] !== 'string' || !isWellFormed(uris[i])) {
				throw argumentTypeError(`${wrong} ${describe(uris[i])} at index ${i}`);
			}
		}
	}
	return {
		id,
		origin,
		filters: {
			toolsListChanged: toolsListChanged === true,
			promptsListChanged: promptsListChanged === true,
			resourcesListChanged: resourcesListChanged === true,
			resourceSubscriptions: uris,
		},
	};
}

/**
 * The callbacks, checked; each function read once and later called on the object, as
 * upstream calls them.
 * @param {unknown} callbacks
 * @returns {Callbacks}
 */
function readCallbacks(callbacks) {
	const c = /** @type {any} */ (callbacks);
	const { acknowledge, send, close } = c ?? {};
	if (!c || typeof acknowledge !== 'function' || typeof send !== 'function' || typeof close !== 'function') {
		throw argumentTypeError('callbacks must be an object with acknowledge(), send() and close() functions');
	}
	return {
		acknowledge: () => Reflect.apply(acknowledge, c, []),
		send: (notification) => Reflect.apply(send, c, [notification]),
		close: (reason) => Reflect.apply(close, c, [reason]),
	};
}

module.exports = { RedisSubscriptionManager };
