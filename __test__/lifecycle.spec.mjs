// Leaks, exit and teardown, each in a child process so that a crash shows as a crash.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { RedisInfoSessionManager } from '../index.mjs';
import { useTestRedis } from './helpers/suite.mjs';

let server;
let redis;
useTestRedis((s, r) => {
	server = s;
	redis = r;
});

/** Runs a fixture with node; resolves with its exit and output (kills it after `limitMs`). */
function runFixture(name, args, { nodeArgs = [], limitMs = 120_000 } = {}) {
	const script = fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));
	const child = spawn(process.execPath, [...nodeArgs, script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
	let stdout = '';
	let stderr = '';
	child.stdout.on('data', (d) => (stdout += d));
	child.stderr.on('data', (d) => (stderr += d));
	const guard = setTimeout(() => child.kill('SIGKILL'), limitMs);
	return new Promise((resolve) =>
		child.once('exit', (code, signal) => {
			clearTimeout(guard);
			resolve({ code, signal, stdout, stderr });
		}),
	);
}

const MB = 1024 * 1024;

describe('no leaks', () => {
	it('100,000 create/delete and 100,000 info set/delete cycles leave memory and handles flat', async () => {
		const run = await runFixture('leak-cycles.mjs', [server.url, '100000'], { nodeArgs: ['--expose-gc'] });
		expect(run.code, run.stderr).toBe(0);
		const { before, middle, after } = JSON.parse(run.stdout);
		// Generous bounds: a leak of even 1 KB per cycle would add ~100 MB.
		expect(middle.rss - before.rss).toBeLessThan(64 * MB);
		expect(after.rss - middle.rss).toBeLessThan(32 * MB);
		expect(middle.heap - before.heap).toBeLessThan(8 * MB);
		expect(after.heap - middle.heap).toBeLessThan(8 * MB);
		expect(middle.handles).toBe(before.handles);
		expect(after.handles).toBe(before.handles);
		// Only the data epoch remains (see README, "Wire format"), and it expires by itself.
		expect(await redis.keys('leak:*')).toEqual(['leak:tmcp:epoch']);
		expect(await redis.ttl('leak:tmcp:epoch')).toBeGreaterThan(0);
	});
});

describe('exit and teardown', () => {
	it('managers garbage-collected without close() do not crash the process at exit', async () => {
		for (let i = 0; i < 5; i++) {
			const run = await runFixture('gc-without-close.mjs', [server.url], { nodeArgs: ['--expose-gc'], limitMs: 30_000 });
			expect({ code: run.code, signal: run.signal }, run.stderr).toEqual({ code: 0, signal: null });
			expect(run.stdout).toContain('dropped; collected 4 of 4');
		}
	});

	it('Workers using the managers, terminated 100 times with calls in flight, never crash the process', async () => {
		const run = await runFixture('worker-churn.mjs', [server.url, '100']);
		expect({ code: run.code, signal: run.signal }, run.stderr).toEqual({ code: 0, signal: null });
		expect(run.stdout).toContain('survived 100 rounds');
	});
});

describe('observability', () => {
	it('without onError, background failures become one rate-limited warning, never a crash', async () => {
		const warnings = [];
		const onWarning = (w) => w.code === 'TMCP_REDIS' && warnings.push(w);
		process.on('warning', onWarning);
		const info = new RedisInfoSessionManager(server.url, { keyPrefix: 'warn:' });
		for (let i = 0; i < 20; i++) info.setLogLevel(`w${i}`, 'loud');
		await new Promise((r) => setTimeout(r, 100));
		process.off('warning', onWarning);
		await info.close();
		expect(warnings).toHaveLength(1);
		expect(warnings[0].message).toMatch(/Could not store log level for session w0: Invalid log level "loud"/);
	});
});
