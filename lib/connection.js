'use strict';

const { openSocket, Outbox, Backoff } = require('./socket.js');
const { FAILED_ANSWER } = require('./wire.js');

/**
 * The command socket. Node reads and writes it on the JavaScript thread, as it does for
 * any Node client; the native protocol (src/requests.rs) turns calls into bytes and
 * bytes into answers, so no call wakes another thread.
 *
 * Calls wait (until their deadline, kept by the Link) while the socket connects or
 * reconnects. Calls already written to a socket that breaks fail: they may or may not
 * have run, so they are never replayed.
 */
class Connection {
	#native;
	#endpoint;
	#options;
	#handlers;
	/** @type {import('node:net').Socket | null} */
	#socket = null;
	#ready = false;
	/** Batches not written yet, as alternating `calls, args` entries. */
	#waiting = [];
	#retry = new Backoff();
	#closing = false;
	#outbox = new Outbox();
	/** Why the last connection attempt failed, or ''. Never holds credentials. */
	lastError = '';

	/**
	 * @param {any} native the NativeClient
	 * @param {import('./socket.js').SocketOptions} options
	 * @param {{
	 *   answer: (answers: unknown[]) => void,
	 *   lose: (ids: ArrayLike<number>, message: string) => void,
	 *   isPending: (id: number) => boolean,
	 * }} handlers
	 */
	constructor(native, options, handlers) {
		this.#native = native;
		this.#endpoint = native.endpoint();
		this.#options = options;
		this.#handlers = handlers;
	}

	get ready() {
		return this.#ready;
	}

	/**
	 * Sends one batch: `calls` holds `[id, code, argCount]` triples, `args` their arguments.
	 * @param {Uint32Array} calls
	 * @param {string[]} args
	 */
	send(calls, args) {
		if (this.#ready) {
			this.#write(calls, args);
			return;
		}
		this.#waiting.push(calls, args);
		this.#connect();
	}

	/** Ends the socket once the calls sent so far are answered (or have expired). */
	close() {
		this.#closing = true;
		this.#endIfDone();
	}

	/** @param {Uint32Array} calls @param {string[]} args */
	#write(calls, args) {
		const socket = /** @type {import('node:net').Socket} */ (this.#socket);
		const size = this.#native.encode(calls, args, this.#outbox.buffer);
		this.#outbox.send(socket, size, (buffer) => this.#native.copyEncoded(buffer));
	}

	#connect() {
		if (this.#socket || this.#retry.pending || this.#closing) return;
		this.#socket = openSocket(
			this.#endpoint,
			this.#options,
			{
				connected: (socket) => this.#onConnect(socket),
				data: (socket, chunk) => this.#onData(socket, chunk),
				error: (message) => (this.lastError = message),
				refused: (socket, message) => this.#refused(socket, message),
				closed: (socket) => this.#onClose(socket),
			},
			// The native decoder copies the partial reply it keeps.
			true,
		);
	}

	/** @param {import('node:net').Socket} socket */
	#onConnect(socket) {
		if (socket !== this.#socket) return;
		const handshake = this.#native.handshake();
		if (handshake) socket.write(handshake);
		else this.#becomeReady();
	}

	#becomeReady() {
		this.#ready = true;
		this.#retry.reset();
		this.lastError = '';
		this.#prune();
		const waiting = this.#waiting;
		this.#waiting = [];
		for (let i = 0; i < waiting.length; i += 2) this.#write(waiting[i], waiting[i + 1]);
	}

	/**
	 * @param {import('node:net').Socket} socket
	 * @param {Buffer} chunk
	 */
	#onData(socket, chunk) {
		if (socket !== this.#socket) return;
		let answered;
		try {
			answered = this.#native.decode(chunk);
		} catch (error) {
			this.lastError = error instanceof Error ? error.message : String(error);
			socket.destroy();
			return;
		}
		if (!this.#ready) {
			// Before ready only the handshake (call 0) is in flight.
			if (answered.length > 0 && answered[0] >= FAILED_ANSWER) this.#refused(socket, String(answered[1]));
			else if (this.#native.idle) this.#becomeReady();
			if (this.#closing) this.#endIfDone();
			return;
		}
		if (answered.length > 0) this.#handlers.answer(answered);
		if (this.#closing) this.#endIfDone();
	}

	/**
	 * Redis turned the connection down (wrong password, unknown database): the waiting
	 * calls fail with its reason; the next call tries again.
	 * @param {import('node:net').Socket} socket
	 * @param {string} reason
	 */
	#refused(socket, reason) {
		this.lastError = reason;
		const waiting = this.#waiting;
		this.#waiting = [];
		for (let i = 0; i < waiting.length; i += 2) this.#handlers.lose(ids(waiting[i]), reason);
		socket.destroy();
	}

	/** @param {import('node:net').Socket} socket */
	#onClose(socket) {
		if (socket !== this.#socket) return;
		this.#socket = null;
		this.#ready = false;
		const lost = this.#native.abandon();
		if (lost.length > 0) {
			this.#handlers.lose(lost, `connection to Redis lost (${this.lastError || 'closed by the server'})`);
		}
		this.#prune();
		if (this.#waiting.length === 0) return;
		this.#retry.schedule(() => {
			this.#prune();
			if (this.#waiting.length > 0) this.#connect();
		});
	}

	/** Drops waiting batches whose calls have all expired. */
	#prune() {
		const kept = [];
		for (let i = 0; i < this.#waiting.length; i += 2) {
			const batch = this.#stillPending(this.#waiting[i], this.#waiting[i + 1]);
			if (batch) kept.push(batch[0], batch[1]);
		}
		this.#waiting = kept;
	}

	/**
	 * The part of a batch whose calls are still pending, or null.
	 * @param {Uint32Array} calls
	 * @param {string[]} args
	 * @returns {[Uint32Array, string[]] | null}
	 */
	#stillPending(calls, args) {
		const { isPending } = this.#handlers;
		let all = true;
		let any = false;
		for (let i = 0; i < calls.length; i += 3) {
			if (isPending(calls[i])) any = true;
			else all = false;
		}
		if (all) return [calls, args];
		if (!any) return null;
		const keptCalls = [];
		const keptArgs = [];
		for (let i = 0, a = 0; i < calls.length; i += 3) {
			const argc = calls[i + 2];
			if (isPending(calls[i])) {
				keptCalls.push(calls[i], calls[i + 1], argc);
				for (let k = 0; k < argc; k++) keptArgs.push(args[a + k]);
			}
			a += argc;
		}
		return [Uint32Array.from(keptCalls), keptArgs];
	}

	#endIfDone() {
		this.#prune();
		if (this.#waiting.length > 0) return;
		if (this.#socket && this.#ready && this.#native.idle) this.#socket.end();
		else if (this.#socket && !this.#ready && this.#native.idle) this.#socket.destroy();
	}
}

/** @param {Uint32Array} calls */
function ids(calls) {
	const out = [];
	for (let i = 0; i < calls.length; i += 3) out.push(calls[i]);
	return out;
}

module.exports = { Connection };
