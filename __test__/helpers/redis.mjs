// Private redis-server processes for tests: each on a free loopback port, stopped by PID.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient } from 'redis';

/** Whether a TCP port can be bound on 127.0.0.1 right now. */
function canBind(port) {
	return new Promise((resolve) => {
		const server = net.createServer();
		server.unref();
		server.once('error', () => resolve(false));
		server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
	});
}

/** A cluster node's bus listens on its port + this. */
export const CLUSTER_BUS_OFFSET = 10000;

/**
 * Test servers take ports below the kernel's ephemeral range (which outgoing connections
 * draw their local ports from), bus port included: a port handed out by the kernel, or a
 * port left free between a server's stop and its restart on the same address, could
 * meanwhile become some client's local port (even a reconnecting client's own, connected
 * to itself), and a server that cannot bind would go unnoticed while another one answers
 * on that port. Each vitest worker has a slice of its own, so two files running at once
 * never pick the same port.
 */
const PORTS = (() => {
	let ephemeralLow = 32768;
	try {
		ephemeralLow = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
	} catch {
		// Not Linux: keep the IANA default.
	}
	const low = 10000;
	const high = Math.min(ephemeralLow, 32768) - CLUSTER_BUS_OFFSET;
	const slices = 4;
	const size = Math.floor((high - low) / slices);
	if (size < 500) return undefined;
	const slice = Number(process.env.VITEST_POOL_ID ?? 0) % slices;
	const first = low + slice * size;
	return { first, size, next: Math.floor(Math.random() * size) };
})();

/** A kernel-chosen free port (where the range above is too small). */
function ephemeralPort() {
	return new Promise((resolve, reject) => {
		const server = net.createServer();
		server.unref();
		server.on('error', reject);
		server.listen(0, '127.0.0.1', () => {
			const { port } = /** @type {net.AddressInfo} */ (server.address());
			server.close(() => resolve(port));
		});
	});
}

/**
 * A TCP port free on 127.0.0.1 right now (see PORTS), and with `bus` its cluster bus
 * port too.
 * @param {{ bus?: boolean }} [options]
 */
export async function freePort({ bus = false } = {}) {
	if (!PORTS) {
		for (;;) {
			const port = await ephemeralPort();
			if (!bus || (port + CLUSTER_BUS_OFFSET <= 65535 && (await canBind(port + CLUSTER_BUS_OFFSET)))) return port;
		}
	}
	for (let tries = 0; tries < PORTS.size; tries++) {
		const port = PORTS.first + (PORTS.next++ % PORTS.size);
		if ((await canBind(port)) && (!bus || (await canBind(port + CLUSTER_BUS_OFFSET)))) return port;
	}
	throw new Error('no free port for a test server');
}

/** Sends PING over a raw socket; resolves true once the server answers. */
function ping(port) {
	return new Promise((resolve) => {
		const socket = net.connect(port, '127.0.0.1');
		socket.setTimeout(500);
		socket.on('connect', () => socket.write('PING\r\n'));
		socket.on('data', (d) => {
			socket.destroy();
			// Any reply means it is up (an ACL setup answers -NOAUTH).
			resolve(/^[+-]/.test(d.toString()));
		});
		socket.on('error', () => resolve(false));
		socket.on('timeout', () => {
			socket.destroy();
			resolve(false);
		});
	});
}

export function redisServerPath() {
	try {
		return execFileSync('sh', ['-c', 'command -v redis-server']).toString().trim();
	} catch {
		throw new Error('redis-server is not installed: run `npm test` (it installs it) or apt-get install redis-server');
	}
}

/**
 * Starts a private redis-server. `port` reuses a port (restart on the same address).
 * `config` starts it from a config file, `sentinel` as a sentinel (with that file).
 * @param {{ port?: number, args?: string[], config?: string, sentinel?: boolean, dir?: string }} [options]
 */
export async function startRedis(options = {}) {
	const port = options.port ?? (await freePort());
	// Its own working directory: a replica's full sync or a cluster's nodes.conf is written
	// there, never into the project.
	// A given `dir` (a restart that must find its nodes.conf) is the caller's to remove.
	const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'tmcp-redis-'));
	const base = ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir];
	const args = options.config
		? [options.config, ...(options.sentinel ? ['--sentinel'] : []), ...base, ...(options.args ?? [])]
		: [...base, '--save', '', '--appendonly', 'no', ...(options.args ?? [])];
	const child = spawn(redisServerPath(), args, { stdio: ['ignore', 'pipe', 'pipe'] });
	let output = '';
	child.stdout.on('data', (d) => (output += d));
	child.stderr.on('data', (d) => (output += d));
	const exited = new Promise((resolve) => child.once('exit', resolve)).then(() => {
		if (!options.dir) rmSync(dir, { recursive: true, force: true });
	});
	for (let i = 0; i < 200; i++) {
		if (child.exitCode !== null) break;
		// Answered, and still running: the answer came from this server.
		if ((await ping(port)) && child.exitCode === null) {
			return {
				port,
				dir,
				pid: /** @type {number} */ (child.pid),
				url: `redis://127.0.0.1:${port}`,
				/** Ends this server (by its PID) and waits for it. */
				async stop(signal = 'SIGTERM') {
					if (child.exitCode === null && child.signalCode === null) {
						process.kill(/** @type {number} */ (child.pid), signal);
						await exited;
					}
				},
				signal(/** @type {NodeJS.Signals} */ sig) {
					process.kill(/** @type {number} */ (child.pid), sig);
				},
			};
		}
		await new Promise((r) => setTimeout(r, 25));
	}
	if (child.exitCode === null) child.kill('SIGKILL');
	throw new Error(`redis-server did not start on port ${port}:\n${output}`);
}

/** An independent node-redis client for looking at what the managers wrote. */
export async function observer(url) {
	const client = createClient({ url });
	client.on('error', () => {});
	await client.connect();
	return client;
}

/** Polls `check` until it returns truthy; fails after `ms` (a bound, not a measurement). */
export async function eventually(check, ms = 5000, what = 'condition') {
	const deadline = Date.now() + ms;
	let last;
	while (Date.now() < deadline) {
		// A check that never settles (a call without a deadline) fails here, named,
		// instead of running into the test's timeout; one still running at the deadline
		// gets a grace period to finish.
		let timer;
		const hung = new Promise((resolve) => (timer = setTimeout(resolve, Math.max(0, deadline - Date.now()) + HUNG_GRACE_MS, HUNG)));
		last = await Promise.race([Promise.resolve().then(check), hung]).finally(() => clearTimeout(timer));
		if (last === HUNG) throw new Error(`timed out waiting for ${what}: a check did not settle within ${ms + HUNG_GRACE_MS} ms`);
		if (last) return last;
		await new Promise((r) => setTimeout(r, 20));
	}
	throw new Error(`timed out waiting for ${what} (last value: ${JSON.stringify(last)})`);
}
const HUNG = Symbol('hung');
const HUNG_GRACE_MS = 5000;

/**
 * Retries `call` until it resolves (e.g. a write while a failover is under way). On a
 * timeout the error names why the last attempt failed.
 */
export async function until(call, what, ms = 20_000) {
	let last;
	try {
		return await eventually(() => call().then(() => true, (e) => ((last = e), false)), ms, what);
	} catch (e) {
		if (last) e.message += `; the last attempt failed with: ${last.message}`;
		throw e;
	}
}

/**
 * Sends until the session's recorder gets the message: delivery has resumed. Returns the
 * milliseconds since `started`.
 */
export async function deliveryResumes(streams, rec, id, text, ms = 20_000, started = Date.now()) {
	await until(async () => {
		await streams.send([id], text);
		await eventually(() => rec.chunks.includes(text), 1000, 'delivery');
	}, `delivery to ${id}`, ms);
	return Date.now() - started;
}

/** A stand-in for ReadableStreamDefaultController that records what it receives. */
export function recorder() {
	const decoder = new TextDecoder();
	const rec = {
		/** @type {string[]} */
		chunks: [],
		/** @type {Uint8Array[]} */
		raw: [],
		/** What was enqueued after close (it threw, as a real controller does): never wanted. @type {string[]} */
		late: [],
		closed: false,
		enqueue(chunk) {
			if (rec.closed) {
				rec.late.push(chunk instanceof Uint8Array ? decoder.decode(chunk) : String(chunk));
				throw new TypeError('Invalid state: Controller is already closed');
			}
			if (!(chunk instanceof Uint8Array)) throw new TypeError('chunk is not a Uint8Array');
			rec.raw.push(chunk);
			rec.chunks.push(decoder.decode(chunk));
		},
		close() {
			if (rec.closed) throw new TypeError('Invalid state: Controller is already closed');
			rec.closed = true;
		},
		error() {},
		desiredSize: 1,
	};
	return rec;
}

/**
 * The server a test file uses: REDIS_URL when given (a dedicated, empty server; the suite
 * then runs one file at a time), otherwise a private redis-server of its own.
 */
export async function testRedis() {
	if (process.env.REDIS_URL) {
		return { url: process.env.REDIS_URL, pid: undefined, port: undefined, async stop() {}, signal() {} };
	}
	return startRedis();
}
