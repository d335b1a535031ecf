import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisStreamSessionManager } from '../index.mjs';
import { spawnPeer } from './helpers/peer.mjs';
import { rollingDeployKeepsSessions } from './helpers/rolling.mjs';
import { eventually, observer, recorder, testRedis } from './helpers/redis.mjs';

let server;
let redis;
const peers = [];

beforeAll(async () => {
	server = await testRedis();
	redis = await observer(server.url);
});

afterAll(async () => {
	for (const peer of peers) await peer.kill();
	await redis?.quit();
	await server?.stop();
});

async function peer(options) {
	const p = await spawnPeer('ours', server.url, options);
	peers.push(p);
	return p;
}

describe('two OS processes', () => {
	it('a session held by one process receives what the other sends; broadcast reaches both', async () => {
		const p1 = await peer();
		const p2 = await peer();
		await p1.request('create', { session: 'proc-1' });
		await p2.request('create', { session: 'proc-2' });
		await p2.request('streams', { method: 'send', args: [['proc-1'], 'from p2'] });
		await p1.request('streams', { method: 'send', args: [['proc-2'], 'from p1'] });
		await eventually(async () => (await p1.request('received', { session: 'proc-1' })).chunks.length === 1);
		await eventually(async () => (await p2.request('received', { session: 'proc-2' })).chunks.length === 1);
		expect((await p1.request('received', { session: 'proc-1' })).chunks).toEqual(['from p2']);
		expect((await p2.request('received', { session: 'proc-2' })).chunks).toEqual(['from p1']);

		const local = new RedisStreamSessionManager(server.url);
		await local.send(undefined, 'all of you');
		// Sent last from the same connection: once these arrived, a duplicate of anything
		// before them would have too.
		await local.send(['proc-1', 'proc-2'], 'sentinel');
		await eventually(async () => (await p1.request('received', { session: 'proc-1' })).chunks.includes('sentinel'), 5000, 'sentinel in p1');
		await eventually(async () => (await p2.request('received', { session: 'proc-2' })).chunks.includes('sentinel'), 5000, 'sentinel in p2');
		expect((await p1.request('received', { session: 'proc-1' })).chunks).toEqual(['from p2', 'all of you', 'sentinel']);
		expect((await p2.request('received', { session: 'proc-2' })).chunks).toEqual(['from p1', 'all of you', 'sentinel']);

		await p2.request('streams', { method: 'delete', args: ['proc-1'] });
		expect(await local.has('proc-1')).toBe(false);
		await eventually(async () => (await p1.request('received', { session: 'proc-1' })).closed, 5000, 'close in p1');
		await local.close();
		expect(await p1.request('failures')).toEqual([]);
		expect(await p2.request('failures')).toEqual([]);
	});

	it('info written by one process is read by the other', async () => {
		const p1 = await peer();
		const p2 = await peer();
		await p1.request('info', { method: 'setClientInfo', args: ['ip', { name: 'c', version: '9' }] });
		await p1.request('info', { method: 'setLogLevel', args: ['ip', 'alert'] });
		expect(await p2.request('info', { method: 'getClientInfo', args: ['ip'] })).toEqual({ name: 'c', version: '9' });
		expect(await p2.request('info', { method: 'getLogLevel', args: ['ip'] })).toBe('alert');
	});

	it('the liveness key of a SIGKILLed owner expires within ~12 s', async () => {
		const owner = await peer();
		await owner.request('create', { session: 'doomed' });
		expect(await redis.get('available:session:doomed')).toMatch(/^active(:|$)/);
		await owner.kill('SIGKILL');
		const ttl = await redis.ttl('available:session:doomed');
		expect(ttl).toBeGreaterThan(0);
		expect(ttl).toBeLessThanOrEqual(10);
		await eventually(async () => (await redis.exists('available:session:doomed')) === 0, 12_500, 'key expiry');
	});
});

describe('a rolling deploy of our own processes', () => {
	it('close() of the old process keeps a session the new process re-created', async () => {
		await rollingDeployKeepsSessions(server.url, {}, 'rolled', (p) => peers.push(p));
	}, 30_000);
});

describe('process exit', () => {
	it('a live session keeps its process alive until it ends, then the process exits', async () => {
		const script = fileURLToPath(new URL('./fixtures/wait-for-message.mjs', import.meta.url));
		const child = spawn(process.execPath, [script, server.url, 'waiter'], { stdio: ['ignore', 'pipe', 'pipe'] });
		let output = '';
		child.stdout.on('data', (d) => (output += d));
		child.stderr.on('data', (d) => (output += d));
		const exit = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
		const guard = setTimeout(() => child.kill('SIGKILL'), 20_000);
		await eventually(() => output.includes('listening'), 10_000, 'child listening');
		const sender = new RedisStreamSessionManager(server.url, { keyPrefix: 'wait:' });
		await sender.send(['waiter'], 'wake up');
		const result = await exit;
		clearTimeout(guard);
		await sender.close();
		expect(result, output).toEqual({ code: 0, signal: null });
		expect(output).toContain('got wake up');
		expect(await redis.exists('wait:available:session:waiter')).toBe(0);
	});

	it('close() lets a child process exit by itself', async () => {
		const script = fileURLToPath(new URL('./fixtures/close-exits.mjs', import.meta.url));
		const child = spawn(process.execPath, [script, server.url], { stdio: ['ignore', 'pipe', 'pipe'] });
		let output = '';
		child.stdout.on('data', (d) => (output += d));
		child.stderr.on('data', (d) => (output += d));
		const exit = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
		const guard = setTimeout(() => child.kill('SIGKILL'), 20_000);
		const result = await exit;
		clearTimeout(guard);
		expect(result, output).toEqual({ code: 0, signal: null });
		expect(output).toContain('closed');
		expect(await redis.keys('exit:available:session:*')).toEqual([]);
	});
});
