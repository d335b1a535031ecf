// A manager living in another OS process, driven over IPC (fixtures/peer.mjs).
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const fixture = fileURLToPath(new URL('../fixtures/peer.mjs', import.meta.url));

/**
 * @param {'ours' | 'upstream'} kind
 * @param {string} url
 * @param {object} [options] our manager options (ours only)
 */
export async function spawnPeer(kind, url, options = {}) {
	const child = fork(fixture, [kind, url, JSON.stringify(options)], { stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
	let output = '';
	child.stdout.on('data', (d) => (output += d));
	child.stderr.on('data', (d) => (output += d));
	let next = 1;
	const pending = new Map();
	const events = [];
	child.on('message', (msg) => {
		if (msg.event) {
			events.push(msg);
			return;
		}
		const entry = pending.get(msg.id);
		if (!entry) return;
		pending.delete(msg.id);
		if (msg.ok) entry.resolve(msg.value);
		else entry.reject(new Error(msg.error));
	});
	const exited = new Promise((resolve) =>
		child.once('exit', (code, signal) => {
			for (const entry of pending.values()) entry.reject(new Error(`peer exited (${code ?? signal}): ${output}`));
			pending.clear();
			resolve({ code, signal });
		}),
	);
	const peer = {
		pid: child.pid,
		events,
		get output() {
			return output;
		},
		exited,
		/** @param {string} cmd @param {Record<string, unknown>} [args] */
		request(cmd, args = {}) {
			const id = next++;
			return new Promise((resolve, reject) => {
				pending.set(id, { resolve, reject });
				child.send({ id, cmd, ...args });
			});
		},
		/** Ends the peer by its PID. */
		kill(signal = 'SIGKILL') {
			if (child.exitCode === null && child.signalCode === null) process.kill(child.pid, signal);
			return exited;
		},
	};
	await peer.request('ready');
	return peer;
}
