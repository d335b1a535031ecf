// The packed package under Node, Bun and Deno (linux x64), and Bun on musl with the musl
// binary: the round trip (__test__/platforms/roundtrip.mjs) and the real MCP stack
// (stack.mjs) in each runtime, from a project that installed the tarballs. Run by
// `npm run test:runtimes` (scripts/test-runtimes.mjs sets up the runtimes and the
// project), not by `npm test`.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRedis } from '../helpers/redis.mjs';
import { roundTripReport } from '../platforms/expected.mjs';

if (!process.env.TMCP_RUNTIMES_CONFIG) throw new Error('run these through `npm run test:runtimes`');
/** @type {{ project: string, runtimes: Record<string, { cmd: string, args: string[], env: Record<string, string>, describe: string, muslLdd?: boolean }> }} */
const config = JSON.parse(readFileSync(process.env.TMCP_RUNTIMES_CONFIG, 'utf8'));

/** Runs a script of the project in one runtime without blocking the event loop. */
function runIn(name, script, args) {
	const runtime = config.runtimes[name];
	return new Promise((resolve) => {
		const child = spawn(runtime.cmd, [...runtime.args, script, ...args], {
			cwd: config.project,
			env: { ...process.env, ...runtime.env },
			stdio: ['ignore', 'pipe', 'pipe'],
		});
		let stdout = '';
		let stderr = '';
		child.stdout.on('data', (d) => (stdout += d));
		child.stderr.on('data', (d) => (stderr += d));
		const timer = setTimeout(() => child.kill('SIGKILL'), 90_000);
		child.on('close', (status, signal) => {
			clearTimeout(timer);
			resolve({ status, signal, stdout, stderr });
		});
	});
}

/** The last line of stdout as JSON, failing with everything the runtime printed. */
function report(run) {
	expect(run.status, `exit ${run.status ?? run.signal}\n${run.stdout}\n${run.stderr}`).toBe(0);
	return JSON.parse(run.stdout.trim().split('\n').at(-1));
}

let server;
beforeAll(async () => {
	server = await startRedis();
});
afterAll(() => server?.stop());

const RUNTIMES = [
	['node', 'node', 'linux-x64-gnu', 'glibc'],
	['bun', 'bun', 'linux-x64-gnu', 'glibc'],
	['deno', 'deno', 'linux-x64-gnu', 'glibc'],
	['bun-musl', 'bun', 'linux-x64-musl', 'musl'],
];

describe('round trip: create, 1,000 sends in order, delete closing the stream, info set/get, a subscription notification', () => {
	it.each(RUNTIMES)('%s', async (name, runtime, platform, libc) => {
		const { describe: what, muslLdd } = config.runtimes[name];
		console.log(`${name}: ${what}${muslLdd ? ' (/usr/bin/ldd is musl, as on Alpine)' : ''}`);
		const got = report(await runIn(name, 'roundtrip.mjs', [server.url]));
		expect(got).toEqual(roundTripReport({ runtime, arch: 'x64', platform, libc }));
	});
});

describe('the real stack: HttpTransport servers A and B on one Redis, the MCP SDK client with its SSE stream on A and its requests on B', () => {
	it.each(RUNTIMES)('%s', async (name, runtime) => {
		const got = report(await runIn(name, 'stack.mjs', [server.url]));
		expect(got).toEqual({
			runtime,
			session: true,
			answeredBy: 'B',
			hydratedClientInfo: { name: 'stack-client', version: '0.0.1' },
			storedClientInfo: { name: 'stack-client', version: '0.0.1' },
			notifications: ['notifications/resources/updated demo://counter', 'notifications/tools/list_changed'],
			getsToA: true,
			othersToB: true,
			clientInfoAfter: 'not found',
			subscribersAfter: [],
			managerErrors: [],
		});
	});
});
