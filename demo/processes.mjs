// Demo server processes (demo/server.mjs), started and stopped by PID: used by the
// demo and the tests.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/**
 * Starts `demo/server.mjs` as process `name` on a free port (with manager `options`, e.g.
 * `{ cluster: true }`, or upstream's managers with `{ upstream: true }` as the last
 * argument); resolves with its URL once it listens. Its log lines go to `say`; the child is added to `started`.
 */
export function startProcess(name, redisUrl, started, say = () => {}, options = {}, { upstream = false } = {}) {
	const script = fileURLToPath(new URL('./server.mjs', import.meta.url));
	const args = [script, name, '0', redisUrl, JSON.stringify(options), ...(upstream ? ['upstream'] : [])];
	const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
	started.push(child);
	return new Promise((resolve, reject) => {
		let buffered = '';
		child.stdout.on('data', (chunk) => {
			buffered += chunk;
			let nl;
			while ((nl = buffered.indexOf('\n')) >= 0) {
				const line = buffered.slice(0, nl);
				buffered = buffered.slice(nl + 1);
				const ready = /^READY (\d+)$/.exec(line);
				if (ready) {
					const base = `http://127.0.0.1:${ready[1]}`;
					resolve({ name, pid: child.pid, url: `${base}/mcp`, stats: `${base}/stats`, allStats: `${base}/stats/all` });
				} else say(`      ${line}`);
			}
		});
		child.once('exit', (code) => reject(new Error(`server ${name} exited early (${code})`)));
	});
}

/** Ends the started processes by PID (SIGTERM: each closes its managers) and waits. */
export async function stopProcesses(started) {
	for (const child of started) {
		if (child.exitCode === null && child.signalCode === null) {
			const exited = new Promise((r) => child.once('exit', r));
			process.kill(child.pid, 'SIGTERM');
			await exited;
		}
	}
}
