'use strict';

const { openSocket, Outbox, Backoff } = require('./socket.js');
const wire = require('./wire.js');

const { RECEIVE_HEADER_WORDS: HEADER, RECEIVE_ENTRY_WORDS: ENTRY } = wire;
const decoder = new TextDecoder();
/**
 * How long ends alone wait for creations to share a write with (in churn the next
 * creations come well within it); their messages are dropped meanwhile.
 */
const ENDS_DELAY_MS = 2;

/**
 * @typedef {{
 *   deliver: (kind: number, token: number, bytes: Buffer, offset: number, length: number) => void,
 *   wanted: () => boolean,
 *   resubscribed: () => void,
 * }} SubscriberHandlers
 */

/**
 * The pub/sub socket of a stream manager. Node reads and writes it on the JavaScript
 * thread, like the command socket; the native side (src/stream_sessions.rs) knows the
 * local sessions, writes SUBSCRIBE/UNSUBSCRIBE/PING and turns the bytes read into entries
 * that point into them, so a message reaches its controller without a copy or a thread
 * crossing.
 *
 * Operations (a tick's SUBSCRIBE, a PING, the handshake) are Link calls tracked with the
 * command timeout: Redis's confirmation settles them, or its error, or the timeout. Redis
 * forgets subscriptions with the socket: after a reconnect one SUBSCRIBE restores every
 * local session, and confirms the operations lost with the socket or issued meanwhile.
 */
class Subscriber {
	#native;
	#link;
	#handlers;
	/** @type {import('node:net').Socket | null} */
	#socket = null;
	/** Connected, authenticated, and every local session's SUBSCRIBE written. */
	#ready = false;
	/** The socket broke while ready: the next resubscription re-asserts liveness too. */
	#lost = false;
	#closed = false;
	#retry = new Backoff();
	/** @type {NodeJS.Timeout | null} */
	#flushTimer = null;
	#outbox = new Outbox();
	#entries = new Uint32Array(HEADER + ENTRY * 1024);
	/** A frame cut by the end of a read: its chunks so far, their size, the size it needs. */
	/** @type {Buffer[]} */
	#cut = [];
	#cutBytes = 0;
	#cutNeed = 0;
	/** Operations the next resubscription confirms. @type {number[]} */
	#afterResubscribe = [];
	/** Why the last connection failed, or ''. Never holds credentials. */
	lastError = '';

	/**
	 * @param {any} native the NativeStreams
	 * @param {import('./link.js').Link} link
	 * @param {SubscriberHandlers} handlers
	 */
	constructor(native, link, handlers) {
		this.#native = native;
		this.#link = link;
		this.#handlers = handlers;
	}

	/**
	 * Applies one tick's session changes (see `NativeStreams.apply`); `op` (0: none) is
	 * confirmed once the creations are subscribed.
	 * @param {Uint32Array} changes
	 * @param {string[]} ids
	 * @param {number} op
	 */
	apply(changes, ids, op) {
		const size = this.#native.apply(changes, ids, op, this.#ready, this.#outbox.buffer);
		if (this.#ready) {
			if (size > 0) this.#write(size);
			// Ends alone: their UNSUBSCRIBE goes with the next creations, or shortly.
			else if (this.#flushTimer === null) {
				this.#flushTimer = setTimeout(this.#flushEnds, ENDS_DELAY_MS);
				this.#flushTimer.unref();
			}
			return;
		}
		if (op) this.#afterResubscribe.push(op);
		this.#connect();
	}

	#flushEnds = () => {
		this.#flushTimer = null;
		if (this.#ready) this.#write(this.#native.flushEnds(this.#outbox.buffer));
	};

	/** PINGs to prove the connection still answers; connects when it is down. */
	check() {
		const socket = this.#socket;
		if (!this.#ready || !socket) {
			this.#connect();
			return;
		}
		const { id, promise } = this.#link.track();
		this.#write(this.#native.ping(id, this.#outbox.buffer));
		promise.catch((error) => {
			if (socket !== this.#socket) return;
			this.#link.reporter.report(new Error(`Redis pub/sub connection check failed: ${error.message}`));
			socket.destroy();
		});
	}

	close() {
		this.#closed = true;
		this.#retry.cancel();
		if (this.#flushTimer) clearTimeout(this.#flushTimer);
		// With a socket, #onClose fails what is still waiting.
		if (this.#socket) this.#socket.destroy();
		else this.#failWaiting('the session manager is closed');
	}

	/** @param {number} size */
	#write(size) {
		const socket = /** @type {import('node:net').Socket} */ (this.#socket);
		this.#outbox.send(socket, size, (buffer) => this.#native.copyWritten(buffer));
	}

	/** Whether a connection is worth having: operations wait for one, or sessions want it. */
	#needed() {
		return this.#afterResubscribe.length > 0 || this.#handlers.wanted();
	}

	#connect() {
		if (this.#socket || this.#retry.pending || this.#closed) return;
		if (!this.#needed()) return;
		this.#socket = openSocket(this.#link.native.endpoint(), this.#link.options, {
			connected: (socket) => this.#onConnect(socket),
			data: (socket, chunk) => this.#onData(socket, chunk),
			error: (message) => (this.lastError = message),
			refused: (socket, message) => this.#refused(socket, message),
			closed: (socket) => this.#onClose(socket),
		});
	}

	/** @param {import('node:net').Socket} socket */
	#onConnect(socket) {
		if (socket !== this.#socket) return;
		const { id, promise } = this.#link.track();
		const size = this.#native.handshake(id, this.#outbox.buffer);
		if (size === 0) {
			this.#link.resolve(id);
			this.#resubscribe(socket);
			return;
		}
		this.#write(size);
		promise.then(
			() => this.#resubscribe(socket),
			(error) => socket === this.#socket && this.#refused(socket, error.message),
		);
	}

	/** @param {import('node:net').Socket} socket */
	#resubscribe(socket) {
		if (socket !== this.#socket) return;
		const waiting = this.#afterResubscribe;
		this.#afterResubscribe = [];
		const recovering = this.#lost;
		this.#lost = false;
		const { id, promise } = this.#link.track();
		const size = this.#native.resubscribe(id, this.#outbox.buffer);
		this.#ready = true;
		this.#retry.reset();
		this.lastError = '';
		if (size === 0) this.#link.resolve(id);
		else this.#write(size);
		promise.then(
			() => {
				for (const op of waiting) this.#link.resolve(op);
				if (recovering) this.#handlers.resubscribed();
			},
			(error) => {
				for (const op of waiting) this.#link.fail(op, error);
				if (socket !== this.#socket) return;
				this.#lost ||= recovering;
				this.lastError = error.message;
				socket.destroy();
			},
		);
	}

	/**
	 * Redis turned the connection down (wrong password, TLS): what waits fails with its
	 * reason; the socket is dropped and retried while sessions want it.
	 * @param {import('node:net').Socket} socket
	 * @param {string} reason
	 */
	#refused(socket, reason) {
		this.lastError = reason;
		this.#failWaiting(reason);
		socket.destroy();
	}

	/** @param {string} reason */
	#failWaiting(reason) {
		const waiting = this.#afterResubscribe;
		this.#afterResubscribe = [];
		for (const op of waiting) this.#link.fail(op, reason);
	}

	/** @param {import('node:net').Socket} socket */
	#onClose(socket) {
		if (socket !== this.#socket) return;
		this.#socket = null;
		const wasReady = this.#ready;
		this.#ready = false;
		this.#cut = [];
		this.#cutBytes = 0;
		// Operations whose deadline passed while it was down are no longer waited for.
		const waiting = this.#afterResubscribe.filter((op) => this.#link.isPending(op));
		for (const op of this.#native.abandon()) waiting.push(op);
		this.#afterResubscribe = waiting;
		if (this.#closed) {
			this.#failWaiting('the session manager is closed');
			return;
		}
		if (wasReady) {
			this.#lost = true;
			const reason = this.lastError || 'closed by the server';
			this.#link.reporter.report(
				new Error(`lost the Redis pub/sub connection (${reason}); reconnecting and resubscribing`),
			);
		}
		if (this.#needed()) this.#retry.schedule(() => this.#connect());
	}

	/**
	 * @param {import('node:net').Socket} socket
	 * @param {Buffer} chunk
	 */
	#onData(socket, chunk) {
		if (socket !== this.#socket) return;
		let bytes = chunk;
		if (this.#cutBytes > 0) {
			// Joined once the cut frame can be whole, not on every read of a large one.
			this.#cut.push(chunk);
			this.#cutBytes += chunk.length;
			if (this.#cutBytes < this.#cutNeed) return;
			bytes = Buffer.concat(this.#cut, this.#cutBytes);
			this.#cut = [];
			this.#cutBytes = 0;
		}
		const out = this.#entries;
		const room = (out.length - HEADER) / ENTRY;
		let start = 0;
		for (;;) {
			const view = start === 0 ? bytes : bytes.subarray(start);
			let count;
			try {
				count = this.#native.receive(view, out);
			} catch (error) {
				this.lastError = error instanceof Error ? error.message : String(error);
				socket.destroy();
				return;
			}
			const consumed = out[0];
			const need = out[1];
			this.#dispatch(view, out, count);
			if (socket !== this.#socket || this.#closed) return;
			start += consumed;
			// A full `out` may have stopped early: read on from where it stopped.
			if (count < room) {
				if (start < bytes.length) {
					this.#cut = [bytes.subarray(start)];
					this.#cutBytes = bytes.length - start;
					this.#cutNeed = need || this.#cutBytes + 1;
				}
				return;
			}
		}
	}

	/**
	 * @param {Buffer} bytes
	 * @param {Uint32Array} out
	 * @param {number} count
	 */
	#dispatch(bytes, out, count) {
		for (let i = 0, at = HEADER; i < count; i++, at += ENTRY) {
			const kind = out[at];
			const token = out[at + 1];
			if (kind === wire.OP_DONE) this.#link.resolve(token);
			else if (kind === wire.OP_FAILED) {
				const offset = out[at + 2];
				this.#link.fail(token, decoder.decode(bytes.subarray(offset, offset + out[at + 3])));
			} else this.#handlers.deliver(kind, token, bytes, out[at + 2], out[at + 3]);
		}
	}
}

module.exports = { Subscriber };
