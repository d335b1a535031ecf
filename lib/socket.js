'use strict';

const net = require('node:net');
const tls = require('node:tls');

/** Pause before a reconnection attempt: doubles from the first to the most. */
const RETRY_FIRST_MS = 100;
const RETRY_MAX_MS = 1000;
/** Failures to reach the server at all (retried), as opposed to TLS refusing it. */
const NETWORK_ERRORS = /ECONNREFUSED|ECONNRESET|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|ENETUNREACH|timed out/;

/**
 * @typedef {{ host?: string | null, port?: number | null, path?: string | null, tls: boolean, verifyHost: boolean }} Endpoint
 * @typedef {{ connectTimeout: number, tls?: { ca?: string, cert?: string, key?: string } }} SocketOptions
 * @typedef {{
 *   connected: (socket: import('node:net').Socket) => void,
 *   data: (socket: import('node:net').Socket, chunk: Buffer) => void,
 *   error: (message: string) => void,
 *   refused: (socket: import('node:net').Socket, message: string) => void,
 *   closed: (socket: import('node:net').Socket) => void,
 * }} SocketEvents
 */

/** Size of the buffer that plain sockets read into when their reader keeps nothing. */
const READ_BUFFER_BYTES = 64 * 1024;

/**
 * Opens a socket to Redis (TCP, TLS or unix). It never keeps the process alive by itself;
 * the managers do while they have work. `error` reports a failure that retrying may cure;
 * `refused` one that it will not (TLS refused the server's certificate).
 *
 * With `reuseReads`, a plain socket reads every chunk into one buffer of its own and hands
 * it to `data` directly, without a new Buffer and a stream event per read: about 10 % less
 * CPU per call at one call in flight (bench/worker.mjs). Only for a reader that keeps
 * nothing of a chunk after `data` returns.
 * @param {Endpoint} endpoint
 * @param {SocketOptions} options
 * @param {SocketEvents} on
 * @param {boolean} [reuseReads]
 */
function openSocket(endpoint, options, on, reuseReads = false) {
	const { host, port, path, tls: secure, verifyHost } = endpoint;
	const tlsOptions = options.tls ?? {};
	/** @type {import('node:net').Socket} */
	let socket;
	const onread =
		reuseReads && !secure
			? {
					buffer: Buffer.allocUnsafeSlow(READ_BUFFER_BYTES),
					/** @param {number} size @param {Buffer} buffer */
					callback: (size, buffer) => {
						on.data(socket, buffer.subarray(0, size));
					},
				}
			: undefined;
	if (path) {
		socket = net.connect({ path, onread });
	} else if (secure) {
		socket = tls.connect({
			host: host ?? undefined,
			port: port ?? undefined,
			// SNI takes host names only.
			servername: host && !net.isIP(host) ? host : undefined,
			ca: tlsOptions.ca,
			cert: tlsOptions.cert,
			key: tlsOptions.key,
			rejectUnauthorized: verifyHost,
		});
	} else {
		socket = net.connect({ host: host ?? undefined, port: port ?? undefined, onread });
	}
	socket.unref();
	socket.setNoDelay(true);
	socket.setKeepAlive(true, 15_000);
	const ms = options.connectTimeout;
	const timer = setTimeout(() => socket.destroy(new Error(`connect timed out after ${ms} ms (connectTimeout)`)), ms);
	timer.unref();
	let connected = false;
	socket.once(secure ? 'secureConnect' : 'connect', () => {
		connected = true;
		clearTimeout(timer);
		on.connected(socket);
	});
	if (!onread) socket.on('data', (chunk) => on.data(socket, chunk));
	socket.on('error', (error) => {
		if (secure && !connected && !NETWORK_ERRORS.test(error.message)) {
			on.refused(socket, `TLS handshake with Redis failed (${error.message})`);
		} else on.error(error.message);
	});
	socket.once('close', () => {
		clearTimeout(timer);
		on.closed(socket);
	});
	return socket;
}

/**
 * Writes what the native side encoded through one reused buffer: the native call fills
 * `buffer` and returns the length, and `send` writes it. The buffer is replaced only when
 * the kernel did not take a write at once (the socket still holds it then).
 */
class Outbox {
	buffer = Buffer.allocUnsafeSlow(64 * 1024);

	/**
	 * @param {import('node:net').Socket} socket
	 * @param {number} size bytes encoded; more than `buffer` holds when it was too small
	 * @param {(buffer: Buffer) => void} copy copies the encoded bytes into a larger buffer
	 */
	send(socket, size, copy) {
		if (size === 0) return;
		if (size > this.buffer.length) {
			this.buffer = Buffer.allocUnsafeSlow(Math.max(size, this.buffer.length * 2));
			copy(this.buffer);
		}
		socket.write(this.buffer.subarray(0, size));
		if (socket.writableLength > 0) this.buffer = Buffer.allocUnsafeSlow(this.buffer.length);
	}
}

/** The pause before the next reconnection attempt, growing while attempts fail. */
class Backoff {
	/** @type {NodeJS.Timeout | null} */
	#timer = null;
	#delay = RETRY_FIRST_MS;

	/** Whether an attempt is scheduled. */
	get pending() {
		return this.#timer !== null;
	}

	/** @param {() => void} attempt runs after the pause (which never keeps the process alive) */
	schedule(attempt) {
		this.#timer = setTimeout(() => {
			this.#timer = null;
			attempt();
		}, this.#delay);
		this.#timer.unref();
		this.#delay = Math.min(this.#delay * 2, RETRY_MAX_MS);
	}

	/** Connected: the next failure waits the shortest pause again. */
	reset() {
		this.#delay = RETRY_FIRST_MS;
	}

	cancel() {
		if (this.#timer) clearTimeout(this.#timer);
		this.#timer = null;
	}
}

module.exports = { openSocket, Outbox, Backoff };
